"""protocol/03: CRUD semantics of POST, GET, PUT, PATCH (three flavours), DELETE, lists."""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from tests.conftest import ALICE, BOB, userid

from nuages.toolkit import generate_sortable_uuid

BUCKET = "/v1/buckets/b"
COLLECTION = f"{BUCKET}/collections/c"
RECORDS = f"{COLLECTION}/records"
RECORD = f"{RECORDS}/r"

MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def alice() -> str:
    return userid(ALICE)


def bob() -> str:
    return userid(BOB)


@asynccontextmanager
async def other(
    client: httpx.AsyncClient, auth: tuple[str, str] | None
) -> AsyncIterator[httpx.AsyncClient]:
    """Another user (or anonymous with `auth=None`) on the same app."""
    transport = httpx.ASGITransport(app=client.app)  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", auth=auth) as c:
        yield c


async def _collection(client: httpx.AsyncClient, **permissions: list[str]) -> None:
    assert (await client.put(BUCKET)).status_code == 201
    body = {"permissions": permissions} if permissions else None
    assert (await client.put(COLLECTION, json=body)).status_code == 201


async def _record(
    client: httpx.AsyncClient, data: dict[str, Any] | None = None, **permissions: list[str]
) -> dict[str, Any]:
    body: dict[str, Any] = {"data": data if data is not None else {}}
    if permissions:
        body["permissions"] = permissions
    response = await client.put(RECORD, json=body)
    assert response.status_code in (200, 201)
    return response.json()["data"]


def _etag(response: httpx.Response) -> int:
    value = response.headers["ETag"]
    assert value.startswith('"') and value.endswith('"')
    return int(value[1:-1])


def _not_found(object_id: str = "r", resource_name: str = "record") -> dict[str, Any]:
    return {
        "code": 404,
        "errno": 110,
        "error": "Not Found",
        "details": {"id": object_id, "resource_name": resource_name},
    }


def _acl(body: dict[str, Any]) -> dict[str, set[str]]:
    return {k: set(v) for k, v in body["permissions"].items()}


# -- POST (03 §3) -------------------------------------------------------------------------


async def test_post_creates_with_201_and_creator_write(client: httpx.AsyncClient) -> None:
    await _collection(client)
    response = await client.post(RECORDS, json={"data": {"title": "Hello"}})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"data", "permissions"}
    assert body["data"]["title"] == "Hello"
    assert UUID4.match(body["data"]["id"])
    assert body["permissions"] == {"write": [alice()]}
    assert _etag(response) == body["data"]["last_modified"]
    assert "Last-Modified" in response.headers


async def test_posted_records_get_uuid4s_that_sort_by_creation_time(
    client: httpx.AsyncClient,
) -> None:
    await _collection(client)
    before = time.time_ns() // 1_000_000
    ids = []
    for _ in range(20):
        response = await client.post(RECORDS, json={"data": {}})
        ids.append(response.json()["data"]["id"])
        await asyncio.sleep(0.002)  # a millisecond apart at least
    after = time.time_ns() // 1_000_000
    assert all(UUID4.match(i) for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == 20
    made = [uuid.UUID(i).int >> 80 for i in ids]  # the first 48 bits: milliseconds
    assert before <= made[0] and made[-1] <= after
    # Their 74 random bits differ from one id to the next.
    same_ms = [uuid.UUID(generate_sortable_uuid()).int for _ in range(2000)]
    assert len({value & (2**76 - 1) for value in same_ms}) == 2000


async def test_post_with_permissions(client: httpx.AsyncClient) -> None:
    await _collection(client)
    response = await client.post(
        RECORDS, json={"data": {}, "permissions": {"read": ["system.Everyone"]}}
    )
    assert response.status_code == 201
    assert _acl(response.json()) == {"read": {"system.Everyone"}, "write": {alice()}}


async def test_post_existing_id_returns_200_and_the_stored_object(
    client: httpx.AsyncClient,
) -> None:
    await _collection(client)
    stored = await _record(client, {"title": "original"})
    response = await client.post(
        RECORDS,
        json={"data": {"id": "r", "title": "changed"}, "permissions": {"read": [bob()]}},
    )
    assert response.status_code == 200
    assert response.json() == {"data": stored, "permissions": {"write": [alice()]}}
    assert _etag(response) == stored["last_modified"]
    assert (await client.get(RECORD)).json()["data"] == stored


@pytest.mark.parametrize(
    "body",
    [
        {"data": {"id": "r"}, "extra": 1},
        {"data": {"id": "r"}, "permissions": {"read": "x"}},
        {"data": {"id": "r"}, "permissions": {"record:create": []}},
    ],
)
async def test_post_existing_id_still_validates_the_body(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    await _collection(client)
    await _record(client)
    response = await client.post(RECORDS, json=body)
    assert response.status_code == 400
    assert response.json()["errno"] == 107


async def test_post_existing_id_does_not_bump_the_list_timestamp(
    client: httpx.AsyncClient,
) -> None:
    await _collection(client)
    await _record(client)
    before = (await client.head(RECORDS)).headers["ETag"]
    await client.post(RECORDS, json={"data": {"id": "r", "x": 1}})
    assert (await client.head(RECORDS)).headers["ETag"] == before


async def test_post_existing_id_needs_read_on_it(client: httpx.AsyncClient) -> None:
    await _collection(client, **{"record:create": [bob()]})
    await _record(client)
    async with other(client, BOB) as bob_client:
        response = await bob_client.post(RECORDS, json={"data": {"id": "r"}})
    assert response.status_code == 403
    assert response.json()["errno"] == 121


async def test_post_existing_id_by_reader_shows_empty_permissions(
    client: httpx.AsyncClient,
) -> None:
    await _collection(client, read=[bob()], **{"record:create": [bob()]})
    stored = await _record(client)
    async with other(client, BOB) as bob_client:
        response = await bob_client.post(RECORDS, json={"data": {"id": "r", "x": 1}})
    assert response.status_code == 200
    assert response.json() == {"data": stored, "permissions": {}}


async def test_post_on_a_tombstone_id_creates_again(client: httpx.AsyncClient) -> None:
    await _collection(client)
    await _record(client, {"v": 1})
    await client.delete(RECORD)
    response = await client.post(RECORDS, json={"data": {"id": "r", "v": 2}})
    assert response.status_code == 201
    assert response.json()["data"]["v"] == 2
    assert (await client.get(RECORD)).json()["data"]["v"] == 2


async def test_post_without_body_creates_an_empty_object(client: httpx.AsyncClient) -> None:
    await _collection(client)
    response = await client.post(RECORDS)
    assert response.status_code == 201
    data = response.json()["data"]
    assert set(data) == {"id", "last_modified"}


# -- GET object (03 §4) -------------------------------------------------------------------


async def test_get_object(client: httpx.AsyncClient) -> None:
    await _collection(client)
    stored = await _record(client, {"a": 1}, read=["system.Everyone"])
    response = await client.get(RECORD)
    assert response.status_code == 200
    body = response.json()
    assert body["data"] == stored
    assert _acl(body) == {"read": {"system.Everyone"}, "write": {alice()}}
    assert _etag(response) == stored["last_modified"]
    assert response.headers["Cache-Control"] == "no-cache, no-store"


async def test_get_missing_object_is_404_errno_110_without_message(
    client: httpx.AsyncClient,
) -> None:
    await _collection(client)
    response = await client.get(f"{RECORDS}/nope")
    assert response.status_code == 404
    assert response.json() == _not_found("nope")


async def test_head_on_missing_object_is_404_without_body(client: httpx.AsyncClient) -> None:
    await _collection(client)
    response = await client.head(RECORD)
    assert response.status_code == 404
    assert response.content == b""


async def test_get_deleted_object_is_404(client: httpx.AsyncClient) -> None:
    await _collection(client)
    await _record(client)
    await client.delete(RECORD)
    response = await client.get(RECORD)
    assert response.status_code == 404
    assert response.json() == _not_found()


@pytest.mark.parametrize(
    ("url", "name", "object_id"),
    [(COLLECTION, "collection", "c"), (f"{BUCKET}/groups/g", "group", "g")],
)
async def test_missing_object_404_names_its_resource(
    client: httpx.AsyncClient, url: str, name: str, object_id: str
) -> None:
    await client.put(BUCKET)
    response = await client.get(url)
    assert response.status_code == 404
    assert response.json() == _not_found(object_id, name)


async def test_missing_bucket_is_403_without_read_on_the_root(client: httpx.AsyncClient) -> None:
    response = await client.get(BUCKET)
    assert response.status_code == 403
    assert response.json()["errno"] == 121


async def test_fields_on_object_get_drops_the_permissions_key(client: httpx.AsyncClient) -> None:
    await _collection(client)
    stored = await _record(client, {"a": 1, "b": {"c": 2, "d": 3}, "e": 4})
    response = await client.get(f"{RECORD}?_fields=a,b.c")
    assert response.status_code == 200
    assert response.json() == {
        "data": {"id": "r", "last_modified": stored["last_modified"], "a": 1, "b": {"c": 2}}
    }


async def test_reader_not_in_write_list_sees_empty_permissions(
    client: httpx.AsyncClient,
) -> None:
    await _collection(client, read=[bob()])
    stored = await _record(client, read=["account:x"])
    async with other(client, BOB) as bob_client:
        response = await bob_client.get(RECORD)
    assert response.status_code == 200
    assert response.json() == {"data": stored, "permissions": {}}


async def test_inherited_write_does_not_reveal_permissions(client: httpx.AsyncClient) -> None:
    await client.put(BUCKET, json={"permissions": {"write": [bob()]}})
    await client.put(COLLECTION)
    stored = await _record(client, read=["account:x"])
    async with other(client, BOB) as bob_client:
        response = await bob_client.get(RECORD)
    assert response.status_code == 200
    assert response.json() == {"data": stored, "permissions": {}}


async def test_writer_sees_every_non_empty_permission_type(client: httpx.AsyncClient) -> None:
    response = await client.put(
        BUCKET,
        json={"permissions": {"read": [], "group:create": [bob()]}},
    )
    assert _acl(response.json()) == {"group:create": {bob()}, "write": {alice()}}


# -- PUT (03 §5) --------------------------------------------------------------------------


async def test_put_creates_with_201_then_replaces_with_200(client: httpx.AsyncClient) -> None:
    await _collection(client)
    created = await client.put(RECORD, json={"data": {"a": 1, "b": 2}})
    assert created.status_code == 201
    replaced = await client.put(RECORD, json={"data": {"c": 3}})
    assert replaced.status_code == 200
    data = replaced.json()["data"]
    assert data == {"id": "r", "c": 3, "last_modified": data["last_modified"]}
    assert data["last_modified"] > created.json()["data"]["last_modified"]
    assert _etag(replaced) == data["last_modified"]


async def test_put_without_body_creates_empty_object(client: httpx.AsyncClient) -> None:
    response = await client.put(BUCKET)
    assert response.status_code == 201
    data = response.json()["data"]
    assert data == {"id": "b", "last_modified": data["last_modified"]}


async def test_put_without_data_keeps_the_stored_data(client: httpx.AsyncClient) -> None:
    await _collection(client)
    stored = await _record(client, {"a": 1})
    response = await client.put(RECORD, json={"permissions": {"read": [bob()]}})
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["a"] == 1
    assert data["last_modified"] > stored["last_modified"]
    assert _acl(response.json()) == {"read": {bob()}, "write": {alice()}}


async def test_put_with_permissions_replaces_every_type(client: httpx.AsyncClient) -> None:
    await client.put(
        BUCKET,
        json={
            "permissions": {
                "read": ["account:x"],
                "collection:create": ["account:y"],
                "write": ["account:w"],
            }
        },
    )
    response = await client.put(BUCKET, json={"permissions": {"group:create": ["account:z"]}})
    assert response.status_code == 200
    assert _acl(response.json()) == {"group:create": {"account:z"}, "write": {alice()}}
    assert _acl((await client.get(BUCKET)).json()) == _acl(response.json())


async def test_put_without_permissions_keeps_the_acl(client: httpx.AsyncClient) -> None:
    await _collection(client)
    await _record(client, read=["account:x"], write=["account:w"])
    response = await client.put(RECORD, json={"data": {"b": 2}})
    assert response.status_code == 200
    assert _acl(response.json()) == {"read": {"account:x"}, "write": {"account:w", alice()}}


async def test_put_adds_the_caller_to_write(client: httpx.AsyncClient) -> None:
    await client.put(BUCKET, json={"permissions": {"write": [bob()]}})
    await client.put(COLLECTION)
    await _record(client)
    async with other(client, BOB) as bob_client:
        response = await bob_client.put(RECORD, json={"data": {"by": "bob"}})
    assert response.status_code == 200
    assert _acl(response.json()) == {"write": {alice(), bob()}}


async def test_anonymous_creator_gets_everyone_in_write(client: httpx.AsyncClient) -> None:
    await _collection(client, **{"record:create": ["system.Everyone"]})
    async with other(client, None) as anonymous:
        response = await anonymous.put(RECORD, json={"data": {}})
    assert response.status_code == 201
    assert response.json()["permissions"] == {"write": ["system.Everyone"]}


async def test_put_with_empty_permissions_object_keeps_the_acl(
    client: httpx.AsyncClient,
) -> None:
    # Kinto 26.5 treats `"permissions": {}` as absent (black-box comparison).
    await _collection(client)
    await _record(client, read=["account:x"])
    response = await client.put(RECORD, json={"permissions": {}})
    assert response.status_code == 200
    assert _acl(response.json()) == {"write": {alice()}, "read": {"account:x"}}


async def test_put_honours_a_greater_last_modified(client: httpx.AsyncClient) -> None:
    await _collection(client)
    stored = await _record(client)
    wanted = stored["last_modified"] + 100000
    response = await client.put(RECORD, json={"data": {"last_modified": wanted}})
    assert response.json()["data"]["last_modified"] == wanted
    assert _etag(response) == wanted


async def test_put_ignores_a_smaller_last_modified(client: httpx.AsyncClient) -> None:
    await _collection(client)
    stored = await _record(client)
    response = await client.put(RECORD, json={"data": {"last_modified": 1}})
    assert response.json()["data"]["last_modified"] > stored["last_modified"]


async def test_put_drops_non_integer_last_modified(client: httpx.AsyncClient) -> None:
    await _collection(client)
    response = await client.put(RECORD, json={"data": {"last_modified": "abc"}})
    assert response.status_code == 201
    assert isinstance(response.json()["data"]["last_modified"], int)


async def test_put_ignores_response_behavior(client: httpx.AsyncClient) -> None:
    await _collection(client)
    response = await client.put(
        RECORD, json={"data": {"a": 1}}, headers={"Response-Behavior": "heavy"}
    )
    assert response.status_code == 201
    assert set(response.json()) == {"data", "permissions"}


async def test_last_modified_header_is_the_etag_instant_in_seconds(
    client: httpx.AsyncClient,
) -> None:
    response = await client.put(BUCKET)
    expected = email.utils.formatdate(_etag(response) // 1000, usegmt=True)
    assert response.headers["Last-Modified"] == expected
    assert (await client.get(BUCKET)).headers["Last-Modified"] == expected


# -- PATCH (03 §6) ------------------------------------------------------------------------


async def test_patch_json_is_a_shallow_merge_storing_null(client: httpx.AsyncClient) -> None:
    await _collection(client)
    stored = await _record(client, {"a": 1, "nested": {"x": 1, "y": 2}, "keep": True})
    response = await client.patch(RECORD, json={"data": {"nested": {"x": 3}, "a": None, "n": 0}})
    assert response.status_code == 200
    data = response.json()["data"]
    assert data == {
        "id": "r",
        "last_modified": data["last_modified"],
        "a": None,
        "nested": {"x": 3},
        "keep": True,
        "n": 0,
    }
    assert data["last_modified"] > stored["last_modified"]
    assert (await client.get(RECORD)).json()["data"] == data


async def test_patch_json_permissions_replace_given_types_only(client: httpx.AsyncClient) -> None:
    await _collection(client)
    await _record(client, read=["account:x"], write=["account:w"])
    response = await client.patch(RECORD, json={"permissions": {"read": [bob()]}})
    assert response.status_code == 200
    assert _acl(response.json()) == {"read": {bob()}, "write": {"account:w", alice()}}


async def test_patch_json_null_permission_type_is_a_noop(client: httpx.AsyncClient) -> None:
    await _collection(client)
    await _record(client, read=["account:x"])
    response = await client.patch(RECORD, json={"permissions": {"read": None}})
    assert response.status_code == 200
    assert _acl(response.json()) == {"read": {"account:x"}, "write": {alice()}}


async def test_merge_patch_removes_nulls_recursively(client: httpx.AsyncClient) -> None:
    await _collection(client)
    await _record(client, {"a": 1, "nested": {"x": 1, "y": {"z": 1, "w": 2}}, "keep": True})
    response = await client.patch(
        RECORD,
        json={"data": {"a": None, "nested": {"x": None, "y": {"w": None, "v": 3}}, "new": 1}},
        headers=MERGE,
    )
    assert response.status_code == 200
    data = response.json()["data"]
    assert data == {
        "id": "r",
        "last_modified": data["last_modified"],
        "nested": {"y": {"z": 1, "v": 3}},
        "keep": True,
        "new": 1,
    }


async def test_merge_patch_permissions(client: httpx.AsyncClient) -> None:
    await _collection(client)
    await _record(client, read=["account:x"], write=["account:w"])
    response = await client.patch(
        RECORD, json={"permissions": {"read": None, "write": ["account:v"]}}, headers=MERGE
    )
    assert response.status_code == 200
    assert _acl(response.json()) == {"write": {"account:v", alice()}}


async def test_merge_patch_absent_permission_types_are_kept(client: httpx.AsyncClient) -> None:
    await _collection(client)
    await _record(client, read=["account:x"])
    response = await client.patch(RECORD, json={"data": {"a": 1}}, headers=MERGE)
    assert _acl(response.json()) == {"read": {"account:x"}, "write": {alice()}}


async def test_json_patch_operations_on_data(client: httpx.AsyncClient) -> None:
    await _collection(client)
    await _record(client, {"title": "t", "tags": ["a", "b"], "old": 1, "src": {"k": "v"}})
    ops = [
        {"op": "add", "path": "/data/tags/-", "value": "c"},
        {"op": "remove", "path": "/data/tags/0"},
        {"op": "replace", "path": "/data/title", "value": "T"},
        {"op": "remove", "path": "/data/old"},
        {"op": "copy", "from": "/data/src", "path": "/data/dst"},
        {"op": "move", "from": "/data/src", "path": "/data/moved"},
        {"op": "test", "path": "/data/title", "value": "T"},
    ]
    response = await client.patch(RECORD, json=ops, headers=JSON_PATCH)
    assert response.status_code == 200
    data = response.json()["data"]
    assert data == {
        "id": "r",
        "last_modified": data["last_modified"],
        "title": "T",
        "tags": ["b", "c"],
        "dst": {"k": "v"},
        "moved": {"k": "v"},
    }


async def test_json_patch_permission_principal_value_is_automatic(
    client: httpx.AsyncClient,
) -> None:
    await _collection(client)
    await _record(client, read=[bob()])
    ops = [
        {"op": "test", "path": f"/permissions/read/{bob()}"},
        {"op": "add", "path": "/permissions/read/system.Everyone"},
        {"op": "remove", "path": f"/permissions/read/{bob()}"},
        {"op": "add", "path": "/permissions/write/account:w"},
    ]
    response = await client.patch(RECORD, json=ops, headers=JSON_PATCH)
    assert response.status_code == 200
    assert _acl(response.json()) == {
        "read": {"system.Everyone"},
        "write": {"account:w", alice()},
    }


async def test_json_patch_can_replace_a_whole_permission_list(client: httpx.AsyncClient) -> None:
    await _collection(client)
    await _record(client, read=["account:x", "account:y"])
    ops = [{"op": "add", "path": "/permissions/read", "value": ["me"]}]
    response = await client.patch(RECORD, json=ops, headers=JSON_PATCH)
    assert response.status_code == 200
    assert _acl(response.json()) == {"read": {"me"}, "write": {alice()}}


async def test_json_patch_failed_test_is_400(client: httpx.AsyncClient) -> None:
    await _collection(client)
    stored = await _record(client, {"title": "t"})
    ops = [
        {"op": "replace", "path": "/data/title", "value": "changed"},
        {"op": "test", "path": "/data/title", "value": "other"},
    ]
    response = await client.patch(RECORD, json=ops, headers=JSON_PATCH)
    assert response.status_code == 400
    body = response.json()
    assert body["errno"] == 107
    assert body["details"][0]["location"] == "body"
    assert body["details"][0]["description"].startswith("JSON Patch operation failed")
    assert (await client.get(RECORD)).json()["data"] == stored


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "test", "path": "/permissions/read/account:nobody"}],
        [{"op": "remove", "path": "/data/missing"}],
        [{"op": "add", "path": "data/a", "value": 1}],
        [{"op": "replace", "path": "/data/tags/9", "value": 1}],
        [{"op": "add", "path": "/permissions/group:create/x", "value": "x"}],
    ],
)
async def test_json_patch_errors_are_400(client: httpx.AsyncClient, ops: list[Any]) -> None:
    await _collection(client)
    await _record(client, {"tags": []})
    response = await client.patch(RECORD, json=ops, headers=JSON_PATCH)
    assert response.status_code == 400
    assert response.json()["errno"] == 107


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "frobnicate", "path": "/data/a"}],
        [{"op": "add", "path": "/data/a", "value": 1, "extra": True}],
        [{"op": "add", "value": 1}],
        ["not an object"],
        {"op": "add", "path": "/data/a", "value": 1},
    ],
)
async def test_json_patch_malformed_operations_are_400(client: httpx.AsyncClient, ops: Any) -> None:
    await _collection(client)
    await _record(client)
    response = await client.patch(RECORD, json=ops, headers=JSON_PATCH)
    assert response.status_code == 400
    assert response.json()["errno"] == 107


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "replace", "path": "/data", "value": "x"}],
        [{"op": "replace", "path": "/data", "value": [1]}],
        [{"op": "replace", "path": "/permissions", "value": 42}],
        [{"op": "add", "path": "/permissions/read", "value": "x"}],
        [{"op": "add", "path": "/permissions/read", "value": [1]}],
        [{"op": "remove", "path": "/data"}],
        [{"op": "add", "path": "", "value": []}],
        [{"op": "add", "path": "/other", "value": 1}],
    ],
)
async def test_json_patch_breaking_the_document_is_400_not_500(
    client: httpx.AsyncClient, ops: list[Any]
) -> None:
    await _collection(client)
    stored = await _record(client, {"a": 1})
    response = await client.patch(RECORD, json=ops, headers=JSON_PATCH)
    assert response.status_code == 400
    assert response.json()["errno"] == 107
    assert (await client.get(RECORD)).json()["data"] == stored


async def test_json_patch_replacing_data_with_an_object(client: httpx.AsyncClient) -> None:
    await _collection(client)
    await _record(client, {"a": 1})
    ops = [{"op": "replace", "path": "/data", "value": {"b": 2}}]
    response = await client.patch(RECORD, json=ops, headers=JSON_PATCH)
    assert response.status_code == 200
    data = response.json()["data"]
    assert data == {"id": "r", "b": 2, "last_modified": data["last_modified"]}


@pytest.mark.parametrize("content", [b"", b"{}"])
async def test_patch_without_data_or_permissions_is_400(
    client: httpx.AsyncClient, content: bytes
) -> None:
    await _collection(client)
    await _record(client)
    response = await client.patch(
        RECORD, content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["errno"] == 107
    assert body["error"] == "Invalid parameters"
    assert body["message"] == "Provide at least one of data or permissions"
    assert body["details"][0]["location"] == "body"


async def test_patch_always_bumps_last_modified(client: httpx.AsyncClient) -> None:
    await _collection(client)
    stored = await _record(client, {"a": 1})
    same = await client.patch(RECORD, json={"data": {"a": 1}})
    assert same.status_code == 200
    first = same.json()["data"]["last_modified"]
    assert first > stored["last_modified"]
    empty = await client.patch(RECORD, json={"data": {}})
    assert empty.json()["data"]["last_modified"] > first
    assert _etag(empty) == empty.json()["data"]["last_modified"]


async def test_patch_missing_object_is_404(client: httpx.AsyncClient) -> None:
    await _collection(client)
    response = await client.patch(RECORD, json={"data": {"a": 1}})
    assert response.status_code == 404
    assert response.json() == _not_found()


async def test_patch_on_bucket(client: httpx.AsyncClient) -> None:
    await client.put(BUCKET, json={"data": {"a": 1}})
    response = await client.patch(BUCKET, json={"data": {"b": 2}})
    assert response.status_code == 200
    data = response.json()["data"]
    assert data == {"id": "b", "a": 1, "b": 2, "last_modified": data["last_modified"]}


async def test_patch_ignores_a_smaller_last_modified(client: httpx.AsyncClient) -> None:
    await _collection(client)
    stored = await _record(client)
    response = await client.patch(RECORD, json={"data": {"last_modified": 1}})
    assert response.json()["data"]["last_modified"] > stored["last_modified"]


# -- Response-Behavior (03 §6.7) ----------------------------------------------------------


async def test_response_behavior_full_is_the_default(client: httpx.AsyncClient) -> None:
    await _collection(client)
    await _record(client, {"a": 1, "b": 2})
    response = await client.patch(
        RECORD, json={"data": {"b": 3}}, headers={"Response-Behavior": "full"}
    )
    body = response.json()
    assert set(body) == {"data", "permissions"}
    assert body["data"]["a"] == 1
    assert body["data"]["b"] == 3


async def test_response_behavior_light_returns_changed_sent_keys(
    client: httpx.AsyncClient,
) -> None:
    await _collection(client)
    await _record(client, {"a": 1, "b": 2, "z": 0})
    response = await client.patch(
        RECORD, json={"data": {"a": 1, "b": 3, "c": 4}}, headers={"Response-Behavior": "light"}
    )
    assert response.status_code == 200
    assert response.json() == {"data": {"b": 3, "c": 4}}
    stored = (await client.get(RECORD)).json()["data"]
    assert _etag(response) == stored["last_modified"]
    assert stored["z"] == 0


async def test_response_behavior_diff_returns_only_server_altered_keys(
    client: httpx.AsyncClient,
) -> None:
    await _collection(client)
    await _record(client, {"a": 1, "b": 2})
    response = await client.patch(
        RECORD, json={"data": {"a": 1, "b": 3}}, headers={"Response-Behavior": "diff"}
    )
    assert response.status_code == 200
    assert response.json() == {"data": {}}
    assert (await client.get(RECORD)).json()["data"]["b"] == 3


async def test_response_behavior_light_on_permissions_only(client: httpx.AsyncClient) -> None:
    await _collection(client)
    await _record(client, {"a": 1})
    response = await client.patch(
        RECORD, json={"permissions": {"read": [bob()]}}, headers={"Response-Behavior": "light"}
    )
    assert response.status_code == 200
    assert response.json() == {"data": {}}


async def test_invalid_response_behavior_is_400(client: httpx.AsyncClient) -> None:
    await _collection(client)
    stored = await _record(client, {"a": 1})
    response = await client.patch(
        RECORD, json={"data": {"a": 2}}, headers={"Response-Behavior": "heavy"}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["errno"] == 107
    assert body["details"][0]["location"] == "header"
    assert body["details"][0]["name"] == "Response-Behavior"
    assert (await client.get(RECORD)).json()["data"] == stored


# -- DELETE object (03 §7) ----------------------------------------------------------------


async def test_delete_returns_the_tombstone_without_permissions(client: httpx.AsyncClient) -> None:
    await _collection(client)
    stored = await _record(client, {"a": 1}, read=[bob()])
    response = await client.delete(RECORD)
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "data": {"id": "r", "last_modified": body["data"]["last_modified"], "deleted": True}
    }
    assert body["data"]["last_modified"] > stored["last_modified"]
    assert _etag(response) == body["data"]["last_modified"]


async def test_delete_twice_is_404(client: httpx.AsyncClient) -> None:
    await _collection(client)
    await _record(client)
    await client.delete(RECORD)
    response = await client.delete(RECORD)
    assert response.status_code == 404
    assert response.json() == _not_found()


async def test_delete_removes_the_acl(client: httpx.AsyncClient) -> None:
    await _collection(client)
    await _record(client, read=[bob()])
    await client.delete(RECORD)
    await client.put(RECORD)
    async with other(client, BOB) as bob_client:
        assert (await bob_client.get(RECORD)).status_code == 403


async def test_delete_with_greater_last_modified_forces_the_tombstone_timestamp(
    client: httpx.AsyncClient,
) -> None:
    await _collection(client)
    stored = await _record(client)
    wanted = stored["last_modified"] + 123456
    response = await client.delete(f"{RECORD}?last_modified={wanted}")
    assert response.status_code == 200
    assert response.json()["data"]["last_modified"] == wanted
    assert _etag(response) == wanted


async def test_delete_accepts_a_quoted_last_modified(client: httpx.AsyncClient) -> None:
    await _collection(client)
    stored = await _record(client)
    wanted = stored["last_modified"] + 5000
    response = await client.delete(f'{RECORD}?last_modified="{wanted}"')
    assert response.status_code == 200
    assert response.json()["data"]["last_modified"] == wanted


async def test_delete_with_smaller_last_modified_ignores_it(client: httpx.AsyncClient) -> None:
    await _collection(client)
    stored = await _record(client)
    response = await client.delete(f"{RECORD}?last_modified=1")
    assert response.status_code == 200
    assert response.json()["data"]["last_modified"] > stored["last_modified"]


async def test_delete_with_invalid_last_modified_is_400(client: httpx.AsyncClient) -> None:
    await _collection(client)
    await _record(client)
    response = await client.delete(f"{RECORD}?last_modified=abc")
    assert response.status_code == 400
    assert response.json()["errno"] == 107
    assert (await client.get(RECORD)).status_code == 200


async def test_tombstone_appears_in_since_list(client: httpx.AsyncClient) -> None:
    await _collection(client)
    await _record(client)
    deleted = (await client.delete(RECORD)).json()["data"]
    listing = (await client.get(f"{RECORDS}?_since=0")).json()["data"]
    assert listing == [deleted]
    assert (await client.get(RECORDS)).json()["data"] == []


# -- lists: GET, HEAD, DELETE (03 §8-10) --------------------------------------------------


async def _three(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    await _collection(client)
    records = []
    for i, kind in enumerate(["x", "y", "x"]):
        response = await client.put(f"{RECORDS}/r{i}", json={"data": {"kind": kind}})
        records.append(response.json()["data"])
    return records


async def test_get_list_has_only_data_newest_first(client: httpx.AsyncClient) -> None:
    records = await _three(client)
    response = await client.get(RECORDS)
    assert response.status_code == 200
    assert response.json() == {"data": records[::-1]}
    assert _etag(response) == records[-1]["last_modified"]


async def test_head_list_counts_objects(client: httpx.AsyncClient) -> None:
    await _three(client)
    await client.delete(f"{RECORDS}/r1")
    response = await client.head(f"{RECORDS}?_limit=1")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["Total-Objects"] == "2"
    assert response.headers["Total-Records"] == "2"
    assert "Next-Page" not in response.headers
    assert "ETag" in response.headers


async def test_head_list_count_applies_filters_and_skips_tombstones(
    client: httpx.AsyncClient,
) -> None:
    await _three(client)
    await client.delete(f"{RECORDS}/r0")
    response = await client.head(f"{RECORDS}?kind=x&_since=0")
    assert response.headers["Total-Objects"] == "1"
    assert response.headers["Total-Records"] == "1"


async def test_head_list_counts_only_visible_objects(client: httpx.AsyncClient) -> None:
    await _three(client)
    await client.put(f"{RECORDS}/r0", json={"permissions": {"read": [bob()]}})
    async with other(client, BOB) as bob_client:
        response = await bob_client.head(RECORDS)
    assert response.status_code == 200
    assert response.headers["Total-Objects"] == "1"


async def test_delete_list_deletes_only_matching_objects(client: httpx.AsyncClient) -> None:
    records = await _three(client)
    response = await client.delete(f"{RECORDS}?kind=x")
    assert response.status_code == 200
    tombstones = response.json()["data"]
    assert sorted(t["id"] for t in tombstones) == ["r0", "r2"]
    assert all(set(t) == {"id", "last_modified", "deleted"} and t["deleted"] for t in tombstones)
    assert _etag(response) == max(t["last_modified"] for t in tombstones)
    remaining = (await client.get(RECORDS)).json()["data"]
    assert remaining == [records[1]]


async def test_delete_list_without_match_keeps_the_list_timestamp(
    client: httpx.AsyncClient,
) -> None:
    await _three(client)
    before = (await client.head(RECORDS)).headers["ETag"]
    response = await client.delete(f"{RECORDS}?kind=nothing")
    assert response.status_code == 200
    assert response.json() == {"data": []}
    assert response.headers["ETag"] == before


async def test_delete_list_leaves_tombstones(client: httpx.AsyncClient) -> None:
    await _three(client)
    deleted = (await client.delete(RECORDS)).json()["data"]
    since = (await client.get(f"{RECORDS}?_since=0")).json()["data"]
    assert sorted(since, key=lambda t: t["id"]) == sorted(deleted, key=lambda t: t["id"])


async def test_delete_list_deletes_only_what_the_caller_can_write(
    client: httpx.AsyncClient,
) -> None:
    await _three(client)
    await client.put(f"{RECORDS}/r1", json={"permissions": {"write": [bob()]}})
    async with other(client, BOB) as bob_client:
        response = await bob_client.delete(RECORDS)
    assert response.status_code == 200
    assert [t["id"] for t in response.json()["data"]] == ["r1"]
    remaining = sorted(r["id"] for r in (await client.get(RECORDS)).json()["data"])
    assert remaining == ["r0", "r2"]


# -- appendix of 03 (§12) -----------------------------------------------------------------


async def test_appendix_wire_examples(client: httpx.AsyncClient) -> None:
    me = alice()
    bucket = await client.put("/v1/buckets/blog")
    assert bucket.status_code == 201
    assert bucket.json() == {
        "data": {"id": "blog", "last_modified": _etag(bucket)},
        "permissions": {"write": [me]},
    }

    articles = "/v1/buckets/blog/collections/articles"
    collection = await client.put(
        articles,
        json={"data": {"cache_expires": 0}, "permissions": {"read": ["system.Everyone"]}},
    )
    assert collection.status_code == 201
    assert collection.json() == {
        "data": {"id": "articles", "cache_expires": 0, "last_modified": _etag(collection)},
        "permissions": {"read": ["system.Everyone"], "write": [me]},
    }

    created = await client.post(f"{articles}/records", json={"data": {"title": "Hello"}})
    assert created.status_code == 201
    rid = created.json()["data"]["id"]
    assert UUID4.match(rid)
    assert created.json() == {
        "data": {"title": "Hello", "id": rid, "last_modified": _etag(created)},
        "permissions": {"write": [me]},
    }
    record_url = f"{articles}/records/{rid}"

    patched = await client.patch(
        record_url, json={"data": {"tags": ["x"]}}, headers={"If-Match": f'"{_etag(created)}"'}
    )
    assert patched.status_code == 200
    assert _etag(patched) > _etag(created)
    existing = {"title": "Hello", "tags": ["x"], "id": rid, "last_modified": _etag(patched)}
    assert patched.json() == {"data": existing, "permissions": {"write": [me]}}

    conflict = await client.patch(
        record_url, json={"data": {"tags": ["y"]}}, headers={"If-Match": f'"{_etag(created)}"'}
    )
    assert conflict.status_code == 412
    assert _etag(conflict) == _etag(patched)
    assert conflict.json() == {
        "code": 412,
        "errno": 114,
        "error": "Precondition Failed",
        "message": "Resource was modified meanwhile",
        "details": {"existing": existing},
    }

    deleted = await client.delete(record_url)
    assert deleted.status_code == 200
    tombstone = {"id": rid, "last_modified": _etag(deleted), "deleted": True}
    assert deleted.json() == {"data": tombstone}

    since = await client.get(
        f"{articles}/records?_since={_etag(created)}",
        headers={"If-None-Match": f'"{_etag(created)}"'},
    )
    assert since.status_code == 200
    assert _etag(since) == _etag(deleted)
    assert since.json() == {"data": [tombstone]}

    not_modified = await client.get(
        f"{articles}/records", headers={"If-None-Match": f'"{_etag(deleted)}"'}
    )
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert _etag(not_modified) == _etag(deleted)

    head = await client.head(f"{articles}/records")
    assert head.status_code == 200
    assert _etag(head) == _etag(deleted)
    assert head.headers["Total-Objects"] == "0"
    assert head.headers["Total-Records"] == "0"

    gone = await client.get(record_url)
    assert gone.status_code == 404
    assert gone.json() == {
        "code": 404,
        "errno": 110,
        "error": "Not Found",
        "details": {"id": rid, "resource_name": "record"},
    }

    nope = await client.get("/v1/buckets/blog/collections/nope/records")
    assert nope.status_code == 404
    assert nope.json() == {
        "code": 404,
        "errno": 111,
        "error": "Not Found",
        "details": {"id": "nope", "resource_name": "collection"},
    }


async def test_head_has_the_headers_of_its_get_without_a_body(client: httpx.AsyncClient) -> None:
    await client.put("/v1/buckets/b")
    get = await client.get("/v1/buckets/b/collections")
    head = await client.head("/v1/buckets/b/collections")
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"] == "application/json"
    assert head.headers["etag"] == get.headers["etag"]
