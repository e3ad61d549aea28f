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

    async def delete(self, key: str) -> None: ...

    async def ping(self) -> bool: ...

    async def flush(self) -> None: ...

    async def aclose(self) -> None: ...
