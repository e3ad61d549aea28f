"""kinto-http (from PyPI) with accounts and the default bucket, against a real ``nuages serve``."""

from __future__ import annotations

import httpx
import pytest
from kinto_http import Client, KintoException

SERVER_SETTINGS = {
    "auth": "accounts basicauth",
    "plugins": "flush accounts default_bucket",
    "account_create_principals": "system.Everyone",
    "account_write_principals": "account:admin",
    "experimental_permissions_endpoint": "true",
}
PASSWORD = "kinto-http password"


@pytest.fixture
def server(nuages_server: str) -> str:
    response = httpx.post(f"{nuages_server}/__flush__", timeout=5)
    assert response.status_code == 202
    return nuages_server


def signup(server: str, name: str, password: str = PASSWORD) -> None:
    response = httpx.put(
        f"{server}/accounts/{name}", json={"data": {"password": password}}, timeout=10
    )
    assert response.status_code == 201, response.text


def test_client_authenticates_with_an_account(server: str) -> None:
    signup(server, "alice")
    client = Client(server_url=server, auth=("alice", PASSWORD))
    info = client.server_info()
    assert info["user"]["id"] == "account:alice"
    assert "accounts" in info["capabilities"]
    bucket = client.create_bucket(id="shared")
    assert bucket["permissions"]["write"] == ["account:alice"]


def test_default_bucket_through_kinto_http(server: str) -> None:
    signup(server, "alice")
    client = Client(server_url=server, auth=("alice", PASSWORD))
    personal = client.server_info()["user"]["bucket"]
    record = client.create_record(data={"title": "milk"}, bucket="default", collection="tasks")
    assert record["data"]["title"] == "milk"
    records = client.get_records(bucket=personal, collection="tasks")
    assert [r["title"] for r in records] == ["milk"]
    assert client.get_bucket(id="default")["data"]["id"] == personal
    with client.batch() as batch:
        for n in range(3):
            batch.create_record(data={"n": n}, bucket="default", collection="notes")
    assert len(client.get_records(bucket="default", collection="notes")) == 3


def test_password_change_through_kinto_http(server: str) -> None:
    signup(server, "alice")
    client = Client(server_url=server, auth=("alice", PASSWORD))
    client.session.request("patch", "/accounts/alice", data={"password": "changed"})
    with pytest.raises(KintoException) as denied:
        Client(server_url=server, auth=("alice", PASSWORD)).get_record(
            id="alice", bucket="x", collection="y"
        )
    assert denied.value.response.status_code in (401, 403)
    renewed = Client(server_url=server, auth=("alice", "changed"))
    assert renewed.server_info()["user"]["id"] == "account:alice"


def test_permissions_lists_the_account(server: str) -> None:
    signup(server, "alice")
    client = Client(server_url=server, auth=("alice", PASSWORD))
    entries = client.get_permissions()
    assert any(e["uri"] == "/accounts/alice" for e in entries)


def test_wrong_password_is_not_an_account(server: str) -> None:
    signup(server, "alice")
    client = Client(server_url=server, auth=("alice", "wrong"))
    assert client.server_info()["user"]["id"].startswith("basicauth:")
