"""JSON-schema validation of records, collections and groups over HTTP (protocol/10 §1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.conftest import AppFactory

SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "size": {"type": "number"}},
    "required": ["title"],
}
RECORDS = "/v1/buckets/b/collections/c/records"


@pytest.fixture
async def client(make_client: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(experimental_collection_schema_validation=True) as c:
        assert (await c.put("/v1/buckets/b")).status_code == 201
        r = await c.put("/v1/buckets/b/collections/c", json={"data": {"schema": SCHEMA}})
        assert r.status_code == 201
        yield c


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    body: dict[str, Any] = response.json()
    assert body["errno"] == 107
    assert body["error"] == "Invalid parameters"
    return body


async def test_capability_announced(client: httpx.AsyncClient) -> None:
    capabilities = (await client.get("/v1/")).json()["capabilities"]
    assert (
        capabilities["schema"]["description"] == "Validates collection records with JSON schemas."
    )


async def test_capability_absent_when_off(make_client: AppFactory) -> None:
    async with make_client() as c:
        assert "schema" not in (await c.get("/v1/")).json()["capabilities"]


async def test_valid_record_gets_the_schema_version(client: httpx.AsyncClient) -> None:
    collection = (await client.get("/v1/buckets/b/collections/c")).json()["data"]
    r = await client.post(RECORDS, json={"data": {"title": "a", "size": 2}})
    assert r.status_code == 201
    assert r.json()["data"]["schema"] == collection["last_modified"]
    # The version is filterable, as clients do to find records of an old schema.
    lm = collection["last_modified"]
    listed = (await client.get(f"{RECORDS}?schema={lm}")).json()["data"]
    assert [x["title"] for x in listed] == ["a"]


async def test_wrong_type_names_the_field(client: httpx.AsyncClient) -> None:
    body = error_of(await client.post(RECORDS, json={"data": {"title": "a", "size": "hi!"}}))
    assert body["details"] == [
        {"location": "body", "name": "size", "description": '"hi!" is not of type "number"'}
    ]
    assert body["message"] == 'size in body: "hi!" is not of type "number"'


async def test_missing_required_field(client: httpx.AsyncClient) -> None:
    body = error_of(await client.post(RECORDS, json={"data": {"size": 1}}))
    assert body["details"][0]["name"] == "title"
    assert body["message"] == '"title" is a required property'


async def test_nothing_written_on_failure(client: httpx.AsyncClient) -> None:
    error_of(await client.put(f"{RECORDS}/r1", json={"data": {"size": 1}}))
    assert (await client.get(f"{RECORDS}/r1")).status_code == 404


async def test_patch_validates_the_merged_record(client: httpx.AsyncClient) -> None:
    r = await client.put(f"{RECORDS}/r1", json={"data": {"title": "a"}})
    assert r.status_code == 201
    assert (await client.patch(f"{RECORDS}/r1", json={"data": {"size": 3}})).status_code == 200
    body = error_of(await client.patch(f"{RECORDS}/r1", json={"data": {"title": 3}}))
    assert body["details"][0]["name"] == "title"
    merge = {"Content-Type": "application/merge-patch+json"}
    r = await client.patch(f"{RECORDS}/r1", content=b'{"data": {"title": null}}', headers=merge)
    assert error_of(r)["details"][0]["name"] == "title"


async def test_id_last_modified_and_schema_are_ignored(client: httpx.AsyncClient) -> None:
    strict = {**SCHEMA, "additionalProperties": False, "required": ["title", "id", "schema"]}
    r = await client.put("/v1/buckets/b/collections/s", json={"data": {"schema": strict}})
    assert r.status_code == 201
    r = await client.post(
        "/v1/buckets/b/collections/s/records",
        json={"data": {"id": "x1", "title": "t", "last_modified": 12345678, "schema": 1}},
    )
    assert r.status_code == 201, r.text


async def test_id_is_validated_when_the_schema_declares_it(client: httpx.AsyncClient) -> None:
    schema = {"properties": {"id": {"type": "string", "pattern": "^a"}}}
    await client.put("/v1/buckets/b/collections/i", json={"data": {"schema": schema}})
    assert (await client.put("/v1/buckets/b/collections/i/records/abc")).status_code == 201
    body = error_of(await client.put("/v1/buckets/b/collections/i/records/bcd"))
    assert body["details"][0]["name"] == "id"


async def test_schema_change_versions_new_records(client: httpx.AsyncClient) -> None:
    first = (await client.post(RECORDS, json={"data": {"title": "a"}})).json()["data"]
    r = await client.patch("/v1/buckets/b/collections/c", json={"data": {"schema": {}}})
    second = (await client.post(RECORDS, json={"data": {"size": "any"}})).json()["data"]
    assert second["schema"] == r.json()["data"]["last_modified"] > first["schema"]


async def test_collection_without_schema_accepts_anything(client: httpx.AsyncClient) -> None:
    await client.put("/v1/buckets/b/collections/free")
    r = await client.post("/v1/buckets/b/collections/free/records", json={"data": {"x": 1}})
    assert r.status_code == 201
    assert "schema" not in r.json()["data"]


async def test_bucket_record_schema(client: httpx.AsyncClient) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    r = await client.patch("/v1/buckets/b", json={"data": {"record:schema": schema}})
    assert r.status_code == 200
    await client.put("/v1/buckets/b/collections/free")
    path = "/v1/buckets/b/collections/free/records"
    assert (await client.post(path, json={"data": {"n": 1}})).status_code == 201
    body = error_of(await client.post(path, json={"data": {"n": "one"}}))
    assert body["details"][0]["name"] == "n"
    # Both schemas apply to a collection with its own.
    error_of(await client.post(RECORDS, json={"data": {"title": "t", "n": 1.5}}))


async def test_bucket_collection_and_group_schemas(client: httpx.AsyncClient) -> None:
    need_owner = {"type": "object", "properties": {"owner": {"type": "string"}}}
    need_owner["required"] = ["owner"]
    data = {"collection:schema": need_owner, "group:schema": need_owner}
    assert (await client.patch("/v1/buckets/b", json={"data": data})).status_code == 200
    body = error_of(await client.post("/v1/buckets/b/collections"))
    assert body["details"][0]["name"] == "owner"
    r = await client.post("/v1/buckets/b/collections", json={"data": {"owner": "me"}})
    assert r.status_code == 201
    error_of(await client.put("/v1/buckets/b/groups/g", json={"data": {"members": []}}))
    r = await client.put("/v1/buckets/b/groups/g", json={"data": {"owner": "me", "members": []}})
    assert r.status_code == 201


async def test_unresolvable_ref_is_a_400_on_schema(client: httpx.AsyncClient) -> None:
    schema = {"properties": {"a": {"$ref": "#/definitions/missing"}}}
    await client.put("/v1/buckets/b/collections/r", json={"data": {"schema": schema}})
    body = error_of(await client.post("/v1/buckets/b/collections/r/records", json={"data": {}}))
    assert body["details"][0]["name"] == "schema"


async def test_remote_refs_are_never_fetched(client: httpx.AsyncClient) -> None:
    schema = {"properties": {"a": {"$ref": "http://127.0.0.1:9/schema.json"}}}
    await client.put("/v1/buckets/b/collections/r", json={"data": {"schema": schema}})
    body = error_of(await client.post("/v1/buckets/b/collections/r/records", json={"data": {}}))
    assert body["details"][0]["name"] == "schema"
    assert "Retrieval is disabled" in body["details"][0]["description"]


async def test_invalid_schema_is_rejected(client: httpx.AsyncClient) -> None:
    r = await client.put("/v1/buckets/b/collections/x", json={"data": {"schema": {"type": 1}}})
    assert r.status_code == 400


async def test_formats_are_annotations(client: httpx.AsyncClient) -> None:
    schema = {"$schema": "http://json-schema.org/draft-07/schema#"}
    schema["properties"] = {"mail": {"type": "string", "format": "email"}}
    await client.put("/v1/buckets/b/collections/f", json={"data": {"schema": schema}})
    path = "/v1/buckets/b/collections/f/records"
    assert (await client.post(path, json={"data": {"mail": "nope"}})).status_code == 201


async def test_batch_sub_request_rejected_in_place(client: httpx.AsyncClient) -> None:
    batch = {
        "requests": [
            {
                "method": "PUT",
                "path": "/buckets/b/collections/c/records/ok",
                "body": {"data": {"title": "t"}},
            },
            {
                "method": "PUT",
                "path": "/buckets/b/collections/c/records/ko",
                "body": {"data": {"size": 1}},
            },
        ]
    }
    r = await client.post("/v1/batch", json=batch)
    assert [x["status"] for x in r.json()["responses"]] == [201, 400]
    assert (await client.get(f"{RECORDS}/ok")).status_code == 200
    assert (await client.get(f"{RECORDS}/ko")).status_code == 404


async def test_schema_stored_but_not_enforced_when_off(make_client: AppFactory) -> None:
    async with make_client() as c:
        await c.put("/v1/buckets/b")
        await c.put("/v1/buckets/b/collections/c", json={"data": {"schema": SCHEMA}})
        r = await c.post(RECORDS, json={"data": {"size": "x"}})
        assert r.status_code == 201
        assert "schema" not in r.json()["data"]


async def test_non_list_keyword_value_names_the_keyword(client: httpx.AsyncClient) -> None:
    await client.put("/v1/buckets/b/collections/m", json={"data": {"schema": {"minProperties": 3}}})
    r = await client.post("/v1/buckets/b/collections/m/records", json={"data": {"a": 1}})
    assert error_of(r)["details"][0]["name"] == "minProperties"
