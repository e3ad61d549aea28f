"""Redis cache (redis-py's asyncio client): JSON values under a key prefix, with TTLs.

Redis expires keys itself (``SET ... PX``); ``pop`` is ``GETDEL``, atomic across every
process sharing the server. Connection failures and timeouts raise :class:`BackendError`.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from nuages.core.errors import BackendError


class RedisCache:
    """A cache on a Redis server; `url` is ``redis://host:port/db`` (or ``rediss://``).
    Keys are stored under `prefix`, so that ``flush`` only removes Nuages' own keys."""

    def __init__(
        self, url: str, *, prefix: str = "nuages:", timeout: float = 5.0, pool_size: int = 10
    ) -> None:
        self.url = url
        self.prefix = prefix
        # A blocking pool: past `pool_size` operations at once, the next ones wait (up to
        # `timeout`) for a free connection instead of failing with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            max_connections=pool_size,
            timeout=timeout,
        )
        self._client = aioredis.Redis(connection_pool=pool)

    async def get(self, key: str) -> Any | None:
        try:
            value = await self._client.get(self.prefix + key)
        except RedisError as exc:
            raise BackendError(f"Redis: {exc}") from exc
        return None if value is None else orjson.loads(value)

    async def set(self, key: str, value: Any, ttl: float) -> None:
        try:
            data = orjson.dumps(value)
        except orjson.JSONEncodeError as exc:
            raise BackendError(f"cache value cannot be stored as JSON: {exc}") from exc
        try:
            await self._client.set(self.prefix + key, data, px=max(1, round(ttl * 1000)))
        except RedisError as exc:
            raise BackendError(f"Redis: {exc}") from exc

    async def pop(self, key: str) -> Any | None:
        try:
            value = await self._client.getdel(self.prefix + key)
        except RedisError as exc:
            raise BackendError(f"Redis: {exc}") from exc
        return None if value is None else orjson.loads(value)

    async def increment(self, key: str, ttl: float) -> tuple[int, float]:
        # MULTI/EXEC: create the counter with its expiry if absent, add one, read the
        # expiry, with no other client's command in between.
        name = self.prefix + key
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(name, 0, px=max(1, round(ttl * 1000)), nx=True)
                pipe.incr(name)
                pipe.pttl(name)
                _, value, left_ms = await pipe.execute()
        except RedisError as exc:
            raise BackendError(f"Redis: {exc}") from exc
        return int(value), max(0, int(left_ms)) / 1000

    async def delete(self, key: str) -> None:
        try:
            await self._client.delete(self.prefix + key)
        except RedisError as exc:
            raise BackendError(f"Redis: {exc}") from exc

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except RedisError:
            return False

    async def flush(self) -> None:
        try:
            batch: list[Any] = []
            async for name in self._client.scan_iter(match=self.prefix + "*", count=500):
                batch.append(name)
                if len(batch) >= 500:
                    await self._client.delete(*batch)
                    batch.clear()
            if batch:
                await self._client.delete(*batch)
        except RedisError as exc:
            raise BackendError(f"Redis: {exc}") from exc

    async def aclose(self) -> None:
        await self._client.aclose(close_connection_pool=True)
