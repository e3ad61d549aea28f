"""The client's exceptions, and the one table that turns an error response into one of them.

::

    ClientError
    ├── TransportError            the request did not get an HTTP answer (refused, cut, timed out)
    ├── HTTPError                 the server answered with a status >= 400 (``.status``, ``.errno``)
    │   ├── BadRequest            400 (also 406, 415): ``.details`` lists what was wrong
    │   ├── Unauthorized          401
    │   ├── Forbidden             403
    │   ├── NotFound              404
    │   ├── MethodNotAllowed      405
    │   ├── Conflict              409 (integrity conflict; retried when the policy allows)
    │   ├── Gone                  410 (the service reached its end of life; ``.alert``)
    │   ├── PreconditionFailed    412: ``.existing`` is the current object, when the server says
    │   ├── TooManyRequests       429
    │   └── ServerError           5xx
    │       └── BackendUnavailable  503
    └── SyncError                 ``sync()`` could not run or complete
        ├── BackoffError          the server asked clients to back off (``.seconds``)
        └── ServerFlushed         the server lost what this store had synced with it
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nuages.client._headers import parse_alert, parse_etag

__all__ = [
    "BackendUnavailable",
    "BackoffError",
    "BadRequest",
    "ClientError",
    "Conflict",
    "Forbidden",
    "Gone",
    "HTTPError",
    "MethodNotAllowed",
    "NotFound",
    "PreconditionFailed",
    "ServerError",
    "ServerFlushed",
    "SyncError",
    "TooManyRequests",
    "TransportError",
    "Unauthorized",
    "error_from_response",
]


class ClientError(Exception):
    """Root of every exception raised by :mod:`nuages.client`."""


class TransportError(ClientError):
    """No HTTP answer: connection refused or cut, timeout, protocol error (``__cause__``: httpx's).

    ``.method`` and ``.url`` name the request that failed.
    """

    def __init__(self, message: str, *, method: str, url: str) -> None:
        super().__init__(message)
        self.method = method
        self.url = url


class HTTPError(ClientError):
    """The server answered with an error status, in the Kinto error envelope (protocol/08 §1).

    Attributes: ``status`` (HTTP status), ``errno`` (application error number, 999 when the body
    had none), ``error`` (reason phrase), ``message``, ``details`` (whatever the server put there),
    ``body`` (the parsed body), ``headers`` (lower-case names), ``method`` and ``url``.
    """

    def __init__(
        self,
        status: int,
        body: Any,
        headers: Mapping[str, str] | None = None,
        *,
        method: str = "",
        url: str = "",
    ) -> None:
        envelope = body if isinstance(body, dict) else {}
        self.status = status
        self.body = body
        self.headers: dict[str, str] = {k.lower(): v for k, v in (headers or {}).items()}
        self.errno = int(envelope.get("errno", 999))
        self.error = str(envelope.get("error", ""))
        self.message = str(envelope.get("message", ""))
        self.details: Any = envelope.get("details")
        self.method = method
        self.url = url
        where = f" ({method} {url})" if method else ""
        text = self.message or self.error or "error"
        super().__init__(f"{status} {text}{where}")

    @property
    def retry_after(self) -> int | None:
        """Seconds from the ``Retry-After`` header, if any."""
        value = self.headers.get("retry-after")
        return int(value) if value and value.strip().isdigit() else None


class BadRequest(HTTPError):
    """400 (and 406/415): the request was invalid; ``details`` is the server's list of problems."""


class Unauthorized(HTTPError):
    """401: authentication is required, or the credentials were refused."""


class Forbidden(HTTPError):
    """403: authenticated, but not allowed (or the object's parent is not readable)."""


class NotFound(HTTPError):
    """404: no such object (errno 110), or no such parent / URL (errno 111)."""


class MethodNotAllowed(HTTPError):
    """405: method not allowed here (or the server is read-only)."""


class Conflict(HTTPError):
    """409: the server hit an integrity conflict; retrying is safe."""


class Gone(HTTPError):
    """410: the service reached its end of life; ``alert`` is the parsed ``Alert`` header."""

    @property
    def alert(self) -> dict[str, Any] | None:
        """The ``Alert`` header as a dict (``code``, ``message``, ``url``), if sent."""
        return parse_alert(self.headers.get("alert"))


class PreconditionFailed(HTTPError):
    """412: ``If-Match`` / ``If-None-Match`` did not hold.

    ``existing`` is the current object (``details.existing``) when the server disclosed it, else
    ``None`` (no object there, or the caller may not read it). ``timestamp`` is the current ETag.
    """

    @property
    def existing(self) -> dict[str, Any] | None:
        """The object as it is now on the server, when the answer carried it."""
        details = self.details
        if isinstance(details, dict) and isinstance(details.get("existing"), dict):
            return dict(details["existing"])
        return None

    @property
    def timestamp(self) -> int | None:
        """The ``ETag`` of the 412 answer, as an integer."""
        return parse_etag(self.headers.get("etag"))


class TooManyRequests(HTTPError):
    """429: the client is sending too much; honour ``retry_after``."""


class ServerError(HTTPError):
    """5xx: the server failed; nothing was written (a failed batch is rolled back whole)."""


class BackendUnavailable(ServerError):
    """503: the backend is unavailable or overloaded; retry after ``retry_after`` seconds."""


class SyncError(ClientError):
    """``sync()`` could not run or complete; local data is untouched by what did not happen."""


class BackoffError(SyncError):
    """The server asked clients to back off for ``seconds`` more; sync again later.

    Pass ``ignore_backoff=True`` to ``sync()`` to go ahead anyway.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the server asked clients to back off; retry in {seconds:.0f} s")
        self.seconds = seconds


class ServerFlushed(SyncError):
    """The server has lost what this store synced with it (flushed, or restored from a backup).

    Its collection timestamp went backwards (``remote_timestamp`` < ``local_timestamp``), or the
    collection is gone. ``LocalCollection.reset_sync_status()`` followed by ``sync()`` uploads
    the local records again; ``sync(if_flushed="reupload")`` does both.
    """

    def __init__(self, local_timestamp: int | None, remote_timestamp: int | None) -> None:
        if remote_timestamp is None:
            what = "the collection is gone"
        else:
            what = f"its collection timestamp {remote_timestamp} went back"
        super().__init__(
            f"the server was flushed or restored: {what} "
            f"(this store synced up to {local_timestamp})"
        )
        self.local_timestamp = local_timestamp
        self.remote_timestamp = remote_timestamp


_BY_STATUS: dict[int, type[HTTPError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    406: BadRequest,
    409: Conflict,
    410: Gone,
    412: PreconditionFailed,
    415: BadRequest,
    429: TooManyRequests,
    503: BackendUnavailable,
}


def error_from_response(
    status: int,
    body: Any,
    headers: Mapping[str, str] | None = None,
    *,
    method: str = "",
    url: str = "",
) -> HTTPError:
    """The exception for an error answer (status >= 400): the one status → class table."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else HTTPError
    return cls(status, body, headers, method=method, url=url)
