"""Domain errors of the toolkit. They know nothing of HTTP.

The web layer maps each family to a status and an errno in exactly one table
(:mod:`nuages.web.errors`)::

    Error
    ├── ValidationError          bad input (querystring, body, headers, ids)
    │   └── InvalidObjectId
    ├── ObjectNotFound           (also LookupError) missing object or parent
    ├── PreconditionFailed       If-Match / If-None-Match failed
    ├── NotModified              If-None-Match matched on a read (304)
    ├── Unauthorized             anonymous caller denied
    ├── Forbidden                authenticated caller denied
    ├── TooManyRequests          too many failed logins: come back after `retry_after`
    ├── MethodNotAllowed         disabled endpoint, readonly mode
    ├── UnicityError             an object with this id already exists
    ├── ConflictError            storage integrity conflict, retry
    ├── QuotaExceeded            a write would exceed a storage quota (quotas plugin)
    └── BackendError             a backend failed or is unreachable
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


class Error(Exception):
    """Root of every error raised by Nuages' toolkit and backends."""


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """One validation problem: where (`location`), what (`name`), why (`description`)."""

    location: str
    name: str | None
    description: str


class ValidationError(Error):
    """The request is malformed. Carries one or more :class:`ErrorDetail`."""

    def __init__(
        self,
        description: str,
        *,
        location: str = "body",
        name: str | None = None,
        details: list[ErrorDetail] | None = None,
        error: str = "Invalid parameters",
        status: int = 400,
    ) -> None:
        self.details = details or [ErrorDetail(location, name, description)]
        self.error = error
        self.status = status
        super().__init__(self.message)

    @property
    def message(self) -> str:
        first = sorted(self.details, key=lambda d: d.name or "")[0]
        # protocol/08 §1: a name (even "") contained in the description → the description alone.
        if first.name is not None and first.name in first.description:
            return first.description
        if first.name is not None:
            return f"{first.name} in {first.location}: {first.description}"
        return f"{first.location}: {first.description}"


class InvalidObjectId(ValidationError):
    def __init__(self) -> None:
        super().__init__("Invalid object id", location="path", name=None)


class ObjectNotFound(Error, LookupError):
    """No such object. `parent` is true when the missing thing is a parent (errno 111)."""

    def __init__(self, resource_name: str, object_id: str, *, parent: bool = False) -> None:
        self.resource_name = resource_name
        self.object_id = object_id
        self.parent = parent
        super().__init__(f"{resource_name} {object_id!r} not found")


class PreconditionFailed(Error):
    """A precondition header failed. `existing` is the current object, when it may be shown."""

    def __init__(self, timestamp: int, existing: dict[str, Any] | None = None) -> None:
        self.timestamp = timestamp
        self.existing = existing
        super().__init__("Resource was modified meanwhile")


class NotModified(Error):
    def __init__(self, timestamp: int) -> None:
        self.timestamp = timestamp
        super().__init__("Not modified")


class Unauthorized(Error):
    """Anonymous caller without the permission: authenticate first."""


class Forbidden(Error):
    """Authenticated caller without the permission."""


class TooManyRequests(Error):
    """Refused before any check (e.g. repeated failed logins); retry after `retry_after` s."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"Too many requests, retry after {retry_after} seconds")


class MethodNotAllowed(Error):
    def __init__(self, allowed: tuple[str, ...] = ()) -> None:
        self.allowed = allowed
        super().__init__("Method not allowed on this endpoint.")


class UnicityError(Error):
    """An object with this id (or, with `field`, this unique field value) already exists."""

    def __init__(
        self,
        resource_name: str,
        object_id: str,
        *,
        field: str | None = None,
        existing: dict[str, Any] | None = None,
    ) -> None:
        self.resource_name = resource_name
        self.object_id = object_id
        self.field = field
        self.existing = existing
        super().__init__(f"{resource_name} {object_id!r} already exists")


class ConflictError(Error):
    """A storage integrity conflict: the client should retry."""


class TransactionConflict(ConflictError):
    """A concurrent transaction changed what this one had read (PostgreSQL, several
    processes), or a backend gave up a shortcut (SQLite statements run on the event loop
    that took too long): nothing was committed, and the request is rerun from the start."""


@dataclass(slots=True)
class Attempt:
    """One run of work that its caller reruns from the start when it raises
    :class:`TransactionConflict` (the web dispatcher does, for every request and batch).

    Backends read it through :data:`CURRENT_ATTEMPT`: while ``last`` is false they may take
    an optimistic shortcut that can end in a conflict; setting ``careful`` asks the reruns
    to do without the shortcut. ``scope`` names the scope a write request writes in (the
    path of its plural endpoint, e.g. ``/v1/buckets/b/collections/c/records``): backends may
    commit concurrent writes of one scope together.

    ``unconfirmed``: the caller's stored principals were answered from what a backend
    kept, and are not yet confirmed current. The backend confirms them with the request's
    next statement; if none did, the dispatcher calls it before answering. It answers
    False when they changed (the backend forgot them): the work is then rerun, reading
    them anew. Never set on the last attempt.

    ``since`` (``time.monotonic_ns()``): when the request was read (the web dispatcher sets
    it, when the server tells) or else the attempt's start, moved to the end of each of
    its commits. A backend may answer a read of the attempt made outside any transaction
    with the answer of an identical statement sent at or after it (the statement sees
    all that the attempt must see: what was committed before the request arrived, and
    its own writes)."""

    last: bool
    careful: bool = False
    scope: str | None = None
    unconfirmed: Callable[[], Awaitable[bool]] | None = None
    since: int = field(default_factory=time.monotonic_ns)


CURRENT_ATTEMPT: ContextVar[Attempt | None] = ContextVar("nuages_attempt", default=None)
"""The :class:`Attempt` being run in this context; ``None`` when nobody would rerun it."""


def careful(attempt: Attempt | None) -> bool:
    """Whether `attempt` must do without the shortcuts that can end in a conflict: nobody
    would rerun it, it is the last, or it was made careful."""
    return attempt is None or attempt.last or attempt.careful


class QuotaExceeded(Error):
    """A write would take a bucket or collection past its quota; `message` says which."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class BackendError(Error):
    """A backend failed or is unreachable. The original exception is `__cause__`."""


@dataclass
class Collected:
    """Accumulates validation details before raising them together."""

    details: list[ErrorDetail] = field(default_factory=list)

    def add(self, location: str, name: str | None, description: str) -> None:
        self.details.append(ErrorDetail(location, name, description))

    def raise_if_any(self) -> None:
        if self.details:
            first = self.details[0]
            raise ValidationError(
                first.description, location=first.location, name=first.name, details=self.details
            )
