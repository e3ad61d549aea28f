"""The storage protocol every backend implements.

Vocabulary: an object lives in a *scope* ``(parent_id, resource_name)``.
``parent_id`` is a URI-like path (``""`` for buckets, ``/buckets/b`` for its
collections and groups, ``/buckets/b/collections/c`` for records). Objects are
JSON objects with an ``id`` (str) and a ``last_modified`` (int, epoch ms).
A deleted object leaves a tombstone ``{"id", "last_modified", "deleted": True}``.

Every operation happens inside a transaction obtained from
:meth:`Storage.transaction`. A write transaction that exits without exception is
durable when the ``async with`` block returns; one that exits with an exception
leaves no trace. Backends raise only :class:`nuages.core.errors.Error`
subclasses: driver exceptions become :class:`BackendError` (``raise ... from``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, NamedTuple, Protocol

from nuages.core.objects import ListQuery
from nuages.permission.protocol import BoundPermission

JSONObject = dict[str, Any]


class StorageTransaction(Protocol):
    async def resource_timestamp(self, resource_name: str, parent_id: str) -> int:
        """Current timestamp of the scope: the greatest ``last_modified`` of its objects
        and tombstones. A scope never written gets ``now`` once, persisted, and stable
        after that (the backend may write this even in a read transaction)."""
        ...

    async def get(
        self, resource_name: str, parent_id: str, object_id: str, *, include_deleted: bool = False
    ) -> JSONObject | None:
        """The object, or ``None``. Tombstones only with `include_deleted`."""
        ...

    async def create(
        self, resource_name: str, parent_id: str, obj: Mapping[str, Any]
    ) -> JSONObject:
        """Store a new object (``obj["id"]`` required) and return it with its
        ``last_modified``. An integer ``obj["last_modified"]`` is a requested
        timestamp (see :func:`nuages.core.timestamps.next_timestamp`). Replaces a
        tombstone with the same id. Raises :class:`UnicityError` if a live object
        with this id exists."""
        ...

    async def update(
        self, resource_name: str, parent_id: str, object_id: str, obj: Mapping[str, Any]
    ) -> JSONObject:
        """Replace (or create) the object, bump its timestamp, return it. An integer
        ``obj["last_modified"]`` greater than the stored one is a requested timestamp;
        otherwise it is ignored."""
        ...

    async def delete(
        self,
        resource_name: str,
        parent_id: str,
        object_id: str,
        *,
        last_modified: int | None = None,
    ) -> JSONObject:
        """Replace the live object by a tombstone and return the tombstone.
        Raises :class:`ObjectNotFound` if there is no live object."""
        ...

    async def list(self, resource_name: str, parent_id: str, query: ListQuery) -> list[JSONObject]:
        """Objects (and tombstones with ``include_deleted``) of the scope matching the
        filters, in the requested order, after the keyset, at most ``limit``. The order
        and filter semantics are those of :mod:`nuages.core.filtering`."""
        ...

    async def count(self, resource_name: str, parent_id: str, query: ListQuery) -> int:
        """Number of live objects matching filters and ``ids`` (never tombstones)."""
        ...

    async def purge(self, parent_prefix: str) -> None:
        """Remove everything (objects, tombstones, scope timestamps) whose parent is
        `parent_prefix` or below it (``parent_prefix + "/..."``). Used by cascades."""
        ...


class Storage(Protocol):
    def transaction(self, *, write: bool) -> AbstractAsyncContextManager[StorageTransaction]:
        """Open a transaction. Write transactions are serialised per backend; reads
        see a consistent snapshot."""
        ...

    async def ping(self) -> bool:
        """Whether the backend answers (for ``__heartbeat__``)."""
        ...

    async def flush(self) -> None:
        """Delete everything (``__flush__``, tests)."""
        ...

    async def aclose(self) -> None: ...


# (resource_name, parent_id, object_id): where one object lives.
ObjectKey = tuple[str, str, str]

# (id, last_modified, JSON text of the rest): an object as a SQL backend keeps it.
StoredObject = tuple[str, int, str]
StoredObjects = list[StoredObject]


class StoredLister(Protocol):
    """Optional, on a :class:`StorageTransaction`: :meth:`StorageTransaction.list` as the
    stored JSON text of each object, not parsed. A listing's response splices that text
    in (:func:`nuages.storage.reads.fragment`) instead of parsing each object and
    serialising it again."""

    async def list_stored(
        self, resource_name: str, parent_id: str, query: ListQuery
    ) -> StoredObjects: ...


class PageReader(Protocol):
    """Optional, on an :class:`ObjectReader`: the read of a listing's parent (with the
    caller's grant on it) and a page of the listing with the scope's timestamp, in one
    statement outside any transaction (one snapshot, so the timestamp is the ETag of
    exactly this page)."""

    async def read_object_and_page(
        self, read: ObjectRead, resource_name: str, parent_id: str, query: ListQuery
    ) -> tuple[ObjectView, tuple[int, StoredObjects] | None] | None:
        """`read`'s view, and the timestamp and the rows of
        :meth:`StoredLister.list_stored` (None when the statement cannot tell: an empty
        page, a scope never written). None when the statement cannot be made (an automatic
        index to count). Without both, the service lists in a transaction."""
        ...


class ObjectRead(NamedTuple):
    """Everything the read of one object needs, asked of an :class:`ObjectReader` at once.
    (A named tuple, like :class:`ObjectView`: immutable, and built in a fifth of the time
    of a frozen dataclass, once per ``GET``.)"""

    user_ids: tuple[str, ...]  # whose stored principals to load (the user, Authenticated)
    principals: tuple[str, ...]  # principals held without asking the store (id, Everyone...)
    bound: tuple[BoundPermission, ...]  # (uri, permission) pairs: any of them grants the read
    object: ObjectKey
    parent: ObjectKey | None = None  # the parent whose existence is checked, if any
    acl_uri: str | None = None  # the object's URI, when its ACL is wanted
    # Pairs granting the object's creation, answered apart (ObjectView.create_granted) by
    # the readers that can: a PUT that may create asks for both grants at once.
    create_bound: tuple[BoundPermission, ...] = ()


class ObjectView(NamedTuple):
    """The answer to an :class:`ObjectRead`, from one snapshot."""

    principals: frozenset[str]  # stored principals of `user_ids`
    granted: bool  # a bound pair is granted to a given or a stored principal
    object: JSONObject | None  # the live object (never a tombstone)
    parent: JSONObject | None  # the live parent; None when absent or not asked
    permissions: dict[str, set[str]]  # ACL of `acl_uri` ({} when not asked)
    # A create_bound pair is granted to a given principal; None when not answered (not
    # asked, or a reader that does not answer it: the caller then asks the permissions).
    create_granted: bool | None = None


class CreatorWithACL(Protocol):
    """Optional in a storage transaction: a backend pair keeping objects and permissions in
    one database creates an object and writes its ACL at once (one statement on
    PostgreSQL, where each statement of a write request is a round trip made while its
    scope is locked)."""

    async def create_with_acl(
        self,
        resource_name: str,
        parent_id: str,
        obj: Mapping[str, Any],
        permission: object,
        uri: str,
        replace: Mapping[str, Iterable[str]] | None,
        add: Iterable[tuple[str, str]],
    ) -> tuple[JSONObject, dict[str, set[str]]] | None:
        """``create(resource_name, parent_id, obj)``, then, if it succeeded,
        ``permission.write_object_permissions(uri, replace, add)`` (``ACLWriter``) in the
        same transaction: the object created and its ACL. None, having done nothing, when
        `permission` is not a transaction this one can write for, or the create cannot
        carry the ACL; the service then makes the two calls."""
        ...


class DeleterWithACL(Protocol):
    """Optional in a storage transaction, as :class:`CreatorWithACL`: deletes an object and
    its ACL at once."""

    async def delete_with_acl(
        self,
        resource_name: str,
        parent_id: str,
        object_id: str,
        permission: object,
        uri: str,
        *,
        last_modified: int | None = None,
    ) -> JSONObject | None:
        """``delete(resource_name, parent_id, object_id, last_modified=...)``, then, if it
        succeeded, ``permission.delete_object_permissions(uri)`` in the same transaction:
        the tombstone. None, having done nothing, when it cannot; the service then makes
        the two calls."""
        ...


class ObjectReader(Protocol):
    """Optional: a backend pair keeping objects and permissions in one database answers a
    whole :class:`ObjectRead` in one statement, outside any transaction (its own snapshot).
    ``Storage.object_reader(permission)`` returns one when `permission` shares the storage's
    database, else None; the service then uses separate calls in a transaction."""

    async def read_object(self, read: ObjectRead) -> ObjectView: ...

    async def stored_principals(self, user_ids: tuple[str, ...]) -> frozenset[str]:
        """The stored principals of `user_ids`, in one statement outside any transaction."""
        ...
