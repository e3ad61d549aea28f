"""``Client`` / ``AsyncClient`` over every endpoint of a real ``nuages serve``."""

from __future__ import annotations

import pytest
from tests.client.conftest import ALICE, BOB, BUCKET, COLLECTION, FAST_RETRY

from nuages.client import (
    AsyncClient,
    BadRequest,
    Client,
    Forbidden,
    NotFound,
    PreconditionFailed,
    Unauthorized,
)


@pytest.fixture
def bob(server):
    with Client(server.url, auth=BOB, retry=FAST_RETRY) as client:
        yield client


def test_server_info(client, server):
    info = client.server_info()
    assert info["http_api_version"] == "1.23"
    assert info["url"] == f"{server.url}/"
    assert info["user"]["id"].startswith("basicauth:")


def test_buckets(client):
    assert client.get_bucket(BUCKET)["id"] == BUCKET
    created = client.create_bucket("other", data={"title": "O"}, permissions={"read": ["x"]})
    assert created["title"] == "O"
    with pytest.raises(PreconditionFailed) as raised:
        client.create_bucket("other")
    assert raised.value.existing["id"] == "other"
    assert client.create_bucket("other", if_not_exists=True)["title"] == "O"
    generated = client.create_bucket(data={"n": 1})
    assert len(generated["id"]) == 8
    assert {b["id"] for b in client.get_buckets()} == {BUCKET, "other", generated["id"]}
    assert client.get_buckets(filters={"n": 1}) == [generated]
    updated = client.update_bucket("other", data={"title": "P"})
    assert "title" in updated and updated["title"] == "P"
    patched = client.patch_bucket("other", data={"x": None}, patch_type="merge-patch")
    assert "x" not in patched
    with pytest.raises(PreconditionFailed):
        client.update_bucket("other", data={}, if_match=1)
    assert client.delete_bucket("other")["deleted"] is True
    with pytest.raises(Forbidden):  # a missing bucket is 403 for whoever cannot read the root
        client.delete_bucket("other", if_exists=True)


def test_collections_and_groups(client):
    assert client.get_collection(BUCKET, COLLECTION)["id"] == COLLECTION
    client.create_collection(BUCKET, "extra", data={"cache_expires": 0})
    assert {c["id"] for c in client.get_collections(BUCKET)} == {COLLECTION, "extra"}
    client.patch_collection(BUCKET, "extra", data={"title": "t"})
    assert client.update_collection(BUCKET, "extra", data={"a": 1})["a"] == 1
    assert client.delete_collection(BUCKET, "extra")["deleted"]
    group = client.create_group(BUCKET, "editors", members=["basicauth:x"])
    assert group["members"] == ["basicauth:x"]
    assert client.update_group(BUCKET, "editors", members=["a", "b"])["members"] == ["a", "b"]
    ops = [{"op": "add", "path": "/data/members/-", "value": "c"}]
    assert client.patch_group(BUCKET, "editors", data=ops, patch_type="json-patch")["members"] == [
        "a",
        "b",
        "c",
    ]
    assert [g["id"] for g in client.get_groups(BUCKET)] == ["editors"]
    client.delete_group(BUCKET, "editors")
    assert client.delete_collections(BUCKET)[0]["id"] == COLLECTION


def test_records(client):
    record = client.create_record(BUCKET, COLLECTION, {"title": "a", "n": 1})
    rid = record["id"]
    assert client.get_record(BUCKET, COLLECTION, rid) == record
    again = client.create_record(BUCKET, COLLECTION, {"id": "fixed", "n": 2})
    assert again["id"] == "fixed"
    with pytest.raises(PreconditionFailed) as raised:
        client.create_record(BUCKET, COLLECTION, {"n": 3}, id="fixed")
    assert raised.value.existing["n"] == 2
    assert client.create_record(BUCKET, COLLECTION, id="fixed", if_not_exists=True)["n"] == 2
    stamp = record["last_modified"]
    updated = client.update_record(BUCKET, COLLECTION, {"id": rid, "title": "b"}, if_match=stamp)
    with pytest.raises(PreconditionFailed) as raised:
        client.update_record(BUCKET, COLLECTION, {"title": "c"}, id=rid, if_match=stamp)
    assert raised.value.existing == updated
    patched = client.patch_record(BUCKET, COLLECTION, rid, data={"n": 5})
    assert patched["title"] == "b" and patched["n"] == 5
    assert client.count_records(BUCKET, COLLECTION) == 2
    assert client.count_records(BUCKET, COLLECTION, filters={"n": 5}) == 1
    assert client.get_records_timestamp(BUCKET, COLLECTION) == patched["last_modified"]
    tombstone = client.delete_record(BUCKET, COLLECTION, "fixed")
    assert tombstone["deleted"] is True
    assert client.delete_record(BUCKET, COLLECTION, "fixed", if_exists=True) is None
    with pytest.raises(NotFound) as raised:
        client.get_record(BUCKET, COLLECTION, "fixed")
    assert raised.value.errno == 110
    changes = client.get_records(BUCKET, COLLECTION, since=stamp)
    assert {(r["id"], r.get("deleted", False)) for r in changes} == {(rid, False), ("fixed", True)}
    assert client.delete_records(BUCKET, COLLECTION)[0]["id"] == rid


def test_pagination_over_the_servers_pages(client):
    path = client.requests.records_path(BUCKET, COLLECTION)
    requests = [client.requests.create(path, None, {"n": i}) for i in range(35)]
    responses = client.batch(requests)
    assert [r.status for r in responses] == [201] * 35  # two chunks: 25 + 10
    assert len(client.get_records(BUCKET, COLLECTION)) == 35  # four pages of 10
    ns = [r["n"] for r in client.iter_records(BUCKET, COLLECTION, sort="n", limit=4)]
    assert ns == list(range(35))
    assert [r["n"] for r in client.get_records(BUCKET, COLLECTION, filters={"min_n": 30})] == [
        34,
        33,
        32,
        31,
        30,
    ]
    fields = client.get_records(BUCKET, COLLECTION, fields=["id"], filters={"n": 0})
    assert set(fields[0]) == {"id", "last_modified"}


def test_batch_reports_errors_in_place(client):
    path = client.requests.record_path(BUCKET, COLLECTION, "r1")
    responses = client.batch(
        [
            client.requests.create(path, path, {"a": 1}),
            client.requests.create(path, path, {"a": 2}),
            client.requests.get(client.requests.record_path(BUCKET, COLLECTION, "nope")),
        ]
    )
    assert [r.status for r in responses] == [201, 412, 404]
    assert responses[0].data["a"] == 1
    assert isinstance(responses[1].error(), PreconditionFailed)
    assert responses[1].error().existing["a"] == 1
    with pytest.raises(NotFound):
        responses[2].raise_for_status()


def test_typed_errors(client, bob, server):
    with pytest.raises(BadRequest) as raised:
        client.create_record(BUCKET, COLLECTION, {"id": "bad id!"})
    assert raised.value.errno == 107
    assert raised.value.details
    with pytest.raises(Forbidden):
        bob.get_bucket(BUCKET)
    with Client(server.url) as anonymous, pytest.raises(Unauthorized):
        anonymous.get_bucket(BUCKET)
    with pytest.raises(NotFound) as raised:
        client.get_records(BUCKET, "missing")
    assert raised.value.errno == 111


def test_permissions(client, bob):
    client.patch_collection(
        BUCKET, COLLECTION, permissions={"read": [bob.server_info()["user"]["id"]]}
    )
    entries = bob.get_permissions()
    assert any(e.get("collection_id") == COLLECTION and "read" in e["permissions"] for e in entries)
    assert bob.get_records(BUCKET, COLLECTION) == []


def test_plugin_endpoints_follow_the_servers_capabilities(client):
    """History, accounts and attachments: served only when the capability is advertised
    (this server enables none of them), else the calls fail cleanly with NotFound."""
    capabilities = client.server_info()["capabilities"]
    if "history" in capabilities:
        assert isinstance(client.get_history(BUCKET), list)
    else:
        with pytest.raises(NotFound):
            client.get_history(BUCKET)
    if "accounts" not in capabilities:
        with pytest.raises(NotFound):
            client.get_account("alice")
    if "attachments" not in capabilities:
        record = client.create_record(BUCKET, COLLECTION, {"n": 1})
        with pytest.raises(NotFound):
            client.add_attachment(BUCKET, COLLECTION, record["id"], b"hi", filename="hi.txt")


async def test_async_client(server):
    async with AsyncClient(server.url, auth=ALICE, retry=FAST_RETRY) as client:
        await client.create_bucket(BUCKET)
        await client.create_collection(BUCKET, COLLECTION)
        record = await client.create_record(BUCKET, COLLECTION, {"n": 1}, id="r")
        with pytest.raises(PreconditionFailed):
            await client.update_record(BUCKET, COLLECTION, {"n": 2}, id="r", if_match=1)
        assert (await client.get_record(BUCKET, COLLECTION, "r")) == record
        path = client.requests.records_path(BUCKET, COLLECTION)
        await client.batch([client.requests.create(path, None, {"n": i}) for i in range(12)])
        assert len([r async for r in client.iter_records(BUCKET, COLLECTION, limit=5)]) == 13
        assert await client.count_records(BUCKET, COLLECTION) == 13
        assert (await client.delete_record(BUCKET, COLLECTION, "r"))["deleted"]
