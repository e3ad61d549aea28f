"""The connection pool (nuages.postgresql.pool), on a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from tests import services

from nuages.postgresql.pool import ConnectionPool, PoolClosed

NAME = f"nuages_pool_test_{os.getpid()}"


def _pool(size: int, idle_lifetime: float = 60.0, url: str | None = None) -> ConnectionPool:
    connect = functools.partial(
        asyncpg.connect, url or services.ADMIN_URL, server_settings={"application_name": NAME}
    )
    return ConnectionPool(connect, size=size, idle_lifetime=idle_lifetime)


@pytest.fixture
async def admin() -> AsyncIterator[Any]:
    services.require("postgresql")
    conn = await asyncpg.connect(services.ADMIN_URL)
    try:
        yield conn
    finally:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            NAME,
        )
        await conn.close()


async def _backends(admin: Any) -> int:
    """The pool's connections the server has."""
    count: int = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", NAME
    )
    return count


async def _eventually(check: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "not reached in time"
        await asyncio.sleep(0.02)


async def test_connections_open_on_demand_and_are_reused(admin: Any) -> None:
    pool = _pool(3)
    assert pool.opened == 0 and await _backends(admin) == 0  # nothing opened before use
    first = await pool.acquire(5)
    second = await pool.acquire(5)
    assert first is not second and pool.opened == 2 and await _backends(admin) == 2
    pool.release(first)
    pool.release(second)
    assert pool.idle == 2
    # The connection released last is given first; no new one is opened.
    assert await pool.acquire(5) is second
    assert await pool.acquire(5) is first
    assert pool.opened == 2 and await _backends(admin) == 2
    pool.release(first)
    pool.release(second)
    await pool.close()
    await _eventually(lambda: _count_is(admin, 0))


async def _taken_and_awaited(pool: ConnectionPool) -> tuple[Any, asyncio.Task[Any]]:
    """The connection of a pool of one, and a task waiting for it."""
    conn = await pool.acquire(5)
    waiting = asyncio.create_task(pool.acquire(5))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    return conn, waiting


async def _count_is(admin: Any, count: int) -> bool:
    return await _backends(admin) == count


async def test_past_its_size_an_acquire_waits_in_order_of_arrival(admin: Any) -> None:
    pool = _pool(1)
    conn = await pool.acquire(5)
    order: list[str] = []

    async def wait(name: str) -> Any:
        got = await pool.acquire(5)
        order.append(name)
        return got

    first = asyncio.create_task(wait("first"))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(wait("second"))
    await asyncio.sleep(0.05)
    assert not first.done() and not second.done() and pool.opened == 1
    pool.release(conn)
    assert await first is conn
    assert not second.done()
    pool.release(conn)
    assert await second is conn
    assert order == ["first", "second"] and await _backends(admin) == 1
    pool.release(conn)
    await pool.close()


async def test_an_acquire_gives_up_after_its_timeout(admin: Any) -> None:
    pool = _pool(1)
    conn = await pool.acquire(5)
    with pytest.raises(TimeoutError):
        await pool.acquire(0.05)
    # The one that gave up is not given the connection when it comes back.
    pool.release(conn)
    assert pool.idle == 1
    assert await pool.acquire(5) is conn
    pool.release(conn)
    await pool.close()


async def test_a_cancelled_acquire_does_not_keep_a_connection(admin: Any) -> None:
    pool = _pool(1)
    conn, waiting = await _taken_and_awaited(pool)
    pool.release(conn)  # given to the waiter...
    waiting.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert pool.idle == 1 and pool.opened == 1  # passed on, not lost
    assert await pool.acquire(0.5) is conn
    pool.release(conn)
    await pool.close()


async def test_a_lost_connection_frees_its_place(admin: Any) -> None:
    pool = _pool(1)
    conn, waiting = await _taken_and_awaited(pool)
    pid = conn.get_server_pid()
    await admin.execute("SELECT pg_terminate_backend($1)", pid)
    await _eventually(lambda: _closed(conn))
    pool.release(conn)  # closed: forgotten, and the waiter opens a new one
    fresh = await waiting
    assert fresh is not conn and fresh.get_server_pid() != pid
    assert await fresh.fetchval("SELECT 1") == 1 and pool.opened == 1
    pool.release(fresh)
    await pool.close()


async def test_an_idle_connection_lost_meanwhile_is_not_given(admin: Any) -> None:
    pool = _pool(2)
    conn = await pool.acquire(5)
    pid = conn.get_server_pid()
    pool.release(conn)
    await admin.execute("SELECT pg_terminate_backend($1)", pid)
    await _eventually(lambda: _closed(conn))
    fresh = await pool.acquire(5)
    assert fresh is not conn and await fresh.fetchval("SELECT 1") == 1 and pool.opened == 1
    pool.release(fresh)
    await pool.close()


async def _closed(conn: Any) -> bool:
    return bool(conn.is_closed())


async def test_a_connection_left_in_a_transaction_is_closed_not_reused(admin: Any) -> None:
    pool = _pool(1)
    conn = await pool.acquire(5)
    await conn.execute("BEGIN")
    await conn.execute("CREATE TEMPORARY TABLE left_open (n int)")
    pool.release(conn)
    assert pool.idle == 0 and pool.opened == 0
    fresh = await pool.acquire(5)
    assert fresh is not conn and not fresh.is_in_transaction()
    assert await fresh.fetchval("SELECT to_regclass('pg_temp.left_open')") is None
    pool.release(fresh)
    await _eventually(lambda: _closed(conn))
    await pool.close()


async def test_idle_connections_are_closed_after_their_lifetime(admin: Any) -> None:
    pool = _pool(3, idle_lifetime=0.2)
    conns = [await pool.acquire(5) for _ in range(3)]
    for conn in conns[:2]:
        pool.release(conn)
    assert await _backends(admin) == 3
    await _eventually(lambda: _count_is(admin, 1))  # the one in use stays
    assert pool.idle == 0 and pool.opened == 1
    assert await conns[2].fetchval("SELECT 1") == 1
    pool.release(conns[2])
    await pool.close()


async def test_a_connection_that_cannot_open_frees_its_place(admin: Any) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pool = _pool(1, url=f"postgresql://postgres@127.0.0.1:{port}/postgres")
    for _ in range(2):  # its place is free again: the second attempt fails the same way
        with pytest.raises(OSError):
            await pool.acquire(5)
    assert pool.opened == 0
    await pool.close()


async def test_closing_fails_the_waiters_and_closes_every_connection(admin: Any) -> None:
    pool = _pool(1)
    conn, waiting = await _taken_and_awaited(pool)
    await pool.close()
    with pytest.raises(PoolClosed):
        await waiting
    with pytest.raises(PoolClosed):
        await pool.acquire(5)
    assert await conn.fetchval("SELECT 1") == 1  # in use: closed once released
    pool.release(conn)
    await _eventually(lambda: _count_is(admin, 0))
