"""The cache contract, on every backend of conftest.py."""

from __future__ import annotations

import asyncio
import multiprocessing

import pytest

from nuages.cache.memory import MemoryCache
from nuages.cache.postgresql import PostgreSQLCache
from nuages.cache.protocol import Cache
from nuages.cache.redis import RedisCache
from nuages.cache.sqlite import SQLiteCache
from nuages.cache.testing import CacheContract
from nuages.postgresql import PostgreSQLDatabase
from nuages.sqlite import SQLiteDatabase


class TestCache(CacheContract):
    pass


def _reopen(kind: str, where: str, prefix: str) -> Cache:
    """The same cache as the parent's, opened in a child process."""
    if kind == "sqlite":
        return SQLiteCache(SQLiteDatabase(where))
    if kind == "postgresql":
        return PostgreSQLCache(PostgreSQLDatabase(where, pool_size=2))
    return RedisCache(where, prefix=prefix, pool_size=2)


def _increment_many(kind: str, where: str, prefix: str, times: int) -> list[int]:
    async def run() -> list[int]:
        cache = _reopen(kind, where, prefix)
        try:
            return [(await cache.increment("shared", ttl=60))[0] for _ in range(times)]
        finally:
            await cache.aclose()

    return asyncio.run(run())


async def test_increments_are_atomic_across_processes(cache: Cache) -> None:
    """Several processes increment one counter: every increment is counted once."""
    if isinstance(cache, MemoryCache):
        pytest.skip("a memory cache belongs to one process")
    prefix = ""
    if isinstance(cache, SQLiteCache):
        kind, where = "sqlite", cache.db.path
    elif isinstance(cache, PostgreSQLCache):
        kind, where = "postgresql", cache.db.dsn
    else:
        assert isinstance(cache, RedisCache)
        kind, where, prefix = "redis", cache.url, cache.prefix
    processes, times = 4, 25
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        results = await asyncio.to_thread(
            pool.starmap, _increment_many, [(kind, where, prefix, times)] * processes
        )
    values = sorted(value for result in results for value in result)
    assert values == list(range(1, processes * times + 1))  # no value given twice
    assert await cache.get("shared") == processes * times
