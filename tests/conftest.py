"""Shared fixtures: the real ASGI app driven over HTTP with httpx, on every local backend."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests import services

from nuages.settings import Settings
from nuages.web.app import create_app

ALICE = ("alice", "secret")
BOB = ("bob", "secret")

# The storage backends every HTTP test runs on. NUAGES_TEST_BACKENDS=memory narrows it.
# PostgreSQL joins them when it is reachable (always under CI=true: unreachable then fails).
_DEFAULT_BACKENDS = "memory,sqlite"
if services.postgresql_reachable() or os.environ.get("CI") == "true":
    _DEFAULT_BACKENDS += ",postgresql"
BACKENDS = os.environ.get("NUAGES_TEST_BACKENDS", _DEFAULT_BACKENDS).split(",")

AppFactory = Callable[..., Any]


@asynccontextmanager
async def serving(
    app: Any,
    *,
    auth: tuple[str, str] | None = ALICE,
    base_url: str = "http://testserver",
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on `app` between its start-up and its shutdown (its lifespan)."""
    async with app.lifespan_context():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url, auth=auth) as client:
            yield client


async def _storage_url(backend: str, tmp_path: Path) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "postgresql":
        services.require("postgresql")
        url = await services.create_database()
        await services.empty_database(url)
        return url
    return f"sqlite:///{tmp_path / 'nuages.db'}"


@pytest.fixture(scope="session", autouse=True)
def _drop_test_database() -> Iterator[None]:
    """The session's PostgreSQL database (tests/services.py) is dropped at the end."""
    yield
    services.drop_database()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_client(backend: str, tmp_path: Path) -> AppFactory:
    """``async with make_client(paginate_by=2) as client:`` — a client on a fresh app.

    Keyword arguments are settings.
    """

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        # No access log unless a test asks (tests/web/test_access_log.py).
        values: dict[str, Any] = {
            "storage_url": await _storage_url(backend, tmp_path),
            "log_level": "warning",
        }
        values.update(overrides)
        settings = Settings.load(env={}, **values)
        app = create_app(settings, migrate=True)
        async with serving(app) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client

    return factory


@pytest.fixture
async def client(make_client: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    """A client authenticated as alice (basicauth) on a fresh app."""
    async with make_client() as c:
        yield c


def userid(credentials: tuple[str, str], secret: str = "") -> str:
    from nuages.core.authorization import basicauth_userid

    return basicauth_userid(secret, f"{credentials[0]}:{credentials[1]}")
