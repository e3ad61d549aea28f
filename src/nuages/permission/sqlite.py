"""SQLite permission backend: access control entries and user principals in two tables.

URI patterns ending with ``*`` match by prefix. A prefix match is written as a range of
the primary key (``prefix <= uri < successor(prefix)``), so it uses the index and needs
no escaping of LIKE wildcards.
"""

from __future__ import annotations

import functools
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Mapping

from nuages.core.contexts import Entered
from nuages.core.errors import BackendError
from nuages.permission.protocol import BoundPermission
from nuages.sqlite.database import (
    SQLiteDatabase,
    SQLiteTransaction,
    SQLParams,
    granted_sql,
    principals_sql,
    strings_in,
)


class SQLitePermissionTransaction:
    """Permission operations in one transaction of a :class:`SQLiteDatabase`."""

    def __init__(self, tx: SQLiteTransaction) -> None:
        self._tx = tx

    def _check_writable(self) -> None:
        if not self._tx.write:
            raise BackendError("cannot write in a read transaction (open it with write=True)")

    async def get_object_permissions(self, uri: str) -> dict[str, set[str]]:
        return _grouped(await self._tx.run(lambda conn: _acl_rows(conn, uri)))

    async def replace_object_permissions(
        self, uri: str, permissions: Mapping[str, Iterable[str]]
    ) -> None:
        self._check_writable()
        replaced = [(permission, set(principals)) for permission, principals in permissions.items()]
        await self._tx.run(lambda conn: _replace(conn, uri, replaced))

    async def write_object_permissions(
        self,
        uri: str,
        replace: Mapping[str, Iterable[str]] | None,
        add: Iterable[tuple[str, str]] = (),
    ) -> dict[str, set[str]]:
        """:class:`~nuages.permission.protocol.ACLWriter`, in one job."""
        self._check_writable()
        replaced = [
            (permission, set(principals)) for permission, principals in (replace or {}).items()
        ]
        added = [(uri, permission, principal) for permission, principal in add]

        def write(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            _replace(conn, uri, replaced)
            conn.executemany(
                "INSERT INTO access_control_entries (object_uri, permission, principal)"
                " VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                added,
            )
            return _acl_rows(conn, uri)

        return _grouped(await self._tx.run(write))

    async def add_principal_to_ace(self, uri: str, permission: str, principal: str) -> None:
        self._check_writable()
        await self._tx.run(
            lambda conn: conn.execute(
                "INSERT INTO access_control_entries (object_uri, permission, principal)"
                " VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (uri, permission, principal),
            )
        )

    async def delete_object_permissions(self, *uri_patterns: str) -> None:
        self._check_writable()
        if not uri_patterns:
            return
        params = SQLParams()
        matching = " OR ".join(_uri_matches(pattern, params) for pattern in uri_patterns)
        sql = f"DELETE FROM access_control_entries WHERE {matching}"
        # A pattern (a deleted bucket's "/buckets/b/*") may match many entries.
        heavy = any("*" in pattern for pattern in uri_patterns)
        await self._tx.run(lambda conn: conn.execute(sql, params.values), heavy=heavy)

    async def check_permission(
        self, principals: Iterable[str], bound_permissions: Iterable[BoundPermission]
    ) -> bool:
        principals, bound = set(principals), list(bound_permissions)
        if not principals or not bound:
            return False
        shape, values = strings_in(principals)
        sql = f"SELECT 1 WHERE {_granted_text(len(bound), shape)}"
        params = [value for pair in bound for value in pair] + values
        row = await self._tx.run(lambda conn: conn.execute(sql, params).fetchone())
        return row is not None

    async def get_accessible_objects(
        self, principals: Iterable[str], bound_permissions: Iterable[BoundPermission]
    ) -> dict[str, set[str]]:
        principals, bound = set(principals), list(bound_permissions)
        if not principals or not bound:
            return {}
        params = SQLParams()
        wanted = " OR ".join(
            f"(permission = {params(permission)} AND {_uri_matches(pattern, params)})"
            for pattern, permission in bound
        )
        sql = (
            f"SELECT DISTINCT object_uri, permission FROM access_control_entries"
            f" WHERE ({wanted}) AND {params.strings_in('principal', principals)}"
        )
        rows = await self._tx.run(lambda conn: conn.execute(sql, params.values).fetchall())
        accessible: dict[str, set[str]] = defaultdict(set)
        for uri, permission in rows:
            accessible[uri].add(permission)
        return dict(accessible)

    async def get_user_principals(self, *user_ids: str) -> set[str]:
        if not user_ids:
            return set()
        marks = ", ".join("?" * len(user_ids))
        sql = f"SELECT principal FROM user_principals WHERE user_id IN ({marks})"
        rows = await self._tx.run(lambda conn: conn.execute(sql, user_ids).fetchall())
        return {principal for (principal,) in rows}

    async def add_user_principal(self, user_id: str, principal: str) -> None:
        self._check_writable()
        await self._tx.run(
            lambda conn: conn.execute(
                "INSERT INTO user_principals (user_id, principal) VALUES (?, ?)"
                " ON CONFLICT DO NOTHING",
                (user_id, principal),
            )
        )

    async def remove_user_principal(self, user_id: str, principal: str) -> None:
        self._check_writable()
        await self._tx.run(
            lambda conn: conn.execute(
                "DELETE FROM user_principals WHERE user_id = ? AND principal = ?",
                (user_id, principal),
            )
        )

    async def remove_principal(self, principal: str) -> None:
        self._check_writable()
        await self._tx.run(
            lambda conn: conn.execute(
                "DELETE FROM user_principals WHERE principal = ?", (principal,)
            )
        )


class SQLitePermission:
    """Permissions in a :class:`SQLiteDatabase`. Sharing the database of the
    :class:`~nuages.storage.sqlite.SQLiteStorage` makes their transactions join, so object
    and ACL writes of a request commit together (see :mod:`nuages.sqlite.database`).

    :meth:`aclose` closes the shared database (it reopens on next use).
    """

    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    def transaction(
        self, *, write: bool, savepoint: bool = True
    ) -> Entered[SQLiteTransaction, SQLitePermissionTransaction]:
        return Entered(
            self.db.transaction(write=write, savepoint=savepoint), SQLitePermissionTransaction
        )

    async def ping(self) -> bool:
        return await self.db.ping()

    async def flush(self) -> None:
        def flush(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM access_control_entries")
            conn.execute("DELETE FROM user_principals")

        await self.db.run_write(flush, heavy=True)

    async def aclose(self) -> None:
        await self.db.aclose()


def _acl_rows(conn: sqlite3.Connection, uri: str) -> list[tuple[str, str]]:
    """The ``(permission, principal)`` entries of `uri`."""
    return conn.execute(
        "SELECT permission, principal FROM access_control_entries WHERE object_uri = ?", (uri,)
    ).fetchall()


def _grouped(rows: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    """An ACL, ``{permission: principals}``, from its entries."""
    permissions: dict[str, set[str]] = defaultdict(set)
    for permission, principal in rows:
        permissions[permission].add(principal)
    return dict(permissions)


def _replace(conn: sqlite3.Connection, uri: str, replaced: list[tuple[str, set[str]]]) -> None:
    for permission, principals in replaced:
        conn.execute(
            "DELETE FROM access_control_entries WHERE object_uri = ? AND permission = ?",
            (uri, permission),
        )
        conn.executemany(
            "INSERT INTO access_control_entries (object_uri, permission, principal)"
            " VALUES (?, ?, ?)",
            [(uri, permission, principal) for principal in principals],
        )


def _uri_matches(pattern: str, params: SQLParams) -> str:
    """SQL for ``uri_matches(pattern, object_uri)``: ``*`` at the end is any suffix."""
    if not pattern.endswith("*"):
        return f"object_uri = {params(pattern)}"
    prefix = pattern[:-1]
    lower = f"object_uri >= {params(prefix)}"
    upper = _successor(prefix)
    return lower if upper is None else f"({lower} AND object_uri < {params(upper)})"


def _successor(prefix: str) -> str | None:
    """The least string greater than every string starting with `prefix` (UTF-8 byte
    order, SQLite's BINARY collation, is code point order); None if there is none."""
    for end in range(len(prefix), 0, -1):
        code = ord(prefix[end - 1]) + 1
        if code <= 0x10FFFF:
            if 0xD800 <= code <= 0xDFFF:  # surrogates cannot be stored
                code = 0xE000
            return prefix[: end - 1] + chr(code)
    return None


@functools.lru_cache(maxsize=64)
def _granted_text(pairs: int, shape: int) -> str:
    """:func:`granted_sql` for `pairs` pairs, then principals of :func:`strings_in`'s
    `shape`, bound in that order."""
    pair_slots = [(f"?{2 * n + 1}", f"?{2 * n + 2}") for n in range(pairs)]
    count = 1 if shape < 0 else shape
    principals = [f"?{2 * pairs + 1 + n}" for n in range(count)]
    sources = [principals_sql(shape, principals)] if shape else []
    return granted_sql(pair_slots, sources)
