"""The local store alone: CRUD and statuses, filters and sorts in SQL, transactions, events."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nuages.client import (
    AsyncLocalStore,
    Change,
    FilterError,
    LocalCollection,
    LocalStore,
    RecordExists,
    RecordNotFound,
    SyncStatus,
)
from nuages.client._query import compile_filters, compile_sort, json_path


@pytest.fixture
def store(tmp_path: Path):
    with LocalStore(tmp_path / "local.db") as opened:
        yield opened


@pytest.fixture
def notes(store: LocalStore) -> LocalCollection:
    return store.collection("notes")


# -- CRUD and statuses ---------------------------------------------------------------------------


def test_create_gives_a_uuid4_and_status_created(notes):
    record = notes.create({"title": "hello"})
    assert len(record["id"]) == 36 and record["id"][14] == "4"
    assert record == {"id": record["id"], "title": "hello"}
    assert notes.get(record["id"]) == record
    assert notes.status(record["id"]) == SyncStatus.CREATED
    assert record["id"] in notes
    assert len(notes) == 1


def test_create_with_an_id_and_duplicates(notes):
    notes.create({"id": "note-1", "title": "a"})
    with pytest.raises(RecordExists):
        notes.create({"title": "b"}, id="note-1")
    with pytest.raises(ValueError, match="invalid record id"):
        notes.create({"id": "no spaces"})


def test_last_modified_in_input_is_ignored(notes):
    record = notes.create({"title": "a", "last_modified": 123})
    assert "last_modified" not in record


def test_update_and_patch(notes):
    rid = notes.create({"title": "a", "body": "b"})["id"]
    assert notes.update({"id": rid, "title": "c"}) == {"id": rid, "title": "c"}
    assert notes.update({"id": rid, "body": "d"}, patch=True) == {
        "id": rid,
        "title": "c",
        "body": "d",
    }
    assert notes.status(rid) == SyncStatus.CREATED  # never pushed: still a creation
    with pytest.raises(RecordNotFound):
        notes.update({"id": "missing", "title": "x"})
    with pytest.raises(ValueError):
        notes.update({"title": "no id"})


def mark_synced(notes: LocalCollection, rid: str, stamp: int = 100) -> None:
    with notes.transaction():
        row = notes._row(rid)
        assert row is not None
        from dataclasses import replace

        notes._put(replace(row, status=SyncStatus.SYNCED, last_modified=stamp))


def test_statuses_of_synced_records(notes):
    rid = notes.create({"title": "a"})["id"]
    mark_synced(notes, rid)
    assert notes.get(rid)["last_modified"] == 100
    notes.update({"id": rid, "title": "a"})
    assert notes.status(rid) == SyncStatus.SYNCED  # same content: nothing to push
    notes.update({"id": rid, "title": "b"})
    assert notes.status(rid) == SyncStatus.UPDATED
    notes.delete(rid)
    assert notes.status(rid) == SyncStatus.DELETED
    assert notes.get(rid) is None
    assert notes.list() == []
    assert [r["id"] for r in notes.list(include_deleted=True)] == [rid]
    with pytest.raises(RecordNotFound):
        notes.delete(rid)
    # Re-created before the deletion was pushed: an update of the server's version.
    notes.create({"title": "back"}, id=rid)
    assert notes.status(rid) == SyncStatus.UPDATED


def test_deleting_a_never_pushed_record_forgets_it(notes):
    rid = notes.create({"title": "a"})["id"]
    notes.delete(rid)
    assert notes.status(rid) is None
    # Once its push was sent (outcome unknown), a deletion must reach the server.
    rid = notes.create({"title": "b"})["id"]
    notes._mark_in_flight([rid])
    notes.delete(rid)
    assert notes.status(rid) == SyncStatus.DELETED


def test_list_by_status(notes):
    created = notes.create({"n": 1})["id"]
    synced = notes.create({"n": 2})["id"]
    mark_synced(notes, synced)
    assert [r["id"] for r in notes.list(status=SyncStatus.CREATED)] == [created]
    assert [r["id"] for r in notes.list(status=[SyncStatus.SYNCED])] == [synced]


def test_clear_and_reset_sync_status(notes):
    a = notes.create({"n": 1})["id"]
    b = notes.create({"n": 2})["id"]
    mark_synced(notes, a)
    mark_synced(notes, b)
    notes.delete(b)
    notes.reset_sync_status()
    assert notes.list(status=SyncStatus.CREATED) == [{"id": a, "n": 1}]
    assert notes.status(b) is None
    notes.clear()
    assert notes.list(include_deleted=True) == []


def test_collections_of_one_store_are_separate(store):
    store.collection("a").create({"id": "x", "v": 1})
    store.collection("b").create({"id": "x", "v": 2})
    assert store.collection("a").get("x")["v"] == 1
    assert store.collection("b").get("x")["v"] == 2


def test_reopened_store_keeps_everything(tmp_path):
    path = tmp_path / "reopen.db"
    with LocalStore(path) as first:
        rid = first.collection("c").create({"nested": {"k": [1, 2]}})["id"]
    with LocalStore(path) as second:
        assert second.collection("c").get(rid) == {"id": rid, "nested": {"k": [1, 2]}}
        assert second._conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert second._conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL


# -- filters and sorts ---------------------------------------------------------------------------

RECORDS: list[dict[str, Any]] = [
    {
        "id": "a",
        "title": "Mozilla Firefox",
        "n": 1,
        "done": True,
        "tags": ["x", "y"],
        "o": {"k": 1},
    },
    {"id": "b", "title": "mozilla", "n": 2.5, "done": False, "tags": ["y"], "o": {"k": 2}},
    {"id": "c", "title": "Other", "n": "2", "done": None, "tags": []},
    {"id": "d", "n": 10, "tags": "x"},
    {"id": "e", "title": "50% off_sale", "n": -1, "done": False, "o": {"k": {"deep": True}}},
]


@pytest.fixture
def filled(notes):
    for record in RECORDS:
        notes.create(record)
    return notes


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, "abcde"),
        ({"n": 1}, "a"),
        ({"n": "2"}, "c"),  # type-strict: the string "2" is not the number 2
        ({"n": 2.5}, "b"),
        ({"done": False}, "be"),
        ({"done": None}, "c"),
        ({"not_done": False}, "acd"),  # missing fields match not_
        ({"in_n": [1, 10]}, "ad"),
        ({"exclude_n": [1, 10]}, "bce"),
        ({"gt_n": 1}, "bd"),
        ({"min_n": 1}, "abd"),
        ({"lt_n": 2}, "ace"),  # strings sort before numbers
        ({"max_n": 1}, "ace"),
        ({"gt_title": "a"}, "bd"),  # missing sorts last, so it is greater
        ({"like_title": "mozilla"}, "ab"),  # case-insensitive substring
        ({"like_title": "moz*fox"}, "a"),
        ({"like_title": "50%"}, "e"),  # % and _ are literal
        ({"like_title": "off_"}, "e"),
        ({"like_title": "off%"}, ""),
        ({"has_title": True}, "abce"),
        ({"has_title": False}, "d"),
        ({"has_done": True}, "abce"),  # present even when null
        ({"contains_tags": ["x", "y"]}, "a"),
        ({"contains_tags": "y"}, "ab"),
        ({"contains_any_tags": ["x", "z"]}, "a"),  # "x" in d is not an array
        ({"o.k": 2}, "b"),
        ({"o.k.deep": True}, "e"),
        ({"o": {"k": 1}}, "a"),
        ({"tags": []}, "c"),
        ({"id": "c"}, "c"),
        ({"in_id": ["a", "e"]}, "ae"),
        ({"like_id": "*"}, "abcde"),
        ({"done": False, "lt_n": 0}, "e"),
    ],
)
def test_filters(filled, filters, expected):
    assert "".join(r["id"] for r in filled.list(filters)) == expected
    assert filled.count(filters) == len(expected)


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        (None, "abcde"),
        ("n", "ceabd"),  # strings, then numbers
        ("-n", "dbaec"),
        ("title", "eacbd"),  # byte order; missing last
        ("-title", "dbcae"),
        (["done", "-id"], "cebad"),  # null < false < true < missing
        ("o.k", "abecd"),  # numbers < objects < missing
    ],
)
def test_sorts(filled, sort, expected):
    assert "".join(r["id"] for r in filled.list(sort=sort)) == expected


def test_limit_and_offset(filled):
    assert [r["id"] for r in filled.list(sort="id", limit=2, offset=1)] == ["b", "c"]
    assert [r["id"] for r in filled.list(sort="id", offset=3)] == ["d", "e"]


def test_filters_are_evaluated_by_sqlite(filled, store):
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    try:
        assert [r["id"] for r in filled.list({"min_n": 2}, sort="-n")] == ["d", "b"]
    finally:
        store._conn.set_trace_callback(None)
    [select] = [s for s in statements if s.startswith("SELECT")]
    assert "json_extract(r.data, '$.\"n\"')" in select
    assert "ORDER BY" in select


def test_invalid_filters_and_sorts():
    with pytest.raises(FilterError):
        compile_filters({"like_title": 3})
    with pytest.raises(FilterError):
        compile_sort("bad field!")
    with pytest.raises(FilterError):
        json_path("a..b")
    assert json_path('we"ird.x') == '$."we\\"ird"."x"'


json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.sampled_from(["a", "b", "B", ""]),
)


def _rank(value: Any, present: bool) -> tuple[int, Any]:
    if not present:
        return (6, 0)
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (3, value)
    if isinstance(value, str):
        return (1, value)
    return (2, value)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(st.one_of(st.just("missing"), json_values), min_size=1, max_size=8),
    probe=json_values,
)
def test_comparisons_follow_the_servers_ordering(tmp_path_factory, values, probe):
    """Oracle: the server's cross-type order (null < strings < numbers < booleans < missing)."""
    with LocalStore(tmp_path_factory.mktemp("prop") / "p.db") as store:
        coll = store.collection("p")
        for i, value in enumerate(values):
            coll.create({} if value == "missing" else {"v": value}, id=f"r{i}")
        ranked = {f"r{i}": _rank(value, value != "missing") for i, value in enumerate(values)}
        probe_rank = _rank(probe, True)
        for operator, test in [
            ("gt", lambda r: r > probe_rank),
            ("min", lambda r: r >= probe_rank),
            ("lt", lambda r: r < probe_rank),
            ("max", lambda r: r <= probe_rank),
        ]:
            got = {r["id"] for r in coll.list({f"{operator}_v": probe})}
            assert got == {rid for rid, rank in ranked.items() if test(rank)}, operator
        ordered = [r["id"] for r in coll.list(sort="v")]
        assert ordered == sorted(ranked, key=lambda rid: (ranked[rid], rid))


# -- transactions and events ---------------------------------------------------------------------


def test_transaction_rolls_back_everything(notes):
    kept = notes.create({"n": 0})["id"]
    with pytest.raises(RuntimeError), notes.transaction():
        notes.create({"n": 1})
        notes.update({"id": kept, "n": 99})
        raise RuntimeError("abort")
    assert notes.list() == [{"id": kept, "n": 0}]


def test_nested_transactions_are_savepoints(store, notes):
    with store.transaction():
        notes.create({"id": "outer"})
        with pytest.raises(KeyError), store.transaction():
            notes.create({"id": "inner"})
            raise KeyError("inner only")
        notes.create({"id": "after"})
    assert sorted(r["id"] for r in notes.list()) == ["after", "outer"]


def test_events_after_commit_only(notes):
    changes: list[Change] = []
    unsubscribe = notes.on_change(changes.append)
    rid = notes.create({"n": 1})["id"]
    notes.update({"id": rid, "n": 2})
    with notes.transaction():
        notes.delete(rid)
        assert [c.action for c in changes] == ["create", "update"]  # not yet committed
    assert [(c.action, c.origin) for c in changes] == [
        ("create", "local"),
        ("update", "local"),
        ("delete", "local"),
    ]
    assert changes[1].old == {"id": rid, "n": 1}
    assert changes[1].record == {"id": rid, "n": 2}
    assert changes[2].record is None
    with pytest.raises(RuntimeError), notes.transaction():
        notes.create({"n": 3})
        raise RuntimeError
    assert len(changes) == 3  # rolled back: no event
    unsubscribe()
    notes.create({"n": 4})
    assert len(changes) == 3


def test_threads_share_a_store(notes):
    def writer(k: int) -> None:
        for i in range(20):
            notes.create({"k": k, "i": i})

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert notes.count() == 80


def test_two_connections_to_one_file(tmp_path):
    with LocalStore(tmp_path / "s.db") as one, LocalStore(tmp_path / "s.db") as two:
        one.collection("c").create({"id": "x"})
        assert two.collection("c").get("x") == {"id": "x"}


async def test_async_store(tmp_path):
    async with AsyncLocalStore(tmp_path / "a.db") as store:
        notes = store.collection("notes")
        changes: list[Change] = []
        notes.on_change(changes.append)
        rid = (await notes.create({"title": "a", "n": 1}))["id"]
        await notes.update({"id": rid, "n": 2}, patch=True)
        assert await notes.get(rid) == {"id": rid, "title": "a", "n": 2}
        assert await notes.status(rid) == SyncStatus.CREATED
        async with notes.transaction():
            await notes.create({"n": 5})
            await notes.create({"n": 6})
        with pytest.raises(RuntimeError):
            async with notes.transaction():
                await notes.create({"n": 7})
                raise RuntimeError
        assert [r["n"] for r in await notes.list({"min_n": 2}, sort="n")] == [2, 5, 6]
        assert await notes.count() == 3
        await notes.delete(rid)
        assert await notes.get(rid) is None
        assert [c.action for c in changes] == ["create", "update", "create", "create", "delete"]
        assert await notes.last_modified() is None
