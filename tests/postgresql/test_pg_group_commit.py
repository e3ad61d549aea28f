"""PostgreSQL group commit: concurrent write requests of one scope share a transaction.

See :mod:`nuages.postgresql.database` ("Group commit"). A member's failure undoes only its
own statements; a request is answered once its group is committed; requests of other
scopes, and work outside a request, have transactions of their own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from tests import services

from nuages.core.errors import CURRENT_ATTEMPT, Attempt, BackendError
from nuages.postgresql import PostgreSQLDatabase
from nuages.postgresql.database import MAX_GROUP


class Boom(Exception):
    pass


@pytest.fixture
async def db() -> AsyncIterator[PostgreSQLDatabase]:
    services.require("postgresql")
    url = await services.create_database()
    table = f"group_items_{uuid.uuid4().hex[:8]}"
    database = PostgreSQLDatabase(url, pool_size=8)
    await database.run_write(lambda tx: tx.execute(f"CREATE TABLE {table} (name text)"))
    database.table = table  # type: ignore[attr-defined]
    yield database
    await database.run_write(lambda tx: tx.execute(f"DROP TABLE {table}"))
    await database.aclose()


async def committed_names(db: PostgreSQLDatabase) -> set[str]:
    """What another connection reads: committed rows only."""
    conn = await asyncpg.connect(db.dsn)
    try:
        return {row[0] for row in await conn.fetch(f"SELECT name FROM {db.table}")}  # type: ignore[attr-defined]
    finally:
        await conn.close()


async def write(
    db: PostgreSQLDatabase, name: str, *, scope: str | None = "/v1/s", fail: bool = False
) -> int:
    """One request's write transaction; the id of the PostgreSQL transaction it ran in."""
    token = CURRENT_ATTEMPT.set(Attempt(last=False, scope=scope))
    try:
        async with db.transaction(write=True) as tx:
            await tx.execute(f"INSERT INTO {db.table} VALUES ($1)", name)  # type: ignore[attr-defined]
            xid = int(await tx.fetchval("SELECT txid_current()"))
            await asyncio.sleep(0.01)  # the others queue behind this one
            if fail:
                raise Boom()
    finally:
        CURRENT_ATTEMPT.reset(token)
    # Answered: the row is committed, as another connection sees it.
    assert name in await committed_names(db)
    return xid


async def test_concurrent_writes_of_one_scope_share_transactions(db: PostgreSQLDatabase) -> None:
    xids = await asyncio.gather(*(write(db, f"n{i}") for i in range(40)))
    assert await committed_names(db) == {f"n{i}" for i in range(40)}
    assert 2 <= len(set(xids)) < 40  # grouped, and at most MAX_GROUP to a group
    assert max(xids.count(xid) for xid in set(xids)) <= MAX_GROUP


async def test_a_failed_member_undoes_only_its_own_writes(db: PostgreSQLDatabase) -> None:
    results = await asyncio.gather(
        *(write(db, f"n{i}", fail=i % 4 == 0) for i in range(16)), return_exceptions=True
    )
    failed = {f"n{i}" for i, result in enumerate(results) if isinstance(result, Boom)}
    assert failed == {f"n{i}" for i in range(0, 16, 4)}  # the first member failed, too
    assert await committed_names(db) == {f"n{i}" for i in range(16)} - failed


async def test_a_failed_statement_in_a_member_spares_the_others(db: PostgreSQLDatabase) -> None:
    async def bad() -> None:
        token = CURRENT_ATTEMPT.set(Attempt(last=False, scope="/v1/s"))
        try:
            async with db.transaction(write=True) as tx:
                await tx.execute(f"INSERT INTO {db.table} VALUES ('bad')")  # type: ignore[attr-defined]
                await tx.execute("SELECT 1 / 0")
        finally:
            CURRENT_ATTEMPT.reset(token)

    tasks = [write(db, "a"), bad(), write(db, "b"), bad(), write(db, "c")]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [isinstance(r, BaseException) for r in results] == [False, True, False, True, False]
    assert await committed_names(db) == {"a", "b", "c"}


async def test_other_scopes_and_other_work_have_their_own_transactions(
    db: PostgreSQLDatabase,
) -> None:
    scoped = await asyncio.gather(*(write(db, f"s{i}", scope=f"/v1/s{i}") for i in range(6)))
    alone = await asyncio.gather(*(write(db, f"a{i}", scope=None) for i in range(6)))
    assert len(set(scoped)) == 6
    assert len(set(alone)) == 6


async def test_an_unreachable_database_fails_every_member(db: PostgreSQLDatabase) -> None:
    async def doomed(name: str) -> None:
        token = CURRENT_ATTEMPT.set(Attempt(last=False, scope="/v1/doomed"))
        try:
            async with db.transaction(write=True) as tx:
                await tx.execute(f"INSERT INTO {db.table} VALUES ($1)", name)  # type: ignore[attr-defined]
                pid = await tx.fetchval("SELECT pg_backend_pid()")
                if name == "d0":
                    await asyncio.sleep(0.05)  # the others are queued behind it
                    admin = await asyncpg.connect(db.dsn)
                    try:
                        await admin.execute("SELECT pg_terminate_backend($1)", pid)
                    finally:
                        await admin.close()
        finally:
            CURRENT_ATTEMPT.reset(token)

    results = await asyncio.gather(*(doomed(f"d{i}") for i in range(5)), return_exceptions=True)
    assert results[0] is None or isinstance(results[0], BackendError)
    assert any(isinstance(r, BackendError) for r in results), results
    assert not {"d0"} & await committed_names(db)
    # The lane recovers: the next group opens a new connection.
    await write(db, "after", scope="/v1/doomed")


async def test_a_joined_block_without_savepoint_costs_no_round_trip(
    db: PostgreSQLDatabase,
) -> None:
    statements: list[str] = []

    def log(record: object) -> None:
        statements.append(record.query)  # type: ignore[attr-defined]

    async with db.transaction(write=True) as outer:
        outer.conn.add_query_logger(log)
        async with db.transaction(write=True, savepoint=False) as joined:
            assert joined is outer
            await joined.execute(f"INSERT INTO {db.table} VALUES ('b')")  # type: ignore[attr-defined]
        async with db.transaction(write=True):
            await outer.execute(f"INSERT INTO {db.table} VALUES ('c')")  # type: ignore[attr-defined]
        outer.conn.remove_query_logger(log)
    assert sum("SAVEPOINT" in s.upper() for s in statements) == 2, statements  # start, release
    assert await committed_names(db) == {"b", "c"}


async def test_a_member_reads_early_beside_the_lane_and_joins_it_at_its_first_write(
    db: PostgreSQLDatabase,
) -> None:
    """Before its first write, a member's early reads run outside its group, while another
    member holds the lane; its first write waits for the lane and joins the group."""
    holding, release = asyncio.Event(), asyncio.Event()
    seen: list[object] = []

    async def first() -> None:
        token = CURRENT_ATTEMPT.set(Attempt(last=False, scope="/v1/s"))
        try:
            async with db.transaction(write=True) as tx:
                await tx.execute(f"INSERT INTO {db.table} VALUES ('first')")  # type: ignore[attr-defined]
                holding.set()
                await release.wait()
        finally:
            CURRENT_ATTEMPT.reset(token)

    async def second() -> None:
        token = CURRENT_ATTEMPT.set(Attempt(last=False, scope="/v1/s"))
        try:
            async with db.transaction(write=True) as tx:
                rows = await tx.fetch_early(f"SELECT name FROM {db.table}")  # type: ignore[attr-defined]
                seen.append([row[0] for row in rows])
                await tx.execute(f"INSERT INTO {db.table} VALUES ('second')")  # type: ignore[attr-defined]
                rows = await tx.fetch_early(f"SELECT name FROM {db.table} ORDER BY name")  # type: ignore[attr-defined]
                seen.append([row[0] for row in rows])
        finally:
            CURRENT_ATTEMPT.reset(token)

    writing = asyncio.create_task(first())
    await holding.wait()
    reading = asyncio.create_task(second())
    await asyncio.sleep(0.1)
    # Read while `first` held the lane, without its uncommitted row; the write waits.
    assert seen == [[]]
    release.set()
    await asyncio.gather(writing, reading)
    # Once joined, a read is in the group: it sees both rows before they are committed.
    assert seen == [[], ["first", "second"]]
    assert await committed_names(db) == {"first", "second"}


@pytest.mark.parametrize(
    "attempt",
    [Attempt(last=False, careful=True), Attempt(last=True), None],
    ids=["careful", "last", "outside-a-request"],
)
async def test_a_careful_or_last_attempt_reads_in_its_group(
    db: PostgreSQLDatabase, attempt: Attempt | None
) -> None:
    if attempt is not None:
        attempt.scope = "/v1/s"
    token = CURRENT_ATTEMPT.set(attempt)
    try:
        async with db.transaction(write=True) as tx:
            await tx.fetch_early("SELECT 1")
            assert tx.conn is not None and not tx.read_early
    finally:
        CURRENT_ATTEMPT.reset(token)


async def test_a_member_that_writes_nothing_opens_no_group(db: PostgreSQLDatabase) -> None:
    token = CURRENT_ATTEMPT.set(Attempt(last=False, scope="/v1/s"))
    try:
        with pytest.raises(Boom):
            async with db.transaction(write=True) as tx:
                assert await tx.fetch_early("SELECT 1") == [(1,)]
                raise Boom()  # say, a failed precondition
        async with db.transaction(write=True) as tx:
            await tx.fetch_early("SELECT 1")
    finally:
        CURRENT_ATTEMPT.reset(token)
    assert tx.read_early and tx.conn is None and tx.group is None
    assert db._lanes == {}  # no lane left behind, and no transaction was begun
