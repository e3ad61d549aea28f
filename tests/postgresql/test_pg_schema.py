"""PostgreSQL schema versions and migrations, URLs and data JSONB cannot hold as such."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from tests import services
from tests.conftest import serving

from nuages.core.errors import BackendError
from nuages.core.objects import ListQuery
from nuages.permission.postgresql import PostgreSQLPermission
from nuages.postgresql import CURRENT_SCHEMA_VERSION, PostgreSQLDatabase
from nuages.settings import Settings, SettingsError
from nuages.storage.postgresql import PostgreSQLStorage
from nuages.web.app import create_app

ALICE = ("alice", "secret")


@pytest.fixture
async def empty_db() -> AsyncIterator[PostgreSQLDatabase]:
    """A database with no Nuages schema at all."""
    services.require("postgresql")
    name = f"{services.TEST_DATABASE}_schema"
    admin = await asyncpg.connect(services.ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
        db = PostgreSQLDatabase(services.ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
        yield db
        await db.aclose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_unmigrated_and_newer_schemas_are_refused(empty_db: PostgreSQLDatabase) -> None:
    with pytest.raises(BackendError, match="no Nuages schema: run `nuages migrate`"):
        await empty_db.check_schema()
    await empty_db.migrate()
    await empty_db.migrate()  # idempotent
    assert await empty_db.schema_version() == CURRENT_SCHEMA_VERSION
    await empty_db.check_schema()

    async def set_version(tx: object) -> None:
        await tx.execute("UPDATE nuages_metadata SET value = '99'")  # type: ignore[attr-defined]

    await empty_db.run_write(set_version)
    with pytest.raises(BackendError, match=r"newer than this Nuages supports.*upgrade Nuages"):
        await empty_db.check_schema()
    with pytest.raises(BackendError, match="upgrade Nuages"):
        await empty_db.migrate()


# What each migration adds, undone: from a database of its version to one of the version
# before.
_DOWNGRADES = {
    3: "DROP TRIGGER user_principals_changed ON user_principals;"
    " DROP FUNCTION nuages_principals_changed(); DROP TABLE principals_version",
    2: "ALTER TABLE timestamps DROP COLUMN live_count",
}


async def _principals_token(db: PostgreSQLDatabase) -> str:
    async def read(tx: object) -> str:
        return await tx.fetchval("SELECT token FROM principals_version")  # type: ignore[attr-defined,no-any-return]

    return await db.run_read(read)


@pytest.mark.parametrize("version", [1, 2])
async def test_an_older_database_is_migrated(empty_db: PostgreSQLDatabase, version: int) -> None:
    await empty_db.migrate()
    storage, permission = PostgreSQLStorage(empty_db), PostgreSQLPermission(empty_db)
    async with storage.transaction(write=True) as tx:
        for i in range(4):
            await tx.create("record", "/a", {"id": str(i)})
        await tx.delete("record", "/a", "0")
        await tx.create("record", "/b", {"id": "x"})
    async with permission.transaction(write=True) as ptx:
        await ptx.add_user_principal("alice", "g")

    async def downgrade(tx: object) -> None:
        for n in range(CURRENT_SCHEMA_VERSION, version, -1):
            await tx.execute(_DOWNGRADES[n])  # type: ignore[attr-defined]
        await tx.execute(  # type: ignore[attr-defined]
            f"UPDATE nuages_metadata SET value = '{version}' WHERE name = 'schema_version'"
        )

    await empty_db.run_write(downgrade)
    with pytest.raises(BackendError, match="run `nuages migrate`"):
        await empty_db.check_schema()
    await empty_db.migrate()
    assert await empty_db.schema_version() == CURRENT_SCHEMA_VERSION == 3
    # Version 2: the live counts of existing scopes.
    async with storage.transaction(write=False) as tx:
        assert await tx.count("record", "/a", ListQuery()) == 3
        assert await tx.count("record", "/b", ListQuery()) == 1
    # Version 3: the principals' token, replaced by each change of them.
    before = await _principals_token(empty_db)
    async with permission.transaction(write=True) as ptx:
        assert await ptx.get_user_principals("alice") == {"g"}
        await ptx.remove_user_principal("alice", "g")
    assert await _principals_token(empty_db) != before


async def test_the_app_refuses_an_unmigrated_database(empty_db: PostgreSQLDatabase) -> None:
    app = create_app(Settings.load(env={}, storage_url=empty_db.dsn))
    with pytest.raises(BackendError, match="nuages migrate"):
        async with app.lifespan_context():
            pass


def test_urls() -> None:
    settings = Settings.load(
        env={
            "NUAGES_STORAGE_URL": "postgres://u:pw@db/nuages",
            "NUAGES_CACHE_URL": "redis://cache:6379/0",
            "NUAGES_POSTGRESQL_POOL_SIZE": "3",
        }
    )
    assert settings.storage_url == "postgresql://u:pw@db/nuages"
    assert settings.effective_permission_url == "postgresql://u:pw@db/nuages"
    assert settings.postgresql_pool_size == 3
    assert "pw" not in repr(settings)
    with pytest.raises(SettingsError):
        Settings.load(env={"NUAGES_STORAGE_URL": "postgresql://"})


async def test_the_database_down_is_a_503_with_retry_after() -> None:
    # Nothing listens on port 1: connection refused, at once.
    url = "postgresql://postgres@127.0.0.1:1/nuages"
    app = create_app(Settings.load(env={}, storage_url=url, postgresql_timeout=2))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", auth=ALICE) as client:
        response = await client.get("/v1/buckets")
        assert response.status_code == 503
        assert response.json()["errno"] == 201
        assert "Retry-After" in response.headers
        heartbeat = await client.get("/v1/__heartbeat__")
        assert heartbeat.status_code == 503


async def test_nul_characters_and_long_ids_are_stored_exactly() -> None:
    services.require("postgresql")
    url = await services.create_database()
    await services.empty_database(url)
    app = create_app(Settings.load(env={}, storage_url=url), migrate=True)
    async with serving(app, base_url="http://t") as client:
        bucket = "b" * 5000
        assert (await client.put(f"/v1/buckets/{bucket}")).status_code == 201
        records = f"/v1/buckets/{bucket}/collections/c/records"
        assert (await client.put(f"/v1/buckets/{bucket}/collections/c")).status_code == 201
        data = {"s": "a\u0000b", "n": 1e16, "k\u0000": [1.5, "\u0000"]}
        created = await client.put(f"{records}/{'r' * 5000}", json={"data": data})
        assert created.status_code == 201, created.text
        listed = (await client.get(records)).json()["data"]
        assert [{k: o[k] for k in data} for o in listed] == [data]
        assert listed[0]["id"] == "r" * 5000
        filtered = await client.get(records, params={"s": "a\u0000b"})
        assert filtered.status_code < 500  # (400: the API refuses U+0000 in querystrings)
