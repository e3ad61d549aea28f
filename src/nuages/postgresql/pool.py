"""A pool of asyncpg connections: what Nuages needs of asyncpg's own pool, at a fraction of
its cost per use.

asyncpg's pool hands out a proxy of each connection and runs several coroutines per
acquire and release (its reset, its inactivity timer): 24 µs of CPU for an acquire and a
release on the reference machine, about a tenth of what the server spends on a record
``GET``. Here an idle connection is handed out at once, as itself, and a release is a plain
call.

- At most `size` connections are open; they are opened on demand (none at start, so the
  server starts while the database is down), and one left idle for `idle_lifetime` seconds
  is closed.
- The most recently released connection is handed out first; a request waiting for a
  connection gets the next one released, in order of arrival, or fails after its timeout.
- A connection is released as it is, with no reset: Nuages sets no session state on pooled
  connections (no ``SET``, ``LISTEN``, cursor or session advisory lock; the automatic
  index builder has a connection of its own). One that is closed, or still in a
  transaction, is closed and forgotten; the next acquire opens a new one. Code that gives
  back a connection whose state it does not know (a statement cancelled midway)
  terminates it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]

Connect = Callable[[], Awaitable[Any]]


class PoolClosed(asyncpg.InterfaceError):  # type: ignore[misc]
    """The pool is closed: no connection is handed out any more."""


class ConnectionPool:
    """At most `size` connections opened by `connect` (module docs)."""

    def __init__(self, connect: Connect, *, size: int, idle_lifetime: float = 60.0) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self._connect = connect
        self.size = size
        self.idle_lifetime = idle_lifetime
        self._idle: deque[tuple[Any, float]] = deque()  # (connection, released at), oldest first
        self._opened = 0  # connections open or being opened, idle or not
        # Acquirers waiting, first come first served: each is given a connection, or None
        # (then it may open one: a place was freed).
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._closed = False
        self._expiry: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def opened(self) -> int:
        """Connections open (or being opened), idle or in use."""
        return self._opened

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def acquire(self, timeout: float) -> Any:
        """A connection for the caller alone until :meth:`release`; waits at most `timeout`
        seconds for one (:class:`asyncio.TimeoutError`)."""
        if self._closed:
            raise PoolClosed("the connection pool is closed")
        while self._idle:
            conn = self._idle.pop()[0]
            if not conn.is_closed():
                return conn
            self._forget(conn)
        if self._opened < self.size and not self._waiters:
            self._opened += 1
            return await self._open(timeout)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                conn = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                # Given a connection (or a place) just as it stopped waiting: pass it on.
                given = waiter.result()
                if given is None:
                    self._opened -= 1
                    self._wake()
                else:
                    self.release(given)
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise
        if conn is None:  # a place: open a connection in it
            return await self._open(timeout)
        return conn

    async def _open(self, timeout: float) -> Any:
        """Open a connection in a place already counted in `_opened`."""
        try:
            async with asyncio.timeout(timeout):
                conn = await self._connect()
        except BaseException:
            self._opened -= 1
            self._wake()
            raise
        if self._closed:  # closed while it was being opened
            self._forget(conn)
            raise PoolClosed("the connection pool is closed")
        return conn

    def release(self, conn: Any) -> None:
        """Give `conn` back: to the first waiter, or to the idle connections. A connection
        that is closed or still in a transaction is closed and forgotten."""
        if self._closed or conn.is_closed() or conn.is_in_transaction():
            self._forget(conn)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append((conn, time.monotonic()))
        if self._expiry is None:
            self._expiry = asyncio.get_running_loop().call_later(self.idle_lifetime, self._expire)

    def _forget(self, conn: Any) -> None:
        """Close `conn` and free its place (a waiter may open a new one): every connection
        leaves the pool through here, but at :meth:`terminate`."""
        self._opened -= 1
        self._close_later(conn)
        self._wake()

    def _wake(self) -> None:
        """Give a freed place to the first waiter, if any."""
        while self._waiters and self._opened < self.size:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._opened += 1
                waiter.set_result(None)
                return

    def _expire(self) -> None:
        """Close the connections idle for `idle_lifetime` seconds (the oldest are first)."""
        self._expiry = None
        limit = time.monotonic() - self.idle_lifetime
        while self._idle and self._idle[0][1] <= limit:
            self._forget(self._idle.popleft()[0])
        if self._idle:
            delay = self._idle[0][1] + self.idle_lifetime - time.monotonic()
            self._expiry = asyncio.get_running_loop().call_later(max(delay, 0.0), self._expire)

    def _close_later(self, conn: Any) -> None:
        if conn.is_closed():
            conn.terminate()  # frees what a lost connection still holds
            return
        task = asyncio.get_running_loop().create_task(self._close(conn))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, conn: Any) -> None:
        try:
            await conn.close(timeout=5.0)
        except BaseException:
            conn.terminate()

    async def close(self) -> None:
        """Close the idle connections; those in use are closed when released. Waiters
        fail with :class:`PoolClosed`."""
        self._closed = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolClosed("the connection pool is closed"))
        while self._idle:
            self._forget(self._idle.popleft()[0])
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def terminate(self) -> None:
        """Close every connection known to the pool at once, without a word to the server."""
        self._closed = True
        for task in list(self._closing):
            task.cancel()
        idle = [conn for conn, _ in self._idle]
        self._idle.clear()
        self._opened -= len(idle)
        for conn in idle:
            conn.terminate()
