"""One SQLite file shared by the SQLite storage, permission and cache backends.

Connections
    One *writer* connection, used only from its own thread, runs every write transaction
    of the process, one at a time (an :class:`asyncio.Lock`). Write transactions start with
    ``BEGIN IMMEDIATE``, so several server processes on the same file serialise as well:
    each waits up to `busy_timeout` seconds for the others. A small pool of *reader*
    connections, each on its own thread, serves read transactions concurrently. The file
    is in WAL mode (a reader sees a consistent snapshot and never blocks the writer) with
    ``synchronous=FULL`` (a committed write is on disk).

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
import contextlib
import contextvars
import functools
import itertools
import json
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Final, TypeVar

import orjson

from nuages.core import filtering
from nuages.core.errors import BackendError, Error
from nuages.core.objects import MISSING, Comparison, Filter

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], T]

CURRENT_SCHEMA_VERSION: Final = 1
"""Schema version this Nuages writes and expects (``schema.sql`` + ``migrations/``)."""

# The `->` operator (3.38) gives the exact JSON text of a value; see nuages_json_text.
MIN_SQLITE_VERSION: Final = (3, 38, 0)


class SQLiteTransaction:
    """A transaction on one connection of a :class:`SQLiteDatabase`.

    Statements run through :meth:`run`, which calls a function with the connection on the
    connection's own thread. The transaction begins lazily with the first statement.
    """

    def __init__(self, worker: _Worker, *, write: bool) -> None:
        self.write = write
        self.finished = False
        self._worker = worker
        self._savepoint_names = itertools.count()
        # Savepoints of nested write blocks not yet opened: they are opened lazily, before
        # the next statement, so that a nested block without statements costs nothing.
        self._pending: list[str] = []
        # Only touched on the worker thread.
        self._begun = False
        self._active: list[str] = []

    async def run(self, job: Job[T]) -> T:
        """Run ``job(connection)`` inside this transaction, on the connection's thread."""
        if self.finished:
            raise BackendError("this SQLite transaction is already finished")
        return await self._worker.run(functools.partial(self._run, job))

    async def refresh_snapshot(self) -> None:
        """Let the next statement of a read transaction see the latest commits (no-op on
        a write transaction, which always sees them)."""
        if not self.write:
            await self._worker.run(self._end_snapshot)

    # -- worker thread --------------------------------------------------------------
    def _run(self, job: Job[T], conn: sqlite3.Connection) -> T:
        if self._worker.owner is not self:
            # The previous transaction on this connection was cancelled before it could
            # end: its leftovers must not become part of this one.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._worker.owner = self
        if not self._begun:
            conn.execute("BEGIN IMMEDIATE" if self.write else "BEGIN")
            self._begun = True
        elif not conn.in_transaction:
            # SQLite rolls back by itself after some errors (disk full, I/O error):
            # carrying on would commit only the statements that follow.
            raise BackendError("the SQLite transaction was rolled back after an error")
        while self._pending:
            name = self._pending.pop(0)
            conn.execute(f"SAVEPOINT {name}")
            self._active.append(name)
        return job(conn)

    def _end_snapshot(self, conn: sqlite3.Connection) -> None:
        if self._worker.owner is self and conn.in_transaction:
            conn.execute("ROLLBACK")
        self._begun = False

    def _finish(self, commit: bool, conn: sqlite3.Connection) -> None:
        if self._worker.owner is not self:
            return  # no statement ran
        self._worker.owner = None
        if not conn.in_transaction:
            if commit and self._begun:
                raise BackendError("the SQLite transaction was rolled back after an error")
            return
        if not commit:
            conn.execute("ROLLBACK")
            return
        try:
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _rollback_to(self, name: str, conn: sqlite3.Connection) -> None:
        if name in self._pending:
            self._pending.remove(name)
        elif name in self._active and conn.in_transaction:
            conn.execute(f"ROLLBACK TO {name}")
            conn.execute(f"RELEASE {name}")
            del self._active[self._active.index(name) :]

    # -- event loop -----------------------------------------------------------------
    @asynccontextmanager
    async def _savepoint(self) -> AsyncIterator[None]:
        name = f"nuages_{next(self._savepoint_names)}"
        self._pending.append(name)
        try:
            yield
        except BaseException:
            await self._worker.cleanup(functools.partial(self._rollback_to, name))
            raise
        # On success the savepoint stays: the final COMMIT (or an enclosing rollback)
        # ends it, which saves a round trip to the thread.
        if name in self._pending:
            self._pending.remove(name)


class _Worker:
    """One connection used only from its own thread, so its jobs run in submission order."""

    def __init__(self, name: str, connect: Callable[[], sqlite3.Connection]) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._connect = connect
        self._connection: sqlite3.Connection | None = None
        # The transaction that last ran statements here; touched on the worker thread only.
        self.owner: SQLiteTransaction | None = None

    def _submit(self, job: Job[T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        try:
            return loop.run_in_executor(self._executor, self._call, job)
        except RuntimeError as exc:  # the executor was shut down by aclose()
            raise BackendError("the SQLite database is closed") from exc

    async def run(self, job: Job[T]) -> T:
        return await self._submit(job)

    async def cleanup(self, job: Job[None]) -> None:
        """Run `job` even if the caller is being cancelled; its own failure is dropped so
        that the error being handled stays the one reported (the next transaction on
        this connection rolls back whatever is left)."""
        with contextlib.suppress(Error):
            await asyncio.shield(self._submit(job))

    def _call(self, job: Job[T]) -> T:
        try:
            if self._connection is None:
                self._connection = self._connect()
            return job(self._connection)
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorname", None)
            raise BackendError(f"SQLite: {exc}" + (f" ({code})" if code else "")) from exc

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


def _connect(path: str, busy_timeout: float, *, writer: bool) -> sqlite3.Connection:
    if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
        wanted = ".".join(map(str, MIN_SQLITE_VERSION))
        raise BackendError(f"Nuages needs SQLite {wanted} or newer, not {sqlite3.sqlite_version}")
    # isolation_level=None: the transaction is begun and ended explicitly (SQLiteTransaction);
    # `timeout` is SQLite's busy timeout, how long to wait for another process's lock.
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        if writer:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode != "wal":
                raise BackendError(f"SQLite could not put {path} in WAL mode (it is in {mode!r})")
            conn.execute("PRAGMA synchronous = FULL")
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
        self.write_lock = asyncio.Lock()
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

    async def close(self) -> None:
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

    @asynccontextmanager
    async def transaction(self, *, write: bool) -> AsyncIterator[SQLiteTransaction]:
        """Open a transaction, or join the one open in this context (module docs)."""
        current = self._current.get()
        if current is None or current.finished:
            async with self._outermost(write=write) as tx:
                yield tx
        elif write and not current.write:
            raise BackendError(
                "cannot open a write transaction inside a read transaction of the same "
                "SQLite database: open the outermost transaction with write=True"
            )
        elif write:
            async with current._savepoint():
                yield current
        else:
            yield current

    @asynccontextmanager
    async def _outermost(self, *, write: bool) -> AsyncIterator[SQLiteTransaction]:
        connections = self._connections()
        if write:
            async with connections.write_lock, self._begin(connections.writer, write=True) as tx:
                yield tx
        else:
            async with connections.reader() as worker, self._begin(worker, write=False) as tx:
                yield tx

    @asynccontextmanager
    async def _begin(self, worker: _Worker, *, write: bool) -> AsyncIterator[SQLiteTransaction]:
        tx = SQLiteTransaction(worker, write=write)
        token = self._current.set(tx)
        try:
            try:
                yield tx
                await worker.run(functools.partial(tx._finish, True))
            except BaseException:
                await worker.cleanup(functools.partial(tx._finish, False))
                raise
        finally:
            tx.finished = True
            self._current.reset(token)

    async def run_read(self, job: Job[T]) -> T:
        """Run ``job(connection)`` in the transaction open in this context, or in a short
        read transaction of its own."""
        async with self.transaction(write=False) as tx:
            return await tx.run(job)

    async def run_write(self, job: Job[T]) -> T:
        """Run ``job(connection)`` in the write transaction open in this context, or else in
        a short write transaction of its own, which commits independently of a read
        transaction open in this context (lazy scope timestamps, cache entries)."""
        current = self._current.get()
        if current is not None and current.write and not current.finished:
            return await current.run(job)
        async with self._outermost(write=True) as tx:
            return await tx.run(job)

    async def migrate(self) -> None:
        """Create the schema in a new file or upgrade an older one; idempotent, and safe
        when several processes run it at once (it runs in one write transaction)."""
        await self.run_write(_migrate)

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
        """SQL for ``column IN values`` with any number of strings, in one parameter."""
        values = list(values)
        if any("\x00" in value for value in values):
            # json_each() would cut these at U+0000; bind them one by one instead.
            return f"{column} IN ({', '.join(map(self, values))})" if values else "0"
        return f"{column} IN (SELECT value FROM json_each({self(orjson.dumps(values).decode())}))"


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
