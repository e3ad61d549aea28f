"""Brute-force protection of account logins: 429 errno 117 with Retry-After, sliding window."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from tests.conftest import AppFactory
from tests.web.test_accounts import ACCOUNTS, PASSWORD, signup, whoami

GUARDED = {**ACCOUNTS, "auth": "accounts", "brute_force_max_failures": 3}


@pytest.fixture
async def client(make_client: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(**GUARDED, brute_force_window_seconds=60) as c:
        c.auth = None  # type: ignore[assignment]
        yield c


async def fail(client: httpx.AsyncClient, name: str, times: int) -> None:
    for _ in range(times):
        assert await whoami(client, (name, "wrong")) is None


async def test_repeated_failures_are_refused_with_429(client: httpx.AsyncClient) -> None:
    await signup(client, "alice")
    await fail(client, "alice", 3)
    response = await client.get("/v1/buckets", auth=("alice", PASSWORD))
    assert response.status_code == 429
    body = response.json()
    assert body["errno"] == 117
    assert body["error"] == "Too Many Requests"
    assert 0 < int(response.headers["Retry-After"]) <= 60
    assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]


async def test_a_password_verified_before_the_attack_still_works(
    client: httpx.AsyncClient,
) -> None:
    await signup(client, "alice")
    assert await whoami(client, ("alice", PASSWORD)) == "account:alice"  # cached
    await fail(client, "alice", 5)
    assert await whoami(client, ("alice", PASSWORD)) == "account:alice"


async def test_failures_from_one_address_count_across_users(client: httpx.AsyncClient) -> None:
    for name in ("alice", "bob", "carol"):
        await signup(client, name)
    await fail(client, "alice", 1)
    await fail(client, "bob", 2)
    response = await client.get("/v1/", auth=("carol", PASSWORD))
    assert response.status_code == 429


async def test_unknown_user_names_are_counted_too(client: httpx.AsyncClient) -> None:
    # Probing for user names is throttled like guessing passwords: per name...
    await fail(client, "nobody", 3)
    response = await client.get("/v1/buckets", auth=("nobody", "x"))
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= 60


async def test_probing_many_user_names_from_one_address_is_throttled(
    client: httpx.AsyncClient,
) -> None:
    await signup(client, "alice")
    for name in ("ann", "bob", "eve@example.com"):
        await fail(client, name, 1)
    response = await client.get("/v1/", auth=("alice", PASSWORD))
    assert response.status_code == 429
    response = await client.get("/v1/", auth=("not a valid name", "x"))
    assert response.status_code == 429


async def test_anonymous_requests_are_not_counted(client: httpx.AsyncClient) -> None:
    await signup(client, "alice")
    for _ in range(5):
        assert (await client.get("/v1/")).status_code == 200
        assert (await client.get("/v1/", headers={"Authorization": "Basic %%%"})).is_success
    assert await whoami(client, ("alice", PASSWORD)) == "account:alice"


async def test_with_basicauth_unknown_names_are_not_failures(make_client: AppFactory) -> None:
    # basicauth identifies any credentials: an unknown account name is a basicauth user.
    settings = {**GUARDED, "auth": "accounts basicauth"}
    async with make_client(**settings) as client:
        client.auth = None  # type: ignore[assignment]
        for _ in range(5):
            assert (await whoami(client, ("nobody", "x"))) is not None
        assert (await client.get("/v1/", auth=("nobody", "x"))).status_code == 200


async def test_concurrent_failures_are_all_counted(make_client: AppFactory) -> None:
    # Counters are atomic increments: failures racing each other cannot be lost.
    async with make_client(
        **{**GUARDED, "brute_force_max_failures": 6}, brute_force_window_seconds=60
    ) as client:
        client.auth = None  # type: ignore[assignment]
        await signup(client, "alice")
        responses = await asyncio.gather(
            *(client.get("/v1/", auth=("alice", "wrong")) for _ in range(6))
        )
        assert all(r.status_code == 200 for r in responses)  # anonymous, not refused yet
        response = await client.get("/v1/", auth=("alice", PASSWORD))
        assert response.status_code == 429


async def test_the_window_slides(make_client: AppFactory) -> None:
    # A 3 s window: failing three times (three argon2 checks) must fit in it on a busy machine.
    async with make_client(**GUARDED, brute_force_window_seconds=3) as client:
        client.auth = None  # type: ignore[assignment]
        await signup(client, "alice")
        await fail(client, "alice", 3)
        response = await client.get("/v1/", auth=("alice", PASSWORD))
        assert response.status_code == 429
        assert 1 <= int(response.headers["Retry-After"]) <= 3
        await asyncio.sleep(3.1)
        assert await whoami(client, ("alice", PASSWORD)) == "account:alice"


async def test_protection_can_be_turned_off(make_client: AppFactory) -> None:
    async with make_client(**GUARDED, brute_force_protection=False) as client:
        client.auth = None  # type: ignore[assignment]
        await signup(client, "alice")
        await fail(client, "alice", 5)
        assert await whoami(client, ("alice", PASSWORD)) == "account:alice"


async def test_refusal_in_a_batch_is_the_whole_answer(client: httpx.AsyncClient) -> None:
    await signup(client, "alice")
    await fail(client, "alice", 3)
    response = await client.post(
        "/v1/batch",
        json={"requests": [{"path": "/buckets"}]},
        auth=("alice", PASSWORD),
    )
    assert response.status_code == 429
