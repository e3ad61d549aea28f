"""The cache protocol: JSON-serialisable values under string keys, each with a TTL."""

from __future__ import annotations

from typing import Any, Protocol


class Cache(Protocol):
    async def get(self, key: str) -> Any | None:
        """The value, or ``None`` when absent or expired."""
        ...

    async def set(self, key: str, value: Any, ttl: float) -> None:
        """Store `value` for `ttl` seconds (``ttl > 0``)."""
        ...

    async def pop(self, key: str) -> Any | None:
        """Atomically read and delete: at most one caller gets the value."""
        ...

    async def increment(self, key: str, ttl: float) -> tuple[int, float]:
        """Atomically add 1 to the counter under `key`, across every process sharing the
        backend; return its new value and the seconds left before it expires.

        A missing or expired counter starts at 1 and expires `ttl` seconds later (``ttl >
        0``); later increments keep that expiry (a fixed window). ``get`` reads the counter
        as an int. A key holding something else than a counter is reset to 1 (Redis: error).
        """
        ...

    async def delete(self, key: str) -> None: ...

    async def ping(self) -> bool: ...

    async def flush(self) -> None: ...

    async def aclose(self) -> None: ...
