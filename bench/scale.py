"""Does a request cost what its page costs, whatever the size of the collection?

Fills one collection with N records (10k, 100k, 1M) on SQLite or PostgreSQL, then times,
through the real ASGI app: the first page of the default listing, ``HEAD`` (Total-Objects),
filtered and sorted pages (the shapes of bench/scale.py and of the shared loadbench's
``--scale``: ``category=cat-X&_sort=-score&_limit=100``), ``_since`` with about 100
changes, a pagination walk (10 pages of 100), creating a record, reading one. Prints median
milliseconds, then the query plans (EXPLAIN) of the statements these rely on.

Before timing, each listing shape is requested a few times, as any client would: that is
what makes the storage build its automatic indexes (docs/architecture.md, "Indexes for
large collections"); the benchmark waits for them and says how long they took.

    python bench/scale.py --backend sqlite --records 10000 100000
    python bench/scale.py --backend postgresql --records 100000 \
        --url postgresql://postgres@127.0.0.1/nuages_bench

The PostgreSQL database given by --url is emptied first (created when missing).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from nuages.core.objects import Comparison, Filter, Keyset, ListQuery, Sort
from nuages.settings import Settings
from nuages.web.app import create_app

USER = ("alice", "secret")
BUCKET, COLLECTION = "bench", "items"
PARENT = f"/buckets/{BUCKET}/collections/{COLLECTION}"
RECORDS = f"/v1{PARENT}/records"
CHUNK = 10_000
TAGS = ("red", "green", "blue", "black")


def record(i: int) -> dict[str, Any]:
    return {
        "title": f"item {i:07d}",
        "n": i % 1000,
        "tag": TAGS[i % 4],
        "done": i % 7 == 0,
        "category": f"cat-{i % 10}",  # as in the shared loadbench
        "score": (i * 7919) % 100003,
    }


# The listings measured (after the warm-up that lets the storage index their shapes).
FILTERED = {
    "filtered+sorted page (tag=blue&_sort=title)": "?tag=blue&_sort=title&_limit=10",
    "filtered+sorted page (category=cat-3&_sort=-score&_limit=100)": (
        "?category=cat-3&_sort=-score&_limit=100"
    ),
    "filtered range page (min_n=990&_sort=-n)": "?min_n=990&_sort=-n&_limit=10",
}


# -- filling (straight into the tables: the app's write path is measured separately) --------


async def fill_sqlite(app: Any, count: int, start_ms: int) -> None:
    import orjson

    db = app.state.backends.storage.db

    def insert(conn: Any) -> None:
        for base in range(0, count, CHUNK):
            conn.executemany(
                "INSERT INTO objects (parent_id, resource_name, id, last_modified, deleted,"
                " has_nul, data) VALUES (?, 'record', ?, ?, 0, 0, ?)",
                [
                    (PARENT, f"r{i:07d}", start_ms + i, orjson.dumps(record(i)).decode())
                    for i in range(base, min(count, base + CHUNK))
                ],
            )
        conn.execute(
            "INSERT INTO timestamps VALUES (?, 'record', ?, ?) ON CONFLICT DO UPDATE"
            " SET last_modified = excluded.last_modified,"
            " live_count = live_count + excluded.live_count",
            (PARENT, start_ms + count, count),
        )

    await db.run_write(insert)


async def fill_postgresql(app: Any, count: int, start_ms: int) -> None:
    import orjson

    from nuages.storage.postgresql import object_key, scope_key

    db = app.state.backends.storage.db
    scope = scope_key(PARENT, "record")

    async def insert(tx: Any) -> None:
        for base in range(0, count, CHUNK):
            rows = []
            for i in range(base, min(count, base + CHUNK)):
                body = orjson.dumps(record(i)).decode()
                object_id = f"r{i:07d}"
                rows.append(
                    (
                        object_key(PARENT, "record", object_id),
                        scope,
                        PARENT,
                        "record",
                        object_id,
                        None,
                        start_ms + i,
                        False,
                        False,
                        body,
                        body,
                    )
                )
            await tx.conn.copy_records_to_table(
                "objects",
                records=rows,
                columns=[
                    "key",
                    "scope",
                    "parent_id",
                    "resource_name",
                    "id",
                    "raw_id",
                    "last_modified",
                    "deleted",
                    "has_nul",
                    "body",
                    "data",
                ],
            )
        await tx.execute(
            "INSERT INTO timestamps VALUES ($1, $2, 'record', $3, $4) ON CONFLICT (scope)"
            " DO UPDATE SET last_modified = excluded.last_modified,"
            " live_count = timestamps.live_count + excluded.live_count",
            scope,
            PARENT,
            start_ms + count,
            count,
        )

    await db.run_write(insert)
    import asyncpg  # type: ignore[import-untyped]

    # What autovacuum does soon after a bulk load: statistics and the visibility map (which
    # lets count(*) be an index-only scan).
    conn = await asyncpg.connect(db.dsn)
    try:
        await conn.execute("VACUUM ANALYZE objects")
    finally:
        await conn.close()


# -- measuring ---------------------------------------------------------------------------


async def median_ms(action: Callable[[], Awaitable[Any]], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def ok(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 300:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
    return response


async def warm_up(app: Any, client: httpx.AsyncClient) -> None:
    """Request each filtered shape a few times, then wait for the automatic indexes."""
    started = time.perf_counter()
    indexer = app.state.backends.storage.indexer
    for _ in range(indexer.config.hits):
        for query in FILTERED.values():
            ok(await client.get(f"{RECORDS}{query}"))
    await indexer.wait()
    print(
        f"  automatic indexes: {len(indexer.known)} "
        f"(warm-up and builds: {time.perf_counter() - started:.1f} s)"
    )


async def measure(client: httpx.AsyncClient, count: int, repeat: int) -> dict[str, float]:
    figures: dict[str, float] = {}

    async def get(url: str) -> httpx.Response:
        return ok(await client.get(url))

    figures["list page (_limit=10)"] = await median_ms(lambda: get(f"{RECORDS}?_limit=10"), repeat)
    figures["list page (_limit=100)"] = await median_ms(
        lambda: get(f"{RECORDS}?_limit=100"), repeat
    )

    async def head() -> None:
        ok(await client.head(RECORDS))

    figures["HEAD (Total-Objects: count of the collection)"] = await median_ms(head, repeat)
    for name, query in FILTERED.items():
        figures[name] = await median_ms(lambda query=query: get(f"{RECORDS}{query}"), repeat)
    etag = (await get(f"{RECORDS}?_limit=1")).headers["ETag"].strip('"')
    for i in range(100):
        ok(await client.patch(f"{RECORDS}/r{i * (count // 100):07d}", json={"data": {"x": i}}))
    figures["_since with 100 changes"] = await median_ms(
        lambda: get(f"{RECORDS}?_since={etag}"), repeat
    )

    async def walk() -> None:
        response = await get(f"{RECORDS}?_limit=100")
        for _ in range(9):
            response = await get(response.headers["Next-Page"])

    figures["pagination walk (10 pages of 100)"] = await median_ms(walk, max(1, repeat // 3))
    created = iter(range(10**9))
    figures["create"] = await median_ms(
        lambda: client.put(f"{RECORDS}/new{next(created)}", json={"data": record(1)}), repeat
    )
    figures["get"] = await median_ms(lambda: get(f"{RECORDS}/r{count // 2:07d}"), repeat)
    return figures


# -- plans -------------------------------------------------------------------------------


def plan_queries(latest: int) -> dict[str, ListQuery]:
    """The statements behind the measured requests; `latest` is the collection timestamp."""
    return {
        "list page": ListQuery(limit=11),
        "filtered+sorted page": ListQuery(
            filters=(Filter("tag", "blue"),),
            sorting=(Sort("title", 1), Sort("last_modified", -1)),
            limit=11,
        ),
        "filtered+sorted page (loadbench shape)": ListQuery(
            filters=(Filter("category", "cat-3"),),
            sorting=(Sort("score", -1), Sort("last_modified", -1)),
            limit=101,
        ),
        "_since (about 100 changes)": ListQuery(
            filters=(Filter("last_modified", latest - 200, Comparison.GT),), include_deleted=True
        ),
        "next page (keyset, middle of the collection)": ListQuery(
            keyset=Keyset((latest - 50_000,)), limit=11
        ),
    }


async def plans(app: Any, backend: str) -> None:
    storage = app.state.backends.storage
    db = storage.db
    async with storage.transaction(write=False) as tx:
        latest = await tx.resource_timestamp("record", PARENT)
    for name, query in plan_queries(latest).items():
        module: Any
        if backend == "postgresql":
            from nuages.storage import postgresql as module
        else:
            from nuages.storage import sqlite as module
        shape = module.index_shape("record", PARENT, query)
        statement = None if shape is None else module.index_statement(shape)
        index = None if statement is None else statement[0]
        indexed = index is not None and index in storage.indexer.known
        print(f"\n-- plan: {name}" + (f" (automatic index {index})" if indexed else ""))
        hint: Any = indexed if backend == "postgresql" else (index if indexed else None)
        statements = [module.list_sql("record", PARENT, query, indexed=hint)]
        if any(f.field != "last_modified" for f in query.filters):
            # Total-Objects of a filtered listing counts; of an unfiltered one it reads
            # the scope's live_count (one row).
            statements.append(module.count_sql("record", PARENT, query))
        if backend == "postgresql":
            for sql, params in statements:

                async def explain(tx: Any, sql: str = sql, params: Any = params) -> list[Any]:
                    return await tx.fetch(f"EXPLAIN (ANALYZE, COSTS OFF) {sql}", *params)

                for row in await db.run_read(explain):
                    print("   ", row[0])
        else:
            for sql, params in statements:
                rows = await db.run_read(
                    lambda conn, sql=sql, params=params: conn.execute(
                        f"EXPLAIN QUERY PLAN {sql}", params
                    ).fetchall()
                )
                for row in rows:
                    print("   ", row[-1])


async def reset_postgresql(url: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def run(backend: str, count: int, url: str, repeat: int, show_plans: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if backend == "postgresql":
            await reset_postgresql(url)
            storage_url = url
        else:
            storage_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        settings = Settings.load(env={}, storage_url=storage_url, paginate_by=None)
        app = create_app(settings, migrate=True)
        async with app.lifespan_context():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://bench", auth=USER
            ) as client:
                ok(await client.put(f"/v1/buckets/{BUCKET}"))
                ok(await client.put(f"/v1/buckets/{BUCKET}/collections/{COLLECTION}"))
                started = time.perf_counter()
                filler = fill_postgresql if backend == "postgresql" else fill_sqlite
                await filler(app, count, int(time.time() * 1000) - count - 10_000)
                print(
                    f"\n== {backend}, {count:,} records "
                    f"(filled in {time.perf_counter() - started:.1f} s)"
                )
                await warm_up(app, client)
                for name, ms in (await measure(client, count, repeat)).items():
                    print(f"  {name:<62} {ms:9.2f} ms")
                if show_plans:
                    await plans(app, backend)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--records", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/nuages_bench")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--no-plans", action="store_true")
    args = parser.parse_args()
    for count in args.records:
        asyncio.run(run(args.backend, count, args.url, args.repeat, not args.no_plans))


if __name__ == "__main__":
    main()
