"""protocol/01: URL prefix and version redirects, content types, JSON bodies, security headers."""

from __future__ import annotations

import httpx
import pytest

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; ",
    "X-Content-Type-Options": "nosniff",
}

JSON = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "text/plain"}

NOT_FOUND = {
    "code": 404,
    "errno": 111,
    "error": "Not Found",
    "message": "The resource you are looking for could not be found.",
}


# -- /v1 prefix and version redirection (01 §2) ------------------------------------------


async def test_root_is_served_under_v1_with_trailing_slash(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/")
    assert response.status_code == 200
    body = response.json()
    assert body["http_api_version"] == "1.23"
    assert body["url"].endswith("/v1/")


async def test_v1_without_slash_redirects_to_root(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1")
    assert response.status_code == 307
    assert response.headers["Location"] == "http://testserver/v1/"


async def test_unprefixed_path_redirects_to_v1_with_307(client: httpx.AsyncClient) -> None:
    response = await client.get("/buckets")
    assert response.status_code == 307
    assert response.headers["Location"] == "http://testserver/v1/buckets"
    assert response.content == b""


async def test_unprefixed_redirect_keeps_the_query_string(client: httpx.AsyncClient) -> None:
    response = await client.get("/buckets/b/collections?_limit=2&_sort=-last_modified")
    assert response.status_code == 307
    assert response.headers["Location"] == (
        "http://testserver/v1/buckets/b/collections?_limit=2&_sort=-last_modified"
    )


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "HEAD"])
async def test_unprefixed_redirect_applies_to_every_method(
    client: httpx.AsyncClient, method: str
) -> None:
    response = await client.request(method, "/buckets/b")
    assert response.status_code == 307
    assert response.headers["Location"] == "http://testserver/v1/buckets/b"


async def test_unprefixed_root_redirects_to_v1_root(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 307
    assert response.headers["Location"] == "http://testserver/v1/"


async def test_unprefixed_options_gets_empty_200_not_a_redirect(
    client: httpx.AsyncClient,
) -> None:
    response = await client.options("/buckets", headers={"Origin": "http://example.com"})
    assert response.status_code == 200
    assert "Location" not in response.headers


async def test_redirect_follows_to_the_prefixed_resource(client: httpx.AsyncClient) -> None:
    await client.put("/v1/buckets/b")
    response = await client.get("/buckets/b", follow_redirects=True)
    assert response.status_code == 200
    assert response.json()["data"]["id"] == "b"


async def test_other_version_prefix_is_404_errno_116(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/buckets")
    assert response.status_code == 404
    assert response.json() == {
        "code": 404,
        "errno": 116,
        "error": "Not Found",
        "message": "The requested API version is not available on this server.",
    }


async def test_other_version_prefix_is_not_redirected(client: httpx.AsyncClient) -> None:
    response = await client.put("/v0/buckets/b")
    assert response.status_code == 404
    assert response.json()["errno"] == 116
    assert "Location" not in response.headers


async def test_unknown_url_under_v1_is_404_errno_111(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/unknown")
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


async def test_unknown_nested_url_is_404_errno_111(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/buckets/b/collections/c/records/r/extra")
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


async def test_path_with_newline_is_not_redirected(client: httpx.AsyncClient) -> None:
    response = await client.get("/buckets%0Afoo")
    assert response.status_code == 404
    assert "Location" not in response.headers


async def test_version_redirect_can_be_disabled(make_client) -> None:
    async with make_client(version_prefix_redirect_enabled=False) as client:
        response = await client.get("/buckets")
    assert response.status_code == 404
    assert "Location" not in response.headers
    assert response.json()["code"] == 404


async def test_version_redirect_has_no_cache_headers_by_default(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/buckets")
    assert "Cache-Control" not in response.headers
    assert "Expires" not in response.headers


# -- trailing slash redirection (01 §2) ---------------------------------------------------


async def test_trailing_slash_redirects_to_path_without_it(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/buckets/")
    assert response.status_code == 307
    assert response.headers["Location"] == "http://testserver/v1/buckets"
    assert response.headers["Cache-Control"] == "max-age=3600"


async def test_trailing_slash_redirect_keeps_the_query_string(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/buckets/b/collections/?_since=12&_limit=3")
    assert response.status_code == 307
    assert response.headers["Location"] == (
        "http://testserver/v1/buckets/b/collections?_since=12&_limit=3"
    )


async def test_trailing_slash_redirect_on_object_url(client: httpx.AsyncClient) -> None:
    response = await client.put("/v1/buckets/b/")
    assert response.status_code == 307
    assert response.headers["Location"] == "http://testserver/v1/buckets/b"


async def test_trailing_slash_redirect_ttl_setting(make_client) -> None:
    async with make_client(trailing_slash_redirect_ttl_seconds=60) as client:
        response = await client.get("/v1/buckets/")
    assert response.status_code == 307
    assert response.headers["Cache-Control"] == "max-age=60"


async def test_trailing_slash_redirect_without_cache_headers(make_client) -> None:
    async with make_client(trailing_slash_redirect_ttl_seconds=-1) as client:
        response = await client.get("/v1/buckets/")
    assert response.status_code == 307
    assert "Cache-Control" not in response.headers


async def test_trailing_slash_redirect_can_be_disabled(make_client) -> None:
    async with make_client(trailing_slash_redirect_enabled=False) as client:
        response = await client.get("/v1/buckets/")
    assert response.status_code == 404
    assert response.json() == NOT_FOUND
    assert "Location" not in response.headers


async def test_unknown_url_with_trailing_slash_is_redirected_first(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/nothing/here/")
    assert response.status_code == 307
    assert response.headers["Location"] == "http://testserver/v1/nothing/here"


async def test_redirects_use_the_forced_scheme_and_host(make_client) -> None:
    async with make_client(http_scheme="https", http_host="kinto.example.com") as client:
        response = await client.get("/buckets?a=1")
    assert response.status_code == 307
    assert response.headers["Location"] == "https://kinto.example.com/v1/buckets?a=1"


# -- content types (01 §3, 08 §1) ---------------------------------------------------------


def _content_type_error(allowed: str) -> dict[str, object]:
    message = f"Content-Type header should be one of [{allowed}]"
    return {
        "code": 415,
        "errno": 107,
        "error": "Invalid parameters",
        "message": message,
        "details": [{"location": "header", "name": "Content-Type", "description": message}],
    }


@pytest.mark.parametrize(
    ("method", "url"),
    [("POST", "/v1/buckets"), ("PUT", "/v1/buckets/b")],
)
async def test_text_plain_body_is_415_on_post_and_put(
    client: httpx.AsyncClient, method: str, url: str
) -> None:
    response = await client.request(
        method, url, content=b'{"data": {}}', headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    assert response.json() == _content_type_error("'application/json'")


async def test_text_plain_body_is_415_on_patch_listing_three_types(
    client: httpx.AsyncClient,
) -> None:
    await client.put("/v1/buckets/b")
    response = await client.patch(
        "/v1/buckets/b", content=b'{"data": {"a": 1}}', headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    assert response.json() == _content_type_error(
        "'application/json', 'application/merge-patch+json', 'application/json-patch+json'"
    )


@pytest.mark.parametrize(
    ("method", "url"),
    [("POST", "/v1/buckets"), ("PUT", "/v1/buckets/b")],
)
async def test_text_plain_is_415_even_without_body(
    client: httpx.AsyncClient, method: str, url: str
) -> None:
    response = await client.request(method, url, headers=TEXT)
    assert response.status_code == 415
    assert response.json() == _content_type_error("'application/json'")


async def test_415_does_not_write(client: httpx.AsyncClient) -> None:
    await client.put(
        "/v1/buckets/b", content=b'{"data": {}}', headers={"Content-Type": "text/plain"}
    )
    assert (await client.get("/v1/buckets/b")).status_code == 403


async def test_json_with_charset_parameter_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/v1/buckets/b",
        content=b'{"data": {"a": 1}}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 201
    assert response.json()["data"]["a"] == 1


async def test_bodiless_put_without_content_type_creates(client: httpx.AsyncClient) -> None:
    response = await client.put("/v1/buckets/b")
    assert response.status_code == 201
    assert response.json()["data"]["id"] == "b"


async def test_bodiless_post_without_content_type_creates(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/buckets")
    assert response.status_code == 201


async def test_json_body_without_content_type_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.put("/v1/buckets/b", content=b'{"data": {"a": 1}}')
    assert response.status_code == 201
    assert response.json()["data"]["a"] == 1


async def test_accept_text_plain_is_406_on_resource_endpoints(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/buckets", headers={"Accept": "text/plain"})
    assert response.status_code == 406
    message = "Accept header should be one of ['application/json']"
    assert response.json() == {
        "code": 406,
        "errno": 107,
        "error": "Invalid parameters",
        "message": message,
        "details": [{"location": "header", "name": "Accept", "description": message}],
    }


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/v1/buckets/b"),
        ("PUT", "/v1/buckets/b"),
        ("POST", "/v1/buckets/b/collections"),
        ("GET", "/v1/buckets/b/collections/c/records"),
        ("DELETE", "/v1/buckets/b/groups/g"),
    ],
)
async def test_accept_text_plain_is_406_for_every_resource_method(
    client: httpx.AsyncClient, method: str, url: str
) -> None:
    response = await client.request(method, url, headers={"Accept": "text/plain"})
    assert response.status_code == 406
    assert response.json()["errno"] == 107


async def test_406_does_not_write(client: httpx.AsyncClient) -> None:
    await client.put("/v1/buckets/b", headers={"Accept": "text/html"})
    assert (await client.get("/v1/buckets/b")).status_code == 403


@pytest.mark.parametrize(
    "accept", ["application/json", "*/*", "application/*", "text/html, application/json;q=0.9"]
)
async def test_accept_allowing_json_is_fine(client: httpx.AsyncClient, accept: str) -> None:
    response = await client.get("/v1/buckets", headers={"Accept": accept})
    assert response.status_code == 200


@pytest.mark.parametrize("accept", ["text/plain", "text/html"])
async def test_root_ignores_accept(client: httpx.AsyncClient, accept: str) -> None:
    response = await client.get("/v1/", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.json()["http_api_version"] == "1.23"


async def test_responses_are_application_json(client: httpx.AsyncClient) -> None:
    response = await client.put("/v1/buckets/b")
    assert response.headers["Content-Type"].split(";")[0] == "application/json"
    error = await client.get("/v1/unknown")
    assert error.headers["Content-Type"].split(";")[0] == "application/json"


async def test_slash_is_not_escaped_in_responses(client: httpx.AsyncClient) -> None:
    response = await client.put("/v1/buckets/b", json={"data": {"url": "http://a/b"}})
    assert b'"http://a/b"' in response.content


# -- JSON bodies (01 §3) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"),
    [("PUT", "/v1/buckets/b"), ("POST", "/v1/buckets"), ("PATCH", "/v1/buckets/b")],
)
async def test_invalid_json_is_400_errno_107(
    client: httpx.AsyncClient, method: str, url: str
) -> None:
    await client.put("/v1/buckets/b")
    response = await client.request(
        method, url, content=b'{"data": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == 400
    assert body["errno"] == 107
    assert body["error"] == "Invalid parameters"
    assert body["message"].startswith("Invalid JSON")
    assert body["details"][0]["location"] == "body"
    assert body["details"][0]["description"].startswith("Invalid JSON")


async def test_invalid_json_does_not_write(client: httpx.AsyncClient) -> None:
    await client.put(
        "/v1/buckets/b", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert (await client.get("/v1/buckets/b")).status_code == 403


@pytest.mark.parametrize("body", [b"42", b'"text"', b"true", b"null"])
async def test_scalar_json_body_is_400(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.put(
        "/v1/buckets/b", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    payload = response.json()
    assert payload["errno"] == 107
    assert payload["error"] == "Invalid parameters"
    assert payload["details"][0]["location"] == "body"


async def test_string_json_body_message(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/buckets", content=b'"x"', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["message"] == "Should be a JSON object or an array"


async def test_array_body_on_put_is_400_not_500(client: httpx.AsyncClient) -> None:
    response = await client.put("/v1/buckets/b", json=[1, 2])
    assert response.status_code == 400
    assert response.json()["errno"] == 107


async def test_unknown_top_level_key_is_400(client: httpx.AsyncClient) -> None:
    response = await client.put("/v1/buckets/b", json={"data": {}, "extra": 1})
    assert response.status_code == 400
    body = response.json()
    assert body["errno"] == 107
    assert body["details"][0]["location"] == "body"
    assert body["details"][0]["name"] == "extra"


async def test_data_must_be_an_object(client: httpx.AsyncClient) -> None:
    response = await client.put("/v1/buckets/b", json={"data": ""})
    assert response.status_code == 400
    body = response.json()
    assert body["errno"] == 107
    assert body["details"][0]["name"] == "data"


async def test_non_ascii_is_returned_faithfully(client: httpx.AsyncClient) -> None:
    response = await client.put("/v1/buckets/b", json={"data": {"title": "café ☁"}})
    assert response.status_code == 201
    assert response.json()["data"]["title"] == "café ☁"


# -- security headers on every response (01 §3, 08 §2) ------------------------------------


def _assert_security_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.status_code)


async def test_security_headers_on_success_responses(client: httpx.AsyncClient) -> None:
    responses = [
        await client.get("/v1/"),
        await client.put("/v1/buckets/b"),
        await client.get("/v1/buckets/b"),
        await client.get("/v1/buckets"),
        await client.head("/v1/buckets"),
        await client.patch("/v1/buckets/b", json={"data": {"a": 1}}),
        await client.delete("/v1/buckets/b"),
    ]
    for response in responses:
        assert response.status_code < 300
        _assert_security_headers(response)


async def test_security_headers_on_redirects(client: httpx.AsyncClient) -> None:
    for url in ("/buckets", "/v1", "/v1/buckets/"):
        response = await client.get(url)
        assert response.status_code == 307
        _assert_security_headers(response)


async def test_security_headers_on_304(client: httpx.AsyncClient) -> None:
    created = await client.put("/v1/buckets/b")
    response = await client.get("/v1/buckets/b", headers={"If-None-Match": created.headers["ETag"]})
    assert response.status_code == 304
    _assert_security_headers(response)


async def test_security_headers_on_error_responses(client: httpx.AsyncClient) -> None:
    transport = httpx.ASGITransport(app=client.app)  # type: ignore[attr-defined]
    anonymous = httpx.AsyncClient(transport=transport, base_url="http://testserver")
    responses = [
        await client.get("/v1/unknown"),
        await client.get("/v2/buckets"),
        await client.put("/v1/buckets/b", content=b"{", headers=JSON),
        await client.put("/v1/buckets"),
        await client.get("/v1/buckets", headers={"Accept": "text/plain"}),
        await client.post("/v1/buckets", content=b"{}", headers=TEXT),
        await client.get("/v1/buckets/nope"),
        await anonymous.get("/v1/buckets/nope"),
        await client.get("/v1/buckets/b%2A"),
        await client.get("/v1/buckets?_limit=x"),
        await client.get("/v1/buckets?a=%FF"),
    ]
    await anonymous.aclose()
    statuses = [r.status_code for r in responses]
    assert statuses == [404, 404, 400, 405, 406, 415, 403, 401, 400, 400, 400]
    for response in responses:
        _assert_security_headers(response)
