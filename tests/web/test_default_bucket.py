"""The personal bucket behind /buckets/default (protocol/10 §2, 12 §A.15)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from tests.conftest import ALICE, BOB, AppFactory, userid

SECRET = "personal-secret"


def personal_bucket(credentials: tuple[str, str]) -> str:
    """The expected id, computed independently of the server's code."""
    digest = hmac.new(SECRET.encode(), userid(credentials).encode(), hashlib.sha256).hexdigest()
    return str(uuid.UUID(digest[:32]))


@pytest.fixture
async def client(make_client: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(plugins="default_bucket", default_bucket_hmac_secret=SECRET) as c:
        yield c


async def test_root_announces_the_capability_and_the_bucket(client: httpx.AsyncClient) -> None:
    root = (await client.get("/v1/")).json()
    assert "default_bucket" in root["capabilities"]
    assert root["user"]["bucket"] == personal_bucket(ALICE)
    bucket = root["user"]["bucket"]
    assert len(bucket) == 36 and bucket.count("-") == 4 and bucket == bucket.lower()


async def test_empty_secret_follows_kinto_formula(make_client: AppFactory) -> None:
    async with make_client(plugins="default_bucket") as client:
        digest = hmac.new(b"", userid(ALICE).encode(), hashlib.sha256).hexdigest()
        expected = str(uuid.UUID(digest[:32]))
        assert (await client.get("/v1/")).json()["user"]["bucket"] == expected


async def test_anonymous_gets_401(client: httpx.AsyncClient) -> None:
    for path in ("/v1/buckets/default", "/v1/buckets/default/collections/tasks/records"):
        response = await client.get(path, auth=None)  # type: ignore[arg-type]
        assert response.status_code == 401
        assert response.json()["errno"] == 104
        assert response.headers["WWW-Authenticate"] == 'Basic realm="Realm"'


async def test_get_default_creates_and_returns_the_real_bucket(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/buckets/default")
    assert response.status_code == 200
    body = response.json()
    assert body["data"]["id"] == personal_bucket(ALICE)
    assert body["permissions"]["write"] == [userid(ALICE)]
    real = await client.get(f"/v1/buckets/{personal_bucket(ALICE)}")
    assert real.status_code == 200
    assert real.json()["data"] == body["data"]


async def test_records_of_a_new_collection_are_an_empty_list(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/buckets/default/collections/tasks/records")
    assert response.status_code == 200
    assert response.json() == {"data": []}
    bucket = personal_bucket(ALICE)
    collection = await client.get(f"/v1/buckets/{bucket}/collections/tasks")
    assert collection.status_code == 200
    assert collection.json()["permissions"]["write"] == [userid(ALICE)]


async def test_records_through_the_alias_live_in_the_real_bucket(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post(
        "/v1/buckets/default/collections/tasks/records", json={"data": {"title": "milk"}}
    )
    assert created.status_code == 201
    record_id = created.json()["data"]["id"]
    real = f"/v1/buckets/{personal_bucket(ALICE)}/collections/tasks/records/{record_id}"
    assert (await client.get(real)).json()["data"]["title"] == "milk"
    # Bob's default bucket is another one: he does not see Alice's records.
    bobs = await client.get("/v1/buckets/default/collections/tasks/records", auth=BOB)
    assert bobs.json() == {"data": []}
    assert (await client.get(real, auth=BOB)).status_code == 403


async def test_default_in_data_id_is_rewritten(client: httpx.AsyncClient) -> None:
    bucket = personal_bucket(ALICE)
    created = await client.put("/v1/buckets/default", json={"data": {"id": "default"}})
    assert created.status_code == 201
    assert created.json()["data"]["id"] == bucket
    # Kinto's quirk: every "default" inside data.id, also in a record id.
    record = await client.post(
        "/v1/buckets/default/collections/c/records", json={"data": {"id": "default-1"}}
    )
    assert record.json()["data"]["id"] == f"{bucket}-1"


async def test_put_of_the_collection_is_not_preempted(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/v1/buckets/default/collections/tasks", json={"data": {"color": "red"}}
    )
    assert response.status_code == 201
    assert response.json()["data"] == {
        "id": "tasks",
        "color": "red",
        "last_modified": response.json()["data"]["last_modified"],
    }


async def test_invalid_collection_id_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/buckets/default/collections/__files__/records")
    assert response.status_code == 400
    assert response.json()["errno"] == 107


async def test_creation_bypasses_bucket_create_principals(make_client: AppFactory) -> None:
    async with make_client(
        plugins="default_bucket", bucket_create_principals="", default_bucket_hmac_secret=SECRET
    ) as client:
        assert (await client.put("/v1/buckets/other")).status_code == 403
        response = await client.get("/v1/buckets/default/collections/tasks/records")
        assert response.status_code == 200


async def test_next_page_points_to_the_real_bucket(make_client: AppFactory) -> None:
    async with make_client(plugins="default_bucket", default_bucket_hmac_secret=SECRET) as client:
        for _ in range(3):
            await client.post("/v1/buckets/default/collections/tasks/records", json={"data": {}})
        page = await client.get("/v1/buckets/default/collections/tasks/records?_limit=2")
        assert len(page.json()["data"]) == 2
        assert (
            f"/v1/buckets/{personal_bucket(ALICE)}/collections/tasks/records?"
            in (page.headers["Next-Page"])
        )


async def test_concurrent_first_requests_create_once(client: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(
        *(client.get("/v1/buckets/default/collections/tasks/records") for _ in range(10))
    )
    assert [r.status_code for r in responses] == [200] * 10
    listed = await client.get(f"/v1/buckets/{personal_bucket(ALICE)}/collections")
    assert [c["id"] for c in listed.json()["data"]] == ["tasks"]


async def test_batch_through_the_alias(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/batch",
        json={
            "defaults": {"method": "POST", "path": "/buckets/default/collections/tasks/records"},
            "requests": [{"body": {"data": {"n": i}}} for i in range(3)]
            + [{"method": "GET", "path": "/buckets/default/collections/notes/records"}],
        },
    )
    assert response.status_code == 200
    responses = response.json()["responses"]
    assert [r["status"] for r in responses] == [201, 201, 201, 200]
    # Sub-responses keep the path as requested.
    assert responses[0]["path"] == "/v1/buckets/default/collections/tasks/records"
    listed = await client.get(f"/v1/buckets/{personal_bucket(ALICE)}/collections")
    assert sorted(c["id"] for c in listed.json()["data"]) == ["notes", "tasks"]


async def test_trailing_slash_and_options(client: httpx.AsyncClient) -> None:
    redirect = await client.get("/v1/buckets/default/", follow_redirects=False)
    assert redirect.status_code == 307
    assert redirect.headers["Location"].endswith("/v1/buckets/default")
    preflight = await client.options(
        "/v1/buckets/default",
        headers={"Origin": "http://example.com", "Access-Control-Request-Method": "GET"},
        auth=None,  # type: ignore[arg-type]
    )
    assert preflight.status_code == 200


async def test_readonly_refuses_the_alias(make_client: AppFactory) -> None:
    async with make_client(plugins="default_bucket", readonly=True) as client:
        assert (await client.get("/v1/buckets/default")).status_code == 405


async def test_deleting_the_personal_bucket_and_using_it_again(
    client: httpx.AsyncClient,
) -> None:
    await client.get("/v1/buckets/default/collections/tasks/records")
    assert (await client.delete("/v1/buckets/default")).status_code == 200
    again = await client.get("/v1/buckets/default/collections/tasks/records")
    assert again.status_code == 200


async def test_without_the_plugin_default_is_an_ordinary_id(make_client: AppFactory) -> None:
    async with make_client() as client:
        assert (await client.put("/v1/buckets/default")).json()["data"]["id"] == "default"
        assert "bucket" not in (await client.get("/v1/")).json()["user"]
