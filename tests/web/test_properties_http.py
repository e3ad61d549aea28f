"""Property tests over HTTP: paging, ``_since`` synchronisation, timestamps (protocol/04, 05).

One app per test function; every example works in a fresh collection of it.
The pure-Python reference (:mod:`nuages.core.filtering`) is the oracle for order and filters.
"""

from __future__ import annotations

import itertools

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.strategies import operations, record_data, sort_params, sort_values

from nuages.core.filtering import matches_all, sort_objects
from nuages.core.querystring import parse_list_params

PROPERTY = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_collections = itertools.count()


async def fresh_collection(client) -> str:
    """A new, empty collection in bucket ``p``; returns its records URL."""
    if (await client.get("/v1/buckets/p")).status_code != 200:
        assert (await client.put("/v1/buckets/p")).status_code == 201
    url = f"/v1/buckets/p/collections/c{next(_collections)}"
    assert (await client.put(url)).status_code == 201
    return f"{url}/records"


async def get_all(client, url, params=None, headers=None):
    """(objects, first response) following every Next-Page."""
    r = await client.get(url, params=params, headers=headers)
    first, objects = r, []
    while True:
        assert r.status_code in (200, 304), r.text
        if r.status_code == 304:
            return None, first
        objects += r.json()["data"]
        if "Next-Page" not in r.headers:
            return objects, first
        r = await client.get(r.headers["Next-Page"], headers=headers)


def etag(response) -> int:
    return int(response.headers["ETag"].strip('"'))


# -- (1) paging reproduces the unpaged list ---------------------------------------------------


filters = st.one_of(
    st.none(),
    st.tuples(
        st.sampled_from(["a", "not_b", "min_a", "lt_b", "gt_n.x", "max_a", "has_b", "has_n.x"]),
        sort_values.map(lambda v: orjson.dumps(v).decode()),
    ),
    st.tuples(st.sampled_from(["in_a", "exclude_b"]), st.sampled_from(["1,2", '"a",null', "true"])),
    st.tuples(st.sampled_from(["like_a", "like_b"]), st.sampled_from(["a", "*", "b*", "*B"])),
)


@PROPERTY
@given(
    data=st.lists(record_data, max_size=12),
    deleted=st.sets(st.integers(0, 11), max_size=4),
    limit=st.integers(1, 5),
    sort=sort_params,
    flt=filters,
    since=st.booleans(),
)
async def test_paging_reproduces_the_unpaged_list(client, data, deleted, limit, sort, flt, since):
    url = await fresh_collection(client)
    path = url.removeprefix("/v1")
    requests = [
        {"method": "PUT", "path": f"{path}/r{i:02}", "body": {"data": d}}
        for i, d in enumerate(data)
    ]
    requests += [
        {"method": "DELETE", "path": f"{path}/r{i:02}"} for i in sorted(deleted) if i < len(data)
    ]
    if requests:
        assert (await client.post("/v1/batch", json={"requests": requests})).status_code == 200
    params = {"_sort": sort} if sort else {}
    if flt is not None:
        params[flt[0]] = flt[1]
    if since:
        params["_since"] = "0"  # tombstones too: they have no other field

    unpaged, first = await get_all(client, url, params)
    paged, paged_first = await get_all(client, url, {**params, "_limit": limit})

    assert paged == unpaged
    assert etag(paged_first) == etag(first)
    stored, _ = await get_all(client, url, {"_since": "0"} if since else None)
    parsed = parse_list_params(list(params.items()))
    expected = sort_objects([o for o in stored if matches_all(o, parsed.filters)], parsed.sorting)
    assert unpaged == expected
    count = await client.head(url, params=params)
    assert count.headers["Total-Objects"] == str(sum(1 for o in unpaged if not o.get("deleted")))


# -- (2) and (3) random writes: sync and timestamps ------------------------------------------


async def apply_operation(client, url, kind, index, data):
    """Run one write; the response when something was written, else None."""
    rid = f"r{index}"
    if kind == "create":
        r = await client.post(url, json={"data": {**data, "id": rid}})
        assert r.status_code in (200, 201)
        return r if r.status_code == 201 else None
    if kind == "put":
        r = await client.put(f"{url}/{rid}", json={"data": data})
        assert r.status_code in (200, 201)
        return r
    if kind == "patch":
        r = await client.patch(f"{url}/{rid}", json={"data": data})
    else:
        r = await client.delete(f"{url}/{rid}")
    assert r.status_code in (200, 404)
    return r if r.status_code == 200 else None


class SyncClient:
    """kinto.js in miniature: a local copy kept up to date with ``_since``."""

    def __init__(self, client, url: str) -> None:
        self.client = client
        self.url = url
        self.local: dict[str, dict] = {}
        self.since: int | None = None

    async def sync(self) -> None:
        params: dict[str, object] = {"_limit": 2, "_sort": "-last_modified"}
        headers = {}
        if self.since is not None:
            params["_since"] = f'"{self.since}"'
            headers["If-None-Match"] = f'"{self.since}"'
        changes, first = await get_all(self.client, self.url, params, headers)
        if changes is None:
            return  # 304: nothing changed
        for change in changes:
            if change.get("deleted"):
                assert set(change) == {"id", "last_modified", "deleted"}
                self.local.pop(change["id"], None)
            else:
                self.local[change["id"]] = change
        self.since = etag(first)


@PROPERTY
@given(ops=operations)
async def test_since_sync_reproduces_the_server_list(client, ops):
    url = await fresh_collection(client)
    syncer = SyncClient(client, url)
    for kind, index, data in ops:
        if kind == "sync":
            await syncer.sync()
        else:
            await apply_operation(client, url, kind, index, data)
    await syncer.sync()
    server, _ = await get_all(client, url)
    assert syncer.local == {o["id"]: o for o in server}
    await syncer.sync()  # a second sync right after changes nothing (304)
    assert syncer.local == {o["id"]: o for o in server}


@PROPERTY
@given(ops=operations)
async def test_timestamps_strictly_increase_in_a_scope(client, ops):
    url = await fresh_collection(client)
    list_etag = etag(await client.get(url))
    for kind, index, data in ops:
        if kind == "sync":
            r = await client.get(url, params={"_since": list_etag})
            assert etag(r) == list_etag
            assert r.json()["data"] == []
            continue
        r = await apply_operation(client, url, kind, index, data)
        if r is None:
            assert etag(await client.get(url)) == list_etag
            continue
        written = r.json()["data"]["last_modified"]
        assert written > list_etag
        assert etag(r) == written
        list_etag = etag(await client.get(url))
        assert list_etag == written
    server, _ = await get_all(client, url, {"_since": 0})
    timestamps = [o["last_modified"] for o in server]
    assert len(set(timestamps)) == len(timestamps)
    assert max(timestamps, default=list_etag) == list_etag
