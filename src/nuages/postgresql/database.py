"""One PostgreSQL database shared by the PostgreSQL storage, permission and cache backends.

Connections
    A pool of asyncpg connections per process (:mod:`nuages.postgresql.pool`: at most
    `pool_size` connections, opened on demand, so a process starts even while the database
    is down; one idle for a minute is closed). Waiting for a connection and running
    one statement are both bounded by `timeout` seconds; past that, or when the database
    is unreachable or restarting, the operation raises :class:`BackendError` (a 503 with
    ``Retry-After``). A connection the server dropped is discarded by the pool and the next
    request opens a new one: recovery needs nothing but the database coming back.

Isolation
    Read transactions are ``REPEATABLE READ READ ONLY``: a listing, its count and the
    scope timestamp (the ETag) come from one snapshot. Write transactions are
    ``READ COMMITTED`` and lock what they write (see :mod:`nuages.storage.postgresql`
    for the scope lock that orders timestamps across processes); a write that finds that a
    concurrent transaction changed an object it had read raises
    :class:`~nuages.core.errors.TransactionConflict`, and the request is rerun.

Group commit
    A commit waits for PostgreSQL to flush its log to disk, and a write holds its scope's
    lock until then (:mod:`nuages.storage.postgresql`): one scope would take one write per
    flush. So the write requests of one scope in one process (the dispatcher names the
    scope in :data:`~nuages.core.errors.CURRENT_ATTEMPT`) share one transaction, in a
    *lane* per scope: they run one after the other on one connection, and one ``COMMIT``
    ends the group — made by a task queued behind the requests already waiting. A request
    is answered once its group is committed; at most :data:`MAX_GROUP` share a commit.
    Other writes (a batch, work outside a request) have a transaction of their own.

    A member's failure must undo its writes and nothing else that will commit. A
    ``SAVEPOINT`` before each member would do it, at the price of one round trip per
    member while the group holds its scope's lock; members rarely fail once they write
    (a failed precondition, a 403 or a conflict is found by reading). So a member starts
    without one, and when it fails having written (or after a statement PostgreSQL
    refused), the group rolls back to its latest savepoint, or entirely when it has none:
    the members answered since then did not fail, and are rerun
    (:class:`~nuages.core.errors.TransactionConflict`, as after a conflict). A careful or
    last attempt is never rerun for another's failure: it starts with a savepoint that
    its failure rolls back alone, and the member after it starts with one too. A member
    that fails having only read undoes nothing.

    Once the scope is locked, a member's create, update or delete is one statement whose
    answer is known in advance when all goes well (no live object had the key; the object
    was as read). Such a statement is *deferred*
    (:meth:`PostgreSQLTransaction.fetch_deferrable`): the member goes on as if it had been
    answered so, and the group's deferred statements are sent together, those of one SQL
    text in one pipelined round trip (asyncpg's ``fetchmany``), before the group's next
    statement (a member's read sees them) or its commit; an object read that none of them
    can change (its object keys and ACL URIs apart) does not wait for them. A deferred
    statement may name a wider form of itself (``wider``): when that is the SQL text of
    the others, all are sent in it. The storage's creates, updates and deletes are one
    statement, in a wider form for a create with its ACL: a group of writes costs its
    lock, one round trip and its ``COMMIT`` under the scope's lock, not a round trip per
    member. Should a deferred statement answer anything else (or fail), the group fails and
    all its members are rerun, the owners of the deferred statements carefully: a careful or
    last attempt never defers, and learns the answer from its statement. Only a group
    without a savepoint defers (a careful member's savepoint follows the deferred statements
    before it, sent first), and no statement is deferred in a nested savepoint. A write
    transaction of its own (a batch) defers its writes the same way, for itself: a batch of
    25 creates sends them in one round trip.

    A request joins its lane at its first write, not when its transaction opens: its
    checks (the object, its parent and the caller's grant, read in one statement with
    :meth:`PostgreSQLTransaction.fetch_early` on a connection of its own) and its Python
    run beside the members writing, which hold the lane and, in the database, the scope's
    lock. A request that writes nothing (a failed precondition, a 403) never waits for
    the lane. An early read does not see the uncommitted writes of the members before it:
    when that makes its write conflict, its rerun reads in the group.

Shared reads
    A read statement outside any transaction (an object read, a write's early read) that
    is identical to one sent and still unanswered, the same SQL text with the same
    arguments, is not sent again when that one was sent after the request was read and
    after the request's own commits (:attr:`~nuages.core.errors.Attempt.since`): it
    shares its answer, from a snapshot taken after anything the request must see. The
    creates of one user in one collection read the collection and the user's grant with
    identical statements: under concurrent creates, most share one. A request whose
    statement's sender was cancelled sends its own.

Transactions and joining
    As in :mod:`nuages.sqlite.database`: the open transaction lives in a context variable,
    so the storage and permission backends of one request share one transaction (one
    commit). A nested write block is a savepoint. A write transaction cannot be nested in
    a read transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import hashlib
import itertools
import operator
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import resources
from typing import Any, Final, TypeVar

import asyncpg  # type: ignore[import-untyped]

from nuages.core.commits import settle
from nuages.core.contexts import Given
from nuages.core.errors import (
    CURRENT_ATTEMPT,
    Attempt,
    BackendError,
    Error,
    TransactionConflict,
    careful,
)
from nuages.postgresql.pool import ConnectionPool

T = TypeVar("T")
# Of a group commit that ended: its members (write requests answered by its end), the
# seconds it was open (from its BEGIN's answer to its COMMIT's), and whether it committed.
GroupObserver = Callable[[int, float, bool], None]
# Of a step of a write request in a group commit, and its seconds: "join" (from its first
# write statement to its place in a group: the lane, and the group's opening if it is the
# first), "lock" (its scope's lock statement, which waits for other processes' groups),
# "commit" (from the end of its code to its group's COMMIT answered).
StepObserver = Callable[[str, float], None]

# The object keys and ACL URIs whose writes can change a read's answer.
Depends = tuple[frozenset[bytes], frozenset[str]]
# A wider form of a deferred write (:meth:`PostgreSQLTransaction.fetch_deferrable`): its
# SQL text, and the parameters it takes after the statement's own.
Wider = tuple[str, tuple[Any, ...]]

CURRENT_SCHEMA_VERSION: Final = 3
"""Schema version this Nuages writes and expects (``schema.sql`` + ``migrations/``)."""

# Members of one group commit: more subtransactions than PostgreSQL caches per transaction
# (64) would slow down every snapshot of the server.
MAX_GROUP: Final = 32

# pg_advisory_xact_lock key serialising concurrent `nuages migrate` runs ("nuages" in ASCII).
_MIGRATION_LOCK: Final = 0x6E7561676573

# Driver and network failures that mean "the database is unavailable right now".
_UNAVAILABLE: Final = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions._base.InternalClientError,
    OSError,
    asyncio.TimeoutError,
)


@functools.lru_cache(maxsize=16384)
def digest(*parts: str) -> bytes:
    """A fixed-size key for a tuple of strings of any length (injective encoding).
    Remembered: a read checks the same grants of a bucket and a collection at every
    request (a digest per pair and principal), 0.76 µs each."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.digest()


def _discard(conn: Any) -> None:
    """Close a connection in an unknown state; the pool opens a new one when needed."""
    conn.terminate()


def _connection_lost(exc: BaseException) -> bool:
    """Whether the connection is in an unknown state after `exc` (not just a failed
    statement): anything but an error the server answered, or a server error of the
    connection, operator-intervention, resource, system or internal classes."""
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state.startswith(("08", "53", "57", "58", "XX"))
    return True


@functools.lru_cache(maxsize=1024)
def _writes(sql: str) -> bool:
    """Whether `sql` may write (a lock, as ``SELECT ... FOR UPDATE``, is not a write)."""
    return _WRITE.search(sql) is not None


_WRITE: Final = re.compile(
    r"\b(?:INSERT|DELETE|(?<!FOR )UPDATE|SAVEPOINT|TRUNCATE|CREATE|DROP|ALTER)\b", re.IGNORECASE
)


def _backend_error(exc: BaseException) -> BackendError:
    # Never the DSN (it may hold a password): only the driver's message.
    return BackendError(f"PostgreSQL: {type(exc).__name__}: {exc}")


class PostgreSQLTransaction:
    """A transaction on one pooled connection. Statements go through :meth:`fetch`,
    :meth:`fetchrow`, :meth:`fetchval` and :meth:`execute`, which turn driver errors into
    :class:`BackendError`."""

    def __init__(
        self,
        db: PostgreSQLDatabase,
        conn: Any,
        *,
        write: bool,
        locked: dict[bytes, int] | None = None,
        lane: _Lane | None = None,
    ) -> None:
        self.db = db
        self.write = write
        self.finished = False
        # None: a member of a group commit that has not joined its group yet (its lane).
        self.conn = conn
        self.lane = lane
        self.group: _Group | None = None  # the group it joined
        # A read ran before joining (:meth:`fetch_early`): a conflict it causes makes the
        # attempt careful.
        self.read_early = False
        # Objects read by this write transaction, key -> last_modified (None: absent), to
        # detect that a concurrent transaction changed them before this one wrote.
        self.seen: dict[bytes, int | None] = {}
        # Scope rows of `timestamps` that the PostgreSQL transaction holds locked, with their
        # current value (nuages.storage.postgresql): shared by the members of a group
        # commit, so that only the first member of a scope locks and reads its row. Emptied
        # whenever a savepoint is rolled back (the row may then be unlocked or older).
        self.locked: dict[bytes, int] = {} if locked is None else locked
        # Principals read by this transaction, by user ids (nuages.permission.postgresql):
        # a batch reads its user's once, not once per request. Emptied by a write of
        # principals and, like `locked`, by a savepoint's rollback (:meth:`forget`).
        self.principals: dict[tuple[str, ...], frozenset[str]] = {}
        # Parent prefixes whose objects this transaction purged (nuages.storage.postgresql):
        # what it had seen of them before is gone by its own hand, not by a concurrent one.
        self.purged: list[str] = []
        # A statement failed in the driver or the network: the connection's state is
        # unknown, so it is closed rather than given back to the pool.
        self.broken = False
        # A statement that writes ran, or one failed in PostgreSQL: what a member of a
        # group commit must undo if it fails (module docs).
        self.dirty = False
        # One-statement reads of objects with a grant (nuages.storage.postgresql), each
        # with the object keys and ACL URIs its answer depends on: a batch of creates in
        # one collection reads the collection and the caller's grant on it once. Emptied
        # by any statement that writes, unless its caller says what it wrote
        # (:meth:`fetch_writing`), and by a savepoint's rollback.
        self.views: dict[Any, tuple[Any, frozenset[bytes], frozenset[str]]] = {}
        # Savepoints open in it (:meth:`PostgreSQLDatabase.transaction`): no write is
        # deferred within one, whose rollback would not undo it.
        self.nested = 0
        # Its deferred writes (:meth:`fetch_deferrable`) when it is a transaction of its
        # own (a batch); a member of a group commit defers into its group's.
        self.pending: list[_Deferred] = []

    def forget(self) -> None:
        """A savepoint was rolled back: what the transaction knew may no longer hold."""
        self.locked.clear()
        self.principals.clear()
        self.purged.clear()
        self.views.clear()

    async def join(self) -> None:
        """Be on the transaction's connection: a member of a group commit enters its lane
        and its group here, before its first write (or statement that is not an early
        read), so that its reads and checks run beside the other members' writes."""
        if self.conn is None:
            await self.db._join(self)

    async def fetch_early(self, sql: str, *args: Any, depends: Depends | None = None) -> list[Any]:
        """:meth:`fetch` for a read that may run before this member joins its group: on
        a connection of its own, outside the transaction, unless the attempt is careful
        (or the last, or there is none). In ``READ COMMITTED`` each statement sees what is
        committed when it starts, inside the transaction or not; what it does not see are
        the uncommitted writes of the members before it in its group. A write that then
        finds the object changed raises :class:`TransactionConflict` and the attempt is
        made careful: its rerun reads in the group. `depends`: the object keys and ACL
        URIs whose writes can change its answer; in the transaction, the deferred writes
        of others are not sent before it (:meth:`fetch_deferrable`)."""
        if self.conn is None and not self.finished and not careful(CURRENT_ATTEMPT.get()):
            self.read_early = True
            return await self.db.fetch_once(sql, *args)
        rows: list[Any] = await self._call("fetch", sql, *args, depends=depends)
        return rows

    def conflict(self) -> TransactionConflict:
        """The :class:`TransactionConflict` to raise when an object changed since this
        transaction read it; after an early read, its rerun reads in the group."""
        if self.read_early and (attempt := CURRENT_ATTEMPT.get()) is not None:
            attempt.careful = True
        return TransactionConflict()

    async def _call(self, method: str, sql: str, *args: Any, depends: Depends | None = None) -> Any:
        if self.finished:
            raise BackendError("this PostgreSQL transaction is already finished")
        if self.conn is None:
            await self.db._join(self)
        await self._flush(depends)
        # The caller's principals, if kept by the reader: confirmed before they count.
        kept = take_kept_principals(self.db)
        if kept is not None and not kept.confirmed(await self._call("fetchval", PRINCIPALS_TOKEN)):
            raise TransactionConflict()
        if (self.views or not self.dirty) and _writes(sql):
            self.dirty = True
            self.views.clear()
        try:
            return await getattr(self.conn, method)(sql, *args, timeout=self.db.timeout)
        except asyncpg.DeadlockDetectedError as exc:
            self.dirty = True
            raise TransactionConflict() from exc
        except _UNAVAILABLE as exc:
            self.dirty = True
            # A statement the server refused leaves the connection usable (a savepoint or
            # the transaction's rollback recovers); a lost connection does not.
            self.broken = self.broken or _connection_lost(exc)
            raise _backend_error(exc) from exc
        except BaseException:
            self.broken = True  # cancelled mid-statement
            raise

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        rows: list[Any] = await self._call("fetch", sql, *args)
        return rows

    async def fetch_writing(self, key: bytes, uri: str | None, sql: str, *args: Any) -> list[Any]:
        """:meth:`fetch` of a statement that writes the object `key` (and the ACL of `uri`)
        and nothing else: the :attr:`views` it cannot change are kept."""
        kept = self._views_kept(key, uri)
        rows = await self.fetch(sql, *args)
        self.views = kept
        return rows

    async def fetch_deferrable(
        self,
        expected: tuple[Any, ...],
        key: bytes,
        uri: str | None,
        sql: str,
        *args: Any,
        wider: Wider | None = None,
    ) -> list[Any]:
        """:meth:`fetch_writing` of a statement expected to answer the single row
        `expected`. In an attempt that can be rerun, the statement may be deferred: this
        answers ``[expected]`` at once, and the statement is sent with the other deferred
        writes of the transaction (or of its group commit, module docs) before its next
        statement or its commit. Should it answer anything else, the transaction (the
        group) fails and is rerun, carefully (without deferring). `wider`: a statement
        that does the same with `args` and the parameters it adds, to be sent instead
        when other deferred writes have that SQL text (one round trip for all)."""
        if self.finished:
            raise BackendError("this PostgreSQL transaction is already finished")
        if self.conn is None:
            await self.db._join(self)
        group = self.group
        attempt = CURRENT_ATTEMPT.get()
        if (
            self.nested
            or not self.write
            or attempt is None
            or careful(attempt)
            or attempt.unconfirmed is not None  # the next statement confirms them
            or (
                group is not None
                and (group.savepoint is not None or group.failed)  # (its rollback)
            )
        ):
            return await self.fetch_writing(key, uri, sql, *args)
        self.views = self._views_kept(key, uri)
        self.dirty = True
        pending = self.pending if group is None else group.pending
        pending.append(_Deferred(sql, args, expected, attempt, key, uri, wider))
        return [expected]

    async def _flush(self, depends: Depends | None = None) -> None:
        """Send the deferred writes (of its group's members, for a member) before its
        next statement or its commit; not before a read that depends on none of them
        (`depends`: the object keys and ACL URIs whose writes can change its answer).
        Raises :class:`TransactionConflict` when one answered other than expected (the
        owners' reruns are careful), :class:`BackendError` when the connection was lost."""
        pending = self.pending if self.group is None else self.group.pending
        if not pending or (
            depends is not None and not any(deferred.changes(*depends) for deferred in pending)
        ):
            return
        if self.group is not None:
            self.dirty = True  # a failure now fails the group (its writes)
            await self.db._flush(self.group)
            return
        self.pending = []
        try:
            await _send(self.conn, pending, self.db.timeout)
        except TransactionConflict:
            raise
        except BaseException:
            self.broken = True
            raise

    def _views_kept(self, key: bytes, uri: str | None) -> dict[Any, Any]:
        """The :attr:`views` that a write of the object `key` (and the ACL of `uri`)
        cannot change."""
        return {
            read: entry
            for read, entry in self.views.items()
            if key not in entry[1] and (uri is None or uri not in entry[2])
        }

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        return await self._call("fetchrow", sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._call("fetchval", sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        status: str = await self._call("execute", sql, *args)
        return status


PRINCIPALS_TOKEN: Final = "SELECT token FROM principals_version"
"""The token that every change of ``user_principals`` replaces (``schema.sql``)."""


class KeptPrincipals:
    """An :attr:`~nuages.core.errors.Attempt.unconfirmed` check: stored principals that a
    reader answered from what it kept, with the token it read them with
    (:class:`nuages.postgresql.reads.PostgreSQLObjectReader`). The request's next
    statement in `db` confirms them (:func:`take_kept_principals`); if none does, the
    dispatcher calls this object, which reads the token on its own."""

    __slots__ = ("db", "forget", "token")

    def __init__(self, db: PostgreSQLDatabase, token: str, forget: Callable[[], None]) -> None:
        self.db = db
        self.token = token
        self.forget = forget  # the reader forgets them

    def confirmed(self, current: object) -> bool:
        """Whether `current`, the token now, is the one they were read with (else they
        are forgotten)."""
        if current == self.token:
            return True
        self.forget()
        return False

    async def __call__(self) -> bool:
        rows = await self.db.fetch_once(PRINCIPALS_TOKEN)
        return self.confirmed(rows[0][0] if rows else None)


def take_kept_principals(db: PostgreSQLDatabase) -> KeptPrincipals | None:
    """The current attempt's principals kept by a reader of `db` and not yet confirmed,
    now to be confirmed by the caller (and no longer by anyone else)."""
    attempt = CURRENT_ATTEMPT.get()
    if attempt is None:
        return None
    kept = attempt.unconfirmed
    if not isinstance(kept, KeptPrincipals) or kept.db is not db:
        return None
    attempt.unconfirmed = None
    return kept


class _Shared:
    """A read statement sent outside any transaction, and its answer to come
    (:class:`_Statements`)."""

    __slots__ = ("answer", "sent")

    def __init__(self, sent: int, answer: asyncio.Future[list[Any]]) -> None:
        self.sent = sent  # time.monotonic_ns() before it was sent
        self.answer = answer


class _Abandoned(Exception):
    """The request that sent a shared statement was cancelled: the others send theirs."""


class _Statements:
    """:meth:`PostgreSQLDatabase.statements`: read statements outside any transaction, on
    a connection of the pool taken at the first one sent and kept until exit (a class:
    the context of every object read, cheaper than a generator's). A statement may share
    the answer of an identical one (module docs, "Shared reads")."""

    __slots__ = ("_conn", "_db", "_pool")

    def __init__(self, db: PostgreSQLDatabase) -> None:
        self._db = db
        self._pool: ConnectionPool | None = None
        self._conn: Any = None

    async def __aenter__(self) -> Callable[..., Awaitable[list[Any]]]:
        return self.fetch

    async def __aexit__(self, *exc_info: object) -> None:
        if self._pool is not None:
            self._pool.release(self._conn)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        attempt = CURRENT_ATTEMPT.get()
        if attempt is None:
            return await self._send(sql, args)
        key = (sql, *[tuple(arg) if type(arg) is list else arg for arg in args])
        shared = self._db._shared
        earlier = shared.get(key)
        if earlier is not None and earlier.sent >= attempt.since:
            try:
                return list(await asyncio.shield(earlier.answer))
            except _Abandoned:
                pass  # its sender was cancelled: send it again
        entry = _Shared(time.monotonic_ns(), asyncio.get_running_loop().create_future())
        shared[key] = entry
        try:
            rows = await self._send(sql, args)
        except BaseException as exc:
            entry.answer.set_exception(exc if isinstance(exc, Exception) else _Abandoned())
            entry.answer.exception()  # retrieved: no warning when nobody shared it
            raise
        else:
            entry.answer.set_result(rows)
        finally:
            if shared.get(key) is entry:
                del shared[key]
        return rows

    async def _send(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        if self._conn is None:
            self._pool, self._conn = await self._db._acquire()
        conn = self._conn
        try:
            rows: list[Any] = await conn.fetch(sql, *args, timeout=self._db.timeout)
        except _UNAVAILABLE as exc:
            if _connection_lost(exc):
                _discard(conn)
            raise _backend_error(exc) from exc
        except BaseException:
            _discard(conn)  # cancelled mid-statement: its state is unknown
            raise
        return rows


def _committed() -> None:
    """The attempt running in this context committed: its later reads see that commit."""
    attempt = CURRENT_ATTEMPT.get()
    if attempt is not None:
        attempt.since = time.monotonic_ns()


class _Deferred:
    """A write statement not sent yet (:meth:`PostgreSQLTransaction.fetch_deferrable`), of a
    member of a group commit or of a transaction of its own, with the attempt that made it
    (made careful should the statement answer otherwise)."""

    __slots__ = ("args", "attempt", "expected", "key", "sql", "uri", "wider")

    def __init__(
        self,
        sql: str,
        args: tuple[Any, ...],
        expected: tuple[Any, ...],
        attempt: Attempt,
        key: bytes,
        uri: str | None,
        wider: Wider | None = None,
    ) -> None:
        self.sql = sql
        self.args = args
        self.expected = expected
        self.attempt = attempt
        self.key = key  # the object it writes
        self.uri = uri  # the URI whose ACL it writes, if any
        self.wider = wider  # the same statement in a wider form, and its added parameters

    def changes(self, keys: frozenset[bytes], uris: frozenset[str]) -> bool:
        """Whether it writes one of the objects `keys` or the ACL of one of `uris`."""
        return self.key in keys or (self.uri is not None and self.uri in uris)


class _Group:
    """Write transactions of one scope sharing one PostgreSQL transaction (module docs)."""

    def __init__(self, pool: Any, conn: Any, pg_tx: Any) -> None:
        self.pool = pool
        self.conn = conn
        self.pg_tx = pg_tx
        self.ran = 0  # members that joined it
        self.members: list[asyncio.Future[None]] = []  # succeeded, waiting for the commit
        # The latest savepoint: its number, and how many of `members` were before it.
        self.savepoint: tuple[int, int] | None = None
        self.careful = False  # the latest member is a careful attempt (module docs)
        self.locked: dict[bytes, int] = {}  # PostgreSQLTransaction.locked, for all members
        self.failed = False  # cannot commit: rolled back, or the connection is unusable
        self.rerun = False  # failed by a member's rollback: its other members are rerun
        self.broken = False  # the connection's state is unknown: discard it
        self.ended = False
        self.opened = time.perf_counter()  # for GroupObserver
        self.committer: asyncio.Task[None] | None = None
        self.pending: list[_Deferred] = []  # deferred writes, in the order they were made


class _Lane:
    """The write requests of one scope in this process, one at a time."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.group: _Group | None = None
        self.users = 0


class PostgreSQLDatabase:
    """A PostgreSQL database reached through a pool of asyncpg connections (module docs)."""

    def __init__(self, dsn: str, *, pool_size: int = 10, timeout: float = 10.0) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self.dsn = dsn
        self.pool_size = pool_size
        self.timeout = timeout
        self._pool: ConnectionPool | None = None
        self._current: contextvars.ContextVar[PostgreSQLTransaction | None] = (
            contextvars.ContextVar("nuages_postgresql_transaction", default=None)
        )
        self._lanes: dict[str, _Lane] = {}
        # Read statements sent outside any transaction and not answered yet, by SQL text
        # and arguments (_Statements).
        self._shared: dict[tuple[Any, ...], _Shared] = {}
        # Told of every group commit as it ends, and of its members' steps
        # (nuages.plugins.prometheus).
        self.group_observers: list[GroupObserver] = []
        self.step_observers: list[StepObserver] = []

    def observe_step(self, step: str, started: float) -> None:
        """Tell the step observers that `step` took since ``time.perf_counter()`` `started`."""
        seconds = time.perf_counter() - started
        for observe in self.step_observers:
            observe(step, seconds)

    @property
    def name(self) -> str:
        """The database URL without its password, for messages."""
        return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", self.dsn)

    def _get_pool(self) -> ConnectionPool:
        if self._pool is None:
            # Nothing is opened until used: the server starts while the database is down.
            self._pool = ConnectionPool(
                functools.partial(
                    asyncpg.connect, self.dsn, timeout=self.timeout, command_timeout=self.timeout
                ),
                size=self.pool_size,
                idle_lifetime=60.0,
            )
        return self._pool

    async def _acquire(self) -> tuple[ConnectionPool, Any]:
        """A connection of the pool, and the pool to release it to (:class:`BackendError`
        when none comes within `timeout`)."""
        pool = self._get_pool()
        try:
            return pool, await pool.acquire(self.timeout)
        except _UNAVAILABLE as exc:
            raise _backend_error(exc) from exc

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        pool, conn = await self._acquire()
        try:
            yield conn
        finally:
            pool.release(conn)

    def transaction(
        self, *, write: bool, savepoint: bool = True
    ) -> AbstractAsyncContextManager[PostgreSQLTransaction]:
        """Open a transaction, or join the one open in this context (module docs); a
        joined write block is a savepoint unless `savepoint` is false. (Which one is
        decided here, when called: ``async with`` enters it at once.)"""
        current = self._current.get()
        if current is None or current.finished:
            return self._outermost(write=write)
        if write and not current.write:
            raise BackendError(
                "cannot open a write transaction inside a read transaction of the same "
                "PostgreSQL database: open the outermost transaction with write=True"
            )
        if write and savepoint:
            return self._savepoint(current)
        return Given(current)

    @asynccontextmanager
    async def _savepoint(
        self, current: PostgreSQLTransaction
    ) -> AsyncIterator[PostgreSQLTransaction]:
        await current.join()
        await current._flush()  # the savepoint follows the writes before it
        try:
            nested = current.conn.transaction()
            await nested.start()
        except _UNAVAILABLE as exc:
            raise _backend_error(exc) from exc
        current.nested += 1
        try:
            yield current
        except BaseException:
            current.forget()
            if not current.broken:
                try:
                    await nested.rollback()
                except _UNAVAILABLE:
                    current.broken = True  # the outer transaction fails too
            raise
        else:
            try:
                await nested.commit()
            except _UNAVAILABLE as exc:
                raise _backend_error(exc) from exc
        finally:
            current.nested -= 1

    def _outermost(self, *, write: bool) -> AbstractAsyncContextManager[PostgreSQLTransaction]:
        """A new transaction: for a write request, a member of its scope's group commit
        (module docs), else one of its own."""
        attempt = CURRENT_ATTEMPT.get()
        if write and attempt is not None and attempt.scope is not None:
            return self._grouped(attempt.scope)
        return self._alone(write=write)

    @asynccontextmanager
    async def _alone(self, *, write: bool) -> AsyncIterator[PostgreSQLTransaction]:
        async with self._connection() as conn:
            tx = PostgreSQLTransaction(self, conn, write=write)
            if write:
                pg_tx = conn.transaction(isolation="read_committed")
            else:
                pg_tx = conn.transaction(isolation="repeatable_read", readonly=True)
            try:
                await pg_tx.start()
            except BaseException as exc:
                _discard(conn)  # the pool replaces it
                if isinstance(exc, _UNAVAILABLE):
                    raise _backend_error(exc) from exc
                raise
            token = self._current.set(tx)
            try:
                try:
                    yield tx
                    await tx._flush()
                except BaseException:
                    if tx.broken:
                        _discard(conn)
                    else:
                        try:
                            await pg_tx.rollback()
                        except _UNAVAILABLE:
                            _discard(conn)  # the error being handled stays the one reported
                    raise
                try:
                    await pg_tx.commit()
                except BaseException as exc:
                    # The commit may or may not have happened: the connection is unusable.
                    _discard(conn)
                    if isinstance(exc, _UNAVAILABLE):
                        raise _backend_error(exc) from exc
                    raise
                if write:
                    _committed()
            finally:
                tx.finished = True
                self._current.reset(token)

    # -- group commit (module docs) ----------------------------------------------------
    @asynccontextmanager
    async def _grouped(self, scope: str) -> AsyncIterator[PostgreSQLTransaction]:
        lane = self._lanes.get(scope)
        if lane is None:
            lane = self._lanes[scope] = _Lane()
        lane.users += 1
        tx = PostgreSQLTransaction(self, None, write=True, lane=lane)
        committed: asyncio.Future[None] | None = None
        try:
            try:
                token = self._current.set(tx)
                try:
                    yield tx
                finally:
                    tx.finished = True
                    self._current.reset(token)
            except BaseException:
                if tx.group is not None:
                    try:
                        await self._undo_member(tx.group, tx)
                    finally:
                        self._leave(scope, lane, tx.group)
                raise
            if tx.group is not None:
                committed = asyncio.get_running_loop().create_future()
                tx.group.members.append(committed)
                self._leave(scope, lane, tx.group)
        finally:
            lane.users -= 1
            if committed is None:
                self._drop_idle(scope, lane)
        if committed is not None:
            started = time.perf_counter() if self.step_observers else 0.0
            # Done once the group is committed; a cancelled caller does not cancel that.
            await asyncio.shield(committed)
            _committed()
            if started:
                self.observe_step("commit", started)

    def _drop_idle(self, scope: str, lane: _Lane) -> None:
        """Forget `lane` when nobody uses it (its members, its group's commit)."""
        if (
            lane.users == 0
            and lane.group is None
            and not lane.lock.locked()
            and self._lanes.get(scope) is lane
        ):
            del self._lanes[scope]

    async def _join(self, tx: PostgreSQLTransaction) -> None:
        """Enter `tx`'s lane (until :meth:`_leave`) and its open group, or a new one."""
        lane = tx.lane
        if lane is None:
            raise BackendError("this PostgreSQL transaction has no connection")
        started = time.perf_counter() if self.step_observers else 0.0
        await lane.lock.acquire()
        try:
            group = lane.group
            if group is not None and group.pending and _careful_member(group):
                # It starts with a savepoint, after the writes before it: they are sent
                # now, and should they fail, it joins another group.
                with contextlib.suppress(TransactionConflict, BackendError):
                    await self._flush(group)
            if group is not None and (group.failed or len(group.members) >= MAX_GROUP):
                await self._end_group(lane, group)  # full (or failed): commit it first
                group = None
            if group is None:
                group = lane.group = await self._open_group()
            await self._member(group)
        except BaseException:
            lane.lock.release()
            raise
        tx.group = group
        tx.locked = group.locked
        tx.conn = group.conn
        if started:
            self.observe_step("join", started)

    def _leave(self, scope: str, lane: _Lane, group: _Group) -> None:
        """A member is done with its lane: the group's commit is queued behind the
        members already waiting."""
        if group.committer is None:
            group.committer = asyncio.get_running_loop().create_task(
                self._commit_later(scope, lane, group)
            )
        lane.lock.release()

    async def _open_group(self) -> _Group:
        pool, conn = await self._acquire()
        pg_tx = conn.transaction(isolation="read_committed")
        try:
            await pg_tx.start()
        except BaseException as exc:
            _discard(conn)
            pool.release(conn)
            if isinstance(exc, _UNAVAILABLE):
                raise _backend_error(exc) from exc
            raise
        return _Group(pool, conn, pg_tx)

    async def _member(self, group: _Group) -> None:
        """Start a member of `group`: with a savepoint when it is a careful attempt or
        follows one (module docs), and the group has members before it."""
        member_careful = careful(CURRENT_ATTEMPT.get())
        if _careful_member(group):
            try:
                await group.conn.execute(f"SAVEPOINT nuages_{group.ran}", timeout=self.timeout)
            except _UNAVAILABLE as exc:
                group.failed = group.broken = True
                raise _backend_error(exc) from exc
            group.savepoint = (group.ran, len(group.members))
        group.careful = member_careful
        group.ran += 1

    async def _undo_member(self, group: _Group, tx: PostgreSQLTransaction) -> None:
        """Undo a failed member's statements, if it wrote (module docs): back to the
        group's latest savepoint, rerunning the members answered since; or, without one,
        the whole transaction when the group ends, rerunning all of them."""
        if tx.broken:
            group.failed = group.broken = True
            return
        if not tx.dirty:
            return  # it only read: nothing to undo
        group.locked.clear()
        if group.savepoint is None:
            group.failed = group.rerun = True  # rolled back when the group ends
            return
        number, before = group.savepoint
        group.pending.clear()  # made after the savepoint (the savepoint flushed them)
        try:
            await group.conn.execute(f"ROLLBACK TO SAVEPOINT nuages_{number}", timeout=self.timeout)
        except BaseException:
            group.failed = group.broken = True
            return
        rerun = group.members[before:]
        del group.members[before:]
        settle(rerun, TransactionConflict())

    async def _flush(self, group: _Group) -> None:
        """Send the deferred writes of `group` (:meth:`PostgreSQLTransaction.fetch_deferrable`),
        in order, those of one statement together (one round trip). Should one fail or
        answer other than expected, the group fails and its members are rerun (raises
        :class:`TransactionConflict`), the owners of the deferred writes carefully; or, with
        the connection in an unknown state, raises :class:`BackendError`."""
        pending, group.pending = group.pending, []
        if group.failed or not pending:
            return  # (a failed group is rolled back at its end)
        try:
            await _send(group.conn, pending, self.timeout)
        except TransactionConflict:
            group.failed = group.rerun = True
            raise
        except BaseException:
            group.failed = group.broken = True
            raise

    async def _commit_later(self, scope: str, lane: _Lane, group: _Group) -> None:
        # Queued behind the requests already waiting for the lane: they join the group.
        async with lane.lock:
            await self._end_group(lane, group)
        self._drop_idle(scope, lane)

    async def _end_group(self, lane: _Lane, group: _Group) -> None:
        """Commit (or roll back) `group`, give back its connection, answer its members.
        Called with the lane's lock."""
        if group.ended:
            return
        group.ended = True
        if lane.group is group:
            lane.group = None
        error: BaseException | None = None
        if group.failed:
            if group.rerun and not group.broken:
                error = TransactionConflict()  # another member failed: rerun (module docs)
            else:
                error = BackendError("the PostgreSQL transaction was rolled back after an error")
            if not group.broken:
                try:
                    await group.pg_tx.rollback()
                except BaseException:
                    group.broken = True
        else:
            try:
                await self._flush(group)
            except (TransactionConflict, BackendError) as exc:
                error = exc
            else:
                try:
                    await group.pg_tx.commit()
                except BaseException as exc:
                    group.broken = True  # the commit may or may not have happened
                    error = _backend_error(exc) if isinstance(exc, _UNAVAILABLE) else exc
            if error is not None and not group.broken:
                try:
                    await group.pg_tx.rollback()
                except BaseException:
                    group.broken = True
        if group.broken:
            _discard(group.conn)
        group.pool.release(group.conn)
        settle(group.members, error)
        if self.group_observers:
            seconds = time.perf_counter() - group.opened
            for observe in self.group_observers:
                observe(len(group.members), seconds, error is None)

    async def run_write(self, job: Callable[[PostgreSQLTransaction], Awaitable[T]]) -> T:
        """Run `job` in the write transaction open in this context, or else in a short
        write transaction of its own (it then commits independently of a read transaction
        open in this context: lazy scope timestamps, cache entries)."""
        current = self._current.get()
        if current is not None and current.write and not current.finished:
            return await job(current)
        token = self._current.set(None)
        try:
            async with self._outermost(write=True) as tx:
                return await job(tx)
        finally:
            self._current.reset(token)

    async def fetch_once(self, sql: str, *args: Any) -> list[Any]:
        """Run one read statement outside any transaction (a statement is its own
        snapshot: no BEGIN, no COMMIT). It does not see the writes of a transaction open
        in this context: call it where none is."""
        async with self.statements() as fetch:
            return await fetch(sql, *args)

    def statements(self) -> _Statements:
        """A ``fetch(sql, *args)`` for read statements on one connection, outside any
        transaction (each statement is its own snapshot); as :meth:`fetch_once`."""
        return _Statements(self)

    async def run_read(self, job: Callable[[PostgreSQLTransaction], Awaitable[T]]) -> T:
        """Run `job` in the transaction open in this context, or in a read transaction."""
        async with self.transaction(write=False) as tx:
            return await job(tx)

    # -- schema ---------------------------------------------------------------------
    async def migrate(self) -> None:
        """Create the schema or upgrade an older one; idempotent, and safe when several
        processes run it at once (an advisory lock serialises them, one transaction each)."""

        async def migrate(tx: PostgreSQLTransaction) -> None:
            await tx.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            version = await _read_schema_version(tx)
            if version == CURRENT_SCHEMA_VERSION:
                return
            if version is None:
                scripts = [_schema_script()]
            elif version > CURRENT_SCHEMA_VERSION:
                raise BackendError(self._newer(version))
            else:
                available = _migration_scripts()
                wanted = range(version + 1, CURRENT_SCHEMA_VERSION + 1)
                if missing := [n for n in wanted if n not in available]:
                    raise BackendError(f"No PostgreSQL migration to schema version {missing[0]}")
                scripts = [available[n] for n in wanted]
            for script in scripts:
                await tx.execute(script)
            await tx.execute(
                "INSERT INTO nuages_metadata (name, value) VALUES ('schema_version', $1)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                str(CURRENT_SCHEMA_VERSION),
            )

        await self.run_write(migrate)

    async def schema_version(self) -> int | None:
        """The schema version recorded in the database, or ``None`` when it has none."""
        return await self.run_read(_read_schema_version)

    def _newer(self, version: int) -> str:
        return (
            f"The PostgreSQL database {self.name} has schema version {version}, which is "
            f"newer than this Nuages supports ({CURRENT_SCHEMA_VERSION}): upgrade Nuages."
        )

    async def check_schema(self) -> None:
        """Raise :class:`BackendError` unless the database has exactly the current schema."""
        version = await self.schema_version()
        if version is None:
            raise BackendError(
                f"The PostgreSQL database {self.name} has no Nuages schema: run `nuages migrate`."
            )
        if version < CURRENT_SCHEMA_VERSION:
            raise BackendError(
                f"The PostgreSQL database {self.name} has schema version {version}, this "
                f"Nuages needs version {CURRENT_SCHEMA_VERSION}: run `nuages migrate`."
            )
        if version > CURRENT_SCHEMA_VERSION:
            raise BackendError(self._newer(version))

    async def ping(self) -> bool:
        """Whether the database answers a query."""
        try:
            await self.run_read(lambda tx: tx.fetchval("SELECT 1"))
        except Error:
            return False
        return True

    async def aclose(self) -> None:
        """Close the pool (idempotent); a later use opens a new one."""
        for lane in list(self._lanes.values()):
            group = lane.group
            if group is not None and group.committer is not None:
                with contextlib.suppress(Exception):
                    await group.committer
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), self.timeout)
            except (TimeoutError, *_UNAVAILABLE):
                pool.terminate()


async def _send(conn: Any, pending: list[_Deferred], timeout: float) -> None:
    """Send deferred writes in order, those of one SQL text together (one pipelined round
    trip). Should one answer other than expected, or PostgreSQL refuse one, raises
    :class:`TransactionConflict`, their owners' reruns made careful; with the connection
    in an unknown state (lost, or cancelled mid-statement), :class:`BackendError` (or the
    cancellation)."""
    try:
        if await _answered_as_expected(conn, pending, timeout):
            return
    except _UNAVAILABLE as exc:
        raise _backend_error(exc) from exc
    for deferred in pending:
        deferred.attempt.careful = True
    raise TransactionConflict()


async def _answered_as_expected(conn: Any, pending: list[_Deferred], timeout: float) -> bool:
    """:func:`_send`'s statements; whether each answered as expected (False when one was
    refused: the connection is then usable)."""
    sent = 0
    for sql, same in itertools.groupby(_widened(pending), key=operator.itemgetter(0)):
        args = [run_args for _, run_args in same]
        run = pending[sent : sent + len(args)]
        sent += len(args)
        try:
            rows = await conn.fetchmany(sql, args, timeout=timeout)
        except _UNAVAILABLE as exc:
            if _connection_lost(exc):
                raise
            return False
        if [tuple(row) for row in rows] != [deferred.expected for deferred in run]:
            return False
    return True


def _widened(pending: list[_Deferred]) -> list[tuple[str, tuple[Any, ...]]]:
    """The SQL text and the arguments of each deferred write, in order: all of one text
    when the wider form of some is the statement of all the others (one round trip),
    else each its own."""
    if len({deferred.sql for deferred in pending}) > 1:
        wide = {deferred.wider[0] for deferred in pending if deferred.wider is not None}
        if len(wide) == 1:
            (sql,) = wide
            sent = [
                (sql, (*deferred.args, *deferred.wider[1]))
                if deferred.wider is not None and deferred.sql != sql
                else (deferred.sql, deferred.args)
                for deferred in pending
            ]
            if all(text == sql for text, _ in sent):
                return sent
    return [(deferred.sql, deferred.args) for deferred in pending]


def _careful_member(group: _Group) -> bool:
    """Whether the request about to join `group` starts with a savepoint (module docs)."""
    return bool(group.ran) and (careful(CURRENT_ATTEMPT.get()) or group.careful)


_MIGRATION_NAME = re.compile(r"(\d{3})_\w+\.sql")


def _schema_script() -> str:
    return resources.files(__package__).joinpath("schema.sql").read_text("utf-8")


def _migration_scripts() -> dict[int, str]:
    """``migrations/NNN_what.sql`` upgrades a database from version NNN-1 to NNN."""
    folder = resources.files(__package__).joinpath("migrations")
    scripts = {}
    for entry in folder.iterdir():
        if match := _MIGRATION_NAME.fullmatch(entry.name):
            scripts[int(match[1])] = entry.read_text("utf-8")
    return scripts


async def _read_schema_version(tx: PostgreSQLTransaction) -> int | None:
    if await tx.fetchval("SELECT to_regclass('nuages_metadata')") is None:
        return None
    value = await tx.fetchval("SELECT value FROM nuages_metadata WHERE name = 'schema_version'")
    return None if value is None else int(value)
