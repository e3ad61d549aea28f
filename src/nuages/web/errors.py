"""The one table from domain errors to HTTP status + errno, and the error envelope (protocol/08)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from nuages.core import errors

# errno values (protocol/08 §1)
MISSING_AUTH_TOKEN = 104
INVALID_PARAMETERS = 107
INVALID_RESOURCE_ID = 110
MISSING_RESOURCE = 111
REQUEST_TOO_LARGE = 113
MODIFIED_MEANWHILE = 114
METHOD_NOT_ALLOWED = 115
VERSION_NOT_AVAILABLE = 116
CLIENT_REACHED_CAPACITY = 117
FORBIDDEN = 121
CONSTRAINT_VIOLATED = 122
BACKEND = 201
SERVICE_DEPRECATED = 202
UNDEFINED = 999

MESSAGES = {
    401: "Please authenticate yourself to use this endpoint.",
    403: "This user cannot access this resource.",
    404: "The resource you are looking for could not be found.",
    405: "Method not allowed on this endpoint.",
    409: "Integrity constraint violated, please retry.",
    410: "The service you are trying to connect no longer exists at this location.",
    412: "Resource was modified meanwhile",
    429: "Too many failed authentication attempts, retry later.",
    500: "A programmatic error occurred, developers have been informed.",
    503: "Service temporary unavailable due to overloading or maintenance, please retry later.",
}


def envelope(
    status: int,
    errno: int,
    *,
    error: str | None = None,
    message: str | None = None,
    details: Any = None,
    info: str | None = None,
) -> dict[str, Any]:
    """``{"code", "errno", "error", "message"?, "info"?, "details"?}`` with empty keys left out."""
    body: dict[str, Any] = {
        "code": status,
        "errno": errno,
        "error": error or HTTPStatus(status).phrase,
    }
    if message:
        body["message"] = message
    if info:
        body["info"] = info
    if details is not None:
        body["details"] = details
    return body


def from_error(exc: errors.Error) -> tuple[int, dict[str, Any]]:
    """Status and body for a domain error. Unknown errors are the caller's 500."""
    details: Any
    if isinstance(exc, errors.ValidationError):
        details = [
            {"location": d.location, "name": d.name, "description": d.description}
            for d in sorted(exc.details, key=lambda d: d.name or "")
        ]
        return exc.status, envelope(
            exc.status, INVALID_PARAMETERS, error=exc.error, message=exc.message, details=details
        )
    if isinstance(exc, errors.ObjectNotFound):
        errno = MISSING_RESOURCE if exc.parent else INVALID_RESOURCE_ID
        details = {"id": exc.object_id, "resource_name": exc.resource_name}
        return 404, envelope(404, errno, details=details)
    if isinstance(exc, errors.PreconditionFailed):
        details = {"existing": exc.existing} if exc.existing is not None else None
        return 412, envelope(412, MODIFIED_MEANWHILE, message=MESSAGES[412], details=details)
    if isinstance(exc, errors.Unauthorized):
        return 401, envelope(401, MISSING_AUTH_TOKEN, message=MESSAGES[401])
    if isinstance(exc, errors.Forbidden):
        return 403, envelope(403, FORBIDDEN, message=MESSAGES[403])
    if isinstance(exc, errors.TooManyRequests):
        return 429, envelope(429, CLIENT_REACHED_CAPACITY, message=MESSAGES[429])
    if isinstance(exc, errors.MethodNotAllowed):
        return 405, envelope(405, METHOD_NOT_ALLOWED, message=MESSAGES[405])
    if isinstance(exc, errors.UnicityError) and exc.field is not None:
        message = f"Conflict of field {exc.field} on record {exc.object_id}"
        details = {"field": exc.field, "existing": exc.existing}
        return 409, envelope(409, CONSTRAINT_VIOLATED, message=message, details=details)
    if isinstance(exc, errors.UnicityError | errors.ConflictError):
        return 409, envelope(409, CONSTRAINT_VIOLATED, message=MESSAGES[409])
    if isinstance(exc, errors.QuotaExceeded):
        # The historical quotas plugin's answer (protocol/10 §5): 507, errno 121.
        return 507, envelope(507, FORBIDDEN, error="Insufficient Storage", message=exc.message)
    if isinstance(exc, errors.BackendError):
        return 503, envelope(503, BACKEND, message=MESSAGES[503])
    raise TypeError(f"unmapped error {exc!r}")  # pragma: no cover - a bug in the table
