"""What only the SQLite backends promise: files, processes, schema, joined transactions."""

from __future__ import annotations

import asyncio
import json
import random
import re
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from nuages.cache.sqlite import SQLiteCache
from nuages.core.errors import BackendError
from nuages.core.objects import Comparison, Filter, ListQuery, Sort
from nuages.permission.sqlite import SQLitePermission
from nuages.sqlite import CURRENT_SCHEMA_VERSION, SQLiteDatabase
from nuages.sqlite import database as database_module
from nuages.storage import sqlite as storage_module
from nuages.storage.protocol import ObjectRead
from nuages.storage.sqlite import SQLiteStorage

RESOURCE, PARENT = "record", "/buckets/b/collections/c"


class Boom(Exception):
    pass


async def create(storage: SQLiteStorage, object_id: str, **fields: object) -> dict[str, object]:
    async with storage.transaction(write=True) as tx:
        return await tx.create(RESOURCE, PARENT, {"id": object_id, **fields})


async def get(storage: SQLiteStorage, object_id: str) -> dict[str, object] | None:
    async with storage.transaction(write=False) as tx:
        return await tx.get(RESOURCE, PARENT, object_id)


async def acl(permission: SQLitePermission, uri: str) -> dict[str, set[str]]:
    async with permission.transaction(write=False) as tx:
        return await tx.get_object_permissions(uri)


# -- files and processes ----------------------------------------------------------------


async def test_committed_writes_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    first = SQLiteDatabase(path)
    await first.migrate()
    created = await create(SQLiteStorage(first), "x", title="kept")
    async with SQLitePermission(first).transaction(write=True) as tx:
        await tx.add_principal_to_ace("/buckets/b", "read", "alice")
    # A second instance (another process, in effect) sees the commit at once...
    second = SQLiteDatabase(path)
    assert await get(SQLiteStorage(second), "x") == created
    await first.aclose()
    await second.aclose()
    # ...and so does one opened after everything was closed.
    third = SQLiteDatabase(path)
    await third.check_schema()
    assert await get(SQLiteStorage(third), "x") == created
    assert await acl(SQLitePermission(third), "/buckets/b") == {"read": {"alice"}}
    await third.aclose()


async def test_file_is_in_wal_mode_with_full_synchronous(sqlite_db: SQLiteDatabase) -> None:
    async with sqlite_db.transaction(write=True) as tx:
        mode, synchronous = await tx.run(
            lambda conn: (
                conn.execute("PRAGMA journal_mode").fetchone()[0],
                conn.execute("PRAGMA synchronous").fetchone()[0],
            )
        )
    assert (mode, synchronous) == ("wal", 2)  # 2 is FULL


async def test_two_databases_on_one_file_keep_timestamps_unique(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    one, two = SQLiteDatabase(path), SQLiteDatabase(path)
    await one.migrate()
    storages = [SQLiteStorage(one), SQLiteStorage(two)]

    async def writer(storage: SQLiteStorage, name: str) -> list[int]:
        stamps = []
        for i in range(40):
            async with storage.transaction(write=True) as tx:
                before = await tx.resource_timestamp(RESOURCE, PARENT)
                obj = await tx.create(RESOURCE, PARENT, {"id": f"{name}{i}"})
                assert obj["last_modified"] > before
                stamps.append(obj["last_modified"])
        return stamps

    results = await asyncio.gather(*(writer(s, f"w{n}-") for n, s in enumerate(storages * 2)))
    for stamps in results:
        assert stamps == sorted(stamps)
    everything = [stamp for stamps in results for stamp in stamps]
    assert len(set(everything)) == len(everything) == 160
    async with storages[1].transaction(write=False) as tx:
        assert await tx.resource_timestamp(RESOURCE, PARENT) == max(everything)
        listed = await tx.list(RESOURCE, PARENT, ListQuery(sorting=(Sort("last_modified", 1),)))
    assert [obj["last_modified"] for obj in listed] == sorted(everything)
    await one.aclose()
    await two.aclose()


async def test_lock_held_beyond_the_busy_timeout_is_a_backend_error(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    db = SQLiteDatabase(path, busy_timeout=0.05)
    await db.migrate()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    storage = SQLiteStorage(db)
    with pytest.raises(BackendError, match="locked") as info:
        await create(storage, "x")
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    other.execute("ROLLBACK")
    other.close()
    assert (await create(storage, "x"))["id"] == "x"
    await db.aclose()


async def test_unusable_file_is_a_backend_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database" * 100)
    db = SQLiteDatabase(path)
    assert await db.ping() is False
    with pytest.raises(BackendError) as info:
        await db.migrate()
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    await db.aclose()


async def test_reopens_after_aclose(sqlite_db: SQLiteDatabase) -> None:
    storage = SQLiteStorage(sqlite_db)
    await create(storage, "x")
    await storage.aclose()
    await storage.aclose()
    assert await get(storage, "x") is not None


async def test_more_concurrent_reads_than_readers(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "pool.db", readers=2)
    await db.migrate()
    storage = SQLiteStorage(db)
    await create(storage, "x")

    async def read() -> object:
        async with storage.transaction(write=False) as tx:
            await asyncio.sleep(0.01)
            return await tx.get(RESOURCE, PARENT, "x")

    assert all(await asyncio.gather(*(read() for _ in range(10))))
    await db.aclose()


def test_readers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="readers"):
        SQLiteDatabase("x.db", readers=0)


# -- schema -------------------------------------------------------------------------------


async def test_new_file_has_no_schema(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "new.db")
    assert await db.schema_version() is None
    with pytest.raises(BackendError, match="run `nuages migrate`"):
        await db.check_schema()
    await db.migrate()
    assert await db.schema_version() == CURRENT_SCHEMA_VERSION
    await db.check_schema()
    await db.migrate()  # idempotent
    assert await db.schema_version() == CURRENT_SCHEMA_VERSION
    await db.aclose()


async def test_concurrent_migrations(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    databases = [SQLiteDatabase(path) for _ in range(3)]
    await asyncio.gather(*(db.migrate() for db in databases))
    for db in databases:
        await db.check_schema()
        await db.aclose()


async def test_newer_schema_is_refused(sqlite_db: SQLiteDatabase) -> None:
    await _set_version(sqlite_db, CURRENT_SCHEMA_VERSION + 1)
    with pytest.raises(BackendError, match="newer than this Nuages"):
        await sqlite_db.check_schema()
    with pytest.raises(BackendError, match="newer than this Nuages"):
        await sqlite_db.migrate()


async def test_older_schema_is_migrated(
    sqlite_db: SQLiteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    newer = CURRENT_SCHEMA_VERSION + 1
    monkeypatch.setattr(database_module, "CURRENT_SCHEMA_VERSION", newer)
    monkeypatch.setattr(
        database_module,
        "_migration_scripts",
        lambda: {newer: "-- why\nCREATE TABLE added (x INTEGER);\nINSERT INTO added VALUES (1);\n"},
    )
    with pytest.raises(BackendError, match="run `nuages migrate`"):
        await sqlite_db.check_schema()
    await sqlite_db.migrate()
    assert await sqlite_db.schema_version() == newer
    await sqlite_db.check_schema()
    rows = await sqlite_db.run_read(lambda conn: conn.execute("SELECT x FROM added").fetchall())
    assert rows == [(1,)]


async def test_missing_migration_is_an_error(
    sqlite_db: SQLiteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "CURRENT_SCHEMA_VERSION", CURRENT_SCHEMA_VERSION + 1)
    monkeypatch.setattr(database_module, "_migration_scripts", dict)
    with pytest.raises(BackendError, match="No SQLite migration"):
        await sqlite_db.migrate()
    assert await sqlite_db.schema_version() == CURRENT_SCHEMA_VERSION  # unchanged


def test_shipped_migrations_are_numbered_up_to_the_current_version() -> None:
    scripts = database_module._migration_scripts()
    assert all(1 < number <= CURRENT_SCHEMA_VERSION for number in scripts)
    assert sorted(scripts) == list(range(2, CURRENT_SCHEMA_VERSION + 1))


async def _set_version(db: SQLiteDatabase, version: int) -> None:
    await db.run_write(
        lambda conn: conn.execute(
            "UPDATE nuages_metadata SET value = ? WHERE name = 'schema_version'", (str(version),)
        )
    )


# -- transactions ---------------------------------------------------------------------


async def test_storage_and_permission_transactions_join(sqlite_db: SQLiteDatabase) -> None:
    storage, permission = SQLiteStorage(sqlite_db), SQLitePermission(sqlite_db)
    with pytest.raises(Boom):
        async with storage.transaction(write=True) as tx:
            await tx.create(RESOURCE, PARENT, {"id": "x"})
            async with permission.transaction(write=True) as ptx:
                await ptx.replace_object_permissions(f"{PARENT}/records/x", {"write": ["alice"]})
            raise Boom
    assert await get(storage, "x") is None
    assert await acl(permission, f"{PARENT}/records/x") == {}

    async with storage.transaction(write=True) as tx:
        await tx.create(RESOURCE, PARENT, {"id": "x"})
        async with permission.transaction(write=True) as ptx:
            await ptx.replace_object_permissions(f"{PARENT}/records/x", {"write": ["alice"]})
        async with permission.transaction(write=False) as ptx:
            # A read nested in a write joins it and sees its uncommitted changes.
            assert await ptx.get_object_permissions(f"{PARENT}/records/x") == {"write": {"alice"}}
    assert await get(storage, "x") is not None
    assert await acl(permission, f"{PARENT}/records/x") == {"write": {"alice"}}


async def test_failed_nested_write_undoes_only_its_own_changes(
    sqlite_db: SQLiteDatabase,
) -> None:
    storage, permission = SQLiteStorage(sqlite_db), SQLitePermission(sqlite_db)
    async with storage.transaction(write=True) as tx:
        await tx.create(RESOURCE, PARENT, {"id": "kept"})
        with pytest.raises(Boom):
            async with permission.transaction(write=True) as ptx:
                await ptx.add_principal_to_ace("/buckets/b", "read", "alice")
                await tx.create(RESOURCE, PARENT, {"id": "undone"})
                async with storage.transaction(write=True) as inner:
                    await inner.create(RESOURCE, PARENT, {"id": "undone too"})
                raise Boom
        async with permission.transaction(write=True) as ptx:
            await ptx.add_principal_to_ace("/buckets/b", "read", "bob")
    assert await get(storage, "kept") is not None
    assert await get(storage, "undone") is None
    assert await get(storage, "undone too") is None
    assert await acl(permission, "/buckets/b") == {"read": {"bob"}}


async def test_write_inside_a_read_transaction_is_refused(sqlite_db: SQLiteDatabase) -> None:
    storage, permission = SQLiteStorage(sqlite_db), SQLitePermission(sqlite_db)
    async with storage.transaction(write=False) as tx:
        with pytest.raises(BackendError, match="write=True"):
            async with permission.transaction(write=True):
                pass
        with pytest.raises(BackendError, match="write=True"):
            await tx.create(RESOURCE, PARENT, {"id": "x"})
        with pytest.raises(BackendError, match="write=True"):
            await tx.purge(PARENT)
    async with permission.transaction(write=False) as ptx:
        with pytest.raises(BackendError, match="write=True"):
            await ptx.add_user_principal("alice", "g")


async def test_other_tasks_do_not_join_and_see_only_commits(sqlite_db: SQLiteDatabase) -> None:
    storage = SQLiteStorage(sqlite_db)
    await create(storage, "old")
    written, release = asyncio.Event(), asyncio.Event()

    async def slow_writer() -> None:
        async with storage.transaction(write=True) as tx:
            await tx.create(RESOURCE, PARENT, {"id": "new"})
            written.set()
            await release.wait()

    task = asyncio.create_task(slow_writer())
    await written.wait()
    # Another task: its own snapshot, without the uncommitted object.
    assert await get(storage, "new") is None
    assert await get(storage, "old") is not None
    second = asyncio.create_task(create(storage, "after"))
    await asyncio.sleep(0.02)
    assert not second.done()  # waits for the first writer
    release.set()
    await task
    await second
    assert await get(storage, "new") is not None


async def test_cancelled_write_transaction_is_rolled_back(sqlite_db: SQLiteDatabase) -> None:
    storage = SQLiteStorage(sqlite_db)
    started = asyncio.Event()

    async def cancelled() -> None:
        async with storage.transaction(write=True) as tx:
            await tx.create(RESOURCE, PARENT, {"id": "cancelled"})
            started.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(cancelled())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await create(storage, "next"))["id"] == "next"
    assert await get(storage, "cancelled") is None


async def test_lazy_scope_timestamp_from_a_read_is_persisted(tmp_path: Path) -> None:
    path = tmp_path / "lazy.db"
    db = SQLiteDatabase(path)
    await db.migrate()
    async with SQLiteStorage(db).transaction(write=False) as tx:
        first = await tx.resource_timestamp(RESOURCE, PARENT)
    other = SQLiteDatabase(path)
    async with SQLiteStorage(other).transaction(write=False) as tx:
        assert await tx.resource_timestamp(RESOURCE, PARENT) == first
    await db.aclose()
    await other.aclose()


async def test_lazy_scope_timestamp_after_a_concurrent_first_write(
    sqlite_db: SQLiteDatabase,
) -> None:
    storage = SQLiteStorage(sqlite_db)
    writer = SQLiteStorage(SQLiteDatabase(sqlite_db.path))
    async with storage.transaction(write=False) as tx:
        assert await tx.get(RESOURCE, PARENT, "x") is None  # the snapshot begins here
        created = await create(writer, "x")  # commits after the snapshot
        timestamp = await tx.resource_timestamp(RESOURCE, PARENT)
        # The timestamp is that of the write, and the listing is consistent with it.
        assert timestamp == created["last_modified"]
        assert await tx.list(RESOURCE, PARENT, ListQuery()) == [created]
    await writer.aclose()


async def test_cache_writes_inside_transactions(sqlite_db: SQLiteDatabase) -> None:
    storage, cache = SQLiteStorage(sqlite_db), SQLiteCache(sqlite_db)
    elsewhere = SQLiteCache(SQLiteDatabase(sqlite_db.path))
    async with storage.transaction(write=False):
        await cache.set("during read", 1, ttl=60)
        assert await elsewhere.get("during read") == 1  # committed at once
    with pytest.raises(Boom):
        async with storage.transaction(write=True):
            await cache.set("during write", 2, ttl=60)
            assert await cache.get("during write") == 2
            raise Boom
    assert await cache.get("during write") is None
    await elsewhere.aclose()


async def test_expired_cache_entries_are_purged_by_writes(sqlite_db: SQLiteDatabase) -> None:
    cache = SQLiteCache(sqlite_db)
    for i in range(5):
        await cache.set(f"old{i}", i, ttl=0.01)
    await asyncio.sleep(0.02)
    await cache.set("new", 1, ttl=60)
    keys = await sqlite_db.run_read(lambda conn: conn.execute("SELECT key FROM cache").fetchall())
    assert keys == [("new",)]


async def test_values_that_are_not_json_are_backend_errors(sqlite_db: SQLiteDatabase) -> None:
    with pytest.raises(BackendError):
        await create(SQLiteStorage(sqlite_db), "x", value={1, 2})
    with pytest.raises(BackendError):
        await SQLiteCache(sqlite_db).set("key", object(), ttl=60)


# -- SQL ------------------------------------------------------------------------------


async def _plan(db: SQLiteDatabase, sql: str, params: dict[str, object]) -> str:
    rows = await db.run_read(
        lambda conn: conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
    )
    return "\n".join(row[-1] for row in rows)


async def test_default_listing_walks_the_last_modified_index(sqlite_db: SQLiteDatabase) -> None:
    for query in (
        ListQuery(limit=10),
        ListQuery(filters=(Filter("last_modified", 5, Comparison.GT),), include_deleted=True),
        ListQuery(filters=(Filter("title", "x"),), sorting=(Sort("last_modified", 1),)),
    ):
        plan = await _plan(sqlite_db, *storage_module.list_sql(RESOURCE, PARENT, query))
        assert "USING INDEX objects_last_modified" in plan, plan
        assert "TEMP B-TREE" not in plan, plan


async def test_id_lookups_use_the_primary_key(sqlite_db: SQLiteDatabase) -> None:
    for query in (
        ListQuery(filters=(Filter("id", "x"),)),
        ListQuery(ids=frozenset({"a", "b"})),
    ):
        plan = await _plan(sqlite_db, *storage_module.count_sql(RESOURCE, PARENT, query))
        assert re.search(r"USING (COVERING )?INDEX sqlite_autoindex_objects_1 \(.*id", plan), plan


async def test_a_grant_check_does_not_walk_the_entries_of_a_principal(
    sqlite_db: SQLiteDatabase,
) -> None:
    """A grant check probes the primary key for each (object, permission, principal). It
    must not walk every entry of a principal instead: a user holds one per object it
    created, and a check that finds no grant would cost as much as the user's objects.
    Counted in SQLite virtual machine steps (deterministic), with a principal holding 3
    entries, then 3,000: the permission backend's check, and the one-statement object read
    without and with stored principals."""
    permission = SQLitePermission(sqlite_db)
    principals = ("busy", "system.Everyone")
    bound = tuple(
        (uri, perm) for uri in ("/buckets/x", "/buckets/x/c") for perm in ("write", "read")
    )
    read = ObjectRead(
        user_ids=(), principals=principals, bound=bound, object=("collection", "/buckets/x", "c")
    )

    async def steps() -> list[int]:
        counted: list[int] = []
        async with sqlite_db.transaction(write=False) as raw:

            async def count(check: Callable[[], Awaitable[object]]) -> None:
                steps = [0]

                def step() -> int:
                    steps[0] += 1
                    return 0

                await raw.run(lambda conn: conn.set_progress_handler(step, 1))
                try:
                    assert not await check()
                finally:
                    await raw.run(lambda conn: conn.set_progress_handler(None, 0))
                counted.append(steps[0])

            async def check_permission() -> bool:
                async with permission.transaction(write=False) as tx:
                    return await tx.check_permission(principals, bound)

            def object_read(user_ids: tuple[str, ...]) -> Callable[[], Awaitable[object]]:
                sql, params = storage_module.object_read_sql(read._replace(user_ids=user_ids))
                return lambda: raw.run(lambda conn: conn.execute(sql, params).fetchall())

            await count(check_permission)
            await count(object_read(()))
            await count(object_read(("busy",)))
        return counted

    async def hold(first: int, last: int) -> None:
        rows = [(f"/buckets/b{n}", "write", "busy") for n in range(first, last)]
        insert = "INSERT INTO access_control_entries VALUES (?, ?, ?)"
        await sqlite_db.run_write(lambda conn: conn.executemany(insert, rows))

    await hold(0, 3)
    few = await steps()
    await hold(3, 3000)
    many = await steps()
    assert all(m <= f + 20 for f, m in zip(few, many, strict=True)), (few, many)


def test_grant_check_sources_and_pairs() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE TABLE access_control_entries (object_uri, permission, principal,"
        " PRIMARY KEY (object_uri, permission, principal)) WITHOUT ROWID"
    )
    conn.execute("CREATE TABLE user_principals (user_id, principal)")
    conn.execute("INSERT INTO access_control_entries VALUES ('/b', 'write', 'u')")
    conn.execute("INSERT INTO user_principals VALUES ('x', 'u')")
    granted, principals_sql = database_module.granted_sql, database_module.principals_sql
    pairs = [("?1", "?2"), ("?3", "?4")]  # ('/a', 'read'), then ('/b', 'write')

    def check(principals: list[str], *, json_array: bool = False, holder: str = "") -> bool:
        shape, values = database_module.strings_in(principals)
        if json_array:
            shape, values = -1, [json.dumps(principals)]
        placeholders = [f"?{5 + n}" for n in range(len(values))]
        sources = [principals_sql(shape, placeholders)] if values else []
        if holder:
            sources.append(
                f"(SELECT principal FROM user_principals WHERE user_id = ?{5 + len(values)})"
            )
            values.append(holder)
        sql = f"SELECT 1 WHERE {granted(pairs, sources)}"
        params = ["/a", "read", "/b", "write", *values]
        return conn.execute(sql, params).fetchone() is not None

    assert check(["u"])
    assert check(["v", "u"])  # the second principal, the second pair
    assert not check(["v"])
    assert not check([])  # no source: nothing granted, the pairs still bound
    assert check(["v"], json_array=True) is False
    assert check(["v", "u"], json_array=True)
    assert check([f"p{n}" for n in range(20)] + ["u"])  # strings_in's JSON shape
    assert check(["v"], holder="x")  # through the stored principals of user x
    assert not check(["v"], holder="y")
    assert check([], holder="x")
    with pytest.raises(ValueError):
        granted([], sources=["(SELECT 'u' AS principal)"])


def test_ascii_letters_python_folds_beyond_ascii() -> None:
    # SQLite's LIKE folds ASCII only; the compiler sends patterns holding these letters
    # to Python for non-ASCII text. Python's Unicode tables may change: check them.
    any_ascii = re.compile("[\x00-\x7f]", re.IGNORECASE)
    folded = set()
    for code in range(0x80, 0x110000):
        char = chr(code)
        if not 0xD800 <= code <= 0xDFFF and any_ascii.fullmatch(char):
            folded |= {
                c.lower() for c in map(chr, range(0x80)) if re.fullmatch(re.escape(c), char, re.I)
            }
    assert folded == set(storage_module._FOLDS_BEYOND_ASCII)


async def test_the_wal_stays_bounded_under_writers_that_never_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes writing without a pause leave SQLite's automatic checkpoint no moment
    to start the WAL again: it grew by every page written (825 MB in a few minutes of
    benchmark). A commit that finds it past WAL_LIMIT empties it."""
    monkeypatch.setattr(database_module, "WAL_LIMIT", 256 * 1024)
    path = tmp_path / "wal.db"
    dbs = [SQLiteDatabase(path), SQLiteDatabase(path)]  # two processes
    await dbs[0].migrate()
    await dbs[0].run_write(lambda conn: conn.execute("CREATE TABLE items (name TEXT)"))
    sizes: list[int] = []
    row = "x" * 8000

    async def writer(db: SQLiteDatabase) -> None:
        for _ in range(100):
            async with db.transaction(write=True) as tx:
                await tx.run(lambda conn: conn.execute("INSERT INTO items VALUES (?)", (row,)))
            sizes.append((tmp_path / "wal.db-wal").stat().st_size)

    try:
        await asyncio.gather(*(writer(db) for db in dbs for _ in range(4)))
    finally:
        for db in dbs:
            await db.aclose()
    written = 800 * 8000
    assert max(sizes) < 512 * 1024 < written  # without the bound: about `written`
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (800,)
    finally:
        conn.close()


async def test_a_reader_of_an_old_snapshot_delays_the_wal_truncation_not_the_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "WAL_LIMIT", 64 * 1024)
    monkeypatch.setattr(database_module, "WAL_TRUNCATE_WAIT", 0.01)
    path = tmp_path / "wal.db"
    db = SQLiteDatabase(path)
    await db.migrate()
    await db.run_write(lambda conn: conn.execute("CREATE TABLE items (name TEXT)"))
    wal = tmp_path / "wal.db-wal"

    async def write(count: int) -> None:
        for _ in range(count):
            await db.run_write(
                lambda conn: conn.execute("INSERT INTO items VALUES (?)", ("x" * 8000,))
            )

    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM items").fetchone()  # holds its snapshot
        await write(40)
        assert wal.stat().st_size > 40 * 8000  # could not be emptied: the writes went on
        reader.execute("COMMIT")
        await write(12)  # past the limit raised by a quarter: emptied now
        assert wal.stat().st_size < 128 * 1024  # the frames written since
    finally:
        reader.close()
        await db.aclose()


async def test_the_object_read_answers_the_create_grant_as_the_permission_backend(
    sqlite_db: SQLiteDatabase,
) -> None:
    """`create_granted` of the one-statement read (in a transaction, and by the reader
    outside any) is what ``check_permission`` answers for the create pairs, whatever the
    read's other pairs, its stored principals and the number of principals given (bound
    one by one, or as one JSON array past a few); None when not asked."""
    storage, permission = SQLiteStorage(sqlite_db), SQLitePermission(sqlite_db)
    reader = storage.object_reader(permission)
    assert reader is not None
    rng = random.Random(5)
    uris = ["/buckets/b", "/buckets/b/collections/c"]
    perms = ["write", "read", "record:create"]
    people = ["alice", "bob", "system.Everyone", "/buckets/b/groups/g"]
    async with permission.transaction(write=True) as ptx:
        await ptx.add_user_principal("carol", "/buckets/b/groups/g")
        for uri in uris:
            for perm in perms:
                for who in rng.sample(people, 2):
                    await ptx.add_principal_to_ace(uri, perm, who)
    pairs = [(uri, perm) for uri in uris for perm in perms]
    for case in range(60):
        given = tuple(rng.sample(people[:3] + [f"p{n}" for n in range(12)], rng.randrange(0, 9)))
        user_ids = ("carol",) if case % 3 == 0 else ()
        create = tuple(rng.sample(pairs, rng.randrange(1, 4)))
        bound = tuple(rng.sample(pairs, rng.randrange(0, 3)))
        read = ObjectRead(user_ids, given, bound, ("record", uris[1], "x"), create_bound=create)
        stored = {"/buckets/b/groups/g"} if user_ids else set()
        async with permission.transaction(write=False) as ptx:
            expected = await ptx.check_permission({*given, *stored}, create)
        async with storage.transaction(write=False) as tx:
            answers = [(await tx.read_object(read)).create_granted]
            assert (await tx.read_object(read._replace(create_bound=()))).create_granted is None
        answers.append((await reader.read_object(read)).create_granted)
        assert answers == [expected, expected], (given, user_ids, create, bound)
