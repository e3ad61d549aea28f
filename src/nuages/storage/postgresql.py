"""PostgreSQL storage: objects in one table, filters and ordering compiled to SQL on JSONB.

Semantics are those of :mod:`nuages.core.filtering` (the memory backend is the oracle of
the property tests). ``id`` and ``last_modified`` are columns; any other field is read
from the JSONB column ``data``. The JSON order is rendered as a *rank* (null 0, string 1,
number 2, boolean 3, array 4, object 5, missing 6) followed by a value comparable within
that rank: strings in ``COLLATE "C"`` (code point order), numbers as ``numeric`` (exact,
any size), booleans. Equality of any value is JSONB equality (type-strict, ``1 = 1.0``),
exactly :func:`~nuages.core.filtering.json_equal`.

Large scopes: Total-Objects of a whole scope reads ``timestamps.live_count`` (kept by every
write), and frequent filtered/sorted listings get automatic partial indexes on exactly the
expressions compiled here (:mod:`nuages.storage.autoindex`, :func:`index_statement`).

Known approximations (docs/deployment.md): arrays and objects are ordered by PostgreSQL's
JSONB text rather than by their canonical JSON; ``like`` folds case with the database's
rules (``ILIKE``); a string holding U+0000 is filtered as if it held U+FFFD (it is stored
and returned exactly).

Concurrency across processes: a write takes its scope's row in ``timestamps`` with
``SELECT ... FOR UPDATE`` before anything else in that scope and holds it until commit,
so writes in one scope are serialised (other scopes are not) and the scope's timestamps
are committed in increasing order: a reader that saw timestamp T never later sees a new
object with a timestamp below T. Writers queue for the row through an advisory lock taken
in the same statement: PostgreSQL's queue for a row lock is not first come, first served
when the row keeps getting new versions (a waiter may be overtaken again and again; batch
p99 was 4x its p50 under 16 concurrent batches), its queue for an advisory lock is. The
transaction keeps the row's value while it holds the lock
(``PostgreSQLTransaction.locked``), so once the scope is locked each write is one
statement, the first included, that moves the scope's row with the object: a create is
written only where no live object has the key (with its ACL: ``create_with_acl``), an
update or a delete of an object the transaction read as live only where it is still as
read (``_replace_seen``; else the object as committed now is read first, to tell a
conflict from the transaction's own purge: two statements). These one-statement writes
are one statement (``_write_if_sql``), in a second, wider form for a create with its ACL.
In a group commit or a batch, they are deferred and sent together in one round trip, all
in the wider form when some need it (``PostgreSQLTransaction.fetch_deferrable``,
:mod:`nuages.postgresql.database`): the answer each expects is the one they give when
they write. A write whose object changed since this transaction read it (the read
happened before the lock, maybe before the request joined its group commit:
``PostgreSQLTransaction.fetch_early``) raises :class:`TransactionConflict`: the request
is rerun and its precondition (``If-Match``) is evaluated again on the current object.
"""

from __future__ import annotations

import _sre  # type: ignore[import-not-found]
import functools
import hashlib
import json
import operator
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from re import _casefix  # type: ignore[attr-defined]
from typing import TYPE_CHECKING, Any, Final, TypeGuard

import asyncpg  # type: ignore[import-untyped]
import orjson

from nuages.core.contexts import Entered
from nuages.core.errors import BackendError, ObjectNotFound, TransactionConflict, UnicityError
from nuages.core.filtering import compare_values, type_rank
from nuages.core.objects import Comparison, Filter, Keyset, ListQuery, Sort
from nuages.core.timestamps import Bump, next_timestamp, now_ms, requested_timestamp
from nuages.postgresql.database import (
    PostgreSQLDatabase,
    PostgreSQLTransaction,
    digest,
    take_kept_principals,
)
from nuages.storage import reads
from nuages.storage.autoindex import PREFIX, AutoIndexConfig, AutoIndexer, Shape, shape_of
from nuages.storage.protocol import ObjectRead, ObjectView, StoredObjects
from nuages.storage.reads import decode as _decode

if TYPE_CHECKING:
    from nuages.permission.postgresql import ACLChange, PostgreSQLPermissionTransaction
    from nuages.postgresql.reads import PostgreSQLObjectReader

JSONObject = dict[str, Any]

_INT64 = range(-(2**63), 2**63)
# Longer field names are not indexed automatically (index expressions are stored in full).
_MAX_INDEXED_NAME: Final = 200
# Longer index definitions (SQL text) are not built: their expression trees would not fit
# in a pg_index row (8 kB; the tree takes about 2.5 times the text).
_MAX_INDEX_DEFINITION: Final = 2_800
# pg_try_advisory_lock key held while an automatic index is built ("nuagesix" in ASCII).
_BUILD_LOCK: Final = int.from_bytes(b"nuagesix", "big")


# First key of the advisory locks that queue the writers of a scope (two-int4 form; its
# key space is apart from the one-bigint form above): "nuag" in ASCII.
_SCOPE_LOCKS: Final = int.from_bytes(b"nuag", "big")


def scope_key(parent_id: str, resource_name: str) -> bytes:
    return digest(parent_id, resource_name)


def object_key(parent_id: str, resource_name: str, object_id: str) -> bytes:
    return digest(parent_id, resource_name, object_id)


def _read_depends_on(read: ObjectRead, key: bytes) -> tuple[frozenset[bytes], frozenset[str]]:
    """The object keys and the ACL URIs whose writes can change `read`'s answer (its
    principals are all given: no stored ones to read); `key` is its object's."""
    keys = {key}
    if read.parent is not None:
        name, parent_id, object_id = read.parent
        keys.add(object_key(parent_id, name, object_id))
    uris = {uri for uri, _ in (*read.bound, *read.create_bound)}
    if read.acl_uri is not None:
        uris.add(read.acl_uri)
    return frozenset(keys), frozenset(uris)


class PostgreSQLStorageTransaction:
    """Storage operations in one transaction of a :class:`PostgreSQLDatabase`."""

    def __init__(
        self, db: PostgreSQLDatabase, tx: PostgreSQLTransaction, indexer: AutoIndexer
    ) -> None:
        self._db = db
        self._tx = tx
        self._indexer = indexer

    def _check_writable(self) -> None:
        if not self._tx.write:
            raise BackendError("cannot write in a read transaction (open it with write=True)")

    async def resource_timestamp(self, resource_name: str, parent_id: str) -> int:
        scope = scope_key(parent_id, resource_name)
        current = await self._tx.fetchval(
            "SELECT last_modified FROM timestamps WHERE scope = $1", scope
        )
        if current is not None:
            return int(current)
        if self._tx.write:
            # Our own transaction: the row becomes visible (and stable) when it commits.
            own = await _create_scope_timestamp(self._tx, scope, parent_id, resource_name)
            return own[0]

        async def create(tx: PostgreSQLTransaction) -> tuple[int, bool]:
            return await _create_scope_timestamp(tx, scope, parent_id, resource_name)

        timestamp, created = await self._db.run_write(create)
        if not created:
            # Another process wrote in the scope after our snapshot began: objects this
            # snapshot cannot see may carry that timestamp. Rerun on a newer snapshot.
            raise TransactionConflict()
        return timestamp

    async def read_object(self, read: ObjectRead) -> ObjectView:
        """An :class:`ObjectRead` whose principals are all given, in this transaction and
        in one statement: valid when the permission backend keeps its tables in this
        database (``PostgreSQLStorage.object_reader``). A parent and the caller's grant
        on it, for a create, cost one round trip instead of two; the parent, the object,
        the grant and the ACL, for a change, one instead of four."""
        from nuages.postgresql.reads import object_read_sql, tagged_rows, token_of, with_token

        resource_name, parent_id, object_id = read.object
        key = object_key(parent_id, resource_name, object_id)
        remembered = self._tx.views.get(read)
        if remembered is not None:
            view: ObjectView = remembered[0]
        else:
            sql, args = object_read_sql(read)
            depends = _read_depends_on(read, key)
            # The caller's principals, if kept by the reader, are confirmed by this read.
            kept = take_kept_principals(self._db)
            # A write not yet in its group commit reads before joining it, if it can; other
            # transactions read in themselves.
            if kept is None:
                rows = await self._tx.fetch_early(sql, *args, depends=depends)
            else:
                rows = await self._tx.fetch_early(with_token(sql), *args, depends=depends)
                if not kept.confirmed(token_of(rows)):
                    raise TransactionConflict()
                rows = tagged_rows(rows)
            view = reads.object_view(read, rows)
            self._tx.views[read] = (view, *depends)
        if self._tx.write:  # as get(): the object, as this transaction read it
            obj = view.object
            self._tx.seen.setdefault(key, None if obj is None else int(obj["last_modified"]))
        return view

    async def get(
        self, resource_name: str, parent_id: str, object_id: str, *, include_deleted: bool = False
    ) -> JSONObject | None:
        key = object_key(parent_id, resource_name, object_id)
        row = await self._tx.fetchrow(
            "SELECT last_modified, deleted, body FROM objects WHERE key = $1", key
        )
        if self._tx.write and key not in self._tx.seen:
            self._tx.seen[key] = None if row is None or row[1] else int(row[0])
        if row is None or (row[1] and not include_deleted):
            return None
        return _decode(object_id, row[0], row[2])

    async def _lock(
        self, resource_name: str, parent_id: str, object_id: str
    ) -> tuple[bytes, tuple[int, bool] | None, int | None]:
        """Take the scope lock, then read the object as committed now; raise
        TransactionConflict if it changed since this transaction last read it."""
        self._check_writable()
        key = object_key(parent_id, resource_name, object_id)
        previous = await _lock_scope(self._tx, parent_id, resource_name)
        row = await self._tx.fetchrow(
            "SELECT last_modified, deleted FROM objects WHERE key = $1", key
        )
        existing = None if row is None else (int(row[0]), bool(row[1]))
        now_live = None if existing is None or existing[1] else existing[0]
        # Gone (not a tombstone) below a prefix this transaction purged is its own doing.
        purged = row is None and _below_any(parent_id, self._tx.purged)
        if key in self._tx.seen and self._tx.seen[key] != now_live and not purged:
            raise self._tx.conflict()
        return key, existing, previous

    async def _replace_seen(
        self,
        resource_name: str,
        parent_id: str,
        object_id: str,
        stored: _Stored,
        requested: int | None,
        *,
        acl_uri: str | None = None,
    ) -> int | None:
        """Write `stored` over an object this transaction read as live, in one statement
        once the scope is locked: written (and the scope's row moved, and the ACL of
        `acl_uri` deleted if given) only if the object is still as read. Its new timestamp;
        None, having written nothing, when it was not read as live or is not as read any
        more (:meth:`_lock` then tells a conflict from this transaction's own purge)."""
        key = object_key(parent_id, resource_name, object_id)
        seen = self._tx.seen.get(key)
        if seen is None:
            return None
        self._check_writable()
        previous = await _lock_scope(self._tx, parent_id, resource_name)
        ignored = requested is not None and requested <= seen
        bump = next_timestamp(previous, None if ignored else requested)
        args = _store_args(key, parent_id, resource_name, object_id, stored, bump)
        args += [bump.scope_timestamp, _live(stored) - 1, seen, acl_uri]
        rows = await _write_if(self._tx, key, args, None)
        if not rows[0][0]:
            return None
        self._tx.locked[args[1]] = bump.scope_timestamp
        await self._written(key, None if stored.deleted else bump.object_timestamp)
        return bump.object_timestamp

    async def _written(self, key: bytes, timestamp: int | None) -> None:
        self._tx.seen[key] = timestamp

    async def create(
        self, resource_name: str, parent_id: str, obj: Mapping[str, Any]
    ) -> JSONObject:
        object_id = obj["id"]
        stored = _encode(obj)
        requested = requested_timestamp(obj.get("last_modified"))
        key = object_key(parent_id, resource_name, object_id)
        if self._tx.seen.get(key) is None:  # not read, or read as absent
            timestamp, _ = await self._create_unless_live(
                key, resource_name, parent_id, object_id, stored, requested
            )
            return _decode(object_id, timestamp, stored.body)
        key, existing, previous = await self._lock(resource_name, parent_id, object_id)
        if existing is not None and not existing[1]:
            raise UnicityError(resource_name, object_id)
        bump = next_timestamp(previous, requested)
        timestamp = await _store(
            self._tx, key, parent_id, resource_name, object_id, stored, bump, _live(stored)
        )
        await self._written(key, timestamp)
        return _decode(object_id, timestamp, stored.body)

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
        """:class:`~nuages.storage.protocol.CreatorWithACL`: :meth:`create`, then the
        object's ACL written by `permission` (``write_object_permissions(uri, replace,
        add)``), in the statement of the create when `permission` writes in this
        transaction and the scope is locked (once it is, a create is one statement: its
        ACL rides along). None, having done nothing, when it cannot."""
        from nuages.permission.postgresql import ACLChange

        object_id = obj["id"]
        if not self._writes_for(permission):
            return None
        key = object_key(parent_id, resource_name, object_id)
        if self._tx.seen.get(key) is not None:
            return None  # read as live: create() raises, or conflicts
        stored = _encode(obj)
        change = ACLChange(uri, replace, add)
        requested = requested_timestamp(obj.get("last_modified"))
        timestamp, rows = await self._create_unless_live(
            key, resource_name, parent_id, object_id, stored, requested, change
        )
        acl = change.result((row[1], row[2]) for row in rows)
        return _decode(object_id, timestamp, stored.body), acl

    async def _create_unless_live(
        self,
        key: bytes,
        resource_name: str,
        parent_id: str,
        object_id: str,
        stored: _Stored,
        requested: int | None,
        change: ACLChange | None = None,
    ) -> tuple[int, list[Any]]:
        """Create an object this transaction has not read as live. Once the scope is locked
        (by this transaction or its group, before or now), no other writer can change its
        objects: the check and the write are one statement, which writes (with the ACL of
        `change`, if given) only if no live object has the key. The object's timestamp, and
        the statement's rows. `key` is the object's (:func:`object_key`)."""
        self._check_writable()
        previous = await _lock_scope(self._tx, parent_id, resource_name)
        bump = next_timestamp(previous, requested)
        args = _store_args(key, parent_id, resource_name, object_id, stored, bump)
        args += [bump.scope_timestamp, _live(stored), None, None]
        rows = await _write_if(self._tx, key, args, change)
        if not rows[0][0]:  # a live object has the key: nothing was written
            if key in self._tx.seen:  # absent when this transaction read it
                raise self._tx.conflict()
            raise UnicityError(resource_name, object_id)
        self._tx.locked[args[1]] = bump.scope_timestamp
        await self._written(key, bump.object_timestamp)
        return bump.object_timestamp, rows

    def _writes_for(self, permission: object) -> TypeGuard[PostgreSQLPermissionTransaction]:
        """Whether `permission` writes in this transaction (a PostgreSQL permission
        transaction joined to it): its statements can then be parts of this one's."""
        from nuages.permission.postgresql import PostgreSQLPermissionTransaction

        return isinstance(permission, PostgreSQLPermissionTransaction) and permission.shares(
            self._tx
        )

    async def update(
        self, resource_name: str, parent_id: str, object_id: str, obj: Mapping[str, Any]
    ) -> JSONObject:
        stored = _encode(obj)
        requested = requested_timestamp(obj.get("last_modified"))
        written = await self._replace_seen(resource_name, parent_id, object_id, stored, requested)
        if written is not None:
            return _decode(object_id, written, stored.body)
        key, existing, previous = await self._lock(resource_name, parent_id, object_id)
        ignored = existing is not None and requested is not None and requested <= existing[0]
        delta = _live(stored) - (existing is not None and not existing[1])
        bump = next_timestamp(previous, None if ignored else requested)
        timestamp = await _store(
            self._tx, key, parent_id, resource_name, object_id, stored, bump, delta
        )
        await self._written(key, timestamp)
        return _decode(object_id, timestamp, stored.body)

    async def delete(
        self,
        resource_name: str,
        parent_id: str,
        object_id: str,
        *,
        last_modified: int | None = None,
    ) -> JSONObject:
        requested = requested_timestamp(last_modified)
        written = await self._replace_seen(
            resource_name, parent_id, object_id, _TOMBSTONE, requested
        )
        if written is not None:
            return _tombstone(object_id, written)
        return await self._delete_locked(resource_name, parent_id, object_id, requested)

    async def _delete_locked(
        self, resource_name: str, parent_id: str, object_id: str, requested: int | None
    ) -> JSONObject:
        """:meth:`delete` in two statements: the object as committed now (:meth:`_lock`),
        then its tombstone."""
        key, existing, previous = await self._lock(resource_name, parent_id, object_id)
        if existing is None or existing[1]:
            raise ObjectNotFound(resource_name, object_id)
        ignored = requested is not None and requested <= existing[0]
        bump = next_timestamp(previous, None if ignored else requested)
        timestamp = await _store(
            self._tx, key, parent_id, resource_name, object_id, _TOMBSTONE, bump, -1
        )
        await self._written(key, None)
        return _tombstone(object_id, timestamp)

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
        """:class:`~nuages.storage.protocol.DeleterWithACL`: :meth:`delete`, and the ACL of
        `uri` deleted by `permission` (``delete_object_permissions(uri)``), in the statement
        of the delete when `permission` writes in this transaction and the object was read
        as live. None, having done nothing, when it cannot."""
        if not self._writes_for(permission):
            return None
        if self._tx.seen.get(object_key(parent_id, resource_name, object_id)) is None:
            return None  # not read as live: delete() says what happens
        requested = requested_timestamp(last_modified)
        written = await self._replace_seen(
            resource_name, parent_id, object_id, _TOMBSTONE, requested, acl_uri=uri
        )
        if written is not None:
            return _tombstone(object_id, written)
        # Changed since it was read: as delete() then (a conflict, unless this transaction
        # purged it), without trying the statement that just missed again.
        tombstone = await self._delete_locked(resource_name, parent_id, object_id, requested)
        await permission.delete_object_permissions(uri)
        return tombstone

    async def list(self, resource_name: str, parent_id: str, query: ListQuery) -> list[JSONObject]:
        return [_decode(*row) for row in await self.list_stored(resource_name, parent_id, query)]

    async def list_stored(
        self, resource_name: str, parent_id: str, query: ListQuery
    ) -> StoredObjects:
        """:meth:`list`, each object as its stored JSON text (``StoredLister``)."""
        shape = index_shape(resource_name, parent_id, query) if self._indexer.enabled else None
        index = None if shape is None else index_statement(shape)
        if index is not None:
            await self._indexer.refresh()
        indexed = index is not None and index[0] in self._indexer.known
        sql, params = list_sql(resource_name, parent_id, query, indexed=indexed)
        rows = await self._tx.fetch(sql, *params)
        if index is not None and not indexed:

            async def live_objects() -> int:
                return await self._live_count(resource_name, parent_id)

            await self._indexer.observe(*index, live_objects)
        stored = _stored_rows(rows)
        if self._tx.write and not query.include_deleted:
            # What a write transaction lists, it has read, as with get(): a later write of
            # one of these objects is one statement if it is unchanged since (the objects
            # of a plural DELETE), a conflict if a concurrent transaction changed it.
            seen = self._tx.seen
            for object_id, last_modified, _ in stored:
                seen.setdefault(object_key(parent_id, resource_name, object_id), last_modified)
        return stored

    async def count(self, resource_name: str, parent_id: str, query: ListQuery) -> int:
        if not query.filters and query.ids is None:
            return await self._live_count(resource_name, parent_id)
        sql, params = count_sql(resource_name, parent_id, query)
        return int(await self._tx.fetchval(sql, *params))

    async def _live_count(self, resource_name: str, parent_id: str) -> int:
        """The scope's number of live objects, kept by every write (timestamps.live_count)."""
        value = await self._tx.fetchval(
            "SELECT live_count FROM timestamps WHERE scope = $1",
            scope_key(parent_id, resource_name),
        )
        return 0 if value is None else int(value)

    async def purge(self, parent_prefix: str) -> None:
        self._check_writable()
        self._tx.locked.clear()  # scope rows below the prefix go
        self._tx.purged.append(parent_prefix)  # and objects it may have read (_lock)
        for table in ("objects", "timestamps"):
            await self._tx.execute(
                f"DELETE FROM {table} WHERE {_below('parent_id', parent_prefix)}",
                _text(parent_prefix),
                _text(parent_prefix) + "/",
                _text(parent_prefix) + "0",
            )


def _tombstone(object_id: str, timestamp: int) -> JSONObject:
    return {"id": object_id, "last_modified": timestamp, "deleted": True}


def _below_any(parent_id: str, prefixes: Sequence[str]) -> bool:
    """Whether `parent_id` is one of `prefixes` or below one of them."""
    return any(parent_id == p or parent_id.startswith(p + "/") for p in prefixes)


def _below(column: str, prefix: str) -> str:
    """SQL for ``column = $1 OR column starts with $1 || '/'`` using the left(…, 200)
    index: every such string sorts between $2 (prefix + "/") and $3 (prefix + "0")."""
    return (
        f'((left({column}, 200) COLLATE "C" = left($1, 200) AND {column} = $1)'
        f' OR (left({column}, 200) COLLATE "C" >= left($2, 200)'
        f' AND left({column}, 200) COLLATE "C" <= left($3, 200)'
        f' AND {column} COLLATE "C" >= $2 AND {column} COLLATE "C" < $3))'
    )


class PostgreSQLStorage:
    """Storage in a :class:`PostgreSQLDatabase`, usually shared with
    :class:`~nuages.permission.postgresql.PostgreSQLPermission` so that their transactions
    join (one commit per request)."""

    def __init__(
        self, db: PostgreSQLDatabase, *, auto_index: AutoIndexConfig | None = None
    ) -> None:
        self.db = db
        self.indexer = AutoIndexer(
            auto_index or AutoIndexConfig(), self._valid_auto_indexes, self._build_index
        )

    def transaction(
        self, *, write: bool
    ) -> Entered[PostgreSQLTransaction, PostgreSQLStorageTransaction]:
        return Entered(
            self.db.transaction(write=write),
            lambda tx: PostgreSQLStorageTransaction(self.db, tx, self.indexer),
        )

    async def _valid_auto_indexes(self) -> set[str]:
        rows = await self.db.run_read(
            lambda tx: tx.fetch(
                "SELECT c.relname FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid"
                " WHERE i.indrelid = 'objects'::regclass AND i.indisvalid"
                " AND c.relname LIKE $1",
                PREFIX.replace("_", "\\_") + "%",
            )
        )
        return {row[0] for row in rows}

    async def _build_index(self, name: str, statement: str, ready: Callable[[], None]) -> bool:
        """Build an automatic index on a connection of its own: ``CONCURRENTLY`` (writes
        go on meanwhile) cannot run in a transaction. An index another process built is
        only taken. One build at a time in the whole database (an advisory lock: two
        concurrent builds on one table deadlock, each waiting for the other's
        transaction); an invalid leftover of an interrupted build is dropped first. Once
        built, the index serves listings (`ready`), then ANALYZE gives the planner
        statistics on its expressions: under load it takes longer than the build, and
        listings waited for it."""
        conn = await asyncpg.connect(self.db.dsn, timeout=self.db.timeout)
        try:
            if await _index_valid(conn, name):
                ready()  # built by another process, which analyses the table
                return True
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _BUILD_LOCK):
                return False  # another process is building one: this one waits its turn
            try:
                if await _index_valid(conn, name) is False:
                    await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
                await conn.execute(statement, timeout=None)
                ready()
                await conn.execute("ANALYZE objects", timeout=None)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _BUILD_LOCK)
        finally:
            await conn.close()
        return True

    def object_reader(self, permission: object) -> PostgreSQLObjectReader | None:
        """One-statement object reads, when `permission` keeps its entries in this database."""
        from nuages.permission.postgresql import PostgreSQLPermission
        from nuages.postgresql.reads import PostgreSQLObjectReader

        if isinstance(permission, PostgreSQLPermission) and permission.db is self.db:
            return PostgreSQLObjectReader(self.db, self.indexer)
        return None

    async def ping(self) -> bool:
        return await self.db.ping()

    async def flush(self) -> None:
        async def flush(tx: PostgreSQLTransaction) -> None:
            await tx.execute("DELETE FROM objects; DELETE FROM timestamps")
            tx.locked.clear()

        await self.db.run_write(flush)

    async def aclose(self) -> None:
        await self.indexer.aclose()
        await self.db.aclose()


# -- rows ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Stored:
    """An object as stored: `body` is its exact JSON without `id` and `last_modified`,
    `data` the JSON given to the JSONB column (U+0000 replaced)."""

    body: str
    data: str
    deleted: bool
    has_nul: bool


_TOMBSTONE: Final = _Stored('{"deleted":true}', '{"deleted":true}', deleted=True, has_nul=False)
# An escaped backslash, or the escape of U+0000 (which JSONB rejects).
_NUL_ESCAPE: Final = re.compile(r"(\\\\)|\\u0000")


def _encode(obj: Mapping[str, Any]) -> _Stored:
    data = {k: v for k, v in obj.items() if k != "id" and k != "last_modified"}
    try:
        text = orjson.dumps(data).decode()
    except orjson.JSONEncodeError as exc:
        raise BackendError(f"object cannot be stored as JSON: {exc}") from exc
    has_nul = "\\u0000" in text
    queryable = _NUL_ESCAPE.sub(lambda m: m.group(1) or "\\ufffd", text) if has_nul else text
    return _Stored(text, queryable, deleted=data.get("deleted") is True, has_nul=has_nul)


def _text(value: str) -> str:
    """`value` as TEXT can hold it (U+0000 becomes U+FFFD): for sorting and prefixes only."""
    return value.replace("\x00", "\ufffd")


async def _index_valid(conn: Any, name: str) -> bool | None:
    """Whether the index `name` is valid (None: there is none)."""
    valid: bool | None = await conn.fetchval(
        "SELECT i.indisvalid FROM pg_index AS i JOIN pg_class AS c"
        " ON c.oid = i.indexrelid WHERE c.relname = $1",
        name,
    )
    return valid


async def page_statement(
    indexer: AutoIndexer, resource_name: str, parent_id: str, query: ListQuery
) -> tuple[str, list[Any]] | None:
    """The statement of a page of a listing outside any transaction, in one snapshot
    (``PostgreSQLObjectReader.read_object_and_page``): rows (id, raw id, last_modified,
    body, scope timestamp), ``list_stored``'s with the timestamp, which is the ETag of
    exactly these rows. None when the listing's shape has an automatic index still to
    build (the transactional listing counts it)."""
    shape = index_shape(resource_name, parent_id, query) if indexer.enabled else None
    index = None if shape is None else index_statement(shape)
    if index is not None:
        await indexer.refresh()
        if index[0] not in indexer.known:
            return None
    return list_sql(resource_name, parent_id, query, indexed=index is not None, with_timestamp=True)


def page_of(
    rows: Sequence[Sequence[Any]], columns: tuple[int, int, int, int, int]
) -> tuple[int, StoredObjects] | None:
    """The scope's timestamp and the page, from rows holding the columns of
    :func:`page_statement` (id, raw id, last_modified, body, scope timestamp) at the
    indexes `columns`; None when they cannot tell it: the page is empty, or the scope was
    never written (no timestamp row)."""
    *fields, timestamp = columns
    if not rows or rows[0][timestamp] is None:
        return None
    return int(rows[0][timestamp]), _stored_rows(map(operator.itemgetter(*fields), rows))


def _stored_rows(rows: Iterable[Sequence[Any]]) -> StoredObjects:
    """Listed rows (id, raw id, last_modified, body) as stored objects (id, last_modified,
    body); a raw id is the JSON of an id holding U+0000, which TEXT cannot."""
    return [
        (object_id if raw_id is None else orjson.loads(raw_id), last_modified, body)
        for object_id, raw_id, last_modified, body in rows
    ]


def _live(stored: _Stored) -> int:
    """1 when `stored` counts as a live object (not a tombstone), else 0."""
    return 0 if stored.deleted else 1


_INSERT: Final = (
    "INSERT INTO objects (key, scope, parent_id, resource_name, id, raw_id, last_modified,"
    " deleted, has_nul, body, data)"
)
_REPLACE: Final = (
    " ON CONFLICT (key) DO UPDATE SET last_modified = excluded.last_modified,"
    " deleted = excluded.deleted, has_nul = excluded.has_nul, body = excluded.body,"
    " data = excluded.data"
)
_STORE: Final = _INSERT + " VALUES ($1, $2, $3, $4, $5, $11, $6, $7, $8, $9, $10::jsonb)" + _REPLACE
# The scope's row moves in the same statement (a data-modifying WITH runs whether or not
# the INSERT reads it): one round trip while the scope is locked, not two.
_BUMP_AND_STORE: Final = (
    "WITH bump AS (UPDATE timestamps SET last_modified = $12, live_count = live_count + $13"
    " WHERE scope = $2) " + _STORE
)
# The values of _STORE ($1 to $11) as a SELECT, to write them only where a condition holds.
_SELECT_VALUES: Final = (
    " SELECT $1::bytea, $2::bytea, $3::text, $4::text, $5::text, $11::text, $6::bigint,"
    " $7::boolean, $8::boolean, $9::text, $10::jsonb"
)
# A write in a scope this transaction has locked already, in one statement: a create ($14
# null) is written unless a live object has the key; an update or a delete of an object
# this transaction read as live with timestamp $14, only if it still is. When written, the
# scope's row moves as in _BUMP_AND_STORE and the ACL of the URI $15 is deleted if given
# (a delete: delete_acl_sql). Answers whether it wrote. _write_if_sql(acl=True) writes the
# ACL of the URI $16 too if given (ACLChange.sql from $16: a create's ACL), and answers a
# row per entry of that ACL before the statement (a single row of nulls when it had none,
# or without $16), each with whether it wrote.
# The two statements answer the same when they write and the ACL of $16 was empty
# (_WRITTEN), and the first one's parameters are the second one's first ones: a group
# commit's deferred writes that need both are all sent as the second, in one round trip
# (PostgreSQLTransaction.fetch_deferrable's `wider`); only those that write an ACL pay
# for its parts (8-10 us of PostgreSQL's time per write here).
# Parameters that may be null are read through sub-selects, which PostgreSQL plans
# without their values: otherwise its custom plans, which drop the parts a null leaves
# unused, are cheaper than its generic plan, and it plans the statement anew at every
# execution (about 1 ms; the create-with-ACL statement had that cost until `c27b6fc`).
_WRITE_IF_CTES: Final = (
    "WITH live AS (SELECT FROM objects WHERE key = $1 AND NOT deleted"
    " AND ($14::bigint IS NULL OR last_modified = $14)),"
    " bump AS (UPDATE timestamps SET last_modified = $12, live_count = live_count + $13"
    " WHERE scope = $2 AND {guard}),"
    " written AS (" + _INSERT + _SELECT_VALUES + " WHERE {guard}" + _REPLACE + "), "
)
_WRITE_IF_GUARD: Final = "EXISTS (SELECT FROM live) = ($14::bigint IS NOT NULL)"
_WRITTEN: Final = (True, None, None)
# The parameters of _write_if_sql(acl=True) after those of _write_if_sql(acl=False), when
# it writes no ACL.
_NO_ACL: Final = (None,) * 5


@functools.cache
def _write_if_sql(*, acl: bool) -> str:
    """_WRITE_IF_CTES as a whole statement (its ACL parts come from the permission
    backend, imported on first use)."""
    from nuages.permission.postgresql import ACLChange, delete_acl_sql

    guard = _WRITE_IF_GUARD
    sql = _WRITE_IF_CTES.format(guard=guard) + delete_acl_sql("(SELECT $15::text)", guard)
    if not acl:
        return f"{sql} SELECT {guard}, NULL::text, NULL::text"
    acl_ctes, before = ACLChange.sql(16, guard, opaque=True)
    return f"{sql}, {acl_ctes} SELECT {guard}, acl.permission, acl.principal FROM {before}"


async def _write_if(
    tx: PostgreSQLTransaction, key: bytes, args: list[Any], change: ACLChange | None
) -> list[Any]:
    """Run (or defer) _write_if_sql with `args` ($1 to $15), and the ACL of `change` if
    given; its rows."""
    if change is not None:
        sql = _write_if_sql(acl=True)
        return await tx.fetch_deferrable(_WRITTEN, key, change.uri, sql, *args, *change.args())
    wider = (_write_if_sql(acl=True), _NO_ACL)
    return await tx.fetch_deferrable(
        _WRITTEN, key, args[14], _write_if_sql(acl=False), *args, wider=wider
    )


def _store_args(
    key: bytes, parent_id: str, resource_name: str, object_id: str, stored: _Stored, bump: Bump
) -> list[Any]:
    """Parameters $1 to $11 of _STORE (the scope key is $2)."""
    return [
        key,
        scope_key(parent_id, resource_name),
        _text(parent_id),
        _text(resource_name),
        _text(object_id),
        bump.object_timestamp,
        stored.deleted,
        stored.has_nul,
        stored.body,
        stored.data,
        orjson.dumps(object_id).decode() if "\x00" in object_id else None,
    ]


async def _store(
    tx: PostgreSQLTransaction,
    key: bytes,
    parent_id: str,
    resource_name: str,
    object_id: str,
    stored: _Stored,
    bump: Bump,
    live_delta: int,
) -> int:
    """Write the object with the timestamp of `bump`, computed from the scope's row that
    this transaction has locked (:func:`_lock_scope`), and move that row: to the scope
    timestamp of `bump`, and its number of live objects by `live_delta` (-1, 0 or 1).
    Returns the object's timestamp."""
    args = _store_args(key, parent_id, resource_name, object_id, stored, bump)
    scope = args[1]
    previous = tx.locked.get(scope)
    if bump.scope_timestamp != previous or live_delta:
        await tx.execute(_BUMP_AND_STORE, *args, bump.scope_timestamp, live_delta)
    else:
        await tx.execute(_STORE, *args)
    tx.locked[scope] = bump.scope_timestamp
    return bump.object_timestamp


async def _create_scope_timestamp(
    tx: PostgreSQLTransaction, scope: bytes, parent_id: str, resource_name: str
) -> tuple[int, bool]:
    """The scope's timestamp, set to now unless it exists; and whether it was created."""
    created = await tx.fetchval(
        "INSERT INTO timestamps (scope, parent_id, resource_name, last_modified)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING last_modified",
        scope,
        _text(parent_id),
        _text(resource_name),
        now_ms(),
    )
    if created is not None:
        return int(created), True
    value = await tx.fetchval("SELECT last_modified FROM timestamps WHERE scope = $1", scope)
    return int(value), False


async def _lock_scope(tx: PostgreSQLTransaction, parent_id: str, resource_name: str) -> int | None:
    """Lock the scope's timestamp row until commit; its current value (None: new scope).

    Writers wait in the queue of an advisory lock of the scope (module docs), held until
    commit like the row; once they have it, the row is theirs at once.

    Once locked, the row changes only through this transaction, which keeps its value
    (``tx.locked``): later writes in the scope, by this request or by later members of its
    group commit, skip this statement."""
    scope = scope_key(parent_id, resource_name)
    await tx.join()  # its group's scope rows, locked already or not
    known = tx.locked.get(scope)
    if known is not None:
        return known
    queue = (_SCOPE_LOCKS, int.from_bytes(scope[:4], "big", signed=True))
    while True:
        # Timed for a member of a group commit (tx.join() placed it), when observed.
        started = time.perf_counter() if tx.group is not None and tx.db.step_observers else 0.0
        value = await tx.fetchval(
            "SELECT last_modified FROM timestamps WHERE scope = $1"
            " AND pg_advisory_xact_lock($2, $3) IS NOT NULL FOR UPDATE",
            scope,
            *queue,
        )
        if started:
            tx.db.observe_step("lock", started)
        if value is not None:
            tx.locked[scope] = int(value)
            return int(value)
        # A new scope: the inserted row is locked by this transaction. If another one
        # inserted it first, ON CONFLICT waits for it to commit; then lock that row.
        await tx.execute("SELECT pg_advisory_xact_lock($1, $2)", *queue)
        placeholder = now_ms()  # replaced by _store; also valid should no write follow
        inserted = await tx.fetchval(
            "INSERT INTO timestamps (scope, parent_id, resource_name, last_modified)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true",
            scope,
            _text(parent_id),
            _text(resource_name),
            placeholder,
        )
        if inserted:
            tx.locked[scope] = placeholder
            return None


# -- query compiler -----------------------------------------------------------------
# Every predicate below is true or false, never NULL, so that NOT(...) is exact.


class _Params:
    """Positional parameters of one statement: values are bound, never spliced."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any, cast: str = "") -> str:
        self.values.append(value)
        return f"${len(self.values)}{cast}"

    def json(self, value: Any) -> str:
        return self(_json_param(value), "::jsonb")


def _json_param(value: Any) -> str:
    # JSONB cannot hold U+0000: compare with what the column holds instead.
    text = json.dumps(value)  # not orjson: integers beyond 64 bits
    return _NUL_ESCAPE.sub(lambda m: m.group(1) or "\\ufffd", text)


@dataclass(frozen=True, slots=True)
class _Column:
    """``id`` or ``last_modified``: always present and of one rank."""

    sql: str
    rank: int
    sample: Any  # any value of the column: compares with other ranks like all of them


@dataclass(frozen=True, slots=True)
class _JsonField:
    """A field inside ``data``: `sql` is an SQL JSONB expression, NULL when missing."""

    sql: str
    key: str | None = None  # the top-level key, when the field is one

    @property
    def rank(self) -> str:
        return (
            f"(CASE jsonb_typeof({self.sql}) WHEN 'null' THEN 0 WHEN 'string' THEN 1"
            " WHEN 'number' THEN 2 WHEN 'boolean' THEN 3 WHEN 'array' THEN 4"
            " WHEN 'object' THEN 5 ELSE 6 END)"
        )

    def value(self, rank: int) -> str:
        """SQL ordering the values of one rank like compare_values() (for that rank only)."""
        if rank == 1:
            return f"(({self.sql}) #>> '{{}}') COLLATE \"C\""
        if rank == 2:
            return f"(({self.sql})::numeric)"
        if rank == 3:
            return f"(({self.sql})::boolean)"
        return f'(({self.sql})::text COLLATE "C")'


_Field = _Column | _JsonField


def _literal(text: str) -> str:
    """`text` as an SQL string literal, whatever ``standard_conforming_strings`` says."""
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'::text"


def _field(name: str, table: str = "o.") -> _Field:
    """The SQL of a field. Field names are literals, not parameters, so that the same
    expression in an index (`table` ``""``) and in a query (``"o."``) are one expression
    for the planner whatever plan (custom or generic) it makes."""
    if name == "id":
        return _Column(f'{table}id COLLATE "C"', 1, "")
    if name == "last_modified":
        return _Column(f"{table}last_modified", 2, 0)
    name = name.replace("\x00", "\ufffd")  # as in the JSONB column (_encode)
    top = f"({table}data -> {_literal(name)})"
    if "." not in name:
        return _JsonField(top, name)
    # get_field(): a top-level key spelled with dots first, then nested objects (`->` with
    # a text key gives NULL on anything but an object, like get_field()).
    nested = f"{table}data" + "".join(f" -> {_literal(part)}" for part in name.split("."))
    return _JsonField(f"(CASE WHEN {table}data ? {_literal(name)} THEN {top} ELSE ({nested}) END)")


def _sql_value(value: Any, rank: int, params: _Params) -> str:
    if rank == 1:
        return f'{params(value.replace(chr(0), chr(0xFFFD)), "::text")} COLLATE "C"'
    if rank == 2:
        return params(repr(value) if isinstance(value, float) else str(value), "::numeric")
    if rank == 3:
        return params(value, "::boolean")
    return f'({params.json(value)}::text COLLATE "C")'


_HOLDS: Final = {
    "<": lambda sign: sign < 0,
    "<=": lambda sign: sign <= 0,
    "=": lambda sign: sign == 0,
    ">=": lambda sign: sign >= 0,
    ">": lambda sign: sign > 0,
}


def _finite(value: Any) -> bool:
    """False for NaN and infinities, which JSON (and so no stored value) cannot hold."""
    return not isinstance(value, float) or value - value == 0


def _nan(value: Any) -> bool:
    return isinstance(value, float) and value != value


def _compare(field: _Field, op: str, value: Any, params: _Params) -> str:
    """SQL for ``compare_values(field, value) <op> 0``."""
    rank = type_rank(value)
    if isinstance(field, _Column):
        if rank != field.rank or (rank == 2 and not (isinstance(value, int) and value in _INT64)):
            if rank == field.rank and rank == 2 and not _nan(value):
                return f"({field.sql}::numeric {op} {_sql_value(value, 2, params)})"
            return "true" if _HOLDS[op](compare_values(field.sample, value)) else "false"
        if rank == 1:
            return f"({field.sql} {op} {params(_text(value), '::text')})"
        return f"({field.sql} {op} {params(value, '::bigint')})"
    if rank in (0, 6) or _nan(value):
        return f"({field.rank} {op} {rank})"
    found = f"({field.value(rank)} {op} {_sql_value(value, rank, params)})"
    if op == "=":
        return f"({field.rank} = {rank} AND {found})"
    return f"({field.rank} {op[0]} {rank} OR ({field.rank} = {rank} AND {found}))"


def _equal(field: _Field, value: Any, params: _Params) -> str:
    """SQL for ``json_equal(field, value)``, false when the field is missing."""
    rank = type_rank(value)
    if isinstance(field, _Column):
        return _compare(field, "=", value, params) if rank == field.rank else "false"
    if rank == 6 or not _finite(value):
        return "false"
    # JSONB equality is type-strict and numeric (1 = 1.0): json_equal() exactly.
    exact = f"COALESCE({field.sql} = {params.json(value)}, false)"
    if field.key is not None and rank in (1, 2, 3):
        # Containment is implied by equality: a prefilter the GIN index (objects_data) serves.
        return f"(o.data @> {params.json({field.key: value})} AND {exact})"
    return exact


def _is_in(field: _Field, values: Sequence[Any], params: _Params) -> str:
    if isinstance(field, _Column):
        terms = [_equal(field, v, params) for v in values]
        return f"({' OR '.join(terms)})" if terms else "false"
    usable = [v for v in values if type_rank(v) != 6 and _finite(v)]
    if not usable:
        return "false"
    return f"COALESCE({field.sql} IN (SELECT jsonb_array_elements({params.json(usable)})), false)"


@functools.cache
def _case_groups() -> dict[int, tuple[int, ...]]:
    """Code points grouped by their lowercase (as Python's re sees it), groups of 2 or more."""
    groups: dict[int, list[int]] = {}
    for code in range(0x110000):
        if not 0xD800 <= code <= 0xDFFF:
            groups.setdefault(_sre.unicode_tolower(code), []).append(code)
    return {key: tuple(group) for key, group in groups.items() if len(group) > 1}


def _regex_char(char: str) -> str:
    """A PostgreSQL regex atom matching what Python's IGNORECASE matches for `char`."""
    code = ord(char)
    candidates = {code, *_case_groups().get(_sre.unicode_tolower(code), ())}
    for other in list(candidates):
        candidates.update(_casefix._EXTRA_CASES.get(other, ()))
    literal = re.escape(char)
    equivalents = sorted(
        c for c in candidates if re.fullmatch(literal, chr(c), re.IGNORECASE | re.DOTALL)
    )
    atoms = "".join(f"\\U{c:08X}" for c in equivalents)
    return f"[{atoms}]" if len(equivalents) > 1 else atoms


def _like_regex(pattern: str) -> str:
    """like_regex() as a PostgreSQL (ARE, case-sensitive) regular expression."""
    if "*" not in pattern:
        pattern = f"*{pattern}*"
    pattern = _text(pattern)
    parts = ("".join(_regex_char(c) for c in part) for part in pattern.split("*"))
    return "^" + ".*".join(parts) + "$"


def _like(field: _Field, pattern: str, params: _Params) -> str:
    regex = params(_like_regex(pattern), "::text")
    if isinstance(field, _Column):
        return f"({field.sql} ~ {regex})" if field.rank == 1 else "false"
    return f"(jsonb_typeof({field.sql}) = 'string' AND ({field.sql} #>> '{{}}') ~ {regex})"


def _contains(field: _Field, flt: Filter, params: _Params) -> str:
    if isinstance(field, _Column):
        return "false"
    any_ = flt.operator is Comparison.CONTAINS_ANY
    wanted = flt.value if isinstance(flt.value, list) else [flt.value]
    items = [
        f"EXISTS (SELECT 1 FROM jsonb_array_elements({field.sql}) AS e(v)"
        f" WHERE e.v = {params.json(w)})"
        for w in wanted
        if _finite(w)
    ]
    if len(items) < len(wanted) and not any_:
        return "false"
    joined = (" OR " if any_ else " AND ").join(items) or ("false" if any_ else "true")
    return f"(jsonb_typeof({field.sql}) = 'array' AND ({joined}))"


def _filter(flt: Filter, params: _Params) -> str:
    field = _field(flt.field)
    op = flt.operator
    if op is Comparison.EQ:
        return _equal(field, flt.value, params)
    if op is Comparison.NOT:
        return f"NOT {_equal(field, flt.value, params)}"
    if op is Comparison.IN:
        return _is_in(field, flt.value, params)
    if op is Comparison.EXCLUDE:
        return f"NOT {_is_in(field, flt.value, params)}"
    if op is Comparison.HAS:
        if isinstance(field, _Column):
            return "true" if flt.value else "false"
        return f"({field.sql} IS {'NOT ' if flt.value else ''}NULL)"
    if op is Comparison.LIKE:
        return _like(field, str(flt.value), params)
    if op in (Comparison.CONTAINS, Comparison.CONTAINS_ANY):
        return _contains(field, flt, params)
    comparisons = {
        Comparison.LT: "<",
        Comparison.GT: ">",
        Comparison.MIN: ">=",
        Comparison.MAX: "<=",
    }
    return _compare(field, comparisons[op], flt.value, params)


_PLACEHOLDER: Final = re.compile(r"\$(\d+)")


def _compact(sql: str, values: list[Any]) -> tuple[str, list[Any]]:
    """Drop parameters bound but not used (a filter that compiled to a constant)."""
    used = sorted({int(n) for n in _PLACEHOLDER.findall(sql)})
    if len(used) == len(values):
        return sql, values
    numbers = {old: new for new, old in enumerate(used, 1)}
    return (
        _PLACEHOLDER.sub(lambda m: f"${numbers[int(m[1])]}", sql),
        [values[old - 1] for old in used],
    )


def list_sql(
    resource_name: str,
    parent_id: str,
    query: ListQuery,
    *,
    indexed: bool = False,
    with_timestamp: bool = False,
) -> tuple[str, list[Any]]:
    """The statement and parameters of :meth:`PostgreSQLStorageTransaction.list`;
    `indexed`: written for the automatic index of its shape (:func:`index_statement`);
    `with_timestamp`: each row ends with the scope's timestamp (NULL when it has none),
    read in the statement's snapshot (:func:`page_statement`)."""
    params = _Params()
    conditions = _conditions(
        resource_name, parent_id, query, params, live_only=False, indexed=indexed
    )
    if query.keyset is not None:
        conditions.append(_after_keyset(query.sorting, query.keyset, params))
    timestamp = ""
    if with_timestamp:
        scope = params(scope_key(parent_id, resource_name))
        timestamp = f", (SELECT last_modified FROM timestamps WHERE scope = {scope})"
    sql = (
        f"SELECT o.id, o.raw_id, o.last_modified, o.body{timestamp} FROM objects AS o"
        f" WHERE {' AND '.join(conditions)}{_order_by(query.sorting)}"
    )
    if query.limit is not None:
        sql += f" LIMIT {params(query.limit, '::bigint')}"
    return _compact(sql, params.values)


def count_sql(resource_name: str, parent_id: str, query: ListQuery) -> tuple[str, list[Any]]:
    """The statement and parameters of :meth:`PostgreSQLStorageTransaction.count`."""
    params = _Params()
    conditions = _conditions(resource_name, parent_id, query, params, live_only=True)
    return _compact(
        f"SELECT count(*) FROM objects AS o WHERE {' AND '.join(conditions)}", params.values
    )


def _conditions(
    resource_name: str,
    parent_id: str,
    query: ListQuery,
    params: _Params,
    *,
    live_only: bool,
    indexed: bool = False,
) -> list[str]:
    scope = scope_key(parent_id, resource_name)
    # A literal where a partial automatic index must be recognised (its predicate names
    # the scope): the planner proves `scope = <this constant>` for any plan.
    conditions = [f"o.scope = {_bytea(scope) if indexed else params(scope)}"]
    if live_only or not query.include_deleted:
        conditions.append("NOT o.deleted")
    if query.ids is not None:
        keys = [object_key(parent_id, resource_name, i) for i in sorted(query.ids)]
        conditions.append(f"o.key = ANY({params(keys, '::bytea[]')})")
    for flt in query.filters:
        if indexed and _indexable_equality(flt):
            # At the top level of the WHERE, NULL (missing field) rejects the row like
            # false: the plain comparison is exact and is the index's first columns.
            conditions.append(f"({_field(flt.field).sql} = {params.json(flt.value)})")
        else:
            conditions.append(_filter(flt, params))
    return conditions


def _bytea(value: bytes) -> str:
    return f"E'\\\\x{value.hex()}'::bytea"


def _indexable_equality(flt: Filter) -> bool:
    """An equality filter on a JSON field with a scalar value (what indexes serve)."""
    return (
        flt.operator is Comparison.EQ
        and flt.field not in ("id", "last_modified")
        and type_rank(flt.value) in (1, 2, 3)
        and _finite(flt.value)
    )


def index_shape(resource_name: str, parent_id: str, query: ListQuery) -> Shape | None:
    """The shape of the automatic index that would serve this listing, if any."""
    return shape_of(
        parent_id,
        resource_name,
        query,
        equality_indexable=_indexable_equality,
        field_indexable=lambda name: len(name) <= _MAX_INDEXED_NAME,
    )


def index_statement(shape: Shape) -> tuple[str, str] | None:
    """The name and ``CREATE INDEX`` statement of the automatic index of `shape`: the
    expressions of :func:`list_sql` with ``indexed=True``, on the scope's live objects;
    None when the definition is too large for PostgreSQL's catalog (``pg_index`` rows
    hold the expression trees and cannot exceed a page: many nested sort fields)."""
    columns = [f"({_field(name, '').sql})" for name in shape.equal]
    columns += [f"({sql}) {direction}" for sql, direction in _sort_terms(shape.sorting, "")]
    scope = scope_key(shape.parent_id, shape.resource_name)
    definition = f"ON objects ({', '.join(columns)}) WHERE scope = {_bytea(scope)} AND NOT deleted"
    if len(definition) > _MAX_INDEX_DEFINITION:
        return None
    name = PREFIX + hashlib.sha256(definition.encode()).hexdigest()[:24]
    return name, f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} {definition}"


def _sort_terms(sorting: Sequence[Sort], table: str = "o.") -> list[tuple[str, str]]:
    """The ORDER BY expressions of `sorting` and their directions (also the columns of
    the automatic indexes serving it, with `table` ``""``)."""
    terms = []
    for sort in sorting:
        direction = "DESC" if sort.direction < 0 else "ASC"
        field = _field(sort.field, table)
        if isinstance(field, _Column):
            terms.append((field.sql, direction))
            continue
        terms.append((field.rank, direction))
        # The value within each rank, NULL in the others (the rank as jsonb_typeof()
        # rather than field.rank: a shorter expression, and index definitions are bounded).
        for rank, types in ((1, "'string'"), (2, "'number'"), (3, "'boolean'")):
            condition = f"jsonb_typeof({field.sql}) = {types}"
            terms.append((f"(CASE WHEN {condition} THEN {field.value(rank)} END)", direction))
        condition = f"jsonb_typeof({field.sql}) IN ('array', 'object')"
        terms.append((f"(CASE WHEN {condition} THEN {field.value(4)} END)", direction))
    return terms


def _order_by(sorting: Sequence[Sort]) -> str:
    terms = [f"{sql} {direction}" for sql, direction in _sort_terms(sorting)]
    return f" ORDER BY {', '.join(terms)}" if terms else ""


def _after_keyset(sorting: Sequence[Sort], keyset: Keyset, params: _Params) -> str:
    """SQL for ``after_keyset()``: OR over k of (fields before k equal, field k beyond)."""
    fields = [_field(sort.field) for sort in sorting]
    alternatives = []
    for k, (sort, value) in enumerate(zip(sorting, keyset.values, strict=True)):
        equal = [_compare(fields[i], "=", keyset.values[i], params) for i in range(k)]
        beyond = _compare(fields[k], "<" if sort.direction < 0 else ">", value, params)
        alternatives.append(" AND ".join([*equal, beyond]))
    return f"({' OR '.join(f'({a})' for a in alternatives)})" if alternatives else "false"
