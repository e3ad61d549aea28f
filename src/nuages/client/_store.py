"""The local store: records kept in a SQLite file, each with its sync status.

A :class:`LocalStore` is one SQLite file (WAL, ``synchronous=FULL``: a committed write survives
a crash, and a process killed mid-write leaves the last committed state). It holds any number of
:class:`LocalCollection` s. Every write is a transaction of its own unless made inside
``transaction()``; change callbacks run after commit, never for rolled-back writes. Filters and
sorts are evaluated by SQLite (``json_extract``), not in Python.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from importlib import resources
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from nuages.client._model import (
    Change,
    ChangeCallback,
    Conflict,
    LocalStoreError,
    MergeCallback,
    RecordExists,
    RecordNotFound,
    Strategy,
    SyncMode,
    SyncResult,
    SyncStatus,
    Transformer,
)
from nuages.client._query import compile_filters, compile_sort
from nuages.client._requests import Record

if TYPE_CHECKING:
    from nuages.client._client import Client
    from nuages.client._sync import FlushPolicy

__all__ = ["LocalCollection", "LocalStore"]

SCHEMA_VERSION = 1
_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]*$")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _fields(record: Mapping[str, Any] | None) -> dict[str, Any]:
    """The record's own fields (no ``id``/``last_modified``), deep-copied through JSON."""
    fields = {k: v for k, v in (record or {}).items() if k not in ("id", "last_modified")}
    copied: dict[str, Any] = json.loads(_dumps(fields))
    return copied


def validate_id(record_id: Any) -> str:
    """A record id the server accepts (``^[a-zA-Z0-9][a-zA-Z0-9_-]*$``), else ``ValueError``."""
    if not isinstance(record_id, str) or not _ID.match(record_id):
        raise ValueError(f"invalid record id {record_id!r}")
    return record_id


@dataclass(frozen=True, slots=True)
class Row:
    """A local record with its sync bookkeeping (see ``schema.sql``)."""

    id: str
    data: dict[str, Any]
    status: SyncStatus
    last_modified: int | None
    revision: int = 0
    in_flight: bool = False

    def record(self) -> Record:
        """The record as the application sees it."""
        record: Record = {"id": self.id, **self.data}
        if self.last_modified is not None:
            record["last_modified"] = self.last_modified
        return record


class LocalStore:
    """A SQLite file of local collections (created if missing).

    Safe to share between threads (one connection, serialised) and between processes (SQLite
    locking; ``timeout`` is how long a writer waits for another). Close it, or use ``with``.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.path = os.fspath(path)
        self._conn = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.RLock()
        self._depth = 0
        self._marks: list[int] = []
        self._events: list[tuple[LocalCollection, Change]] = []
        self._collections: dict[str, LocalCollection] = {}
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        schema = resources.files("nuages.client").joinpath("schema.sql").read_text("utf-8")
        with self._lock:
            self._conn.executescript(schema)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def __repr__(self) -> str:
        return f"LocalStore({self.path!r})"

    def collection(self, name: str) -> LocalCollection:
        """The local collection ``name`` (created on first write)."""
        if name not in self._collections:
            self._collections[name] = LocalCollection(self, name)
        return self._collections[name]

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> LocalStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- transactions --------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes (of any collections of this store) into one atomic transaction.

        Nests (inner blocks are savepoints). On an exception everything done inside is rolled
        back and no change callback runs; on success callbacks run after the commit.
        """
        self._begin()
        try:
            yield
        except BaseException:
            self._end(commit=False)
            raise
        self._end(commit=True)

    def _begin(self) -> None:
        self._lock.acquire()
        try:
            if self._depth == 0:
                self._conn.execute("BEGIN IMMEDIATE")
            else:
                self._conn.execute(f"SAVEPOINT sp{self._depth}")
        except BaseException:
            self._lock.release()
            raise
        self._depth += 1
        self._marks.append(len(self._events))

    def _end(self, *, commit: bool) -> None:
        fired: list[tuple[LocalCollection, Change]] = []
        try:
            self._depth -= 1
            mark = self._marks.pop()
            if self._depth > 0:
                if not commit:
                    self._conn.execute(f"ROLLBACK TO sp{self._depth}")
                    del self._events[mark:]
                self._conn.execute(f"RELEASE sp{self._depth}")
                return
            try:
                self._conn.execute("COMMIT" if commit else "ROLLBACK")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                self._events.clear()
                raise
            fired, self._events = (self._events if commit else []), []
        finally:
            self._lock.release()
        for collection, change in fired:
            collection._fire(change)

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._conn.execute(sql, params)


class LocalCollection:
    """Records of one local collection, each with a :class:`SyncStatus`.

    Records are dicts with an ``id`` (a uuid4 unless given) and, once the server knows them, the
    server's ``last_modified``. Get one from :meth:`LocalStore.collection`.
    """

    def __init__(self, store: LocalStore, name: str) -> None:
        self.store = store
        self.name = name
        self._callbacks: list[ChangeCallback] = []

    def __repr__(self) -> str:
        return f"LocalCollection({self.store.path!r}, {self.name!r})"

    # -- bookkeeping primitives (also used by sync) --------------------------------------------

    def transaction(self) -> AbstractContextManager[None]:
        """``with collection.transaction():`` — see :meth:`LocalStore.transaction`."""
        return self.store.transaction()

    def _row(self, record_id: str) -> Row | None:
        found = self.store._execute(
            "SELECT id, data, status, last_modified, revision, in_flight FROM records "
            "WHERE collection = ? AND id = ?",
            (self.name, record_id),
        ).fetchone()
        return None if found is None else _row_of(found)

    def _put(self, row: Row) -> None:
        self.store._execute(
            "INSERT INTO records (collection, id, data, status, last_modified, revision, in_flight)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (collection, id) DO UPDATE SET"
            " data = excluded.data, status = excluded.status,"
            " last_modified = excluded.last_modified, revision = excluded.revision,"
            " in_flight = excluded.in_flight",
            (
                self.name,
                row.id,
                _dumps(row.data),
                str(row.status),
                row.last_modified,
                row.revision,
                int(row.in_flight),
            ),
        )

    def _remove(self, record_id: str) -> None:
        self.store._execute(
            "DELETE FROM records WHERE collection = ? AND id = ?", (self.name, record_id)
        )

    def _emit(
        self,
        action: Literal["create", "update", "delete"],
        record_id: str,
        record: Record | None,
        old: Record | None,
        origin: Literal["local", "remote"],
    ) -> None:
        if self._callbacks:
            self.store._events.append((self, Change(action, record_id, record, old, origin)))

    def _fire(self, change: Change) -> None:
        for callback in list(self._callbacks):
            callback(change)

    def _meta(self) -> tuple[str | None, int | None]:
        found = self.store._execute(
            "SELECT remote, last_modified FROM collections WHERE name = ?", (self.name,)
        ).fetchone()
        return (None, None) if found is None else (found[0], found[1])

    def _set_meta(self, remote: str | None, last_modified: int | None) -> None:
        self.store._execute(
            "INSERT INTO collections (name, remote, last_modified) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET remote = excluded.remote, "
            "last_modified = excluded.last_modified",
            (self.name, remote, last_modified),
        )

    def _pending(self, exclude: set[str]) -> builtins.list[Row]:
        rows = self.store._execute(
            "SELECT id, data, status, last_modified, revision, in_flight FROM records "
            "WHERE collection = ? AND status != 'synced' AND id NOT IN "
            "(SELECT id FROM conflicts WHERE collection = ?) ORDER BY rowid",
            (self.name, self.name),
        ).fetchall()
        return [row for row in map(_row_of, rows) if row.id not in exclude]

    def _mark_in_flight(self, ids: Sequence[str]) -> None:
        with self.store.transaction():
            for record_id in ids:
                self.store._execute(
                    "UPDATE records SET in_flight = 1 WHERE collection = ? AND id = ?",
                    (self.name, record_id),
                )

    def _save_conflict(self, conflict: Conflict) -> None:
        self.store._execute(
            "INSERT OR REPLACE INTO conflicts (collection, id, local, remote) VALUES (?, ?, ?, ?)",
            (
                self.name,
                conflict.id,
                None if conflict.local is None else _dumps(conflict.local),
                None if conflict.remote is None else _dumps(conflict.remote),
            ),
        )

    def _drop_conflict(self, record_id: str) -> None:
        self.store._execute(
            "DELETE FROM conflicts WHERE collection = ? AND id = ?", (self.name, record_id)
        )

    # -- reading -------------------------------------------------------------------------------

    def get(self, record_id: str) -> Record | None:
        """The record ``record_id``, or ``None`` (also when deleted locally)."""
        row = self._row(record_id)
        if row is None or row.status == SyncStatus.DELETED:
            return None
        return row.record()

    def __contains__(self, record_id: object) -> bool:
        return isinstance(record_id, str) and self.get(record_id) is not None

    def status(self, record_id: str) -> SyncStatus | None:
        """The record's :class:`SyncStatus` (``DELETED`` for a pending deletion), or ``None``."""
        row = self._row(record_id)
        return None if row is None else row.status

    def list(
        self,
        filters: Mapping[str, Any] | None = None,
        *,
        sort: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
        status: SyncStatus | Sequence[SyncStatus] | None = None,
        include_deleted: bool = False,
    ) -> list[Record]:
        """Matching records, in SQL: filters as on the server (``{"min_priority": 2}``, …).

        ``sort`` is ``"-priority,title"`` or a list (ties broken by ``id``); ``status`` keeps
        records with that sync status; deleted records are left out unless ``include_deleted``
        (or ``status`` asks for them).
        """
        where = compile_filters(filters)
        sql = [
            "SELECT r.id, r.data, r.status, r.last_modified, r.revision, r.in_flight "
            "FROM records AS r WHERE r.collection = ? AND ",
            where.sql,
        ]
        params: list[Any] = [self.name, *where.params]
        statuses = (
            [status]
            if isinstance(status, (str, SyncStatus))
            else list(status)
            if status is not None
            else None
        )
        if statuses is not None:
            sql.append(f" AND r.status IN ({', '.join('?' for _ in statuses)})")
            params.extend(str(SyncStatus(s)) for s in statuses)
        elif not include_deleted:
            sql.append(" AND r.status != 'deleted'")
        sql.append(f" ORDER BY {compile_sort(sort)}")
        if limit is not None or offset:
            sql.append(" LIMIT ? OFFSET ?")
            params.extend([-1 if limit is None else int(limit), int(offset)])
        rows = self.store._execute("".join(sql), params).fetchall()
        return [_row_of(row).record() for row in rows]

    def count(self, filters: Mapping[str, Any] | None = None) -> int:
        """How many (live) records match."""
        where = compile_filters(filters)
        found = self.store._execute(
            "SELECT COUNT(*) FROM records AS r WHERE r.collection = ? AND r.status != 'deleted'"
            f" AND {where.sql}",
            (self.name, *where.params),
        ).fetchone()
        return int(found[0])

    def __len__(self) -> int:
        return self.count()

    @property
    def last_modified(self) -> int | None:
        """The server collection timestamp this store has pulled up to (``None``: never)."""
        return self._meta()[1]

    def conflicts(self) -> builtins.list[Conflict]:
        """Conflicts left by ``sync(strategy=Strategy.MANUAL)``, until :meth:`resolve`.

        ``local`` is the local version as it is now (it may have been edited since the sync);
        ``remote`` the server's version the sync saw.
        """
        with self.store._lock:
            rows = self.store._execute(
                "SELECT id, remote FROM conflicts WHERE collection = ? ORDER BY id",
                (self.name,),
            ).fetchall()
            found = []
            for record_id, remote in rows:
                row = self._row(record_id)
                local = None if row is None or row.status == SyncStatus.DELETED else row.record()
                found.append(
                    Conflict(record_id, local, None if remote is None else json.loads(remote))
                )
        return found

    # -- writing -------------------------------------------------------------------------------

    def create(self, record: Mapping[str, Any] | None = None, *, id: str | None = None) -> Record:
        """Add a record (status ``created``); its id is ``id``, ``record["id"]`` or a uuid4.

        Raises :class:`RecordExists` if a live record has that id.
        """
        record_id = validate_id(id or (record or {}).get("id") or str(uuid.uuid4()))
        fields = _fields(record)
        with self.store.transaction():
            row = self._row(record_id)
            if row is not None and row.status != SyncStatus.DELETED:
                raise RecordExists(f"record {record_id!r} already exists in {self.name!r}")
            if row is None:
                new = Row(record_id, fields, SyncStatus.CREATED, None, 1)
            else:
                # Re-created before its deletion reached the server: an update of that version.
                status = SyncStatus.CREATED if row.last_modified is None else SyncStatus.UPDATED
                new = replace(row, data=fields, status=status, revision=row.revision + 1)
            self._put(new)
            self._emit("create", record_id, new.record(), None, "local")
        return new.record()

    def update(self, record: Mapping[str, Any], *, patch: bool = False) -> Record:
        """Replace the record ``record["id"]`` with ``record`` (or merge it in, ``patch=True``).

        Status becomes ``updated`` (a ``created`` record stays ``created``); writing the same
        content again changes nothing. Raises :class:`RecordNotFound`.
        """
        record_id = record.get("id")
        if not isinstance(record_id, str):
            raise ValueError("the record to update needs an 'id'")
        with self.store.transaction():
            row = self._row(record_id)
            if row is None or row.status == SyncStatus.DELETED:
                raise RecordNotFound(record_id)
            fields = {**row.data, **_fields(record)} if patch else _fields(record)
            if fields == row.data:
                return row.record()
            status = SyncStatus.CREATED if row.status == SyncStatus.CREATED else SyncStatus.UPDATED
            new = replace(row, data=fields, status=status, revision=row.revision + 1)
            self._put(new)
            self._emit("update", record_id, new.record(), row.record(), "local")
        return new.record()

    def delete(self, record_id: str) -> Record:
        """Delete the record (status ``deleted`` until pushed); returns it.

        A record never sent to the server simply disappears. Raises :class:`RecordNotFound`.
        """
        with self.store.transaction():
            row = self._row(record_id)
            if row is None or row.status == SyncStatus.DELETED:
                raise RecordNotFound(record_id)
            if row.status == SyncStatus.CREATED and not row.in_flight:
                self._remove(record_id)
            else:
                self._put(replace(row, status=SyncStatus.DELETED, revision=row.revision + 1))
            self._emit("delete", record_id, None, row.record(), "local")
        return row.record()

    def clear(self) -> None:
        """Forget every local record, conflict and sync state of this collection (local only)."""
        with self.store.transaction():
            for table, column in (("records", "collection"), ("conflicts", "collection")):
                self.store._execute(f"DELETE FROM {table} WHERE {column} = ?", (self.name,))
            self.store._execute("DELETE FROM collections WHERE name = ?", (self.name,))

    def reset_sync_status(self) -> None:
        """Forget what the server has: every record becomes ``created``, to be uploaded again.

        Pending deletions are dropped and the pull starts over. For a server that was flushed
        or restored (see :class:`ServerFlushed`); a record the server still has is then
        recognised (identical) or reported as a conflict.
        """
        with self.store.transaction():
            self.store._execute(
                "DELETE FROM records WHERE collection = ? AND status = 'deleted'", (self.name,)
            )
            self.store._execute(
                "UPDATE records SET status = 'created', last_modified = NULL, in_flight = 0 "
                "WHERE collection = ?",
                (self.name,),
            )
            self._set_meta(None, None)

    def resolve(self, record_id: str, resolution: Mapping[str, Any] | None) -> Record | None:
        """Settle a stored conflict with ``resolution`` (``None``: delete the record).

        The resolution becomes the local version, based on the server's, and is pushed by the
        next ``sync()`` (nothing is pushed if it equals the server's version).
        """
        from nuages.client._sync import apply_resolution

        with self.store.transaction():
            stored = {c.id: c for c in self.conflicts()}.get(record_id)
            if stored is None:
                raise LocalStoreError(f"no conflict on record {record_id!r}")
            chosen = None if resolution is None else {**resolution, "id": record_id}
            return apply_resolution(self, stored, chosen)

    # -- events --------------------------------------------------------------------------------

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback(change)`` after each committed change; returns an unsubscriber.

        Callbacks run in the thread that committed, after the commit.
        """
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unsubscribe

    # -- sync ----------------------------------------------------------------------------------

    def sync(
        self,
        client: Client,
        *,
        bucket: str,
        collection: str | None = None,
        strategy: Strategy = Strategy.MANUAL,
        merge: MergeCallback | None = None,
        mode: SyncMode = SyncMode.BOTH,
        transformers: Sequence[Transformer] = (),
        page_size: int | None = None,
        if_flushed: FlushPolicy = "raise",
        ignore_backoff: bool = False,
    ) -> SyncResult:
        """Synchronise with ``bucket``/``collection`` (default: this collection's name).

        Pulls the server's changes since the last sync (every page, tombstones applied), then
        pushes local changes in batches (``If-None-Match: *`` for creations, ``If-Match`` for
        updates and deletions). Records changed on both sides are settled by ``merge`` (if it
        returns a record) or else by ``strategy``. Safe to interrupt at any point: the next
        sync carries on without losing or duplicating a change. See ``docs/client.md``.

        Raises :class:`BackoffError` while the server asks clients to back off (unless
        ``ignore_backoff``), :class:`ServerFlushed` when the server lost the collection's data
        (``if_flushed="reupload"`` uploads everything again instead), and the client's errors.
        """
        from nuages.client._sync import SyncOptions, sync_op

        options = SyncOptions(
            bucket=bucket,
            collection=collection or self.name,
            strategy=Strategy(strategy),
            merge=merge,
            mode=SyncMode(mode),
            transformers=tuple(transformers),
            page_size=page_size,
            if_flushed=if_flushed,
            ignore_backoff=ignore_backoff,
        )
        return client._run(sync_op(self, client, options))


def _row_of(row: Sequence[Any]) -> Row:
    return Row(
        id=row[0],
        data=json.loads(row[1]),
        status=SyncStatus(row[2]),
        last_modified=row[3],
        revision=row[4],
        in_flight=bool(row[5]),
    )
