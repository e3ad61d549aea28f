"""SQLite storage: objects in one table, filters and ordering compiled to SQL.

The semantics are those of :mod:`nuages.core.filtering` (the memory backend is the oracle
of the property tests). ``id`` and ``last_modified`` are columns; any other field is read
from the JSON text column ``data`` with SQLite's JSON functions, so a listing costs what
its page costs. The JSON order of :mod:`nuages.core.filtering` is rendered as a *rank*
(null 0, string 1, number 2, boolean 3, array 4, object 5, missing 6) followed by a value
comparable within that rank. The few cases plain SQL cannot get exactly right (U+0000 in
strings, arrays and objects, keys a JSON path cannot name, Unicode ``like``, integers
beyond 64 bits) call the functions registered by :mod:`nuages.sqlite.database`.

Large scopes: Total-Objects of a whole scope reads ``timestamps.live_count`` (kept by every
write), and frequent filtered/sorted listings get automatic partial indexes on exactly the
expressions compiled here (:mod:`nuages.storage.autoindex`, :func:`index_statement`).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from nuages.core.contexts import Entered
from nuages.core.errors import BackendError, ObjectNotFound, UnicityError
from nuages.core.filtering import compare_values, type_rank
from nuages.core.objects import Comparison, Filter, Keyset, ListQuery, Sort
from nuages.core.timestamps import next_timestamp, now_ms, requested_timestamp
from nuages.sqlite.database import (
    SQLiteDatabase,
    SQLiteTransaction,
    SQLParams,
    encode_parameter,
    granted_sql,
    principals_sql,
    strings_in,
    strings_in_sql,
)
from nuages.storage import reads
from nuages.storage.autoindex import PREFIX, AutoIndexConfig, AutoIndexer, Shape, shape_of
from nuages.storage.protocol import ObjectRead, ObjectView, StoredObjects
from nuages.storage.reads import decode as _decode

JSONObject = dict[str, Any]

_INT64 = range(-(2**63), 2**63)
# Longer field names are not indexed automatically (index expressions are stored in full).
_MAX_INDEXED_NAME: Final = 200


class SQLiteStorageTransaction:
    """Storage operations in one transaction of a :class:`SQLiteDatabase`."""

    def __init__(self, db: SQLiteDatabase, tx: SQLiteTransaction, indexer: AutoIndexer) -> None:
        self._db = db
        self._tx = tx
        self._indexer = indexer

    def _check_writable(self) -> None:
        if not self._tx.write:
            raise BackendError("cannot write in a read transaction (open it with write=True)")

    async def resource_timestamp(self, resource_name: str, parent_id: str) -> int:
        scope = (parent_id, resource_name)
        current = await self._tx.run(lambda conn: _scope_timestamp(conn, scope))
        if current is not None:
            return current
        # A short write of its own when this is a read transaction (protocol/04 §1).
        timestamp, created = await self._db.run_write(
            lambda conn: _create_scope_timestamp(conn, scope)
        )
        if not created:
            # Another writer got there after our snapshot began: objects this snapshot
            # cannot see may carry that timestamp, so move to a snapshot that sees them.
            await self._tx.refresh_snapshot()
            current = await self._tx.run(lambda conn: _scope_timestamp(conn, scope))
        return timestamp if current is None else current

    async def read_object(self, read: ObjectRead) -> ObjectView:
        """An :class:`ObjectRead` in this transaction, in one statement: valid when the
        permission backend keeps its tables in this file (``SQLiteStorage.object_reader``)."""
        sql, params = object_read_sql(read)
        rows = await self._tx.run(lambda conn: conn.execute(sql, params).fetchall())
        return reads.object_view(read, rows)

    async def get(
        self, resource_name: str, parent_id: str, object_id: str, *, include_deleted: bool = False
    ) -> JSONObject | None:
        row = await self._tx.run(
            lambda conn: conn.execute(
                "SELECT last_modified, deleted, data FROM objects"
                " WHERE parent_id = ? AND resource_name = ? AND id = ?",
                (parent_id, resource_name, object_id),
            ).fetchone()
        )
        if row is None or (row[1] and not include_deleted):
            return None
        return _decode(object_id, row[0], row[2])

    async def create(
        self, resource_name: str, parent_id: str, obj: Mapping[str, Any]
    ) -> JSONObject:
        self._check_writable()
        object_id = obj["id"]
        stored = _encode(obj)
        requested = requested_timestamp(obj.get("last_modified"))

        def create(conn: sqlite3.Connection) -> int:
            existing, previous = _existing(conn, parent_id, resource_name, object_id)
            if existing is not None and not existing[1]:
                raise UnicityError(resource_name, object_id)
            scope = (parent_id, resource_name)
            timestamp = _bump(conn, scope, previous, requested, _live(stored))
            _store(conn, parent_id, resource_name, object_id, timestamp, stored)
            return timestamp

        return _decode(object_id, await self._tx.run(create), stored.data)

    async def update(
        self, resource_name: str, parent_id: str, object_id: str, obj: Mapping[str, Any]
    ) -> JSONObject:
        self._check_writable()
        stored = _encode(obj)
        requested = requested_timestamp(obj.get("last_modified"))

        def update(conn: sqlite3.Connection) -> int:
            existing, previous = _existing(conn, parent_id, resource_name, object_id)
            ignored = existing is not None and requested is not None and requested <= existing[0]
            delta = _live(stored) - (existing is not None and not existing[1])
            scope = (parent_id, resource_name)
            timestamp = _bump(conn, scope, previous, None if ignored else requested, delta)
            _store(conn, parent_id, resource_name, object_id, timestamp, stored)
            return timestamp

        return _decode(object_id, await self._tx.run(update), stored.data)

    async def delete(
        self,
        resource_name: str,
        parent_id: str,
        object_id: str,
        *,
        last_modified: int | None = None,
    ) -> JSONObject:
        self._check_writable()
        requested = requested_timestamp(last_modified)

        def delete(conn: sqlite3.Connection) -> int:
            existing, previous = _existing(conn, parent_id, resource_name, object_id)
            if existing is None or existing[1]:
                raise ObjectNotFound(resource_name, object_id)
            ignored = requested is not None and requested <= existing[0]
            scope = (parent_id, resource_name)
            timestamp = _bump(conn, scope, previous, None if ignored else requested, -1)
            _store(conn, parent_id, resource_name, object_id, timestamp, _TOMBSTONE)
            return timestamp

        return {"id": object_id, "last_modified": await self._tx.run(delete), "deleted": True}

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
        indexed = index[0] if index is not None and index[0] in self._indexer.known else None
        sql, params = list_sql(resource_name, parent_id, query, indexed=indexed)

        def run(conn: sqlite3.Connection) -> tuple[list[Any], bool]:
            try:
                return conn.execute(sql, params).fetchall(), True
            except sqlite3.OperationalError as exc:
                if indexed is None:
                    raise
                if "no such index" in str(exc):
                    dropped = True  # by hand: list without it, and forget it
                elif "no query solution" in str(exc):
                    dropped = False  # a condition compiled to a constant false
                else:
                    raise
            plain, plain_params = list_sql(resource_name, parent_id, query)
            return conn.execute(plain, plain_params).fetchall(), not dropped

        # In a write transaction (a plural delete, a uniqueness check) a listing may be long,
        # and cannot be interrupted: it runs on the connection's thread.
        rows, present = await self._tx.run(run, heavy=self._tx.write)
        if not present and indexed is not None:
            self._indexer.known.discard(indexed)
        if index is not None and indexed is None:

            async def live_objects() -> int:
                return await self._live_count(resource_name, parent_id)

            await self._indexer.observe(*index, live_objects)
        return rows

    async def count(self, resource_name: str, parent_id: str, query: ListQuery) -> int:
        if not query.filters and query.ids is None:
            return await self._live_count(resource_name, parent_id)
        sql, params = count_sql(resource_name, parent_id, query)
        row = await self._tx.run(
            lambda conn: conn.execute(sql, params).fetchone(), heavy=self._tx.write
        )
        return int(row[0])

    async def _live_count(self, resource_name: str, parent_id: str) -> int:
        """The scope's number of live objects, kept by every write (timestamps.live_count)."""
        row = await self._tx.run(
            lambda conn: conn.execute(
                "SELECT live_count FROM timestamps WHERE parent_id = ? AND resource_name = ?",
                (parent_id, resource_name),
            ).fetchone()
        )
        return 0 if row is None else int(row[0])

    async def purge(self, parent_prefix: str) -> None:
        self._check_writable()
        # Every parent below the prefix starts with prefix + "/", and those strings sort
        # between prefix + "/" and prefix + "0" ("0" follows "/"): an index range.
        below = (parent_prefix, parent_prefix + "/", parent_prefix + "0")
        where = "parent_id = ? OR (parent_id >= ? AND parent_id < ?)"

        def purge(conn: sqlite3.Connection) -> None:
            conn.execute(f"DELETE FROM objects WHERE {where}", below)
            conn.execute(f"DELETE FROM timestamps WHERE {where}", below)

        await self._tx.run(purge, heavy=True)


class SQLiteStorage:
    """Storage in a :class:`SQLiteDatabase`, usually shared with :class:`SQLitePermission`
    so that their transactions join (see :mod:`nuages.sqlite.database`).

    :meth:`aclose` closes the shared database (it reopens on next use).
    """

    def __init__(self, db: SQLiteDatabase, *, auto_index: AutoIndexConfig | None = None) -> None:
        self.db = db
        self.indexer = AutoIndexer(
            auto_index or AutoIndexConfig(), self._auto_indexes, self._build_index
        )

    def transaction(self, *, write: bool) -> Entered[SQLiteTransaction, SQLiteStorageTransaction]:
        return Entered(
            self.db.transaction(write=write),
            lambda tx: SQLiteStorageTransaction(self.db, tx, self.indexer),
        )

    async def _auto_indexes(self) -> set[str]:
        rows = await self.db.run_read(
            lambda conn: conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'objects'"
                " AND substr(name, 1, ?) = ?",
                (len(PREFIX), PREFIX),
            ).fetchall()
        )
        return {row[0] for row in rows}

    async def _build_index(self, name: str, statement: str, ready: Callable[[], None]) -> bool:
        """Build an automatic index in a write transaction of its own (SQLite has no
        concurrent index build: writes wait meanwhile, reads go on)."""
        async with self.db.transaction(write=True) as tx:
            await tx.run(lambda conn: conn.execute(statement), heavy=True)
        return True

    def object_reader(self, permission: object) -> SQLiteObjectReader | None:
        """One-statement object reads, when `permission` keeps its entries in this file."""
        from nuages.permission.sqlite import SQLitePermission

        if isinstance(permission, SQLitePermission) and permission.db is self.db:
            return SQLiteObjectReader(self.db)
        return None

    async def ping(self) -> bool:
        return await self.db.ping()

    async def flush(self) -> None:
        def flush(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM objects")
            conn.execute("DELETE FROM timestamps")

        await self.db.run_write(flush, heavy=True)

    async def aclose(self) -> None:
        await self.indexer.aclose()
        await self.db.aclose()


# -- rows ---------------------------------------------------------------------------

Scope = tuple[str, str]  # (parent_id, resource_name)


class SQLiteObjectReader:
    """:class:`~nuages.storage.protocol.ObjectReader` of a file holding both objects and
    permissions: one statement (:mod:`nuages.storage.reads`), outside any transaction."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    async def read_object(self, read: ObjectRead) -> ObjectView:
        sql, params = object_read_sql(read)
        rows = await self.db.read_once(lambda conn: conn.execute(sql, params).fetchall())
        return reads.object_view(read, rows)

    async def stored_principals(self, user_ids: tuple[str, ...]) -> frozenset[str]:
        if not user_ids:
            return frozenset()
        params = SQLParams()
        holders = params.strings_in("user_id", user_ids)
        sql = f"SELECT principal FROM user_principals WHERE {holders}"
        rows = await self.db.read_once(lambda conn: conn.execute(sql, params.values).fetchall())
        return frozenset(principal for (principal,) in rows)


def object_read_sql(read: ObjectRead) -> tuple[str, list[Any]]:
    """The tagged ``UNION ALL`` of :mod:`nuages.storage.reads` for `read`.

    Each value is bound once, to a numbered placeholder (``?3``) that the text repeats:
    the grant check probes every pair for each principal, and each pair against both the
    principals given and the stored ones. The text depends only on the read's shape (how
    many principals, bound permissions...), so it is built once per shape."""
    users, user_values = strings_in(read.user_ids)
    given, given_values = strings_in(read.principals)
    resource_name, parent_id, object_id = read.object
    # In the order of _object_read_text's numbers.
    values: list[Any] = [parent_id, resource_name, object_id]
    if read.parent is not None:
        resource_name, parent_id, object_id = read.parent
        values += (parent_id, resource_name, object_id)
    permissions: tuple[str, ...] = ()
    if read.bound:
        uris, permissions = zip(*read.bound, strict=True)
        values += uris
        values += given_values
    values += user_values
    if read.acl_uri is not None:
        values.append(read.acl_uri)
    creating: tuple[str, ...] = ()
    if read.create_bound:
        uris, creating = zip(*read.create_bound, strict=True)
        values += uris
        if not read.bound:
            values += given_values  # else bound once already, for the read's own pairs
    text = _object_read_text(
        users, given, permissions, read.parent is not None, read.acl_uri is not None, creating
    )
    return text, values


def _principals_of(users: int, placeholders: Sequence[str], columns: str = "principal") -> str:
    """A select of `columns` of the principals stored for the user ids bound as
    :func:`strings_in`'s shape `users` (at least one) to `placeholders`: a primary key
    probe for each, or one JSON array."""
    one = f"SELECT {columns} FROM user_principals WHERE"
    if users < 0:
        return f"{one} {strings_in_sql('user_id', users, placeholders)}"
    return " UNION ALL ".join(f"{one} user_id = {placeholder}" for placeholder in placeholders)


@functools.lru_cache(maxsize=512)
def _object_read_text(
    users: int,
    given: int,
    permissions: tuple[str, ...],
    parent: bool,
    acl: bool,
    creating: tuple[str, ...] = (),
) -> str:
    """The text of :func:`object_read_sql`, its values numbered in the order: object,
    parent, the URI of each pair, principals given (with pairs only), user ids, ACL URI,
    the URI of each create pair (then the principals given, if there were no pairs).
    The pairs' permission names are literals: they come from the permission tree, a
    short list fixed by the code, and each bound value costs SQLite a copy."""
    numbered = (f"?{number}" for number in itertools.count(1))

    def take(count: int) -> list[str]:
        return [next(numbered) for _ in range(count)]

    one = (
        "SELECT {tag}, last_modified, deleted, data, NULL FROM objects"
        " WHERE parent_id = {} AND resource_name = {} AND id = {}"
    )
    selects = [one.format(*take(3), tag=reads.OBJECT)]
    if parent:
        selects.append(one.format(*take(3), tag=reads.PARENT))

    def literal(permission: str) -> str:
        return f"""'{permission.replace("'", "''")}'"""

    pairs = list(zip(take(len(permissions)), map(literal, permissions), strict=True))
    given_slots = take(1 if given < 0 else given) if permissions else []
    user_slots = take(1 if users < 0 else users)

    def sources(given_slots: list[str]) -> list[str]:
        found = [principals_sql(given, given_slots)] if given else []
        if users:
            found.append(f"({_principals_of(users, user_slots)})")
        return found

    if permissions:
        granted = granted_sql(pairs, sources(given_slots))
        selects.append(f"SELECT {reads.GRANTED}, NULL, NULL, NULL, NULL WHERE {granted}")
    if acl:
        selects.append(
            f"SELECT {reads.ACL}, NULL, NULL, permission, principal FROM access_control_entries"
            f" WHERE object_uri = {next(numbered)}"
        )
    if creating:
        create_pairs = list(zip(take(len(creating)), map(literal, creating), strict=True))
        if not permissions:  # the principals given are numbered here, after the pairs
            given_slots = take(1 if given < 0 else given)
        create_granted = granted_sql(create_pairs, sources(given_slots))
        selects.append(f"SELECT {reads.CREATE_GRANTED}, {create_granted}, NULL, NULL, NULL")
    if users:
        columns = f"{reads.PRINCIPAL}, NULL, NULL, principal, NULL"
        selects.append(_principals_of(users, user_slots, columns))
    return " UNION ALL ".join(selects)


@dataclass(frozen=True, slots=True)
class _Stored:
    """An object as stored: `data` is its JSON without `id` and `last_modified`."""

    data: str
    deleted: bool
    has_nul: bool


_TOMBSTONE: Final = _Stored('{"deleted":true}', deleted=True, has_nul=False)


def _encode(obj: Mapping[str, Any]) -> _Stored:
    data = {k: v for k, v in obj.items() if k != "id" and k != "last_modified"}
    try:
        text = orjson.dumps(data).decode()
    except orjson.JSONEncodeError as exc:
        raise BackendError(f"object cannot be stored as JSON: {exc}") from exc
    # A false positive (an escaped backslash followed by "u0000") only costs speed.
    return _Stored(text, deleted=data.get("deleted") is True, has_nul="\\u0000" in text)


def _live(stored: _Stored) -> int:
    """1 when `stored` counts as a live object (not a tombstone), else 0."""
    return 0 if stored.deleted else 1


def _existing(
    conn: sqlite3.Connection, parent_id: str, resource_name: str, object_id: str
) -> tuple[tuple[int, int] | None, int | None]:
    """The stored object's (last_modified, deleted), None when absent, and its scope's
    timestamp, None when never set: one statement for what every write reads first."""
    scope_timestamp, last_modified, deleted = conn.execute(
        "SELECT (SELECT last_modified FROM timestamps"
        " WHERE parent_id = ?1 AND resource_name = ?2), o.last_modified, o.deleted"
        " FROM (SELECT 1) LEFT JOIN objects AS o"
        " ON o.parent_id = ?1 AND o.resource_name = ?2 AND o.id = ?3",
        (parent_id, resource_name, object_id),
    ).fetchone()
    existing = None if last_modified is None else (last_modified, deleted)
    return existing, None if scope_timestamp is None else int(scope_timestamp)


def _store(
    conn: sqlite3.Connection,
    parent_id: str,
    resource_name: str,
    object_id: str,
    timestamp: int,
    stored: _Stored,
) -> None:
    conn.execute(
        "INSERT INTO objects (parent_id, resource_name, id, last_modified, deleted, has_nul, data)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (parent_id, resource_name, id) DO UPDATE SET"
        " last_modified = excluded.last_modified, deleted = excluded.deleted,"
        " has_nul = excluded.has_nul, data = excluded.data",
        (
            parent_id,
            resource_name,
            object_id,
            timestamp,
            int(stored.deleted),
            int(stored.has_nul),
            stored.data,
        ),
    )


def _scope_timestamp(conn: sqlite3.Connection, scope: Scope) -> int | None:
    row = conn.execute(
        "SELECT last_modified FROM timestamps WHERE parent_id = ? AND resource_name = ?", scope
    ).fetchone()
    return None if row is None else int(row[0])


def _create_scope_timestamp(conn: sqlite3.Connection, scope: Scope) -> tuple[int, bool]:
    """The scope's timestamp, set to now unless it exists; and whether it was created."""
    created = conn.execute(
        "INSERT INTO timestamps (parent_id, resource_name, last_modified) VALUES (?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (*scope, now_ms()),
    ).rowcount
    timestamp = _scope_timestamp(conn, scope)
    assert timestamp is not None  # inserted or already there, in this transaction
    return timestamp, created == 1


def _bump(
    conn: sqlite3.Connection,
    scope: Scope,
    previous: int | None,
    requested: int | None,
    live_delta: int,
) -> int:
    """The timestamp of a write in `scope`, whose timestamp was `previous` (read by
    :func:`_existing` in the same job); runs under BEGIN IMMEDIATE, so the read and the
    update of the scope timestamp are atomic across processes too. `live_delta` is the
    change of the scope's number of live objects (-1, 0 or 1)."""
    bump = next_timestamp(previous, requested)
    if bump.scope_timestamp != previous or live_delta:
        conn.execute(
            "INSERT INTO timestamps (parent_id, resource_name, last_modified, live_count)"
            " VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
            " last_modified = excluded.last_modified, live_count = live_count + ?",
            (*scope, bump.scope_timestamp, max(live_delta, 0), live_delta),
        )
    return bump.object_timestamp


# -- query compiler -----------------------------------------------------------------
# Every predicate below evaluates to 0 or 1, never NULL, so that NOT(...) is exact.

# Python's ignore-case matching pairs these ASCII letters with non-ASCII ones (U+0130,
# U+0131, U+017F, U+212A), which SQLite's ASCII-only LIKE does not (a test checks the set).
_FOLDS_BEYOND_ASCII: Final = frozenset("iks")
# Object keys a quoted JSON path label names: SQLite compares labels with the raw
# (escaped) key text, and orjson escapes `"`, `\` and control characters.
_PATHABLE_KEY: Final = re.compile(r'[^"\\\x00-\x1f]*')
# SQLite rejects longer LIKE patterns (SQLITE_LIMIT_LIKE_PATTERN_LENGTH is 50000 bytes).
_MAX_SQL_LIKE_PATTERN: Final = 10_000


@dataclass(frozen=True, slots=True)
class _Column:
    """``id`` or ``last_modified``: always present and of one type (rank)."""

    sql: str
    rank: int
    # Every value of the column compares with a value of another rank, an integer beyond
    # 64 bits or NaN like this one does, so those comparisons are constants.
    sample: Any


@dataclass(frozen=True, slots=True)
class _JsonField:
    """A field inside an object's JSON: `doc` is SQL for a JSON text, `path` for a path."""

    doc: str
    path: str
    has_nul: str = "o.has_nul"

    @property
    def type(self) -> str:
        return f"json_type({self.doc}, {self.path})"

    @property
    def rank(self) -> str:
        return (
            f"CASE {self.type} WHEN 'null' THEN 0 WHEN 'text' THEN 1 WHEN 'integer' THEN 2"
            " WHEN 'real' THEN 2 WHEN 'true' THEN 3 WHEN 'false' THEN 3 WHEN 'array' THEN 4"
            " WHEN 'object' THEN 5 ELSE 6 END"
        )

    @property
    def json(self) -> str:
        """The value's JSON text, exact (strings keep their escapes), or NULL if missing."""
        return f"({self.doc} -> {self.path})"

    @property
    def scalar(self) -> str:
        """The value as SQL: strings cut at U+0000, booleans 0/1."""
        return f"json_extract({self.doc}, {self.path})"

    @property
    def text(self) -> str:
        """The exact value of a string field."""
        return f"IIF({self.has_nul}, nuages_json_text({self.json}), {self.scalar})"

    def value(self, rank: int) -> str:
        """SQL ordering the values of one rank like compare_values()."""
        if rank == 1:
            return self.text
        if rank in (4, 5):
            return f"nuages_canonical({self.json})"
        return self.scalar

    @property
    def sort_value(self) -> str:
        return (
            f"CASE {self.type} WHEN 'text' THEN {self.text}"
            f" WHEN 'array' THEN {self.value(4)} WHEN 'object' THEN {self.value(5)}"
            f" ELSE {self.scalar} END"
        )


_Field = _Column | _JsonField


def _json_path(keys: Sequence[str]) -> str:
    return "$" + "".join(f'."{key}"' for key in keys)


def _literal(text: str) -> str:
    """`text` (without U+0000) as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _pathable(name: str) -> bool:
    return all(_PATHABLE_KEY.fullmatch(key) for key in [name, *name.split(".")])


def _field(name: str, params: SQLParams, table: str = "o.") -> _Field:
    """The SQL of a field. JSON paths are literals, not parameters, so that an index on
    the expression (`table` ``""``) serves the query (``"o."``): SQLite matches index
    expressions literally."""
    if name == "id":
        return _Column(f"{table}id", 1, "")
    if name == "last_modified":
        return _Column(f"{table}last_modified", 2, 0)
    if not _pathable(name):
        return _JsonField(f"nuages_field({table}data, {params(name)})", "'$'", f"{table}has_nul")
    keys = name.split(".")
    doc, has_nul = f"{table}data", f"{table}has_nul"
    literal = _literal(_json_path([name]))
    if len(keys) == 1:
        return _JsonField(doc, literal, has_nul)
    # get_field() takes a top-level key spelled with dots before walking nested objects.
    nested = _literal(_json_path(keys))
    return _JsonField(
        doc, f"IIF(json_type({doc}, {literal}) IS NULL, {nested}, {literal})", has_nul
    )


def _sql_scalar(value: Any) -> bool:
    """Whether `value` binds as an SQL value comparing like in Python (not NaN, not an
    integer beyond 64 bits, not an array or object)."""
    rank = type_rank(value)
    if rank == 2 and not isinstance(value, bool):
        return value in _INT64 if isinstance(value, int) else value == value
    return rank in (0, 1, 3)


def _bound(value: Any, rank: int) -> Any:
    if rank in (4, 5):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return int(value) if rank == 3 else value


_HOLDS: Final = {
    "<": lambda sign: sign < 0,
    "<=": lambda sign: sign <= 0,
    "=": lambda sign: sign == 0,
    ">=": lambda sign: sign >= 0,
    ">": lambda sign: sign > 0,
}


def _compare(field: _Field, op: str, value: Any, params: SQLParams) -> str:
    """SQL for ``compare_values(field, value) <op> 0``."""
    rank = type_rank(value)
    nan = rank == 2 and value != value
    if isinstance(field, _Column):
        if rank != field.rank or not _sql_scalar(value):
            return "1" if _HOLDS[op](compare_values(field.sample, value)) else "0"
        return f"{field.sql} {op} {params(value)}"
    if rank in (0, 6) or nan:
        # All values of this rank compare equal to `value`: the rank alone decides.
        return f"({field.rank} {op} {rank})"
    if rank == 2 and not _sql_scalar(value):
        return f"(nuages_compare({field.json}, {params(encode_parameter(value))}) {op} 0)"
    found = f"{field.value(rank)} {op} {params(_bound(value, rank))}"
    if op == "=":
        return f"({field.rank} = {rank} AND {found})"
    return f"({field.rank} {op[0]} {rank} OR ({field.rank} = {rank} AND {found}))"


def _equal(field: _Field, value: Any, params: SQLParams) -> str:
    """SQL for ``json_equal(field, value)``, false when the field is missing."""
    rank = type_rank(value)
    if isinstance(field, _Column):
        if rank != field.rank or not _sql_scalar(value):
            return "0"
        return f"{field.sql} = {params(value)}"
    if rank == 0:
        return f"({field.type} IS 'null')"
    if rank == 6:
        return "0"
    if not _sql_scalar(value):
        matched = f"nuages_json_equal({field.json}, {params(encode_parameter(value))})"
    else:
        matched = f"{field.value(rank)} = {params(_bound(value, rank))}"
    return f"({field.rank} = {rank} AND {matched})"


def _is_in(field: _Field, values: Sequence[Any], params: SQLParams) -> str:
    """SQL for ``any(json_equal(field, v) for v in values)``."""
    terms = []
    by_rank: dict[int, list[Any]] = {}
    for value in values:
        if type_rank(value) in (1, 2, 3) and _sql_scalar(value):
            by_rank.setdefault(type_rank(value), []).append(_bound(value, type_rank(value)))
        else:
            terms.append(_equal(field, value, params))
    for rank, bound in by_rank.items():
        if isinstance(field, _Column):
            if rank == field.rank:
                terms.append(_in_list(field.sql, rank, bound, params))
        else:
            terms.append(
                f"({field.rank} = {rank} AND {_in_list(field.value(rank), rank, bound, params)})"
            )
    return f"({' OR '.join(terms)})" if terms else "0"


def _in_list(sql: str, rank: int, values: list[Any], params: SQLParams) -> str:
    if rank == 1:
        return params.strings_in(sql, values)
    return f"{sql} IN ({', '.join(map(params, values))})"


def _like(field: _Field, pattern: str, params: SQLParams) -> str:
    """SQL for ``like_regex(pattern).fullmatch(field)`` on string fields."""
    if isinstance(field, _Column):
        if field.rank != 1:
            return "0"
        text, scalar, has_nul = field.sql, field.sql, f"instr({field.sql}, char(0))"
    else:
        text, scalar, has_nul = field.text, field.scalar, "o.has_nul"
    exact = f"nuages_like({text}, {params(pattern)})"
    if not pattern.isascii() or "\x00" in pattern or len(pattern) > _MAX_SQL_LIKE_PATTERN:
        matched = exact
    else:
        # With an ASCII pattern, SQLite's LIKE (ASCII case folding; `%` matches newlines
        # too) agrees with the regex, except on non-ASCII text for the letters above.
        like = f"{scalar} LIKE {params(_sql_like_pattern(pattern))} ESCAPE '\\'"
        if _FOLDS_BEYOND_ASCII.intersection(pattern.lower()):
            ascii_only = f"length({scalar}) = length(CAST({scalar} AS BLOB))"
            like = f"IIF({ascii_only}, {like}, {exact})"
        # LIKE also stops at U+0000.
        matched = f"IIF({has_nul}, {exact}, {like})"
    if isinstance(field, _Column):
        return f"({matched})"
    return f"({field.rank} = 1 AND {matched})"


def _sql_like_pattern(pattern: str) -> str:
    if "*" not in pattern:
        pattern = f"*{pattern}*"
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def _contains(field: _Field, flt: Filter, params: SQLParams) -> str:
    """SQL for ``contains_`` (every wanted value) and ``contains_any_`` (one of them)."""
    if isinstance(field, _Column):
        return "0"  # never an array
    any_ = flt.operator is Comparison.CONTAINS_ANY
    wanted = flt.value if isinstance(flt.value, list) else [flt.value]
    exact = f"nuages_contains({field.json}, {params(encode_parameter(flt.value))}, {int(any_)})"
    items = [_array_has(field, value, params) for value in wanted]
    found = [item for item in items if item is not None]
    if len(found) < len(items):
        matched = exact
    else:
        joined = (" OR " if any_ else " AND ").join(found) or ("0" if any_ else "1")
        # json_each() cuts strings at U+0000 too.
        matched = f"IIF(o.has_nul, {exact}, {joined})"
    return f"({field.rank} = 4 AND {matched})"


_ITEM_TYPES: Final = {1: "'text'", 2: "'integer', 'real'"}


def _array_has(field: _JsonField, value: Any, params: SQLParams) -> str | None:
    """SQL for "the array holds an item equal to `value`", None if only Python can tell."""
    if not _sql_scalar(value):
        return None
    rank = type_rank(value)
    if rank == 3:
        condition = "j.type = 'true'" if value else "j.type = 'false'"
    elif rank == 0:
        condition = "j.type = 'null'"
    else:
        condition = f"j.type IN ({_ITEM_TYPES[rank]}) AND j.atom = {params(value)}"
    return f"EXISTS (SELECT 1 FROM json_each({field.doc}, {field.path}) AS j WHERE {condition})"


def _filter(flt: Filter, params: SQLParams) -> str:
    field = _field(flt.field, params)
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
        present = bool(flt.value)
        if isinstance(field, _Column):
            return "1" if present else "0"
        return f"({field.type} IS {'NOT ' if present else ''}NULL)"
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


def list_sql(
    resource_name: str, parent_id: str, query: ListQuery, *, indexed: str | None = None
) -> tuple[str, dict[str, Any]]:
    """The statement and parameters of :meth:`SQLiteStorageTransaction.list`; `indexed`
    names the automatic index of its shape (:func:`index_statement`) to read it with.
    ``INDEXED BY``: without statistics, SQLite's planner prefers the scope's equality on
    ``objects_last_modified`` (and a sort of the whole scope) to an ordered index read."""
    params = SQLParams()
    conditions = _conditions(
        resource_name, parent_id, query, params, live_only=False, indexed=indexed is not None
    )
    if query.keyset is not None:
        conditions.append(_after_keyset(query.sorting, query.keyset, params))
    hint = "" if indexed is None else f" INDEXED BY {indexed}"
    sql = (
        f"SELECT o.id, o.last_modified, o.data FROM objects AS o{hint}"
        f" WHERE {' AND '.join(conditions)}{_order_by(query.sorting, params)}"
    )
    if query.limit is not None:
        sql += f" LIMIT {params(query.limit)}"
    return sql, params.values


def count_sql(resource_name: str, parent_id: str, query: ListQuery) -> tuple[str, dict[str, Any]]:
    """The statement and parameters of :meth:`SQLiteStorageTransaction.count`."""
    params = SQLParams()
    conditions = _conditions(resource_name, parent_id, query, params, live_only=True)
    return f"SELECT count(*) FROM objects AS o WHERE {' AND '.join(conditions)}", params.values


def _conditions(
    resource_name: str,
    parent_id: str,
    query: ListQuery,
    params: SQLParams,
    *,
    live_only: bool,
    indexed: bool = False,
) -> list[str]:
    if indexed:
        # Literals, like the predicate of the partial automatic index (index_statement).
        conditions = [
            f"o.parent_id = {_literal(parent_id)}",
            f"o.resource_name = {_literal(resource_name)}",
        ]
    else:
        conditions = [
            f"o.parent_id = {params(parent_id)}",
            f"o.resource_name = {params(resource_name)}",
        ]
    if live_only or not query.include_deleted:
        conditions.append("o.deleted = 0")
    if query.ids is not None:
        conditions.append(params.strings_in("o.id", sorted(query.ids)))
    for flt in query.filters:
        if indexed and _indexable_equality(flt):
            # Implied by the exact condition below (json_extract() gives the value itself
            # for such values), and the first columns of the automatic index.
            field = _field(flt.field, params)
            assert isinstance(field, _JsonField)
            rank = type_rank(flt.value)
            conditions.append(f"{_equality_key(field)} = {params(_bound(flt.value, rank))}")
        conditions.append(_filter(flt, params))
    return conditions


def _equality_key(field: _JsonField) -> str:
    return f"json_extract({field.doc}, {field.path})"


def _indexable_equality(flt: Filter) -> bool:
    """An equality filter on a JSON field that a JSON path names, with a value that
    json_extract() renders exactly (a string without U+0000, a 64-bit integer, a float,
    a boolean)."""
    value = flt.value
    return (
        flt.operator is Comparison.EQ
        and flt.field not in ("id", "last_modified")
        and _pathable(flt.field)
        and type_rank(value) in (1, 2, 3)
        and _sql_scalar(value)
        and not (isinstance(value, str) and "\x00" in value)
    )


def index_shape(resource_name: str, parent_id: str, query: ListQuery) -> Shape | None:
    """The shape of the automatic index that would serve this listing, if any."""
    if "\x00" in parent_id or "\x00" in resource_name:
        return None  # an SQL literal cannot hold it
    return shape_of(
        parent_id,
        resource_name,
        query,
        equality_indexable=_indexable_equality,
        field_indexable=lambda name: len(name) <= _MAX_INDEXED_NAME and _pathable(name),
    )


def index_statement(shape: Shape) -> tuple[str, str]:
    """The name and ``CREATE INDEX`` statement of the automatic index of `shape`: the
    expressions of :func:`list_sql` with ``indexed=True``, on the scope's live objects."""
    params = SQLParams()  # unused: indexable fields compile without parameters
    columns = []
    for name in shape.equal:
        field = _field(name, params, "")
        assert isinstance(field, _JsonField)
        columns.append(f"({_equality_key(field)})")
    columns += [f"({sql}) {direction}" for sql, direction in _sort_terms(shape.sorting, params, "")]
    assert not params.values
    definition = (
        f"ON objects ({', '.join(columns)}) WHERE parent_id = {_literal(shape.parent_id)}"
        f" AND resource_name = {_literal(shape.resource_name)} AND deleted = 0"
    )
    name = PREFIX + hashlib.sha256(definition.encode()).hexdigest()[:24]
    return name, f"CREATE INDEX IF NOT EXISTS {name} {definition}"


def _sort_terms(
    sorting: Sequence[Sort], params: SQLParams, table: str = "o."
) -> list[tuple[str, str]]:
    """The ORDER BY expressions of `sorting` and their directions (also the columns of
    the automatic indexes serving it, with `table` ``""``)."""
    terms = []
    for sort in sorting:
        direction = "DESC" if sort.direction < 0 else "ASC"
        field = _field(sort.field, params, table)
        if isinstance(field, _Column):
            terms.append((field.sql, direction))
        else:
            terms.extend([(field.rank, direction), (field.sort_value, direction)])
    return terms


def _order_by(sorting: Sequence[Sort], params: SQLParams) -> str:
    terms = [f"{sql} {direction}" for sql, direction in _sort_terms(sorting, params)]
    return f" ORDER BY {', '.join(terms)}" if terms else ""


def _after_keyset(sorting: Sequence[Sort], keyset: Keyset, params: SQLParams) -> str:
    """SQL for ``after_keyset()``: OR over k of (fields before k equal, field k beyond)."""
    fields = [_field(sort.field, params) for sort in sorting]
    alternatives = []
    for k, (sort, value) in enumerate(zip(sorting, keyset.values, strict=True)):
        equal = [_compare(fields[i], "=", keyset.values[i], params) for i in range(k)]
        beyond = _compare(fields[k], "<" if sort.direction < 0 else ">", value, params)
        alternatives.append(" AND ".join([*equal, beyond]))
    return f"({' OR '.join(f'({a})' for a in alternatives)})" if alternatives else "0"
