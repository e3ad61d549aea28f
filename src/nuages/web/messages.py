"""Framework-free request/response values that the dispatcher and batch exchange."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from nuages.core import errors
from nuages.web.errors import envelope, from_error

_ABSENT = object()


@dataclass(slots=True)
class WebRequest:
    method: str
    path: str  # decoded, with the /v1 prefix
    query: list[tuple[str, str]]
    headers: Mapping[str, str]  # lower-case names
    body: bytes = b""
    base_url: str = "http://localhost"  # scheme://host[:port]
    client: str | None = None
    # The unread body, for a route whose handler has ``streams_body`` (then `body` is b"").
    stream: AsyncIterator[bytes] | None = None
    # time.monotonic_ns() when the server had read the request, when it tells
    # (``nuages.arrived`` in the ASGI scope; errors.Attempt.since).
    arrived: int | None = None


@dataclass(slots=True)
class WebResponse:
    status: int
    data: Any = None  # a JSON-serialisable value; None means no body
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # pre-encoded body, when data is not used
    endpoint: str | None = None  # the name of the route that answered, if any (metrics)

    def body_bytes(self) -> bytes:
        if self.raw is not None:
            return self.raw
        if self.data is None:
            return b""
        return orjson.dumps(self.data)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(timestamp_ms: int) -> str:
    """RFC 9110 date (``Sun, 29 Nov 2026 08:00:00 GMT``), whatever the locale."""
    return _http_date(timestamp_ms // 1000)


@functools.lru_cache(maxsize=1024)
def _http_date(seconds: int) -> str:
    t = time.gmtime(seconds)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def etag_headers(timestamp: int | None) -> dict[str, str]:
    if timestamp is None:
        return {}
    return {"ETag": f'"{timestamp}"', "Last-Modified": http_date(timestamp)}


def error_response(exc: errors.Error) -> WebResponse:
    if isinstance(exc, errors.NotModified):
        return WebResponse(304, None, etag_headers(exc.timestamp))
    status, body = from_error(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, errors.PreconditionFailed | errors.NotModified):
        headers.update(etag_headers(exc.timestamp))
    if isinstance(exc, errors.TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after)
    return WebResponse(status, body, headers)


def validation_response(
    status: int, location: str, name: str | None, description: str, *, error: str | None = None
) -> WebResponse:
    exc = errors.ValidationError(
        description,
        location=location,
        name=name,
        status=status,
        error=error or "Invalid parameters",
    )
    return WebResponse(status, from_error(exc)[1])


def plain_error(status: int, errno: int, message: str | None, **kwargs: Any) -> WebResponse:
    return WebResponse(status, envelope(status, errno, message=message, **kwargs))


__all__ = [
    "WebRequest",
    "WebResponse",
    "error_response",
    "etag_headers",
    "http_date",
    "plain_error",
    "validation_response",
]
