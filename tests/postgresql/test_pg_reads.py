"""The one-statement object reads of PostgreSQL (postgresql/reads.py) and the stored
principals they keep: kept per user with the token of ``principals_version``, which every
change of ``user_principals`` replaces; a read whose token is not the kept one reads
the principals again, in the same call. A write request takes them unconfirmed, and its
next statement (or the dispatcher) confirms them. A listing's parent and page are one
statement."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from tests import services
from tests.conftest import serving

from nuages.core.authorization import AUTHENTICATED
from nuages.core.errors import CURRENT_ATTEMPT, Attempt, TransactionConflict
from nuages.core.objects import Filter, ListQuery, Sort
from nuages.permission.postgresql import PostgreSQLPermission
from nuages.postgresql import PostgreSQLDatabase
from nuages.postgresql import reads as pg_reads
from nuages.settings import Settings
from nuages.storage.autoindex import AutoIndexConfig
from nuages.storage.postgresql import PostgreSQLStorage
from nuages.storage.protocol import ObjectRead
from nuages.web.app import create_app

PARENT = "/buckets/b/collections/c"
URI = f"{PARENT}/records/x"
GROUP = "/buckets/b/groups/g"


@pytest.fixture
async def backends() -> AsyncIterator[
    tuple[PostgreSQLStorage, pg_reads.PostgreSQLObjectReader, PostgreSQLPermission]
]:
    """A storage and its reader, and the permission backend of another process (a
    database of its own)."""
    services.require("postgresql")
    url = await services.create_database()
    await services.empty_database(url)
    storage = PostgreSQLStorage(PostgreSQLDatabase(url, pool_size=2))
    reader = storage.object_reader(PostgreSQLPermission(storage.db))
    assert reader is not None
    other = PostgreSQLPermission(PostgreSQLDatabase(url, pool_size=2))
    async with other.transaction(write=True) as tx:
        await tx.add_principal_to_ace(URI, "read", GROUP)
    yield storage, reader, other
    await storage.aclose()
    await other.db.aclose()


@pytest.fixture
def pair(
    backends: tuple[PostgreSQLStorage, pg_reads.PostgreSQLObjectReader, PostgreSQLPermission],
) -> tuple[pg_reads.PostgreSQLObjectReader, PostgreSQLPermission]:
    return backends[1], backends[2]


@contextlib.asynccontextmanager
async def _sent(reader: pg_reads.PostgreSQLObjectReader) -> AsyncIterator[list[str]]:
    """The statements the reader sends in the block."""
    sent: list[str] = []
    statements = reader.db.statements

    @contextlib.asynccontextmanager
    async def logged() -> AsyncIterator[Any]:
        async with statements() as fetch:

            async def fetch_logged(sql: str, *args: Any) -> list[Any]:
                sent.append(sql)
                return await fetch(sql, *args)

            yield fetch_logged

    reader.db.statements = logged  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        del reader.db.statements


def _read(user: str) -> ObjectRead:
    return ObjectRead(
        (user, AUTHENTICATED), (user, AUTHENTICATED), ((URI, "read"),), ("record", PARENT, "x")
    )


async def _granted(
    reader: pg_reads.PostgreSQLObjectReader, user: str = "alice"
) -> tuple[bool, int]:
    """Whether `user` may read, and the statements the read took."""
    async with _sent(reader) as sent:
        view = await reader.read_object(_read(user))
    assert view.granted == (GROUP in view.principals)
    return view.granted, len(sent)


async def test_kept_principals_hold_until_any_membership_changes(
    pair: tuple[pg_reads.PostgreSQLObjectReader, PostgreSQLPermission],
) -> None:
    reader, other = pair
    assert await _granted(reader) == (False, 2)  # the principals, then the rest
    assert await _granted(reader) == (False, 1)  # kept
    async with other.transaction(write=True) as tx:
        await tx.add_user_principal("alice", GROUP)
        # Not committed: the read's snapshot has the kept token, and no group.
        assert await _granted(reader) == (False, 1)
    assert await _granted(reader) == (True, 3)  # an old token: principals, read again
    assert await _granted(reader) == (True, 1)
    async with other.transaction(write=True) as tx:
        await tx.add_user_principal("bob", "/buckets/b/groups/h")  # anyone's change
    assert await _granted(reader) == (True, 3)
    async with other.transaction(write=True) as tx:
        await tx.remove_principal(GROUP)
    assert await _granted(reader) == (False, 3)
    async with other.transaction(write=True) as tx:
        await tx.add_user_principal(AUTHENTICATED, GROUP)  # through system.Authenticated
    assert await _granted(reader) == (True, 3)
    assert await _granted(reader, "carol") == (True, 2)
    async with other.transaction(write=True) as tx:
        await tx.remove_user_principal(AUTHENTICATED, GROUP)
    # stored_principals reads them with the token, and keeps them too.
    assert await reader.stored_principals(("alice", AUTHENTICATED)) == frozenset()
    assert await _granted(reader) == (False, 1)
    async with other.transaction(write=True) as tx:
        await tx.add_user_principal("alice", GROUP)
    assert await _granted(reader) == (True, 3)
    await other.flush()  # whatever deletes them
    assert await _granted(reader) == (False, 3)


async def test_the_oldest_kept_principals_are_forgotten_first(
    pair: tuple[pg_reads.PostgreSQLObjectReader, PostgreSQLPermission],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reader, _ = pair
    monkeypatch.setattr(pg_reads, "MAX_KEPT_PRINCIPALS", 2)
    assert [(await _granted(reader, user))[1] for user in "abab"] == [2, 2, 1, 1]
    assert (await _granted(reader, "c"))[1] == 2  # forgets a
    assert [(await _granted(reader, user))[1] for user in "bca"] == [1, 1, 2]


@contextlib.contextmanager
def _attempt(*, last: bool = False) -> Iterator[Attempt]:
    """A request's attempt, as the dispatcher runs it."""
    attempt = Attempt(last=last)
    token = CURRENT_ATTEMPT.set(attempt)
    try:
        yield attempt
    finally:
        CURRENT_ATTEMPT.reset(token)


USER = ("alice", AUTHENTICATED)


_groups = itertools.count()


async def _change(other: PostgreSQLPermission) -> None:
    """Somebody's groups change (not alice's: any change replaces the token)."""
    async with other.transaction(write=True) as tx:
        await tx.add_user_principal("bob", f"/buckets/b/groups/g{next(_groups)}")


async def test_stored_principals_answer_what_was_kept_to_be_confirmed_by_the_next_statement(
    backends: tuple[PostgreSQLStorage, pg_reads.PostgreSQLObjectReader, PostgreSQLPermission],
) -> None:
    storage, reader, other = backends
    assert await reader.stored_principals(USER) == frozenset()  # read, and kept
    read = ObjectRead((), ("alice",), ((URI, "read"),), ("record", PARENT, "x"))

    async def kept(attempt: Attempt) -> bool:
        """Whether stored_principals answered from what it kept, without a statement."""
        async with _sent(reader) as sent:
            assert await reader.stored_principals(USER) == frozenset()
        assert (attempt.unconfirmed is not None) == (not sent)
        return not sent

    # Confirmed by the object read of the request's transaction (in the same statement).
    with _attempt() as attempt:
        assert await kept(attempt)
        async with storage.transaction(write=True) as tx:
            await tx.read_object(read)
        assert attempt.unconfirmed is None
    # Or by its first statement, the token read first.
    with _attempt() as attempt:
        assert await kept(attempt)
        async with storage.transaction(write=False) as tx:
            assert await tx.get("record", PARENT, "x") is None
        assert attempt.unconfirmed is None
    # Changed since: either statement raises TransactionConflict, the rerun reads them.
    for statement in ("read_object", "get"):
        await _change(other)
        with _attempt() as attempt:
            assert await kept(attempt)
            with pytest.raises(TransactionConflict):
                async with storage.transaction(write=True) as tx:
                    if statement == "read_object":
                        await tx.read_object(read)
                    else:
                        await tx.get("record", PARENT, "x")
        with _attempt() as attempt:
            assert not await kept(attempt)
    # The dispatcher's own check, when no statement confirmed them.
    with _attempt() as attempt:
        assert await kept(attempt)
        assert attempt.unconfirmed is not None
        assert await attempt.unconfirmed() is True
    await _change(other)
    with _attempt() as attempt:
        assert await kept(attempt)
        assert attempt.unconfirmed is not None
        assert await attempt.unconfirmed() is False
    with _attempt() as attempt:
        assert not await kept(attempt)  # forgotten
    # The last attempt, and work outside any attempt, read them.
    with _attempt(last=True) as attempt:
        assert not await kept(attempt)
    async with _sent(reader) as sent:
        assert await reader.stored_principals(USER) == frozenset()
    assert len(sent) == 1


async def test_the_dispatcher_confirms_kept_principals_that_no_statement_did() -> None:
    """A request answered without a statement after its kept principals (a 400 for an id
    that is not valid) has them confirmed by the dispatcher: changed, they are forgotten
    and the request rerun."""
    services.require("postgresql")
    url = await services.create_database()
    await services.empty_database(url)
    app = create_app(Settings.load(env={}, storage_url=url), migrate=True)
    other = PostgreSQLPermission(PostgreSQLDatabase(url, pool_size=1))
    async with serving(app, auth=("alice", "pw"), base_url="http://t/v1") as client:
        reader = app.dispatcher.service.reader  # type: ignore[attr-defined]
        user_ids = ((await client.get("/")).json()["user"]["id"], AUTHENTICATED)
        assert (await client.put("/buckets/b")).status_code == 201
        kept = reader._principals[user_ids]  # read for the PUT, and kept
        invalid = "/buckets/b/collections/c/records/not%20valid"
        assert (await client.patch(invalid, json={"data": {}})).status_code == 400
        assert reader._principals[user_ids] is kept  # confirmed: the token is current
        await _change(other)
        assert (await client.patch(invalid, json={"data": {}})).status_code == 400
        # The token had changed: forgotten, and read again by the rerun.
        assert reader._principals[user_ids][1] != kept[1]
    await other.db.aclose()


async def test_without_the_token_row_nothing_is_kept(
    pair: tuple[pg_reads.PostgreSQLObjectReader, PostgreSQLPermission],
) -> None:
    """Should the token's row be missing, the principals are read every time."""
    reader, other = pair

    async def token_row(sql: str) -> None:
        async with other.transaction(write=True) as tx:
            await tx._tx.execute(sql)

    await token_row("DELETE FROM principals_version")
    try:
        assert await _granted(reader) == (False, 2)
        assert await _granted(reader) == (False, 2)
        async with other.transaction(write=True) as tx:
            await tx.add_user_principal("alice", GROUP)
        assert await _granted(reader) == (True, 2)
        with _attempt() as attempt:
            assert await reader.stored_principals(USER) == {GROUP}
            assert attempt.unconfirmed is None  # read, not kept
    finally:
        await token_row("INSERT INTO principals_version (token) VALUES ('restored')")


async def test_a_parent_and_a_page_are_one_statement_in_the_page_order(
    backends: tuple[PostgreSQLStorage, pg_reads.PostgreSQLObjectReader, PostgreSQLPermission],
) -> None:
    """read_object_and_page answers the parent's read as read_object does, and the page
    as the transactional listing (``list_stored``) does, in its order, in one statement
    while the principals are kept."""
    _, _, other = backends
    # Automatic indexes off: a sorted or filtered shape waiting for its index is listed in
    # a transaction instead (read_object_and_page answers None).
    storage = PostgreSQLStorage(other.db, auto_index=AutoIndexConfig(max_indexes=0))
    reader = storage.object_reader(other)
    assert reader is not None
    async with storage.transaction(write=True) as tx:
        await tx.create("collection", "/buckets/b", {"id": "c"})
        for i in range(30):
            await tx.create("record", PARENT, {"id": f"r{i}", "n": (i * 7) % 10, "s": str(i)})
        # An id TEXT cannot hold (U+0000: its JSON read back) and an empty object.
        await tx.create("record", PARENT, {"id": "nul\x00id", "n": 3, "s": "\x00"})
        await tx.create("record", PARENT, {"id": "bare"})
        await tx.delete("record", PARENT, "r3")
    parent = ObjectRead(USER, USER, ((URI, "read"),), ("collection", "/buckets/b", "c"))
    queries = [
        ListQuery(limit=11),
        ListQuery(sorting=(Sort("n", 1), Sort("s", -1)), limit=7),
        ListQuery(filters=(Filter("n", 3),), sorting=(Sort("s", 1),)),
        ListQuery(include_deleted=True, limit=50),
        ListQuery(filters=(Filter("n", 99),)),  # an empty page
    ]
    await reader.read_object(parent)  # its principals read, and kept
    for query in queries:
        async with storage.transaction(write=False) as tx:
            listed = await tx.list_stored("record", PARENT, query)
            timestamp = await tx.resource_timestamp("record", PARENT)
        async with _sent(reader) as sent:
            both = await reader.read_object_and_page(parent, "record", PARENT, query)
        assert both is not None
        view, page = both
        assert view == await reader.read_object(parent)
        assert view.object is not None and view.object["id"] == "c"
        assert page == (None if not listed else (timestamp, listed)), query
        assert len(sent) == 1, query  # the principals were kept since the first
    await _change(other)
    async with _sent(reader) as sent:
        assert await reader.read_object_and_page(parent, "record", PARENT, queries[0])
    assert len(sent) == 3  # an old token: the principals, then the read again
