"""One-statement object reads on PostgreSQL (:mod:`nuages.storage.reads`), for a database
holding both the storage and the permission tables."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Awaitable, Callable
from typing import Any, Final

from nuages.core.errors import CURRENT_ATTEMPT
from nuages.core.objects import ListQuery
from nuages.postgresql.database import KeptPrincipals, PostgreSQLDatabase, digest
from nuages.storage import reads
from nuages.storage.autoindex import AutoIndexer
from nuages.storage.postgresql import page_of, page_statement
from nuages.storage.protocol import ObjectRead, ObjectView, StoredObjects


class PostgreSQLObjectReader:
    """:class:`~nuages.storage.protocol.ObjectReader`: outside any transaction (a statement
    sees one snapshot, even in ``READ COMMITTED``); one round trip, two when the stored
    principals must be read.

    Stored principals (group memberships) are kept, per user, with the token of
    ``principals_version`` read in the same statement: every change of ``user_principals``
    replaces that token in its own transaction (a trigger, ``schema.sql``). A read asks
    for the current token along with the rest; when it is the kept one, the principals it
    used were the stored ones in the read's snapshot, as if it had read them too. Else
    they are read again, and so is the rest.

    :meth:`stored_principals` answers from what it kept too, within an attempt that can be
    rerun: the request's next statement then confirms the token
    (:class:`~nuages.postgresql.database.KeptPrincipals`), and a rerun reads them anew."""

    def __init__(self, db: PostgreSQLDatabase, indexer: AutoIndexer) -> None:
        self.db = db
        self.indexer = indexer  # the storage's automatic indexes (listings use them)
        # user ids -> (their stored principals, the token read with them)
        self._principals: dict[tuple[str, ...], tuple[frozenset[str], str]] = {}

    async def read_object(self, read: ObjectRead) -> ObjectView:
        view, _ = await self._read(read, lambda given: _tagged_sql(given, []))
        return view

    async def read_object_and_page(
        self, read: ObjectRead, resource_name: str, parent_id: str, query: ListQuery
    ) -> tuple[ObjectView, tuple[int, StoredObjects] | None] | None:
        """:class:`~nuages.storage.protocol.PageReader`: `read` (the parent and the
        caller's grant on it) and the page, in one statement. None when the page is a
        shape whose automatic index is still to count."""
        page = await page_statement(self.indexer, resource_name, parent_id, query)
        if page is None:
            return None
        page_sql, page_args = page

        def statement(given: ObjectRead) -> tuple[str, list[Any]]:
            # The tagged rows, then the page's in its order (a row number in a column of
            # their own, since a UNION ALL promises no order), each row of 8 columns.
            tagged, args = _tagged_sql(given, list(page_args))
            return (
                "SELECT * FROM ("
                f"SELECT r.*, NULL::text, NULL::bigint, 0::bigint FROM ({tagged}) AS r"
                f" UNION ALL SELECT {_PAGE_TAG}, p.last_modified, NULL::boolean, p.body, p.id,"
                " p.raw_id, p.ts, row_number() OVER ()"
                f" FROM ({page_sql}) AS p(id, raw_id, last_modified, body, ts)"
                ") AS u ORDER BY 8",
                args,
            )

        view, rows = await self._read(read, statement)
        first = next((n for n, row in enumerate(rows) if row[0] == _PAGE_TAG), len(rows))
        return view, page_of(rows[first:], _PAGE_COLUMNS)

    async def _read(
        self, read: ObjectRead, statement: Callable[[ObjectRead], tuple[str, list[Any]]]
    ) -> tuple[ObjectView, list[Any]]:
        """`read`, in the statement that `statement` makes of it once its principals are all
        given (stored principals are read first, on the same connection, when not kept),
        and that statement's rows. One statement joining user_principals to the ACL costs
        PostgreSQL more to plan (0.9 ms here, a custom plan each time) than both (0.3)."""
        async with self.db.statements() as fetch:
            if not read.user_ids:
                sql, args = statement(read)
                rows = await fetch(sql, *args)
                return reads.object_view(read, tagged_rows(rows)), rows
            known: tuple[frozenset[str], str | None] | None = self._principals.get(read.user_ids)
            for _ in range(2):
                if known is None:
                    known = await self._read_principals(fetch, read.user_ids)
                stored, token = known
                given = read._replace(
                    user_ids=(), principals=tuple(dict.fromkeys((*read.principals, *stored)))
                )
                sql, args = statement(given)
                rows = await fetch(sql, *args)
                if token_of(rows) == token:
                    break
                # Changed since they were read: read them again. Should they change again
                # before the next statement, the read is answered as it stands, from two
                # snapshots (as when the principals are not kept).
                known = None
            view = reads.object_view(given, tagged_rows(rows))
        return view._replace(principals=stored), rows

    async def stored_principals(self, user_ids: tuple[str, ...]) -> frozenset[str]:
        if not user_ids:
            return frozenset()
        known = self._principals.get(user_ids)
        attempt = CURRENT_ATTEMPT.get()
        if (
            known is not None
            and attempt is not None
            and not attempt.last
            and attempt.unconfirmed is None
        ):
            stored, token = known
            attempt.unconfirmed = KeptPrincipals(
                self.db, token, lambda: self._forget(user_ids, token)
            )
            return stored
        async with self.db.statements() as fetch:
            return (await self._read_principals(fetch, user_ids))[0]

    async def _read_principals(
        self, fetch: Callable[..., Awaitable[list[Any]]], user_ids: tuple[str, ...]
    ) -> tuple[frozenset[str], str | None]:
        """The stored principals of `user_ids` and the token, in one statement; kept
        (unless the token's row is missing: then nothing can tell when they change)."""
        rows = await fetch(_PRINCIPALS, *_principals_args(user_ids))
        token = next((text for tag, text in rows if tag == _TOKEN_TAG), None)
        known = frozenset(text for tag, text in rows if tag != _TOKEN_TAG), token
        if token is None:
            return known
        if user_ids not in self._principals and len(self._principals) >= MAX_KEPT_PRINCIPALS:
            del self._principals[next(iter(self._principals))]  # the oldest kept
        self._principals[user_ids] = (known[0], token)
        return known

    def _forget(self, user_ids: tuple[str, ...], token: str) -> None:
        """Forget the principals of `user_ids` kept with `token` (not newer ones)."""
        known = self._principals.get(user_ids)
        if known is not None and known[1] == token:
            del self._principals[user_ids]


def _tagged_sql(read: ObjectRead, args: list[Any]) -> tuple[str, list[Any]]:
    """:func:`object_read_sql` with the token's row (:func:`with_token`)."""
    sql, args = object_read_sql(read, args)
    return with_token(sql), args


def tagged_rows(rows: list[Any]) -> list[Any]:
    """The rows of :func:`object_read_sql` among `rows`, those of a statement that has the
    token's row (:func:`with_token`) and maybe a page's, after them (their first five
    columns)."""
    tagged = []
    for row in rows:
        tag = row[0]
        if tag == _PAGE_TAG:
            break  # the page's rows come last (read_object_and_page)
        if tag != _TOKEN_TAG:
            tagged.append(row[:5])
    return tagged


def with_token(sql: str) -> str:
    """The tagged read `sql` with a row for the current token of the principals."""
    return f"{sql} UNION ALL {_TOKEN}"


def token_of(rows: list[Any]) -> str | None:
    """The token in the rows of a read :func:`with_token`."""
    return next((row[3] for row in rows if row[0] == _TOKEN_TAG), None)


MAX_KEPT_PRINCIPALS: Final = 10_000
"""Users whose stored principals a reader keeps (the oldest is forgotten first)."""

_TOKEN_TAG: Final = 9  # a row of no tag of nuages.storage.reads
_PAGE_TAG: Final = 10  # a row of a page, after the tagged ones (read_object_and_page)
# Where a page's row holds the id, the raw id, last_modified, the body and the scope's
# timestamp (page_of).
_PAGE_COLUMNS: Final = (4, 5, 1, 3, 6)
_TOKEN = f"SELECT {_TOKEN_TAG}, NULL, NULL, token, NULL FROM principals_version"

_PRINCIPALS = (
    "SELECT 0, principal FROM user_principals"
    " WHERE left(user_id, 200) = ANY($1::text[]) AND user_id = ANY($2::text[])"
    f" UNION ALL SELECT {_TOKEN_TAG}, token FROM principals_version"
)


def _principals_args(user_ids: tuple[str, ...]) -> tuple[list[str], list[str]]:
    return [user_id[:200] for user_id in user_ids], list(user_ids)  # left() counts characters


def object_read_sql(read: ObjectRead, args: list[Any] | None = None) -> tuple[str, list[Any]]:
    """The tagged ``UNION ALL`` of :mod:`nuages.storage.reads` for `read`, whose principals
    are all given (no `user_ids`: :meth:`PostgreSQLObjectReader.read_object` reads them
    first). Rows are keyed by digests (:mod:`nuages.storage.postgresql`,
    :mod:`nuages.permission.postgresql`). `args`: the parameters of a statement that it
    will be a part of, which its own follow."""
    if read.user_ids:
        raise ValueError("read the stored principals first")
    args = [] if args is None else args
    first = len(args) + 1
    resource_name, parent_id, object_id = read.object
    args.append(digest(parent_id, resource_name, object_id))
    if read.parent is not None:
        resource_name, parent_id, object_id = read.parent
        args.append(digest(parent_id, resource_name, object_id))
    principals = set(read.principals)
    for bound in (read.bound, read.create_bound):
        if bound:
            args.append([digest(uri, perm, who) for uri, perm in bound for who in principals])
    if read.acl_uri is not None:
        args.append(read.acl_uri)
    parent, acl = read.parent is not None, read.acl_uri is not None
    text = _object_read_text(first, parent, bool(read.bound), bool(read.create_bound), acl)
    return text, args


@functools.lru_cache(maxsize=256)
def _object_read_text(first: int, parent: bool, bound: bool, creating: bool, acl: bool) -> str:
    """The text of :func:`object_read_sql`, its parameters numbered from `first` in the
    order: the object's key, the parent's, the grant keys of the pairs, those of the create
    pairs, the ACL's URI (the same few shapes at every request: built once each)."""
    numbers = itertools.count(first)

    def one(tag: int) -> str:
        return (
            f"SELECT {tag}, last_modified, deleted, body, NULL::text FROM objects"
            f" WHERE key = ${next(numbers)}"
        )

    def granted() -> str:
        return (
            "EXISTS (SELECT 1 FROM access_control_entries"
            f" WHERE key = ANY(${next(numbers)}::bytea[]))"
        )

    selects = [one(reads.OBJECT)]
    if parent:
        selects.append(one(reads.PARENT))
    if bound:
        selects.append(f"SELECT {reads.GRANTED}, NULL, NULL, NULL, NULL WHERE {granted()}")
    if creating:
        selects.append(
            f"SELECT {reads.CREATE_GRANTED}, CASE WHEN {granted()}"
            " THEN 1 ELSE 0 END, NULL, NULL, NULL"
        )
    if acl:
        uri = f"${next(numbers)}"
        selects.append(
            f"SELECT {reads.ACL}, NULL, NULL, permission, principal FROM access_control_entries"
            f' WHERE left(object_uri, 200) COLLATE "C" = left({uri}, 200) AND object_uri = {uri}'
        )
    return " UNION ALL ".join(selects)
