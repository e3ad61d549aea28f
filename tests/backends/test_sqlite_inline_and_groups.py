"""SQLite statements on the event loop, and write transactions committed in groups.

See :mod:`nuages.sqlite.database`: reads of a request run on the event loop while a rerun
can absorb one that takes too long; writes run there once their group has begun; several
write transactions share one ``COMMIT`` and each is answered only once that is on disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from nuages.core.errors import CURRENT_ATTEMPT, Attempt, BackendError, TransactionConflict
from nuages.sqlite import SQLiteDatabase
from nuages.sqlite import database as database_module

SLOW_QUERY = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000)"
    " SELECT count(*) FROM n"
)


class Boom(Exception):
    pass


@pytest.fixture
async def db(tmp_path: Path) -> SQLiteDatabase:
    database = SQLiteDatabase(tmp_path / "groups.db")
    await database.migrate()
    await database.run_write(lambda conn: conn.execute("CREATE TABLE items (name TEXT)"))
    yield database  # type: ignore[misc]
    await database.aclose()


def committed_names(path: str) -> set[str]:
    """What another process reads: committed rows only."""
    conn = sqlite3.connect(path)
    try:
        return {name for (name,) in conn.execute("SELECT name FROM items")}
    finally:
        conn.close()


async def insert(db: SQLiteDatabase, name: str, *, fail: bool = False) -> None:
    async with db.transaction(write=True) as tx:
        await tx.run(lambda conn: conn.execute("INSERT INTO items VALUES (?)", (name,)))
        await asyncio.sleep(0)  # let the others queue behind this one
        if fail:
            raise Boom()


async def test_concurrent_writes_share_commits_and_are_on_disk_when_answered(
    db: SQLiteDatabase,
) -> None:
    commits = 0

    def count(statement: str) -> None:
        nonlocal commits
        commits += statement == "COMMIT"

    await db.run_write(lambda conn: conn.set_trace_callback(count))

    async def write(name: str) -> None:
        await insert(db, name)
        # Answered: the row is already committed, as another process sees it.
        assert name in committed_names(db.path)

    await asyncio.gather(*(write(f"n{i}") for i in range(40)))
    assert committed_names(db.path) == {f"n{i}" for i in range(40)}
    assert 1 <= commits < 40


async def test_a_failed_member_undoes_only_its_own_writes(db: SQLiteDatabase) -> None:
    results = await asyncio.gather(
        *(insert(db, f"n{i}", fail=i % 3 == 0) for i in range(12)), return_exceptions=True
    )
    failed = {f"n{i}" for i, result in enumerate(results) if isinstance(result, Boom)}
    assert failed == {f"n{i}" for i in range(0, 12, 3)}
    assert committed_names(db.path) == {f"n{i}" for i in range(12)} - failed


async def test_a_group_whose_only_member_failed_releases_the_file(
    db: SQLiteDatabase, tmp_path: Path
) -> None:
    with pytest.raises(Boom):
        await insert(db, "lost", fail=True)
    # Another process can write at once: the lock was not kept by an empty group.
    other = SQLiteDatabase(db.path, busy_timeout=2)
    try:
        await other.run_write(lambda conn: conn.execute("INSERT INTO items VALUES ('other')"))
    finally:
        await other.aclose()
    assert committed_names(db.path) == {"other"}


async def test_a_cancelled_member_leaves_nothing_behind(db: SQLiteDatabase) -> None:
    started = asyncio.Event()

    async def stuck() -> None:
        async with db.transaction(write=True) as tx:
            await tx.run(lambda conn: conn.execute("INSERT INTO items VALUES ('cancelled')"))
            started.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(stuck())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await insert(db, "after")
    assert committed_names(db.path) == {"after"}


async def test_a_member_cancelled_while_its_job_runs_on_the_thread(db: SQLiteDatabase) -> None:
    """Cancelling a caller does not stop its job on the connection's thread: the end of
    its transaction must wait for that job, not run beside it on the event loop (two
    threads on one connection), and what the job wrote must not be committed."""
    on_thread = threading.Event()
    go_on = threading.Event()

    def slow_insert(conn: sqlite3.Connection) -> None:
        on_thread.set()
        go_on.wait(5)
        conn.execute("INSERT INTO items VALUES ('cancelled')")

    async def cancelled() -> None:
        async with db.transaction(write=True) as tx:
            await tx.run(slow_insert, heavy=True)  # heavy: on the thread

    task = asyncio.create_task(cancelled())
    await asyncio.to_thread(on_thread.wait, 5)
    task.cancel()
    await asyncio.sleep(0.05)  # the cancelled caller ends its transaction meanwhile
    go_on.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    await insert(db, "after")
    assert committed_names(db.path) == {"after"}


async def test_a_job_cancelled_before_it_started_leaves_its_connection_idle(
    db: SQLiteDatabase,
) -> None:
    """A job cancelled while queued behind another never runs: its connection must not
    stay busy for good (every later job would go through the thread)."""
    worker = db._connections().writer
    on_thread = threading.Event()
    release = threading.Event()

    def block(conn: sqlite3.Connection) -> None:
        on_thread.set()
        release.wait(5)

    first = asyncio.ensure_future(worker.run(block))
    await asyncio.to_thread(on_thread.wait, 5)
    second = asyncio.ensure_future(worker.run(lambda conn: None))
    await asyncio.sleep(0)
    second.cancel()
    release.set()
    await first
    with pytest.raises(asyncio.CancelledError):
        await second
    here = threading.current_thread()
    assert worker.run_inline(lambda conn: threading.current_thread()) is here


async def test_a_slow_read_of_a_request_is_interrupted_and_rerun_on_the_thread(
    db: SQLiteDatabase,
) -> None:
    attempt = Attempt(last=False)
    token = CURRENT_ATTEMPT.set(attempt)
    try:
        with pytest.raises(TransactionConflict):
            async with db.transaction(write=False) as tx:
                await tx.run(lambda conn: None)  # opens the connection (on its thread)
                await tx.run(lambda conn: conn.execute(SLOW_QUERY).fetchone())
        assert attempt.careful  # the rerun does without the event loop shortcut
        rerun = Attempt(last=False, careful=True)
        CURRENT_ATTEMPT.set(rerun)
        async with db.transaction(write=False) as tx:
            (count,) = await tx.run(lambda conn: conn.execute(SLOW_QUERY).fetchone())
        assert count == 3_000_000
    finally:
        CURRENT_ATTEMPT.reset(token)


async def test_without_a_rerun_slow_reads_run_on_the_thread(db: SQLiteDatabase) -> None:
    # No attempt (a CLI, a test), or the last one: nothing may be interrupted.
    for attempt in (None, Attempt(last=True)):
        token = CURRENT_ATTEMPT.set(attempt)
        try:
            async with db.transaction(write=False) as tx:
                (count,) = await tx.run(lambda conn: conn.execute(SLOW_QUERY).fetchone())
            assert count == 3_000_000
        finally:
            CURRENT_ATTEMPT.reset(token)


async def test_reads_of_a_request_run_on_the_event_loop(db: SQLiteDatabase) -> None:
    import threading

    main = threading.get_ident()
    token = CURRENT_ATTEMPT.set(Attempt(last=False))
    try:
        async with db.transaction(write=False) as tx:
            await tx.run(lambda conn: None)  # opens the connection (on its thread)
            where = await tx.run(lambda conn: threading.get_ident())
    finally:
        CURRENT_ATTEMPT.reset(token)
    assert where == main


async def test_a_single_read_of_a_request_runs_inline_and_a_slow_one_is_rerun(
    db: SQLiteDatabase,
) -> None:
    import threading

    main = threading.get_ident()
    await db.run_write(lambda conn: conn.execute("INSERT INTO items VALUES ('x')"))
    attempt = Attempt(last=False)
    token = CURRENT_ATTEMPT.set(attempt)
    try:
        await db.read_once(lambda conn: None)  # opens a reader connection (on its thread)
        assert await db.read_once(lambda conn: threading.get_ident()) == main
        rows = await db.read_once(lambda conn: conn.execute("SELECT name FROM items").fetchall())
        assert rows == [("x",)]
        with pytest.raises(TransactionConflict):
            await db.read_once(lambda conn: conn.execute(SLOW_QUERY).fetchone())
        assert attempt.careful
        # The rerun reads on the thread (a slow read completes there: the test above).
        CURRENT_ATTEMPT.set(Attempt(last=False, careful=True))
        assert await db.read_once(lambda conn: threading.get_ident()) != main
    finally:
        CURRENT_ATTEMPT.reset(token)


async def test_a_connection_whose_read_was_interrupted_is_replaced(db: SQLiteDatabase) -> None:
    # Interrupted while its rows were fetched, a statement stays "in use" in Python 3.11's
    # statement cache: the connection is replaced rather than preparing that SQL again
    # at every later run.
    import threading

    counting = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
        " SELECT i FROM n"
    )
    token = CURRENT_ATTEMPT.set(Attempt(last=False))
    try:
        await db.read_once(lambda conn: None)  # opens a reader connection (on its thread)
        worker = db._connections().idle_reader()
        assert worker is not None
        first = worker._connection
        with pytest.raises(TransactionConflict):
            await db.read_once(lambda conn: conn.execute(counting, (10_000_000,)).fetchall())
        CURRENT_ATTEMPT.set(Attempt(last=False))
        rows = await db.read_once(lambda conn: conn.execute(counting, (3,)).fetchall())
        assert rows == [(1,), (2,), (3,)]
        assert worker._connection is not None and worker._connection is not first
        assert await db.read_once(lambda conn: threading.get_ident()) == threading.get_ident()
    finally:
        CURRENT_ATTEMPT.reset(token)


async def test_a_single_read_never_joins_a_snapshot_left_open(db: SQLiteDatabase) -> None:
    token = CURRENT_ATTEMPT.set(Attempt(last=False))
    try:
        await db.read_once(lambda conn: None)  # opens a reader connection (on its thread)
        # What a read transaction leaves when its end is cancelled: its snapshot still open
        # on an idle connection, and the connection still marked as its own.
        worker = db._connections().idle_reader()
        assert worker is not None and worker._connection is not None
        worker._connection.execute("BEGIN")
        worker._connection.execute("SELECT name FROM items").fetchall()
        worker.owner = object()  # type: ignore[assignment]
        await db.run_write(lambda conn: conn.execute("INSERT INTO items VALUES ('later')"))
        rows = await db.read_once(lambda conn: conn.execute("SELECT name FROM items").fetchall())
        assert rows == [("later",)]
    finally:
        CURRENT_ATTEMPT.reset(token)


async def test_heavy_writes_run_on_the_thread(db: SQLiteDatabase) -> None:
    import threading

    main = threading.get_ident()
    async with db.transaction(write=True) as tx:
        await tx.run(lambda conn: conn.execute("INSERT INTO items VALUES ('x')"))
        light = await tx.run(lambda conn: threading.get_ident())
        heavy = await tx.run(lambda conn: threading.get_ident(), heavy=True)
    assert light == main
    assert heavy != main


async def test_a_failed_commit_fails_every_member(
    db: SQLiteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_commit(conn: sqlite3.Connection) -> None:
        conn.execute("ROLLBACK")
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(database_module, "_commit", failing_commit)
    results = await asyncio.gather(*(insert(db, f"n{i}") for i in range(5)), return_exceptions=True)
    assert all(isinstance(result, BackendError) for result in results), results
    assert committed_names(db.path) == set()


async def test_a_joined_block_without_savepoint_costs_no_statement(db: SQLiteDatabase) -> None:
    statements: list[str] = []
    await db.run_write(lambda conn: conn.set_trace_callback(statements.append))
    async with db.transaction(write=True) as outer:
        await outer.run(lambda conn: conn.execute("INSERT INTO items VALUES ('a')"))
        async with db.transaction(write=True, savepoint=False) as joined:
            assert joined is outer
            await joined.run(lambda conn: conn.execute("INSERT INTO items VALUES ('b')"))
        async with db.transaction(write=True) as nested:
            await nested.run(lambda conn: conn.execute("INSERT INTO items VALUES ('c')"))
    savepoints = [s for s in statements if s.startswith("SAVEPOINT")]
    # The group's member savepoint, and the nested block's; none for the joined block.
    assert len(savepoints) == 2, statements
    assert committed_names(db.path) == {"a", "b", "c"}
