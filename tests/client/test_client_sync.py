"""``sync()`` between local stores and a real ``nuages serve`` over a socket."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from tests.client.conftest import ALICE, BUCKET, COLLECTION, FAST_RETRY

from nuages.client import (
    AsyncClient,
    AsyncLocalStore,
    Change,
    Client,
    LocalCollection,
    LocalStore,
    NotFound,
    Strategy,
    SyncConflict,
    SyncMode,
    SyncStatus,
)


@pytest.fixture
def device(tmp_path: Path):
    """``device("a")``: the ``notes`` collection of a fresh local store named ``a``."""
    stores: list[LocalStore] = []

    def open_device(name: str) -> LocalCollection:
        store = LocalStore(tmp_path / f"{name}.db")
        stores.append(store)
        return store.collection(COLLECTION)

    yield open_device
    for store in stores:
        store.close()


def sync(coll: LocalCollection, client: Client, **options: Any):
    result = coll.sync(client, bucket=BUCKET, **options)
    assert not result.errors, result.errors
    return result


def contents(coll: LocalCollection) -> dict[str, dict[str, Any]]:
    return {r["id"]: {k: v for k, v in r.items()} for r in coll.list()}


def server_contents(client: Client) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in client.get_records(BUCKET, COLLECTION)}


def assert_converged(client: Client, *devices: LocalCollection) -> None:
    expected = server_contents(client)
    for coll in devices:
        assert contents(coll) == expected
        assert coll.list(status=[s for s in SyncStatus if s != SyncStatus.SYNCED]) == []


def shared_record(client, a, b, **fields):
    """A record created on ``a``, synced to the server and to ``b``."""
    record = a.create({"title": "original", **fields})
    sync(a, client)
    sync(b, client)
    return record["id"]


def test_two_devices_editing_offline_converge(client, device):
    a, b = device("a"), device("b")
    for i in range(5):
        a.create({"title": f"a{i}", "n": i})
    for i in range(3):
        b.create({"title": f"b{i}", "n": 10 + i})
    first = sync(a, client)
    assert first.pushed.counts() == {"created": 5, "updated": 0, "deleted": 0}
    second = sync(b, client)
    assert len(second.pulled.created) == 5
    assert len(second.pushed.created) == 3
    sync(a, client)
    assert_converged(client, a, b)
    assert len(server_contents(client)) == 8
    # Nothing left to do: a new sync changes nothing and answers 304 on the pull.
    again = sync(a, client)
    assert len(again.pulled) == len(again.pushed) == 0


def test_offline_updates_and_deletions_travel(client, device):
    a, b = device("a"), device("b")
    ids = [a.create({"title": f"t{i}"})["id"] for i in range(4)]
    sync(a, client)
    sync(b, client)
    a.update({"id": ids[0], "title": "edited on a"})
    a.delete(ids[1])
    b.update({"id": ids[2], "title": "edited on b", "extra": [1, 2]})
    b.delete(ids[3])
    sync(a, client)
    result = sync(b, client)
    assert [r["id"] for r in result.pulled.updated] == [ids[0]]
    assert [r["id"] for r in result.pulled.deleted] == [ids[1]]
    sync(a, client)
    assert_converged(client, a, b)
    assert set(server_contents(client)) == {ids[0], ids[2]}
    assert b.get(ids[0])["title"] == "edited on a"
    assert a.get(ids[2])["extra"] == [1, 2]


def test_conflict_server_wins(client, device):
    a, b = device("a"), device("b")
    rid = shared_record(client, a, b)
    a.update({"id": rid, "title": "from a"})
    b.update({"id": rid, "title": "from b"})
    sync(a, client)
    result = sync(b, client, strategy=Strategy.SERVER_WINS)
    assert [c.id for c in result.resolved] == [rid]
    assert result.resolved[0].local["title"] == "from b"
    assert result.resolved[0].remote["title"] == "from a"
    assert result.conflicts == []
    assert b.get(rid)["title"] == "from a"
    assert b.status(rid) == SyncStatus.SYNCED
    assert_converged(client, a, b)


def test_conflict_client_wins(client, device):
    a, b = device("a"), device("b")
    rid = shared_record(client, a, b)
    a.update({"id": rid, "title": "from a"})
    b.update({"id": rid, "title": "from b"})
    sync(a, client)
    result = sync(b, client, strategy=Strategy.CLIENT_WINS)
    assert [c.id for c in result.resolved] == [rid]
    assert [r["title"] for r in result.pushed.updated] == ["from b"]
    sync(a, client)
    assert client.get_record(BUCKET, COLLECTION, rid)["title"] == "from b"
    assert_converged(client, a, b)


def test_conflict_manual_is_kept_until_resolved(client, device):
    a, b = device("a"), device("b")
    rid = shared_record(client, a, b)
    a.update({"id": rid, "title": "from a"})
    b.update({"id": rid, "title": "from b"})
    sync(a, client)
    result = b.sync(client, bucket=BUCKET, strategy=Strategy.MANUAL)
    assert not result.ok
    [conflict] = result.conflicts
    assert conflict.local["title"] == "from b"
    assert conflict.remote["title"] == "from a"
    assert conflict.remote_timestamp == client.get_record(BUCKET, COLLECTION, rid)["last_modified"]
    # Kept in the store (survives a restart), not pushed, local version untouched.
    assert b.conflicts() == [conflict]
    assert b.get(rid)["title"] == "from b"
    assert sync(b, client).pushed.counts()["updated"] == 0
    assert client.get_record(BUCKET, COLLECTION, rid)["title"] == "from a"
    b.resolve(rid, {"title": "from a and b"})
    assert b.conflicts() == []
    assert b.status(rid) == SyncStatus.UPDATED
    sync(b, client)
    sync(a, client)
    assert a.get(rid)["title"] == "from a and b"
    assert_converged(client, a, b)


def test_resolving_with_the_remote_version_pushes_nothing(client, device):
    a, b = device("a"), device("b")
    rid = shared_record(client, a, b)
    a.update({"id": rid, "title": "from a"})
    b.update({"id": rid, "title": "from b"})
    sync(a, client)
    [conflict] = b.sync(client, bucket=BUCKET).conflicts
    b.resolve(rid, conflict.remote)
    assert b.status(rid) == SyncStatus.SYNCED
    assert len(sync(b, client).pushed) == 0
    assert_converged(client, a, b)


def test_merge_callback_combines_both_versions(client, device):
    a, b = device("a"), device("b")
    rid = shared_record(client, a, b, body="")
    a.update({"id": rid, "title": "title from a", "body": ""})
    b.update({"id": rid, "title": "original", "body": "body from b"})
    sync(a, client)
    seen: list[SyncConflict] = []

    def merge(conflict: SyncConflict) -> dict[str, Any]:
        seen.append(conflict)
        return {"title": conflict.remote["title"], "body": conflict.local["body"]}

    result = sync(b, client, merge=merge, strategy=Strategy.MANUAL)
    assert [c.id for c in seen] == [rid]
    assert result.conflicts == []
    sync(a, client)
    assert a.get(rid)["title"] == "title from a"
    assert a.get(rid)["body"] == "body from b"
    assert_converged(client, a, b)


def test_merge_callback_may_defer_to_the_strategy(client, device):
    a, b = device("a"), device("b")
    rid = shared_record(client, a, b)
    a.update({"id": rid, "title": "from a"})
    b.update({"id": rid, "title": "from b"})
    sync(a, client)
    sync(b, client, merge=lambda conflict: None, strategy=Strategy.SERVER_WINS)
    assert b.get(rid)["title"] == "from a"


@pytest.mark.parametrize("strategy", [Strategy.SERVER_WINS, Strategy.CLIENT_WINS])
def test_local_update_against_remote_deletion(client, device, strategy):
    a, b = device("a"), device("b")
    rid = shared_record(client, a, b)
    a.delete(rid)
    sync(a, client)
    b.update({"id": rid, "title": "still needed"})
    result = sync(b, client, strategy=strategy)
    [conflict] = result.resolved
    assert conflict.remote is None
    assert conflict.local["title"] == "still needed"
    sync(a, client)
    if strategy == Strategy.SERVER_WINS:
        assert b.get(rid) is None
        assert server_contents(client) == {}
    else:
        assert client.get_record(BUCKET, COLLECTION, rid)["title"] == "still needed"
        assert a.get(rid)["title"] == "still needed"
    assert_converged(client, a, b)


@pytest.mark.parametrize("strategy", [Strategy.SERVER_WINS, Strategy.CLIENT_WINS])
def test_local_deletion_against_remote_update(client, device, strategy):
    a, b = device("a"), device("b")
    rid = shared_record(client, a, b)
    a.update({"id": rid, "title": "updated on a"})
    sync(a, client)
    b.delete(rid)
    result = sync(b, client, strategy=strategy)
    [conflict] = result.resolved
    assert conflict.local is None
    assert conflict.remote["title"] == "updated on a"
    sync(a, client)
    if strategy == Strategy.SERVER_WINS:
        assert b.get(rid)["title"] == "updated on a"
    else:
        assert server_contents(client) == {}
        assert a.get(rid) is None
    assert_converged(client, a, b)


def test_push_only_conflicts_are_found_by_the_servers_412(client, device):
    a, b = device("a"), device("b")
    rid = shared_record(client, a, b)
    a.update({"id": rid, "title": "from a"})
    sync(a, client)
    b.update({"id": rid, "title": "from b"})
    result = sync(b, client, mode=SyncMode.PUSH, strategy=Strategy.MANUAL)
    [conflict] = result.conflicts
    assert conflict.remote["title"] == "from a"
    result = sync(b, client, mode=SyncMode.PUSH, strategy=Strategy.CLIENT_WINS)
    assert client.get_record(BUCKET, COLLECTION, rid)["title"] == "from b"


def test_deleted_on_both_sides_is_no_conflict(client, device):
    a, b = device("a"), device("b")
    rid = shared_record(client, a, b)
    a.delete(rid)
    b.delete(rid)
    sync(a, client)
    result = sync(b, client)
    assert result.ok
    assert b.status(rid) is None
    assert_converged(client, a, b)


def test_pull_only_and_push_only(client, device):
    a, b = device("a"), device("b")
    a.create({"title": "from a"})
    pulled = sync(a, client, mode=SyncMode.PULL)
    assert len(pulled.pushed) == 0
    assert server_contents(client) == {}
    pushed = sync(a, client, mode=SyncMode.PUSH)
    assert len(pushed.pushed.created) == 1
    b.create({"title": "from b"})
    only_in = sync(b, client, mode="pull")
    assert len(only_in.pulled.created) == 1
    assert b.status(only_in.pulled.created[0]["id"]) == SyncStatus.SYNCED
    assert len(server_contents(client)) == 1
    assert b.count() == 2


def test_a_thousand_records_across_pages(client, device):
    a, b = device("a"), device("b")
    with a.transaction():
        for i in range(1200):
            a.create({"title": f"note {i}", "n": i, "even": i % 2 == 0})
    result = sync(a, client)
    assert len(result.pushed.created) == 1200
    pulled = sync(b, client)
    assert len(pulled.pulled.created) == 1200
    assert b.count({"even": True}) == 600
    assert [r["n"] for r in b.list({"min_n": 1195}, sort="-n")] == [1199, 1198, 1197, 1196, 1195]
    assert client.count_records(BUCKET, COLLECTION) == 1200
    # A deletion of many and an update travel back the same way.
    with b.transaction():
        for record in b.list({"lt_n": 300}):
            b.delete(record["id"])
    sync(b, client)
    assert sync(a, client).pulled.counts()["deleted"] == 300
    assert a.count() == 900
    assert client.count_records(BUCKET, COLLECTION) == 900


def test_page_size_is_honoured(client, device):
    a, b = device("a"), device("b")
    with a.transaction():
        for i in range(23):
            a.create({"n": i})
    sync(a, client)
    assert len(sync(b, client, page_size=3).pulled.created) == 23


class XorCipher:
    """A toy transformer standing for client-side encryption: the server sees only ``payload``."""

    key = 0x5A

    def encode(self, record: dict[str, Any]) -> dict[str, Any]:
        fields = {k: v for k, v in record.items() if k != "id"}
        raw = bytes(b ^ self.key for b in json.dumps(fields).encode())
        return {"id": record["id"], "payload": base64.b64encode(raw).decode()}

    def decode(self, record: dict[str, Any]) -> dict[str, Any]:
        raw = bytes(b ^ self.key for b in base64.b64decode(record["payload"]))
        return {"id": record["id"], **json.loads(raw)}


def test_transformers_apply_on_the_way_out_and_in(client, device):
    a, b = device("a"), device("b")
    rid = a.create({"title": "secret plan", "tags": ["x"]})["id"]
    sync(a, client, transformers=[XorCipher()])
    stored = client.get_record(BUCKET, COLLECTION, rid)
    assert set(stored) == {"id", "last_modified", "payload"}
    assert "secret" not in json.dumps(stored)
    assert a.get(rid)["title"] == "secret plan"
    sync(b, client, transformers=[XorCipher()])
    assert b.get(rid)["title"] == "secret plan"
    b.update({"id": rid, "title": "new plan", "tags": ["x"]})
    a.update({"id": rid, "title": "other plan", "tags": ["x"]})
    sync(b, client, transformers=[XorCipher()])
    result = sync(a, client, transformers=[XorCipher()], strategy=Strategy.MANUAL)
    [conflict] = result.conflicts
    assert conflict.remote["title"] == "new plan"  # decoded before comparing


def test_change_events_report_pulled_changes(client, device):
    a, b = device("a"), device("b")
    rid = shared_record(client, a, b)
    changes: list[Change] = []
    b.on_change(changes.append)
    a.update({"id": rid, "title": "changed"})
    other = a.create({"title": "new"})["id"]
    sync(a, client)
    sync(b, client)
    assert {(c.action, c.id, c.origin) for c in changes} == {
        ("update", rid, "remote"),
        ("create", other, "remote"),
    }
    a.delete(rid)
    sync(a, client)
    changes.clear()
    sync(b, client)
    assert [(c.action, c.id, c.old["title"]) for c in changes] == [("delete", rid, "changed")]


def test_local_edit_during_push_is_not_lost(client, device):
    a = device("a")
    rid = a.create({"title": "v1"})["id"]

    class EditWhilePushing:
        def encode(self, record):
            if record["title"] == "v1":
                a.update({"id": rid, "title": "v2"})  # the user edits while the batch is built
            return record

        def decode(self, record):
            return record

    result = sync(a, client, transformers=[EditWhilePushing()], mode=SyncMode.PUSH)
    # v1 went out, v2 was written meanwhile: it stays pending and goes out in the next round.
    assert [r["title"] for r in result.pushed.created] == ["v1"]
    assert [r["title"] for r in result.pushed.updated] == ["v2"]
    assert a.get(rid)["title"] == "v2"
    assert a.status(rid) == SyncStatus.SYNCED
    assert client.get_record(BUCKET, COLLECTION, rid)["title"] == "v2"


def test_sync_with_a_missing_collection_raises_not_found(client, device):
    a = device("a")
    a.create({"title": "x"})
    with pytest.raises(NotFound):
        a.sync(client, bucket=BUCKET, collection="absent")


def test_a_store_syncs_with_one_remote_only(client, device):
    a = device("a")
    sync(a, client)
    client.create_collection(BUCKET, "other")
    with pytest.raises(Exception, match="syncs with"):
        a.sync(client, bucket=BUCKET, collection="other")


def test_state_survives_reopening_the_store(client, tmp_path):
    path = tmp_path / "a.db"
    with LocalStore(path) as store:
        coll = store.collection(COLLECTION)
        rid = coll.create({"title": "kept"})["id"]
        sync(coll, client)
        stamp = coll.last_modified
    with LocalStore(path) as store:
        coll = store.collection(COLLECTION)
        assert coll.last_modified == stamp
        assert coll.status(rid) == SyncStatus.SYNCED
        assert len(sync(coll, client).pulled) == 0


async def test_async_devices_converge(server, tmp_path):
    async with (
        AsyncClient(server.url, auth=ALICE, retry=FAST_RETRY) as client,
        AsyncLocalStore(tmp_path / "a.db") as store_a,
        AsyncLocalStore(tmp_path / "b.db") as store_b,
    ):
        await client.create_bucket(BUCKET)
        await client.create_collection(BUCKET, COLLECTION)
        a, b = store_a.collection(COLLECTION), store_b.collection(COLLECTION)
        rid = (await a.create({"title": "async"}))["id"]
        for i in range(30):
            await b.create({"n": i})
        await a.sync(client, bucket=BUCKET)
        await b.sync(client, bucket=BUCKET, page_size=7)
        await a.sync(client, bucket=BUCKET)
        assert await a.count() == await b.count() == 31
        await a.update({"id": rid, "title": "from a"})
        await b.update({"id": rid, "title": "from b"})
        await a.sync(client, bucket=BUCKET)
        result = await b.sync(client, bucket=BUCKET, strategy=Strategy.MANUAL)
        assert [c.id for c in result.conflicts] == [rid]
        await b.resolve(rid, {"title": "settled"})
        await b.sync(client, bucket=BUCKET)
        await a.sync(client, bucket=BUCKET)
        assert (await a.get(rid))["title"] == "settled"
        assert await a.last_modified() == await b.last_modified()
        server_records = {r["id"]: r for r in await client.get_records(BUCKET, COLLECTION)}
        assert {r["id"]: r for r in await a.list()} == server_records
        assert {r["id"]: r for r in await b.list()} == server_records
