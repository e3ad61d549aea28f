"""Change events (nuages.core.events): every write path emits, inside its transaction."""

from __future__ import annotations

from typing import Any

import httpx
from tests.conftest import ALICE, AppFactory, userid

from nuages.core.errors import ValidationError
from nuages.core.events import Change

RECORDS = "/v1/buckets/b/collections/c/records"


def events_of(client: httpx.AsyncClient) -> Any:
    return client.app.state.dispatcher.service.events  # type: ignore[attr-defined]


async def test_every_write_path_emits(make_client: AppFactory) -> None:
    seen: list[Change] = []

    async def listener(tx: Any, change: Change) -> None:
        seen.append(change)

    async with make_client() as c:
        events_of(c).on_change(listener, resources=("record", "collection"))
        await c.put("/v1/buckets/b")  # not listened to
        await c.put("/v1/buckets/b/collections/c")
        r1 = (await c.put(f"{RECORDS}/r1", json={"data": {"n": 1}})).json()["data"]
        await c.patch(f"{RECORDS}/r1", json={"data": {"n": 2}})
        await c.post(RECORDS, json={"data": {"id": "r2"}})
        await c.post(RECORDS, json={"data": {"id": "r2"}})  # existing: no write, no event
        await c.delete(f"{RECORDS}/r1")
        batch = {"requests": [{"method": "PUT", "path": RECORDS[3:] + "/r3"}]}
        await c.post("/v1/batch", json=batch)
        await c.delete(RECORDS)
        found = [(e.resource_name, e.action, e.ids.get("record")) for e in seen]
        assert found == [
            ("collection", "create", None),
            ("record", "create", "r1"),
            ("record", "update", "r1"),
            ("record", "create", "r2"),
            ("record", "delete", "r1"),
            ("record", "create", "r3"),
            ("record", "delete", "r3"),
            ("record", "delete", "r2"),
        ]
        first = seen[1]
        assert first.uri == "/buckets/b/collections/c/records/r1"
        assert first.ids == {"bucket": "b", "collection": "c", "record": "r1"}
        assert first.old is None and first.new == r1
        assert first.timestamp == r1["last_modified"]
        assert first.user_id == userid(ALICE)
        assert seen[2].old == r1 and seen[4].new is not None and seen[4].new["deleted"] is True


async def test_a_change_listener_error_rolls_the_write_back(make_client: AppFactory) -> None:
    async def refuse(tx: Any, change: Change) -> None:
        await tx.storage.create("audit", "", {"id": "trace"})
        raise ValidationError("refused", location="body", name="data")

    async with make_client() as c:
        await c.put("/v1/buckets/b")
        events_of(c).on_change(refuse, resources=("collection",))
        r = await c.put("/v1/buckets/b/collections/c")
        assert r.status_code == 400
        assert (await c.get("/v1/buckets/b/collections/c")).status_code == 404


async def test_prepare_listener_adjusts_or_rejects(make_client: AppFactory) -> None:
    async def stamp(tx: Any, change: Change) -> dict[str, Any] | None:
        assert change.new is not None
        if change.new.get("bad"):
            raise ValidationError("bad is not allowed", location="body", name="bad")
        return {**change.new, "stamped": change.action}

    async with make_client() as c:
        events_of(c).on_prepare(stamp, resources=("bucket",))
        r = await c.put("/v1/buckets/b", json={"data": {"x": 1}})
        assert r.json()["data"]["stamped"] == "create"
        r = await c.patch("/v1/buckets/b", json={"data": {"x": 2}})
        assert r.json()["data"]["stamped"] == "update"
        r = await c.put("/v1/buckets/b2", json={"data": {"bad": True}})
        assert r.status_code == 400
        assert (await c.get("/v1/buckets/b2")).status_code == 403
