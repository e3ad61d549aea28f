"""The Redis cache under more concurrent operations than it has connections."""

from __future__ import annotations

import asyncio
import uuid

from tests import services

from nuages.cache.redis import RedisCache


async def test_operations_beyond_the_pool_size_wait_for_a_connection() -> None:
    services.require("redis")
    cache = RedisCache(services.REDIS_URL, prefix=f"pooltest-{uuid.uuid4().hex}:", pool_size=2)
    try:
        counts = await asyncio.gather(*(cache.increment("hits", ttl=60) for _ in range(60)))
        assert sorted(value for value, _ in counts) == list(range(1, 61))
        await asyncio.gather(*(cache.set(f"k{i}", i, ttl=60) for i in range(30)))
        assert await asyncio.gather(*(cache.get(f"k{i}") for i in range(30))) == list(range(30))
    finally:
        await cache.flush()
        await cache.aclose()
