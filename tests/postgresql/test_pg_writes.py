"""PostgreSQL writes keep the invariants of :mod:`nuages.storage.postgresql`, and the
permission backend's ``write_object_permissions`` (one statement) equals replace + add + get.

Several databases (pools) on one PostgreSQL database play several processes. A write
that waited for the scope lock sees the object as committed by the writer it waited for
(no lost update: TransactionConflict, the request is rerun); under concurrent writers a
reader never sees a new object below a scope timestamp it already saw, and the live
count and scope timestamp stay exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from unittest.mock import ANY

import asyncpg
import pytest
from tests import services
from tests.postgresql.test_pg_group_commit import request

from nuages.core.errors import (
    CURRENT_ATTEMPT,
    Attempt,
    BackendError,
    TransactionConflict,
    UnicityError,
)
from nuages.core.objects import ListQuery
from nuages.permission.postgresql import PostgreSQLPermission
from nuages.postgresql import PostgreSQLDatabase
from nuages.storage.postgresql import PostgreSQLStorage, PostgreSQLStorageTransaction
from nuages.storage.protocol import ObjectRead, ObjectView

PARENT = "/buckets/b/collections/c"
RECORD = "record"

Op = Callable[[PostgreSQLStorageTransaction, str], Awaitable[Any]]


@pytest.fixture
async def storages() -> AsyncIterator[list[PostgreSQLStorage]]:
    """Three storages with pools of their own on one emptied database."""
    services.require("postgresql")
    url = await services.create_database()
    await services.empty_database(url)
    backends = [PostgreSQLStorage(PostgreSQLDatabase(url, pool_size=4)) for _ in range(3)]
    yield backends
    for backend in backends:
        await backend.aclose()


async def _create(tx: PostgreSQLStorageTransaction, object_id: str) -> Any:
    return await tx.create(RECORD, PARENT, {"id": object_id, "v": "new"})


async def _update(tx: PostgreSQLStorageTransaction, object_id: str) -> Any:
    return await tx.update(RECORD, PARENT, object_id, {"id": object_id, "v": "updated"})


async def _delete(tx: PostgreSQLStorageTransaction, object_id: str) -> Any:
    return await tx.delete(RECORD, PARENT, object_id)


async def _scope_row(storage: PostgreSQLStorage) -> tuple[int, int, int, int]:
    """(scope timestamp, live_count, live objects counted, greatest object timestamp)."""
    conn = await asyncpg.connect(storage.db.dsn)
    try:
        row = await conn.fetchrow(
            "SELECT t.last_modified, t.live_count,"
            " (SELECT count(*) FROM objects o WHERE o.scope = t.scope AND NOT o.deleted),"
            " (SELECT max(last_modified) FROM objects o WHERE o.scope = t.scope)"
            " FROM timestamps t WHERE t.parent_id = $1 AND t.resource_name = $2",
            PARENT,
            RECORD,
        )
    finally:
        await conn.close()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


@contextlib.asynccontextmanager
async def _statements(tx: Any) -> AsyncIterator[list[str]]:
    """The statements that the storage or permission transaction `tx` sends in the block
    (complete once the block is left: asyncpg calls its query loggers soon after each
    statement, not at once)."""
    statements: list[str] = []

    def log(record: Any) -> None:
        statements.append(record.query)

    conn = tx._tx.conn
    conn.add_query_logger(log)
    try:
        yield statements
    finally:
        conn.remove_query_logger(log)
        await asyncio.sleep(0)


@pytest.mark.parametrize(
    ("first", "second", "exists"),
    [
        (_update, _update, True),
        (_update, _delete, True),
        (_delete, _update, True),
        (_delete, _delete, True),
        (_create, _create, False),
        (_create, _update, False),
    ],
)
async def test_a_write_that_waited_for_the_scope_lock_sees_the_newest_object(
    storages: list[PostgreSQLStorage], first: Op, second: Op, exists: bool
) -> None:
    a_storage, b_storage = storages[0], storages[1]
    async with a_storage.transaction(write=True) as tx:
        await tx.create(RECORD, PARENT, {"id": "other", "v": 0})  # the scope exists
        if exists:
            await tx.create(RECORD, PARENT, {"id": "x", "v": 0})
    b_read, a_wrote = asyncio.Event(), asyncio.Event()

    async def b() -> None:
        async with b_storage.transaction(write=True) as tx:
            assert (await tx.get(RECORD, PARENT, "x") is not None) == exists
            b_read.set()
            await a_wrote.wait()
            await second(tx, "x")

    async with a_storage.transaction(write=True) as tx:
        await tx.get(RECORD, PARENT, "x")
        task = asyncio.create_task(b())
        await b_read.wait()
        await first(tx, "x")
        a_wrote.set()
        await asyncio.sleep(0.2)
        assert not task.done()  # waiting for the scope lock, which A holds
    # B read "x" before A changed it: its write must not pass (the request is rerun).
    with pytest.raises(TransactionConflict):
        await task
    timestamp, live, counted, newest = await _scope_row(a_storage)
    assert live == counted and timestamp == newest


async def test_a_write_waiting_for_the_scope_lock_takes_the_next_timestamp(
    storages: list[PostgreSQLStorage],
) -> None:
    a_storage, b_storage = storages[0], storages[1]
    async with a_storage.transaction(write=True) as tx:
        await tx.create(RECORD, PARENT, {"id": "x", "v": 0})
    async with a_storage.transaction(write=True) as tx:
        await tx.get(RECORD, PARENT, "x")
        a = await _update(tx, "x")

        async def b() -> Any:
            async with b_storage.transaction(write=True) as tx:
                return await _create(tx, "y")  # never read: no precondition on it

        task = asyncio.create_task(b())
        await asyncio.sleep(0.2)
        assert not task.done()
    b_created = await task
    assert b_created["last_modified"] > a["last_modified"]
    timestamp, live, counted, newest = await _scope_row(a_storage)
    assert (timestamp, newest, live, counted) == (b_created["last_modified"], timestamp, 2, 2)


async def test_concurrent_writers_keep_timestamps_ordered_and_counts_exact(
    storages: list[PostgreSQLStorage],
) -> None:
    ids = [f"r{i}" for i in range(6)]  # few ids: writers meet on the same objects
    async with storages[0].transaction(write=True) as tx:
        await tx.create(RECORD, PARENT, {"id": "seed"})
    stop = asyncio.Event()
    conflicts = 0
    written: list[int] = []

    async def writer(storage: PostgreSQLStorage, seed: int) -> None:
        nonlocal conflicts
        rng = random.Random(seed)
        for _ in range(30):
            object_id = rng.choice(ids)
            while True:
                try:
                    async with storage.transaction(write=True) as tx:
                        found = await tx.get(RECORD, PARENT, object_id)
                        if found is None:
                            result = await _create(tx, object_id)
                        elif rng.random() < 0.5:
                            result = await _update(tx, object_id)
                        else:
                            result = await _delete(tx, object_id)
                        if rng.random() < 0.3:  # a second write in the same transaction
                            extra = f"{object_id}-{rng.randrange(3)}"
                            if await tx.get(RECORD, PARENT, extra) is None:
                                await _create(tx, extra)
                    written.append(result["last_modified"])
                    break
                except TransactionConflict:
                    conflicts += 1

    async def reader() -> int:
        """Snapshots of the scope: none adds an object below a timestamp seen before."""
        previous_timestamp, previous = -1, {}
        reads = 0
        query = ListQuery(include_deleted=True)
        while not stop.is_set() or reads < 3:
            async with storages[2].transaction(write=False) as tx:
                timestamp = await tx.resource_timestamp(RECORD, PARENT)
                objects = {
                    o["id"]: o["last_modified"] for o in await tx.list(RECORD, PARENT, query)
                }
            assert timestamp >= previous_timestamp
            assert timestamp == max(objects.values())
            assert len(set(objects.values())) == len(objects)  # unique timestamps
            late = {
                i: t for i, t in objects.items() if t <= previous_timestamp and previous.get(i) != t
            }
            assert not late, (previous_timestamp, late)
            previous_timestamp, previous = timestamp, objects
            reads += 1
        return reads

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(storages[n % 3], n) for n in range(9)))
    stop.set()
    assert await reading >= 3
    assert len(set(written)) == len(written) == 9 * 30
    timestamp, live, counted, newest = await _scope_row(storages[0])
    assert live == counted and timestamp == newest
    async with storages[0].transaction(write=False) as tx:
        assert await tx.count(RECORD, PARENT, ListQuery()) == counted


def _random_acls(
    rng: random.Random, principals: list[str], perms: list[str], initial: int
) -> tuple[dict[str, list[str]], dict[str, list[str]] | None]:
    """An ACL with `initial` permissions, and one to replace it with (None: none)."""
    first = {p: rng.sample(principals, rng.randrange(3)) for p in rng.sample(perms, initial)}
    if rng.random() < 0.3:
        return first, None
    return first, {p: rng.sample(principals, rng.randrange(3)) for p in rng.sample(perms, 2)}


async def test_write_object_permissions_is_replace_add_and_get_in_one_statement(
    storages: list[PostgreSQLStorage],
) -> None:
    permission = PostgreSQLPermission(storages[0].db)
    rng = random.Random(7)
    principals = ["alice", "bob", "carl", "system.Everyone"]
    perms = ["read", "write", "record:create"]
    for case in range(40):
        fast, slow = f"/fast/{case}", f"/slow/{case}"
        initial, replace = _random_acls(rng, principals, perms, 2)
        add = [(rng.choice(perms), rng.choice(principals)) for _ in range(rng.randrange(3))]
        async with permission.transaction(write=True) as tx:
            for uri in (fast, slow):
                await tx.replace_object_permissions(uri, initial)
            if replace is not None:
                await tx.replace_object_permissions(slow, replace)
            for p, q in add:
                await tx.add_principal_to_ace(slow, p, q)
            expected = await tx.get_object_permissions(slow)
            async with _statements(tx) as statements:
                answered = await tx.write_object_permissions(fast, replace, add)
            assert len(statements) == 1, statements
            assert answered == expected, (initial, replace, add)
            assert await tx.get_object_permissions(fast) == expected


async def test_create_with_acl_is_create_and_write_object_permissions_in_one_statement(
    storages: list[PostgreSQLStorage],
) -> None:
    """Once the scope is held, a create carries its object's ACL (the same answer as
    ``write_object_permissions``, over entries the URI may have left); a live object
    with the key writes neither."""
    storage = storages[0]
    permission = PostgreSQLPermission(storage.db)
    rng = random.Random(11)
    principals = ["alice", "bob", "system.Everyone"]
    perms = ["read", "write"]
    await _committed_create(storage, "live")
    async with storage.transaction(write=True) as tx, permission.transaction(write=True) as ptx:
        await _create(tx, "held")
        for case in range(30):
            fast, slow = f"{PARENT}/records/f{case}", f"{PARENT}/records/s{case}"
            initial, replace = _random_acls(rng, principals, perms, 1)
            add = [("write", rng.choice(principals))]
            for uri in (fast, slow):  # left by an object deleted long ago, say
                await ptx.replace_object_permissions(uri, initial)
            expected = await ptx.write_object_permissions(slow, replace, add)
            async with _statements(tx) as statements:
                done = await tx.create_with_acl(
                    RECORD, PARENT, {"id": f"f{case}", "n": case}, ptx, fast, replace, add
                )
            assert len(statements) == 1, statements
            assert done is not None
            created, acl = done
            assert acl == expected == await ptx.get_object_permissions(fast)
            assert created == await tx.get(RECORD, PARENT, f"f{case}")
        # A live object has the key: nothing written, the ACL left as it was.
        live = f"{PARENT}/records/live"
        await ptx.replace_object_permissions(live, {"read": ["bob"]})
        with pytest.raises(UnicityError):
            await tx.create_with_acl(RECORD, PARENT, {"id": "live"}, ptx, live, None, add)
        assert await ptx.get_object_permissions(live) == {"read": {"bob"}}
        # Read as live by this transaction: create() says what happens.
        held = f"{PARENT}/records/held"
        assert await tx.create_with_acl(RECORD, PARENT, {"id": "held"}, ptx, held, None, []) is None
    await _assert_scope_exact(storage)


async def _read_as_live(tx: PostgreSQLStorageTransaction, how: str, *object_ids: str) -> None:
    """Read objects as a request does before it writes them: one by one, or in a listing
    (the objects of a plural DELETE: what a write transaction lists, it has read)."""
    if how == "listed":
        listed = {o["id"] for o in await tx.list(RECORD, PARENT, ListQuery())}
        assert listed >= set(object_ids)
    else:
        for object_id in object_ids:
            assert await tx.get(RECORD, PARENT, object_id) is not None


@pytest.mark.parametrize("how", ["one by one", "listed"])
async def test_delete_with_acl_deletes_an_unchanged_object_and_its_acl_in_one_statement(
    storages: list[PostgreSQLStorage], how: str
) -> None:
    storage = storages[0]
    permission = PostgreSQLPermission(storage.db)
    for object_id in ("a", "b", "c"):
        await _committed_create(storage, object_id)
    uri = f"{PARENT}/records/" + "{}"
    async with storage.transaction(write=True) as tx, permission.transaction(write=True) as ptx:
        for object_id in ("a", "b", "c"):
            await ptx.replace_object_permissions(uri.format(object_id), {"write": ["alice"]})
        await _read_as_live(tx, how, "a", "b", "c")
        await _update(tx, "c")  # the scope is now held
        async with _statements(tx) as statements:
            tombstone = await tx.delete_with_acl(RECORD, PARENT, "a", ptx, uri.format("a"))
        assert len(statements) == 1, statements
        assert tombstone is not None and tombstone["deleted"] is True
        assert await tx.get(RECORD, PARENT, "a") is None
        assert await ptx.get_object_permissions(uri.format("a")) == {}
        # Not read in this transaction: not done here (the service deletes in two calls).
        assert await tx.delete_with_acl(RECORD, PARENT, "x", ptx, uri.format("x")) is None
    # Changed by another transaction since it was read: the statement writes nothing, the
    # object as committed now is read (once: the statement is not tried again) and the
    # delete conflicts; the ACL is kept.
    async with storage.transaction(write=True) as tx, permission.transaction(write=True) as ptx:
        await _read_as_live(tx, how, "b")
        async with storages[1].transaction(write=True) as other:
            await _update(other, "b")
        await _update(tx, "c")  # the scope is held
        async with _statements(tx) as statements:
            with pytest.raises(TransactionConflict):
                await tx.delete_with_acl(RECORD, PARENT, "b", ptx, uri.format("b"))
        assert len(statements) == 2, statements
        assert await ptx.get_object_permissions(uri.format("b")) == {"write": {"alice"}}
    await _assert_scope_exact(storage)


async def test_create_and_delete_with_acl_decline_a_permission_transaction_of_its_own(
    storages: list[PostgreSQLStorage],
) -> None:
    other = PostgreSQLPermission(storages[1].db)  # another pool: another transaction
    async with storages[0].transaction(write=True) as tx, other.transaction(write=True) as ptx:
        assert await tx.create_with_acl(RECORD, PARENT, {"id": "a"}, ptx, "/a", None, []) is None
        assert await tx.create_with_acl(RECORD, PARENT, {"id": "a"}, None, "/a", None, []) is None
        assert await tx.get(RECORD, PARENT, "a") is None  # nothing was done
        await _create(tx, "b")
        assert await tx.delete_with_acl(RECORD, PARENT, "b", ptx, "/b") is None
        assert await tx.get(RECORD, PARENT, "b") is not None


async def _committed_create(storage: PostgreSQLStorage, object_id: str) -> int:
    async with storage.transaction(write=True) as tx:
        created = await _create(tx, object_id)
    return int(created["last_modified"])


async def _seed_future_scope(storage: PostgreSQLStorage) -> int:
    """A scope whose timestamp is ahead of the clock: every write takes previous + 1, so a
    write computed from a stale value of the scope row repeats a timestamp."""
    future = 2 * 10**12 + random.randrange(10**9)
    async with storage.transaction(write=True) as tx:
        await tx.create(RECORD, PARENT, {"id": "seed", "last_modified": future})
    return future


async def _assert_scope_exact(storage: PostgreSQLStorage) -> None:
    timestamp, live, counted, newest = await _scope_row(storage)
    assert (live, timestamp) == (counted, newest)
    async with storage.transaction(write=False) as tx:
        stamps = [o["last_modified"] for o in await tx.list(RECORD, PARENT, ListQuery())]
    assert len(set(stamps)) == len(stamps)


async def test_a_scope_lock_undone_by_a_savepoint_is_taken_again(
    storages: list[PostgreSQLStorage],
) -> None:
    """The scope row locked inside a savepoint is unlocked when the savepoint is rolled
    back: a later write of the transaction must lock and read it again, not reuse the
    value it knew (another process may have written in the scope meanwhile)."""
    future = await _seed_future_scope(storages[0])
    async with storages[0].transaction(write=True) as tx:
        with pytest.raises(RuntimeError):
            async with storages[0].transaction(write=True) as nested:
                assert (await _create(nested, "undone"))["last_modified"] == future + 1
                raise RuntimeError()
        # Not blocked: the rollback released the scope row.
        others = [await _committed_create(storages[1], f"other{i}") for i in range(2)]
        assert others == [future + 1, future + 2]
        assert (await _create(tx, "after"))["last_modified"] == future + 3
    await _assert_scope_exact(storages[0])


async def _three_members(
    storage: PostgreSQLStorage,
    work: Callable[[str, PostgreSQLStorageTransaction], Awaitable[None]],
) -> list[Any]:
    """Group commit: requests "first" (a careful attempt: the member after it starts with
    a savepoint), "failing" and "third" join one group in that order and run `work`; their
    outcomes."""

    async def member(name: str) -> None:
        attempt = Attempt(last=False, careful=name == "first", scope="/v1/scope")
        token = CURRENT_ATTEMPT.set(attempt)
        try:
            async with storage.transaction(write=True) as tx:
                await work(name, tx)
        finally:
            CURRENT_ATTEMPT.reset(token)

    tasks = []
    for name in ("first", "failing", "third"):
        tasks.append(asyncio.create_task(member(name)))
        await asyncio.sleep(0.005)
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_the_scope_row_follows_the_writes_of_a_transaction_and_its_savepoints(
    storages: list[PostgreSQLStorage],
) -> None:
    """Reads of the transaction see the scope's timestamp and live count its writes left;
    a savepoint's rollback takes back those made in it."""
    storage = storages[0]
    await _committed_create(storage, "old")
    async with storage.transaction(write=True) as tx:
        a = await _create(tx, "a")
        await _create(tx, "b")
        await _delete(tx, "old")
        with pytest.raises(RuntimeError):
            async with storage.transaction(write=True) as nested:
                await _create(nested, "undone")
                assert await nested.count(RECORD, PARENT, ListQuery()) == 3
                raise RuntimeError()
        b = await _update(tx, "b")
        assert await tx.resource_timestamp(RECORD, PARENT) == b["last_modified"]
        assert await tx.count(RECORD, PARENT, ListQuery()) == 2
        assert b["last_modified"] > a["last_modified"]
    timestamp, live, _, _ = await _scope_row(storage)
    assert (live, timestamp) == (2, b["last_modified"])
    await _assert_scope_exact(storage)


async def test_a_failed_group_member_takes_back_its_moves_of_the_scope_row(
    storages: list[PostgreSQLStorage],
) -> None:
    """Group commit: the member after a careful one starts with a savepoint; rolled back
    to it, the scope row is as it was before it, and moves on with the next member."""
    storage = storages[0]
    await _committed_create(storage, "old")
    results: dict[str, Any] = {}

    async def member(name: str, tx: PostgreSQLStorageTransaction) -> None:
        results[name] = await _create(tx, name)
        if name == "failing":
            await _delete(tx, "old")
            raise RuntimeError()
        await asyncio.sleep(0.02)  # the others queue behind it

    outcome = await _three_members(storage, member)
    assert outcome[0] is None and isinstance(outcome[1], RuntimeError) and outcome[2] is None
    timestamp, live, _, _ = await _scope_row(storage)
    assert (live, timestamp) == (3, results["third"]["last_modified"])
    await _assert_scope_exact(storage)


async def test_a_scope_lock_undone_with_a_failed_group_member_is_taken_again(
    storages: list[PostgreSQLStorage],
) -> None:
    """Group commit: the second member locks the scope in its savepoint and fails; the
    third, in the same PostgreSQL transaction, must not reuse the value it left. (The
    first is a careful attempt: the member after it starts with a savepoint.)"""
    future = await _seed_future_scope(storages[0])
    storage = storages[0]
    ran: list[str] = []

    async def member(name: str, tx: PostgreSQLStorageTransaction) -> None:
        ran.append(name)
        if name == "first":  # reads only: no lock; the others queue meanwhile
            await tx.get(RECORD, PARENT, "seed")
            await asyncio.sleep(0.05)
        elif name == "failing":
            await _create(tx, "undone")
            raise RuntimeError()
        else:
            others = [await _committed_create(storages[1], f"o{i}") for i in range(2)]
            assert others == [future + 1, future + 2]
            await _create(tx, "third")

    results = await _three_members(storage, member)
    assert ran == ["first", "failing", "third"]
    assert results[0] is None and isinstance(results[1], RuntimeError) and results[2] is None
    async with storage.transaction(write=False) as tx:
        third = await tx.get(RECORD, PARENT, "third")
        assert await tx.get(RECORD, PARENT, "undone") is None
    assert third is not None and third["last_modified"] == future + 3
    await _assert_scope_exact(storage)


async def test_writes_after_the_first_in_a_scope_skip_its_lock_statement(
    storages: list[PostgreSQLStorage],
) -> None:
    """Once its transaction holds the scope, a create is one statement (check and write),
    and so is an update or a delete of an object it read as live (written if unchanged
    since), each moving the scope row."""
    storage = storages[0]
    async with storage.transaction(write=True) as tx:
        await _create(tx, "a")
        async with _statements(tx) as statements:
            await _create(tx, "b")
            await _update(tx, "a")
            await _delete(tx, "b")
    assert len(statements) == 3, statements
    assert not any("FOR UPDATE" in s for s in statements)
    await _assert_scope_exact(storage)


async def test_a_write_after_a_purge_in_its_transaction_makes_the_scope_row_again(
    storages: list[PostgreSQLStorage],
) -> None:
    async with storages[0].transaction(write=True) as tx:
        await _create(tx, "gone")
        await tx.purge("/buckets/b")  # the scope row goes with the objects
        await _create(tx, "kept")
    await _assert_scope_exact(storages[0])
    async with storages[0].transaction(write=False) as tx:
        assert [o["id"] for o in await tx.list(RECORD, PARENT, ListQuery())] == ["kept"]


async def test_writers_of_a_scope_queue_on_its_advisory_lock(
    storages: list[PostgreSQLStorage],
) -> None:
    """The row lock's own queue lets a waiter be overtaken while the row keeps changing:
    writers wait in the (first come, first served) queue of the scope's advisory lock."""
    await _committed_create(storages[0], "seed")
    async with storages[0].transaction(write=True) as tx:
        await _create(tx, "holder")
        waiting = asyncio.create_task(_committed_create(storages[1], "waiter"))
        conn = await asyncpg.connect(storages[0].db.dsn)
        try:
            for _ in range(200):
                rows = await conn.fetch(
                    "SELECT granted FROM pg_locks WHERE locktype = 'advisory'"
                    " AND classid = $1 AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())",
                    int.from_bytes(b"nuag", "big"),
                )
                if len(rows) == 2:
                    break
                await asyncio.sleep(0.01)
        finally:
            await conn.close()
        assert sorted(row["granted"] for row in rows) == [False, True]
        assert not waiting.done()
    assert await waiting == (await _scope_row(storages[0]))[0]  # it wrote last
    await _assert_scope_exact(storages[0])


async def test_a_create_in_a_held_scope_writes_nothing_when_the_object_is_live(
    storages: list[PostgreSQLStorage],
) -> None:
    a_timestamp = await _committed_create(storages[0], "a")
    async with storages[0].transaction(write=True) as tx:
        held = await _create(tx, "b")  # the scope is now held
        with pytest.raises(UnicityError):
            await tx.create(RECORD, PARENT, {"id": "a", "v": "other"})
        assert await tx.get(RECORD, PARENT, "a") == {
            "id": "a",
            "v": "new",
            "last_modified": a_timestamp,
        }
        await _delete(tx, "b")
        again = await _create(tx, "b")  # over its tombstone
    assert again["last_modified"] > held["last_modified"]
    await _assert_scope_exact(storages[0])
    timestamp, live, _, _ = await _scope_row(storages[0])
    assert (live, timestamp) == (2, again["last_modified"])


async def test_a_create_in_a_held_scope_of_an_object_created_since_it_was_read_conflicts(
    storages: list[PostgreSQLStorage],
) -> None:
    async with storages[0].transaction(write=True) as tx:
        assert await tx.get(RECORD, PARENT, "x") is None
        await _committed_create(storages[1], "x")  # before this transaction locks the scope
        await _create(tx, "y")
        with pytest.raises(TransactionConflict):
            await _create(tx, "x")


async def test_principals_are_read_once_per_transaction_until_they_change(
    storages: list[PostgreSQLStorage],
) -> None:
    """A batch reads its user's principals once; a write of principals, or the rollback of
    a savepoint that wrote some, makes the next read go to the database again."""
    permission = PostgreSQLPermission(storages[0].db)
    async with permission.transaction(write=True) as tx, _statements(tx) as statements:
        assert await tx.get_user_principals("alice", "system.Authenticated") == set()
        assert await tx.get_user_principals("alice", "system.Authenticated") == set()
        await asyncio.sleep(0)
        assert len(statements) == 1
        await tx.add_user_principal("alice", "/buckets/b/groups/g")
        assert await tx.get_user_principals("alice", "system.Authenticated") == {
            "/buckets/b/groups/g"
        }
        with pytest.raises(RuntimeError):
            async with permission.transaction(write=True) as nested:
                await nested.add_user_principal("alice", "/buckets/b/groups/undone")
                assert "/buckets/b/groups/undone" in await nested.get_user_principals(
                    "alice", "system.Authenticated"
                )
                raise RuntimeError()
        assert await tx.get_user_principals("alice", "system.Authenticated") == {
            "/buckets/b/groups/g"
        }
        await tx.remove_user_principal("alice", "/buckets/b/groups/g")
        assert await tx.get_user_principals("alice", "system.Authenticated") == set()
        await tx.add_user_principal("alice", "/buckets/b/groups/h")
        assert await tx.get_user_principals("alice", "system.Authenticated") == {
            "/buckets/b/groups/h"
        }
        await tx.remove_principal("/buckets/b/groups/h")
        assert await tx.get_user_principals("alice", "system.Authenticated") == set()


async def test_an_object_read_in_a_write_transaction_sees_its_own_writes(
    storages: list[PostgreSQLStorage],
) -> None:
    """A create checks its parent and the caller's grant on it in one statement of its
    transaction: a batch that creates the parent first must see it, and its ACL."""
    storage = storages[0]
    permission = PostgreSQLPermission(storage.db)
    bound = (("/buckets/b", "record:create"), ("/buckets/b", "write"))
    async with storage.transaction(write=True) as tx, permission.transaction(write=True) as pt:
        await tx.create("bucket", "", {"id": "b"})
        await pt.add_principal_to_ace("/buckets/b", "write", "alice")
        async with _statements(tx) as statements:
            for principals, granted in ((("alice", "system.Everyone"), True), (("bob",), False)):
                view = await tx.read_object(
                    ObjectRead(
                        user_ids=(),
                        principals=principals,
                        bound=bound,
                        object=("bucket", "", "b"),
                    )
                )
                assert view.granted is granted
                assert view.object is not None and view.object["id"] == "b"
            missing = await tx.read_object(
                ObjectRead(
                    user_ids=(), principals=("alice",), bound=bound, object=("bucket", "", "x")
                )
            )
            assert missing.object is None and missing.granted
    # One statement each (asyncpg also introspects a type the first time it meets it).
    assert len([s for s in statements if "FROM objects" in s]) == 3
    assert all("FROM objects" in s or "pg_catalog" in s or "jit" in s for s in statements)


async def test_a_write_after_an_early_read_of_an_object_changed_since_makes_the_rerun_careful(
    storages: list[PostgreSQLStorage],
) -> None:
    """A member of a group commit reads the object before joining its group; a write that
    then finds it changed conflicts, and the rerun reads in the group."""
    storage = storages[0]
    await _committed_create(storage, "x")
    read = ObjectRead(
        user_ids=(),
        principals=("alice",),
        bound=((PARENT, "write"),),
        object=(RECORD, PARENT, "x"),
    )
    attempt = Attempt(last=False, scope="/v1/s")
    token = CURRENT_ATTEMPT.set(attempt)
    try:
        with pytest.raises(TransactionConflict):
            async with storage.transaction(write=True) as tx:
                assert (await tx.read_object(read)).object is not None
                assert tx._tx.conn is None  # read outside the group
                async with storages[1].transaction(write=True) as other:
                    await _delete(other, "x")  # another process, meanwhile
                await _update(tx, "x")
        assert attempt.careful
        async with storage.transaction(write=True) as tx:
            assert (await tx.read_object(read)).object is None
            assert tx._tx.conn is not None  # read in the group
            await _create(tx, "x")
    finally:
        CURRENT_ATTEMPT.reset(token)
    timestamp, live, counted, newest = await _scope_row(storage)
    assert live == counted == 1 and timestamp == newest


async def test_a_transaction_reads_an_object_with_a_grant_once_until_a_write_may_change_it(
    storages: list[PostgreSQLStorage],
) -> None:
    """A batch of creates in one collection reads the collection and the caller's grant on
    it once. The read is made again after a write of its object, of an ACL it depends on,
    after any write its caller does not describe (principals, other ACLs), and after the
    rollback of a savepoint."""
    storage = storages[0]
    permission = PostgreSQLPermission(storage.db)
    read = ObjectRead(
        user_ids=(),
        principals=("alice",),
        bound=(("/buckets/b", "write"), ("/buckets/b/collections/c", "write")),
        object=("collection", "/buckets/b", "c"),
    )

    async with storage.transaction(write=True) as tx, permission.transaction(write=True) as pt:

        async def reads() -> tuple[int, Any]:
            """How many statements reading `read` took (asyncpg also introspects a type the
            first time it meets it), and what it answered."""
            async with _statements(tx) as statements:
                view = await tx.read_object(read)
            return len([s for s in statements if "FROM objects" in s]), view

        # The scopes written below are held (a new scope's row is an insert: it would
        # forget every read).
        await tx.create("collection", "/buckets/b", {"id": "c", "v": 1})
        await tx.create("bucket", "", {"id": "a"})
        await _create(tx, "r0")
        assert await reads() == (
            1,
            ObjectView(frozenset(), False, {"id": "c", "v": 1, "last_modified": ANY}, None, {}),
        )
        assert (await reads())[0] == 0
        # Objects of other keys, ACLs of other URIs: still true.
        records = "/buckets/b/collections/c/records/"
        await tx.create_with_acl(RECORD, PARENT, {"id": "r1"}, pt, records + "r1", None, [])
        await tx.create_with_acl(RECORD, PARENT, {"id": "r2"}, pt, records + "r2", None, [])
        assert await tx.get(RECORD, PARENT, "r2") is not None
        await tx.delete_with_acl(RECORD, PARENT, "r2", pt, records + "r2")
        assert (await reads())[0] == 0
        # The ACL of a bound URI, written with an object: read again.
        await tx.create_with_acl(
            "bucket", "", {"id": "b"}, pt, "/buckets/b", None, [("write", "alice")]
        )
        count, view = await reads()
        assert (count, view.granted) == (1, True)
        # The object itself: read again.
        await tx.update("collection", "/buckets/b", "c", {"id": "c", "v": 2})
        count, view = await reads()
        assert (count, view.object["v"]) == (1, 2)
        # A write that does not say what it changed: read again.
        await pt.replace_object_permissions("/buckets/b", {"write": ["bob"]})
        count, view = await reads()
        assert (count, view.granted) == (1, False)
        assert (await reads())[0] == 0
        # A savepoint rolled back: read again, and what it wrote is gone.
        with pytest.raises(RuntimeError):
            async with permission.transaction(write=True) as nested:
                await nested.add_principal_to_ace("/buckets/b/collections/c", "write", "alice")
                assert (await reads())[1].granted
                raise RuntimeError()
        count, view = await reads()
        assert (count, view.granted) == (1, False)


async def test_an_object_read_answers_the_create_grant_apart_when_asked(
    storages: list[PostgreSQLStorage],
) -> None:
    """A PUT that may create reads the object, its write grant and its create grant in one
    statement: `create_granted` answers the create pairs alone, None when not asked."""
    storage = storages[0]
    permission = PostgreSQLPermission(storage.db)
    async with permission.transaction(write=True) as pt:
        await pt.add_principal_to_ace(PARENT, "record:create", "alice")
        await pt.add_principal_to_ace(PARENT, "write", "bob")
    create = ((PARENT, "record:create"), (PARENT, "write"))
    write = ((f"{PARENT}/records/x", "write"), (PARENT, "write"))
    async with storage.transaction(write=True) as tx:
        for principals, granted, create_granted in (
            (("alice",), False, True),
            (("bob", "system.Everyone"), True, True),
            (("carol",), False, False),
        ):
            read = ObjectRead((), principals, write, (RECORD, PARENT, "x"), create_bound=create)
            view = await tx.read_object(read)
            assert (view.granted, view.create_granted) == (granted, create_granted), principals
            assert view.object is None
            view = await tx.read_object(read._replace(create_bound=()))
            assert (view.granted, view.create_granted) == (granted, None)


# -- deferred writes (PostgreSQLTransaction.fetch_deferrable) ---------------------------
# A create, update or delete, once its scope is locked, is sent with the transaction's
# other deferred writes (a group commit's: its members') before its next statement or
# its commit. Should one answer other than expected, the transaction (every member of the
# group) is rerun, the owners of the deferred writes carefully. A request without a scope
# (a batch) has a transaction of its own.

SCOPE = "/v1/scope"


async def _request(
    storage: PostgreSQLStorage,
    name: str,
    work: Callable[[PostgreSQLStorageTransaction], Awaitable[Any]],
    runs: list[str],
    *,
    careful: bool = False,
    last: bool = False,
    scope: str | None = SCOPE,
) -> Any:
    """A write request of `scope` (a batch: None), rerun on a TransactionConflict as the
    dispatcher does; each run is appended to `runs`, with whether it was careful."""

    async def run(attempt: Attempt) -> Any:
        runs.append(f"{name} careful" if attempt.careful or attempt.last else name)
        async with storage.transaction(write=True) as tx:
            return await work(tx)

    return await request(run, scope=scope, attempts=4, careful=careful, last=last)


async def _in_order(*requests: Awaitable[Any]) -> list[Any]:
    """Start `requests` a little apart (they join their group in this order)."""
    tasks = []
    for started in requests:
        tasks.append(asyncio.ensure_future(started))
        await asyncio.sleep(0.005)
    return await asyncio.gather(*tasks, return_exceptions=True)


def _creating(object_id: str, logged: list[Any] | None = None) -> Any:
    async def work(tx: PostgreSQLStorageTransaction) -> Any:
        created = await _create(tx, object_id)
        if logged is not None and not logged:
            tx._tx.conn.add_query_logger(logged.append)
        await asyncio.sleep(0.02)  # the others queue behind it
        return created

    return work


async def _terminate(tx: PostgreSQLStorageTransaction) -> None:
    """End the backend of `tx`'s connection, as a restart or a network failure would."""
    conn = await asyncpg.connect(tx._tx.db.dsn)
    try:
        await conn.execute("SELECT pg_terminate_backend($1)", tx._tx.conn.get_server_pid())
    finally:
        await conn.close()


async def _objects(storage: PostgreSQLStorage) -> dict[str, Any]:
    async with storage.transaction(write=False) as tx:
        return {o["id"]: o for o in await tx.list(RECORD, PARENT, ListQuery())}


async def test_the_writes_of_a_group_are_sent_together_before_its_commit(
    storages: list[PostgreSQLStorage],
) -> None:
    storage = storages[0]
    runs: list[str] = []
    logged: list[Any] = []
    results = await _in_order(
        *(_request(storage, f"m{i}", _creating(f"m{i}", logged), runs) for i in range(5))
    )
    assert runs == [f"m{i}" for i in range(5)]  # each ran once
    # The first locked the scope; the others wrote nothing alone: one round trip for the
    # five creates, then the commit.
    creates = [r for r in logged if "INSERT INTO objects" in r.query]
    assert len(creates) == 1 and len(creates[0].args) == 5, logged
    assert [r.query for r in logged][-1] == "COMMIT;"
    stored = await _objects(storage)
    assert {k: v["last_modified"] for k, v in stored.items()} == {
        r["id"]: r["last_modified"] for r in results
    }
    await _assert_scope_exact(storage)


async def test_a_deferred_create_of_a_live_key_reruns_its_group_carefully(
    storages: list[PostgreSQLStorage],
) -> None:
    storage = storages[0]
    taken = await _committed_create(storage, "x")
    runs: list[str] = []
    results = await _in_order(
        _request(storage, "a", _creating("a"), runs),
        _request(storage, "x", _creating("x"), runs),  # not read first: deferred
        _request(storage, "b", _creating("b"), runs),
    )
    assert isinstance(results[1], UnicityError)  # found by its careful rerun
    assert sorted(runs) == ["a", "a careful", "b", "b careful", "x", "x careful"]
    stored = await _objects(storage)
    assert sorted(stored) == ["a", "b", "x"]
    assert stored["x"] == {"id": "x", "v": "new", "last_modified": taken}
    await _assert_scope_exact(storage)


async def test_a_deferred_update_of_an_object_changed_since_it_was_read_is_rerun(
    storages: list[PostgreSQLStorage],
) -> None:
    storage = storages[0]
    await _committed_create(storage, "x")
    runs: list[str] = []

    async def update(tx: PostgreSQLStorageTransaction) -> Any:
        assert await tx.get(RECORD, PARENT, "x") is not None
        if len(runs) == 1:  # another process, between this read and the group's lock
            async with storages[1].transaction(write=True) as other:
                await other.update(RECORD, PARENT, "x", {"id": "x", "v": "other"})
        return await tx.update(RECORD, PARENT, "x", {"id": "x", "v": f"run {len(runs)}"})

    updated = await _request(storage, "u", update, runs)
    assert runs == ["u", "u careful"]
    assert updated["v"] == "run 2" == (await _objects(storage))["x"]["v"]
    await _assert_scope_exact(storage)


async def test_a_careful_member_follows_the_writes_before_it(
    storages: list[PostgreSQLStorage],
) -> None:
    """It starts with a savepoint: the deferred writes before it are sent first, and its
    failure, rolled back to that savepoint, does not take them back."""
    storage = storages[0]
    runs: list[str] = []

    async def failing(tx: PostgreSQLStorageTransaction) -> None:
        await _create(tx, "undone")
        raise RuntimeError()

    results = await _in_order(
        _request(storage, "a", _creating("a"), runs),
        _request(storage, "careful", failing, runs, careful=True),
        _request(storage, "b", _creating("b"), runs),
    )
    assert isinstance(results[1], RuntimeError)
    assert runs == ["a", "careful careful", "b"]
    assert sorted(await _objects(storage)) == ["a", "b"]
    await _assert_scope_exact(storage)


async def test_a_careful_member_is_not_rerun_when_the_writes_before_it_fail(
    storages: list[PostgreSQLStorage],
) -> None:
    storage = storages[0]
    await _committed_create(storage, "x")
    runs: list[str] = []
    results = await _in_order(
        _request(storage, "x", _creating("x"), runs),  # deferred, and fails
        _request(storage, "careful", _creating("c"), runs, careful=True),
    )
    assert isinstance(results[0], UnicityError)
    assert sorted(runs) == ["careful careful", "x", "x careful"]
    assert sorted(await _objects(storage)) == ["c", "x"]
    await _assert_scope_exact(storage)


@pytest.mark.parametrize("scope", [SCOPE, None])
async def test_no_write_is_deferred_in_a_savepoint_and_none_before_it_is_lost(
    storages: list[PostgreSQLStorage], scope: str | None
) -> None:
    storage = storages[0]
    runs: list[str] = []

    async def work(tx: PostgreSQLStorageTransaction) -> None:
        await _create(tx, "before")  # deferred
        with pytest.raises(RuntimeError):
            async with storage.transaction(write=True) as nested:
                await _create(nested, "undone")
                raise RuntimeError()
        await _create(tx, "after")

    await _request(storage, "m", work, runs, scope=scope)
    assert runs == ["m"]
    assert sorted(await _objects(storage)) == ["after", "before"]
    await _assert_scope_exact(storage)


@pytest.mark.parametrize("scope", [SCOPE, None])
@pytest.mark.parametrize("careful", [False, True])
async def test_only_an_attempt_that_may_be_rerun_defers_its_writes(
    storages: list[PostgreSQLStorage], careful: bool, scope: str | None
) -> None:
    """A create of a live key: a careful (or last) attempt learns it at its write, another
    at its commit (its rerun is careful)."""
    storage = storages[0]
    await _committed_create(storage, "x")
    raised: list[str] = []

    async def work(tx: PostgreSQLStorageTransaction) -> None:
        await _create(tx, "a")
        try:
            await _create(tx, "x")
        except UnicityError:
            raised.append("at the write")
            raise

    runs: list[str] = []
    with pytest.raises(UnicityError):
        await _request(storage, "m", work, runs, careful=careful, scope=scope)
    assert runs == (["m careful"] if careful else ["m", "m careful"])
    assert raised == ["at the write"]  # by the careful run only
    assert sorted(await _objects(storage)) == ["x"]


async def test_a_group_whose_deferred_writes_cannot_be_sent_fails_every_member(
    storages: list[PostgreSQLStorage],
) -> None:
    storage = storages[0]
    runs: list[str] = []

    async def cut(tx: PostgreSQLStorageTransaction) -> None:
        await _create(tx, "lost")
        await _terminate(tx)

    results = await _in_order(
        _request(storage, "a", _creating("a"), runs),
        _request(storage, "cut", cut, runs),
    )
    assert all(isinstance(result, BackendError) for result in results), results
    assert runs == ["a", "cut"]
    assert await _objects(storage) == {}
    await _committed_create(storage, "later")  # the pool recovered
    assert sorted(await _objects(storage)) == ["later"]


@pytest.mark.parametrize("scope", [SCOPE, None])
async def test_a_statement_after_deferred_writes_sees_them(
    storages: list[PostgreSQLStorage], scope: str | None
) -> None:
    storage = storages[0]

    async def work(tx: PostgreSQLStorageTransaction) -> Any:
        created = await _create(tx, "a")
        await _update(tx, "a")  # read as live by its create: deferred too
        return created, await tx.get(RECORD, PARENT, "a")

    created, read = await _request(storage, "m", work, [], scope=scope)
    assert read["v"] == "updated" and read["last_modified"] > created["last_modified"]
    await _assert_scope_exact(storage)


async def test_a_transaction_of_its_own_sends_its_writes_together_before_its_commit(
    storages: list[PostgreSQLStorage],
) -> None:
    """A batch of creates: its lock, one round trip for the creates, its commit."""
    storage = storages[0]
    await _committed_create(storage, "seed")
    logged: list[Any] = []

    async def batch(tx: PostgreSQLStorageTransaction) -> list[Any]:
        created = [await _create(tx, "b0")]
        tx._tx.conn.add_query_logger(logged.append)
        created += [await _create(tx, f"b{i}") for i in range(1, 25)]
        return created

    runs: list[str] = []
    created = await _request(storage, "batch", batch, runs, scope=None)
    assert runs == ["batch"]
    await asyncio.sleep(0)  # asyncpg calls query loggers with call_soon
    creates = [r for r in logged if "INSERT INTO objects" in r.query]
    assert len(creates) == 1 and len(creates[0].args) == 25, logged
    assert [r.query for r in logged][-1] == "COMMIT;"
    stored = await _objects(storage)
    assert [stored[c["id"]]["last_modified"] for c in created] == [
        c["last_modified"] for c in created
    ]
    await _assert_scope_exact(storage)


async def _mixed_batch(
    storage: PostgreSQLStorage, batch: int, logged: list[Any] | None = None
) -> list[Any]:
    """In a transaction of its own, once its scope is locked: creates with and without
    an ACL, updates, and deletes with and without one, interleaved (as a group commit of
    ``mixed`` has them); `logged` gets the statements sent after the lock. The written
    objects and ACLs, with what the writes answered."""
    permission = PostgreSQLPermission(storage.db)
    uri = f"{PARENT}/records/" + "{}"
    for i in range(3):
        await _committed_create(storage, f"u{batch}-{i}")
        await _committed_create(storage, f"d{batch}-{i}")
    async with permission.transaction(write=True) as ptx:
        await ptx.replace_object_permissions(uri.format(f"d{batch}-0"), {"write": ["alice"]})

    async def work(tx: PostgreSQLStorageTransaction) -> list[Any]:
        async with permission.transaction(write=True, savepoint=False) as ptx:
            for i in range(3):
                await tx.get(RECORD, PARENT, f"u{batch}-{i}")
                await tx.get(RECORD, PARENT, f"d{batch}-{i}")
            answers = [await _create(tx, f"c{batch}-lock")]
            if logged is not None:
                tx._tx.conn.add_query_logger(logged.append)
            for i in range(3):
                created = await tx.create_with_acl(
                    RECORD, PARENT, {"id": f"a{batch}-{i}"}, ptx, uri.format(f"a{batch}-{i}"),
                    None, [("write", "bob")],
                )  # fmt: skip
                answers += [created, await _create(tx, f"c{batch}-{i}")]
                answers.append(await _update(tx, f"u{batch}-{i}"))
                d = f"d{batch}-{i}"
                answers.append(await tx.delete_with_acl(RECORD, PARENT, d, ptx, uri.format(d)))
            return answers

    runs: list[str] = []
    answers = await _request(storage, "batch", work, runs, scope=None)
    assert runs == ["batch"]
    await asyncio.sleep(0)  # asyncpg calls query loggers with call_soon
    return answers


async def test_creates_updates_and_deletes_of_a_transaction_are_sent_in_one_round_trip(
    storages: list[PostgreSQLStorage],
) -> None:
    """Whatever they are, the one-statement writes made once the scope is locked are sent
    together in one SQL text (the wider form, since some write an ACL), then the commit."""
    storage = storages[0]
    logged: list[Any] = []
    answers = await _mixed_batch(storage, 0, logged)
    writes = [r for r in logged if "INSERT INTO objects" in r.query]
    assert len(writes) == 1 and len(writes[0].args) == 13, logged  # the lock's create too
    assert "acl_added" in writes[0].query  # the form that writes an ACL, for all
    assert [r.query for r in logged][-1] == "COMMIT;"
    stored = await _objects(storage)
    permission = PostgreSQLPermission(storage.db)
    async with permission.transaction(write=False) as ptx:
        for i in range(3):
            created, acl = answers[1 + 4 * i]
            assert acl == {"write": {"bob"}}
            assert acl == await ptx.get_object_permissions(f"{PARENT}/records/a0-{i}")
            assert stored[f"a0-{i}"] == created
            assert stored[f"c0-{i}"] == answers[2 + 4 * i]
            assert stored[f"u0-{i}"] == answers[3 + 4 * i] and stored[f"u0-{i}"]["v"] == "updated"
            assert f"d0-{i}" not in stored and answers[4 + 4 * i]["deleted"] is True
        assert await ptx.get_object_permissions(f"{PARENT}/records/d0-0") == {}
    await _assert_scope_exact(storage)


async def test_writes_without_an_acl_to_write_are_sent_in_the_narrower_statement(
    storages: list[PostgreSQLStorage],
) -> None:
    """Without a create that writes its ACL, the writes do without the statement's ACL
    parts (deleting an object's ACL is in both forms)."""
    storage = storages[0]
    permission = PostgreSQLPermission(storage.db)
    uri = f"{PARENT}/records/" + "{}"
    for object_id in ("u", "d", "e"):
        await _committed_create(storage, object_id)
    async with permission.transaction(write=True) as ptx:
        await ptx.replace_object_permissions(uri.format("d"), {"write": ["alice"]})
    logged: list[Any] = []

    async def work(tx: PostgreSQLStorageTransaction) -> list[Any]:
        async with permission.transaction(write=True, savepoint=False) as ptx:
            for object_id in ("u", "d", "e"):
                await tx.get(RECORD, PARENT, object_id)
            answers = [await _create(tx, "c0")]
            tx._tx.conn.add_query_logger(logged.append)
            answers += [
                await _create(tx, "c1"),
                await _update(tx, "u"),
                await tx.delete_with_acl(RECORD, PARENT, "d", ptx, uri.format("d")),
                await _delete(tx, "e"),
            ]
            return answers

    answers = await _request(storage, "batch", work, [], scope=None)
    await asyncio.sleep(0)  # asyncpg calls query loggers with call_soon
    writes = [r for r in logged if "INSERT INTO objects" in r.query]
    assert len(writes) == 1 and len(writes[0].args) == 5, logged
    assert "acl_deleted" in writes[0].query and "acl_added" not in writes[0].query
    stored = await _objects(storage)
    assert [stored["c0"], stored["c1"], stored["u"]] == answers[:3]
    assert "d" not in stored and "e" not in stored
    assert answers[3]["deleted"] is True and answers[4]["deleted"] is True
    async with permission.transaction(write=False) as ptx:
        assert await ptx.get_object_permissions(uri.format("d")) == {}
    await _assert_scope_exact(storage)


async def test_a_write_sent_in_the_wider_form_that_answers_otherwise_reruns_carefully(
    storages: list[PostgreSQLStorage],
) -> None:
    """A deferred update whose object another process changed since it was read, sent in
    the wider form with a create and its ACL: the answers are matched to their writes,
    the mismatch found, and the transaction rerun without deferring."""
    storage = storages[0]
    permission = PostgreSQLPermission(storage.db)
    await _committed_create(storage, "x")
    runs: list[str] = []
    logged: list[Any] = []

    async def work(tx: PostgreSQLStorageTransaction) -> list[Any]:
        async with permission.transaction(write=True, savepoint=False) as ptx:
            assert await tx.get(RECORD, PARENT, "x") is not None
            if len(runs) == 1:  # another process, between this read and the lock
                async with storages[1].transaction(write=True) as other:
                    await other.update(RECORD, PARENT, "x", {"id": "x", "v": "other"})
            if not logged:
                tx._tx.conn.add_query_logger(logged.append)
            created = await tx.create_with_acl(
                RECORD, PARENT, {"id": "a"}, ptx, f"{PARENT}/records/a", None, [("write", "bob")]
            )
            return [created, await tx.update(RECORD, PARENT, "x", {"id": "x", "v": "mine"})]

    created, updated = await _request(storage, "w", work, runs, scope=None)
    assert runs == ["w", "w careful"]
    await asyncio.sleep(0)  # asyncpg calls query loggers with call_soon
    first = next(r for r in logged if "INSERT INTO objects" in r.query)
    assert len(first.args) == 2 and "acl_added" in first.query  # both, in the wider form
    stored = await _objects(storage)
    assert stored["x"] == updated and updated["v"] == "mine"
    assert stored["a"] == created[0] and created[1] == {"write": {"bob"}}
    await _assert_scope_exact(storage)


async def test_the_write_statement_is_planned_once_per_connection(
    storages: list[PostgreSQLStorage],
) -> None:
    """PostgreSQL plans a prepared statement anew at each execution (a custom plan) while
    that is cheaper than its generic plan: with parameters that make a part of the write
    statement unused (no ACL to write or to delete), it would be, at about 1 ms each time.
    Its parameters are hidden from the planner: after its first five executions, the
    generic plan is used."""
    storage = storages[0]
    async with storage.db.transaction(write=True) as tx:  # a table of some size
        await tx.execute(
            "INSERT INTO access_control_entries (key, object_uri, permission, principal)"
            " SELECT sha256(i::text::bytea), '/buckets/other/records/' || i, 'read', 'bob'"
            " FROM generate_series(1, 20000) AS i"
        )
    for batch in range(4):  # creates, creates with an ACL, updates, deletes: 52 in all
        await _mixed_batch(storage, batch)
    async with storage.db.transaction(write=False) as tx:
        rows = await tx.fetch(
            "SELECT generic_plans, custom_plans, statement LIKE '%acl_added%'"
            " FROM pg_prepared_statements WHERE statement LIKE 'WITH live AS%INSERT INTO objects%'"
        )
    assert all(custom <= 5 for _, custom, _ in rows), rows
    # The 52 writes of the batches were sent in the form that writes an ACL.
    wide = [generic for generic, _, is_wide in rows if is_wide]
    assert wide and wide[0] >= 40, rows


async def test_a_transaction_of_its_own_whose_connection_is_lost_fails(
    storages: list[PostgreSQLStorage],
) -> None:
    storage = storages[0]

    async def cut(tx: PostgreSQLStorageTransaction) -> None:
        await _create(tx, "a")
        await _create(tx, "lost")
        await _terminate(tx)

    runs: list[str] = []
    with pytest.raises(BackendError):
        await _request(storage, "batch", cut, runs, scope=None)
    assert runs == ["batch"]
    assert await _objects(storage) == {}
    await _committed_create(storage, "later")  # the pool recovered
    assert sorted(await _objects(storage)) == ["later"]


def _record_read(object_id: str, *principals: str) -> ObjectRead:
    """A write's read of a record (a `PUT`'s): the record, its parent, the `write` grant."""
    uri = f"{PARENT}/records/{object_id}"
    return ObjectRead(
        user_ids=(),
        principals=principals,
        bound=((uri, "write"), (PARENT, "write")),
        object=(RECORD, PARENT, object_id),
        parent=("collection", "/buckets/b", "c"),
    )


@pytest.mark.parametrize("scope", [SCOPE, None])
async def test_a_read_that_no_deferred_write_changes_does_not_wait_for_them(
    storages: list[PostgreSQLStorage], scope: str | None
) -> None:
    """A push (a batch of `PUT`s of new records): each reads its record, then creates it;
    the creates are sent together at the commit."""
    storage = storages[0]
    await _committed_create(storage, "seed")
    logged: list[Any] = []

    async def push(tx: PostgreSQLStorageTransaction) -> None:
        for i in range(5):
            assert (await tx.read_object(_record_read(f"p{i}", "alice"))).object is None
            await _create(tx, f"p{i}")
            if i == 0:  # its first write: the transaction (the group) holds the scope
                tx._tx.conn.add_query_logger(logged.append)

    await _request(storage, "push", push, [], scope=scope)
    await asyncio.sleep(0)  # asyncpg calls query loggers with call_soon
    queries = [r.query for r in logged]
    creates = [r for r in logged if "INSERT INTO objects" in r.query]
    assert len(creates) == 1 and len(creates[0].args) == 5, queries
    assert queries.index(creates[0].query) == len(queries) - 2  # the commit's turn
    assert sorted(await _objects(storage)) == ["p0", "p1", "p2", "p3", "p4", "seed"]


async def test_a_read_that_a_deferred_write_changes_sees_it(
    storages: list[PostgreSQLStorage],
) -> None:
    storage = storages[0]
    permission = PostgreSQLPermission(storage.db)

    async def batch(tx: PostgreSQLStorageTransaction) -> None:
        await _create(tx, "a")
        view = await tx.read_object(_record_read("a", "alice"))  # its object
        assert view.object is not None and view.object["v"] == "new"
        async with permission.transaction(write=True, savepoint=False) as ptx:  # as the service
            uri = f"{PARENT}/records/b"
            done = await tx.create_with_acl(
                RECORD, PARENT, {"id": "b"}, ptx, uri, None, [("write", "bob")]
            )
            assert done is not None
        assert (await tx.read_object(_record_read("b", "bob"))).granted  # its ACL
        # An ACL its read checks, of an object it does not read (a bucket's, for a record
        # two levels below).
        async with permission.transaction(write=True, savepoint=False) as ptx:
            done = await tx.create_with_acl(
                "bucket", "", {"id": "b2"}, ptx, "/buckets/b2", None, [("write", "carol")]
            )
            assert done is not None
        collection = "/buckets/b2/collections/c"
        below = ObjectRead(
            user_ids=(),
            principals=("carol",),
            bound=(
                (f"{collection}/records/r", "write"),
                (collection, "write"),
                ("/buckets/b2", "write"),
            ),
            object=(RECORD, collection, "r"),
            parent=("collection", "/buckets/b2", "c"),
        )
        assert (await tx.read_object(below)).granted

    await _request(storage, "batch", batch, [], scope=None)
    assert sorted(await _objects(storage)) == ["a", "b"]
