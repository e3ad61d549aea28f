"""Automatic indexes and live counts of the PostgreSQL storage (storage/autoindex.py).

A listing written for its automatic index lists exactly what the memory oracle lists; the
index is really built (``CREATE INDEX CONCURRENTLY``, valid) and the planner reads it in
order; Total-Objects of a whole scope comes from ``timestamps.live_count``, which every
write keeps exact (test_pg_schema.py checks that the version 2 migration computes it for
an existing database).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests import oracle, services
from tests.postgresql import test_pg_oracle as pg_oracle

from nuages.core.objects import Filter, ListQuery, Sort
from nuages.postgresql import PostgreSQLDatabase
from nuages.storage import postgresql as compiler
from nuages.storage.autoindex import AutoIndexConfig
from nuages.storage.memory import MemoryStorage
from nuages.storage.postgresql import PostgreSQLStorage
from nuages.storage.protocol import Storage

RESOURCE = oracle.RESOURCE
EAGER = AutoIndexConfig(min_objects=0, hits=1, max_indexes=1_000_000)


async def _drop_auto_indexes(url: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        names = await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE indexname LIKE 'nuages\\_auto\\_%'"
        )
        for (name,) in names:
            await conn.execute(f"DROP INDEX IF EXISTS {name}")
    finally:
        await conn.close()


@pytest.fixture
async def pg() -> AsyncIterator[tuple[str, PostgreSQLDatabase]]:
    services.require("postgresql")
    url = await services.create_database()
    await services.empty_database(url)
    db = PostgreSQLDatabase(url, pool_size=2)
    yield url, db
    await db.aclose()
    await _drop_auto_indexes(url)


@pytest.fixture
async def eager(
    pg: tuple[str, PostgreSQLDatabase],
) -> AsyncIterator[tuple[Storage, PostgreSQLStorage]]:
    """Memory, and PostgreSQL indexing every shape the first time it is listed."""
    storage = PostgreSQLStorage(pg[1], auto_index=EAGER)
    yield MemoryStorage(), storage
    await storage.indexer.aclose()


@settings(pg_oracle.ORACLE, max_examples=60)
@given(data=st.data())
async def test_indexed_listings_are_like_memory(
    eager: tuple[Storage, PostgreSQLStorage], data: st.DataObject
) -> None:
    memory, pg = eager
    parent, written = await oracle.populate(
        data, pg_oracle.objects, pg_oracle.object_ids, memory, pg
    )
    for _ in range(3):
        query = pg_oracle.draw_query(data, written)
        if data.draw(st.booleans(), label="add an equality"):
            field = data.draw(st.sampled_from(["a", "b", "a.b", "c"]), label="equal field")
            held = [o[field] for o in written if field in o]
            value = data.draw(
                st.sampled_from(held) if held else pg_oracle.scalars, label="equal value"
            )
            query = dataclasses.replace(query, filters=(Filter(field, value), *query.filters))
        # The first listing starts the build, the second one is written for the index.
        await oracle.assert_lists_like_memory(memory, pg, parent, query)
        await pg.indexer.wait()
        shape = compiler.index_shape(RESOURCE, parent, query)
        index = None if shape is None else compiler.index_statement(shape)
        if index is not None:
            assert index[0] in pg.indexer.known
        await oracle.assert_lists_like_memory(memory, pg, parent, query)


async def test_a_frequent_shape_of_a_large_scope_gets_its_index(
    pg: tuple[str, PostgreSQLDatabase],
) -> None:
    url, db = pg
    storage = PostgreSQLStorage(db, auto_index=AutoIndexConfig(min_objects=500, hits=3))
    query = ListQuery(
        filters=(Filter("category", "c1"),),
        sorting=(Sort("score", -1), Sort("last_modified", -1)),
        limit=5,
    )
    shape = compiler.index_shape(RESOURCE, "/big", query)
    assert shape is not None
    index = compiler.index_statement(shape)
    assert index is not None
    name = index[0]
    async with storage.transaction(write=True) as tx:
        for i in range(10):
            await tx.create(RESOURCE, "/small", {"id": f"s{i}", "category": "c1"})
        for i in range(2000):
            obj = {"id": f"r{i:04d}", "category": f"c{i % 10}", "score": (i * 7919) % 1009}
            await tx.create(RESOURCE, "/big", obj)
    for parent in ("/small", "/big"):
        for _ in range(3):
            async with storage.transaction(write=False) as tx:
                await tx.list(RESOURCE, parent, query)
            await storage.indexer.wait()
    conn = await asyncpg.connect(url, timeout=10)
    try:
        # Only the large scope, and only after `hits` listings; valid (CONCURRENTLY).
        rows = await conn.fetch(
            "SELECT c.relname, i.indisvalid FROM pg_index AS i"
            " JOIN pg_class AS c ON c.oid = i.indexrelid WHERE c.relname LIKE 'nuages\\_auto\\_%'"
        )
        assert [tuple(row) for row in rows] == [(name, True)]
        sql, params = compiler.list_sql(RESOURCE, "/big", query, indexed=True)
        plan = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {sql}", *params))
        assert name in plan and "Sort" not in plan, plan
    finally:
        await conn.close()
    async with storage.transaction(write=False) as tx:
        found = await tx.list(RESOURCE, "/big", query)
    scores = [(o["score"], o["last_modified"]) for o in found]
    assert scores == sorted(scores, reverse=True) and len(found) == 5
    assert all(o["category"] == "c1" for o in found)
    await storage.indexer.aclose()


async def test_total_objects_of_a_scope_is_kept_by_writes(
    pg: tuple[str, PostgreSQLDatabase],
) -> None:
    storage = PostgreSQLStorage(pg[1])
    everything = ListQuery()

    async def count() -> int:
        async with storage.transaction(write=False) as tx:
            return await tx.count(RESOURCE, "/p", everything)

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


async def test_an_index_another_process_built_is_taken_while_it_holds_the_build_lock(
    pg: tuple[str, PostgreSQLDatabase],
) -> None:
    """A process that finds the index valid takes it at once: it neither waits for the
    build lock (another process may hold it for a long ANALYZE) nor analyses again."""
    url, db = pg
    query = ListQuery(filters=(Filter("category", "c1"),), sorting=(Sort("score", -1),))
    shape = compiler.index_shape(RESOURCE, "/big", query)
    assert shape is not None
    index = compiler.index_statement(shape)
    assert index is not None
    name, statement = index
    builder = PostgreSQLStorage(db, auto_index=EAGER)
    assert await builder._build_index(name, statement, lambda: None)
    other = PostgreSQLStorage(PostgreSQLDatabase(url, pool_size=1), auto_index=EAGER)
    holder = await asyncpg.connect(url, timeout=10)
    try:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", compiler._BUILD_LOCK)
        ready: list[str] = []
        assert await other._build_index(name, statement, lambda: ready.append(name))
        assert ready == [name]
        await other.indexer.observe(name, statement, _many)
        await other.indexer.wait()
        assert name in other.indexer.known
    finally:
        await holder.close()
        await other.indexer.aclose()
        await other.db.aclose()
        await builder.indexer.aclose()


async def _many() -> int:
    return 1_000_000
