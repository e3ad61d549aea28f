"""PostgreSQL permission backend: access control entries and user principals in two tables.

Rows are keyed by a digest of their strings (any length); lookups use indexes on the first
200 characters and then compare the whole value. URI patterns ending with ``*`` match by
prefix, written as a range in code point order (``COLLATE "C"``), so no LIKE escaping.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, Final

from nuages.core.contexts import Entered
from nuages.core.errors import BackendError
from nuages.permission.protocol import BoundPermission
from nuages.postgresql.database import PostgreSQLDatabase, PostgreSQLTransaction, digest

_URI_EQUALS = 'left(object_uri, 200) COLLATE "C" = left({p}, 200) AND object_uri = {p}'


def _params() -> tuple[list[Any], Any]:
    values: list[Any] = []

    def bind(value: Any, cast: str = "") -> str:
        values.append(value)
        return f"${len(values)}{cast}"

    return values, bind


class PostgreSQLPermissionTransaction:
    """Permission operations in one transaction of a :class:`PostgreSQLDatabase`."""

    def __init__(self, tx: PostgreSQLTransaction) -> None:
        self._tx = tx

    def _check_writable(self) -> None:
        if not self._tx.write:
            raise BackendError("cannot write in a read transaction (open it with write=True)")

    async def get_object_permissions(self, uri: str) -> dict[str, set[str]]:
        rows = await self._tx.fetch(
            "SELECT permission, principal FROM access_control_entries WHERE "
            + _URI_EQUALS.format(p="$1"),
            uri,
        )
        permissions: dict[str, set[str]] = defaultdict(set)
        for permission, principal in rows:
            permissions[permission].add(principal)
        return dict(permissions)

    async def replace_object_permissions(
        self, uri: str, permissions: Mapping[str, Iterable[str]]
    ) -> None:
        self._check_writable()
        if permissions:
            await self._tx.execute(_WRITE, *ACLChange(uri, permissions).args())

    async def write_object_permissions(
        self,
        uri: str,
        replace: Mapping[str, Iterable[str]] | None,
        add: Iterable[tuple[str, str]] = (),
    ) -> dict[str, set[str]]:
        """:class:`~nuages.permission.protocol.ACLWriter`, in one statement."""
        self._check_writable()
        change = ACLChange(uri, replace, add)
        return change.result(await self._tx.fetch(_WRITE_AND_READ, *change.args()))

    def shares(self, tx: PostgreSQLTransaction) -> bool:
        """Whether this permission transaction writes in `tx` (the storage's, joined)."""
        return self._tx is tx

    async def add_principal_to_ace(self, uri: str, permission: str, principal: str) -> None:
        self._check_writable()
        await self._tx.execute(
            "INSERT INTO access_control_entries (key, object_uri, permission, principal)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            digest(uri, permission, principal),
            uri,
            permission,
            principal,
        )

    async def delete_object_permissions(self, *uri_patterns: str) -> None:
        self._check_writable()
        if not uri_patterns:
            return
        values, bind = _params()
        matching = " OR ".join(_uri_matches(pattern, bind) for pattern in uri_patterns)
        await self._tx.execute(f"DELETE FROM access_control_entries WHERE {matching}", *values)

    async def check_permission(
        self, principals: Iterable[str], bound_permissions: Iterable[BoundPermission]
    ) -> bool:
        principals, bound = set(principals), list(bound_permissions)
        if not principals or not bound:
            return False
        keys = [digest(uri, perm, principal) for uri, perm in bound for principal in principals]
        found = await self._tx.fetchval(
            "SELECT 1 FROM access_control_entries WHERE key = ANY($1::bytea[]) LIMIT 1", keys
        )
        return found is not None

    async def get_accessible_objects(
        self, principals: Iterable[str], bound_permissions: Iterable[BoundPermission]
    ) -> dict[str, set[str]]:
        principals, bound = set(principals), list(bound_permissions)
        if not principals or not bound:
            return {}
        values, bind = _params()
        wanted = " OR ".join(
            f"(permission = {bind(permission)} AND {_uri_matches(pattern, bind)})"
            for pattern, permission in bound
        )
        sql = (
            f"SELECT DISTINCT object_uri, permission FROM access_control_entries"
            f" WHERE ({wanted}) AND principal = ANY({bind(sorted(principals), '::text[]')})"
        )
        accessible: dict[str, set[str]] = defaultdict(set)
        for uri, permission in await self._tx.fetch(sql, *values):
            accessible[uri].add(permission)
        return dict(accessible)

    async def get_user_principals(self, *user_ids: str) -> set[str]:
        if not user_ids:
            return set()
        known = self._tx.principals.get(user_ids)
        if known is None:
            rows = await self._tx.fetch(
                "SELECT principal FROM user_principals"
                " WHERE left(user_id, 200) = ANY($1::text[]) AND user_id = ANY($2::text[])",
                [user_id[:200] for user_id in user_ids],  # left() counts characters
                list(user_ids),
            )
            known = self._tx.principals[user_ids] = frozenset(p for (p,) in rows)
        return set(known)

    async def add_user_principal(self, user_id: str, principal: str) -> None:
        self._check_writable()
        self._tx.principals.clear()
        await self._tx.execute(
            "INSERT INTO user_principals (key, user_id, principal) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING",
            digest(user_id, principal),
            user_id,
            principal,
        )

    async def remove_user_principal(self, user_id: str, principal: str) -> None:
        self._check_writable()
        self._tx.principals.clear()
        await self._tx.execute(
            "DELETE FROM user_principals WHERE key = $1", digest(user_id, principal)
        )

    async def remove_principal(self, principal: str) -> None:
        self._check_writable()
        self._tx.principals.clear()
        await self._tx.execute(
            "DELETE FROM user_principals"
            " WHERE left(principal, 200) = left($1, 200) AND principal = $1",
            principal,
        )


class ACLChange:
    """A write of one object's ACL (``write_object_permissions``), in a statement of its
    own or within another (:meth:`sql`): the storage writes a new object and its ACL in
    one statement (``PostgreSQLStorageTransaction.create_with_acl``)."""

    def __init__(
        self,
        uri: str,
        replace: Mapping[str, Iterable[str]] | None,
        add: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.uri = uri
        self.replacing = {
            permission: set(principals) for permission, principals in (replace or {}).items()
        }
        self.added = list(add)

    def args(self) -> list[Any]:
        """The parameters of :meth:`sql`: the URI, the permissions replaced, the wanted
        entries (keys, permissions, principals)."""
        return [self.uri, sorted(self.replacing), *_entries(self.uri, self.replacing, self.added)]

    @staticmethod
    def sql(first: int, guard: str, *, opaque: bool = False) -> tuple[str, str]:
        """Common table expressions writing the ACL (named ``acl_removed``, ``acl_added``)
        where the SQL condition `guard` holds, with :meth:`args` bound from `first`; and
        the ``FROM`` source of the entries as they were before the statement (a row per
        entry, or a single row of nulls). `opaque`: each parameter is read through a
        sub-select, which PostgreSQL plans without looking at its value (see
        ``nuages.storage.postgresql._write_if_sql``)."""
        types = ("text", "text[]", "bytea[]", "text[]", "text[]")
        uri, permissions, keys, names, principals = (
            f"(SELECT ${n}::{t})" if opaque else f"${n}" for n, t in enumerate(types, first)
        )
        equals = _URI_EQUALS.format(p=f"{uri}::text")
        ctes = (
            f"acl_removed AS (DELETE FROM access_control_entries WHERE {equals}"
            f" AND permission = ANY({permissions}::text[]) AND key <> ALL({keys}::bytea[])"
            f" AND {guard}),"
            " acl_added AS (INSERT INTO access_control_entries"
            " (key, object_uri, permission, principal)"
            f" SELECT n.key, {uri}::text, n.permission, n.principal FROM unnest({keys}::bytea[],"
            f" {names}::text[], {principals}::text[]) AS n(key, permission, principal)"
            f" WHERE {guard} ON CONFLICT DO NOTHING)"
        )
        before = f"(SELECT) AS acl_one LEFT JOIN access_control_entries AS acl ON {equals}"
        return ctes, before

    def result(self, rows: Iterable[tuple[str | None, str | None]]) -> dict[str, set[str]]:
        """The ACL once written, from the entries as they were before (`rows`: permission
        and principal, nulls ignored)."""
        permissions: dict[str, set[str]] = defaultdict(set)
        for permission, principal in rows:
            if permission is not None and permission not in self.replacing:
                permissions[permission].add(principal)  # type: ignore[arg-type]
        for permission, principals in self.replacing.items():
            permissions[permission].update(principals)
        for permission, principal in self.added:
            permissions[permission].add(principal)
        return {permission: found for permission, found in permissions.items() if found}


def delete_acl_sql(uri: str, guard: str) -> str:
    """A common table expression, ``acl_deleted``, deleting the ACL of the object whose URI
    is the SQL `uri` (a parameter) where the SQL condition `guard` holds: the storage
    deletes an object and its ACL in one statement (``delete_with_acl``)."""
    equals = _URI_EQUALS.format(p=f"{uri}::text")
    return f"acl_deleted AS (DELETE FROM access_control_entries WHERE {equals} AND {guard})"


def _entries(
    uri: str, replace: Mapping[str, Iterable[str]], add: Iterable[tuple[str, str]]
) -> list[Any]:
    """The wanted entries of `uri` (the new principals of `replace`, and `add`), as the
    parameters of :meth:`ACLChange.sql`: keys, permissions, principals."""
    ordered = sorted({(p, q) for p, principals in replace.items() for q in principals} | set(add))
    return [
        [digest(uri, p, q) for p, q in ordered],
        [p for p, _ in ordered],
        [q for _, q in ordered],
    ]


# Statements of replace_object_permissions and write_object_permissions (ACLChange.sql
# from $1). The entries of the replaced permissions that are not wanted are deleted, the
# wanted ones inserted unless present: the two touch different rows, so their order in the
# statement does not matter. The main SELECT reads the entries as they were before the
# statement (its snapshot): ACLChange.result applies the change to them.
_CTES, _BEFORE = ACLChange.sql(1, "TRUE")
_WRITE: Final = f"WITH {_CTES} SELECT"
_WRITE_AND_READ: Final = f"WITH {_CTES} SELECT acl.permission, acl.principal FROM {_BEFORE}"


class PostgreSQLPermission:
    """Permissions in a :class:`PostgreSQLDatabase`. Sharing the storage's database makes
    their transactions join: a request's object and ACL writes commit together."""

    def __init__(self, db: PostgreSQLDatabase) -> None:
        self.db = db

    def transaction(
        self, *, write: bool, savepoint: bool = True
    ) -> Entered[PostgreSQLTransaction, PostgreSQLPermissionTransaction]:
        return Entered(
            self.db.transaction(write=write, savepoint=savepoint),
            PostgreSQLPermissionTransaction,
        )

    async def ping(self) -> bool:
        return await self.db.ping()

    async def flush(self) -> None:
        async def flush(tx: PostgreSQLTransaction) -> None:
            await tx.execute("DELETE FROM access_control_entries; DELETE FROM user_principals")
            tx.principals.clear()

        await self.db.run_write(flush)

    async def aclose(self) -> None:
        await self.db.aclose()


def _uri_matches(pattern: str, bind: Any) -> str:
    """SQL for ``uri_matches(pattern, object_uri)``: ``*`` at the end is any suffix."""
    if not pattern.endswith("*"):
        return "(" + _URI_EQUALS.format(p=bind(pattern, "::text")) + ")"
    prefix = pattern[:-1]
    p = bind(prefix, "::text")
    # Index range on the first 200 characters, then the exact prefix test.
    return (
        f'(left(object_uri, 200) COLLATE "C" >= left({p}, 200)'
        f' AND left(object_uri, 200) COLLATE "C" <= left({p}, 200) || chr(1114111)'
        f" AND starts_with(object_uri, {p}))"
    )
