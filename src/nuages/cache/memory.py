"""In-memory cache (reference)."""

from __future__ import annotations

import time
from typing import Any


class MemoryCache:
    def __init__(self) -> None:
        self._data: dict[str, tuple[float, Any]] = {}

    def _alive(self, key: str) -> tuple[float, Any] | None:
        entry = self._data.get(key)
        if entry is not None and entry[0] <= time.monotonic():
            del self._data[key]
            return None
        return entry

    async def get(self, key: str) -> Any | None:
        entry = self._alive(key)
        return None if entry is None else entry[1]

    async def set(self, key: str, value: Any, ttl: float) -> None:
        if len(self._data) > 10_000:
            now = time.monotonic()
            for k in [k for k, (exp, _) in self._data.items() if exp <= now]:
                del self._data[k]
        self._data[key] = (time.monotonic() + ttl, value)

    async def pop(self, key: str) -> Any | None:
        entry = self._alive(key)
        if entry is None:
            return None
        del self._data[key]
        return entry[1]

    async def increment(self, key: str, ttl: float) -> tuple[int, float]:
        # No await inside: atomic for every task of this process (the only sharers).
        now = time.monotonic()
        entry = self._alive(key)
        if entry is None or not isinstance(entry[1], int) or isinstance(entry[1], bool):
            await self.set(key, 1, ttl)
            return 1, ttl
        expires, value = entry
        self._data[key] = (expires, value + 1)
        return value + 1, expires - now

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def ping(self) -> bool:
        return True

    async def flush(self) -> None:
        self._data.clear()

    async def aclose(self) -> None:
        return None
