"""Bad input never gets a 5xx: random requests against the real app (DESIGN.md invariant 6)."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import AppFactory

SEGMENTS = st.sampled_from(
    ["b", "c", "r", "default", "*", "%00", "%ff", "..", "a b", "é", "x" * 300, "-bad", ""]
)
PATHS = st.builds(
    lambda template, a, b, c: template.format(a=a, b=b, c=c),
    st.sampled_from(
        [
            "/v1/buckets/{a}",
            "/v1/buckets/{a}/collections/{b}",
            "/v1/buckets/{a}/groups/{b}",
            "/v1/buckets/{a}/collections/{b}/records",
            "/v1/buckets/{a}/collections/{b}/records/{c}",
            "/v1/buckets",
            "/v1/batch",
            "/v1/{a}",
            "/{a}/{b}",
            "/v1/permissions",
        ]
    ),
    SEGMENTS,
    SEGMENTS,
    SEGMENTS,
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
BODIES = st.one_of(
    st.none(),
    st.builds(lambda d: {"data": d}, JSON_VALUES),
    st.builds(lambda p: {"permissions": p}, JSON_VALUES),
    st.builds(lambda r: {"requests": r}, JSON_VALUES),
    JSON_VALUES,
    st.sampled_from(["{", "[" * 5000 + "]" * 5000, '{"data": "\\u0000"}', "\xff"]),
)
HEADER_VALUES = st.sampled_from(['"1"', "*", "1", 'W/"1"', '"abc"', "", '"99999999999999999999"'])
QUERY = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "_since",
                "_before",
                "_limit",
                "_sort",
                "_token",
                "_fields",
                "in_id",
                "like_x",
                "has_x",
                "contains_x",
                "gt_last_modified",
                "last_modified",
                "x",
                "a.b",
                "\x00",
            ]
        ),
        st.sampled_from(["1", "-1", "abc", '"1"', "[1,2]", "{}", "1.5", "null", "a,b", "%"]),
    ),
    max_size=4,
)


@settings(
    max_examples=int(os.environ.get("NUAGES_FUZZ_EXAMPLES", "150")),
    deadline=None,
    derandomize="NUAGES_FUZZ_EXAMPLES" not in os.environ,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    path=PATHS,
    query=QUERY,
    body=BODIES,
    content_type=st.sampled_from(
        [
            None,
            "application/json",
            "application/merge-patch+json",
            "application/json-patch+json",
            "text/plain",
            "application/json; charset=nope",
        ]
    ),
    if_match=st.none() | HEADER_VALUES,
    if_none_match=st.none() | HEADER_VALUES,
)
async def test_no_request_gets_a_server_error(
    make_client: AppFactory,
    method: str,
    path: str,
    query: list[tuple[str, str]],
    body: Any,
    content_type: str | None,
    if_match: str | None,
    if_none_match: str | None,
) -> None:
    headers = {"Origin": "http://example.com", "Access-Control-Request-Method": "GET"}
    if content_type:
        headers["Content-Type"] = content_type
    if if_match is not None:
        headers["If-Match"] = if_match
    if if_none_match is not None:
        headers["If-None-Match"] = if_none_match
    content = body if isinstance(body, str) else (None if body is None else json.dumps(body))
    async with make_client(paginate_by=2) as client:
        await client.put("/v1/buckets/b")
        await client.put("/v1/buckets/b/collections/c")
        await client.put("/v1/buckets/b/collections/c/records/r", json={"data": {"x": 1}})
        response = await client.request(
            method, httpx.URL(path, params=query), content=content, headers=headers
        )
    assert response.status_code < 500, response.text
    if response.status_code >= 400 and method != "HEAD":
        error = response.json()
        assert error["code"] == response.status_code
        assert isinstance(error["errno"], int)
