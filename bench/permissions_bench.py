"""How fast is ``GET /v1/permissions`` for a user who can write 100,000 objects?

Kinto is known to be slow there (it expands every ACL of the user). This script fills a
fresh backend with N records, each with its own ACL naming the user (as records the user
created), plus some noise owned by another user, then times the endpoint through the real
ASGI app: the whole list, one page (``_limit=10``), a filtered list and ``HEAD``.

    python bench/permissions_bench.py --backend sqlite --objects 100000

Prints one line per measurement (best of ``--repeat`` runs, milliseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from nuages.core.authorization import basicauth_userid
from nuages.settings import Settings
from nuages.web.app import create_app

USER = ("alice", "secret")
OTHER = "basicauth:someone-else"
CHUNK = 5000


async def fill(app: object, objects: int) -> None:
    """N records of one collection writable by the user, and N/10 of someone else."""
    backends = app.state.backends  # type: ignore[attr-defined]
    user_id = basicauth_userid("", f"{USER[0]}:{USER[1]}")
    parent = "/buckets/b/collections/c"
    async with (
        backends.storage.transaction(write=True) as st,
        backends.permission.transaction(write=True) as pt,
    ):
        await st.create("bucket", "", {"id": "b"})
        await pt.add_principal_to_ace("/buckets/b", "write", user_id)
        await st.create("collection", "/buckets/b", {"id": "c"})
    for start in range(0, objects + objects // 10, CHUNK):
        async with (
            backends.storage.transaction(write=True) as st,
            backends.permission.transaction(write=True) as pt,
        ):
            for i in range(start, min(start + CHUNK, objects + objects // 10)):
                owner = user_id if i < objects else OTHER
                await st.create("record", parent, {"id": f"r{i:07d}"})
                await pt.add_principal_to_ace(f"{parent}/records/r{i:07d}", "write", owner)


async def timed(client: httpx.AsyncClient, method: str, url: str, repeat: int) -> tuple[float, int]:
    best, size = float("inf"), 0
    for _ in range(repeat):
        start = time.perf_counter()
        response = await client.request(method, url)
        best = min(best, time.perf_counter() - start)
        assert response.status_code == 200, response.text
        size = len(response.json()["data"]) if method == "GET" else 0
    return best * 1000, size


async def main(backend: str, objects: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = "memory://" if backend == "memory" else f"sqlite:///{Path(tmp) / 'bench.db'}"
        settings = Settings.load(env={}, storage_url=url, experimental_permissions_endpoint=True)
        app = create_app(settings, migrate=True)
        async with app.lifespan_context():
            start = time.perf_counter()
            await fill(app, objects)
            print(f"fill {objects} records ({backend}): {time.perf_counter() - start:.1f} s")
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://bench", auth=USER, timeout=600
            ) as client:
                for label, method, path in (
                    ("full list", "GET", "/v1/permissions"),
                    ("first page (_limit=10)", "GET", "/v1/permissions?_limit=10"),
                    (
                        "filtered (resource_name=bucket)",
                        "GET",
                        "/v1/permissions?resource_name=bucket",
                    ),
                    ("HEAD (count)", "HEAD", "/v1/permissions"),
                ):
                    ms, size = await timed(client, method, path, repeat)
                    print(f"{label:34} {ms:9.1f} ms  {size} entries")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("memory", "sqlite"), default="sqlite")
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.backend, args.objects, args.repeat))
