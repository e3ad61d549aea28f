"""protocol/08: the error envelope, Backoff / Retry-After / Alert, end of service, cache
headers, CORS, readonly mode, body limits and encoding errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from tests.conftest import AppFactory

DEFAULT_EXPOSED = {"Backoff", "Retry-After", "Alert", "Content-Length", "Content-Type"}
OBJECT_EXPOSED = DEFAULT_EXPOSED | {"Last-Modified", "ETag", "Cache-Control", "Expires", "Pragma"}
PLURAL_EXPOSED = OBJECT_EXPOSED | {"Next-Page"}
HEAD_PLURAL_EXPOSED = PLURAL_EXPOSED | {"Total-Objects", "Total-Records"}
GONE = {
    "code": 410,
    "errno": 202,
    "error": "Gone",
    "message": "The service you are trying to connect no longer exists at this location.",
}
ORIGIN = {"Origin": "http://app.example.com"}


def exposed(response: httpx.Response) -> set[str]:
    return {h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")}


async def public_bucket(client: httpx.AsyncClient) -> None:
    public = {"permissions": {"read": ["system.Everyone"]}}
    response = await client.put("/v1/buckets/b", json=public)
    assert response.status_code == 201
    assert (await client.put("/v1/buckets/b/collections/c")).status_code == 201


# -- error envelope (08 §1) -------------------------------------------------------------------


async def test_envelope_without_message_for_a_missing_object(client: httpx.AsyncClient) -> None:
    await public_bucket(client)
    response = await client.get("/v1/buckets/b/collections/missing")
    assert response.status_code == 404
    assert response.json() == {
        "code": 404,
        "errno": 110,
        "error": "Not Found",
        "details": {"id": "missing", "resource_name": "collection"},
    }


async def test_envelope_without_details_for_plain_errors(client: httpx.AsyncClient) -> None:
    await public_bucket(client)
    response = await client.put("/v1/buckets/b", auth=None)
    assert response.status_code == 401
    body = response.json()
    assert set(body) == {"code", "errno", "error", "message"}
    assert None not in body.values()


async def test_envelope_of_a_precondition_failure(client: httpx.AsyncClient) -> None:
    await public_bucket(client)
    response = await client.put("/v1/buckets/b", headers={"If-Match": '"1"'})
    assert response.status_code == 412
    body = response.json()
    assert {k: body[k] for k in ("code", "errno", "error", "message")} == {
        "code": 412,
        "errno": 114,
        "error": "Precondition Failed",
        "message": "Resource was modified meanwhile",
    }
    assert set(body) <= {"code", "errno", "error", "message", "details"}


async def test_undefined_method_is_405_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/buckets/b")
    assert response.status_code == 405
    assert response.json() == {
        "code": 405,
        "errno": 115,
        "error": "Method Not Allowed",
        "message": "Method not allowed on this endpoint.",
    }
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert {"GET", "PUT", "PATCH", "DELETE"} <= allowed
    assert "POST" not in allowed


async def test_500_envelope_has_info(make_client: AppFactory, tmp_path: Path) -> None:
    broken = tmp_path / "version.json"
    broken.write_text("{ not json")
    async with make_client(
        version_json_path=str(broken), error_info_link="https://help.example.com/"
    ) as client:
        response = await client.get("/v1/__version__", headers=ORIGIN)
    assert response.status_code == 500
    assert response.json() == {
        "code": 500,
        "errno": 999,
        "error": "Internal Server Error",
        "message": "A programmatic error occurred, developers have been informed.",
        "info": "https://help.example.com/",
    }
    assert response.headers["Access-Control-Allow-Origin"] == "*"


# -- the message rule (08 §1) --------------------------------------------------------------


async def test_message_is_the_description_when_it_names_the_field(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/batch", json={"requests": [{"path": "/"}] * 26})
    body = response.json()
    assert body["details"] == [
        {
            "location": "body",
            "name": "requests",
            "description": "Number of requests is limited to 25",
        }
    ]
    assert body["message"] == "Number of requests is limited to 25"


async def test_message_is_name_in_location_otherwise(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/buckets", headers={"If-None-Match": "yesterday"})
    assert response.status_code == 400
    detail = response.json()["details"][0]
    assert (detail["location"], detail["name"]) == ("header", "If-None-Match")
    assert detail["name"] not in detail["description"]
    assert response.json()["message"] == f"If-None-Match in header: {detail['description']}"


async def test_message_is_location_and_description_without_a_name(
    make_client: AppFactory,
) -> None:
    async with make_client(max_json_depth=3) as client:
        response = await client.put("/v1/buckets/b", json={"data": {"a": {"b": {"c": 1}}}})
    assert response.status_code == 400
    (detail,) = response.json()["details"]
    assert detail["name"] is None
    assert response.json()["message"] == f"{detail['location']}: {detail['description']}"


async def test_invalid_json_message_is_the_bare_description(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/v1/buckets/b", content=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["message"].startswith("Invalid JSON")


# -- Backoff, Retry-After, Alert (08 §2) ---------------------------------------------------


async def test_backoff_is_sent_on_every_response(make_client: AppFactory) -> None:
    async with make_client(backoff=30) as client:
        created = await client.put("/v1/buckets/b")
        etag = created.headers["ETag"]
        responses = [
            created,
            await client.get("/v1/buckets/b"),
            await client.get("/v1/buckets/b", headers={"If-None-Match": etag}),
            await client.get("/v1/buckets/b", auth=None),
            await client.get("/v1/nowhere"),
            await client.get("/v1/"),
            await client.post("/v1/batch", json={"requests": []}),
        ]
    assert [r.status_code for r in responses] == [201, 200, 304, 401, 404, 200, 200]
    assert [r.headers.get("Backoff") for r in responses] == ["30"] * len(responses)


async def test_no_backoff_by_default(client: httpx.AsyncClient) -> None:
    assert "Backoff" not in (await client.get("/v1/")).headers


@pytest.mark.parametrize(("percentage", "expected"), [(0, None), (100, "5")])
async def test_backoff_percentage_bounds(
    make_client: AppFactory, percentage: int, expected: str | None
) -> None:
    async with make_client(backoff=5, backoff_percentage=percentage) as client:
        headers = [(await client.get("/v1/")).headers.get("Backoff") for _ in range(20)]
    assert headers == [expected] * 20


async def unreachable_database(client: httpx.AsyncClient, backend: str, tmp_path: Path) -> None:
    """Make the storage genuinely fail: replace the SQLite file by a directory."""
    if backend != "sqlite":
        pytest.skip("only a real database can be made unreachable without mocks")
    await client.app.state.backends.aclose()  # type: ignore[attr-defined]
    for leftover in tmp_path.glob("nuages.db*"):
        leftover.unlink()
    (tmp_path / "nuages.db").mkdir()


@pytest.mark.parametrize(("setting", "expected"), [({}, "3"), ({"retry_after_seconds": 7}, "7")])
async def test_backend_failure_is_503_with_retry_after(
    make_client: AppFactory,
    backend: str,
    tmp_path: Path,
    setting: dict[str, int],
    expected: str,
) -> None:
    async with make_client(**setting) as client:
        await client.put("/v1/buckets/b")
        await unreachable_database(client, backend, tmp_path)
        responses = [
            await client.get("/v1/buckets/b"),
            await client.put("/v1/buckets/c"),
            await client.post("/v1/batch", json={"requests": [{"path": "/buckets/b"}]}),
        ]
    for response in responses:
        assert response.status_code == 503
        assert response.json() == {
            "code": 503,
            "errno": 201,
            "error": "Service Unavailable",
            "message": "Service temporary unavailable due to overloading or maintenance, "
            "please retry later.",
        }
        assert response.headers["Retry-After"] == expected


async def test_no_retry_after_on_ordinary_errors(client: httpx.AsyncClient) -> None:
    for response in (await client.get("/v1/nowhere"), await client.put("/v1/x", auth=None)):
        assert "Retry-After" not in response.headers


async def test_soft_eol_alert_before_the_end_of_service(make_client: AppFactory) -> None:
    eos = date.today() + timedelta(days=10)
    async with make_client(
        eos=eos.isoformat(), eos_message="Moving soon", eos_url="https://new.example.com"
    ) as client:
        responses = [
            await client.get("/v1/"),
            await client.put("/v1/buckets/b"),
            await client.get("/v1/nowhere"),
        ]
    assert [r.status_code for r in responses] == [200, 201, 404]
    for response in responses:
        assert json.loads(response.headers["Alert"]) == {
            "code": "soft-eol",
            "message": "Moving soon",
            "url": "https://new.example.com",
        }


async def test_alert_url_defaults_to_project_docs(make_client: AppFactory) -> None:
    eos = date.today() + timedelta(days=10)
    async with make_client(eos=eos.isoformat(), project_docs="https://docs.example.com/") as c:
        alert = json.loads((await c.get("/v1/")).headers["Alert"])
    assert alert["url"] == "https://docs.example.com/"
    assert alert["code"] == "soft-eol"


async def test_no_alert_without_eos(client: httpx.AsyncClient) -> None:
    assert "Alert" not in (await client.get("/v1/")).headers


@pytest.mark.parametrize("days_ago", [0, 1, 365])  # the eos day itself is already past
async def test_past_end_of_service_is_410_everywhere(
    make_client: AppFactory, days_ago: int
) -> None:
    eos = date.today() - timedelta(days=days_ago)
    async with make_client(eos=eos.isoformat(), eos_message="Gone for good") as client:
        responses = [
            await client.get("/v1/"),
            await client.get("/v1/buckets", auth=None),
            await client.put("/v1/buckets/b"),
            await client.post("/v1/batch", json={"requests": [{"path": "/"}]}),
            await client.get("/v1/__heartbeat__"),
            await client.get("/v1/nowhere"),
        ]
    for response in responses:
        assert response.status_code == 410
        assert response.json() == GONE
        alert = json.loads(response.headers["Alert"])
        assert alert["code"] == "hard-eol"
        assert alert["message"] == "Gone for good"


# -- cache headers (08 §3) ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/v1/buckets",
        "/v1/buckets/b",
        "/v1/buckets/b/collections",
        "/v1/buckets/b/collections/c",
        "/v1/buckets/b/collections/c/records",
    ],
)
async def test_authenticated_reads_are_not_cacheable(client: httpx.AsyncClient, url: str) -> None:
    await public_bucket(client)
    for response in (await client.get(url), await client.head(url)):
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-cache, no-store"
        assert "Expires" not in response.headers


async def test_anonymous_reads_without_cache_settings_are_not_cacheable(
    client: httpx.AsyncClient,
) -> None:
    await public_bucket(client)
    response = await client.get("/v1/buckets/b/collections/c/records", auth=None)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-cache, no-store"


async def test_writes_have_no_cache_headers(client: httpx.AsyncClient) -> None:
    response = await client.put("/v1/buckets/b")
    assert response.status_code == 201
    assert "Cache-Control" not in response.headers


# -- CORS (08 §4) -----------------------------------------------------------------------------


async def test_allow_origin_star_when_origin_is_sent(client: httpx.AsyncClient) -> None:
    await public_bucket(client)
    for response in (
        await client.get("/v1/buckets/b", headers=ORIGIN),
        await client.get("/v1/buckets/b", headers=ORIGIN, auth=None),
        await client.put("/v1/buckets/x", headers=ORIGIN, auth=None),
        await client.get("/v1/buckets/b/collections/missing", headers=ORIGIN),
        await client.get("/v1/", headers=ORIGIN),
    ):
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Allow-Credentials" not in response.headers


async def test_no_allow_origin_without_origin(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/buckets")
    assert "Access-Control-Allow-Origin" not in response.headers
    assert exposed(response) >= DEFAULT_EXPOSED


async def test_expose_headers_per_endpoint(client: httpx.AsyncClient) -> None:
    await public_bucket(client)
    assert exposed(await client.get("/v1/buckets/b/collections")) >= PLURAL_EXPOSED
    assert exposed(await client.head("/v1/buckets/b/collections")) >= HEAD_PLURAL_EXPOSED
    assert exposed(await client.get("/v1/buckets/b")) >= OBJECT_EXPOSED
    for response in (
        await client.put("/v1/buckets/x"),
        await client.get("/v1/"),
        await client.get("/v1/__heartbeat__"),
        await client.post("/v1/batch", json={"requests": []}),
        await client.get("/v1/nowhere"),
        await client.get("/v1/buckets/b", auth=None),
    ):
        assert exposed(response) >= DEFAULT_EXPOSED, response.url


async def test_restricted_origins_echo_a_matching_origin(make_client: AppFactory) -> None:
    async with make_client(cors_origins=["https://*.example.com"]) as client:
        response = await client.get("/v1/", headers={"Origin": "https://app.example.com"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"


async def test_restricted_origins_reject_a_foreign_origin(make_client: AppFactory) -> None:
    async with make_client(cors_origins=["https://*.example.com"]) as client:
        await client.put("/v1/buckets/b")
        foreign = {"Origin": "https://evil.test"}
        responses = [
            await client.get("/v1/buckets/b", headers=foreign),
            await client.put("/v1/buckets/c", headers=foreign),
            await client.get("/v1/", headers=foreign),
        ]
        assert (await client.get("/v1/buckets/c")).status_code == 403  # never created
        unknown = await client.get("/v1/nowhere", headers=foreign)
    for response in responses:
        assert response.status_code == 400
        assert response.json() == {
            "code": 400,
            "errno": 107,
            "error": "Invalid parameters",
            "message": "Origin in header: https://evil.test not allowed",
            "details": [
                {
                    "location": "header",
                    "name": "Origin",
                    "description": "https://evil.test not allowed",
                }
            ],
        }
        assert "Access-Control-Allow-Origin" not in response.headers
    assert unknown.status_code == 404
    assert "Access-Control-Allow-Origin" not in unknown.headers


async def test_preflight(client: httpx.AsyncClient) -> None:
    response = await client.options(
        "/v1/buckets/b/collections/c/records/r",
        headers={
            **ORIGIN,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "Authorization, If-Match, X-Custom",
        },
        auth=None,
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "PUT", "PATCH", "DELETE"} <= methods
    assert "POST" not in methods
    allowed = {
        h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"authorization", "if-match", "x-custom"} <= allowed
    assert response.headers["Access-Control-Max-Age"] == "3600"


async def test_preflight_needs_no_authentication_on_protected_routes(
    client: httpx.AsyncClient,
) -> None:
    await client.put("/v1/buckets/private")
    for url, method in (
        ("/v1/buckets/private", "DELETE"),
        ("/v1/buckets", "POST"),
        ("/v1/batch", "POST"),
        ("/v1/buckets/private/collections", "GET"),
    ):
        response = await client.options(
            url, headers={**ORIGIN, "Access-Control-Request-Method": method}, auth=None
        )
        assert response.status_code == 200, url
        assert "WWW-Authenticate" not in response.headers


@pytest.mark.parametrize(
    "headers",
    [
        {"Access-Control-Request-Method": "GET"},
        {"Origin": "http://app.example.com"},
        {"Origin": "http://app.example.com", "Access-Control-Request-Method": "POST"},
        {"Origin": "http://app.example.com", "Access-Control-Request-Method": "TELEPORT"},
    ],
)
async def test_preflight_without_required_headers_is_400(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.options("/v1/buckets/b", headers=headers, auth=None)
    assert response.status_code == 400
    body = response.json()
    assert body["errno"] == 107
    assert body["details"][0]["location"] == "header"


async def test_preflight_from_a_disallowed_origin_is_400(make_client: AppFactory) -> None:
    async with make_client(cors_origins=["https://app.example.com"]) as client:
        response = await client.options(
            "/v1/buckets",
            headers={"Origin": "https://evil.test", "Access-Control-Request-Method": "GET"},
        )
    assert response.status_code == 400
    assert response.json()["details"][0]["name"] == "Origin"


@pytest.mark.parametrize(("setting", "expected"), [(60, "60"), (None, None)])
async def test_preflight_max_age_setting(
    make_client: AppFactory, setting: int | None, expected: str | None
) -> None:
    async with make_client(cors_max_age_seconds=setting) as client:
        response = await client.options(
            "/v1/buckets", headers={**ORIGIN, "Access-Control-Request-Method": "GET"}
        )
    assert response.status_code == 200
    assert response.headers.get("Access-Control-Max-Age") == expected


# -- readonly mode (08 §5) ------------------------------------------------------------------


async def test_readonly_rejects_every_write(make_client: AppFactory) -> None:
    async with make_client(readonly=True) as client:
        responses = [
            await client.put("/v1/buckets/b"),
            await client.post("/v1/buckets", json={}),
            await client.patch("/v1/buckets/b", json={"data": {}}),
            await client.delete("/v1/buckets/b"),
            await client.delete("/v1/buckets"),
            await client.post("/v1/batch", json={"requests": [{"path": "/"}]}),
            await client.put("/v1/buckets/b", auth=None),
        ]
        for response in responses:
            assert response.status_code == 405
            assert response.json() == {
                "code": 405,
                "errno": 115,
                "error": "Method Not Allowed",
                "message": "Method not allowed on this endpoint.",
            }
        assert (await client.get("/v1/buckets")).status_code == 200
        assert (await client.get("/v1/")).json()["settings"]["readonly"] is True
        preflight = await client.options(
            "/v1/buckets", headers={**ORIGIN, "Access-Control-Request-Method": "GET"}
        )
        assert preflight.status_code == 200


# -- body limits (08, 12 §D) ------------------------------------------------------------


async def test_body_over_the_size_limit_is_413(make_client: AppFactory) -> None:
    async with make_client(max_request_body_bytes=100) as client:
        response = await client.put("/v1/buckets/b", json={"data": {"x": "a" * 200}})
        assert (await client.put("/v1/buckets/b", json={"data": {"x": 1}})).status_code == 201
    assert response.status_code == 413
    body = response.json()
    assert body["code"] == 413
    assert body["errno"] == 113
    assert isinstance(body["error"], str)
    assert "100" in body["message"]
    assert None not in body.values()


async def test_streamed_body_over_the_size_limit_is_413(make_client: AppFactory) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"data": {"x": "'
        for _ in range(50):
            yield b"a" * 10
        yield b'"}}'

    async with make_client(max_request_body_bytes=100) as client:
        response = await client.put(
            "/v1/buckets/b", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert (await client.get("/v1/buckets/b")).status_code == 403  # not created
    assert response.status_code == 413
    assert response.json()["errno"] == 113


async def test_batch_body_over_the_size_limit_is_413(make_client: AppFactory) -> None:
    async with make_client(max_request_body_bytes=200) as client:
        response = await client.post("/v1/batch", json={"requests": [{"path": "/buckets"}] * 20})
    assert response.status_code == 413


async def test_json_deeper_than_the_limit_is_400(make_client: AppFactory) -> None:
    def nested(levels: int) -> dict[str, object]:
        value: dict[str, object] = {}
        for _ in range(levels):
            value = {"a": value}
        return value

    async with make_client(max_json_depth=10) as client:
        ok = await client.put("/v1/buckets/b", json={"data": nested(8)})
        too_deep = await client.put("/v1/buckets/c", json={"data": nested(20)})
        batched = await client.post(
            "/v1/batch",
            json={
                "requests": [{"method": "PUT", "path": "/buckets/d", "body": {"data": nested(20)}}]
            },
        )
    assert ok.status_code == 201
    assert too_deep.status_code == 400
    assert too_deep.json()["errno"] == 107
    assert batched.status_code == 400


@pytest.mark.parametrize(
    ("url", "method", "template"),
    [
        ("/v1/buckets/b", "PUT", b'{"data": {"x": %s}}'),
        ("/v1/buckets/b", "PUT", b"%s"),
        ("/v1/buckets/b", "PATCH", b'{"data": {"x": %s}}'),
        ("/v1/batch", "POST", b'{"requests": %s}'),
        ("/v1/buckets", "POST", b'{"data": %s}'),
    ],
)
@pytest.mark.parametrize("brackets", [(b"[", b"]"), (b'{"a":', b"}")])
async def test_extremely_deep_json_is_4xx_never_5xx(
    client: httpx.AsyncClient,
    url: str,
    method: str,
    template: bytes,
    brackets: tuple[bytes, bytes],
) -> None:
    await client.put("/v1/buckets/b")
    opening, closing = brackets
    deep = opening * 100_000 + (b"1" if opening != b"[" else b"") + closing * 100_000
    response = await client.request(
        method, url, content=template % deep, headers={"Content-Type": "application/json"}
    )
    assert 400 <= response.status_code < 500
    assert response.json()["errno"] == 107


# -- encoding errors (08 §1) ----------------------------------------------------------------


async def test_invalid_utf8_in_the_path_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/buckets/%ff%fe", headers=ORIGIN)
    assert response.status_code == 400
    assert response.json() == {
        "code": 400,
        "errno": 107,
        "error": "Bad Request",
        "message": "Invalid URL path.",
    }
    assert response.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("query", ["foo%e2%fc%a7bar=1", "_sort=%ff", "%c3=x"])
async def test_invalid_utf8_in_the_querystring_is_400(
    client: httpx.AsyncClient, query: str
) -> None:
    response = await client.get(f"/v1/buckets?{query}")
    assert response.status_code == 400
    body = response.json()
    assert {k: body[k] for k in ("code", "errno", "error")} == {
        "code": 400,
        "errno": 107,
        "error": "Bad Request",
    }
    assert body["message"].startswith(
        "A request with an incorrect encoding in the querystring was received. "
        "Please make sure your requests are encoded in UTF-8"
    )
    assert "wasreceived" not in body["message"]


# -- collection cache_expires (08 §3) -----------------------------------------------------------


async def _public_collection(client: httpx.AsyncClient, expires: int) -> str:
    await client.put("/v1/buckets/pub", json={"permissions": {"read": ["system.Everyone"]}})
    url = "/v1/buckets/pub/collections/c"
    await client.put(url, json={"data": {"cache_expires": expires}})
    await client.put(f"{url}/records/r1", json={"data": {"x": 1}})
    return url


async def test_anonymous_record_reads_honour_cache_expires(client: httpx.AsyncClient) -> None:
    url = await _public_collection(client, 3600)
    for path in (f"{url}/records", f"{url}/records/r1"):
        response = await client.get(path, auth=None)
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "max-age=3600"
        assert "Expires" in response.headers
        # Authenticated callers are never served cacheable answers.
        assert (await client.get(path)).headers["Cache-Control"] == "no-cache, no-store"


async def test_cache_expires_zero_forbids_caching(client: httpx.AsyncClient) -> None:
    url = await _public_collection(client, 0)
    response = await client.get(f"{url}/records", auth=None)
    assert response.headers["Cache-Control"] == "max-age=0, must-revalidate, no-cache, no-store"
    assert response.headers["Pragma"] == "no-cache"
