"""One-statement object reads on PostgreSQL (:mod:`nuages.storage.reads`), for a database
holding both the storage and the permission tables."""

from __future__ import annotations

from typing import Any

from nuages.core.objects import ListQuery
from nuages.postgresql.database import PostgreSQLDatabase, digest
from nuages.storage import reads
from nuages.storage.autoindex import AutoIndexer
from nuages.storage.postgresql import read_page
from nuages.storage.protocol import ObjectRead, ObjectView, StoredObjects


class PostgreSQLObjectReader:
    """:class:`~nuages.storage.protocol.ObjectReader`: outside any transaction (a statement
    sees one snapshot, even in ``READ COMMITTED``); one round trip, two with stored
    principals to read."""

    def __init__(self, db: PostgreSQLDatabase, indexer: AutoIndexer) -> None:
        self.db = db
        self.indexer = indexer  # the storage's automatic indexes (read_page uses them)

    async def read_object(self, read: ObjectRead) -> ObjectView:
        # Two statements on one connection: the stored principals, then the rest with
        # every principal given. One statement joining user_principals to the ACL costs
        # PostgreSQL more to plan (0.9 ms here, a custom plan each time) than both (0.3).
        async with self.db.statements() as fetch:
            stored: frozenset[str] = frozenset()
            if read.user_ids:
                stored = _principals(await fetch(_PRINCIPALS, *_principals_args(read.user_ids)))
            given = read._replace(
                user_ids=(), principals=tuple(dict.fromkeys((*read.principals, *stored)))
            )
            sql, args = object_read_sql(given)
            view = reads.object_view(given, await fetch(sql, *args))
        return view._replace(principals=stored)

    async def read_page(
        self, resource_name: str, parent_id: str, query: ListQuery
    ) -> tuple[int, StoredObjects] | None:
        """:class:`~nuages.storage.protocol.PageReader`: one round trip."""
        return await read_page(self.db, self.indexer, resource_name, parent_id, query)

    async def stored_principals(self, user_ids: tuple[str, ...]) -> frozenset[str]:
        if not user_ids:
            return frozenset()
        return _principals(await self.db.fetch_once(_PRINCIPALS, *_principals_args(user_ids)))


_PRINCIPALS = (
    "SELECT principal FROM user_principals"
    " WHERE left(user_id, 200) = ANY($1::text[]) AND user_id = ANY($2::text[])"
)


def _principals_args(user_ids: tuple[str, ...]) -> tuple[list[str], list[str]]:
    return [user_id[:200] for user_id in user_ids], list(user_ids)  # left() counts characters


def _principals(rows: list[Any]) -> frozenset[str]:
    return frozenset(principal for (principal,) in rows)


def object_read_sql(read: ObjectRead) -> tuple[str, list[Any]]:
    """The tagged ``UNION ALL`` of :mod:`nuages.storage.reads` for `read`, whose principals
    are all given (no `user_ids`: :meth:`PostgreSQLObjectReader.read_object` reads them
    first). Rows are keyed by digests (:mod:`nuages.storage.postgresql`,
    :mod:`nuages.permission.postgresql`)."""
    if read.user_ids:
        raise ValueError("read the stored principals first")
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

    def granted(bound: tuple[tuple[str, str], ...]) -> str:
        keys = [
            digest(uri, permission, principal)
            for uri, permission in bound
            for principal in set(read.principals)
        ]
        return (
            "EXISTS (SELECT 1 FROM access_control_entries"
            f" WHERE key = ANY({bind(keys, '::bytea[]')}))"
        )

    if read.bound:
        selects.append(
            f"SELECT {reads.GRANTED}, NULL, NULL, NULL, NULL WHERE {granted(read.bound)}"
        )
    if read.create_bound:
        selects.append(
            f"SELECT {reads.CREATE_GRANTED}, CASE WHEN {granted(read.create_bound)}"
            " THEN 1 ELSE 0 END, NULL, NULL, NULL"
        )
    if read.acl_uri is not None:
        uri = bind(read.acl_uri)
        selects.append(
            f"SELECT {reads.ACL}, NULL, NULL, permission, principal FROM access_control_entries"
            f' WHERE left(object_uri, 200) COLLATE "C" = left({uri}, 200) AND object_uri = {uri}'
        )
    return " UNION ALL ".join(selects), args
