"""PostgreSQL and Redis for the test suite: found on 127.0.0.1, or skipped — except in CI.

``NUAGES_TEST_POSTGRESQL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``) and
``NUAGES_TEST_REDIS`` (default ``redis://127.0.0.1:6379/15``) say where they run. A test
session creates its own database ``nuages_test_<pid>`` and drops it at the end (each
pytest-xdist worker of ``make test`` is a session of its own); every test gets it empty.
When ``CI=true`` an unreachable server fails the tests instead of skipping them, so that CI
cannot go green without them.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from urllib.parse import urlsplit, urlunsplit

import pytest

ADMIN_URL = os.environ.get(
    "NUAGES_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("NUAGES_TEST_REDIS", "redis://127.0.0.1:6379/15")
TEST_DATABASE = f"nuages_test_{os.getpid()}"


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ):
            return True
    except OSError:
        return False


@functools.cache
def postgresql_reachable() -> bool:
    return _reachable(ADMIN_URL, 5432)


@functools.cache
def redis_reachable() -> bool:
    return _reachable(REDIS_URL, 6379)


def require(service: str) -> None:
    """Skip (fail under CI=true) unless `service` ("postgresql" or "redis") is reachable."""
    reachable = postgresql_reachable() if service == "postgresql" else redis_reachable()
    if reachable:
        return
    url = ADMIN_URL if service == "postgresql" else REDIS_URL
    message = f"{service} is unreachable at {urlsplit(url).netloc}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI: {message}; its tests must not be skipped")
    pytest.skip(message)


def database_url() -> str:
    """URL of this session's test database (created on first use, see create_database)."""
    parts = urlsplit(ADMIN_URL)
    return urlunsplit(parts._replace(path=f"/{TEST_DATABASE}"))


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(ADMIN_URL, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


_created = False


async def create_database() -> str:
    """Create (once per session) and migrate this session's database; its URL."""
    global _created
    url = database_url()
    if not _created:
        from nuages.postgresql import PostgreSQLDatabase

        await _admin(f'DROP DATABASE IF EXISTS "{TEST_DATABASE}"')
        await _admin(f'CREATE DATABASE "{TEST_DATABASE}"')
        db = PostgreSQLDatabase(url)
        await db.migrate()
        await db.aclose()
        _created = True
    return url


def drop_database() -> None:
    if _created:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{TEST_DATABASE}" WITH (FORCE)'))


async def empty_database(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=10)
    try:
        # DELETE, not TRUNCATE: on tables this small it is 100 times faster.
        await conn.execute(
            "DELETE FROM objects; DELETE FROM timestamps; DELETE FROM access_control_entries;"
            " DELETE FROM user_principals; DELETE FROM cache"
        )
    finally:
        await conn.close()
