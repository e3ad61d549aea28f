"""Value types of the local store and of ``sync()``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol

from nuages.client._errors import ClientError, HTTPError
from nuages.client._requests import Record

__all__ = [
    "Change",
    "ChangeCallback",
    "Conflict",
    "LocalStoreError",
    "MergeCallback",
    "RecordExists",
    "RecordNotFound",
    "Strategy",
    "SyncChanges",
    "SyncFailure",
    "SyncMode",
    "SyncResult",
    "SyncStatus",
    "Transformer",
]


class SyncStatus(StrEnum):
    """Where a local record stands with respect to the server."""

    CREATED = "created"
    """Created locally, not on the server yet (as far as this store knows)."""
    UPDATED = "updated"
    """Changed locally since the version the server has."""
    DELETED = "deleted"
    """Deleted locally; the deletion is not on the server yet."""
    SYNCED = "synced"
    """Same as the server's version ``last_modified``."""


class Strategy(StrEnum):
    """How ``sync()`` settles a record changed both locally and on the server."""

    SERVER_WINS = "server_wins"
    """Keep the server's version (or deletion); the local change is dropped."""
    CLIENT_WINS = "client_wins"
    """Keep the local version (or deletion) and push it over the server's."""
    MANUAL = "manual"
    """Keep both: the conflict is stored and returned, the record is not pushed until
    ``resolve()`` settles it."""


class SyncMode(StrEnum):
    """What ``sync()`` does."""

    BOTH = "both"
    """Pull the server's changes, push the local ones, then pull again to catch up."""
    PULL = "pull"
    """Only bring the server's changes in."""
    PUSH = "push"
    """Only send the local changes (conflicts are still detected, by the server's 412)."""


class Transformer(Protocol):
    """Changes records on their way to the server and back, e.g. client-side encryption.

    ``encode`` gets ``{"id": …, **fields}`` and returns what the server should store (keep
    ``id``); ``decode`` gets what the server sent (with ``id`` and ``last_modified``) and returns
    the local fields. ``decode(encode(r))`` must give ``r`` back. Tombstones are not transformed.
    """

    def encode(self, record: Record) -> Record:
        """The record as the server will store it."""
        ...

    def decode(self, record: Record) -> Record:
        """The local record for what the server sent."""
        ...


@dataclass(frozen=True, slots=True)
class Conflict:
    """A record changed on both sides. ``None`` stands for a deletion on that side.

    ``remote`` carries the server's ``last_modified``; ``local`` is the local version.
    """

    id: str
    local: Record | None
    remote: Record | None

    @property
    def remote_timestamp(self) -> int | None:
        """The server version's ``last_modified`` (``None`` when deleted on the server)."""
        if self.remote is None:
            return None
        value = self.remote.get("last_modified")
        return int(value) if isinstance(value, int) else None


MergeCallback = Callable[[Conflict], "Record | None"]
"""Settles a conflict: returns the merged record (pushed as the new version), or ``None`` to
leave the conflict to the strategy."""


@dataclass(frozen=True, slots=True)
class Change:
    """One change of a local collection, given to ``on_change`` callbacks after commit.

    ``origin`` is ``"local"`` for the application's own writes and ``"remote"`` for what
    ``sync()`` brought in (server changes, settled conflicts).
    """

    action: Literal["create", "update", "delete"]
    id: str
    record: Record | None
    old: Record | None
    origin: Literal["local", "remote"]


ChangeCallback = Callable[[Change], None]
"""Called once per committed change."""


@dataclass(frozen=True, slots=True)
class SyncFailure:
    """A local change the server refused (e.g. 400 invalid, 403 forbidden); it stays pending."""

    id: str
    error: HTTPError


@dataclass(slots=True)
class SyncChanges:
    """Records created, updated and deleted in one direction of a ``sync()``."""

    created: list[Record] = field(default_factory=list)
    updated: list[Record] = field(default_factory=list)
    deleted: list[Record] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.created) + len(self.updated) + len(self.deleted)

    def counts(self) -> dict[str, int]:
        """``{"created": n, "updated": n, "deleted": n}``"""
        return {
            "created": len(self.created),
            "updated": len(self.updated),
            "deleted": len(self.deleted),
        }


@dataclass(slots=True)
class SyncResult:
    """What one ``sync()`` did.

    ``pulled``: server changes applied locally; ``pushed``: local changes the server accepted;
    ``conflicts``: unsettled conflicts (``Strategy.MANUAL``), also kept in the store until
    ``resolve()``; ``resolved``: conflicts settled by the strategy or the merge callback;
    ``errors``: local changes the server refused; ``timestamp``: the collection timestamp the
    store is now in sync with.
    """

    pulled: SyncChanges = field(default_factory=SyncChanges)
    pushed: SyncChanges = field(default_factory=SyncChanges)
    conflicts: list[Conflict] = field(default_factory=list)
    resolved: list[Conflict] = field(default_factory=list)
    errors: list[SyncFailure] = field(default_factory=list)
    timestamp: int | None = None

    @property
    def ok(self) -> bool:
        """No unsettled conflict and no refused change."""
        return not self.conflicts and not self.errors

    def summary(self) -> dict[str, Any]:
        """Counts, for logs: ``{"pulled": {...}, "pushed": {...}, "conflicts": n, ...}``."""
        return {
            "pulled": self.pulled.counts(),
            "pushed": self.pushed.counts(),
            "conflicts": len(self.conflicts),
            "resolved": len(self.resolved),
            "errors": len(self.errors),
            "timestamp": self.timestamp,
        }


class LocalStoreError(ClientError):
    """A local store operation that cannot be done."""


class RecordNotFound(LocalStoreError, KeyError):
    """No (live) local record with this id."""


class RecordExists(LocalStoreError):
    """A local record with this id already exists."""
