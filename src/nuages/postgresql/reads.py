"""One-statement object reads on PostgreSQL (:mod:`nuages.storage.reads`), for a database
holding both the storage and the permission tables."""

from __future__ import annotations

from typing import Any

from nuages.postgresql.database import PostgreSQLDatabase, digest
from nuages.storage import reads
from nuages.storage.protocol import ObjectRead, ObjectView


class PostgreSQLObjectReader:
    """:class:`~nuages.storage.protocol.ObjectReader`: one round trip, outside any
    transaction (a statement sees one snapshot, even in ``READ COMMITTED``)."""

    def __init__(self, db: PostgreSQLDatabase) -> None:
        self.db = db

    async def read_object(self, read: ObjectRead) -> ObjectView:
        sql, args = object_read_sql(read)
        return reads.object_view(read, await self.db.fetch_once(sql, *args))

    async def stored_principals(self, user_ids: tuple[str, ...]) -> frozenset[str]:
        if not user_ids:
            return frozenset()
        rows = await self.db.fetch_once(
            "SELECT principal FROM user_principals"
            " WHERE left(user_id, 200) = ANY($1::text[]) AND user_id = ANY($2::text[])",
            [user_id[:200] for user_id in user_ids],
            list(user_ids),
        )
        return frozenset(principal for (principal,) in rows)


def object_read_sql(read: ObjectRead) -> tuple[str, list[Any]]:
    """The tagged ``UNION ALL`` of :mod:`nuages.storage.reads` for `read`. Rows are keyed
    by digests (:mod:`nuages.storage.postgresql`, :mod:`nuages.permission.postgresql`)."""
    args: list[Any] = []

    def bind(value: Any, cast: str = "") -> str:
        args.append(value)
        return f"${len(args)}{cast}"

    def one(tag: int, key: tuple[str, str, str]) -> str:
        resource_name, parent_id, object_id = key
        return (
            f"SELECT {tag}, last_modified, deleted, body, NULL::text FROM objects"
            f" WHERE key = {bind(digest(parent_id, resource_name, object_id))}"
        )

    selects = [one(reads.OBJECT, read.object)]
    if read.parent is not None:
        selects.append(one(reads.PARENT, read.parent))
    holders = None
    if read.user_ids:
        lefts = bind([user_id[:200] for user_id in read.user_ids], "::text[]")
        holders = (
            f"left(u.user_id, 200) = ANY({lefts})"
            f" AND u.user_id = ANY({bind(list(read.user_ids), '::text[]')})"
        )
    if read.bound:
        keys = [
            digest(uri, permission, principal)
            for uri, permission in read.bound
            for principal in set(read.principals)
        ]
        keys_param = bind(keys, "::bytea[]")
        granted = f"EXISTS (SELECT 1 FROM access_control_entries WHERE key = ANY({keys_param}))"
        if holders is not None:
            uris = bind([uri for uri, _ in read.bound], "::text[]")
            permissions = bind([permission for _, permission in read.bound], "::text[]")
            granted += (
                " OR EXISTS (SELECT 1 FROM user_principals AS u JOIN access_control_entries AS a"
                " ON left(a.principal, 200) = left(u.principal, 200) AND a.principal = u.principal"
                f" WHERE {holders} AND (a.object_uri, a.permission) IN"
                f" (SELECT * FROM unnest({uris}, {permissions})))"
            )
        selects.append(f"SELECT {reads.GRANTED}, NULL, NULL, NULL, NULL WHERE {granted}")
    if read.acl_uri is not None:
        uri = bind(read.acl_uri)
        selects.append(
            f"SELECT {reads.ACL}, NULL, NULL, permission, principal FROM access_control_entries"
            f' WHERE left(object_uri, 200) COLLATE "C" = left({uri}, 200) AND object_uri = {uri}'
        )
    if holders is not None:
        selects.append(
            f"SELECT {reads.PRINCIPAL}, NULL, NULL, u.principal, NULL"
            f" FROM user_principals AS u WHERE {holders}"
        )
    return " UNION ALL ".join(selects), args
