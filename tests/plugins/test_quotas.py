"""The quotas plugin over HTTP: counting, 507 errno 121, usage endpoints, concurrency."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from tests.conftest import BOB, AppFactory, userid

from nuages.plugins.quotas import object_size

RECORDS = "/v1/buckets/b/collections/c/records"


async def setup(c: httpx.AsyncClient) -> None:
    assert (await c.put("/v1/buckets/b")).status_code == 201
    assert (await c.put("/v1/buckets/b/collections/c")).status_code == 201


def insufficient(response: httpx.Response) -> str:
    assert response.status_code == 507, response.text
    body: dict[str, Any] = response.json()
    assert body["errno"] == 121
    assert body["error"] == "Insufficient Storage"
    return str(body["message"])


async def usage(c: httpx.AsyncClient, path: str = "/v1/buckets/b/quota") -> dict[str, Any]:
    r = await c.get(path)
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


async def test_capability(make_client: AppFactory) -> None:
    async with make_client(plugins=["quotas"]) as c:
        assert "quotas" in (await c.get("/v1/")).json()["capabilities"]


async def test_collection_max_items(make_client: AppFactory) -> None:
    async with make_client(plugins=["quotas"], quotas_collection_max_items=1) as c:
        await setup(c)
        assert (await c.post(RECORDS, json={"data": {}})).status_code == 201
        message = insufficient(await c.post(RECORDS, json={"data": {}}))
        assert message == "Collection maximum number of objects exceeded (2 > 1 objects)."
        assert len((await c.get(RECORDS)).json()["data"]) == 1
        # Updates do not count; another collection has its own quota.
        rid = (await c.get(RECORDS)).json()["data"][0]["id"]
        assert (await c.patch(f"{RECORDS}/{rid}", json={"data": {"x": 1}})).status_code == 200
        await c.put("/v1/buckets/b/collections/d")
        r = await c.post("/v1/buckets/b/collections/d/records", json={"data": {}})
        assert r.status_code == 201
        # A deletion frees the slot.
        await c.delete(f"{RECORDS}/{rid}")
        assert (await c.post(RECORDS, json={"data": {}})).status_code == 201


async def test_bucket_max_items(make_client: AppFactory) -> None:
    async with make_client(plugins=["quotas"], quotas_bucket_max_items=2) as c:
        await setup(c)
        await c.put("/v1/buckets/b/collections/d")
        assert (await c.post(RECORDS, json={"data": {}})).status_code == 201
        r = await c.post("/v1/buckets/b/collections/d/records", json={"data": {}})
        assert r.status_code == 201
        message = insufficient(await c.post(RECORDS, json={"data": {}}))
        assert message == "Bucket maximum number of objects exceeded (3 > 2 objects)."
        # Deleting a collection gives its records back to the bucket.
        await c.delete("/v1/buckets/b/collections/d")
        assert (await usage(c))["record_count"] == 1
        assert (await c.post(RECORDS, json={"data": {}})).status_code == 201


async def test_sizes(make_client: AppFactory) -> None:
    async with make_client(plugins=["quotas"], quotas_collection_max_bytes=400) as c:
        await setup(c)
        bucket = (await c.get("/v1/buckets/b")).json()["data"]
        collection = (await c.get("/v1/buckets/b/collections/c")).json()["data"]
        record = (await c.put(f"{RECORDS}/r", json={"data": {"text": "é" * 10}})).json()["data"]
        expected = object_size(collection) + object_size(record)
        found = await usage(c, "/v1/buckets/b/collections/c/quota")
        assert found == {"record_count": 1, "storage_size": expected, "limits": {"max_bytes": 400}}
        whole = await usage(c)
        assert whole["storage_size"] == expected + object_size(bucket)
        assert whole["collection_count"] == 1
        message = insufficient(await c.put(f"{RECORDS}/big", json={"data": {"t": "x" * 400}}))
        assert message.startswith("Collection maximum size exceeded (")
        assert message.endswith(" > 400 Bytes).")
        # An update that grows a record past the limit is refused too, and nothing changes.
        insufficient(await c.patch(f"{RECORDS}/r", json={"data": {"t": "x" * 400}}))
        assert (await c.get(f"{RECORDS}/r")).json()["data"] == record
        assert (await usage(c, "/v1/buckets/b/collections/c/quota"))["storage_size"] == expected


async def test_bucket_max_bytes_and_per_item(make_client: AppFactory) -> None:
    settings = {
        "plugins": ["quotas"],
        "quotas_bucket_max_bytes": 1000,
        "quotas_bucket_max_bytes_per_item": 300,
    }
    async with make_client(**settings) as c:
        await setup(c)
        message = insufficient(await c.post(RECORDS, json={"data": {"t": "x" * 300}}))
        assert message.startswith("Maximum bytes per object exceeded (")
        for _ in range(4):
            r = await c.post(RECORDS, json={"data": {"t": "x" * 150}})
        message = insufficient(r)
        assert message.startswith("Bucket maximum total size exceeded (")
        assert (await usage(c))["storage_size"] <= 1000
        # Groups count in the bucket's size.
        r = await c.put("/v1/buckets/b/groups/g", json={"data": {"members": ["x" * 250]}})
        insufficient(r)


async def test_batch_over_quota_is_rolled_back(make_client: AppFactory) -> None:
    async with make_client(plugins=["quotas"], quotas_collection_max_items=2) as c:
        await setup(c)
        batch = {"requests": [{"method": "POST", "path": RECORDS[3:], "body": {"data": {}}}] * 3}
        r = await c.post("/v1/batch", json=batch)
        assert r.status_code == 507
        assert (await c.get(RECORDS)).json()["data"] == []
        assert (await usage(c, "/v1/buckets/b/collections/c/quota"))["record_count"] == 0


async def test_many_concurrent_creates_never_exceed(make_client: AppFactory) -> None:
    async with make_client(plugins=["quotas"], quotas_collection_max_items=10) as c:
        await setup(c)
        responses = await asyncio.gather(
            *(c.post(RECORDS, json={"data": {"i": i}}) for i in range(40))
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [201] * 10 + [507] * 30
        assert len((await c.get(RECORDS)).json()["data"]) == 10
        assert (await usage(c, "/v1/buckets/b/collections/c/quota"))["record_count"] == 10


async def test_usage_visibility(make_client: AppFactory) -> None:
    async with make_client(plugins=["quotas"]) as c:
        await setup(c)
        assert (await c.get("/v1/buckets/b/quota", auth=BOB)).status_code == 403
        assert (await c.get("/v1/buckets/b/quota", auth=None)).status_code == 401
        path = "/v1/buckets/b/collections/c/quota"
        await c.patch("/v1/buckets/b/collections/c", json={"permissions": {"read": [userid(BOB)]}})
        assert (await c.get(path, auth=BOB)).status_code == 200
        assert (await c.get("/v1/buckets/b/quota", auth=BOB)).status_code == 403
        assert (await c.get("/v1/buckets/b/collections/nope/quota")).status_code == 404


async def test_bucket_deletion_resets_usage(make_client: AppFactory) -> None:
    async with make_client(plugins=["quotas"], quotas_bucket_max_items=1) as c:
        await setup(c)
        assert (await c.post(RECORDS, json={"data": {}})).status_code == 201
        await c.delete("/v1/buckets/b")
        await setup(c)
        assert (await usage(c))["record_count"] == 0
        assert (await c.post(RECORDS, json={"data": {}})).status_code == 201
