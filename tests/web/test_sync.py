"""Timestamps, ETags, preconditions and ``_since`` polling over HTTP (protocol/04)."""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import re

import orjson
import pytest
from tests.conftest import BOB, userid

from nuages.core.timestamps import now_ms

BUCKET = "/v1/buckets/b"
COLLECTION = f"{BUCKET}/collections/c"
RECORDS = f"{COLLECTION}/records"
INVALID_ETAG = "The value should be integer between double quotes."
PRECONDITION_FAILED = {
    "code": 412,
    "errno": 114,
    "error": "Precondition Failed",
    "message": "Resource was modified meanwhile",
}
TO_ALERT = {
    "code": "soft-eol",
    "message": "_to is now deprecated, you should use _before instead",
    "url": "https://kinto.readthedocs.io/en/2.4.0/api/resource.html"
    "#list-of-available-url-parameters",
}


@pytest.fixture
async def records(client):
    """A bucket ``b`` with a collection ``c``; yields the records URL."""
    assert (await client.put(BUCKET)).status_code == 201
    assert (await client.put(COLLECTION)).status_code == 201
    return RECORDS


async def create(client, data=None, url=RECORDS):
    r = await client.post(url, json={"data": data or {}})
    assert r.status_code == 201, r.text
    return r.json()["data"]


def etag(response) -> int:
    value = response.headers["ETag"]
    assert re.fullmatch(r'"\d+"', value), value
    return int(value.strip('"'))


def strictly_increasing(values) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


async def batch_post(client, count, url=RECORDS):
    path = url.removeprefix("/v1")
    requests = [{"method": "POST", "path": path, "body": {"data": {"i": i}}} for i in range(count)]
    r = await client.post("/v1/batch", json={"requests": requests})
    assert r.status_code == 200, r.text
    return [sub["body"]["data"]["last_modified"] for sub in r.json()["responses"]]


# -- §1 timestamp generation ----------------------------------------------------------------------


async def test_burst_of_writes_gets_strictly_increasing_unique_timestamps(client, records):
    timestamps = await batch_post(client, 25)
    assert strictly_increasing(timestamps)
    listed = (await client.get(records)).json()["data"]
    assert sorted(r["last_modified"] for r in listed) == timestamps


async def test_writes_in_the_same_millisecond_slide_by_one(client, records):
    # With the scope in the future, every write "collides" and gets previous + 1.
    future = now_ms() + 3_600_000
    await create(client, {"last_modified": future})
    timestamps = await batch_post(client, 25)
    assert timestamps == list(range(future + 1, future + 26))


async def test_concurrent_writes_get_unique_timestamps(client, records):
    responses = await asyncio.gather(*(client.post(records, json={"data": {}}) for _ in range(20)))
    assert all(r.status_code == 201 for r in responses)
    timestamps = [r.json()["data"]["last_modified"] for r in responses]
    assert len(set(timestamps)) == 20
    assert etag(await client.get(records)) == max(timestamps)


async def test_every_kind_of_write_bumps_the_scope(client, records):
    a = await create(client)
    put = await client.put(f"{records}/x", json={"data": {}})
    patch = await client.patch(f"{records}/x", json={"data": {"k": 1}})
    same_patch = await client.patch(f"{records}/x", json={"data": {"k": 1}})
    deleted = await client.delete(f"{records}/{a['id']}")
    timestamps = [
        a["last_modified"],
        put.json()["data"]["last_modified"],
        patch.json()["data"]["last_modified"],
        same_patch.json()["data"]["last_modified"],
        deleted.json()["data"]["last_modified"],
    ]
    assert strictly_increasing(timestamps)
    assert etag(await client.get(records)) == timestamps[-1]


async def test_timestamps_are_close_to_the_server_clock(client, records):
    before = now_ms()
    record = await create(client)
    assert before <= record["last_modified"] <= now_ms() + 1000


async def test_scopes_are_isolated(client, records):
    await client.put(f"{BUCKET}/collections/other")
    other = f"{BUCKET}/collections/other/records"
    first = await create(client)
    records_etag = etag(await client.get(records))
    collections_etag = etag(await client.get(f"{BUCKET}/collections"))
    buckets_etag = etag(await client.get("/v1/buckets"))

    await batch_post(client, 5, url=other)

    assert etag(await client.get(records)) == records_etag == first["last_modified"]
    assert etag(await client.get(f"{BUCKET}/collections")) == collections_etag
    assert etag(await client.get("/v1/buckets")) == buckets_etag


async def test_groups_and_collections_of_a_bucket_are_separate_scopes(client, records):
    collections_etag = etag(await client.get(f"{BUCKET}/collections"))
    group = await client.put(f"{BUCKET}/groups/g", json={"data": {"members": []}})
    assert group.status_code == 201
    assert etag(await client.get(f"{BUCKET}/collections")) == collections_etag
    assert etag(await client.get(f"{BUCKET}/groups")) == group.json()["data"]["last_modified"]


async def test_record_writes_change_the_records_etag_not_the_collection(client, records):
    collection = (await client.get(COLLECTION)).json()["data"]
    before = etag(await client.get(records))
    record = await create(client)
    after = etag(await client.get(records))
    assert after == record["last_modified"] > before
    assert (await client.get(COLLECTION)).json()["data"] == collection
    assert etag(await client.get(COLLECTION)) == collection["last_modified"]


async def test_empty_list_timestamp_is_created_lazily_and_then_stable(client, records):
    first = await client.get(records)
    assert first.json() == {"data": []}
    await asyncio.sleep(0.01)
    second = await client.get(records)
    head = await client.head(records)
    assert etag(first) == etag(second) == etag(head)


async def test_first_write_in_a_scope_is_after_its_empty_timestamp(client, records):
    empty = etag(await client.get(records))
    record = await create(client)
    assert record["last_modified"] > empty


async def test_reads_never_change_a_timestamp(client, records):
    record = await create(client)
    for _ in range(3):
        await client.get(records)
        await client.get(f"{records}/{record['id']}")
        await client.head(records)
    assert etag(await client.get(records)) == record["last_modified"]


# -- §1 forced last_modified ----------------------------------------------------------------------


async def test_future_last_modified_on_create_is_kept_and_moves_the_scope(client, records):
    await create(client)
    future = now_ms() + 3_600_000
    record = await create(client, {"last_modified": future})
    assert record["last_modified"] == future
    assert etag(await client.get(records)) == future


async def test_next_write_after_a_future_timestamp_slides_by_one(client, records):
    future = now_ms() + 3_600_000
    await create(client, {"last_modified": future})
    assert (await create(client))["last_modified"] == future + 1


async def test_last_modified_equal_to_the_scope_is_bumped_by_one(client, records):
    current = (await create(client))["last_modified"]
    record = await create(client, {"last_modified": current})
    assert record["last_modified"] == current + 1
    assert etag(await client.get(records)) == current + 1


async def test_past_last_modified_on_create_is_kept_without_moving_the_scope(client, records):
    current = (await create(client))["last_modified"]
    record = await create(client, {"last_modified": 1234})
    assert record["last_modified"] == 1234
    assert (await client.get(f"{records}/{record['id']}")).json()["data"]["last_modified"] == 1234
    assert etag(await client.get(records)) == current


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_past_last_modified_on_update_is_kept_without_moving_the_scope(
    client, records, method
):
    await create(client, {"id": "old", "last_modified": 1000})
    current = (await create(client))["last_modified"]
    r = await client.request(method, f"{records}/old", json={"data": {"last_modified": 2000}})
    assert r.json()["data"]["last_modified"] == 2000
    assert etag(await client.get(records)) == current


async def test_past_last_modified_on_delete_is_kept_without_moving_the_scope(client, records):
    await create(client, {"id": "old", "last_modified": 1000})
    current = (await create(client))["last_modified"]
    r = await client.delete(f"{records}/old", params={"last_modified": 2000})
    assert r.json()["data"] == {"id": "old", "last_modified": 2000, "deleted": True}
    assert etag(await client.get(records)) == current


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_older_last_modified_on_update_is_ignored(client, records, method):
    record = await create(client)
    current = etag(await client.get(records))
    r = await client.request(
        method,
        f"{records}/{record['id']}",
        json={"data": {"last_modified": record["last_modified"]}},
    )
    assert r.status_code == 200
    assert r.json()["data"]["last_modified"] > current


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_greater_last_modified_on_update_is_honoured(client, records, method):
    record = await create(client)
    wanted = now_ms() + 3_600_000
    r = await client.request(
        method, f"{records}/{record['id']}", json={"data": {"last_modified": wanted}}
    )
    assert r.json()["data"]["last_modified"] == wanted
    assert etag(r) == wanted
    assert etag(await client.get(records)) == wanted


async def test_forced_last_modified_on_delete(client, records):
    record = await create(client)
    wanted = now_ms() + 3_600_000
    r = await client.delete(f"{records}/{record['id']}", params={"last_modified": wanted})
    assert r.json()["data"] == {"id": record["id"], "last_modified": wanted, "deleted": True}
    assert etag(r) == wanted


async def test_older_last_modified_on_delete_is_ignored(client, records):
    record = await create(client)
    r = await client.delete(f"{records}/{record['id']}", params={"last_modified": 5})
    assert r.json()["data"]["last_modified"] > record["last_modified"]


async def test_non_integer_last_modified_in_body_is_ignored(client, records):
    record = await create(client, {"last_modified": "1234"})
    assert isinstance(record["last_modified"], int)
    assert record["last_modified"] > 1234


# -- §2 headers -----------------------------------------------------------------------------------


async def test_object_etag_and_last_modified_headers(client, records):
    r = await client.post(records, json={"data": {}})
    ts = r.json()["data"]["last_modified"]
    assert r.headers["ETag"] == f'"{ts}"'
    parsed = email.utils.parsedate_to_datetime(r.headers["Last-Modified"])
    assert parsed.timestamp() == ts // 1000
    assert r.headers["Last-Modified"].endswith(" GMT")


async def test_every_object_response_carries_the_object_etag(client, records):
    record = await create(client)
    url = f"{records}/{record['id']}"
    assert etag(await client.get(url)) == record["last_modified"]
    assert etag(await client.head(url)) == record["last_modified"]
    patched = await client.patch(url, json={"data": {"a": 1}})
    assert etag(patched) == patched.json()["data"]["last_modified"]
    put = await client.put(url, json={"data": {"a": 2}})
    assert etag(put) == put.json()["data"]["last_modified"]
    again = await client.post(records, json={"data": {"id": record["id"]}})
    assert again.status_code == 200
    assert etag(again) == put.json()["data"]["last_modified"]
    deleted = await client.delete(url)
    assert etag(deleted) == deleted.json()["data"]["last_modified"]


async def test_list_etag_ignores_filters_pagination_and_since(client, records):
    created = [await create(client, {"n": i}) for i in range(3)]
    full = etag(await client.get(records))
    assert full == created[-1]["last_modified"]
    for params in (
        {"n": 0},
        {"_limit": 1},
        {"_since": created[-1]["last_modified"]},
        {"_before": created[0]["last_modified"]},
        {"_fields": "n"},
        {"_sort": "n"},
    ):
        assert etag(await client.get(records, params=params)) == full
    assert etag(await client.head(records, params={"n": 1})) == full


async def test_plural_delete_etag_is_the_newest_tombstone(client, records):
    await create(client, {"n": 1})
    await create(client, {"n": 2})
    r = await client.delete(records)
    assert etag(r) == max(t["last_modified"] for t in r.json()["data"])
    assert etag(await client.get(records)) == etag(r)


async def test_plural_delete_matching_nothing_keeps_the_scope_etag(client, records):
    current = (await create(client, {"n": 1}))["last_modified"]
    r = await client.delete(records, params={"n": 99})
    assert r.json() == {"data": []}
    assert etag(r) == current


async def test_if_modified_since_headers_are_ignored(client, records):
    record = await create(client)
    far_future = "Thu, 01 Jan 2099 00:00:00 GMT"
    r = await client.get(records, headers={"If-Modified-Since": far_future})
    assert r.status_code == 200
    r = await client.delete(
        f"{records}/{record['id']}",
        headers={"If-Unmodified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"},
    )
    assert r.status_code == 200


# -- §3 304 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_if_none_match_current_object_is_304(client, records, method):
    record = await create(client)
    r = await client.request(
        method,
        f"{records}/{record['id']}",
        headers={"If-None-Match": f'"{record["last_modified"]}"'},
    )
    assert r.status_code == 304
    assert r.content == b""
    assert etag(r) == record["last_modified"]
    assert "Last-Modified" in r.headers


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_if_none_match_current_list_is_304(client, records, method):
    await create(client)
    current = etag(await client.get(records))
    r = await client.request(method, records, headers={"If-None-Match": f'"{current}"'})
    assert r.status_code == 304
    assert r.content == b""
    assert etag(r) == current


async def test_if_none_match_current_empty_list_is_304(client, records):
    current = etag(await client.get(records))
    r = await client.get(records, headers={"If-None-Match": f'"{current}"'})
    assert r.status_code == 304


async def test_if_none_match_other_value_is_a_normal_read(client, records):
    record = await create(client)
    stale = f'"{record["last_modified"] - 1}"'
    r = await client.get(f"{records}/{record['id']}", headers={"If-None-Match": stale})
    assert r.status_code == 200
    r = await client.get(records, headers={"If-None-Match": stale})
    assert r.status_code == 200
    assert [o["id"] for o in r.json()["data"]] == [record["id"]]


async def test_304_only_for_reads(client, records):
    record = await create(client)
    url = f"{records}/{record['id']}"
    r = await client.patch(
        url, json={"data": {"a": 1}}, headers={"If-None-Match": f'"{record["last_modified"]}"'}
    )
    assert r.status_code == 200
    ts = r.json()["data"]["last_modified"]
    r = await client.put(url, json={"data": {"a": 2}}, headers={"If-None-Match": f'"{ts}"'})
    assert r.status_code == 200
    ts = r.json()["data"]["last_modified"]
    r = await client.delete(url, headers={"If-None-Match": f'"{ts}"'})
    assert r.status_code == 200


async def test_304_is_checked_before_412(client, records):
    record = await create(client)
    current = f'"{record["last_modified"]}"'
    r = await client.get(
        f"{records}/{record['id']}", headers={"If-None-Match": current, "If-Match": '"1"'}
    )
    assert r.status_code == 304


async def test_if_none_match_star_never_gives_304(client, records):
    record = await create(client)
    r = await client.get(f"{records}/{record['id']}", headers={"If-None-Match": "*"})
    assert r.status_code == 412
    assert r.json()["details"]["existing"] == record


# -- §3 412 on objects ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
async def test_if_match_current_proceeds(client, records, method):
    record = await create(client)
    r = await client.request(
        method,
        f"{records}/{record['id']}",
        headers={"If-Match": f'"{record["last_modified"]}"'},
        json={"data": {"a": 1}} if method in ("PUT", "PATCH") else None,
    )
    assert r.status_code == 200


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
async def test_if_match_star_on_existing_object_proceeds(client, records, method):
    record = await create(client)
    r = await client.request(
        method,
        f"{records}/{record['id']}",
        headers={"If-Match": "*"},
        json={"data": {"a": 1}} if method in ("PUT", "PATCH") else None,
    )
    assert r.status_code == 200


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
async def test_if_match_stale_is_412_with_existing(client, records, method):
    record = await create(client, {"title": "t"})
    url = f"{records}/{record['id']}"
    r = await client.request(
        method,
        url,
        headers={"If-Match": f'"{record["last_modified"] - 1}"'},
        json={"data": {"title": "u"}} if method in ("PUT", "PATCH") else None,
    )
    assert r.status_code == 412
    assert r.json() == {**PRECONDITION_FAILED, "details": {"existing": record}}
    assert etag(r) == record["last_modified"]
    assert "Last-Modified" in r.headers
    # nothing was written
    assert (await client.get(url)).json()["data"] == record
    assert etag(await client.get(records)) == record["last_modified"]


async def test_412_existing_has_no_permissions(client, records):
    r = await client.put(
        f"{records}/x", json={"data": {"a": 1}, "permissions": {"read": ["system.Everyone"]}}
    )
    r = await client.put(f"{records}/x", json={"data": {}}, headers={"If-Match": '"1"'})
    assert r.status_code == 412
    assert r.json()["details"]["existing"] == {
        "id": "x",
        "a": 1,
        "last_modified": r.json()["details"]["existing"]["last_modified"],
    }


@pytest.mark.parametrize("value", ['"123"', "*"])
async def test_if_match_on_missing_object_put_is_412_without_details(client, records, value):
    current = (await create(client))["last_modified"]
    r = await client.put(f"{records}/missing", json={"data": {}}, headers={"If-Match": value})
    assert r.status_code == 412
    assert r.json() == PRECONDITION_FAILED
    assert etag(r) == current  # the list timestamp, as Kinto
    assert (await client.get(f"{records}/missing")).status_code == 404


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
@pytest.mark.parametrize("value", ['"123"', "*"])
async def test_if_match_on_missing_object_is_404_first(client, records, method, value):
    r = await client.request(
        method,
        f"{records}/missing",
        headers={"If-Match": value},
        json={"data": {}} if method == "PATCH" else None,
    )
    assert r.status_code == 404
    assert r.json() == {
        "code": 404,
        "errno": 110,
        "error": "Not Found",
        "details": {"id": "missing", "resource_name": "record"},
    }


async def test_if_none_match_star_creates_a_missing_object(client, records):
    r = await client.put(f"{records}/new", json={"data": {"a": 1}}, headers={"If-None-Match": "*"})
    assert r.status_code == 201


async def test_if_none_match_star_on_existing_object_is_412_with_existing(client, records):
    record = await create(client)
    r = await client.put(
        f"{records}/{record['id']}", json={"data": {"a": 1}}, headers={"If-None-Match": "*"}
    )
    assert r.status_code == 412
    assert r.json() == {**PRECONDITION_FAILED, "details": {"existing": record}}
    assert etag(r) == record["last_modified"]


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
async def test_if_none_match_star_on_existing_object_blocks_writes(client, records, method):
    record = await create(client)
    r = await client.request(
        method,
        f"{records}/{record['id']}",
        headers={"If-None-Match": "*"},
        json={"data": {"a": 1}} if method == "PATCH" else None,
    )
    assert r.status_code == 412


async def test_if_none_match_other_value_does_not_block_writes(client, records):
    record = await create(client)
    r = await client.put(
        f"{records}/{record['id']}", json={"data": {}}, headers={"If-None-Match": '"1"'}
    )
    assert r.status_code == 200
    r = await client.put(f"{records}/new", json={"data": {}}, headers={"If-None-Match": '"1"'})
    assert r.status_code == 201


async def test_tombstones_count_as_missing_for_preconditions(client, records):
    record = await create(client)
    url = f"{records}/{record['id']}"
    deleted = (await client.delete(url)).json()["data"]
    r = await client.put(
        url, json={"data": {}}, headers={"If-Match": f'"{deleted["last_modified"]}"'}
    )
    assert r.status_code == 412
    assert "details" not in r.json()
    r = await client.put(url, json={"data": {}}, headers={"If-None-Match": "*"})
    assert r.status_code == 201


async def test_safe_update_loop(client, records):
    """kinto-http's safe update: If-Match with the known timestamp, then refresh on 412."""
    record = await create(client, {"n": 0})
    url = f"{records}/{record['id']}"
    first = await client.patch(
        url, json={"data": {"n": 1}}, headers={"If-Match": f'"{record["last_modified"]}"'}
    )
    assert first.status_code == 200
    stale = await client.patch(
        url, json={"data": {"n": 2}}, headers={"If-Match": f'"{record["last_modified"]}"'}
    )
    assert stale.status_code == 412
    fresh = stale.json()["details"]["existing"]
    assert fresh == first.json()["data"]
    retry = await client.patch(
        url, json={"data": {"n": 2}}, headers={"If-Match": f'"{fresh["last_modified"]}"'}
    )
    assert retry.status_code == 200


async def test_concurrent_if_match_writers_exactly_one_wins(client, records):
    record = await create(client)
    url = f"{records}/{record['id']}"
    header = {"If-Match": f'"{record["last_modified"]}"'}
    responses = await asyncio.gather(
        *(client.patch(url, json={"data": {"w": i}}, headers=header) for i in range(10))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [412] * 9


# -- §3 POST --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ['"123"', "*"])
async def test_post_without_id_and_if_match_is_412(client, records, value):
    current = etag(await client.get(records))
    r = await client.post(records, json={"data": {}}, headers={"If-Match": value})
    assert r.status_code == 412
    assert r.json() == PRECONDITION_FAILED
    assert etag(r) == current
    assert (await client.get(records)).json() == {"data": []}


async def test_post_without_id_and_if_match_current_list_etag_is_still_412(client, records):
    await create(client)
    current = etag(await client.get(records))
    r = await client.post(records, json={"data": {}}, headers={"If-Match": f'"{current}"'})
    assert r.status_code == 412


async def test_post_without_id_and_if_none_match_star_creates(client, records):
    r = await client.post(records, json={"data": {}}, headers={"If-None-Match": "*"})
    assert r.status_code == 201


async def test_post_existing_id_with_if_none_match_star_is_412(client, records):
    record = await create(client)
    r = await client.post(
        records, json={"data": {"id": record["id"]}}, headers={"If-None-Match": "*"}
    )
    assert r.status_code == 412
    assert r.json() == {**PRECONDITION_FAILED, "details": {"existing": record}}


async def test_post_existing_id_with_if_match(client, records):
    record = await create(client)
    body = {"data": {"id": record["id"]}}
    ok = await client.post(records, json=body, headers={"If-Match": f'"{record["last_modified"]}"'})
    assert ok.status_code == 200
    assert ok.json()["data"] == record
    stale = await client.post(records, json=body, headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    assert stale.json()["details"]["existing"] == record


async def test_post_missing_id_with_if_match_is_412(client, records):
    r = await client.post(records, json={"data": {"id": "newone"}}, headers={"If-Match": "*"})
    assert r.status_code == 412
    assert "details" not in r.json()
    assert (await client.get(f"{records}/newone")).status_code == 404


async def test_post_missing_id_with_if_none_match_star_creates(client, records):
    r = await client.post(records, json={"data": {"id": "newone"}}, headers={"If-None-Match": "*"})
    assert r.status_code == 201


# -- §3 412 on plurals ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
async def test_if_match_current_list_etag_proceeds(client, records, method):
    await create(client)
    current = etag(await client.get(records))
    r = await client.request(method, records, headers={"If-Match": f'"{current}"'})
    assert r.status_code == 200


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_if_match_stale_list_etag_is_412_without_details(client, records, method):
    record = await create(client)
    r = await client.request(method, records, headers={"If-Match": '"1"'})
    assert r.status_code == 412
    assert r.json() == PRECONDITION_FAILED
    assert etag(r) == record["last_modified"]
    assert len((await client.get(records)).json()["data"]) == 1


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
async def test_if_none_match_star_on_a_list_is_412(client, records, method):
    r = await client.request(method, records, headers={"If-None-Match": "*"})
    assert r.status_code == 412


async def test_if_match_star_on_an_empty_list_proceeds(client, records):
    r = await client.get(records, headers={"If-Match": "*"})
    assert r.status_code == 200


# -- §3 invalid header values ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ['W/"1"', "1", '"*"', '"abc"', '"1.5"', '"-1"'])
@pytest.mark.parametrize("header", ["If-Match", "If-None-Match"])
@pytest.mark.parametrize("where", ["object", "plural"])
async def test_invalid_precondition_values_are_400(client, records, header, value, where):
    record = await create(client)
    url = f"{records}/{record['id']}" if where == "object" else records
    r = await client.get(url, headers={header: value})
    assert r.status_code == 400
    assert r.json() == {
        "code": 400,
        "errno": 107,
        "error": "Invalid parameters",
        "message": f"{header} in header: {INVALID_ETAG}",
        "details": [{"location": "header", "name": header, "description": INVALID_ETAG}],
    }


async def test_invalid_if_match_on_a_write_is_400_and_writes_nothing(client, records):
    record = await create(client)
    r = await client.put(
        f"{records}/{record['id']}", json={"data": {"a": 1}}, headers={"If-Match": 'W/"1"'}
    )
    assert r.status_code == 400
    assert r.json()["message"] == f"If-Match in header: {INVALID_ETAG}"
    assert (await client.get(f"{records}/{record['id']}")).json()["data"] == record


# -- §3 / 12 §C no disclosure ---------------------------------------------------------------------


async def test_creator_without_read_gets_412_without_existing(client, records):
    await client.patch(COLLECTION, json={"permissions": {"record:create": [userid(BOB)]}})
    await client.put(f"{records}/secret", json={"data": {"password": "hunter2"}})
    r = await client.put(
        f"{records}/secret", json={"data": {}}, headers={"If-None-Match": "*"}, auth=BOB
    )
    assert r.status_code == 412
    assert r.json() == PRECONDITION_FAILED
    assert "hunter2" not in r.text


async def test_creator_with_read_gets_412_with_existing(client, records):
    await client.patch(
        COLLECTION,
        json={"permissions": {"record:create": [userid(BOB)], "read": [userid(BOB)]}},
    )
    record = (await client.put(f"{records}/shared", json={"data": {"a": 1}})).json()["data"]
    r = await client.put(
        f"{records}/shared", json={"data": {}}, headers={"If-None-Match": "*"}, auth=BOB
    )
    assert r.status_code == 412
    assert r.json()["details"] == {"existing": record}


async def test_safe_create_without_create_permission_is_403(client, records):
    await client.put(f"{records}/secret", json={"data": {"password": "hunter2"}})
    r = await client.put(
        f"{records}/secret", json={"data": {}}, headers={"If-None-Match": "*"}, auth=BOB
    )
    assert r.status_code == 403
    assert "hunter2" not in r.text


async def test_safe_bucket_create_does_not_disclose_other_buckets(client, records):
    await client.patch(BUCKET, json={"data": {"secret": "hunter2"}})
    r = await client.put(BUCKET, json={"data": {}}, headers={"If-None-Match": "*"}, auth=BOB)
    assert r.status_code == 412
    assert r.json() == PRECONDITION_FAILED
    assert "hunter2" not in r.text


async def test_reader_with_stale_if_match_sees_existing(client, records):
    record = await create(client, {"a": 1})
    await client.patch(COLLECTION, json={"permissions": {"read": [userid(BOB)]}})
    r = await client.get(f"{records}/{record['id']}", headers={"If-Match": '"1"'}, auth=BOB)
    assert r.status_code == 412
    assert r.json()["details"] == {"existing": record}


async def test_safe_create_by_a_reader_without_create_is_403(client, records):
    record = await create(client, {"a": 1})
    await client.patch(COLLECTION, json={"permissions": {"read": [userid(BOB)]}})
    r = await client.put(
        f"{records}/{record['id']}", json={"data": {}}, headers={"If-None-Match": "*"}, auth=BOB
    )
    assert r.status_code == 403


# -- §4 _since / _before / _to --------------------------------------------------------------------


async def three(client):
    return [await create(client, {"n": i}) for i in range(3)]


def ids_of(response):
    assert response.status_code == 200, response.text
    return [o["id"] for o in response.json()["data"]]


async def test_since_is_exclusive(client, records):
    a, b, c = await three(client)
    r = await client.get(records, params={"_since": a["last_modified"]})
    assert ids_of(r) == [c["id"], b["id"]]
    r = await client.get(records, params={"_since": c["last_modified"]})
    assert ids_of(r) == []


async def test_before_is_exclusive(client, records):
    a, b, c = await three(client)
    r = await client.get(records, params={"_before": c["last_modified"]})
    assert ids_of(r) == [b["id"], a["id"]]


async def test_since_and_before_combine(client, records):
    a, b, c = await three(client)
    params = {"_since": a["last_modified"], "_before": c["last_modified"]}
    assert ids_of(await client.get(records, params=params)) == [b["id"]]


async def test_since_accepts_the_quoted_etag_verbatim(client, records):
    a, b, c = await three(client)
    r = await client.get(records, params={"_since": f'"{b["last_modified"]}"'})
    assert ids_of(r) == [c["id"]]
    r = await client.get(records, params={"_before": f'"{b["last_modified"]}"'})
    assert ids_of(r) == [a["id"]]


async def test_since_accepts_floats(client, records):
    _, b, _ = await three(client)
    r = await client.get(records, params={"_since": f"{b['last_modified'] - 0.5}"})
    assert len(ids_of(r)) == 2
    r = await client.get(records, params={"_since": "1.5"})
    assert len(ids_of(r)) == 3


async def test_to_is_an_alias_of_before_with_an_alert(client, records):
    a, b, c = await three(client)
    r = await client.get(records, params={"_to": c["last_modified"]})
    assert ids_of(r) == [b["id"], a["id"]]
    assert orjson.loads(r.headers["Alert"]) == TO_ALERT
    plain = await client.get(records, params={"_before": c["last_modified"]})
    assert "Alert" not in plain.headers


async def test_to_alert_on_head(client, records):
    r = await client.head(records, params={"_to": now_ms()})
    assert r.status_code == 200
    assert orjson.loads(r.headers["Alert"]) == TO_ALERT


@pytest.mark.parametrize("name", ["_since", "_before", "_to"])
@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_non_numeric_bound_is_400(client, records, name, method):
    r = await client.request(method, records, params={name: "abc"})
    assert r.status_code == 400
    assert r.json() == {
        "code": 400,
        "errno": 107,
        "error": "Invalid parameters",
        "message": f'{name} in querystring: "abc" is not a number',
        "details": [
            {"location": "querystring", "name": name, "description": '"abc" is not a number'}
        ],
    }


@pytest.mark.parametrize("name", ["_since", "_before"])
async def test_bound_more_than_a_day_ahead_is_400(client, records, name):
    r = await client.get(records, params={name: now_ms() + 2 * 24 * 3600 * 1000})
    assert r.status_code == 400
    assert r.json()["details"] == [
        {"location": "querystring", "name": name, "description": f"Invalid value for {name}"}
    ]
    assert r.json()["message"] == f"Invalid value for {name}"


async def test_head_with_bound_is_validated_too(client, records):
    r = await client.head(records, params={"_since": "abc"})
    assert r.status_code == 400


# -- §4 tombstones --------------------------------------------------------------------------------


async def deleted_one(client):
    keep = await create(client, {"title": "keep"})
    gone = await create(client, {"title": "gone"})
    tombstone = (await client.delete(f"{RECORDS}/{gone['id']}")).json()["data"]
    return keep, gone, tombstone


async def test_deleted_objects_never_appear_without_a_timestamp_filter(client, records):
    keep, _, _ = await deleted_one(client)
    assert ids_of(await client.get(records)) == [keep["id"]]
    assert ids_of(await client.get(records, params={"_sort": "title"})) == [keep["id"]]


async def test_since_brings_tombstones(client, records):
    keep, gone, tombstone = await deleted_one(client)
    r = await client.get(records, params={"_since": 0})
    assert r.json()["data"] == [
        {"id": gone["id"], "last_modified": tombstone["last_modified"], "deleted": True},
        keep,
    ]
    assert tombstone["last_modified"] > gone["last_modified"]


async def test_since_after_a_deletion_brings_only_the_tombstone(client, records):
    _, _, tombstone = await deleted_one(client)
    r = await client.get(records, params={"_since": tombstone["last_modified"] - 1})
    assert r.json()["data"] == [tombstone]


@pytest.mark.parametrize(
    "param",
    ["gt_last_modified", "min_last_modified", "not_last_modified", "_before", "max_last_modified"],
)
async def test_any_last_modified_filter_brings_tombstones(client, records, param):
    _, gone, tombstone = await deleted_one(client)
    value = tombstone["last_modified"] + (1 if param in ("_before", "max_last_modified") else -1)
    if param == "not_last_modified":
        value = 1
    r = await client.get(records, params={param: value})
    assert gone["id"] in ids_of(r)
    assert tombstone in r.json()["data"]


async def test_exact_last_modified_filter_finds_a_tombstone(client, records):
    _, _, tombstone = await deleted_one(client)
    r = await client.get(records, params={"last_modified": tombstone["last_modified"]})
    assert r.json()["data"] == [tombstone]


async def test_tombstones_are_filtered_by_other_filters(client, records):
    keep, gone, _ = await deleted_one(client)
    assert ids_of(await client.get(records, params={"_since": 0, "title": "keep"})) == [keep["id"]]
    assert ids_of(await client.get(records, params={"_since": 0, "title": "gone"})) == []
    r = await client.get(records, params={"_since": 0, "not_title": "keep"})
    assert ids_of(r) == [gone["id"]]
    r = await client.get(records, params={"_since": 0, "deleted": "true"})
    assert ids_of(r) == [gone["id"]]


async def test_fields_on_tombstones_drops_deleted(client, records):
    keep, gone, tombstone = await deleted_one(client)
    r = await client.get(records, params={"_since": 0, "_fields": "title"})
    assert r.json()["data"] == [
        {"id": gone["id"], "last_modified": tombstone["last_modified"]},
        keep,
    ]
    r = await client.get(records, params={"_since": 0, "_fields": "deleted"})
    assert r.json()["data"][0] == tombstone


async def test_total_objects_never_counts_tombstones(client, records):
    await deleted_one(client)
    for params in ({}, {"_since": 0}, {"gt_last_modified": 0}):
        r = await client.head(records, params=params)
        assert r.headers["Total-Objects"] == "1"
        assert r.headers["Total-Records"] == "1"


async def test_recreated_object_replaces_its_tombstone(client, records):
    _, gone, _ = await deleted_one(client)
    again = (await client.put(f"{records}/{gone['id']}", json={"data": {"v": 2}})).json()["data"]
    r = await client.get(records, params={"_since": 0})
    assert again in r.json()["data"]
    assert sum(1 for o in r.json()["data"] if o["id"] == gone["id"]) == 1


async def test_tombstones_of_a_deleted_collection_are_purged(client, records):
    await deleted_one(client)
    await client.delete(COLLECTION)
    await client.put(COLLECTION)
    assert (await client.get(records, params={"_since": 0})).json() == {"data": []}


async def test_sync_loop_with_since_and_if_none_match(client, records):
    """kinto-http sync: GET ?_since=<etag> with If-None-Match, remember the first ETag."""
    await create(client, {"n": 1})
    first = await client.get(records)
    local = {o["id"]: o for o in first.json()["data"]}
    since = etag(first)
    headers = {"If-None-Match": f'"{since}"'}
    assert (await client.get(records, params={"_since": since}, headers=headers)).status_code == 304

    added = await create(client, {"n": 2})
    removed = next(iter(local))
    await client.delete(f"{records}/{removed}")
    r = await client.get(
        records, params={"_since": since, "_sort": "-last_modified"}, headers=headers
    )
    assert r.status_code == 200
    for change in r.json()["data"]:
        if change.get("deleted"):
            local.pop(change["id"], None)
        else:
            local[change["id"]] = change
    assert local == {added["id"]: added}
    assert etag(r) > since


async def test_tombstones_of_objects_shared_one_by_one_are_not_visible(client, records):
    await create(client, {"other": True})
    acl = {"read": [userid(BOB)]}
    first = await client.put(f"{records}/kept", json={"data": {}, "permissions": acl})
    await client.put(f"{records}/gone", json={"data": {}, "permissions": acl})
    since = first.json()["data"]["last_modified"] - 1
    r = await client.get(records, params={"_since": since}, auth=BOB)
    assert ids_of(r) == ["gone", "kept"]
    await client.delete(f"{records}/gone")
    r = await client.get(records, params={"_since": since}, auth=BOB)
    assert ids_of(r) == ["kept"]
    r = await client.get(records, params={"_since": since})
    assert ids_of(r) == ["gone", "kept"]


async def test_paginating_with_if_match_detects_concurrent_changes(client, records):
    await batch_post(client, 4)
    first = await client.get(records, params={"_limit": 2})
    header = {"If-Match": first.headers["ETag"]}
    assert (await client.get(first.headers["Next-Page"], headers=header)).status_code == 200
    await create(client)
    r = await client.get(first.headers["Next-Page"], headers=header)
    assert r.status_code == 412
    assert etag(r) > etag(first)
