"""PostgreSQL group commit: concurrent write requests of one scope share a transaction.

See :mod:`nuages.postgresql.database` ("Group commit"). A member's failure undoes its own
statements, and the members that shared them since the group's latest savepoint are rerun
(as the web dispatcher reruns a request on a TransactionConflict); a careful or last
attempt is never rerun for another's failure. A request is answered once its group is
committed; requests of other scopes, and work outside a request, have transactions of
their own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import asyncpg
import pytest
from tests import services

from nuages.core.errors import CURRENT_ATTEMPT, Attempt, BackendError, TransactionConflict
from nuages.postgresql import PostgreSQLDatabase
from nuages.postgresql.database import MAX_GROUP

T = TypeVar("T")


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


class Runs:
    """How many times each request ran, and how many it was rerun."""

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}

    def count(self, name: str) -> None:
        self.runs[name] = self.runs.get(name, 0) + 1


async def request(
    work: Callable[[Attempt], Awaitable[T]],
    *,
    scope: str | None = "/v1/s",
    attempts: int = 5,
    careful: bool = False,
    last: bool = False,
) -> T:
    """Run `work` as the web dispatcher runs a request: rerun on a TransactionConflict
    (`careful`, `last`: the first attempt's)."""
    for number in range(1, attempts + 1):
        attempt = Attempt(last=last or number == attempts, careful=careful, scope=scope)
        token = CURRENT_ATTEMPT.set(attempt)
        try:
            return await work(attempt)
        except TransactionConflict:
            if attempt.last:
                raise
            careful = attempt.careful
        finally:
            CURRENT_ATTEMPT.reset(token)
    raise AssertionError("unreachable")


async def write(
    db: PostgreSQLDatabase,
    name: str,
    *,
    scope: str | None = "/v1/s",
    fail: bool = False,
    runs: Runs | None = None,
) -> int:
    """One request's write transaction; the id of the PostgreSQL transaction it ran in."""

    async def work(attempt: Attempt) -> int:
        if runs is not None:
            runs.count(name)
        async with db.transaction(write=True) as tx:
            await tx.execute(f"INSERT INTO {db.table} VALUES ($1)", name)  # type: ignore[attr-defined]
            xid = int(await tx.fetchval("SELECT txid_current()"))
            await asyncio.sleep(0.01)  # the others queue behind this one
            if fail:
                raise Boom()
        return xid

    xid = await request(work, scope=scope)
    # Answered: the row is committed, as another connection sees it.
    assert name in await committed_names(db)
    return xid


async def test_concurrent_writes_of_one_scope_share_transactions(db: PostgreSQLDatabase) -> None:
    xids = await asyncio.gather(*(write(db, f"n{i}") for i in range(40)))
    assert await committed_names(db) == {f"n{i}" for i in range(40)}
    assert 2 <= len(set(xids)) < 40  # grouped, and at most MAX_GROUP to a group
    assert max(xids.count(xid) for xid in set(xids)) <= MAX_GROUP


async def test_a_failed_member_undoes_its_writes_and_the_others_are_rerun(
    db: PostgreSQLDatabase,
) -> None:
    runs = Runs()
    results = await asyncio.gather(
        *(write(db, f"n{i}", fail=i % 4 == 0, runs=runs) for i in range(16)),
        return_exceptions=True,
    )
    failed = {f"n{i}" for i, result in enumerate(results) if isinstance(result, Boom)}
    assert failed == {f"n{i}" for i in range(0, 16, 4)}  # the first member failed, too
    assert await committed_names(db) == {f"n{i}" for i in range(16)} - failed
    # The members that shared a failed member's statements ran again (n1 to n3 at least:
    # they waited behind n0, which failed after them with no savepoint before it).
    assert any(runs.runs[f"n{i}"] > 1 for i in range(16) if i % 4), runs.runs
    assert all(runs.runs[name] == 1 for name in failed), runs.runs  # failures are not rerun


async def test_a_member_that_only_read_undoes_nothing(db: PostgreSQLDatabase) -> None:
    """A failure after reads only (a failed precondition, a conflict found by reading)
    keeps the group as it is: nobody is rerun."""
    runs = Runs()

    async def reader(attempt: Attempt) -> None:
        runs.count("reader")
        async with db.transaction(write=True) as tx:
            await tx.join()  # in the group, behind the writers
            await tx.fetch(f"SELECT name FROM {db.table} FOR UPDATE")  # type: ignore[attr-defined]
            raise Boom()

    tasks = [write(db, "a", runs=runs), request(reader), write(db, "b", runs=runs)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[1], Boom)
    assert runs.runs == {"a": 1, "reader": 1, "b": 1}
    assert await committed_names(db) == {"a", "b"}


async def test_a_careful_attempt_is_never_rerun_for_another_failure(
    db: PostgreSQLDatabase,
) -> None:
    """A careful member starts with a savepoint, the member after it too: the failure of
    a member after it rolls back to the later one, not over the careful member."""
    order: list[str] = []
    started = asyncio.Event()

    async def member(attempt: Attempt, name: str, *, careful: bool, fail: bool) -> None:
        attempt.careful = attempt.careful or careful
        order.append(name + ("*" if attempt.careful else ""))
        async with db.transaction(write=True) as tx:
            await tx.execute(f"INSERT INTO {db.table} VALUES ($1)", name)  # type: ignore[attr-defined]
            started.set()
            await asyncio.sleep(0.01)
            if fail:
                raise Boom()

    def run(name: str, *, careful: bool = False, fail: bool = False) -> Awaitable[None]:
        return request(lambda attempt: member(attempt, name, careful=careful, fail=fail))

    first = asyncio.create_task(run("a"))
    await started.wait()  # `a` holds the lane: the others queue in this order
    results = await asyncio.gather(
        first,
        run("careful", careful=True),
        run("b"),
        run("boom", fail=True),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == ["NoneType"] * 3 + ["Boom"]
    # `careful` ran once; `b`, answered after the savepoint that follows it, ran again.
    assert order.count("careful*") == 1 and order.count("a") == 1, order
    assert order.count("b") == 2, order
    assert await committed_names(db) == {"a", "careful", "b"}


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
    assert isinstance(results[1], BackendError) and isinstance(results[3], BackendError)
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
