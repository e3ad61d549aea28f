"""Several real ``nuages serve`` processes on one PostgreSQL database (DESIGN.md invariants).

Writers create, update and delete records of one collection through two server processes
while a reader syncs with ``_since``; in the end the reader's copy is the server's list,
every timestamp is unique and the collection ETag never went back. Concurrent ``If-Match``
writes have exactly one winner. PostgreSQL connections killed mid-traffic give 503s with
``Retry-After``, never a 500 or a hang, and the servers recover by themselves.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from tests import services
from tests.integration.conftest import _free_port, _server_environment, _wait_until_ready

ALICE = ("alice", "secret")
COLLECTION = "/buckets/b/collections/c"
DATABASE = f"{services.TEST_DATABASE}_mp"


def _database_url() -> str:
    parts = urlsplit(services.ADMIN_URL)
    return urlunsplit(parts._replace(path=f"/{DATABASE}"))


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(services.ADMIN_URL, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Two ``nuages serve`` processes on a new database; their /v1 URLs."""
    services.require("postgresql")
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
    asyncio.run(_admin(f'CREATE DATABASE "{DATABASE}"'))
    workdir = tmp_path_factory.mktemp("nuages-pg")
    env = _server_environment(Path("unused.db"), {})
    env.update(
        NUAGES_STORAGE_URL=_database_url(),
        NUAGES_POSTGRESQL_POOL_SIZE="5",
        NUAGES_POSTGRESQL_TIMEOUT="3",
    )
    migrated = subprocess.run(
        [sys.executable, "-m", "nuages", "migrate"],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    processes, urls = [], []
    try:
        for n in range(2):
            port = _free_port()
            log_path = workdir / f"server{n}.log"
            with log_path.open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        [
                            *(sys.executable, "-m", "nuages", "serve"),
                            *("--host", "127.0.0.1", "--port", str(port)),
                        ],
                        env=env,
                        cwd=workdir,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
            urls.append(f"http://127.0.0.1:{port}/v1")
            _wait_until_ready(processes[-1], urls[-1], log_path)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))


@pytest.fixture
async def clients(servers: list[str]) -> AsyncIterator[list[httpx.AsyncClient]]:
    async with (
        httpx.AsyncClient(base_url=servers[0], auth=ALICE, timeout=20) as a,
        httpx.AsyncClient(base_url=servers[1], auth=ALICE, timeout=20) as b,
    ):
        await a.post("/__flush__")
        assert (await a.put("/buckets/b")).status_code in (200, 201)
        assert (await b.put(COLLECTION)).status_code in (200, 201)
        yield [a, b]


async def _all_pages(client: httpx.AsyncClient, url: str) -> tuple[list[dict[str, Any]], str]:
    """Every object of a listing (following Next-Page), and the ETag of the first page."""
    response = await client.get(url)
    assert response.status_code == 200, response.text
    etag = response.headers["ETag"]
    objects = response.json()["data"]
    while "Next-Page" in response.headers:
        response = await client.get(response.headers["Next-Page"])
        assert response.status_code == 200, response.text
        objects += response.json()["data"]
    return objects, etag


async def test_concurrent_writers_and_a_syncing_reader(clients: list[httpx.AsyncClient]) -> None:
    records = f"{COLLECTION}/records"
    written: list[int] = []  # last_modified of every acknowledged write
    ids = [f"r{n}" for n in range(30)]
    done = asyncio.Event()

    async def writer(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(60):
            client = rng.choice(clients)
            object_id = rng.choice(ids)
            action = rng.random()
            if action < 0.6:
                response = await client.put(
                    f"{records}/{object_id}", json={"data": {"v": rng.random(), "by": seed}}
                )
                assert response.status_code in (200, 201), response.text
                written.append(response.json()["data"]["last_modified"])
            elif action < 0.8:
                response = await client.post(records, json={"data": {"new": seed}})
                assert response.status_code == 201, response.text
                written.append(response.json()["data"]["last_modified"])
            else:
                response = await client.delete(f"{records}/{object_id}")
                assert response.status_code in (200, 404), response.text
                if response.status_code == 200:
                    written.append(response.json()["data"]["last_modified"])

    copy: dict[str, dict[str, Any]] = {}
    etags: list[int] = []

    async def sync(client: httpx.AsyncClient) -> None:
        since = f"?_since={etags[-1]}" if etags else ""
        changes, etag = await _all_pages(client, f"{records}{since}")
        etags.append(int(etag.strip('"')))
        for change in changes:
            if change.get("deleted"):
                copy.pop(change["id"], None)
            else:
                copy[change["id"]] = change

    async def reader() -> None:
        n = 0
        while not done.is_set():
            await sync(clients[n % 2])
            n += 1
            await asyncio.sleep(0.01)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(seed) for seed in range(6)))
    done.set()
    await reading
    await sync(clients[0])

    final, _ = await _all_pages(clients[1], records)
    assert {o["id"]: o for o in final} == copy
    assert len(written) == len(set(written)), "two writes got the same timestamp"
    assert etags == sorted(etags), "the collection ETag went back"
    assert etags[-1] == max(written)


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
async def test_concurrent_conditional_writes_have_one_winner(
    clients: list[httpx.AsyncClient], method: str
) -> None:
    url = f"{COLLECTION}/records/contended"
    response = await clients[0].put(url, json={"data": {"n": 0}})
    assert response.status_code == 201
    for round_ in range(8):
        etag = response.headers["ETag"]
        attempts = [
            clients[k % 2].request(
                method,
                url,
                json=None if method == "DELETE" else {"data": {"n": k}},
                headers={"If-Match": etag},
            )
            for k in range(6)
        ]
        responses = await asyncio.gather(*attempts)
        statuses = sorted(r.status_code for r in responses)
        # The losers of a delete find the object gone (404 comes before preconditions).
        lost = 404 if method == "DELETE" else 412
        assert statuses == [200] + [lost] * 5, (round_, statuses)
        response = next(r for r in responses if r.status_code == 200)
        if method == "DELETE":
            response = await clients[0].put(url, json={"data": {"n": 0}})
            assert response.status_code == 201


async def test_killed_connections_give_503_then_recover(
    clients: list[httpx.AsyncClient],
) -> None:
    records = f"{COLLECTION}/records"
    statuses: list[int] = []
    stop = asyncio.Event()

    async def traffic(client: httpx.AsyncClient) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            if n % 2:
                response = await client.post(records, json={"data": {"n": n}})
            else:
                response = await client.get(records)
            statuses.append(response.status_code)
            if response.status_code == 503:
                body = response.json()
                assert body["errno"] == 201, body
                assert "Retry-After" in response.headers
            else:
                assert response.status_code in (200, 201), response.text

    tasks = [asyncio.create_task(traffic(c)) for c in clients for _ in range(3)]
    try:
        for _ in range(5):
            await asyncio.sleep(0.3)
            await _admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                f" WHERE datname = '{DATABASE}' AND pid <> pg_backend_pid()"
            )
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert 500 not in statuses
    assert 503 in statuses, "no request ran into a killed connection: the test proved nothing"
    # Recovery: every server answers normally again, by itself.
    for client in clients:
        for _ in range(3):
            assert (await client.post(records, json={"data": {}})).status_code == 201
            assert (await client.get(records)).status_code == 200


async def test_a_group_change_in_one_process_holds_at_once_in_the_other(
    servers: list[str], clients: list[httpx.AsyncClient]
) -> None:
    """Each process keeps the group memberships it read (postgresql/reads.py): a change
    made through the other process holds at the very next request, read or write."""
    alice = clients[0]
    records = f"{COLLECTION}/records"
    assert (await alice.put(f"{records}/r", json={"data": {"v": 1}})).status_code == 201
    async with httpx.AsyncClient(base_url=servers[1], auth=("bob", "pw"), timeout=20) as bob:
        bob_id = (await bob.get("/")).json()["user"]["id"]
        group = await alice.put("/buckets/b/groups/g", json={"data": {"members": []}})
        assert group.status_code == 201, group.text
        acl = {"permissions": {"read": ["/buckets/b/groups/g"], "write": ["/buckets/b/groups/g"]}}
        assert (await alice.patch(COLLECTION, json=acl)).status_code == 200
        fresh = iter(range(100))

        async def bob_may(first: str) -> tuple[int, bool, int, int]:
            """Bob's GET of r, whether his listing has r, his PATCH of a record of
            Alice's, his create; the `first` of them first. (A record he writes is his:
            he is in its write ACL.)"""
            theirs = f"{records}/a{next(fresh)}"
            assert (await alice.put(theirs, json={"data": {}})).status_code == 201
            asks = {
                "get": lambda: bob.get(f"{records}/r"),
                "list": lambda: bob.get(records),
                "patch": lambda: bob.patch(theirs, json={"data": {"v": 2}}),
                "create": lambda: bob.put(f"{records}/b{next(fresh)}", json={"data": {}}),
            }
            answers = {first: await asks.pop(first)()}
            for name, ask in asks.items():
                answers[name] = await ask()
            listed = answers["list"]
            return (
                answers["get"].status_code,
                listed.status_code == 200 and "r" in [o["id"] for o in listed.json()["data"]],
                answers["patch"].status_code,
                answers["create"].status_code,
            )

        # The first request after a change finds what its process kept out of date.
        for first in ("get", "list", "patch", "create"):
            for members, expected in [
                ([], (403, False, 403, 403)),
                ([bob_id], (200, True, 200, 201)),
            ]:
                changed = await alice.patch(
                    "/buckets/b/groups/g", json={"data": {"members": members}}
                )
                assert changed.status_code == 200, changed.text
                assert await bob_may(first) == expected, (first, members)
                assert await bob_may(first) == expected, (first, members)  # from what it kept
