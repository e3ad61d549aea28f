"""Contract tests every cache backend passes.

Subclass :class:`CacheContract` in a test module (its name must start with ``Test``)
and provide a ``cache`` fixture yielding a fresh, empty backend.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nuages.cache.protocol import Cache


class CacheContract:
    """The behaviour of :class:`nuages.cache.protocol.Cache`."""

    @pytest.mark.parametrize(
        "value", ["text", 0, 1.5, True, ["a", 1, None], {"nested": {"list": [1, 2]}}, "☃\u0000"]
    )
    async def test_set_then_get(self, cache: Cache, value: Any) -> None:
        await cache.set("key", value, ttl=60)
        assert await cache.get("key") == value

    async def test_missing_key(self, cache: Cache) -> None:
        assert await cache.get("nope") is None
        assert await cache.pop("nope") is None
        await cache.delete("nope")

    async def test_set_overwrites(self, cache: Cache) -> None:
        await cache.set("key", "old", ttl=60)
        await cache.set("key", "new", ttl=60)
        assert await cache.get("key") == "new"

    async def test_entries_expire(self, cache: Cache) -> None:
        await cache.set("short", "v", ttl=0.05)
        await cache.set("long", "v", ttl=60)
        assert await cache.get("short") == "v"
        await asyncio.sleep(0.1)
        assert await cache.get("short") is None
        assert await cache.pop("short") is None
        assert await cache.get("long") == "v"

    async def test_set_renews_the_ttl(self, cache: Cache) -> None:
        await cache.set("key", "v", ttl=0.05)
        await cache.set("key", "v", ttl=60)
        await asyncio.sleep(0.1)
        assert await cache.get("key") == "v"

    async def test_pop_returns_the_value_once(self, cache: Cache) -> None:
        await cache.set("key", {"nonce": 1}, ttl=60)
        assert await cache.pop("key") == {"nonce": 1}
        assert await cache.pop("key") is None
        assert await cache.get("key") is None

    async def test_concurrent_pops_give_the_value_to_one_caller(self, cache: Cache) -> None:
        await cache.set("key", "token", ttl=60)
        results = await asyncio.gather(*(cache.pop("key") for _ in range(10)))
        assert results.count("token") == 1 and results.count(None) == 9

    async def test_delete(self, cache: Cache) -> None:
        await cache.set("key", "v", ttl=60)
        await cache.set("other", "v", ttl=60)
        await cache.delete("key")
        assert await cache.get("key") is None
        assert await cache.get("other") == "v"

    async def test_flush(self, cache: Cache) -> None:
        await cache.set("a", 1, ttl=60)
        await cache.set("b", 2, ttl=60)
        await cache.flush()
        assert await cache.get("a") is None
        assert await cache.get("b") is None

    async def test_ping(self, cache: Cache) -> None:
        assert await cache.ping() is True

    async def test_increment_counts_from_one(self, cache: Cache) -> None:
        assert (await cache.increment("hits", ttl=60))[0] == 1
        value, left = await cache.increment("hits", ttl=60)
        assert value == 2 and 0 < left <= 60
        assert await cache.get("hits") == 2

    async def test_increment_keeps_the_first_expiry(self, cache: Cache) -> None:
        await cache.increment("hits", ttl=0.3)
        await asyncio.sleep(0.1)
        value, left = await cache.increment("hits", ttl=60)  # a fixed window: not renewed
        assert value == 2 and left <= 0.3
        await asyncio.sleep(0.3)
        assert await cache.get("hits") is None
        value, left = await cache.increment("hits", ttl=60)
        assert value == 1 and 59 <= left <= 60

    async def test_increment_after_set(self, cache: Cache) -> None:
        await cache.set("hits", 41, ttl=60)
        assert (await cache.increment("hits", ttl=60))[0] == 42

    async def test_concurrent_increments_are_all_counted(self, cache: Cache) -> None:
        # 10 at once: the Redis test client's pool has 10 connections.
        results = await asyncio.gather(*(cache.increment("hits", ttl=60) for _ in range(10)))
        assert sorted(value for value, _ in results) == list(range(1, 11))
        assert await cache.get("hits") == 10
