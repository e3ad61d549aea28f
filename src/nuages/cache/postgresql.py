"""PostgreSQL cache: JSON values with an absolute expiry, in the database's ``cache`` table.

Expiry uses the wall clock because several processes share the table. Expired rows are
never returned; writes purge a few of them at a time. Cache operations commit on their
own, except inside a write transaction open in the same context, which they join.
"""

from __future__ import annotations

import time
from typing import Any, Final

import orjson

from nuages.core.errors import BackendError
from nuages.postgresql.database import PostgreSQLDatabase, PostgreSQLTransaction

# Expired rows deleted by one write: bounded so that no write pays for a large backlog.
_PURGE_BATCH: Final = 100


class PostgreSQLCache:
    """Cache entries in a :class:`PostgreSQLDatabase`."""

    def __init__(self, db: PostgreSQLDatabase) -> None:
        self.db = db

    async def get(self, key: str) -> Any | None:
        async def get(tx: PostgreSQLTransaction) -> Any:
            return await tx.fetchval(
                "SELECT value FROM cache WHERE key = $1 AND expires_at > $2", key, time.time()
            )

        value = await self.db.run_write(get)
        return None if value is None else orjson.loads(value)

    async def set(self, key: str, value: Any, ttl: float) -> None:
        try:
            text = orjson.dumps(value).decode()
        except orjson.JSONEncodeError as exc:
            raise BackendError(f"cache value cannot be stored as JSON: {exc}") from exc

        async def set_(tx: PostgreSQLTransaction) -> None:
            now = time.time()
            await tx.execute(
                "DELETE FROM cache WHERE key IN (SELECT key FROM cache WHERE expires_at <= $1"
                " ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
                now,
                _PURGE_BATCH,
            )
            await tx.execute(
                "INSERT INTO cache (key, value, expires_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (key) DO UPDATE SET"
                " value = excluded.value, expires_at = excluded.expires_at",
                key,
                text,
                now + ttl,
            )

        await self.db.run_write(set_)

    async def pop(self, key: str) -> Any | None:
        # DELETE ... RETURNING: only one caller, in any process, gets the row.
        async def pop(tx: PostgreSQLTransaction) -> Any:
            return await tx.fetchrow(
                "DELETE FROM cache WHERE key = $1 RETURNING value, expires_at", key
            )

        row = await self.db.run_write(pop)
        if row is None or row[1] <= time.time():
            return None
        return orjson.loads(row[0])

    async def increment(self, key: str, ttl: float) -> tuple[int, float]:
        # The upsert locks the row: concurrent increments, in any process, run one by one.
        async def increment(tx: PostgreSQLTransaction) -> tuple[int, float]:
            now = time.time()
            row = await tx.fetchrow(
                "INSERT INTO cache (key, value, expires_at) VALUES ($1, '1', $2)"
                " ON CONFLICT (key) DO UPDATE SET"
                " value = CASE WHEN cache.expires_at > $3 AND cache.value ~ '^[0-9]{1,18}$'"
                " THEN (cache.value::bigint + 1)::text ELSE '1' END,"
                " expires_at = CASE WHEN cache.expires_at > $3"
                " THEN cache.expires_at ELSE excluded.expires_at END"
                " RETURNING value, expires_at",
                key,
                now + ttl,
                now,
            )
            assert row is not None
            return int(row[0]), float(row[1]) - now

        return await self.db.run_write(increment)

    async def delete(self, key: str) -> None:
        async def delete(tx: PostgreSQLTransaction) -> None:
            await tx.execute("DELETE FROM cache WHERE key = $1", key)

        await self.db.run_write(delete)

    async def ping(self) -> bool:
        return await self.db.ping()

    async def flush(self) -> None:
        async def flush(tx: PostgreSQLTransaction) -> None:
            await tx.execute("DELETE FROM cache")

        await self.db.run_write(flush)

    async def aclose(self) -> None:
        await self.db.aclose()
