"""Filtering, sorting, pagination and ``_fields`` over HTTP (protocol/05)."""

from __future__ import annotations

import base64
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest

RECORDS = "/v1/buckets/b/collections/c/records"

#: Records covering every value type, missing fields, nested objects and arrays.
DATA = {
    "r1": {"n": 1, "s": "Mozilla Firefox", "flag": True, "tags": ["a", "b"], "o": {"x": 1}},
    "r2": {"n": 2, "s": "mozilla thunderbird", "flag": False, "tags": ["b"], "o": {"x": 2}},
    "r3": {"n": "2", "s": "Opera", "tags": [], "o": {"x": {"deep": 1}}},
    "r4": {"n": None, "s": 10, "tags": "a", "o": "flat"},
    "r5": {"n": 3.5, "tags": [{"k": 1}, "a"], "o": {}},
    "r6": {},
}


@pytest.fixture
async def records(client):
    assert (await client.put("/v1/buckets/b")).status_code == 201
    assert (await client.put("/v1/buckets/b/collections/c")).status_code == 201
    return RECORDS


@pytest.fixture
async def dataset(client, records):
    """The DATA records, created in order r1..r6 (r6 newest)."""
    for rid, data in DATA.items():
        r = await client.put(f"{records}/{rid}", json={"data": data})
        assert r.status_code == 201
    return records


def ids_of(response):
    assert response.status_code == 200, response.text
    return [o["id"] for o in response.json()["data"]]


async def found(client, **params):
    """Ids matching, in creation order (sorted by last_modified ascending)."""
    return ids_of(await client.get(RECORDS, params={**params, "_sort": "last_modified"}))


async def bad_request(client, url=RECORDS, method="GET", **params):
    r = await client.request(method, url, params=params)
    assert r.status_code == 400, r.text
    body = r.json()
    assert (body["code"], body["errno"], body["error"]) == (400, 107, "Invalid parameters")
    (detail,) = body["details"]
    assert detail["location"] == "querystring"
    return body


# -- §2 filters: value typing ---------------------------------------------------------------------


async def test_equality_is_json_typed(client, dataset):
    assert await found(client, n="2") == ["r2"]
    assert await found(client, n='"2"') == ["r3"]
    assert await found(client, n="3.5") == ["r5"]
    assert await found(client, n="null") == ["r4"]
    assert await found(client, flag="true") == ["r1"]
    assert await found(client, flag="false") == ["r2"]
    assert await found(client, s="Opera") == ["r3"]
    assert await found(client, s="10") == ["r4"]
    assert await found(client, s='"10"') == []


async def test_equality_on_arrays_and_objects_is_whole_value(client, dataset):
    assert await found(client, tags='["a","b"]') == ["r1"]
    assert await found(client, tags='["b","a"]') == []
    assert await found(client, tags="[]") == ["r3"]
    assert await found(client, o='{"x": 1}') == ["r1"]
    assert await found(client, o="{}") == ["r5"]


async def test_eq_prefix_is_equality(client, dataset):
    assert await found(client, eq_n="1") == ["r1"]


async def test_eq_prefix_reaches_fields_named_like_operators(client, records):
    await client.put(f"{records}/x", json={"data": {"in_stock": True, "stock": 1}})
    assert await found(client, eq_in_stock="true") == ["x"]
    assert await found(client, in_stock="1") == ["x"]


async def test_name_with_dash_is_a_literal_equality_filter(client, records):
    await client.put(f"{records}/x", json={"data": {"my-field": 1, "not_x-y": 2}})
    assert await found(client, **{"my-field": "1"}) == ["x"]
    assert await found(client, **{"not_x-y": "2"}) == ["x"]


async def test_filters_are_combined_with_and(client, dataset):
    assert await found(client, flag="true", n="1") == ["r1"]
    assert await found(client, flag="true", n="2") == []


async def test_id_filters_are_strings(client, records):
    for rid in ("1", "2", "abc"):
        await client.put(f"{records}/{rid}", json={"data": {}})
    assert await found(client, id="1") == ["1"]
    assert await found(client, id='"1"') == []  # the id is 1, not "1" with quotes
    assert await found(client, in_id='"1","abc"') == ["1", "abc"]
    assert await found(client, exclude_id='"1","abc"') == ["2"]
    assert await found(client, not_id="abc") == ["1", "2"]


async def test_in_id_with_numbers_is_400(client, records):
    body = await bad_request(client, in_id="1,2")
    assert body["message"] == "Invalid value for in_id"
    assert body["details"] == [
        {"location": "querystring", "name": "in_id", "description": "Invalid value for in_id"}
    ]


@pytest.mark.parametrize("name", ["contains_id", "contains_any_id"])
async def test_contains_on_id_is_400(client, records, name):
    body = await bad_request(client, **{name: '"a"'})
    assert body["details"][0]["description"] == "Field 'id' is not an array"


# -- §2 filters: each operator and the missing-field table ----------------------------------------


async def test_not_matches_missing_fields(client, dataset):
    assert await found(client, not_n="1") == ["r2", "r3", "r4", "r5", "r6"]
    assert await found(client, not_flag="true") == ["r2", "r3", "r4", "r5", "r6"]


async def test_in_splits_commas_and_types_each_value(client, dataset):
    assert await found(client, in_n='1,"2",null') == ["r1", "r3", "r4"]
    assert await found(client, in_n="2,3.5") == ["r2", "r5"]


async def test_exclude_matches_missing_fields(client, dataset):
    assert await found(client, exclude_n="1,2") == ["r3", "r4", "r5", "r6"]


async def test_lt_gt_min_max(client, dataset):
    # numbers: 1, 2, 3.5; "2" is a string (below numbers); null is lowest; r6 is missing.
    assert await found(client, gt_n="1") == ["r2", "r5", "r6"]
    assert await found(client, min_n="2") == ["r2", "r5", "r6"]
    assert await found(client, lt_n="2") == ["r1", "r3", "r4"]
    assert await found(client, max_n="2") == ["r1", "r2", "r3", "r4"]
    assert await found(client, min_n="1", max_n="2") == ["r1", "r2"]


async def test_lt_and_max_never_match_missing_fields(client, dataset):
    assert "r6" not in await found(client, lt_n="100")
    assert "r6" not in await found(client, max_n="100")


async def test_gt_and_min_on_strings(client, dataset):
    assert await found(client, gt_s='"Opera"') == ["r2", "r4", "r5", "r6"]
    assert await found(client, min_s='"mozilla"') == ["r2", "r4", "r5", "r6"]


async def test_like_is_a_case_insensitive_substring(client, dataset):
    assert await found(client, like_s="MOZ") == ["r1", "r2"]
    assert await found(client, like_s="fire") == ["r1"]


async def test_like_wildcards(client, dataset):
    assert await found(client, like_s="moz*") == ["r1", "r2"]
    assert await found(client, like_s="*bird") == ["r2"]
    assert await found(client, like_s="*fire") == []
    assert await found(client, like_s="o*a") == ["r3"]
    assert await found(client, like_s="m*x") == ["r1"]


async def test_like_never_matches_non_strings_and_missing(client, dataset):
    assert await found(client, like_s='"10"') == []
    assert await found(client, like_n='"1"') == []
    assert await found(client, like_tags='"b"') == []


async def test_like_with_a_number_is_400(client, records):
    body = await bad_request(client, like_s="10")
    assert body["details"][0] == {
        "location": "querystring",
        "name": "like_s",
        "description": "Invalid value for like_s",
    }


async def test_has_checks_presence(client, dataset):
    assert await found(client, has_n="true") == ["r1", "r2", "r3", "r4", "r5"]
    assert await found(client, has_n="1") == ["r1", "r2", "r3", "r4", "r5"]
    assert await found(client, has_n="false") == ["r6"]
    assert await found(client, has_n="0") == ["r6"]
    assert await found(client, has_flag="true") == ["r1", "r2"]


async def test_has_is_anded_with_other_filters(client, dataset):
    assert await found(client, flag="true", has_n="true") == ["r1"]
    assert await found(client, has_n="true", flag="true") == ["r1"]
    assert await found(client, has_flag="false", has_n="true") == ["r3", "r4", "r5"]


async def test_contains_all_values(client, dataset):
    assert await found(client, contains_tags='["a","b"]') == ["r1"]
    assert await found(client, contains_tags='"b"') == ["r1", "r2"]
    assert await found(client, contains_tags="a") == ["r1", "r5"]
    assert await found(client, contains_tags='{"k":1}') == ["r5"]
    assert await found(client, contains_tags='[{"k":1},"a"]') == ["r5"]


async def test_contains_any_value(client, dataset):
    assert await found(client, contains_any_tags='["b",{"k":1}]') == ["r1", "r2", "r5"]
    assert await found(client, contains_any_tags='["z"]') == []


async def test_contains_does_not_split_commas(client, records):
    await client.put(f"{records}/x", json={"data": {"tags": ["a,b"]}})
    await client.put(f"{records}/y", json={"data": {"tags": ["a", "b"]}})
    assert await found(client, contains_tags="a,b") == ["x"]


async def test_contains_on_a_non_array_never_matches(client, dataset):
    assert "r4" not in await found(client, contains_tags='"a"')
    assert "r4" not in await found(client, contains_any_tags='"a"')


async def test_dotted_fields(client, dataset):
    assert await found(client, **{"o.x": "1"}) == ["r1"]
    assert await found(client, **{"min_o.x": "2"}) == ["r2", "r3", "r4", "r5", "r6"]
    assert await found(client, **{"o.x.deep": "1"}) == ["r3"]
    assert await found(client, **{"has_o.x": "true"}) == ["r1", "r2", "r3"]
    assert await found(client, **{"not_o.x": "1"}) == ["r2", "r3", "r4", "r5", "r6"]


async def test_dotted_field_through_a_non_object_does_not_match(client, dataset):
    assert await found(client, **{"o.x": '"flat"'}) == []
    assert await found(client, **{"s.x": "1"}) == []


async def test_unknown_fields_match_nothing(client, dataset):
    assert await found(client, nope="1") == []
    assert await found(client, not_nope="1") == ["r1", "r2", "r3", "r4", "r5", "r6"]


async def test_unknown_underscore_parameters_are_ignored(client, dataset):
    everything = ["r1", "r2", "r3", "r4", "r5", "r6"]
    assert await found(client, _expected="12345") == everything
    assert await found(client, _count="1", _whatever="x") == everything


async def test_filter_names_are_stripped(client, dataset):
    assert await found(client, **{" n ": "1"}) == ["r1"]


async def test_filters_apply_to_head_counts(client, dataset):
    r = await client.head(RECORDS, params={"like_s": "moz"})
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["Total-Objects"] == r.headers["Total-Records"] == "2"
    r = await client.head(RECORDS)
    assert r.headers["Total-Objects"] == "6"
    r = await client.head(RECORDS, params={"nope": "1"})
    assert r.headers["Total-Objects"] == "0"


async def test_head_ignores_limit(client, dataset):
    r = await client.head(RECORDS, params={"_limit": "2"})
    assert r.headers["Total-Objects"] == "6"
    assert "Next-Page" not in r.headers


async def test_filters_apply_to_plural_delete(client, dataset):
    r = await client.delete(RECORDS, params={"contains_tags": '"b"'})
    assert sorted(ids_of(r)) == ["r1", "r2"]
    assert all(t["deleted"] for t in r.json()["data"])
    assert await found(client) == ["r3", "r4", "r5", "r6"]


async def test_plural_delete_with_since_ignores_tombstones(client, dataset):
    await client.delete(f"{RECORDS}/r1")
    r = await client.delete(RECORDS, params={"_since": 0, "like_s": "moz"})
    assert ids_of(r) == ["r2"]
    assert r.json()["data"][0]["deleted"] is True


async def test_last_modified_filter_not_a_number_is_400(client, records):
    body = await bad_request(client, last_modified="abc")
    assert body["message"] == 'last_modified in querystring: "abc" is not a number'


@pytest.mark.parametrize(
    "name", ["in_last_modified", "exclude_last_modified", "contains_last_modified"]
)
async def test_unusable_last_modified_filters_are_400(client, records, name):
    body = await bad_request(client, **{name: "1,2"})
    assert body["details"][0]["name"] == name


async def test_last_modified_filter_accepts_quotes(client, dataset):
    r1 = (await client.get(f"{RECORDS}/r1")).json()["data"]
    r = await client.get(RECORDS, params={"last_modified": f'"{r1["last_modified"]}"'})
    assert ids_of(r) == ["r1"]


@pytest.mark.parametrize(
    ("name", "value"), [("ti\x00tle", "a"), ("title", "a\x00b"), ("_sort", "\x00")]
)
async def test_nul_in_a_parameter_is_400(client, records, name, value):
    body = await bad_request(client, **{name: value})
    assert body["details"][0]["description"] == "Invalid character 0x00"


async def test_nul_percent_encoded_is_400(client, records):
    r = await client.get(f"{RECORDS}?title=a%00b")
    assert r.status_code == 400
    assert r.json()["details"][0]["description"] == "Invalid character 0x00"


async def test_invalid_utf8_querystring_is_400(client, records):
    r = await client.get(f"{RECORDS}?title=%ff")
    assert r.status_code == 400
    body = r.json()
    assert (body["errno"], body["error"]) == (107, "Bad Request")
    assert body["message"].startswith(
        "A request with an incorrect encoding in the querystring was received. "
        "Please make sure your requests are encoded in UTF-8"
    )


# -- §3 sorting -----------------------------------------------------------------------------------


async def sorted_ids(client, sort):
    return ids_of(await client.get(RECORDS, params={"_sort": sort}))


async def test_default_order_is_newest_first(client, dataset):
    assert ids_of(await client.get(RECORDS)) == ["r6", "r5", "r4", "r3", "r2", "r1"]


async def test_sort_mixed_types_with_missing_last_ascending(client, dataset):
    # null < "2" < 1 < 2 < 3.5 < missing
    assert await sorted_ids(client, "n") == ["r4", "r3", "r1", "r2", "r5", "r6"]


async def test_sort_descending_puts_missing_first(client, dataset):
    assert await sorted_ids(client, "-n") == ["r6", "r5", "r2", "r1", "r3", "r4"]


async def test_sort_booleans(client, dataset):
    # false < true < missing; ties broken by -last_modified
    assert await sorted_ids(client, "flag") == ["r2", "r1", "r6", "r5", "r4", "r3"]
    assert await sorted_ids(client, "-flag") == ["r6", "r5", "r4", "r3", "r1", "r2"]


async def test_sort_strings_are_case_sensitive_code_point_order(client, dataset):
    assert await sorted_ids(client, "s") == ["r1", "r3", "r2", "r4", "r6", "r5"]


async def test_sort_multi_field(client, records):
    rows = [("a", 2), ("b", 1), ("c", 2), ("d", 1)]
    for rid, group in rows:
        await client.put(f"{records}/{rid}", json={"data": {"g": group, "name": rid}})
    assert await sorted_ids(client, "g,-name") == ["d", "b", "c", "a"]
    assert await sorted_ids(client, "-g,name") == ["a", "c", "b", "d"]


async def test_sort_tie_breaker_is_newest_first(client, records):
    for rid in ("a", "b", "c"):
        await client.put(f"{records}/{rid}", json={"data": {"g": 1}})
    assert await sorted_ids(client, "g") == ["c", "b", "a"]
    assert await sorted_ids(client, "-g") == ["c", "b", "a"]


async def test_explicit_last_modified_ascending(client, dataset):
    assert await sorted_ids(client, "last_modified") == ["r1", "r2", "r3", "r4", "r5", "r6"]


async def test_sort_by_id_and_dotted_field(client, dataset):
    assert await sorted_ids(client, "-id") == ["r6", "r5", "r4", "r3", "r2", "r1"]
    # o.x: 1, 2, {"deep": 1} (object), then missing (r4, r5, r6 newest first)
    assert await sorted_ids(client, "o.x") == ["r1", "r2", "r3", "r6", "r5", "r4"]


async def test_sort_by_id_is_code_point_order(client, records):
    for rid in ("b", "B", "a", "a_", "A", "a0", "a-"):
        await client.put(f"{records}/{rid}", json={"data": {}})
    assert await sorted_ids(client, "id") == ["A", "B", "a", "a-", "a0", "a_", "b"]


async def test_invalid_sort_entries_are_ignored(client, dataset):
    assert await sorted_ids(client, "--n,n-x,,%,") == ["r6", "r5", "r4", "r3", "r2", "r1"]
    assert await sorted_ids(client, "!!,n") == ["r4", "r3", "r1", "r2", "r5", "r6"]


async def test_too_many_sort_fields_is_400(client, records):
    body = await bad_request(client, _sort=",".join(f"f{i}" for i in range(200)))
    assert body["details"][0]["name"] == "_sort"


# -- §4 pagination --------------------------------------------------------------------------------


async def many(client, count, records=RECORDS):
    path = records.removeprefix("/v1")
    requests = [
        {"method": "PUT", "path": f"{path}/r{i:03}", "body": {"data": {"i": i, "g": i % 3}}}
        for i in range(count)
    ]
    r = await client.post("/v1/batch", json={"requests": requests})
    assert r.status_code == 200
    assert all(sub["status"] == 201 for sub in r.json()["responses"])


def flatten(pages):
    return [rid for page in pages for rid in page]


async def follow(client, url, params=None, method="GET"):
    """Every page (as lists of ids) and every response, following Next-Page."""
    pages, responses = [], []
    r = await client.request(method, url, params=params)
    while True:
        responses.append(r)
        pages.append(ids_of(r))
        if "Next-Page" not in r.headers:
            return pages, responses
        assert len(pages) < 100
        r = await client.request(method, r.headers["Next-Page"])


async def test_limit_splits_into_pages_that_reproduce_the_list(client, records):
    await many(client, 7)
    full = ids_of(await client.get(records))
    pages, responses = await follow(client, records, {"_limit": 3})
    assert [len(p) for p in pages] == [3, 3, 1]
    assert flatten(pages) == full
    assert len({r.headers["ETag"] for r in responses}) == 1


async def test_exact_multiple_has_no_empty_last_page(client, records):
    await many(client, 6)
    pages, responses = await follow(client, records, {"_limit": 3})
    assert [len(p) for p in pages] == [3, 3]
    assert "Next-Page" not in responses[-1].headers


async def test_no_next_page_when_everything_fits(client, records):
    await many(client, 3)
    r = await client.get(records, params={"_limit": 3})
    assert len(ids_of(r)) == 3
    assert "Next-Page" not in r.headers
    r = await client.get(records)
    assert "Next-Page" not in r.headers


async def test_next_page_is_absolute_and_keeps_every_param(client, records):
    await many(client, 5)
    params = {"_since": '"0"', "min_i": "0", "_sort": "g,-i", "_fields": "i", "_expected": "x"}
    r = await client.get(records, params={**params, "_limit": 2})
    url = urlsplit(r.headers["Next-Page"])
    assert (url.scheme, url.netloc, url.path) == ("http", "testserver", RECORDS)
    query = parse_qsl(url.query)
    assert [(k, v) for k, v in query if k not in ("_limit", "_token")] == list(params.items())
    assert dict(query)["_limit"] == "2"
    assert [k for k, _ in query].count("_token") == 1


async def test_next_page_keeps_the_port_and_encodes_values(client, records):
    value = '"é x&y=z"'
    for _ in range(3):
        await client.post(records, json={"data": {"t": "é x&y=z"}})
    r = await client.get(f"http://testserver:8888{records}", params={"t": value, "_limit": 1})
    next_page = r.headers["Next-Page"]
    assert next_page.startswith(f"http://testserver:8888{records}?")
    assert dict(parse_qsl(urlsplit(next_page).query))["t"] == value
    pages, _ = await follow(client, next_page)
    assert [len(p) for p in pages] == [1, 1]


async def test_next_page_uses_http_host_and_scheme_settings(make_client):
    async with make_client(http_scheme="https", http_host="kinto.example:8443") as client:
        await client.put("/v1/buckets/b")
        await client.put("/v1/buckets/b/collections/c")
        await many(client, 3)
        r = await client.get(RECORDS, params={"_limit": 1})
        assert r.headers["Next-Page"].startswith(f"https://kinto.example:8443{RECORDS}?")


async def test_pagination_with_sort_on_fields_with_ties_and_missing_values(client, records):
    await many(client, 8)
    await client.put(f"{records}/nog", json={"data": {"i": 99}})
    for sort in ("g", "-g", "g,i", "-g,-i", "nope", "-id"):
        full = ids_of(await client.get(records, params={"_sort": sort}))
        pages, _ = await follow(client, records, {"_sort": sort, "_limit": 2})
        assert flatten(pages) == full, sort


async def test_pagination_with_filters_and_fields(client, records):
    await many(client, 9)
    pages, responses = await follow(
        client, records, {"g": "1", "_fields": "g", "_limit": 2, "_sort": "i"}
    )
    assert pages == [["r001", "r004"], ["r007"]]
    assert responses[-1].json()["data"] == [
        {"id": "r007", "g": 1, "last_modified": responses[-1].json()["data"][0]["last_modified"]}
    ]


async def test_pagination_during_writes_neither_skips_nor_repeats(client, records):
    await many(client, 6)
    before = ids_of(await client.get(records))
    first = await client.get(records, params={"_limit": 2})
    await client.put(f"{records}/new", json={"data": {}})
    rest, _ = await follow(client, first.headers["Next-Page"])
    assert ids_of(first) + flatten(rest) == before


async def test_get_tokens_are_reusable(client, records):
    await many(client, 5)
    r = await client.get(records, params={"_limit": 2})
    next_page = r.headers["Next-Page"]
    again = [ids_of(await client.get(next_page)) for _ in range(3)]
    assert again[0] == again[1] == again[2]
    assert len(again[0]) == 2


async def test_head_accepts_a_token(client, records):
    await many(client, 5)
    r = await client.get(records, params={"_limit": 2})
    head = await client.head(r.headers["Next-Page"])
    assert head.status_code == 200
    assert head.headers["Total-Objects"] == "5"


def b64(value) -> str:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    "token",
    [
        "abc",
        "!!!",
        b64(b"nope"),
        b64([1]),
        b64({"offset": 1, "nonce": "x"}),
        b64({"last_object": 3, "offset": 1, "nonce": "x"}),
    ],
)
@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_invalid_token_is_400(client, records, token, method):
    body = await bad_request(client, method=method, _token=token)
    assert body["message"] == "_token has invalid content"
    assert body["details"] == [
        {"location": "querystring", "name": "_token", "description": "_token has invalid content"}
    ]


async def test_delete_plural_paginates_with_single_use_tokens(client, records):
    await many(client, 5)
    first = await client.delete(records, params={"_limit": 2})
    assert len(ids_of(first)) == 2
    next_page = first.headers["Next-Page"]
    second = await client.delete(next_page)
    assert len(ids_of(second)) == 2
    reused = await client.delete(next_page)
    assert reused.status_code == 400
    assert reused.json()["message"] == "_token was already used or has expired."
    assert reused.json()["details"] == [
        {
            "location": "querystring",
            "name": "_token",
            "description": "_token was already used or has expired.",
        }
    ]
    third = await client.delete(second.headers["Next-Page"])
    assert len(ids_of(third)) == 1
    assert "Next-Page" not in third.headers
    assert ids_of(await client.get(records)) == []


async def test_delete_rejects_a_token_made_by_get(client, records):
    await many(client, 4)
    r = await client.get(records, params={"_limit": 2})
    token = dict(parse_qsl(urlsplit(r.headers["Next-Page"]).query))["_token"]
    r = await client.delete(records, params={"_limit": 2, "_token": token})
    assert r.status_code == 400
    assert r.json()["message"] == "_token was already used or has expired."


async def test_paginate_by_caps_and_defaults_the_page_size(make_client):
    async with make_client(paginate_by=2) as client:
        await client.put("/v1/buckets/b")
        await client.put("/v1/buckets/b/collections/c")
        await many(client, 5)
        assert len(ids_of(await client.get(RECORDS))) == 2
        r = await client.get(RECORDS, params={"_limit": 10})
        assert len(ids_of(r)) == 2
        assert dict(parse_qsl(urlsplit(r.headers["Next-Page"]).query))["_limit"] == "2"
        assert len(ids_of(await client.get(RECORDS, params={"_limit": 1}))) == 1
        pages, _ = await follow(client, RECORDS)
        assert [len(p) for p in pages] == [2, 2, 1]


async def test_limit_zero_means_maximum(make_client):
    async with make_client(storage_max_fetch_size=4) as client:
        await client.put("/v1/buckets/b")
        await client.put("/v1/buckets/b/collections/c")
        await many(client, 6)
        r = await client.get(RECORDS, params={"_limit": 0})
        assert len(ids_of(r)) == 4
        assert dict(parse_qsl(urlsplit(r.headers["Next-Page"]).query))["_limit"] == "4"


async def test_max_fetch_size_paginates_without_paginate_by(make_client):
    async with make_client(storage_max_fetch_size=3) as client:
        await client.put("/v1/buckets/b")
        await client.put("/v1/buckets/b/collections/c")
        await many(client, 7)
        pages, _ = await follow(client, RECORDS)
        assert [len(p) for p in pages] == [3, 3, 1]
        r = await client.get(RECORDS, params={"_limit": 100})
        assert len(ids_of(r)) == 3


@pytest.mark.parametrize(
    ("value", "description"),
    [
        ("abc", '"abc" is not a number'),
        ("-1", "-1 is less than minimum value 0"),
        ("1.5", '"1.5" is not a number'),
        ("", '"" is not a number'),
    ],
)
async def test_invalid_limit_is_400(client, records, value, description):
    body = await bad_request(client, _limit=value)
    assert body["details"] == [
        {"location": "querystring", "name": "_limit", "description": description}
    ]
    assert body["message"] == f"_limit in querystring: {description}"


# -- §5 _fields -----------------------------------------------------------------------------------


async def test_fields_projection_on_lists(client, dataset):
    r = await client.get(RECORDS, params={"_fields": "n,flag", "_sort": "last_modified"})
    data = r.json()["data"]
    assert [set(o) for o in data] == [
        {"id", "last_modified", "n", "flag"},
        {"id", "last_modified", "n", "flag"},
        {"id", "last_modified", "n"},
        {"id", "last_modified", "n"},
        {"id", "last_modified", "n"},
        {"id", "last_modified"},
    ]
    assert data[0]["n"] == 1 and data[0]["flag"] is True


async def test_fields_dotted_names(client, dataset):
    r = await client.get(RECORDS, params={"_fields": "o.x", "_sort": "last_modified"})
    assert [{k: v for k, v in o.items() if k != "last_modified"} for o in r.json()["data"]] == [
        {"id": "r1", "o": {"x": 1}},
        {"id": "r2", "o": {"x": 2}},
        {"id": "r3", "o": {"x": {"deep": 1}}},
        {"id": "r4", "o": "flat"},
        {"id": "r5"},
        {"id": "r6"},
    ]


async def test_fields_nested_two_levels(client, records):
    data = {"address": {"street": "s", "city": "c", "geo": {"x": 1, "y": 2}}, "other": 1}
    await client.put(f"{records}/a", json={"data": data})
    r = await client.get(RECORDS, params={"_fields": "address.street,address.geo.y"})
    assert r.json()["data"][0]["address"] == {"street": "s", "geo": {"y": 2}}
    assert "other" not in r.json()["data"][0]


async def test_fields_unknown_names_are_ignored(client, dataset):
    r = await client.get(RECORDS, params={"_fields": "nope", "_limit": 1})
    (obj,) = r.json()["data"]
    assert set(obj) == {"id", "last_modified"}


async def test_fields_do_not_apply_to_plural_delete(client, dataset):
    r = await client.delete(RECORDS, params={"_fields": "n", "n": "1"})
    (tombstone,) = r.json()["data"]
    assert tombstone == {"id": "r1", "last_modified": tombstone["last_modified"], "deleted": True}


async def test_fields_on_an_object(client, dataset):
    r = await client.get(f"{RECORDS}/r1", params={"_fields": "n,o.x"})
    assert r.status_code == 200
    body = r.json()
    assert body == {
        "data": {"id": "r1", "n": 1, "o": {"x": 1}, "last_modified": body["data"]["last_modified"]}
    }
