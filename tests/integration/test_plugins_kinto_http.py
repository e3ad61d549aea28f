"""kinto-http (the official Python client) against a real ``nuages serve`` with the collection
features on: JSON-schema validation, history, quotas, attachments — two worker processes
over SQLite."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from kinto_http import Client, KintoException

from nuages.core.authorization import basicauth_userid

ALICE = ("alice", "pw")
BOB = ("bob", "pw")
ALICE_ID = basicauth_userid("", "alice:pw")
MAX_ITEMS = 20
SERVER_SETTINGS = {
    "plugins": "flush history quotas attachment",
    "experimental_collection_schema_validation": "true",
    "quotas_collection_max_items": str(MAX_ITEMS),
    "workers": "2",
}
SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "done": {"type": "boolean"}},
    "required": ["title"],
}


@pytest.fixture
def server(nuages_server: str) -> str:
    response = httpx.post(f"{nuages_server}/__flush__", timeout=5)
    assert response.status_code == 202
    return nuages_server


@pytest.fixture
def alice(server: str) -> Client:
    client = Client(server_url=server, auth=ALICE, bucket="app", collection="tasks")
    client.create_bucket(id="app")
    client.create_collection(id="tasks", data={"schema": SCHEMA})
    return client


def test_capabilities(alice: Client) -> None:
    capabilities = alice.server_info()["capabilities"]
    assert {"schema", "history", "quotas", "attachments"} <= set(capabilities)


def test_schema_violation_is_a_400(alice: Client) -> None:
    with pytest.raises(KintoException) as exc:
        alice.create_record(data={"done": True})
    assert exc.value.response.status_code == 400
    body = exc.value.response.json()
    assert body["errno"] == 107
    assert body["details"][0]["name"] == "title"
    with pytest.raises(KintoException) as exc:
        alice.create_record(data={"title": 42})
    assert exc.value.response.status_code == 400
    record = alice.create_record(data={"title": "ok"})
    collection = alice.get_collection()
    assert record["data"]["schema"] == collection["data"]["last_modified"]
    assert [r["title"] for r in alice.get_records()] == ["ok"]


def test_get_history(alice: Client) -> None:
    record = alice.create_record(id="r1", data={"title": "one"})["data"]
    alice.update_record(id="r1", data={"title": "two"})
    alice.delete_record(id="r1")
    history = alice.get_history()
    assert [(e["resource_name"], e["action"]) for e in history] == [
        ("record", "delete"),
        ("record", "update"),
        ("record", "create"),
        ("collection", "create"),
        ("bucket", "create"),
    ]
    assert history[2]["target"]["data"] == record
    assert history[2]["user_id"] == ALICE_ID
    filtered = alice.get_history(resource_name="record", _sort="last_modified")
    assert [e["action"] for e in filtered] == ["create", "update", "delete"]
    # Bob, without any permission on the bucket, sees nothing.
    bob = Client(server_url=alice.session.server_url, auth=BOB, bucket="app")
    with pytest.raises(KintoException) as exc:
        bob.get_history()
    assert exc.value.response.status_code == 403
    alice.purge_history()
    assert alice.get_history() == []


def test_snapshot(alice: Client, server: str) -> None:
    first = alice.create_record(id="a", data={"title": "a1"})["data"]
    alice.update_record(id="a", data={"title": "a2"})
    alice.create_record(id="b", data={"title": "b"})
    url = f"{server}/buckets/app/snapshot/collections/tasks@{first['last_modified']}"
    r = httpx.get(url, auth=ALICE, timeout=5)
    assert r.status_code == 200
    assert r.json()["data"] == [first]


def test_quota_is_exact_under_concurrency(alice: Client, server: str) -> None:
    url = f"{server}/buckets/app/collections/tasks/records"

    def create(i: int) -> int:
        with httpx.Client(auth=ALICE, timeout=30) as http:
            return http.post(url, json={"data": {"title": f"t{i}"}}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(create, range(3 * MAX_ITEMS)))
    assert statuses.count(201) == MAX_ITEMS
    assert set(statuses) == {201, 507}
    assert len(alice.get_records()) == MAX_ITEMS
    usage = httpx.get(f"{server}/buckets/app/collections/tasks/quota", auth=ALICE).json()
    assert usage["data"]["record_count"] == MAX_ITEMS
    with pytest.raises(KintoException) as exc:
        alice.create_record(data={"title": "one too many"})
    assert exc.value.response.status_code == 507


def test_attachments(alice: Client, tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_bytes(b"hello attachments\n" * 100)
    attachment = alice.add_attachment(id="doc", filepath=str(source), data={"title": "notes"})
    assert attachment["filename"] == "notes.txt"
    assert attachment["size"] == 1800
    record = alice.get_record(id="doc")["data"]
    assert record["title"] == "notes"
    assert record["attachment"] == attachment
    downloaded = alice.download_attachment(record, filepath=str(tmp_path / "out"))
    assert Path(downloaded).read_bytes() == source.read_bytes()
    alice.remove_attachment(id="doc")
    assert alice.get_record(id="doc")["data"]["attachment"] is None


def _gone(url: str) -> bool:
    """Whether the file at `url` is removed within a few seconds (removal follows the commit)."""
    for _ in range(50):
        if httpx.get(url, timeout=5).status_code == 404:
            return True
        time.sleep(0.1)
    return False


def test_attachment_lifecycle(alice: Client, tmp_path: Path) -> None:
    capability = alice.server_info()["capabilities"]["attachments"]
    assert capability["base_url"].endswith("/v1/attachments/")
    assert capability["gzipped"] is False
    first = tmp_path / "first.json"
    first.write_bytes(b'{"version": 1}')
    second = tmp_path / "second.png"
    second.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)
    bob_reads = {"read": [basicauth_userid("", "bob:pw")]}
    one = alice.add_attachment(
        id="doc", filepath=str(first), data={"title": "doc"}, permissions=bob_reads
    )
    assert one["mimetype"] == "application/json"
    assert (
        httpx.get(capability["base_url"] + one["location"], timeout=5).content == b'{"version": 1}'
    )
    bob = Client(server_url=alice.session.server_url, auth=BOB, bucket="app", collection="tasks")
    assert bob.get_record(id="doc")["data"]["attachment"] == one
    with pytest.raises(KintoException) as exc:
        bob.add_attachment(id="doc", filepath=str(second))
    assert exc.value.response.status_code == 403
    two = alice.add_attachment(id="doc", filepath=str(second))
    assert two["mimetype"] == "image/png" and two["size"] == second.stat().st_size
    assert _gone(capability["base_url"] + one["location"])
    downloaded = alice.download_attachment(
        alice.get_record(id="doc")["data"], filepath=str(tmp_path / "out.png")
    )
    assert Path(downloaded).read_bytes() == second.read_bytes()
    # Hand-editing the metadata is refused; deleting the record takes the file.
    with pytest.raises(KintoException) as exc:
        alice.patch_record(id="doc", data={"attachment": one})
    assert exc.value.response.status_code == 400
    alice.delete_record(id="doc")
    assert _gone(capability["base_url"] + two["location"])
    # Extensions outside kinto-attachment's default list are refused.
    script = tmp_path / "run.sh"
    script.write_text("echo hi\n")
    with pytest.raises(KintoException) as exc:
        alice.add_attachment(id="script", filepath=str(script))
    assert exc.value.response.status_code == 400
