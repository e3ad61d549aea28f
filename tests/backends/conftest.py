"""Backends under test: every contract suite runs on each of them."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests import services

from nuages.cache.memory import MemoryCache
from nuages.cache.postgresql import PostgreSQLCache
from nuages.cache.protocol import Cache
from nuages.cache.redis import RedisCache
from nuages.cache.sqlite import SQLiteCache
from nuages.permission.memory import MemoryPermission
from nuages.permission.postgresql import PostgreSQLPermission
from nuages.permission.protocol import Permission
from nuages.permission.sqlite import SQLitePermission
from nuages.postgresql import PostgreSQLDatabase
from nuages.sqlite import SQLiteDatabase
from nuages.storage.memory import MemoryStorage
from nuages.storage.postgresql import PostgreSQLStorage
from nuages.storage.protocol import Storage
from nuages.storage.sqlite import SQLiteStorage

BACKENDS = ["memory", "sqlite", "postgresql"]
CACHE_BACKENDS = [*BACKENDS, "redis"]


async def _postgresql() -> PostgreSQLDatabase:
    """The session's PostgreSQL test database, emptied (tests/services.py)."""
    services.require("postgresql")
    url = await services.create_database()
    await services.empty_database(url)
    return PostgreSQLDatabase(url, pool_size=4, timeout=10)


async def _sqlite(path: Path) -> SQLiteDatabase:
    """A migrated database in a new file."""
    db = SQLiteDatabase(path)
    await db.migrate()
    return db


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[SQLiteDatabase]:
    """A migrated database in a new file."""
    db = await _sqlite(tmp_path / "nuages.db")
    yield db
    await db.aclose()


@pytest.fixture(params=BACKENDS)
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    backend: Storage
    if request.param == "memory":
        backend = MemoryStorage()
    elif request.param == "postgresql":
        backend = PostgreSQLStorage(await _postgresql())
    else:
        backend = SQLiteStorage(await _sqlite(tmp_path / "storage.db"))
    yield backend
    await backend.aclose()


@pytest.fixture(params=BACKENDS)
async def permission(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Permission]:
    backend: Permission
    if request.param == "memory":
        backend = MemoryPermission()
    elif request.param == "postgresql":
        backend = PostgreSQLPermission(await _postgresql())
    else:
        backend = SQLitePermission(await _sqlite(tmp_path / "permission.db"))
    yield backend
    await backend.aclose()


@pytest.fixture(params=CACHE_BACKENDS)
async def cache(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cache]:
    backend: Cache
    if request.param == "memory":
        backend = MemoryCache()
    elif request.param == "postgresql":
        backend = PostgreSQLCache(await _postgresql())
    elif request.param == "redis":
        services.require("redis")
        backend = RedisCache(services.REDIS_URL, prefix=f"nuages-test-{os.getpid()}:")
        await backend.flush()
    else:
        backend = SQLiteCache(await _sqlite(tmp_path / "cache.db"))
    yield backend
    await backend.aclose()
