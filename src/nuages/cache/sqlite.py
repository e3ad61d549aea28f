"""SQLite cache: JSON values with an absolute expiry, in the database's ``cache`` table.

Expiry uses the wall clock (not a monotonic one) because several processes may share the
file. Expired rows are never returned; writes purge a few of them at a time.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Final

import orjson

from nuages.core.errors import BackendError
from nuages.sqlite.database import SQLiteDatabase

# Expired rows deleted by one write: bounded so that no write pays for a large backlog.
_PURGE_BATCH: Final = 100


class SQLiteCache:
    """Cache entries in a :class:`SQLiteDatabase`.

    A cache write inside a write transaction open in the same context joins it (the
    single writer connection allows nothing else); elsewhere, including inside a read
    transaction, it commits on its own at once.

    :meth:`aclose` closes the shared database (it reopens on next use).
    """

    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    async def get(self, key: str) -> Any | None:
        row = await self.db.run_read(
            lambda conn: conn.execute(
                "SELECT value FROM cache WHERE key = ? AND expires_at > ?", (key, time.time())
            ).fetchone()
        )
        return None if row is None else orjson.loads(row[0])

    async def set(self, key: str, value: Any, ttl: float) -> None:
        try:
            text = orjson.dumps(value).decode()
        except orjson.JSONEncodeError as exc:
            raise BackendError(f"cache value cannot be stored as JSON: {exc}") from exc

        def set_(conn: sqlite3.Connection) -> None:
            now = time.time()
            conn.execute(
                "DELETE FROM cache WHERE key IN"
                " (SELECT key FROM cache WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)",
                (now, _PURGE_BATCH),
            )
            conn.execute(
                "INSERT INTO cache (key, value, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET"
                " value = excluded.value, expires_at = excluded.expires_at",
                (key, text, now + ttl),
            )

        await self.db.run_write(set_)

    async def pop(self, key: str) -> Any | None:
        # One DELETE ... RETURNING in a write transaction: only one caller gets the row.
        rows = await self.db.run_write(
            lambda conn: conn.execute(
                "DELETE FROM cache WHERE key = ? RETURNING value, expires_at", (key,)
            ).fetchall()
        )
        if not rows or rows[0][1] <= time.time():
            return None
        return orjson.loads(rows[0][0])

    async def increment(self, key: str, ttl: float) -> tuple[int, float]:
        # One upsert in the single writer's transaction: increments never interleave, also
        # across processes sharing the file.
        def increment(conn: sqlite3.Connection) -> tuple[int, float]:
            now = time.time()
            conn.execute(
                "DELETE FROM cache WHERE key IN"
                " (SELECT key FROM cache WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)",
                (now, _PURGE_BATCH),
            )
            value, expires_at = conn.execute(
                "INSERT INTO cache (key, value, expires_at) VALUES (?, '1', ?)"
                " ON CONFLICT (key) DO UPDATE SET"
                " value = CASE WHEN cache.expires_at > ?"
                " THEN CAST(CAST(cache.value AS INTEGER) + 1 AS TEXT) ELSE '1' END,"
                " expires_at = CASE WHEN cache.expires_at > ?"
                " THEN cache.expires_at ELSE excluded.expires_at END"
                " RETURNING value, expires_at",
                (key, now + ttl, now, now),
            ).fetchone()
            return int(value), expires_at - now

        return await self.db.run_write(increment)

    async def delete(self, key: str) -> None:
        await self.db.run_write(
            lambda conn: conn.execute("DELETE FROM cache WHERE key = ?", (key,))
        )

    async def ping(self) -> bool:
        return await self.db.ping()

    async def flush(self) -> None:
        await self.db.run_write(lambda conn: conn.execute("DELETE FROM cache"), heavy=True)

    async def aclose(self) -> None:
        await self.db.aclose()
