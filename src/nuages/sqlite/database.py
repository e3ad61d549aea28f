"""One SQLite file shared by the SQLite storage, permission and cache backends.

Connections
    One *writer* connection runs every write transaction of the process, one at a time (an
    :class:`asyncio.Lock`). A small pool of *reader* connections serves read transactions
    concurrently. The file is in WAL mode (a reader sees a consistent snapshot and never
    blocks the writer) with ``synchronous=FULL`` (a committed write is on disk).

Threads and inline statements
    Each connection has a thread of its own, where statements that may wait or take long
    run: ``BEGIN IMMEDIATE`` (it waits for other processes' locks, up to `busy_timeout`),
    ``COMMIT`` (it waits for the disk), statements a caller marks ``heavy`` (bulk deletes,
    index builds). Other statements run on the event loop ("inline"), which saves two thread
    switches each — most of the cost of a small request. A write runs inline without a time
    limit (interrupting one could undo the whole transaction); a read runs inline only
    while its request can be rerun (:data:`~nuages.core.errors.CURRENT_ATTEMPT`): SQLite
    interrupts it after :data:`INLINE_BUDGET`, and the request is rerun with its reads on
    the thread, so a slow listing never holds the event loop for long.

Group commit
    A commit costs a flush to disk. Write transactions that arrive while others run share
    one SQLite transaction: each in a savepoint of its own, which its failure rolls back
    alone, and one ``COMMIT`` for the group, made by a task queued behind the transactions
    already waiting (:class:`_WriteGroup`). A write transaction ends — its ``async with``
    block returns — only once its group is on disk. Several processes on one file
    serialise through ``BEGIN IMMEDIATE``: each waits up to `busy_timeout` seconds.

WAL
    SQLite's automatic checkpoint copies the WAL into the database after commits, but starts
    the WAL again only when a write transaction begins with all of it copied: writes that
    never pause (two processes taking turns, a stream of batches) left it growing by every
    page written. A commit that finds the WAL file past :data:`WAL_LIMIT` empties it
    (``wal_checkpoint(TRUNCATE)``, :func:`_truncate_wal`), with the write lock, once its
    members are answered; when the file is not free within :data:`WAL_TRUNCATE_WAIT` (a
    reader of an older snapshot), a later commit tries again.

Lifecycle
    The constructor opens nothing: threads and connections start on first use, and
    :meth:`SQLiteDatabase.aclose` closes them (a later use opens them again, so an
    application may run its lifespan more than once). A new file needs
    :meth:`~SQLiteDatabase.migrate` (``nuages migrate``); a server calls
    :meth:`~SQLiteDatabase.check_schema` when it starts.

Transactions and joining
    :meth:`SQLiteDatabase.transaction` keeps the open transaction in a context variable.
    A transaction opened in the same context (the same asyncio task, or a task created
    from it) while one is open *joins* it: same connection, one commit or rollback. So
    when the storage and permission backends share a database, a request's object write
    and ACL write are atomic. A nested write transaction is a savepoint: when its block
    raises, its own changes are undone and the error propagates; only the outermost block
    commits. A write transaction cannot be nested in a read transaction (that raises
    :class:`BackendError`): open the outermost transaction with ``write=True``. One
    transaction must not be used by several tasks at the same time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import itertools
import json
import math
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import resources
from typing import Any, Final, TypeVar

import orjson

from nuages.core import filtering
from nuages.core.commits import settle
from nuages.core.contexts import Entered, Given
from nuages.core.errors import (
    CURRENT_ATTEMPT,
    Attempt,
    BackendError,
    Error,
    TransactionConflict,
    careful,
)
from nuages.core.objects import MISSING, Comparison, Filter

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], T]

CURRENT_SCHEMA_VERSION: Final = 2
"""Schema version this Nuages writes and expects (``schema.sql`` + ``migrations/``)."""

# The `->` operator (3.38) gives the exact JSON text of a value; see nuages_json_text.
MIN_SQLITE_VERSION: Final = (3, 38, 0)


class _WriteGroup:
    """One SQLite write transaction shared by the write transactions of several requests.

    Committing costs a disk flush (``synchronous=FULL``), about as long as a hundred small
    writes here. So write transactions that come while others are running join one SQLite
    transaction (*group commit*): each runs inside a savepoint of its own, which its failure
    rolls back alone, and one ``COMMIT`` makes all of them durable before any of them is
    answered. A transaction is done only when its group is committed.

    The commit is made by a task that queues for the write lock behind the transactions
    already waiting (:class:`asyncio.Lock` is first come, first served): they join this
    group; later ones form the next group.
    """

    def __init__(self) -> None:
        self.begun = False  # BEGIN IMMEDIATE ran
        self.broken = False  # SQLite rolled the transaction back after an error
        self.members: list[asyncio.Future[None]] = []
        self.committer: asyncio.Task[None] | None = None
        self.running: str | None = None  # the savepoint of the member running statements


_savepoint_numbers = itertools.count()


class SQLiteTransaction:
    """A transaction on one connection of a :class:`SQLiteDatabase`.

    Statements run through :meth:`run`, which calls a function with the connection. The
    transaction begins lazily with the first statement. A write transaction is a savepoint
    of its :class:`_WriteGroup`'s SQLite transaction.
    """

    def __init__(
        self, worker: _Worker, *, group: _WriteGroup | None = None, single: bool = False
    ) -> None:
        self.write = group is not None
        self._single = single  # a read of one statement: its own snapshot, no BEGIN
        self.finished = False
        self._worker = worker
        self._group = group
        self._name = f"nuages_{next(_savepoint_numbers)}"
        # Savepoints of nested write blocks not yet opened: they are opened lazily, before
        # the next statement, so that a nested block without statements costs nothing.
        self._pending: list[str] = []
        self._begun = False
        self._active: list[str] = []

    async def run(self, job: Job[T], *, heavy: bool = False) -> T:
        """Run ``job(connection)`` inside this transaction (module docs, "Threads and inline
        statements"): on the event loop when that is safe, otherwise on the connection's
        own thread:

        - a write runs inline once its group has begun (BEGIN IMMEDIATE may wait for
          another process, so it runs on the thread), unless the caller says it is `heavy`
          (a bulk statement that would stall the event loop);
        - a read runs inline while a rerun of the request can absorb a statement that takes
          too long: past :data:`INLINE_BUDGET` SQLite interrupts it, and the request is rerun
          with its reads on the thread (:data:`~nuages.core.errors.CURRENT_ATTEMPT`).
        """
        if self.finished:
            raise BackendError("this SQLite transaction is already finished")
        call = functools.partial(self._run, job)
        if self._group is not None:
            if self._group.begun and not heavy:
                try:
                    return self._worker.run_inline(call, budget=None)
                except _Busy:
                    pass
            return await self._worker.run(call)
        attempt = CURRENT_ATTEMPT.get()
        if attempt is not None and not careful(attempt) and not heavy:
            # When a job of this connection is queued on its thread: go after it.
            try:
                return self._worker.run_read_inline(call, attempt)
            except _Busy:
                pass
        return await self._worker.run(call)

    async def refresh_snapshot(self) -> None:
        """Let the next statement of a read transaction see the latest commits (no-op on
        a write transaction, which always sees them)."""
        if not self.write:
            await self._worker.run(self._end_snapshot)

    # -- with the connection (its thread, or inline) ---------------------------------------
    def _run(self, job: Job[T], conn: sqlite3.Connection) -> T:
        group = self._group
        if group is None:
            self._enter_read(conn)
        else:
            if group.running is not None and group.running != self._name:
                # The previous member was cancelled before it could end: its leftovers must
                # not become part of this one.
                _undo_savepoint(conn, group.running)
                group.running = None
            if not group.begun:
                _begin_immediate(conn)
                group.begun = True
            elif not conn.in_transaction:
                # SQLite rolls back by itself after some errors (disk full, I/O error):
                # carrying on would commit only the statements that follow.
                group.broken = True
                raise BackendError("the SQLite transaction was rolled back after an error")
            if not self._begun:
                conn.execute(f"SAVEPOINT {self._name}")
                self._begun = True
                group.running = self._name
        while self._pending:
            name = self._pending.pop(0)
            conn.execute(f"SAVEPOINT {name}")
            self._active.append(name)
        return job(conn)

    def _enter_read(self, conn: sqlite3.Connection) -> None:
        if self._worker.owner is not self:
            # The previous transaction on this connection was cancelled before it could
            # end: its leftovers must not become part of this one.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._worker.owner = self
        if not self._begun:
            if not self._single:
                conn.execute("BEGIN")
            self._begun = True
        elif not conn.in_transaction:
            raise BackendError("the SQLite transaction was rolled back after an error")

    def _end_snapshot(self, conn: sqlite3.Connection) -> None:
        if self._worker.owner is self and conn.in_transaction:
            conn.execute("ROLLBACK")
        self._begun = False

    def _finish(self, commit: bool, conn: sqlite3.Connection) -> None:
        group = self._group
        if group is None:
            if self._worker.owner is self:
                self._worker.owner = None
                if conn.in_transaction:
                    conn.execute("COMMIT" if commit else "ROLLBACK")
            return
        if not self._begun:
            return  # no statement ran
        if group.running != self._name:
            # A later member undid this one's statements as leftovers: never report them
            # committed (it cannot happen while members hold the write lock in turn).
            if commit:
                raise BackendError("the SQLite write transaction was undone before its end")
            return
        group.running = None
        if not conn.in_transaction:
            group.broken = True
            if commit:
                raise BackendError("the SQLite transaction was rolled back after an error")
            return
        if commit:
            conn.execute(f"RELEASE {self._name}")
        else:
            _undo_savepoint(conn, self._name)

    def _rollback_to(self, name: str, conn: sqlite3.Connection) -> None:
        if name in self._pending:
            self._pending.remove(name)
        elif name in self._active and conn.in_transaction:
            _undo_savepoint(conn, name)
            del self._active[self._active.index(name) :]

    # -- event loop -----------------------------------------------------------------
    async def finish(self, commit: bool) -> None:
        """End the transaction: a read ends its snapshot; a write releases its savepoint
        (or rolls it back); its group commits later (:meth:`SQLiteDatabase._outermost`)."""
        job = functools.partial(self._finish, commit)
        try:
            self._worker.run_inline(job, budget=None)
            return
        except _Busy:
            pass
        except Error:
            if commit:
                raise
            return  # rolling back: the error being handled stays the one reported
        if commit:
            await self._worker.run(job)
        else:
            await self._worker.cleanup(job)

    @property
    def wrote(self) -> bool:
        """Whether this write transaction ran statements (and so needs its group's commit)."""
        return self._begun and self._group is not None

    @asynccontextmanager
    async def _savepoint(self) -> AsyncIterator[None]:
        name = f"nuages_{next(_savepoint_numbers)}"
        self._pending.append(name)
        try:
            yield
        except BaseException:
            job = functools.partial(self._rollback_to, name)
            try:
                self._worker.run_inline(job, budget=None)
            except _Busy:
                await self._worker.cleanup(job)
            except Error:
                pass  # the error being handled stays the one reported
            raise
        # On success the savepoint stays: the final RELEASE (or an enclosing rollback)
        # ends it.
        if name in self._pending:
            self._pending.remove(name)


def _undo_savepoint(conn: sqlite3.Connection, name: str) -> None:
    if conn.in_transaction:
        conn.execute(f"ROLLBACK TO {name}")
        conn.execute(f"RELEASE {name}")


class _Interrupted(Exception):
    """An inline job ran past its budget: SQLite interrupted it."""


class _Busy(Exception):
    """An inline job could not run: a job of the same connection is queued on its thread."""


WAL_LIMIT: Final = 64 * 1024 * 1024
"""Size of the WAL file past which a commit truncates it (module docs, "WAL")."""
WAL_TRUNCATE_WAIT: Final = 0.1
"""Seconds a truncation of the WAL waits for the file to be free before giving up."""

# How long a job may hold the event loop (seconds), and how many SQLite virtual-machine
# steps run between two looks at the clock.
INLINE_BUDGET: Final = 0.002
_PROGRESS_STEPS: Final = 4000


class _Worker:
    """One connection and its own thread. Jobs submitted to the thread run in submission
    order; :meth:`run_inline` runs a job on the caller's thread when none is queued."""

    def __init__(self, name: str, connect: Callable[[], sqlite3.Connection]) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._connect = connect
        self._connection: sqlite3.Connection | None = None
        # Jobs given to the thread, those of them that ended there, and those cancelled
        # before they started. The job of a cancelled caller that started runs on: only
        # the thread can tell when it is done. Each counter has one writer (the event
        # loop, the thread, the canceller: the event loop).
        self._submitted = 0
        self._ended = 0
        self._dropped = 0
        # The transaction that last ran statements here.
        self.owner: SQLiteTransaction | None = None
        # A statement was interrupted: the connection is replaced before its next job.
        self._replace = False
        # When an inline job must end (perf_counter); infinite outside run_inline. Each
        # connection's progress handler looks at it (installed once: setting a handler
        # around every job costs more than the job's binding).
        self._deadline = math.inf

    def _submit(self, job: Job[T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        try:
            started = self._executor.submit(self._call, job)
        except RuntimeError as exc:  # the executor was shut down by aclose()
            raise BackendError("the SQLite database is closed") from exc
        started.add_done_callback(self._drop_if_cancelled)
        self._submitted += 1
        return asyncio.wrap_future(started, loop=loop)

    def _drop_if_cancelled(self, future: concurrent.futures.Future[Any]) -> None:
        if future.cancelled():  # it never ran: cancelled before the thread took it
            self._dropped += 1

    def run_inline(self, job: Job[T], budget: float | None = INLINE_BUDGET) -> T:
        """Run `job` now, on this thread. SQLite interrupts it (:class:`_Interrupted`) when it
        runs longer than `budget` seconds; raises :class:`_Busy` when the thread has jobs
        queued (they must run first) or the connection is not open yet."""
        conn = self._connection
        queued = self._submitted != self._ended + self._dropped  # a job has not ended
        if conn is None or queued or self._replace:
            raise _Busy()
        if budget is not None:
            self._deadline = time.perf_counter() + budget
        try:
            return job(conn)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorname", None) == "SQLITE_INTERRUPT":
                # Python 3.11's sqlite3 keeps a statement interrupted while its rows were
                # fetched marked in use: every later run of the same SQL text on this
                # connection would prepare it again (0.1-0.4 ms each), for good.
                self._replace = True
                raise _Interrupted() from exc
            raise _backend_error(exc) from exc
        except sqlite3.Error as exc:
            raise _backend_error(exc) from exc
        finally:
            self._deadline = math.inf

    def _past_deadline(self) -> bool:
        """The progress handler of the connection: true interrupts its statement."""
        return time.perf_counter() > self._deadline

    def run_read_inline(self, job: Job[T], attempt: Attempt) -> T:
        """:meth:`run_inline` for a read of a request that can be rerun: when SQLite
        interrupts it, `attempt` becomes careful (its rerun reads on the thread) and
        :class:`TransactionConflict` reruns the request. Interrupting a read undoes
        nothing, but its snapshot may be gone."""
        try:
            return self.run_inline(job)
        except _Interrupted:
            attempt.careful = True
            raise TransactionConflict() from None

    async def run(self, job: Job[T]) -> T:
        return await self._submit(job)

    def release(self, owner: SQLiteTransaction) -> None:
        """`owner` is done with the connection and left no transaction open on it."""
        if self.owner is owner:
            self.owner = None

    async def cleanup(self, job: Job[None]) -> None:
        """Run `job` even if the caller is being cancelled; its own failure is dropped so
        that the error being handled stays the one reported (the next transaction on
        this connection rolls back whatever is left)."""
        with contextlib.suppress(Error):
            await asyncio.shield(self._submit(job))

    def _call(self, job: Job[T]) -> T:
        try:
            return self._call_job(job)
        finally:
            self._ended += 1

    def _call_job(self, job: Job[T]) -> T:
        try:
            conn = self._connection
            if self._replace and conn is not None and not conn.in_transaction:
                conn.close()
                self._connection = None
                self._replace = False
            if self._connection is None:
                conn = self._connect()
                conn.set_progress_handler(self._past_deadline, _PROGRESS_STEPS)
                self._connection = conn
            return job(self._connection)
        except sqlite3.Error as exc:
            raise _backend_error(exc) from exc

    async def close(self, *, optimize: bool = False) -> None:
        def close() -> None:
            if self._connection is None:
                return
            try:
                if optimize:
                    # Recommended before closing a connection that wrote: refreshes the
                    # planner's statistics where they matter, cheaply. Best effort, without
                    # waiting: another process may hold the lock it needs.
                    with contextlib.suppress(sqlite3.Error):
                        self._connection.execute("PRAGMA busy_timeout = 0")
                        self._connection.execute("PRAGMA optimize")
                self._connection.close()
            except sqlite3.Error as exc:
                raise BackendError(f"SQLite: {exc}") from exc
            finally:
                self._connection = None

        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, close)
        finally:
            self._executor.shutdown(wait=False)


def _begin_immediate(conn: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``, trying again every 50 to 500 microseconds while another process
    holds the write lock, for at most the busy timeout. Waits of up to 5 ms left the file
    idle between two processes' turns: with 2 workers, create and update p99 went from
    40-70 ms to 13-20 ms with the shorter waits, and throughput up by about a fifth."""
    _while_busy(
        lambda: conn.execute("BEGIN IMMEDIATE"),
        getattr(conn, "lock_timeout", 0.0),
        first_delay=0.00005,
        max_delay=0.0005,
    )


def _while_busy(
    statement: Callable[[], T], timeout: float, *, first_delay: float, max_delay: float
) -> T:
    """`statement`'s answer, trying it again while SQLite answers "database is locked"
    (:func:`_busy`), for at most `timeout` seconds; the wait between tries doubles from
    `first_delay` up to `max_delay`."""
    deadline = time.monotonic() + timeout
    delay = first_delay
    while True:
        try:
            return statement()
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
            if time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, max_delay)


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite answered "database is locked": ``SQLITE_BUSY`` or one of its
    extended codes (``SQLITE_BUSY_RECOVERY`` while another connection recovers the WAL,
    ``SQLITE_BUSY_SNAPSHOT``...)."""
    return str(getattr(exc, "sqlite_errorname", "")).startswith("SQLITE_BUSY")


def _wal_mode(conn: sqlite3.Connection, busy_timeout: float) -> str:
    """``PRAGMA journal_mode = WAL``, tried again every 5 ms for up to `busy_timeout`
    seconds while it answers "database is locked". Putting a new file in WAL mode needs it
    alone: when several processes open a new file at once, SQLite may refuse at once
    instead of waiting (a busy handler could deadlock there)."""
    (mode,) = _while_busy(
        lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone(),
        busy_timeout,
        first_delay=0.005,
        max_delay=0.005,
    )
    return str(mode)


class _WalInUse(sqlite3.OperationalError):
    """A checkpoint answered that it could not do all its work: busy, for :func:`_busy`."""

    sqlite_errorname = "SQLITE_BUSY"


def _truncate_wal(conn: sqlite3.Connection) -> bool:
    """``PRAGMA wal_checkpoint(TRUNCATE)``: copy every page of the WAL into the database,
    then empty the WAL. It needs the file to itself for a moment (no other writer, no
    reader of an older snapshot): tried again every 50 to 500 microseconds while it is
    not (:func:`_while_busy`), for at most :data:`WAL_TRUNCATE_WAIT`. Whether it was done."""

    def checkpoint() -> None:
        (busy, _, _) = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise _WalInUse("the WAL is in use")

    try:
        _while_busy(checkpoint, WAL_TRUNCATE_WAIT, first_delay=0.00005, max_delay=0.0005)
    except sqlite3.OperationalError as exc:
        if _busy(exc):
            return False
        raise _backend_error(exc) from exc
    return True


def _commit(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _backend_error(exc: sqlite3.Error) -> BackendError:
    code = getattr(exc, "sqlite_errorname", None)
    return BackendError(f"SQLite: {exc}" + (f" ({code})" if code else ""))


class _Connection(sqlite3.Connection):
    """A connection that knows how long BEGIN IMMEDIATE may wait (:func:`_begin_immediate`)."""

    lock_timeout = 0.0


def _connect(path: str, busy_timeout: float, *, writer: bool) -> _Connection:
    if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
        wanted = ".".join(map(str, MIN_SQLITE_VERSION))
        raise BackendError(f"Nuages needs SQLite {wanted} or newer, not {sqlite3.sqlite_version}")
    # isolation_level=None: the transaction is begun and ended explicitly (SQLiteTransaction);
    # `timeout` is SQLite's busy timeout, how long to wait for another process's lock.
    # check_same_thread=False: the connection's own thread and, for inline jobs, the event
    # loop's thread use it, one at a time (_Worker.run_inline).
    conn = sqlite3.connect(
        path,
        timeout=busy_timeout,
        isolation_level=None,
        check_same_thread=False,
        factory=_Connection,
    )
    try:
        if writer:
            mode = _wal_mode(conn, busy_timeout)
            if mode != "wal":
                raise BackendError(f"SQLite could not put {path} in WAL mode (it is in {mode!r})")
            conn.execute("PRAGMA synchronous = FULL")
            # BEGIN IMMEDIATE polls for the lock itself (_begin_immediate): SQLite's own
            # busy handler sleeps 1, 2, 5, 10... ms between tries, which left one process
            # waiting while another took the lock again and again.
            conn.execute("PRAGMA busy_timeout = 0")
            conn.lock_timeout = busy_timeout
        else:
            conn.execute("PRAGMA query_only = ON")
        for name, nargs, function in _SQL_FUNCTIONS:
            conn.create_function(name, nargs, function, deterministic=True)
    except BaseException:
        conn.close()
        raise
    return conn


class _Connections:
    """The open state of a :class:`SQLiteDatabase`: threads, connections and locks."""

    def __init__(self, path: str, readers: int, busy_timeout: float) -> None:
        self.writer = _Worker(
            "nuages-sqlite-writer", functools.partial(_connect, path, busy_timeout, writer=True)
        )
        self._wal = path + "-wal"
        self._wal_limit = WAL_LIMIT  # the WAL's size past which a commit truncates it
        self.write_lock = asyncio.Lock()
        self.group: _WriteGroup | None = None  # the group that write transactions join
        self._connect_reader = functools.partial(_connect, path, busy_timeout, writer=False)
        self._readers: list[_Worker] = []
        self._idle: list[_Worker] = []
        self._slots = asyncio.Semaphore(readers)
        self._writer_ready = False

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[_Worker]:
        async with self._slots:
            if not self._writer_ready:
                # The writer puts a new file in WAL mode before anybody reads it.
                await self.writer.run(lambda conn: None)
                self._writer_ready = True
            if self._idle:
                worker = self._idle.pop()
            else:
                name = f"nuages-sqlite-reader-{len(self._readers)}"
                worker = _Worker(name, self._connect_reader)
                self._readers.append(worker)
            try:
                yield worker
            finally:
                self._idle.append(worker)

    def idle_reader(self) -> _Worker | None:
        """An idle reader whose last transaction ended: a job may run on it inline
        (:meth:`_Worker.run_inline` says when it cannot), without taking it out of the
        pool, since nothing else runs meanwhile. None when there is none."""
        if not self._writer_ready or not self._idle:
            return None
        worker = self._idle[-1]
        return worker if worker.owner is None else None

    def joinable_group(self) -> _WriteGroup:
        """The group a write transaction starting now joins (call with the write lock)."""
        if self.group is None or self.group.broken:
            self.group = _WriteGroup()
        return self.group

    def join_commit(self, group: _WriteGroup) -> asyncio.Future[None]:
        """A future that the commit of `group` resolves."""
        done = asyncio.get_running_loop().create_future()
        group.members.append(done)
        self.ensure_committer(group)
        return done

    def ensure_committer(self, group: _WriteGroup) -> None:
        """Have a task commit `group` once the transactions already waiting have joined it."""
        if group.committer is None and (group.begun or group.members):
            group.committer = asyncio.get_running_loop().create_task(self._commit(group))

    async def _commit(self, group: _WriteGroup) -> None:
        # Queued behind the write transactions already waiting: they join this group first.
        async with self.write_lock:
            if self.group is group:
                self.group = None
            error: BaseException | None = None
            if group.broken:
                error = BackendError("the SQLite transaction was rolled back after an error")
            elif group.begun:
                try:
                    await self.writer.run(_commit)
                except BaseException as exc:
                    error = exc
            settle(group.members, error)
            if group.begun and error is None:
                await self._bound_wal()

    async def _bound_wal(self) -> None:
        """Truncate the WAL once it is past :data:`WAL_LIMIT` (module docs, "WAL"). Called
        with the write lock, after a commit, its members answered."""
        try:
            size = os.stat(self._wal).st_size
        except OSError:
            return
        if size <= self._wal_limit:
            return
        try:
            done = await self.writer.run(_truncate_wal)
        except Error:
            done = False
        # Not now (a long read, or the other processes' writes): after another quarter.
        self._wal_limit = WAL_LIMIT if done else size + WAL_LIMIT // 4

    async def close(self) -> None:
        if self.group is not None and self.group.committer is not None:
            await self.group.committer
        try:
            for worker in self._readers:
                await worker.close()
        finally:
            await self.writer.close(optimize=True)


class SQLiteDatabase:
    """A SQLite file with one writer connection and a pool of reader connections.

    See the module documentation for threads, lifecycle and transaction joining. `readers`
    is the number of read connections (and threads); `busy_timeout` is how many seconds a
    statement waits for a lock held by another process before failing with
    :class:`BackendError`.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, readers: int = 4, busy_timeout: float = 10.0
    ) -> None:
        if readers < 1:
            raise ValueError("readers must be at least 1")
        self.path = os.fspath(path)
        self.readers = readers
        self.busy_timeout = busy_timeout
        self._open: _Connections | None = None
        self._current: contextvars.ContextVar[SQLiteTransaction | None] = contextvars.ContextVar(
            "nuages_sqlite_transaction", default=None
        )

    def _connections(self) -> _Connections:
        if self._open is None:
            self._open = _Connections(self.path, self.readers, self.busy_timeout)
        return self._open

    def transaction(
        self, *, write: bool, savepoint: bool = True
    ) -> AbstractAsyncContextManager[SQLiteTransaction]:
        """Open a transaction, or join the one open in this context (module docs); a
        joined write block is a savepoint unless `savepoint` is false. (Which one is
        decided here, when called: ``async with`` enters it at once.)"""
        current = self._current.get()
        if current is None or current.finished:
            return self._outermost(write=write)
        if write and not current.write:
            raise BackendError(
                "cannot open a write transaction inside a read transaction of the same "
                "SQLite database: open the outermost transaction with write=True"
            )
        if write and savepoint:
            return Entered(current._savepoint(), lambda _: current)
        return Given(current)

    @asynccontextmanager
    async def _outermost(self, *, write: bool) -> AsyncIterator[SQLiteTransaction]:
        connections = self._connections()
        if not write:
            async with connections.reader() as worker, self._begin(worker) as tx:
                yield tx
            return
        committed = None
        async with connections.write_lock:
            group = connections.joinable_group()
            try:
                async with self._begin(connections.writer, group) as tx:
                    yield tx
                if tx.wrote:
                    committed = connections.join_commit(group)
            finally:
                # A group that began must end, even when none of its members wrote.
                connections.ensure_committer(group)
        if committed is not None:
            # Done once the group is on disk; a cancelled caller does not cancel that.
            await asyncio.shield(committed)

    @asynccontextmanager
    async def _begin(
        self, worker: _Worker, group: _WriteGroup | None = None
    ) -> AsyncIterator[SQLiteTransaction]:
        tx = SQLiteTransaction(worker, group=group)
        token = self._current.set(tx)
        try:
            try:
                yield tx
                await tx.finish(True)
            except BaseException:
                await tx.finish(False)
                raise
        finally:
            tx.finished = True
            self._current.reset(token)

    async def run_read(self, job: Job[T], *, heavy: bool = False) -> T:
        """Run ``job(connection)`` in the transaction open in this context, or in a short
        read transaction of its own (`heavy`: see :meth:`SQLiteTransaction.run`)."""
        async with self.transaction(write=False) as tx:
            return await tx.run(job, heavy=heavy)

    async def read_once(self, job: Job[T]) -> T:
        """Run ``job(connection)``, one read statement, outside any transaction (a statement
        is its own snapshot: no BEGIN, no COMMIT). It does not see the writes of a
        transaction open in this context: call it where none is."""
        connections = self._connections()
        attempt = CURRENT_ATTEMPT.get()
        if attempt is not None and not careful(attempt):
            # The common case, without the pool's semaphore and a transaction object: an
            # idle reader, used inline and given back before anything else can run.
            worker = connections.idle_reader()
            if worker is not None:
                try:
                    return worker.run_read_inline(job, attempt)
                except _Busy:
                    pass
        async with connections.reader() as worker:
            tx = SQLiteTransaction(worker, single=True)
            try:
                return await tx.run(job)
            finally:
                tx.finished = True
                worker.release(tx)

    async def run_write(self, job: Job[T], *, heavy: bool = False) -> T:
        """Run ``job(connection)`` in the write transaction open in this context, or else in
        a short write transaction of its own, which commits independently of a read
        transaction open in this context (lazy scope timestamps, cache entries)."""
        current = self._current.get()
        if current is not None and current.write and not current.finished:
            return await current.run(job, heavy=heavy)
        async with self._outermost(write=True) as tx:
            return await tx.run(job, heavy=heavy)

    async def migrate(self) -> None:
        """Create the schema in a new file or upgrade an older one; idempotent, and safe
        when several processes run it at once (it runs in one write transaction)."""
        await self.run_write(_migrate, heavy=True)

    async def schema_version(self) -> int | None:
        """The schema version recorded in the file, or ``None`` when it has none."""
        return await self.run_read(_read_schema_version)

    async def check_schema(self) -> None:
        """Raise :class:`BackendError` unless the file has exactly the current schema."""
        version = await self.schema_version()
        if version is None:
            raise BackendError(
                f"The SQLite database {self.path} has no Nuages schema: run `nuages migrate`."
            )
        if version < CURRENT_SCHEMA_VERSION:
            raise BackendError(
                f"The SQLite database {self.path} has schema version {version}, this Nuages "
                f"needs version {CURRENT_SCHEMA_VERSION}: run `nuages migrate`."
            )
        if version > CURRENT_SCHEMA_VERSION:
            raise BackendError(
                f"The SQLite database {self.path} has schema version {version}, which is newer "
                f"than this Nuages supports ({CURRENT_SCHEMA_VERSION}): upgrade Nuages."
            )

    async def ping(self) -> bool:
        """Whether the file answers a query."""
        try:
            await self.run_read(lambda conn: conn.execute("SELECT 1").fetchone())
        except Error:
            return False
        return True

    async def aclose(self) -> None:
        """Close connections and threads (idempotent); a later use opens them again."""
        connections, self._open = self._open, None
        if connections is not None:
            await connections.close()


# Up to this many strings, an ``IN`` list binds each one (:func:`strings_in`).
_FEW: Final = 8


def strings_in(values: Iterable[str]) -> tuple[int, list[Any]]:
    """How an ``IN`` list of strings is bound: its shape for :func:`strings_in_sql` (how
    many placeholders, or -1 for one JSON array) and the values for them.

    A few values (a user's principals) bind one by one: faster than json_each(), and few
    statement texts. json_each() would also cut U+0000 strings short."""
    values = list(values)
    if len(values) <= _FEW or any("\x00" in value for value in values):
        return len(values), values
    return -1, [orjson.dumps(values).decode()]


def strings_in_sql(column: str, shape: int, placeholders: Iterable[str] | None = None) -> str:
    """SQL for ``column IN (...)`` of :func:`strings_in`'s `shape`, with the given
    `placeholders` (default: ``?``)."""
    if shape < 0:
        (one,) = placeholders or ("?",)
        return f"{column} IN (SELECT value FROM json_each({one}))"
    if shape == 0:
        return "0"
    return f"{column} IN ({', '.join(placeholders or ['?'] * shape)})"


def principals_sql(shape: int, placeholders: Sequence[str]) -> str:
    """A FROM item of one column ``principal``: the strings bound as :func:`strings_in`'s
    `shape` (at least one), with these placeholders."""
    if shape < 0:
        (array,) = placeholders
        return f"(SELECT value AS principal FROM json_each({array}))"
    rows = ", ".join(f"({placeholder})" for placeholder in placeholders)
    return f"(SELECT column1 AS principal FROM (VALUES {rows}))"


def granted_sql(pairs: Sequence[tuple[str, str]], sources: Sequence[str]) -> str:
    """A condition true when ``access_control_entries`` grants one of `pairs` (the SQL of
    an object_uri and of a permission, placeholders) to a principal of one of `sources`
    (FROM items of a ``principal`` column: :func:`principals_sql`, a select of stored
    principals).

    One ``EXISTS`` per source and pair: the source is its outer loop, and each of its
    principals one probe of an index holding the whole entry. Written as a join of the
    pairs and the principals, SQLite builds a temporary table for whichever is the inner
    loop, on every run; written as a filter, it may walk the principal index instead,
    through every entry of a principal (every object a user created) when none grants.
    False without a source (the pairs' placeholders are still in the text, so that the
    same values bind); `pairs` must not be empty."""
    if not pairs:
        raise ValueError("a grant check needs at least one (object, permission) pair")
    if not sources:
        sources = ["(SELECT NULL AS principal WHERE 0)"]
    probes = [
        f"EXISTS (SELECT 1 FROM {source} AS p CROSS JOIN access_control_entries AS a"
        f" WHERE a.object_uri = {uri} AND a.permission = {permission}"
        " AND a.principal = p.principal)"
        for source in sources
        for uri, permission in pairs
    ]
    return probes[0] if len(probes) == 1 else f"({' OR '.join(probes)})"


class SQLParams:
    """Named parameters of one statement: values are bound, never spliced into the SQL."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def __call__(self, value: Any) -> str:
        """Bind `value` and return its placeholder."""
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f":{name}"

    def strings_in(self, column: str, values: Iterable[str]) -> str:
        """SQL for ``column IN values`` with any number of strings (:func:`strings_in`)."""
        shape, bound = strings_in(values)
        return strings_in_sql(column, shape, [self(value) for value in bound])


# -- schema -------------------------------------------------------------------------

_MIGRATION_NAME = re.compile(r"(\d{3})_\w+\.sql")


def _schema_script() -> str:
    return resources.files(__package__).joinpath("schema.sql").read_text("utf-8")


def _migration_scripts() -> dict[int, str]:
    """``migrations/NNN_what.sql`` upgrades a database from version NNN-1 to NNN."""
    folder = resources.files(__package__).joinpath("migrations")
    if not folder.is_dir():
        return {}
    scripts = {}
    for entry in folder.iterdir():
        if match := _MIGRATION_NAME.fullmatch(entry.name):
            scripts[int(match[1])] = entry.read_text("utf-8")
    return scripts


def _statements(script: str) -> Iterator[str]:
    # conn.executescript() would commit the migration's transaction first; split instead.
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            yield statement
            statement = ""


def _read_schema_version(conn: sqlite3.Connection) -> int | None:
    found = conn.execute(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'nuages_metadata'"
    ).fetchone()
    if found is None:
        return None
    row = conn.execute("SELECT value FROM nuages_metadata WHERE name = 'schema_version'").fetchone()
    return None if row is None else int(row[0])


def _migrate(conn: sqlite3.Connection) -> None:
    version = _read_schema_version(conn)
    if version == CURRENT_SCHEMA_VERSION:
        return
    if version is None:
        scripts = [_schema_script()]
    elif version > CURRENT_SCHEMA_VERSION:
        raise BackendError(
            f"The SQLite database has schema version {version}, which is newer than this "
            f"Nuages supports ({CURRENT_SCHEMA_VERSION}): upgrade Nuages."
        )
    else:
        available = _migration_scripts()
        wanted = range(version + 1, CURRENT_SCHEMA_VERSION + 1)
        if missing := [n for n in wanted if n not in available]:
            raise BackendError(f"No SQLite migration to schema version {missing[0]}")
        scripts = [available[n] for n in wanted]
    for script in scripts:
        for statement in _statements(script):
            conn.execute(statement)
    conn.execute(
        "INSERT INTO nuages_metadata (name, value) VALUES ('schema_version', ?) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (str(CURRENT_SCHEMA_VERSION),),
    )


# -- SQL functions ------------------------------------------------------------------
# Exact fallbacks for what SQLite's JSON functions cannot express: U+0000 inside strings,
# canonical order and equality of arrays and objects, Unicode case-insensitive `like`,
# keys SQLite's JSON paths cannot name, integers beyond 64 bits. They follow
# nuages.core.filtering, which defines the semantics. SQL NULL stands for a missing field.


def encode_parameter(value: Any) -> str:
    """JSON for a parameter of the functions below. The standard library's encoder,
    unlike orjson, keeps integers beyond 64 bits and NaN."""
    return json.dumps(value)


@functools.lru_cache(maxsize=256)
def _parameter(text: str) -> Any:
    return json.loads(text)


_like_regex = functools.lru_cache(maxsize=256)(filtering.like_regex)


def _json_or_missing(text: str | None) -> Any:
    return MISSING if text is None else orjson.loads(text)


def _json_text(token: str | None) -> str | None:
    # json_extract() stops at U+0000; decoding the JSON token (from `->`) does not.
    return None if token is None else str(orjson.loads(token))


def _canonical(text: str | None) -> bytes | None:
    return None if text is None else orjson.dumps(orjson.loads(text), option=orjson.OPT_SORT_KEYS)


def _json_equal(text: str | None, parameter: str) -> bool:
    return text is not None and filtering.json_equal(orjson.loads(text), _parameter(parameter))


def _compare(text: str | None, parameter: str) -> int:
    return filtering.compare_values(_json_or_missing(text), _parameter(parameter))


def _like(text: str | None, pattern: str) -> bool:
    return text is not None and _like_regex(pattern).fullmatch(text) is not None


def _contains(text: str | None, parameter: str, any_: int) -> bool:
    operator = Comparison.CONTAINS_ANY if any_ else Comparison.CONTAINS
    value = _json_or_missing(text)
    obj = {} if value is MISSING else {"v": value}
    return filtering.matches(obj, Filter("v", _parameter(parameter), operator))


def _field(data: str, field: str) -> str | None:
    value = filtering.get_field(orjson.loads(data), field)
    return None if value is MISSING else orjson.dumps(value).decode()


_SQL_FUNCTIONS: Final[tuple[tuple[str, int, Callable[..., Any]], ...]] = (
    ("nuages_json_text", 1, _json_text),
    ("nuages_canonical", 1, _canonical),
    ("nuages_json_equal", 2, _json_equal),
    ("nuages_compare", 2, _compare),
    ("nuages_like", 2, _like),
    ("nuages_contains", 3, _contains),
    ("nuages_field", 2, _field),
)
