"""When to send a request again, and how long to wait first (pure; the senders sleep)."""

from __future__ import annotations

from dataclasses import dataclass

from nuages.client._headers import parse_seconds
from nuages.client._requests import Request, Response

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries of failed requests.

    A request is sent again, at most ``retries`` times, when the answer has one of ``statuses``
    (by default 409, 429, 500, 502, 503, 504: nothing was written), after the ``Retry-After``
    (or else ``Backoff``) the server asked for, or else ``backoff_factor * 2 ** attempt``
    seconds; every wait is capped
    at ``max_delay``. A request that got no answer (connection refused or cut, timeout) is sent
    again only if ``transport_errors`` and the request is idempotent (a GET, a PUT, a DELETE, a
    conditional write, a batch of those), since a cut connection may hide a committed write.
    """

    retries: int = 3
    statuses: frozenset[int] = frozenset({409, 429, 500, 502, 503, 504})
    backoff_factor: float = 0.5
    max_delay: float = 30.0
    transport_errors: bool = True

    @classmethod
    def never(cls) -> RetryPolicy:
        """No retry at all: every failure is raised at once."""
        return cls(retries=0)

    def _wait(self, attempt: int, retry_after: int | None) -> float:
        delay = float(retry_after) if retry_after is not None else self.backoff_factor * 2**attempt
        return max(0.0, min(delay, self.max_delay))

    def delay_after_response(
        self, request: Request, response: Response, attempt: int
    ) -> float | None:
        """Seconds to wait before sending ``request`` again after this error answer, or ``None``.

        ``attempt`` counts the retries already made (0 after the first failure).
        """
        if attempt >= self.retries or response.status not in self.statuses:
            return None
        asked = parse_seconds(response.headers.get("retry-after"))
        if asked is None:
            asked = parse_seconds(response.headers.get("backoff"))
        return self._wait(attempt, asked)

    def delay_after_transport_error(
        self, request: Request, attempt: int, *, sent: bool = True
    ) -> float | None:
        """Seconds to wait before sending ``request`` again after it got no answer, or ``None``.

        ``sent=False`` (the connection was never made) makes any request safe to send again.
        """
        if attempt >= self.retries or not self.transport_errors:
            return None
        if sent and not request.is_idempotent:
            return None
        return self._wait(attempt, None)
