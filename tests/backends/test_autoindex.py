"""Automatic indexes and live counts of the SQLite storage (storage/autoindex.py).

A listing answered through its automatic index lists exactly what the memory oracle
lists; the index is really built (and read: ``INDEXED BY``); Total-Objects of a whole
scope comes from ``timestamps.live_count``, which every write keeps exact and which the
version 2 migration computes for an existing database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests import oracle
from tests.backends import test_oracle_properties as sqlite_oracle

from nuages.core.objects import Comparison, Filter, ListQuery, Sort
from nuages.sqlite import CURRENT_SCHEMA_VERSION, SQLiteDatabase
from nuages.storage import sqlite as compiler
from nuages.storage.autoindex import AutoIndexConfig, AutoIndexer
from nuages.storage.memory import MemoryStorage
from nuages.storage.protocol import Storage
from nuages.storage.sqlite import SQLiteStorage

RESOURCE = oracle.RESOURCE
EAGER = AutoIndexConfig(min_objects=0, hits=1, max_indexes=1_000_000)


@pytest.fixture
async def eager(tmp_path: Path) -> AsyncIterator[tuple[Storage, SQLiteStorage]]:
    """Memory, and SQLite indexing every shape the first time it is listed."""
    db = SQLiteDatabase(tmp_path / "autoindex.db")
    await db.migrate()
    storage = SQLiteStorage(db, auto_index=EAGER)
    yield MemoryStorage(), storage
    await storage.aclose()


async def _index_names(db: SQLiteDatabase) -> set[str]:
    rows = await db.run_read(
        lambda conn: conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'index' AND name LIKE 'nuages_auto_%'"
        ).fetchall()
    )
    return {row[0] for row in rows}


@sqlite_oracle.ORACLE
@given(data=st.data())
async def test_indexed_listings_are_like_memory(
    eager: tuple[Storage, SQLiteStorage], data: st.DataObject
) -> None:
    memory, sqlite = eager
    parent, written = await oracle.populate(
        data, sqlite_oracle.objects, sqlite_oracle.object_ids, memory, sqlite
    )
    for _ in range(3):
        query = sqlite_oracle.draw_query(data, written)
        if data.draw(st.booleans(), label="add an equality"):
            equality = sqlite_oracle.draw_filter(data, written, operators=[Comparison.EQ])
            query = ListQuery(
                filters=(equality, *query.filters),
                sorting=query.sorting,
                keyset=query.keyset,
                limit=query.limit,
                include_deleted=query.include_deleted,
                ids=query.ids,
            )
        # The first listing starts the build, the second one reads the index.
        await oracle.assert_lists_like_memory(memory, sqlite, parent, query)
        await sqlite.indexer.wait()
        shape = compiler.index_shape(RESOURCE, parent, query)
        if shape is not None:
            assert compiler.index_statement(shape)[0] in sqlite.indexer.known
        await oracle.assert_lists_like_memory(memory, sqlite, parent, query)


async def test_a_frequent_shape_of_a_large_scope_gets_its_index(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "threshold.db")
    await db.migrate()
    storage = SQLiteStorage(db, auto_index=AutoIndexConfig(min_objects=20, hits=3))
    query = ListQuery(
        filters=(Filter("category", "c1"),),
        sorting=(Sort("score", -1), Sort("last_modified", -1)),
        limit=5,
    )
    shape = compiler.index_shape(RESOURCE, "/big", query)
    assert shape is not None
    name, _ = compiler.index_statement(shape)
    try:
        async with storage.transaction(write=True) as tx:
            for i in range(10):
                await tx.create(RESOURCE, "/small", {"id": f"s{i}", "category": "c1"})
            for i in range(40):
                obj = {"id": f"r{i:02d}", "category": f"c{i % 2}", "score": (i * 7) % 11}
                await tx.create(RESOURCE, "/big", obj)
        for parent in ("/small", "/big"):
            for _ in range(3):
                async with storage.transaction(write=False) as tx:
                    await tx.list(RESOURCE, parent, query)
                await storage.indexer.wait()
        # Only the large scope, and only after `hits` listings.
        assert await _index_names(db) == {name}
        async with storage.transaction(write=False) as tx:
            found = await tx.list(RESOURCE, "/big", query)
        scores = [(o["score"], o["last_modified"]) for o in found]
        assert scores == sorted(scores, reverse=True) and len(found) == 5
        assert all(o["category"] == "c1" for o in found)
        sql, params = compiler.list_sql(RESOURCE, "/big", query, indexed=name)
        plan = await db.run_read(
            lambda conn: conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
        )
        details = " ".join(row[-1] for row in plan)
        assert name in details and "TEMP B-TREE" not in details
        # An index dropped behind the storage's back: the listing still answers.
        await db.run_write(lambda conn: conn.execute(f"DROP INDEX {name}"))
        async with storage.transaction(write=False) as tx:
            assert await tx.list(RESOURCE, "/big", query) == found
        assert name not in storage.indexer.known
    finally:
        await storage.aclose()


async def test_total_objects_of_a_scope_is_kept_by_writes(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "counts.db")
    await db.migrate()
    storage = SQLiteStorage(db)
    everything = ListQuery()

    async def count() -> int:
        async with storage.transaction(write=False) as tx:
            return await tx.count(RESOURCE, "/p", everything)

    try:
        assert await count() == 0
        async with storage.transaction(write=True) as tx:
            for i in range(5):
                await tx.create(RESOURCE, "/p", {"id": str(i)})
            await tx.update(RESOURCE, "/p", "0", {"x": 1})  # replaces: still 5
            await tx.update(RESOURCE, "/p", "new", {"x": 1})  # creates: 6
            await tx.delete(RESOURCE, "/p", "1")  # 5
        assert await count() == 5
        async with storage.transaction(write=True) as tx:
            await tx.create(RESOURCE, "/p", {"id": "1"})  # revives a tombstone: 6
            await tx.update(RESOURCE, "/p", "2", {"deleted": True})  # stored as a tombstone
        assert await count() == 5
        with pytest.raises(RuntimeError):
            async with storage.transaction(write=True) as tx:
                await tx.delete(RESOURCE, "/p", "3")
                raise RuntimeError  # rolled back with the delete
        assert await count() == 5
        async with storage.transaction(write=True) as tx:
            await tx.purge("/p")
        assert await count() == 0
    finally:
        await storage.aclose()


async def test_migration_to_version_2_counts_existing_objects(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "old.db")
    await db.migrate()
    storage = SQLiteStorage(db)
    async with storage.transaction(write=True) as tx:
        for i in range(4):
            await tx.create(RESOURCE, "/a", {"id": str(i)})
        await tx.delete(RESOURCE, "/a", "0")
        await tx.create(RESOURCE, "/b", {"id": "x"})

    def downgrade(conn: object) -> None:
        conn.execute("ALTER TABLE timestamps DROP COLUMN live_count")  # type: ignore[attr-defined]
        conn.execute(  # type: ignore[attr-defined]
            "UPDATE nuages_metadata SET value = '1' WHERE name = 'schema_version'"
        )

    await db.run_write(downgrade)
    await db.migrate()
    assert await db.schema_version() == CURRENT_SCHEMA_VERSION == 2
    async with storage.transaction(write=False) as tx:
        assert await tx.count(RESOURCE, "/a", ListQuery()) == 3
        assert await tx.count(RESOURCE, "/b", ListQuery()) == 1
    await storage.aclose()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, AutoIndexConfig(min_objects=5000, hits=3, max_indexes=32)),
        (
            {"auto_index_max": 0, "auto_index_min_objects": 10, "auto_index_hits": 1},
            AutoIndexConfig(min_objects=10, hits=1, max_indexes=0),
        ),
    ],
)
def test_settings_configure_automatic_indexes(
    tmp_path: Path, overrides: dict[str, int], expected: AutoIndexConfig
) -> None:
    from nuages.backends import open_backends
    from nuages.settings import Settings

    settings = Settings.load(env={}, storage_url=f"sqlite:///{tmp_path}/x.db", **overrides)
    storage = open_backends(settings).storage
    assert storage.indexer.config == expected
    assert storage.indexer.enabled is (expected.max_indexes > 0)


async def test_an_index_serves_listings_once_its_builder_says_it_is_ready() -> None:
    """What a build does after the index exists (PostgreSQL's ANALYZE) does not hold
    listings back: the index is known from the builder's `ready()` on."""
    analysed = asyncio.Event()
    names: set[str] = set()

    async def load() -> set[str]:
        return set(names)

    async def build(name: str, statement: str, ready: Callable[[], None]) -> bool:
        names.add(name)
        ready()
        await analysed.wait()  # the slow rest of the build
        return True

    async def live() -> int:
        return 1_000_000

    indexer = AutoIndexer(AutoIndexConfig(min_objects=0, hits=1), load, build)
    await indexer.observe("nuages_auto_x", "CREATE INDEX ...", live)
    for _ in range(10):
        await asyncio.sleep(0)
    assert "nuages_auto_x" in indexer.known  # before the build is over
    analysed.set()
    await indexer.wait()
    assert indexer.known == {"nuages_auto_x"}
