"""Read statements outside any transaction shared between requests (database.py,
``_Statements``), on a real PostgreSQL.

A statement with a side effect tells whether it ran once or twice: ``nextval`` answers
each run with a new number, so two requests that got the same number shared one run.
``pg_sleep`` keeps the first one unanswered while the second comes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from tests import services

from nuages.core.errors import CURRENT_ATTEMPT, Attempt, BackendError
from nuages.postgresql import PostgreSQLDatabase

SLOW = "SELECT nextval('shared_reads'), pg_sleep($1::float8)"


@pytest.fixture
async def db() -> AsyncIterator[PostgreSQLDatabase]:
    services.require("postgresql")
    url = await services.create_database()
    await services.empty_database(url)
    db = PostgreSQLDatabase(url, pool_size=4)
    await db.migrate()
    await db.run_write(lambda tx: tx.execute("CREATE SEQUENCE IF NOT EXISTS shared_reads"))
    yield db
    await db.run_write(lambda tx: tx.execute("DROP SEQUENCE IF EXISTS shared_reads"))
    await db.aclose()


async def read(db: PostgreSQLDatabase, attempt: Attempt | None, sleep: float = 0.0) -> int:
    """`SLOW` in a request's context (`attempt`), outside any transaction."""
    token = CURRENT_ATTEMPT.set(attempt)
    try:
        rows = await db.fetch_once(SLOW, sleep)
    finally:
        CURRENT_ATTEMPT.reset(token)
    value: int = rows[0][0]
    return value


async def test_requests_that_came_before_a_statement_was_sent_share_its_answer(
    db: PostgreSQLDatabase,
) -> None:
    first, second, third = (Attempt(last=False) for _ in range(3))
    answers = await asyncio.gather(
        read(db, first, 0.2), read(db, second, 0.2), read(db, third, 0.2)
    )
    assert len(set(answers)) == 1  # one run


async def test_a_request_that_came_after_the_statement_was_sent_sends_its_own(
    db: PostgreSQLDatabase,
) -> None:
    early = Attempt(last=False)
    sent = asyncio.create_task(read(db, early, 0.3))
    await asyncio.sleep(0.1)  # sent, not answered
    late = Attempt(last=False)  # arrived after
    assert await read(db, late, 0.3) != await sent


async def test_after_its_own_commit_a_request_does_not_share_an_older_statement(
    db: PostgreSQLDatabase,
) -> None:
    mine = Attempt(last=False)
    other = asyncio.create_task(read(db, Attempt(last=False), 0.4))  # sent after mine came
    await asyncio.sleep(0.1)
    started = mine.since
    token = CURRENT_ATTEMPT.set(mine)
    try:
        await db.run_write(lambda tx: tx.execute("SELECT nextval('shared_reads')"))
    finally:
        CURRENT_ATTEMPT.reset(token)
    assert mine.since > started  # moved by the commit
    assert not other.done()
    assert await read(db, mine, 0.4) != await other


async def test_a_statement_without_a_request_is_never_shared(db: PostgreSQLDatabase) -> None:
    answers = await asyncio.gather(read(db, None, 0.1), read(db, None, 0.1))
    assert answers[0] != answers[1]


async def test_when_the_sender_is_cancelled_the_others_send_it_again(
    db: PostgreSQLDatabase,
) -> None:
    first, second = Attempt(last=False), Attempt(last=False)
    sender = asyncio.create_task(read(db, first, 0.5))
    await asyncio.sleep(0.1)
    sharer = asyncio.create_task(read(db, second, 0.5))
    await asyncio.sleep(0.1)
    sender.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sender
    assert isinstance(await sharer, int)  # answered: not cancelled with the sender


async def test_a_cancelled_sharer_does_not_cancel_the_statement(db: PostgreSQLDatabase) -> None:
    first, second = Attempt(last=False), Attempt(last=False)
    sender = asyncio.create_task(read(db, first, 0.3))
    sharer = asyncio.create_task(read(db, second, 0.3))
    await asyncio.sleep(0.1)
    sharer.cancel()
    assert isinstance(await sender, int)
    with pytest.raises(asyncio.CancelledError):
        await sharer


async def test_an_error_reaches_every_request_that_shared_the_statement(
    db: PostgreSQLDatabase,
) -> None:
    failing = "SELECT 1 / (0 * nextval('shared_reads'))::int, pg_sleep($1::float8)"

    async def divide(attempt: Attempt) -> BaseException:
        token = CURRENT_ATTEMPT.set(attempt)
        try:
            await db.fetch_once(failing, 0.2)
        except BackendError as exc:
            return exc
        finally:
            CURRENT_ATTEMPT.reset(token)
        raise AssertionError("no error")

    errors = await asyncio.gather(divide(Attempt(last=False)), divide(Attempt(last=False)))
    assert all(isinstance(error, BackendError) for error in errors)
    assert not db._shared  # nothing left behind
