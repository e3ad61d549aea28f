"""Regressions found by sending the same scripted requests to Kinto 26.5.0 and to Nuages.

Each test pins Nuages' answer where the two servers disagreed: either a Nuages bug that was fixed
(the answer now matches Kinto, or the protocol reference where it is explicit), or a Kinto bug
that Nuages deliberately does not reproduce (protocol/12 §C and §D, protocol/05 §2). Kinto itself is
not needed to run them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
import pytest
from tests.conftest import ALICE, BOB, AppFactory, userid

ORIGIN = {"Origin": "http://example.com"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


def exposed(response: httpx.Response) -> set[str]:
    return {h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")}


def comma_set(value: str) -> set[str]:
    return {item.strip() for item in value.split(",")}


# -- JSON-Patch on buckets and collections -------------------------------------------------
# Was: 400 "permissions.collection:create in body: () is not iterable" for any JSON-Patch on a
# resource with a permission type beyond read/write that the object did not have yet.


async def test_json_patch_on_a_bucket_edits_data(client: httpx.AsyncClient) -> None:
    await client.put("/v1/buckets/b", json={"data": {"title": "one"}})
    response = await client.patch(
        "/v1/buckets/b",
        json=[{"op": "add", "path": "/data/tags", "value": ["a"]}],
        headers=JSON_PATCH,
    )
    assert response.status_code == 200
    assert response.json()["data"]["tags"] == ["a"]
    assert response.json()["permissions"] == {"write": [userid(ALICE)]}


async def test_json_patch_on_a_bucket_adds_a_reader(client: httpx.AsyncClient) -> None:
    await client.put("/v1/buckets/b")
    bob = userid(BOB)
    response = await client.patch(
        "/v1/buckets/b",
        json=[{"op": "add", "path": f"/permissions/read/{bob}"}],
        headers=JSON_PATCH,
    )
    assert response.status_code == 200
    assert response.json()["permissions"]["read"] == [bob]
    assert (await client.get("/v1/buckets/b", auth=BOB)).status_code == 200


async def test_json_patch_on_a_collection_edits_data_then_acl(client: httpx.AsyncClient) -> None:
    await client.put("/v1/buckets/b")
    await client.put("/v1/buckets/b/collections/c")
    url = "/v1/buckets/b/collections/c"
    response = await client.patch(
        url, json=[{"op": "add", "path": "/data/x", "value": 1}], headers=JSON_PATCH
    )
    assert response.status_code == 200
    assert response.json()["data"]["x"] == 1
    response = await client.patch(
        url,
        json=[{"op": "add", "path": "/permissions/record:create", "value": ["system.Everyone"]}],
        headers=JSON_PATCH,
    )
    assert response.status_code == 200
    assert response.json()["permissions"]["record:create"] == ["system.Everyone"]
    assert response.json()["data"]["x"] == 1


async def test_json_patch_replacing_data_with_a_scalar_is_a_400_not_a_500(
    client: httpx.AsyncClient,
) -> None:
    # Kinto 26.5.0 answers 500 here (protocol/12 §D).
    await client.put("/v1/buckets/b")
    response = await client.patch(
        "/v1/buckets/b", json=[{"op": "replace", "path": "/data", "value": 5}], headers=JSON_PATCH
    )
    assert response.status_code == 400
    assert response.json()["errno"] == 107


# -- null permission lists -------------------------------------------------------------------
# Was: 400 "None is not iterable" on PUT/POST, where Kinto drops a null list (PATCH already did).


async def test_put_with_a_null_permission_list_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/v1/buckets/b", json={"permissions": {"read": None, "write": [userid(BOB)]}}
    )
    assert response.status_code == 201
    permissions = response.json()["permissions"]
    assert "read" not in permissions
    assert set(permissions["write"]) == {userid(ALICE), userid(BOB)}


async def test_post_with_a_null_permission_list_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/buckets", json={"data": {"id": "b"}, "permissions": {"read": None}}
    )
    assert response.status_code == 201
    assert response.json()["permissions"] == {"write": [userid(ALICE)]}


async def test_post_of_an_existing_id_with_a_null_permission_list(
    client: httpx.AsyncClient,
) -> None:
    await client.put("/v1/buckets/b")
    response = await client.post(
        "/v1/buckets", json={"data": {"id": "b"}, "permissions": {"read": None}}
    )
    assert response.status_code == 200


# -- group members ---------------------------------------------------------------------------
# Was: details name "data.members"; Kinto names the offending entry.


@pytest.mark.parametrize(
    ("members", "description"),
    [
        (["ok", "system.Everyone"], "'system.Everyone' is not a valid user ID."),
        (["ok", "/buckets/b/groups/g"], "'/buckets/b/groups/g' is not a valid user ID."),
        (["ok", 1], "1 is not a string"),
    ],
)
async def test_invalid_group_member_names_its_index(
    client: httpx.AsyncClient, members: list[object], description: str
) -> None:
    await client.put("/v1/buckets/b")
    response = await client.put("/v1/buckets/b/groups/g", json={"data": {"members": members}})
    assert response.status_code == 400
    assert response.json()["details"] == [
        {"location": "body", "name": "data.members.1", "description": description}
    ]
    assert response.json()["message"] == f"data.members.1 in body: {description}"


async def test_group_members_not_a_list_names_the_field(client: httpx.AsyncClient) -> None:
    await client.put("/v1/buckets/b")
    response = await client.put("/v1/buckets/b/groups/g", json={"data": {"members": "x"}})
    assert response.status_code == 400
    assert response.json()["details"][0]["name"] == "data.members"


# -- batch sub-responses ---------------------------------------------------------------------
# Was: sub-response headers without Content-Type.


async def test_batch_sub_responses_carry_their_content_type(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/batch",
        json={
            "requests": [
                {"method": "PUT", "path": "/buckets/b"},
                {"method": "HEAD", "path": "/buckets/b"},
                {"path": "/buckets/b/collections/missing"},
            ]
        },
    )
    assert response.status_code == 200
    statuses = [sub["status"] for sub in response.json()["responses"]]
    assert statuses == [201, 200, 404]
    for sub in response.json()["responses"]:
        assert sub["headers"]["Content-Type"] == "application/json"


async def test_batch_not_modified_sub_response_has_no_content_type(
    client: httpx.AsyncClient,
) -> None:
    etag = (await client.put("/v1/buckets/b")).headers["ETag"]
    response = await client.post(
        "/v1/batch",
        json={
            "requests": [
                {"path": "/buckets/b", "headers": {"If-None-Match": etag}},
            ]
        },
    )
    (sub,) = response.json()["responses"]
    assert sub["status"] == 304
    assert "Content-Type" not in sub["headers"]


async def test_batch_body_that_is_an_array_is_a_400_not_a_500(client: httpx.AsyncClient) -> None:
    # Kinto 26.5.0 answers 500 (protocol/12 §D).
    response = await client.post("/v1/batch", json=[{"path": "/"}])
    assert response.status_code == 400
    assert response.json()["errno"] == 107


# -- exposed headers on every answer of a read route -----------------------------------------
# Was: a 304 or an error on GET answered with the default list only, hiding ETag from browsers.


async def test_not_modified_object_exposes_etag(client: httpx.AsyncClient) -> None:
    etag = (await client.put("/v1/buckets/b")).headers["ETag"]
    response = await client.get("/v1/buckets/b", headers={"If-None-Match": etag, **ORIGIN})
    assert response.status_code == 304
    assert {"ETag", "Last-Modified", "Cache-Control"} <= exposed(response)


async def test_not_modified_list_head_exposes_totals(client: httpx.AsyncClient) -> None:
    etag = (await client.get("/v1/buckets")).headers["ETag"]
    response = await client.head("/v1/buckets", headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert {"ETag", "Next-Page", "Total-Objects", "Total-Records"} <= exposed(response)


async def test_forbidden_object_read_exposes_the_read_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/buckets/unknown", headers=ORIGIN)
    assert response.status_code == 403
    assert {"ETag", "Last-Modified", "Cache-Control", "Expires", "Pragma"} <= exposed(response)


async def test_unknown_url_exposes_the_default_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/unknown")
    assert response.status_code == 404
    assert exposed(response) == {
        "Backoff",
        "Retry-After",
        "Alert",
        "Content-Length",
        "Content-Type",
    }


# -- 405 and preflight list OPTIONS; preflight allows the route's exposed headers ------------


async def test_method_not_allowed_lists_options_too(client: httpx.AsyncClient) -> None:
    response = await client.put("/v1/buckets", json={})
    assert response.status_code == 405
    assert comma_set(response.headers["Allow"]) == {"GET", "HEAD", "POST", "DELETE", "OPTIONS"}


async def test_preflight_lists_options_and_the_count_headers(client: httpx.AsyncClient) -> None:
    response = await client.options(
        "/v1/buckets", headers={**ORIGIN, "Access-Control-Request-Method": "GET"}, auth=None
    )
    assert response.status_code == 200
    assert comma_set(response.headers["Access-Control-Allow-Methods"]) == {
        "GET",
        "HEAD",
        "POST",
        "DELETE",
        "OPTIONS",
    }
    allowed = comma_set(response.headers["Access-Control-Allow-Headers"])
    assert {"Total-Objects", "Total-Records", "Next-Page", "ETag"} <= allowed


async def test_preflight_without_origin_says_the_header_is_mandatory(
    client: httpx.AsyncClient,
) -> None:
    response = await client.options(
        "/v1/buckets", headers={"Access-Control-Request-Method": "GET"}, auth=None
    )
    assert response.status_code == 400
    assert response.json()["details"] == [
        {"location": "header", "name": "Origin", "description": "this header is mandatory"}
    ]


# -- redirects -------------------------------------------------------------------------------
# Was: /v1 → /v1/ without cache headers, and trailing-slash redirects without Expires.


async def test_root_without_slash_redirect_is_cacheable(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1")
    assert response.status_code == 307
    assert response.headers["Location"] == "http://testserver/v1/"
    assert response.headers["Cache-Control"] == "max-age=3600"
    assert "Expires" in response.headers


async def test_trailing_slash_redirect_expires_after_the_ttl(client: httpx.AsyncClient) -> None:
    before = datetime.now(UTC)
    response = await client.get("/v1/buckets/")
    assert response.status_code == 307
    assert response.headers["Cache-Control"] == "max-age=3600"
    ahead = parsedate_to_datetime(response.headers["Expires"]) - before
    assert 3590 <= ahead.total_seconds() <= 3610


# -- GET /permissions ------------------------------------------------------------------------
# Was: 500 on any query (an UnboundLocalError), no Cache-Control, Next-Page not exposed.


@pytest.fixture
async def permissions_client(make_client: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(experimental_permissions_endpoint=True, paginate_by=1) as client:
        await client.put("/v1/buckets/b")
        await client.put("/v1/buckets/b/collections/c")
        yield client


async def test_permissions_endpoint_with_sort_and_filter(
    permissions_client: httpx.AsyncClient,
) -> None:
    response = await permissions_client.get(
        "/v1/permissions", params={"_sort": "id", "resource_name": "collection"}
    )
    assert response.status_code == 200
    assert [entry["uri"] for entry in response.json()["data"]] == ["/buckets/b/collections/c"]


async def test_permissions_endpoint_is_not_cached(permissions_client: httpx.AsyncClient) -> None:
    for method in ("GET", "HEAD"):
        response = await permissions_client.request(method, "/v1/permissions")
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-cache, no-store"


async def test_permissions_endpoint_exposes_next_page(
    permissions_client: httpx.AsyncClient,
) -> None:
    response = await permissions_client.get("/v1/permissions", headers=ORIGIN)
    assert "Next-Page" in response.headers
    assert {"Next-Page", "ETag"} <= exposed(response)


# -- Kinto memory-backend bugs Nuages does not reproduce (protocol/05 §2) --------------------


@pytest.fixture
async def typed(client: httpx.AsyncClient) -> httpx.AsyncClient:
    await client.put("/v1/buckets/b")
    await client.put("/v1/buckets/b/collections/c")
    for record_id, value in (("one", 1), ("true", True), ("text", "alpha"), ("list", ["a"])):
        await client.put(
            f"/v1/buckets/b/collections/c/records/{record_id}", json={"data": {"v": value}}
        )
    return client


async def ids(client: httpx.AsyncClient, **params: str) -> list[str]:
    response = await client.get(
        "/v1/buckets/b/collections/c/records", params={**params, "_sort": "id"}
    )
    assert response.status_code == 200
    return [record["id"] for record in response.json()["data"]]


async def test_like_filter_works(typed: httpx.AsyncClient) -> None:
    # Kinto 26.5.0's memory backend answers 500 to like_ on a field with non-string values.
    assert await ids(typed, like_v="ALP") == ["text"]
    assert await ids(typed, like_v="*") == ["text"]


async def test_exclude_and_in_do_not_confuse_true_with_one(typed: httpx.AsyncClient) -> None:
    # Kinto's memory backend compares in Python, where True == 1.
    assert await ids(typed, exclude_v="1") == ["list", "text", "true"]
    assert await ids(typed, exclude_v="true") == ["list", "one", "text"]
    assert await ids(typed, in_v="1") == ["one"]


async def test_contains_on_a_non_array_field_matches_nothing(typed: httpx.AsyncClient) -> None:
    # Kinto's memory backend matches every record here; PostgreSQL (the reference) none.
    assert await ids(typed, contains_v="a") == ["list"]
    assert await ids(typed, contains_v="alpha") == []


async def test_plural_delete_next_page_deletes_the_next_page(client: httpx.AsyncClient) -> None:
    # Kinto 26.5.0 builds the next token from tombstones, which lack the sort field: following
    # its Next-Page deletes nothing. Nuages deletes the following page.
    await client.put("/v1/buckets/b")
    await client.put("/v1/buckets/b/collections/c")
    for n in range(4):
        await client.put(f"/v1/buckets/b/collections/c/records/r{n}", json={"data": {"n": n}})
    first = await client.delete(
        "/v1/buckets/b/collections/c/records", params={"_limit": "2", "_sort": "n"}
    )
    assert [r["id"] for r in first.json()["data"]] == ["r0", "r1"]
    second = await client.delete(first.headers["Next-Page"])
    assert [r["id"] for r in second.json()["data"]] == ["r2", "r3"]
    assert "Next-Page" not in second.headers


async def test_if_none_match_star_does_not_leak_to_a_creator_without_read(
    client: httpx.AsyncClient,
) -> None:
    # protocol/12 §C: Kinto puts the whole existing bucket in details.existing.
    await client.put("/v1/buckets/secret", json={"data": {"token": "s3cr3t"}})
    response = await client.put(
        "/v1/buckets/secret", headers={"If-None-Match": "*"}, json={"data": {}}, auth=BOB
    )
    assert response.status_code == 412
    assert "s3cr3t" not in response.text


async def test_put_with_empty_permissions_keeps_the_acl(client: httpx.AsyncClient) -> None:
    # Kinto 26.5 treats `"permissions": {}` like no permissions at all.
    await client.put("/v1/buckets/b", json={"permissions": {"read": ["system.Everyone"]}})
    response = await client.put("/v1/buckets/b", json={"data": {}, "permissions": {}})
    assert response.status_code == 200
    assert response.json()["permissions"]["read"] == ["system.Everyone"]
