"""The history plugin over HTTP: entries, filters, visibility, cascades, retention, snapshots."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.conftest import ALICE, BOB, AppFactory, userid

HISTORY = "/v1/buckets/b/history"
RECORDS = "/v1/buckets/b/collections/c/records"
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
ISO_DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")


@pytest.fixture
async def client(make_client: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(plugins=["history"]) as c:
        assert (await c.put("/v1/buckets/b")).status_code == 201
        assert (await c.put("/v1/buckets/b/collections/c")).status_code == 201
        yield c


async def entries(client: httpx.AsyncClient, query: str = "", **kw: Any) -> list[dict[str, Any]]:
    r = await client.get(f"{HISTORY}{query}", **kw)
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


async def test_capability(client: httpx.AsyncClient) -> None:
    capability = (await client.get("/v1/")).json()["capabilities"]["history"]
    assert capability == {
        "description": "Track changes on data.",
        "url": "http://kinto.readthedocs.io/en/latest/api/1.x/history.html",
    }


async def test_entry_shape(client: httpx.AsyncClient) -> None:
    r = await client.put(f"{RECORDS}/r1", json={"data": {"title": "a"}})
    record = r.json()["data"]
    latest = (await entries(client))[0]
    assert set(latest) == {
        "id",
        "last_modified",
        "action",
        "resource_name",
        "uri",
        "user_id",
        "date",
        "collection_id",
        "record_id",
        "target",
    }
    assert latest["action"] == "create"
    assert latest["resource_name"] == "record"
    assert latest["uri"] == "/buckets/b/collections/c/records/r1"
    assert latest["user_id"] == userid(ALICE)
    assert latest["collection_id"] == "c"
    assert latest["record_id"] == "r1"
    assert ISO_DATE.match(latest["date"])
    assert latest["target"] == {"data": record, "permissions": {"write": [userid(ALICE)]}}


async def test_every_kind_of_write_is_recorded(client: httpx.AsyncClient) -> None:
    await client.put(f"{RECORDS}/r1", json={"data": {"n": 1}})
    await client.patch(f"{RECORDS}/r1", json={"data": {"n": 2}})
    await client.post(RECORDS, json={"data": {"n": 3}})
    await client.delete(f"{RECORDS}/r1")
    await client.put("/v1/buckets/b/groups/g", json={"data": {"members": []}})
    await client.delete(RECORDS)  # the plural delete: one entry per deleted record
    found = [(e["resource_name"], e["action"]) for e in await entries(client)]
    assert found == [
        ("record", "delete"),
        ("group", "create"),
        ("record", "delete"),
        ("record", "create"),
        ("record", "update"),
        ("record", "create"),
        ("collection", "create"),
        ("bucket", "create"),
    ]
    bucket_entry = (await entries(client))[-1]
    assert bucket_entry["bucket_id"] == "b" and bucket_entry["uri"] == "/buckets/b"
    group_entry = (await entries(client, "?resource_name=group"))[0]
    assert group_entry["group_id"] == "g"
    deleted = (await entries(client))[0]["target"]
    assert deleted["data"]["deleted"] is True and deleted["permissions"] == {}
    # uuid4s whose first 48 bits are the time they were made (milliseconds).
    ids = [e["id"] for e in await entries(client)]
    assert all(UUID4.match(i) for i in ids)
    made = [int(i.replace("-", "")[:12], 16) for i in ids]
    assert made == sorted(made, reverse=True)  # the newest first


async def test_anonymous_writes_have_a_null_user(make_client: AppFactory) -> None:
    async with make_client(plugins=["history"]) as c:
        await c.put("/v1/buckets/b", json={"permissions": {"write": ["system.Everyone"]}})
        await c.put("/v1/buckets/b/collections/c", auth=None)
        found = await entries(c, "?resource_name=collection")
        assert found[0]["user_id"] is None


async def test_filters_sort_and_pagination(client: httpx.AsyncClient) -> None:
    for i in range(5):
        await client.put(f"{RECORDS}/r{i}", json={"data": {"n": i}})
    await client.put(f"{RECORDS}/123", json={"data": {"n": 9}})
    records = await entries(client, "?resource_name=record&_sort=last_modified")
    assert [e["record_id"] for e in records] == ["r0", "r1", "r2", "r3", "r4", "123"]
    # A numeric-looking id is still the string id.
    assert [e["record_id"] for e in await entries(client, "?record_id=123")] == ["123"]
    assert len(await entries(client, "?in_record_id=123,r1")) == 2
    by_uri = await entries(client, "?uri=/buckets/b/collections/c/records/r2")
    assert [e["record_id"] for e in by_uri] == ["r2"]
    assert len(await entries(client, "?target.data.n=3")) == 1
    assert len(await entries(client, "?resource_name=record&min_target.data.n=3")) == 3
    since = records[2]["last_modified"]
    assert [e["record_id"] for e in await entries(client, f"?_since={since}")] == [
        "123",
        "r4",
        "r3",
    ]
    r = await client.get(f"{HISTORY}?_limit=4")
    assert len(r.json()["data"]) == 4
    assert "Next-Page" in r.headers
    second = await client.get(r.headers["Next-Page"])
    assert len(second.json()["data"]) == 4  # bucket + collection + 6 records = 8
    assert "Next-Page" not in second.headers
    head = await client.head(HISTORY)
    assert head.headers["Total-Objects"] == "8"
    assert (await client.get(f"{HISTORY}?exclude_user_id={userid(ALICE)}")).json()["data"] == []


async def test_strict_fields(client: httpx.AsyncClient) -> None:
    for query in ("?title=x", "?_sort=title", "?_fields=title"):
        r = await client.get(f"{HISTORY}{query}")
        assert r.status_code == 400, query
        assert r.json()["errno"] == 107
    assert (await client.get(f"{HISTORY}?_fields=uri,action")).status_code == 200


async def test_read_only_plural_endpoint(client: httpx.AsyncClient) -> None:
    for method in ("POST", "PUT", "PATCH"):
        r = await client.request(method, HISTORY, json={"data": {}})
        assert r.status_code == 405, method
    entry_id = (await entries(client))[0]["id"]
    assert (await client.get(f"{HISTORY}/{entry_id}")).status_code == 404


async def test_visibility(client: httpx.AsyncClient) -> None:
    bob = userid(BOB)
    # bob can read one collection, and one record of another.
    await client.put("/v1/buckets/b/collections/shared", json={"permissions": {"read": [bob]}})
    await client.put("/v1/buckets/b/collections/shared/records/s1", json={"data": {}})
    await client.put(f"{RECORDS}/mine", json={"data": {}})
    await client.put(f"{RECORDS}/his", json={"data": {}, "permissions": {"read": [bob]}})
    seen = await entries(client, auth=BOB)
    assert {e["uri"] for e in seen} == {
        "/buckets/b/collections/shared",
        "/buckets/b/collections/shared/records/s1",
        "/buckets/b/collections/c/records/his",
    }
    # A bucket reader sees everything.
    await client.patch("/v1/buckets/b", json={"permissions": {"read": [bob]}})
    assert len(await entries(client, auth=BOB)) == len(await entries(client))
    # Nothing visible at all: 403 (authenticated) / 401 (anonymous).
    await client.put("/v1/buckets/other")
    assert (await client.get("/v1/buckets/other/history", auth=BOB)).status_code == 403
    assert (await client.get("/v1/buckets/other/history", auth=None)).status_code == 401


async def test_deleting_history_needs_bucket_write(client: httpx.AsyncClient) -> None:
    bob = userid(BOB)
    await client.patch("/v1/buckets/b", json={"permissions": {"read": [bob]}})
    await client.put(f"{RECORDS}/r1", json={"data": {}})
    assert (await client.delete(HISTORY, auth=BOB)).status_code == 403
    r = await client.delete(f"{HISTORY}?resource_name=record")
    assert r.status_code == 200
    assert [e.get("deleted") for e in r.json()["data"]] == [True]
    assert {e["resource_name"] for e in await entries(client)} == {"bucket", "collection"}


async def test_collection_deletion_records_only_the_collection(client: httpx.AsyncClient) -> None:
    for i in range(3):
        await client.put(f"{RECORDS}/r{i}", json={"data": {}})
    await client.delete("/v1/buckets/b/collections/c")
    latest = await entries(client)
    assert (latest[0]["resource_name"], latest[0]["action"]) == ("collection", "delete")
    assert len(latest) == 6  # bucket, collection, 3 records, the deletion


async def test_bucket_deletion_removes_its_history(client: httpx.AsyncClient) -> None:
    await client.put(f"{RECORDS}/r1", json={"data": {}})
    await client.put("/v1/buckets/keep")
    assert (await client.delete("/v1/buckets/b")).status_code == 200
    await client.put("/v1/buckets/b")
    assert [e["action"] for e in await entries(client)] == ["create"]
    assert len(await entries(client, "", params={})) == 1
    assert len((await client.get("/v1/buckets/keep/history")).json()["data"]) == 1


async def test_batch_entries_share_the_transaction(client: httpx.AsyncClient) -> None:
    batch = {
        "requests": [
            {"method": "PUT", "path": "/buckets/b/collections/c/records/a", "body": {"data": {}}},
            {"method": "PUT", "path": "/buckets/b/collections/c/records/b", "body": {"data": {}}},
        ]
    }
    assert (await client.post("/v1/batch", json=batch)).status_code == 200
    assert len(await entries(client, "?resource_name=record")) == 2


async def test_failed_write_leaves_no_entry(client: httpx.AsyncClient) -> None:
    r = await client.put(f"{RECORDS}/r1", json={"data": {}}, headers={"If-Match": '"1"'})
    assert r.status_code == 412
    assert await entries(client, "?resource_name=record") == []


# -- retention ------------------------------------------------------------------------------


async def test_excluded_resources_and_users(make_client: AppFactory) -> None:
    settings = {
        "plugins": ["history"],
        "history_exclude_resources": ["/buckets/b/collections/quiet", "/buckets/silent"],
        "history_exclude_user_ids": [userid(BOB)],
    }
    async with make_client(**settings) as c:
        await c.put("/v1/buckets/b", json={"permissions": {"write": [userid(BOB)]}})
        await c.put("/v1/buckets/silent")
        await c.put("/v1/buckets/b/collections/quiet")
        await c.put("/v1/buckets/b/collections/quiet/records/r", json={"data": {}})
        await c.put("/v1/buckets/b/collections/loud", auth=BOB)
        await c.put("/v1/buckets/b/collections/loud/records/r", json={"data": {}})
        found = [e["uri"] for e in await entries(c)]
        assert found == ["/buckets/b/collections/loud/records/r", "/buckets/b"]
        assert (await c.get("/v1/buckets/silent/history")).json()["data"] == []
        capability = (await c.get("/v1/")).json()["capabilities"]["history"]
        assert capability["excluded_resources"] == [
            {"bucket": "b", "collection": "quiet"},
            {"bucket": "silent"},
        ]


async def test_auto_trim_keeps_the_newest_per_resource_type(make_client: AppFactory) -> None:
    settings = {
        "plugins": ["history"],
        "history_auto_trim_max_count": 3,
        "history_auto_trim_threshold": 2,
    }
    async with make_client(**settings) as c:
        await c.put("/v1/buckets/b")
        await c.put("/v1/buckets/b/collections/c")
        counts = []
        for i in range(12):
            await c.put(f"{RECORDS}/r{i}", json={"data": {}})
            counts.append(len(await entries(c, "?resource_name=record")))
        assert max(counts) == 3 + 2
        assert counts[-1] <= 5
        kept = await entries(c, "?resource_name=record")
        assert kept[0]["record_id"] == "r11"
        # Other resource types are trimmed separately.
        assert len(await entries(c, "?resource_name=bucket")) == 1
        capability = (await c.get("/v1/")).json()["capabilities"]["history"]
        assert capability["auto_trim_max_count"] == 3


async def test_auto_trim_by_user(make_client: AppFactory) -> None:
    settings = {
        "plugins": ["history"],
        "history_auto_trim_max_count": 1,
        "history_auto_trim_threshold": 0,
        "history_auto_trim_user_ids": [userid(BOB)],
    }
    async with make_client(**settings) as c:
        await c.put("/v1/buckets/b", json={"permissions": {"write": [userid(BOB)]}})
        await c.put("/v1/buckets/b/collections/c")
        for i in range(3):
            await c.put(f"{RECORDS}/a{i}", json={"data": {}})
            await c.put(f"{RECORDS}/b{i}", json={"data": {}}, auth=BOB)
        ids = [e["record_id"] for e in await entries(c, "?resource_name=record")]
        assert ids == ["b2", "a2", "a1", "a0"]


async def test_max_age(make_client: AppFactory) -> None:
    import asyncio

    async with make_client(plugins=["history"], history_max_age_seconds=1) as c:
        await c.put("/v1/buckets/b")
        await c.put("/v1/buckets/b/collections/c")
        await asyncio.sleep(1.1)
        await c.put(f"{RECORDS}/r", json={"data": {}})
        assert [e["resource_name"] for e in await entries(c)] == ["record"]


# -- snapshots ---------------------------------------------------------------------------------


async def test_snapshot_at_a_timestamp(client: httpx.AsyncClient) -> None:
    r1 = (await client.put(f"{RECORDS}/r1", json={"data": {"v": 1}})).json()["data"]
    r2 = (await client.put(f"{RECORDS}/r2", json={"data": {"v": 1}})).json()["data"]
    at = r2["last_modified"]
    await client.patch(f"{RECORDS}/r1", json={"data": {"v": 2}})
    await client.delete(f"{RECORDS}/r2")
    await client.put(f"{RECORDS}/r3", json={"data": {"v": 1}})
    path = f"/v1/buckets/b/snapshot/collections/c@{at}"
    r = await client.get(path)
    assert r.status_code == 200
    assert "ETag" not in r.headers
    assert r.json()["data"] == [r2, r1]
    before = await client.get(f"/v1/buckets/b/snapshot/collections/c@{r1['last_modified'] - 1}")
    assert before.json()["data"] == []
    now = await client.get(f"/v1/buckets/b/snapshot/collections/c@{2**50}")
    live = (await client.get(RECORDS)).json()["data"]
    assert now.json()["data"] == live


async def test_snapshot_skips_records_deleted_before(client: httpx.AsyncClient) -> None:
    await client.put(f"{RECORDS}/r1", json={"data": {"v": 1}})
    gone = (await client.delete(f"{RECORDS}/r1")).json()["data"]["last_modified"]
    await client.put(f"{RECORDS}/r1", json={"data": {"v": 2}})  # re-created later
    r = await client.get(f"/v1/buckets/b/snapshot/collections/c@{gone}")
    assert r.json()["data"] == []


async def test_snapshot_permissions_and_validation(client: httpx.AsyncClient) -> None:
    path = "/v1/buckets/b/snapshot/collections/c@"
    assert (await client.get(path + "abc")).status_code == 400
    assert (await client.get(path + "-1")).status_code == 400
    assert (await client.get(path + "12", auth=BOB)).status_code == 403
    assert (await client.get(path + "12", auth=None)).status_code == 401
    await client.patch("/v1/buckets/b/collections/c", json={"permissions": {"read": [userid(BOB)]}})
    assert (await client.get(path + "12", auth=BOB)).status_code == 200


async def test_disabled_by_default(make_client: AppFactory) -> None:
    async with make_client() as c:
        await c.put("/v1/buckets/b")
        assert (await c.get(HISTORY)).status_code == 404
        assert "history" not in (await c.get("/v1/")).json()["capabilities"]


async def test_kinto_http_js_snapshot_query(client: httpx.AsyncClient) -> None:
    """kinto-http.js ``getSnapshot(at)`` (kinto.js ``listRecords({at})``) reads this query."""
    r1 = (await client.put(f"{RECORDS}/r1", json={"data": {"v": 1}})).json()["data"]
    at = r1["last_modified"]
    await client.patch(f"{RECORDS}/r1", json={"data": {"v": 2}})
    await client.put(f"{RECORDS}/r2", json={"data": {"v": 1}})
    query = (
        "?resource_name=record&collection_id=c"
        f"&max_target.data.last_modified={at}&_sort=-target.data.last_modified"
    )
    found = await entries(client, query)
    assert [(e["action"], e["target"]["data"]) for e in found] == [("create", r1)]
