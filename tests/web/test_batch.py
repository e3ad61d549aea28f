"""protocol/07: POST /batch — schema, defaults, limits, sub-requests and sub-responses,
headers inheritance, one transaction."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import ALICE, BOB, AppFactory, userid

BATCH = "/v1/batch"
RECORDS = "/buckets/b/collections/c/records"


def bob_header() -> dict[str, str]:
    token = base64.b64encode(f"{BOB[0]}:{BOB[1]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def batch(client: httpx.AsyncClient, body: Any, **kwargs: Any) -> httpx.Response:
    return await client.post(BATCH, json=body, **kwargs)


async def responses_of(
    client: httpx.AsyncClient, *requests: dict[str, Any], **extra: Any
) -> list[dict[str, Any]]:
    response = await batch(client, {"requests": list(requests), **extra})
    assert response.status_code == 200, response.text
    return list(response.json()["responses"])


async def seed(client: httpx.AsyncClient) -> None:
    assert (await client.put("/v1/buckets/b")).status_code == 201
    assert (await client.put("/v1/buckets/b/collections/c")).status_code == 201


def assert_invalid(response: httpx.Response, message: str | None = None) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["errno"] == 107
    assert body["error"] == "Invalid parameters"
    assert body["details"]
    if message is not None:
        assert body["message"] == message


# -- request and response basics (07 §1, §3) -----------------------------------------------


async def test_empty_request_list_gives_empty_responses(client: httpx.AsyncClient) -> None:
    response = await batch(client, {"requests": []})
    assert response.status_code == 200
    assert response.json() == {"responses": []}


async def test_sub_requests_run_in_order_and_answer_in_order(client: httpx.AsyncClient) -> None:
    found = await responses_of(
        client,
        {"method": "PUT", "path": "/buckets/b"},
        {"method": "PUT", "path": "/buckets/b/collections/c"},
        {"method": "POST", "path": RECORDS, "body": {"data": {"n": 1}}},
        {"path": RECORDS},
    )
    assert [r["status"] for r in found] == [201, 201, 201, 200]
    assert found[3]["body"]["data"][0]["n"] == 1
    created = found[2]
    assert created["path"] == f"/v1{RECORDS}"
    assert created["headers"]["ETag"] == f'"{created["body"]["data"]["last_modified"]}"'
    assert all(isinstance(v, str) for v in created["headers"].values())
    assert created["body"]["permissions"] == {"write": [userid(ALICE)]}


async def test_method_defaults_to_get(client: httpx.AsyncClient) -> None:
    await seed(client)
    (found,) = await responses_of(client, {"path": "/buckets/b"})
    assert found["status"] == 200
    assert found["body"]["data"]["id"] == "b"


async def test_path_prefix_added_and_response_path_without_query(
    client: httpx.AsyncClient,
) -> None:
    await seed(client)
    found = await responses_of(
        client,
        {"path": "/buckets/b/collections?_limit=1&_sort=id"},
        {"path": "/v1/buckets/b/collections/c?_fields=nothing"},
    )
    assert [r["path"] for r in found] == [
        "/v1/buckets/b/collections",
        "/v1/buckets/b/collections/c",
    ]
    assert [r["status"] for r in found] == [200, 200]
    assert set(found[1]["body"]["data"]) == {"id", "last_modified"}


async def test_query_string_of_the_path_is_applied(client: httpx.AsyncClient) -> None:
    await seed(client)
    for cid in ("x", "y"):
        await client.put(f"/v1/buckets/b/collections/{cid}")
    (found,) = await responses_of(client, {"path": "/buckets/b/collections?_limit=1&_sort=id"})
    assert [c["id"] for c in found["body"]["data"]] == ["c"]
    assert "_token=" in found["headers"]["Next-Page"]


async def test_response_path_is_url_decoded(client: httpx.AsyncClient) -> None:
    await seed(client)
    (found,) = await responses_of(client, {"path": "/buckets/b/collections/%63"})
    assert found["path"] == "/v1/buckets/b/collections/c"
    assert found["status"] == 200


async def test_head_sub_response_body_is_empty_string(client: httpx.AsyncClient) -> None:
    await seed(client)
    found = await responses_of(
        client,
        {"method": "HEAD", "path": "/buckets/b/collections"},
        {"method": "HEAD", "path": "/buckets/b"},
    )
    assert [r["status"] for r in found] == [200, 200]
    assert [r["body"] for r in found] == ["", ""]
    assert found[0]["headers"]["Total-Objects"] == "1"


async def test_304_sub_response_stays_in_its_slot(client: httpx.AsyncClient) -> None:
    await seed(client)
    etag = (await client.get("/v1/buckets/b")).headers["ETag"]
    found = await responses_of(
        client,
        {"path": "/buckets/b", "headers": {"If-None-Match": etag}},
        {"method": "PUT", "path": "/buckets/other"},
    )
    assert [r["status"] for r in found] == [304, 201]
    assert found[0]["body"] == ""
    assert found[0]["headers"]["ETag"] == etag
    assert (await client.get("/v1/buckets/other")).status_code == 200


async def test_4xx_sub_errors_are_reported_in_place_and_do_not_abort(
    client: httpx.AsyncClient,
) -> None:
    await seed(client)
    found = await responses_of(
        client,
        {"method": "PUT", "path": "/buckets/b/collections/first"},
        {"path": "/buckets/b/collections/missing"},
        {"method": "PUT", "path": "/buckets/b/collections/c", "headers": {"If-Match": '"1"'}},
        {"method": "PUT", "path": "/buckets/b/collections/bad id"},
        {"path": "/unknown"},
        {"method": "PUT", "path": "/buckets/b/collections/last"},
    )
    assert [r["status"] for r in found] == [201, 404, 412, 400, 404, 201]
    assert found[1]["body"] == {
        "code": 404,
        "errno": 110,
        "error": "Not Found",
        "details": {"id": "missing", "resource_name": "collection"},
    }
    assert found[2]["body"]["errno"] == 114
    assert found[3]["body"]["errno"] == 107
    assert found[4]["body"]["errno"] == 111
    for cid in ("first", "last"):
        assert (await client.get(f"/v1/buckets/b/collections/{cid}")).status_code == 200


async def test_denied_sub_request_is_reported_in_place(client: httpx.AsyncClient) -> None:
    await seed(client)
    found = await responses_of(
        client,
        {"path": "/buckets/b", "headers": bob_header()},
        {"path": "/buckets/b"},
    )
    assert [r["status"] for r in found] == [403, 200]
    assert found[0]["body"]["errno"] == 121


async def test_anonymous_batch_gets_401_sub_responses(client: httpx.AsyncClient) -> None:
    await seed(client)
    response = await batch(client, {"requests": [{"path": "/buckets/b"}]}, auth=None)
    assert response.status_code == 200
    (found,) = response.json()["responses"]
    assert found["status"] == 401
    assert found["body"]["errno"] == 104
    assert found["headers"]["WWW-Authenticate"] == 'Basic realm="Realm"'


async def test_trailing_slash_redirect_is_followed(client: httpx.AsyncClient) -> None:
    await seed(client)
    (found,) = await responses_of(client, {"path": "/buckets/b/collections/"})
    assert found["status"] == 200
    assert found["path"] == "/v1/buckets/b/collections"
    assert [c["id"] for c in found["body"]["data"]] == ["c"]


async def test_non_ascii_path_is_accepted(client: httpx.AsyncClient) -> None:
    await seed(client)
    (found,) = await responses_of(client, {"path": "/buckets/b/collections/é"})
    assert found["status"] == 400
    assert found["path"] == "/v1/buckets/b/collections/é"


# -- defaults (07 §1) ---------------------------------------------------------------------


async def test_defaults_apply_to_every_request(client: httpx.AsyncClient) -> None:
    await seed(client)
    found = await responses_of(
        client,
        {"body": {"data": {"title": "one"}}},
        {"body": {"data": {"title": "two"}}},
        defaults={"method": "POST", "path": RECORDS},
    )
    assert [r["status"] for r in found] == [201, 201]
    assert [r["body"]["data"]["title"] for r in found] == ["one", "two"]


async def test_defaults_are_deep_merged_without_overwriting(client: httpx.AsyncClient) -> None:
    await seed(client)
    found = await responses_of(
        client,
        {"path": f"{RECORDS}/r1", "body": {"data": {"b": "mine"}}},
        {"path": f"{RECORDS}/r2", "method": "PUT", "headers": {"Response-Behavior": "full"}},
        defaults={
            "method": "PUT",
            "path": "/ignored",
            "headers": {"Response-Behavior": "light"},
            "body": {
                "data": {"a": "default", "b": "default"},
                "permissions": {"read": ["system.Everyone"]},
            },
        },
    )
    assert [r["status"] for r in found] == [201, 201]
    r1 = (await client.get(f"/v1{RECORDS}/r1")).json()
    assert {k: r1["data"][k] for k in ("a", "b")} == {"a": "default", "b": "mine"}
    assert r1["permissions"]["read"] == ["system.Everyone"]
    r2 = (await client.get(f"/v1{RECORDS}/r2")).json()
    assert {k: r2["data"][k] for k in ("a", "b")} == {"a": "default", "b": "default"}


async def test_default_headers_merge_with_request_headers(client: httpx.AsyncClient) -> None:
    await seed(client)
    etag = (await client.get("/v1/buckets/b")).headers["ETag"]
    found = await responses_of(
        client,
        {"path": "/buckets/b", "headers": {"If-None-Match": etag}},
        {"path": "/buckets/b", "headers": {"Authorization": "Basic Ym9iOnNlY3JldA=="}},
        defaults={"headers": {"If-None-Match": etag}},
    )
    assert [r["status"] for r in found] == [304, 403]


async def test_defaults_without_path_and_requests_without_path_is_400(
    client: httpx.AsyncClient,
) -> None:
    response = await batch(client, {"defaults": {"method": "GET"}, "requests": [{}]})
    assert_invalid(response)


# -- schema (07 §1) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"requests": [{"path": "/buckets", "unknown": 1}]},
        {"requests": [{"path": "/buckets"}], "extra": True},
        {"requests": [], "defaults": {"path": "/buckets", "foo": "bar"}},
        {"requests": [{"path": "/buckets", "method": "get"}]},
        {"requests": [{"path": "/buckets", "method": "OPTIONS"}]},
        {"requests": [{"path": "buckets"}]},
        {"requests": [{"path": 42}]},
        {"requests": [{"path": "/buckets", "headers": {"X-Count": 1}}]},
        {"requests": [{"path": "/buckets", "headers": ["a"]}]},
        {"requests": [{"method": "POST", "path": "/buckets", "body": [{"op": "add"}]}]},
        {"requests": [{"method": "POST", "path": "/buckets", "body": "text"}]},
        {"requests": ["/buckets"]},
        {"requests": {"path": "/buckets"}},
        {"defaults": {"path": "/buckets"}},
        {},
    ],
)
async def test_schema_is_strict(client: httpx.AsyncClient, body: Any) -> None:
    assert_invalid(await batch(client, body))


async def test_lowercase_method_message_names_the_field(client: httpx.AsyncClient) -> None:
    response = await batch(client, {"requests": [{"path": "/buckets", "method": "get"}]})
    assert_invalid(response)
    detail = response.json()["details"][0]
    assert detail["location"] == "body"
    assert detail["name"] == "requests.0.method"
    assert response.json()["message"].startswith("requests.0.method in body: ")


async def test_json_array_body_is_400_not_500(client: httpx.AsyncClient) -> None:
    response = await batch(client, [{"path": "/buckets"}])
    assert_invalid(response)


@pytest.mark.parametrize("raw", [b"null", b"42", b'"text"', b"{not json"])
async def test_non_object_body_is_400(client: httpx.AsyncClient, raw: bytes) -> None:
    response = await client.post(BATCH, content=raw, headers={"Content-Type": "application/json"})
    assert_invalid(response)


async def test_batch_needs_a_json_content_type(client: httpx.AsyncClient) -> None:
    response = await client.post(
        BATCH, content=b'{"requests": []}', headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    assert response.json()["errno"] == 107


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
async def test_other_methods_on_batch_are_405(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, BATCH)
    assert response.status_code == 405
    assert response.json()["errno"] == 115
    assert "POST" in response.headers["Allow"]


# -- limits and recursion (07 §1) -----------------------------------------------------------


async def test_more_than_25_requests_is_rejected(client: httpx.AsyncClient) -> None:
    response = await batch(client, {"requests": [{"path": "/"}] * 26})
    assert_invalid(response, "Number of requests is limited to 25")
    assert response.json()["details"][0]["location"] == "body"


async def test_exactly_25_requests_are_accepted(client: httpx.AsyncClient) -> None:
    found = await responses_of(client, *[{"path": "/__lbheartbeat__"}] * 25)
    assert [r["status"] for r in found] == [200] * 25
    assert [r["body"] for r in found] == [{}] * 25


async def test_batch_max_requests_setting_sets_the_limit(make_client: AppFactory) -> None:
    async with make_client(batch_max_requests=2) as client:
        root = await client.get("/v1/")
        assert root.json()["settings"]["batch_max_requests"] == 2
        response = await batch(client, {"requests": [{"path": "/"}] * 3})
        assert_invalid(response, "Number of requests is limited to 2")
        assert len(await responses_of(client, *[{"path": "/"}] * 2)) == 2


async def test_batch_max_requests_zero_disables_the_limit(make_client: AppFactory) -> None:
    async with make_client(batch_max_requests=0) as client:
        assert (await client.get("/v1/")).json()["settings"]["batch_max_requests"] is None
        assert len(await responses_of(client, *[{"path": "/__lbheartbeat__"}] * 40)) == 40


@pytest.mark.parametrize(
    "path", ["/batch", "/v1/batch", "/buckets/batch", "/buckets/b/collections?x=/batch"]
)
async def test_recursive_batch_is_forbidden(client: httpx.AsyncClient, path: str) -> None:
    response = await batch(client, {"requests": [{"method": "POST", "path": path}]})
    assert_invalid(response, "requests in body: Recursive call on /batch endpoint is forbidden.")


async def test_recursion_guard_applies_to_defaults_path(client: httpx.AsyncClient) -> None:
    response = await batch(client, {"defaults": {"path": "/batch"}, "requests": [{}]})
    assert_invalid(response)


# -- headers (07 §2) --------------------------------------------------------------------------


async def test_authorization_of_the_outer_request_is_inherited(
    client: httpx.AsyncClient,
) -> None:
    (found,) = await responses_of(client, {"method": "PUT", "path": "/buckets/b"})
    assert found["body"]["permissions"]["write"] == [userid(ALICE)]


async def test_sub_request_headers_override_the_outer_ones(client: httpx.AsyncClient) -> None:
    (found,) = await responses_of(
        client, {"method": "PUT", "path": "/buckets/b", "headers": bob_header()}
    )
    assert found["body"]["permissions"]["write"] == [userid(BOB)]


async def test_origin_of_the_outer_request_is_inherited(client: httpx.AsyncClient) -> None:
    response = await batch(
        client, {"requests": [{"path": "/"}]}, headers={"Origin": "http://example.com"}
    )
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    (found,) = response.json()["responses"]
    assert found["headers"]["Access-Control-Allow-Origin"] == "*"


async def test_outer_response_exposes_the_default_headers(client: httpx.AsyncClient) -> None:
    response = await batch(client, {"requests": [{"path": "/buckets"}]})
    assert response.headers["Access-Control-Expose-Headers"] == (
        "Backoff, Retry-After, Alert, Content-Length, Content-Type"
    )


# -- transaction (07 §4) ---------------------------------------------------------------------


async def test_sub_request_5xx_fails_the_whole_batch_and_rolls_back(
    make_client: AppFactory, tmp_path: Path
) -> None:
    # A corrupt version file makes GET /__version__ a genuine 500, no mock needed.
    broken = tmp_path / "version.json"
    broken.write_text("{ this is not json")
    async with make_client(version_json_path=str(broken)) as client:
        await client.put("/v1/buckets/b")
        response = await batch(
            client,
            {
                "requests": [
                    {"method": "PUT", "path": "/buckets/b/collections/c"},
                    {"method": "PATCH", "path": "/buckets/b", "body": {"data": {"x": 1}}},
                    {"path": "/__version__"},
                    {"method": "PUT", "path": "/buckets/after"},
                ]
            },
        )
        assert response.status_code == 500
        body = response.json()
        assert body["code"] == 500
        assert body["errno"] == 999
        assert "responses" not in body
        assert (await client.get("/v1/buckets/b/collections/c")).status_code == 404
        assert "x" not in (await client.get("/v1/buckets/b")).json()["data"]
        assert (await client.get("/v1/buckets/after")).status_code == 403


async def test_4xx_in_a_batch_keeps_previous_writes(client: httpx.AsyncClient) -> None:
    found = await responses_of(
        client,
        {"method": "PUT", "path": "/buckets/b"},
        {"method": "PUT", "path": "/buckets/b", "headers": {"If-None-Match": "*"}},
    )
    assert [r["status"] for r in found] == [201, 412]
    assert (await client.get("/v1/buckets/b")).status_code == 200


async def test_writes_are_visible_to_later_sub_requests(client: httpx.AsyncClient) -> None:
    found = await responses_of(
        client,
        {"method": "PUT", "path": "/buckets/b"},
        {"method": "PUT", "path": "/buckets/b/groups/g", "body": {"data": {"members": []}}},
        {
            "method": "PATCH",
            "path": "/buckets/b/groups/g",
            "body": {"data": {"members": [userid(BOB)]}},
        },
        {"path": "/buckets/b/groups"},
    )
    assert [r["status"] for r in found] == [201, 201, 200, 200]
    assert found[3]["body"]["data"][0]["members"] == [userid(BOB)]


async def test_readonly_rejects_batch_with_405(make_client: AppFactory) -> None:
    async with make_client(readonly=True) as client:
        response = await batch(client, {"requests": [{"path": "/"}]})
        assert response.status_code == 405
        assert response.json()["errno"] == 115


async def test_a_record_written_again_after_its_collection_was_deleted_in_the_batch(
    client: httpx.AsyncClient,
) -> None:
    """One transaction writes a record, deletes its collection (the record goes with it),
    makes the collection again and writes the record again: what the transaction read
    and wrote of the record before the delete is no reason for a conflict."""
    await seed(client)
    record = {"method": "PUT", "path": f"{RECORDS}/r", "body": {"data": {"v": 1}}}
    collection = "/buckets/b/collections/c"
    answers = await responses_of(
        client,
        record,
        {"method": "GET", "path": f"{RECORDS}/r"},
        {"method": "DELETE", "path": collection},
        {"method": "PUT", "path": collection},
        {**record, "body": {"data": {"v": 2}}},
        {"method": "PATCH", "path": f"{RECORDS}/r", "body": {"data": {"w": 3}}},
    )
    assert [a["status"] for a in answers] == [201, 200, 200, 201, 201, 200]
    final = await client.get(f"/v1{RECORDS}/r")
    assert final.status_code == 200
    assert {k: v for k, v in final.json()["data"].items() if k in "vw"} == {"v": 2, "w": 3}


async def test_creates_after_their_collection_or_the_grant_changed_in_the_batch(
    client: httpx.AsyncClient,
) -> None:
    """The creates of a batch read their collection and the caller's grant on it (once,
    on PostgreSQL, while nothing that read depends on is written): a create after the
    collection's delete is a 404, one after the caller left the group granting it a 403."""
    await seed(client)
    post = {"method": "POST", "path": RECORDS, "body": {"data": {"v": 1}}}
    collection = "/buckets/b/collections/c"
    answers = await responses_of(client, post, post, {"method": "DELETE", "path": collection}, post)
    assert [a["status"] for a in answers] == [201, 201, 200, 404]

    group = "/v1/buckets/b/groups/g"
    body = {"data": {"members": [userid(BOB)]}, "permissions": {"write": [userid(BOB)]}}
    assert (await client.put(group, json=body)).status_code == 201
    grant = {"permissions": {"write": ["/buckets/b/groups/g"]}}
    assert (await client.put(f"/v1{collection}", json=grant)).status_code == 201
    leave = {"method": "PATCH", "path": group[3:], "body": {"data": {"members": []}}}
    response = await batch(client, {"requests": [post, post, leave, post]}, auth=BOB)
    assert [a["status"] for a in response.json()["responses"]] == [201, 201, 200, 403]
