"""The quotas plugin over HTTP: counting, 507 errno 121, usage endpoints, concurrency."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
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


async def test_per_bucket_and_per_collection_overrides(make_client: AppFactory) -> None:
    settings = {
        "plugins": ["quotas"],
        "quotas_collection_max_items": 1,
        "quotas_collection_b_max_items": 2,  # every collection of bucket b
        "quotas_collection_b_c_max_items": 3,  # collection c of bucket b
        "quotas_collection_b_unlimited_max_items": "",  # no limit there
        "quotas_bucket_other_max_items": 1,
    }
    async with make_client(**settings) as c:
        await setup(c)
        for bucket, collection in (("b", "d"), ("b", "unlimited"), ("other", "c"), ("x_y", "c")):
            await c.put(f"/v1/buckets/{bucket}")
            await c.put(f"/v1/buckets/{bucket}/collections/{collection}")

        async def fill(bucket: str, collection: str, tries: int = 5) -> list[int]:
            path = f"/v1/buckets/{bucket}/collections/{collection}/records"
            return [(await c.post(path, json={"data": {}})).status_code for _ in range(tries)]

        assert (await fill("b", "c")).count(201) == 3
        assert (await fill("b", "d")).count(201) == 2
        assert (await fill("b", "unlimited")).count(201) == 5
        assert (await fill("x_y", "c")).count(201) == 1  # the default
        statuses = await fill("other", "c")
        assert statuses == [201, 507, 507, 507, 507]
        r = await c.post("/v1/buckets/other/collections/c/records", json={"data": {}})
        assert insufficient(r) == "Bucket maximum number of objects exceeded (2 > 1 objects)."
        limits = (await usage(c, "/v1/buckets/b/collections/c/quota"))["limits"]
        assert limits == {"max_items": 3}
        assert (await usage(c, "/v1/buckets/b/collections/unlimited/quota"))["limits"] == {}
        assert (await usage(c, "/v1/buckets/other/quota"))["limits"] == {"max_items": 1}


async def test_override_bytes_and_bytes_per_item(make_client: AppFactory) -> None:
    settings = {
        "plugins": ["quotas"],
        "quotas_bucket_b_max_bytes_per_item": 200,
        "quotas_collection_b_c_max_bytes_per_item": 100,
        "quotas_bucket_b_max_bytes": 2000,
    }
    async with make_client(**settings) as c:
        await setup(c)
        await c.put("/v1/buckets/b/collections/d")
        message = insufficient(await c.post(RECORDS, json={"data": {"t": "x" * 100}}))
        assert message.startswith("Maximum bytes per object exceeded (")
        assert message.endswith(" > 100 Bytes).")
        other = "/v1/buckets/b/collections/d/records"
        assert (await c.post(other, json={"data": {"t": "x" * 100}})).status_code == 201
        insufficient(await c.post(other, json={"data": {"t": "x" * 200}}))
        for _ in range(20):
            r = await c.post(other, json={"data": {"t": "x" * 100}})
            if r.status_code != 201:
                break
        assert insufficient(r).startswith("Bucket maximum total size exceeded (")
        assert (await usage(c))["storage_size"] <= 2000
        # Another bucket has no limit.
        await c.put("/v1/buckets/free")
        await c.put("/v1/buckets/free/collections/c")
        r = await c.post("/v1/buckets/free/collections/c/records", json={"data": {"t": "x" * 500}})
        assert r.status_code == 201


async def test_overrides_are_exact_under_concurrency(make_client: AppFactory) -> None:
    settings = {"plugins": ["quotas"], "quotas_collection_b_c_max_items": 7}
    async with make_client(**settings) as c:
        await setup(c)
        await c.put("/v1/buckets/b/collections/d")
        other = "/v1/buckets/b/collections/d/records"
        responses = await asyncio.gather(
            *(c.post(RECORDS if i % 2 else other, json={"data": {"i": i}}) for i in range(40))
        )
        limited = [r.status_code for i, r in enumerate(responses) if i % 2]
        assert sorted(limited) == [201] * 7 + [507] * 13
        assert all(r.status_code == 201 for i, r in enumerate(responses) if not i % 2)
        assert (await usage(c, "/v1/buckets/b/collections/c/quota"))["record_count"] == 7
        assert (await usage(c, "/v1/buckets/b/collections/d/quota"))["record_count"] == 20


def test_override_settings() -> None:
    from nuages.plugins.quotas import QuotaSettings
    from nuages.settings import Settings, SettingsError

    env = {"NUAGES_QUOTAS_BUCKET_MAIN_MAX_ITEMS": "5", "NUAGES_QUOTAS_COLLECTION_MAX_ITEMS": "9"}
    settings = Settings.load(env=env, quotas_bucket_main_max_items=6)
    limits = QuotaSettings(settings)
    assert limits.limits("main").bucket_max_items == 6  # overrides win over the environment
    assert limits.limits("main", "c").collection_max_items == 9
    assert limits.limits("else").bucket_max_items is None
    for bad in ({"quotas_bucket_b_max_items": "-1"}, {"quotas_bucket_b_max_items": "many"}):
        with pytest.raises(SettingsError):
            Settings.load(env={}, **bad)
    with pytest.raises(SettingsError):
        Settings.load(env={}, quotas_bucket_b_max_things=1)
