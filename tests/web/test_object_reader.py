"""GET of one object through the one-statement reader (Service.read_object) answers exactly
what the transaction path (Service.get_object) answers: the same requests, on the same
database, are sent with the reader on and off and the responses compared."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from tests.conftest import ALICE, BOB, AppFactory

from nuages.storage.protocol import ObjectRead, ObjectReader, ObjectView

CAROL = ("carol", "secret")
RECORDS = "/v1/buckets/b/collections/c/records"


class CountingReader:
    """The real reader, counting its calls (proves the fast path was taken)."""

    def __init__(self, reader: ObjectReader) -> None:
        self.reader = reader
        self.calls = 0

    async def read_object(self, read: ObjectRead) -> ObjectView:
        self.calls += 1
        return await self.reader.read_object(read)

    async def stored_principals(self, user_ids: tuple[str, ...]) -> frozenset[str]:
        self.calls += 1
        return await self.reader.stored_principals(user_ids)


def _comparable(response: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("date", "expires")}
    if "next-page" in headers:  # its token holds a random nonce
        headers["next-page"] = re.sub(r"_token=[^&]*", "_token=...", headers["next-page"])
    body = response.json() if response.content else None
    return response.status_code, body, headers


async def _setup(client: httpx.AsyncClient) -> tuple[str, str, str]:
    alice = (await client.get("/v1/")).json()["user"]["id"]
    bob = (await client.get("/v1/", auth=BOB)).json()["user"]["id"]
    carol = (await client.get("/v1/", auth=CAROL)).json()["user"]["id"]
    assert (await client.put("/v1/buckets/b")).status_code == 201
    # Carol reads the bucket through a group; Bob only one record, directly.
    group = {"data": {"members": [carol]}}
    assert (await client.put("/v1/buckets/b/groups/readers", json=group)).status_code == 201
    perms = {"permissions": {"read": ["/buckets/b/groups/readers"]}}
    assert (await client.patch("/v1/buckets/b", json=perms)).status_code == 200
    assert (await client.put("/v1/buckets/b/collections/c")).status_code == 201
    for n in range(3):
        body: dict[str, Any] = {"data": {"n": n, "title": f"t{n}", "nested": {"k": [n]}}}
        if n == 1:
            body["permissions"] = {"read": [bob], "write": [alice]}
        assert (await client.put(f"{RECORDS}/r{n}", json=body)).status_code == 201
    assert (await client.delete(f"{RECORDS}/r2")).status_code == 200
    return alice, bob, carol


async def test_reader_answers_as_the_transaction_path(
    make_client: AppFactory, backend: str
) -> None:
    async with make_client(bucket_create_principals="system.Authenticated") as client:
        service = client.app.dispatcher.service  # type: ignore[attr-defined]
        if service.reader is None:
            assert backend == "memory"
            pytest.skip("the memory backends have no one-statement reader")
        counting = CountingReader(service.reader)
        await _setup(client)
        timestamp = (await client.get(f"{RECORDS}/r0")).headers["ETag"]
        requests: list[tuple[str, dict[str, Any]]] = [
            (f"{RECORDS}/r0", {}),
            (f"{RECORDS}/r0", {"auth": CAROL}),  # read through a group
            (f"{RECORDS}/r1", {"auth": BOB}),  # read granted on the record only
            (f"{RECORDS}/r0", {"auth": BOB}),  # 403
            (f"{RECORDS}/r0", {"auth": None}),  # 401
            (f"{RECORDS}/r1", {"auth": CAROL}),  # reader, not writer: no permissions shown
            (f"{RECORDS}/r1?_fields=title,nested.k", {}),
            (f"{RECORDS}/r2", {}),  # tombstone: 404
            (f"{RECORDS}/nope", {}),  # 404
            (f"{RECORDS}/nope", {"auth": BOB}),  # 403 before 404
            ("/v1/buckets/b/collections/missing/records/r0", {}),  # parent 404
            ("/v1/buckets/missing/collections/c/records/r0", {}),  # 403 (no bucket ACL)
            ("/v1/buckets/b/collections/c", {}),
            ("/v1/buckets/b/collections/c", {"auth": CAROL}),
            ("/v1/buckets/b/groups/readers", {}),
            ("/v1/buckets/b", {"auth": CAROL}),
            ("/v1/buckets/b", {}),
            (f"{RECORDS}/r0", {"headers": {"If-None-Match": timestamp}}),  # 304
            (f"{RECORDS}/r0", {"headers": {"If-Match": '"1"'}}),  # 412
            (f"{RECORDS}/r0", {"headers": {"If-Match": timestamp}}),
        ]
        for method in ("GET", "HEAD"):
            for url, kwargs in requests:
                auth = kwargs.get("auth", ALICE)
                headers = kwargs.get("headers", {})
                service.reader = counting
                before = counting.calls
                fast = await client.request(method, url, auth=auth, headers=headers)
                assert counting.calls == before + 1, url
                service.reader = None
                slow = await client.request(method, url, auth=auth, headers=headers)
                assert _comparable(fast) == _comparable(slow), (method, url, kwargs)


async def test_anonymous_read_of_a_public_collection(make_client: AppFactory) -> None:
    async with make_client(bucket_create_principals="system.Authenticated") as client:
        service = client.app.dispatcher.service  # type: ignore[attr-defined]
        await client.put("/v1/buckets/b", json={"permissions": {"read": ["system.Everyone"]}})
        await client.put("/v1/buckets/b/collections/c", json={"data": {"cache_expires": 30}})
        await client.put(f"{RECORDS}/r", json={"data": {"x": 1}})
        response = await client.get(f"{RECORDS}/r", auth=None)
        assert response.status_code == 200
        assert response.json() == {"data": response.json()["data"], "permissions": {}}
        assert response.headers["Cache-Control"] == "max-age=30"
        reader, service.reader = service.reader, None
        try:
            slow = await client.get(f"{RECORDS}/r", auth=None)
        finally:
            service.reader = reader
        assert _comparable(response) == _comparable(slow)
