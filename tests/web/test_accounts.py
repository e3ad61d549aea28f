"""Accounts over HTTP (protocol/10 §3, 06 §1): endpoints, rules, auth policy, secrets."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.conftest import AppFactory, userid

from nuages.settings import Settings, SettingsError

ACCOUNTS = {
    "auth": "accounts basicauth",
    "plugins": "accounts",
    "account_create_principals": "system.Everyone",
    "account_write_principals": "account:admin",
}
PASSWORD = "correct horse battery staple"


@pytest.fixture
async def client(make_client: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    """A server with open sign-up and `admin` as administrator; anonymous by default."""
    async with make_client(**ACCOUNTS) as c:
        c.auth = None  # type: ignore[assignment]
        yield c


async def signup(client: httpx.AsyncClient, name: str, password: str = PASSWORD) -> httpx.Response:
    response = await client.put(f"/v1/accounts/{name}", json={"data": {"password": password}})
    assert response.status_code == 201, response.text
    return response


async def whoami(client: httpx.AsyncClient, auth: Any) -> str | None:
    user = (await client.get("/v1/", auth=auth)).json().get("user")
    return None if user is None else str(user["id"])


async def test_capability_announces_accounts_without_validation(
    client: httpx.AsyncClient,
) -> None:
    capabilities = (await client.get("/v1/")).json()["capabilities"]
    assert capabilities["accounts"]["validation_enabled"] is False
    assert capabilities["accounts"]["description"] == "Manage user accounts."
    assert "basicauth" in capabilities


async def test_anonymous_signup_with_put_hashes_the_password(client: httpx.AsyncClient) -> None:
    response = await signup(client, "alice")
    data = response.json()["data"]
    assert data["id"] == "alice"
    assert data["password"].startswith("$argon2id$")
    assert PASSWORD not in response.text


async def test_signup_with_post(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/accounts", json={"data": {"id": "bob@example.com", "password": "pw"}}
    )
    assert response.status_code == 201
    assert response.json()["data"]["id"] == "bob@example.com"
    assert await whoami(client, ("bob@example.com", "pw")) == "account:bob@example.com"


async def test_post_without_id_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/accounts", json={"data": {"password": "pw"}})
    assert response.status_code == 400
    body = response.json()
    assert body["errno"] == 107
    assert body["message"] == "data.id in body: Required"
    assert body["details"][0]["name"] == "data.id"


@pytest.mark.parametrize(
    "body", [{"data": {}}, {"data": {"password": ""}}, {"data": {"password": 3}}]
)
async def test_password_is_required_and_a_non_empty_string(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await client.put("/v1/accounts/alice", json=body)
    assert response.status_code == 400
    assert response.json()["details"][0]["name"] == "data.password"


async def test_invalid_account_ids_are_rejected(client: httpx.AsyncClient) -> None:
    response = await client.put("/v1/accounts/-alice", json={"data": {"password": "pw"}})
    assert response.status_code == 400
    response = await client.post("/v1/accounts", json={"data": {"id": "a b", "password": "pw"}})
    assert response.status_code == 400


async def test_basic_auth_identifies_the_account(client: httpx.AsyncClient) -> None:
    await signup(client, "alice")
    root = (await client.get("/v1/", auth=("alice", PASSWORD))).json()
    assert root["user"]["id"] == "account:alice"
    assert root["user"]["principals"][:3] == [
        "account:alice",
        "system.Everyone",
        "system.Authenticated",
    ]


async def test_wrong_password_falls_through_to_the_next_policy(
    client: httpx.AsyncClient,
) -> None:
    await signup(client, "alice")
    assert await whoami(client, ("alice", "wrong")) == userid(("alice", "wrong"))


async def test_accounts_alone_leave_unknown_credentials_anonymous(
    make_client: AppFactory,
) -> None:
    async with make_client(**{**ACCOUNTS, "auth": "accounts"}) as client:
        client.auth = None  # type: ignore[assignment]
        await signup(client, "alice")
        assert await whoami(client, ("alice", "wrong")) is None
        assert await whoami(client, ("nobody", "pw")) is None
        response = await client.get("/v1/buckets", auth=("alice", "wrong"))
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Basic realm="Realm"'
        capabilities = (await client.get("/v1/")).json()["capabilities"]
        assert "basicauth" not in capabilities


async def test_one_www_authenticate_with_two_basic_policies(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/accounts")
    assert response.status_code == 401
    assert response.headers.get_list("WWW-Authenticate") == ['Basic realm="Realm"']


async def test_new_account_is_its_own_writer(client: httpx.AsyncClient) -> None:
    await signup(client, "alice")
    response = await client.get("/v1/accounts/alice", auth=("alice", PASSWORD))
    assert response.status_code == 200
    assert response.json()["permissions"] == {"write": ["account:alice"]}


async def test_users_see_only_their_own_account(client: httpx.AsyncClient) -> None:
    await signup(client, "alice")
    await signup(client, "bob")
    alice = ("alice", PASSWORD)
    listed = (await client.get("/v1/accounts", auth=alice)).json()["data"]
    assert [a["id"] for a in listed] == ["alice"]
    assert (await client.get("/v1/accounts/bob", auth=alice)).status_code == 403
    assert (await client.get("/v1/accounts/alice", auth=alice)).status_code == 200


async def test_anonymous_cannot_read_accounts(client: httpx.AsyncClient) -> None:
    await signup(client, "alice")
    for response in (
        await client.get("/v1/accounts"),
        await client.head("/v1/accounts"),
        await client.get("/v1/accounts/alice"),
        await client.delete("/v1/accounts"),
    ):
        assert response.status_code == 401


async def test_a_user_cannot_create_another_account(client: httpx.AsyncClient) -> None:
    await signup(client, "alice")
    alice = ("alice", PASSWORD)
    response = await client.put("/v1/accounts/eve", json={"data": {"password": "x"}}, auth=alice)
    assert response.status_code == 400
    assert response.json()["message"] == "data.id in body: Username and account ID do not match."
    response = await client.post(
        "/v1/accounts", json={"data": {"id": "eve", "password": "x"}}, auth=alice
    )
    assert response.status_code == 400


async def test_posting_an_existing_account(client: httpx.AsyncClient) -> None:
    await signup(client, "alice")
    body = {"data": {"id": "alice", "password": "whatever"}}
    mine = await client.post("/v1/accounts", json=body, auth=("alice", PASSWORD))
    assert mine.status_code == 200
    assert (await client.post("/v1/accounts", json=body)).status_code == 401
    # Posting an existing id does not change its password.
    assert await whoami(client, ("alice", PASSWORD)) == "account:alice"


async def test_signup_needs_account_create_principals(
    make_client: AppFactory, backend: str
) -> None:
    settings = {**ACCOUNTS, "account_create_principals": ""}
    async with make_client(**settings) as client:
        client.auth = None  # type: ignore[assignment]
        response = await client.put("/v1/accounts/alice", json={"data": {"password": "pw"}})
        assert response.status_code == 401
        # Without an account, "admin" is a basicauth user: not the administrator.
        response = await client.put(
            "/v1/accounts/alice", json={"data": {"password": "pw"}}, auth=("admin", "pw")
        )
        assert response.status_code == 400
        if backend == "memory":
            return  # create-user writes to a database: another process's memory is not ours
        from nuages.plugins.accounts import create_account

        assert await create_account(client.app.state.settings, "admin", "pw") is True  # type: ignore[attr-defined]
        response = await client.put(
            "/v1/accounts/alice", json={"data": {"password": "pw"}}, auth=("admin", "pw")
        )
        assert response.status_code == 201
        assert await whoami(client, ("alice", "pw")) == "account:alice"


async def test_administrators_manage_every_account(client: httpx.AsyncClient) -> None:
    await signup(client, "admin", "root")
    await signup(client, "alice")
    admin = ("admin", "root")
    listed = (await client.get("/v1/accounts", auth=admin)).json()["data"]
    assert sorted(a["id"] for a in listed) == ["admin", "alice"]
    created = await client.put("/v1/accounts/carol", json={"data": {"password": "c"}}, auth=admin)
    assert created.status_code == 201
    # Created by the admin, written by carol.
    carol = await client.get("/v1/accounts/carol", auth=("carol", "c"))
    assert carol.json()["permissions"] == {"write": ["account:carol"]}
    changed = await client.patch(
        "/v1/accounts/alice", json={"data": {"password": "reset"}}, auth=admin
    )
    assert changed.status_code == 200
    assert await whoami(client, ("alice", "reset")) == "account:alice"
    assert (await client.delete("/v1/accounts/carol", auth=admin)).status_code == 200
    assert (await client.get("/v1/accounts/carol", auth=admin)).status_code == 404


async def test_changing_the_password(client: httpx.AsyncClient) -> None:
    await signup(client, "alice")
    old = ("alice", PASSWORD)
    assert await whoami(client, old) == "account:alice"  # now verified and cached
    response = await client.put(
        "/v1/accounts/alice", json={"data": {"password": "new one"}}, auth=old
    )
    assert response.status_code == 200
    assert "new one" not in response.text
    assert await whoami(client, old) != "account:alice"
    assert await whoami(client, ("alice", "new one")) == "account:alice"
    assert (await client.get("/v1/accounts/alice", auth=old)).status_code == 403


async def test_patching_metadata_keeps_the_password(client: httpx.AsyncClient) -> None:
    await signup(client, "alice")
    alice = ("alice", PASSWORD)
    before = (await client.get("/v1/accounts/alice", auth=alice)).json()["data"]["password"]
    response = await client.patch(
        "/v1/accounts/alice", json={"data": {"name": "Alice"}}, auth=alice
    )
    assert response.status_code == 200
    assert response.json()["data"]["password"] == before
    assert await whoami(client, alice) == "account:alice"


async def test_deleted_account_no_longer_authenticates(client: httpx.AsyncClient) -> None:
    await signup(client, "alice")
    alice = ("alice", PASSWORD)
    assert await whoami(client, alice) == "account:alice"
    deleted = await client.delete("/v1/accounts/alice", auth=alice)
    assert deleted.status_code == 200
    assert deleted.json()["data"]["deleted"] is True
    assert await whoami(client, alice) != "account:alice"


async def test_accounts_work_in_a_batch(client: httpx.AsyncClient) -> None:
    await signup(client, "alice")
    response = await client.post(
        "/v1/batch",
        json={
            "requests": [
                {"method": "GET", "path": "/accounts/alice"},
                {"method": "PUT", "path": "/buckets/b"},
            ]
        },
        auth=("alice", PASSWORD),
    )
    assert response.status_code == 200
    statuses = [r["status"] for r in response.json()["responses"]]
    assert statuses == [200, 201]
    bucket = response.json()["responses"][1]["body"]
    assert bucket["permissions"]["write"] == ["account:alice"]


async def test_accounts_are_listed_in_permissions(make_client: AppFactory) -> None:
    async with make_client(**ACCOUNTS, experimental_permissions_endpoint=True) as client:
        client.auth = None  # type: ignore[assignment]
        await signup(client, "alice")
        entries = (await client.get("/v1/permissions", auth=("alice", PASSWORD))).json()["data"]
        account = [e for e in entries if e["resource_name"] == "account"]
        assert account == [
            {
                "uri": "/accounts/alice",
                "resource_name": "account",
                "id": "alice",
                "account_id": "alice",
                "permissions": ["read", "write"],
            }
        ]
        root = [e for e in entries if e["resource_name"] == "root"]
        assert "account:create" in root[0]["permissions"]


def _cache_contents(client: httpx.AsyncClient) -> str:
    """Everything in the cache backend, keys and values, as one string."""
    cache = client.app.state.backends.cache  # type: ignore[attr-defined]
    if hasattr(cache, "_data"):  # memory
        return repr(cache._data)
    if hasattr(cache.db, "dsn"):  # postgresql
        import subprocess

        sql = "SELECT key, value FROM cache"
        return subprocess.run(
            ["psql", cache.db.dsn, "-Atc", sql], capture_output=True, text=True, check=True
        ).stdout
    with sqlite3.connect(cache.db.path) as conn:
        return repr(conn.execute("SELECT key, value FROM cache").fetchall())


async def test_the_credential_cache_holds_no_password(client: httpx.AsyncClient) -> None:
    await signup(client, "alice")
    assert await whoami(client, ("alice", PASSWORD)) == "account:alice"
    contents = _cache_contents(client)
    assert "account-auth:" in contents  # the verification was cached
    assert PASSWORD not in contents
    assert "$argon2" not in contents  # not even the hash


async def test_passwords_never_reach_the_logs(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cr3t-that-must-not-leak"
    with caplog.at_level(logging.DEBUG):
        await signup(client, "alice", secret)
        await whoami(client, ("alice", secret))
        await whoami(client, ("alice", secret + "-wrong"))
        await client.patch(
            "/v1/accounts/alice", json={"data": {"password": secret + "2"}}, auth=("alice", secret)
        )
        await client.post("/v1/accounts", content=f'{{"data": {{"password": "{secret}"')
    text = "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    assert secret not in text


def test_basicauth_before_accounts_is_a_configuration_error() -> None:
    with pytest.raises(SettingsError, match="'basicauth' must come after 'accounts'"):
        Settings.load(env={}, auth="basicauth accounts")


def test_accounts_plugin_needs_the_policy() -> None:
    with pytest.raises(SettingsError, match="accounts plugin needs"):
        Settings.load(env={}, plugins="accounts")
