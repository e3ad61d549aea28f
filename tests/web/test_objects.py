"""protocol/02: endpoint map, per-resource fields, identifiers, parents and cascading deletes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from tests.conftest import BOB, userid

NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{7}$")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

BUCKET = "/v1/buckets/b"
COLLECTION = f"{BUCKET}/collections/c"
RECORDS = f"{COLLECTION}/records"
GROUP = f"{BUCKET}/groups/g"

INVALID_ID = {
    "code": 400,
    "errno": 107,
    "error": "Invalid parameters",
    "message": "path: Invalid object id",
    "details": [{"location": "path", "name": None, "description": "Invalid object id"}],
}
METHOD_NOT_ALLOWED = {
    "code": 405,
    "errno": 115,
    "error": "Method Not Allowed",
    "message": "Method not allowed on this endpoint.",
}


@asynccontextmanager
async def other(
    client: httpx.AsyncClient, auth: tuple[str, str] | None
) -> AsyncIterator[httpx.AsyncClient]:
    """Another user (or anonymous with `auth=None`) on the same app."""
    transport = httpx.ASGITransport(app=client.app)  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", auth=auth) as c:
        yield c


async def _tree(client: httpx.AsyncClient) -> None:
    """Bucket b, collection c, group g."""
    assert (await client.put(BUCKET)).status_code == 201
    assert (await client.put(COLLECTION)).status_code == 201
    assert (await client.put(GROUP)).status_code == 201


def _allow(response: httpx.Response) -> set[str]:
    return {m.strip() for m in response.headers["Allow"].split(",")} - {"OPTIONS"}


# -- endpoint x method map (02 §1) --------------------------------------------------------

PLURALS = ["/v1/buckets", f"{BUCKET}/collections", f"{BUCKET}/groups", RECORDS]
OBJECTS = [BUCKET, COLLECTION, GROUP, f"{RECORDS}/r"]


@pytest.mark.parametrize("url", PLURALS)
@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_plural_endpoints_reject_put_and_patch_with_405(
    client: httpx.AsyncClient, url: str, method: str
) -> None:
    await _tree(client)
    response = await client.request(method, url, json={"data": {}})
    assert response.status_code == 405
    assert response.json() == METHOD_NOT_ALLOWED
    assert _allow(response) == {"GET", "HEAD", "POST", "DELETE"}


@pytest.mark.parametrize("url", OBJECTS)
async def test_object_endpoints_reject_post_with_405(client: httpx.AsyncClient, url: str) -> None:
    await _tree(client)
    response = await client.post(url, json={"data": {}})
    assert response.status_code == 405
    assert response.json() == METHOD_NOT_ALLOWED
    assert _allow(response) == {"GET", "HEAD", "PUT", "PATCH", "DELETE"}


@pytest.mark.parametrize(
    ("method", "url", "allowed"),
    [
        ("POST", "/v1/", {"GET", "HEAD"}),
        ("DELETE", "/v1/", {"GET", "HEAD"}),
        ("GET", "/v1/batch", {"POST"}),
        ("PUT", "/v1/batch", {"POST"}),
        ("POST", "/v1/__heartbeat__", {"GET", "HEAD"}),
        ("POST", "/v1/__lbheartbeat__", {"GET", "HEAD"}),
        ("DELETE", "/v1/__version__", {"GET", "HEAD"}),
        ("PUT", "/v1/__api__", {"GET", "HEAD"}),
        ("POST", "/v1/contribute.json", {"GET", "HEAD"}),
    ],
)
async def test_utility_endpoints_method_map(
    client: httpx.AsyncClient, method: str, url: str, allowed: set[str]
) -> None:
    response = await client.request(method, url)
    assert response.status_code == 405
    assert response.json() == METHOD_NOT_ALLOWED
    assert _allow(response) == allowed


async def test_405_is_answered_before_authentication(client: httpx.AsyncClient) -> None:
    async with other(client, None) as anonymous:
        response = await anonymous.put("/v1/buckets")
    assert response.status_code == 405
    assert response.json()["errno"] == 115


@pytest.mark.parametrize("url", PLURALS)
async def test_plural_endpoints_answer_get_head_post_delete(
    client: httpx.AsyncClient, url: str
) -> None:
    await _tree(client)
    assert (await client.get(url)).status_code == 200
    assert (await client.head(url)).status_code == 200
    assert (await client.post(url)).status_code == 201
    assert (await client.delete(url)).status_code == 200


@pytest.mark.parametrize("url", OBJECTS)
async def test_object_endpoints_answer_put_get_head_patch_delete(
    client: httpx.AsyncClient, url: str
) -> None:
    await _tree(client)
    assert (await client.put(url, json={"data": {"a": 1}})).status_code in (200, 201)
    assert (await client.get(url)).status_code == 200
    head = await client.head(url)
    assert head.status_code == 200
    assert head.content == b""
    assert (await client.patch(url, json={"data": {"a": 2}})).status_code == 200
    assert (await client.delete(url)).status_code == 200


async def test_head_on_object_has_get_headers_without_body(client: httpx.AsyncClient) -> None:
    created = await client.put(BUCKET)
    response = await client.head(BUCKET)
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["ETag"] == created.headers["ETag"]
    assert "Last-Modified" in response.headers


# -- per-resource fields (02 §2) ----------------------------------------------------------


async def test_objects_are_schemaless(client: httpx.AsyncClient) -> None:
    data = {"title": "x", "nested": {"deep": [1, {"a": None}]}, "n": 1.5}
    response = await client.put(BUCKET, json={"data": data})
    assert response.status_code == 201
    stored = response.json()["data"]
    assert {k: stored[k] for k in data} == data
    assert stored["id"] == "b"
    assert isinstance(stored["last_modified"], int)


async def test_group_members_default_to_empty_list_when_data_given(
    client: httpx.AsyncClient,
) -> None:
    await client.put(BUCKET)
    response = await client.put(GROUP, json={"data": {}})
    assert response.status_code == 201
    assert response.json()["data"]["members"] == []


async def test_group_put_without_body_has_no_members_key(client: httpx.AsyncClient) -> None:
    await client.put(BUCKET)
    response = await client.put(GROUP)
    assert response.status_code == 201
    assert "members" not in response.json()["data"]
    assert "members" not in (await client.get(GROUP)).json()["data"]


async def test_group_post_without_body_has_no_members_key(client: httpx.AsyncClient) -> None:
    await client.put(BUCKET)
    response = await client.post(f"{BUCKET}/groups")
    assert response.status_code == 201
    assert "members" not in response.json()["data"]


async def test_group_with_only_permissions_has_no_members_key(client: httpx.AsyncClient) -> None:
    await client.put(BUCKET)
    response = await client.put(GROUP, json={"permissions": {"read": ["system.Everyone"]}})
    assert response.status_code == 201
    assert "members" not in response.json()["data"]


async def test_group_post_with_data_gets_members(client: httpx.AsyncClient) -> None:
    await client.put(BUCKET)
    response = await client.post(f"{BUCKET}/groups", json={"data": {"title": "t"}})
    assert response.status_code == 201
    assert response.json()["data"]["members"] == []


async def test_group_members_are_kept(client: httpx.AsyncClient) -> None:
    await client.put(BUCKET)
    members = ["account:bob", "system.Authenticated"]
    response = await client.put(GROUP, json={"data": {"members": members}})
    assert response.status_code == 201
    assert response.json()["data"]["members"] == members


@pytest.mark.parametrize("member", ["system.Everyone", "/buckets/b/groups/other"])
async def test_group_member_cannot_be_everyone_or_a_group(
    client: httpx.AsyncClient, member: str
) -> None:
    await client.put(BUCKET)
    response = await client.put(GROUP, json={"data": {"members": ["account:bob", member]}})
    assert response.status_code == 400
    body = response.json()
    assert body["errno"] == 107
    assert body["error"] == "Invalid parameters"
    detail = body["details"][0]
    assert detail["location"] == "body"
    assert detail["name"].startswith("data.members")
    assert detail["description"] == f"'{member}' is not a valid user ID."
    assert (await client.get(GROUP)).status_code == 404


@pytest.mark.parametrize("members", ["account:bob", [1], {"a": "b"}])
async def test_group_members_must_be_a_list_of_strings(
    client: httpx.AsyncClient, members: object
) -> None:
    await client.put(BUCKET)
    response = await client.put(GROUP, json={"data": {"members": members}})
    assert response.status_code == 400
    body = response.json()
    assert body["errno"] == 107
    assert body["details"][0]["location"] == "body"
    assert body["details"][0]["name"].startswith("data.members")


async def test_group_patch_with_invalid_members_is_400(client: httpx.AsyncClient) -> None:
    await client.put(BUCKET)
    await client.put(GROUP, json={"data": {"members": ["account:bob"]}})
    response = await client.patch(GROUP, json={"data": {"members": ["system.Everyone"]}})
    assert response.status_code == 400
    assert (await client.get(GROUP)).json()["data"]["members"] == ["account:bob"]


async def test_collection_cache_expires_integer_is_kept(client: httpx.AsyncClient) -> None:
    await client.put(BUCKET)
    response = await client.put(COLLECTION, json={"data": {"cache_expires": 0}})
    assert response.status_code == 201
    assert response.json()["data"]["cache_expires"] == 0


@pytest.mark.parametrize("value", ["abc", [1], {"a": 1}])
async def test_collection_cache_expires_must_be_an_integer(
    client: httpx.AsyncClient, value: object
) -> None:
    await client.put(BUCKET)
    response = await client.put(COLLECTION, json={"data": {"cache_expires": value}})
    assert response.status_code == 400
    body = response.json()
    assert body["errno"] == 107
    assert body["details"][0]["location"] == "body"
    assert body["details"][0]["name"] == "data.cache_expires"


async def test_collection_schema_must_be_an_object(client: httpx.AsyncClient) -> None:
    await client.put(BUCKET)
    response = await client.put(COLLECTION, json={"data": {"schema": "not a schema"}})
    assert response.status_code == 400
    body = response.json()
    assert body["errno"] == 107
    assert body["details"][0]["name"] == "data.schema"


async def test_collection_schema_object_is_kept(client: httpx.AsyncClient) -> None:
    await client.put(BUCKET)
    schema = {"type": "object", "properties": {"title": {"type": "string"}}}
    response = await client.put(COLLECTION, json={"data": {"schema": schema}})
    assert response.status_code == 201
    assert response.json()["data"]["schema"] == schema


@pytest.mark.parametrize("field", ["collection:schema", "group:schema", "record:schema"])
async def test_bucket_schema_fields_must_be_objects(client: httpx.AsyncClient, field: str) -> None:
    response = await client.put(BUCKET, json={"data": {field: 42}})
    assert response.status_code == 400
    body = response.json()
    assert body["errno"] == 107
    assert body["details"][0]["name"] == f"data.{field}"


@pytest.mark.parametrize(
    "schema", [{"type": "nonsense"}, {"minLength": -1}, {"properties": {"x": {"type": 3}}}]
)
async def test_schemas_are_checked_against_the_meta_schema(
    client: httpx.AsyncClient, schema: dict[str, object]
) -> None:
    # Even with schema validation off, an invalid schema is refused (protocol/12 §B).
    await client.put(BUCKET)
    response = await client.put(COLLECTION, json={"data": {"schema": schema}})
    assert response.status_code == 400
    assert response.json()["details"][0]["name"] == "data.schema"
    response = await client.patch(BUCKET, json={"data": {"record:schema": schema}})
    assert response.status_code == 400
    assert response.json()["details"][0]["name"] == "data.record:schema"


async def test_records_have_no_reserved_fields(client: httpx.AsyncClient) -> None:
    await _tree(client)
    data = {"members": "x", "cache_expires": "y", "schema": 3}
    response = await client.post(RECORDS, json={"data": data})
    assert response.status_code == 201
    assert {k: response.json()["data"][k] for k in data} == data


# -- permission keys per resource (02 §2) -------------------------------------------------


@pytest.mark.parametrize(
    ("url", "good", "bad"),
    [
        (BUCKET, "group:create", "record:create"),
        (COLLECTION, "record:create", "collection:create"),
        (GROUP, "read", "record:create"),
        (f"{RECORDS}/r", "read", "record:create"),
    ],
)
async def test_permission_keys_are_limited_per_resource(
    client: httpx.AsyncClient, url: str, good: str, bad: str
) -> None:
    await _tree(client)
    ok = await client.put(url, json={"permissions": {good: ["account:bob"]}})
    assert ok.status_code in (200, 201)
    assert ok.json()["permissions"][good] == ["account:bob"]
    response = await client.put(url, json={"permissions": {bad: ["account:bob"]}})
    assert response.status_code == 400
    body = response.json()
    assert body["errno"] == 107
    assert body["details"][0]["location"] == "body"
    assert body["details"][0]["name"] == "permissions"
    assert body["details"][0]["description"].startswith(f'"{bad}" is not one of')


async def test_permission_values_must_be_arrays(client: httpx.AsyncClient) -> None:
    response = await client.put(BUCKET, json={"permissions": {"read": "x"}})
    assert response.status_code == 400
    body = response.json()
    assert body["details"][0]["name"] == "permissions.read"
    assert body["details"][0]["description"] == "'x' is not iterable"


# -- identifiers (02 §3) ------------------------------------------------------------------


async def test_generated_bucket_id_is_an_8_char_name(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/buckets")
    assert response.status_code == 201
    assert NAME.match(response.json()["data"]["id"])


async def test_generated_collection_and_group_ids_are_8_char_names(
    client: httpx.AsyncClient,
) -> None:
    await client.put(BUCKET)
    collection = await client.post(f"{BUCKET}/collections", json={"data": {}})
    group = await client.post(f"{BUCKET}/groups", json={"data": {}})
    assert NAME.match(collection.json()["data"]["id"])
    assert NAME.match(group.json()["data"]["id"])


async def test_generated_record_id_is_a_uuid4(client: httpx.AsyncClient) -> None:
    await _tree(client)
    first = (await client.post(RECORDS, json={"data": {}})).json()["data"]["id"]
    second = (await client.post(RECORDS, json={"data": {}})).json()["data"]["id"]
    assert UUID4.match(first)
    assert UUID4.match(second)
    assert first != second


async def test_generated_object_is_reachable_at_its_url(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/buckets", json={"data": {"a": 1}})
    bid = created.json()["data"]["id"]
    response = await client.get(f"/v1/buckets/{bid}")
    assert response.status_code == 200
    assert response.json()["data"]["a"] == 1


@pytest.mark.parametrize(
    "object_id",
    ["a*b", "-abc", "_abc", "a.b", "a%20b", "caf%C3%A9", "a@b", "a+b", "r%00"],
)
@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
async def test_invalid_record_id_in_url_is_400(
    client: httpx.AsyncClient, method: str, object_id: str
) -> None:
    await _tree(client)
    response = await client.request(method, f"{RECORDS}/{object_id}", json={"data": {"a": 1}})
    assert response.status_code == 400
    assert response.json() == INVALID_ID


@pytest.mark.parametrize(
    "url",
    ["/v1/buckets/b*", "/v1/buckets/b/collections/c%21", "/v1/buckets/b/groups/-g"],
)
@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
async def test_invalid_name_in_url_is_400(client: httpx.AsyncClient, method: str, url: str) -> None:
    await _tree(client)
    response = await client.request(method, url, json={"data": {"a": 1}})
    assert response.status_code == 400
    assert response.json() == INVALID_ID


@pytest.mark.parametrize("object_id", ["a b", "-x", "é", 42, None, ["x"]])
@pytest.mark.parametrize("url", ["/v1/buckets", f"{BUCKET}/collections", RECORDS])
async def test_invalid_id_in_post_data_is_400_with_path_location(
    client: httpx.AsyncClient, url: str, object_id: object
) -> None:
    await _tree(client)
    response = await client.post(url, json={"data": {"id": object_id}})
    assert response.status_code == 400
    assert response.json() == INVALID_ID


async def test_record_ids_use_the_relaxed_pattern(client: httpx.AsyncClient) -> None:
    await _tree(client)
    for rid in ("abc", "A_b-C", "0", "x" * 300):
        response = await client.put(f"{RECORDS}/{rid}")
        assert response.status_code == 201, rid
        assert response.json()["data"]["id"] == rid


async def test_posted_record_id_is_honoured(client: httpx.AsyncClient) -> None:
    await _tree(client)
    response = await client.post(RECORDS, json={"data": {"id": "my-record", "a": 1}})
    assert response.status_code == 201
    assert response.json()["data"]["id"] == "my-record"
    assert (await client.get(f"{RECORDS}/my-record")).status_code == 200


async def test_ids_are_case_sensitive(client: httpx.AsyncClient) -> None:
    await client.put("/v1/buckets/abc", json={"data": {"v": "lower"}})
    await client.put("/v1/buckets/ABC", json={"data": {"v": "upper"}})
    assert (await client.get("/v1/buckets/abc")).json()["data"]["v"] == "lower"
    assert (await client.get("/v1/buckets/ABC")).json()["data"]["v"] == "upper"


async def test_put_with_mismatching_data_id_is_400(client: httpx.AsyncClient) -> None:
    response = await client.put(BUCKET, json={"data": {"id": "other"}})
    assert response.status_code == 400
    assert response.json() == {
        "code": 400,
        "errno": 107,
        "error": "Invalid parameters",
        "message": "Object id does not match existing object",
        "details": [
            {
                "location": "body",
                "name": "id",
                "description": "Object id does not match existing object",
            }
        ],
    }
    assert (await client.get(BUCKET)).status_code == 403


async def test_patch_with_mismatching_data_id_is_400(client: httpx.AsyncClient) -> None:
    await _tree(client)
    await client.put(f"{RECORDS}/r", json={"data": {"a": 1}})
    response = await client.patch(f"{RECORDS}/r", json={"data": {"id": "s"}})
    assert response.status_code == 400
    body = response.json()
    assert body["message"] == "Object id does not match existing object"
    assert body["details"][0]["name"] == "id"
    assert (await client.get(f"{RECORDS}/r")).json()["data"]["a"] == 1


async def test_put_with_matching_data_id_is_fine(client: httpx.AsyncClient) -> None:
    response = await client.put(BUCKET, json={"data": {"id": "b", "a": 1}})
    assert response.status_code == 201
    assert response.json()["data"]["id"] == "b"


async def test_collection_id_in_records_url_is_not_validated(client: httpx.AsyncClient) -> None:
    await client.put(BUCKET)
    response = await client.get("/v1/buckets/b/collections/bad'/records")
    assert response.status_code == 404
    assert response.json() == {
        "code": 404,
        "errno": 111,
        "error": "Not Found",
        "details": {"id": "bad'", "resource_name": "collection"},
    }


async def test_record_object_under_malformed_collection_is_404(client: httpx.AsyncClient) -> None:
    await client.put(BUCKET)
    response = await client.put("/v1/buckets/b/collections/bad'/records/r")
    assert response.status_code == 404
    assert response.json()["errno"] == 111


# -- parents (02 §4) ----------------------------------------------------------------------


def _missing_collection(cid: str = "c") -> dict[str, object]:
    return {
        "code": 404,
        "errno": 111,
        "error": "Not Found",
        "details": {"id": cid, "resource_name": "collection"},
    }


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", RECORDS),
        ("HEAD", RECORDS),
        ("POST", RECORDS),
        ("DELETE", RECORDS),
        ("GET", f"{RECORDS}/r"),
        ("PUT", f"{RECORDS}/r"),
        ("PATCH", f"{RECORDS}/r"),
        ("DELETE", f"{RECORDS}/r"),
    ],
)
async def test_records_under_a_missing_collection_are_404_errno_111(
    client: httpx.AsyncClient, method: str, url: str
) -> None:
    await client.put(BUCKET)
    response = await client.request(method, url, json={"data": {"a": 1}})
    assert response.status_code == 404
    if method != "HEAD":
        assert response.json() == _missing_collection()


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("POST", RECORDS),
        ("PUT", f"{RECORDS}/r"),
        ("PATCH", f"{RECORDS}/r"),
        ("DELETE", f"{RECORDS}/r"),
        ("DELETE", RECORDS),
    ],
)
async def test_record_writes_under_missing_collection_are_404_even_anonymous(
    client: httpx.AsyncClient, method: str, url: str
) -> None:
    await client.put(BUCKET)
    async with other(client, None) as anonymous:
        response = await anonymous.request(method, url, json={"data": {"a": 1}})
    assert response.status_code == 404
    assert response.json() == _missing_collection()


async def test_record_list_of_missing_collection_checks_permissions_first(
    client: httpx.AsyncClient,
) -> None:
    await client.put(BUCKET)
    async with other(client, None) as anonymous:
        response = await anonymous.get(RECORDS)
    assert response.status_code == 401


async def test_records_under_a_missing_bucket_report_the_collection(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/buckets/nope/collections/c/records", json={"data": {}})
    assert response.status_code == 404
    assert response.json() == _missing_collection()


async def test_collection_in_unknown_bucket_is_403_not_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/buckets/nope/collections/c")
    assert response.status_code == 403
    assert response.json()["errno"] == 121


async def test_collection_creation_in_unknown_bucket_is_403(client: httpx.AsyncClient) -> None:
    response = await client.put("/v1/buckets/nope/collections/c")
    assert response.status_code == 403


async def test_same_id_in_different_parents_is_isolated(client: httpx.AsyncClient) -> None:
    for bid in ("b1", "b2"):
        await client.put(f"/v1/buckets/{bid}")
        await client.put(f"/v1/buckets/{bid}/collections/c", json={"data": {"bucket": bid}})
        await client.put(
            f"/v1/buckets/{bid}/collections/c/records/r", json={"data": {"bucket": bid}}
        )
    await client.put("/v1/buckets/b1/collections/d")
    await client.put("/v1/buckets/b1/collections/d/records/r", json={"data": {"in": "d"}})
    for bid in ("b1", "b2"):
        record = await client.get(f"/v1/buckets/{bid}/collections/c/records/r")
        assert record.json()["data"]["bucket"] == bid
    other_record = await client.get("/v1/buckets/b1/collections/d/records/r")
    assert other_record.json()["data"] == {
        "id": "r",
        "in": "d",
        "last_modified": other_record.json()["data"]["last_modified"],
    }
    await client.delete("/v1/buckets/b1/collections/c/records/r")
    assert (await client.get("/v1/buckets/b2/collections/c/records/r")).status_code == 200
    assert (await client.get("/v1/buckets/b1/collections/d/records/r")).status_code == 200


async def test_collection_named_groups_does_not_interfere_with_groups(
    client: httpx.AsyncClient,
) -> None:
    await client.put(BUCKET)
    await client.put(f"{BUCKET}/collections/groups", json={"data": {"kind": "collection"}})
    await client.put(f"{BUCKET}/groups/groups", json={"data": {"kind": "group"}})
    collections = (await client.get(f"{BUCKET}/collections")).json()["data"]
    groups = (await client.get(f"{BUCKET}/groups")).json()["data"]
    assert [(c["id"], c["kind"]) for c in collections] == [("groups", "collection")]
    assert [(g["id"], g["kind"]) for g in groups] == [("groups", "group")]


async def test_creating_a_record_does_not_touch_the_collection_timestamp(
    client: httpx.AsyncClient,
) -> None:
    await _tree(client)
    before = (await client.get(COLLECTION)).json()["data"]["last_modified"]
    records_etag = (await client.head(RECORDS)).headers["ETag"]
    created = await client.post(RECORDS, json={"data": {}})
    assert (await client.get(COLLECTION)).json()["data"]["last_modified"] == before
    after = (await client.head(RECORDS)).headers["ETag"]
    assert after != records_etag
    assert after == created.headers["ETag"]


# -- cascading deletes (02 §4) ------------------------------------------------------------


async def _populate(client: httpx.AsyncClient) -> None:
    await _tree(client)
    await client.put(f"{RECORDS}/r1", json={"permissions": {"read": [userid(BOB)]}})
    await client.put(f"{RECORDS}/r2")
    await client.delete(f"{RECORDS}/r2")
    await client.put(f"{BUCKET}/collections/gone")
    await client.delete(f"{BUCKET}/collections/gone")
    await client.put(f"{BUCKET}/groups/g2")
    await client.delete(f"{BUCKET}/groups/g2")


async def test_bucket_delete_removes_children_and_their_tombstones(
    client: httpx.AsyncClient,
) -> None:
    await _populate(client)
    deleted = await client.delete(BUCKET)
    assert deleted.status_code == 200
    await client.put(BUCKET)
    assert (await client.get(f"{BUCKET}/collections?_since=0")).json()["data"] == []
    assert (await client.get(f"{BUCKET}/groups?_since=0")).json()["data"] == []
    assert (await client.get(COLLECTION)).status_code == 404
    assert (await client.get(GROUP)).status_code == 404
    assert (await client.get(RECORDS)).status_code == 404
    await client.put(COLLECTION)
    assert (await client.get(f"{RECORDS}?_since=0")).json()["data"] == []
    assert (await client.get(f"{RECORDS}/r1")).status_code == 404


async def test_bucket_delete_leaves_only_the_bucket_tombstone(make_client) -> None:
    async with make_client(bucket_read_principals=["system.Authenticated"]) as client:
        await _populate(client)
        deleted = await client.delete(BUCKET)
        listing = (await client.get("/v1/buckets?_since=0")).json()["data"]
    assert deleted.json() == {
        "data": {
            "id": "b",
            "last_modified": deleted.json()["data"]["last_modified"],
            "deleted": True,
        }
    }
    assert listing == [deleted.json()["data"]]


async def test_bucket_delete_removes_child_permissions(client: httpx.AsyncClient) -> None:
    await _populate(client)
    async with other(client, BOB) as bob:
        assert (await bob.get(f"{RECORDS}/r1")).status_code == 200
        await client.delete(BUCKET)
        await client.put(BUCKET)
        await client.put(COLLECTION)
        await client.put(f"{RECORDS}/r1")
        response = await bob.get(f"{RECORDS}/r1")
    assert response.status_code == 403


async def test_bucket_delete_removes_group_principals(client: httpx.AsyncClient) -> None:
    await client.put(BUCKET)
    await client.put(GROUP, json={"data": {"members": [userid(BOB)]}})
    await client.put(COLLECTION, json={"permissions": {"read": ["/buckets/b/groups/g"]}})
    async with other(client, BOB) as bob:
        assert (await bob.get(COLLECTION)).status_code == 200
        await client.delete(BUCKET)
        await client.put(BUCKET)
        await client.put(COLLECTION, json={"permissions": {"read": ["/buckets/b/groups/g"]}})
        response = await bob.get(COLLECTION)
    assert response.status_code == 403


async def test_recreated_collection_has_a_fresh_records_list(client: httpx.AsyncClient) -> None:
    await _populate(client)
    old_etag = (await client.head(RECORDS)).headers["ETag"]
    await client.delete(BUCKET)
    await client.put(BUCKET)
    await client.put(COLLECTION)
    response = await client.get(f"{RECORDS}?_since=0")
    assert response.status_code == 200
    assert response.json()["data"] == []
    assert response.headers["ETag"] != old_etag


async def test_collection_delete_removes_records_and_their_tombstones(
    client: httpx.AsyncClient,
) -> None:
    await _populate(client)
    deleted = await client.delete(COLLECTION)
    assert deleted.status_code == 200
    assert (await client.get(RECORDS)).status_code == 404
    tombstones = (await client.get(f"{BUCKET}/collections?_since=0")).json()["data"]
    assert sorted(t["id"] for t in tombstones if t.get("deleted")) == ["c", "gone"]
    await client.put(COLLECTION)
    assert (await client.get(f"{RECORDS}?_since=0")).json()["data"] == []
    assert (await client.get(f"{RECORDS}/r1")).status_code == 404


async def test_collection_delete_keeps_siblings_and_groups(client: httpx.AsyncClient) -> None:
    await _populate(client)
    await client.put(f"{BUCKET}/collections/kept")
    await client.put(f"{BUCKET}/collections/kept/records/r")
    await client.delete(COLLECTION)
    assert (await client.get(f"{BUCKET}/collections/kept/records/r")).status_code == 200
    assert (await client.get(GROUP)).status_code == 200


async def test_collection_delete_removes_record_permissions(client: httpx.AsyncClient) -> None:
    await _populate(client)
    await client.delete(COLLECTION)
    await client.put(COLLECTION)
    await client.put(f"{RECORDS}/r1")
    async with other(client, BOB) as bob:
        assert (await bob.get(f"{RECORDS}/r1")).status_code == 403


async def test_plural_bucket_delete_cascades(client: httpx.AsyncClient) -> None:
    await _populate(client)
    response = await client.delete("/v1/buckets")
    assert response.status_code == 200
    assert [t["id"] for t in response.json()["data"]] == ["b"]
    await client.put(BUCKET)
    assert (await client.get(f"{BUCKET}/collections?_since=0")).json()["data"] == []
    assert (await client.get(f"{BUCKET}/groups?_since=0")).json()["data"] == []


async def test_plural_collection_delete_cascades(client: httpx.AsyncClient) -> None:
    await _populate(client)
    await client.delete(f"{BUCKET}/collections")
    await client.put(COLLECTION)
    assert (await client.get(f"{RECORDS}?_since=0")).json()["data"] == []


async def test_group_delete_removes_membership(client: httpx.AsyncClient) -> None:
    await client.put(BUCKET, json={"permissions": {"read": ["/buckets/b/groups/g"]}})
    await client.put(GROUP, json={"data": {"members": [userid(BOB)]}})
    async with other(client, BOB) as bob:
        assert (await bob.get(BUCKET)).status_code == 200
        await client.delete(GROUP)
        assert (await bob.get(BUCKET)).status_code == 403
