"""Contract tests every storage backend passes.

Subclass :class:`StorageContract` in a test module (its name must start with ``Test``)
and provide a ``storage`` fixture yielding a fresh, empty backend; the tests are
coroutines run by pytest-asyncio. Expected results are spelled out here rather than
computed with :mod:`nuages.core.filtering`, so that the memory reference backend is
checked too.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from nuages.core.errors import ObjectNotFound, UnicityError
from nuages.core.filtering import sort_values
from nuages.core.objects import MISSING, Comparison, Filter, Keyset, ListQuery, Sort
from nuages.storage import reads
from nuages.storage.protocol import JSONObject, Storage

RESOURCE = "record"
PARENT = "/buckets/b/collections/c"

C = Comparison

# A small, varied collection, created in this order (so last_modified increases a..g).
SAMPLE: tuple[JSONObject, ...] = (
    {"id": "a", "n": 1, "s": "apple", "b": True, "nul": None, "tags": ["x", "y"],
     "d": {"k": 1, "z": {"w": "deep"}}},
    {"id": "b", "n": 2.5, "s": "Banana", "b": False, "tags": ["y", 3], "d": {"k": 2}},
    {"id": "c", "n": "1", "s": "cherry pie", "tags": [], "d": {"k": "1"}, "a.b": "literal"},
    {"id": "d", "n": 10, "s": "100%_done", "b": 1, "tags": "x", "d": "flat"},
    {"id": "e", "n": None, "s": "Éclair", "tags": [{"k": 1}, ["x"]], "d": {"k": None}},
    {"id": "f", "n": True, "s": 5, "tags": ["x", "y", "z"]},
    {"id": "g", "s": "gamma", "a": {"b": "nested"}},
)  # fmt: skip
ALL = frozenset("abcdefg")


async def create_all(
    storage: Storage, objects: tuple[JSONObject, ...], parent_id: str = PARENT
) -> list[JSONObject]:
    async with storage.transaction(write=True) as tx:
        return [await tx.create(RESOURCE, parent_id, obj) for obj in objects]


async def listing(
    storage: Storage, query: ListQuery | None = None, parent_id: str = PARENT
) -> list[JSONObject]:
    async with storage.transaction(write=False) as tx:
        return await tx.list(RESOURCE, parent_id, query or ListQuery())


async def ids(
    storage: Storage, query: ListQuery | None = None, parent_id: str = PARENT
) -> list[str]:
    return [obj["id"] for obj in await listing(storage, query, parent_id)]


async def scope_timestamp(storage: Storage, parent_id: str = PARENT) -> int:
    async with storage.transaction(write=False) as tx:
        return await tx.resource_timestamp(RESOURCE, parent_id)


async def get(storage: Storage, object_id: str, *, include_deleted: bool = False) -> Any:
    async with storage.transaction(write=False) as tx:
        return await tx.get(RESOURCE, PARENT, object_id, include_deleted=include_deleted)


class Boom(Exception):
    """Raised inside a transaction to make it roll back."""


# (filter, ids of SAMPLE it selects)
FILTER_CASES: list[tuple[Filter, frozenset[str]]] = [
    # equality is type-strict; 1 == 1.0; dotted fields walk nested objects
    (Filter("n", 1), frozenset("a")),
    (Filter("n", 1.0), frozenset("a")),
    (Filter("n", "1"), frozenset("c")),
    (Filter("n", True), frozenset("f")),
    (Filter("n", None), frozenset("e")),
    (Filter("b", 1), frozenset("d")),
    (Filter("d.k", 1), frozenset("a")),
    (Filter("d.k", None), frozenset("e")),
    (Filter("d.z.w", "deep"), frozenset("a")),
    (Filter("a.b", "literal"), frozenset("c")),
    (Filter("a.b", "nested"), frozenset("g")),
    (Filter("tags", ["x", "y"]), frozenset("a")),
    (Filter("tags", ["y", "x"]), frozenset()),
    (Filter("d", {"k": 2.0}), frozenset("b")),
    (Filter("id", "c"), frozenset("c")),
    (Filter("id", 1), frozenset()),
    (Filter("missing", 1), frozenset()),
    (Filter("n", 1, C.EQ), frozenset("a")),
    # not / exclude also select objects without the field
    (Filter("n", 1, C.NOT), ALL - {"a"}),
    (Filter("nul", None, C.NOT), ALL - {"a"}),
    (Filter("missing", 1, C.NOT), ALL),
    (Filter("d.k", 1, C.NOT), ALL - {"a"}),
    (Filter("id", "a", C.NOT), ALL - {"a"}),
    (Filter("n", (1, "1"), C.IN), frozenset("ac")),
    (Filter("n", (True, None), C.IN), frozenset("ef")),
    (Filter("s", ("apple", 5), C.IN), frozenset("af")),
    (Filter("tags", (["x", "y"], "x"), C.IN), frozenset("ad")),
    (Filter("n", (), C.IN), frozenset()),
    (Filter("id", ("a", "b", "zz"), C.IN), frozenset("ab")),
    (Filter("n", (1, "1"), C.EXCLUDE), frozenset("bdefg")),
    (Filter("missing", (1,), C.EXCLUDE), ALL),
    (Filter("n", (), C.EXCLUDE), ALL),
    (Filter("id", ("a", "b"), C.EXCLUDE), frozenset("cdefg")),
    # cross-type order: null < strings < numbers < booleans < arrays < objects < missing
    (Filter("n", 2.5, C.LT), frozenset("eca")),
    (Filter("n", 2.5, C.MAX), frozenset("ecab")),
    (Filter("n", 2.5, C.GT), frozenset("dfg")),
    (Filter("n", 2.5, C.MIN), frozenset("bdfg")),
    (Filter("n", "a", C.LT), frozenset("ec")),
    (Filter("n", None, C.GT), ALL - {"e"}),
    (Filter("n", None, C.LT), frozenset()),
    (Filter("n", None, C.MAX), frozenset("e")),
    (Filter("n", False, C.GT), frozenset("fg")),
    (Filter("n", [], C.LT), ALL - {"g"}),
    (Filter("missing", 0, C.GT), ALL),
    (Filter("missing", 0, C.LT), frozenset()),
    # arrays and objects compare by canonical JSON text: '["x","y","z"]' < '["x","y"]' < '[]'
    (Filter("tags", ["x", "y"], C.MIN), frozenset("abceg")),
    (Filter("d", {"k": 1}, C.GT), frozenset("befg")),
    (Filter("id", "c", C.MIN), frozenset("cdefg")),
    (Filter("id", "c", C.LT), frozenset("ab")),
    (Filter("id", 5, C.GT), frozenset()),
    # like: `*` is the only wildcard; no `*` means substring; case-insensitive
    (Filter("s", "an", C.LIKE), frozenset("b")),
    (Filter("s", "A*", C.LIKE), frozenset("a")),
    (Filter("s", "*E", C.LIKE), frozenset("acd")),
    (Filter("s", "*p*e", C.LIKE), frozenset("ac")),
    (Filter("s", "%", C.LIKE), frozenset("d")),
    (Filter("s", "_", C.LIKE), frozenset("d")),
    (Filter("s", "a.p", C.LIKE), frozenset()),
    (Filter("s", "éCLAIR", C.LIKE), frozenset("e")),
    (Filter("s", "", C.LIKE), ALL - {"f"}),
    (Filter("s", "5", C.LIKE), frozenset()),
    (Filter("n", "1", C.LIKE), frozenset("c")),
    (Filter("id", "A", C.LIKE), frozenset("a")),
    # has: present, even when null
    (Filter("nul", True, C.HAS), frozenset("a")),
    (Filter("nul", False, C.HAS), ALL - {"a"}),
    (Filter("b", True, C.HAS), frozenset("abd")),
    (Filter("d.k", False, C.HAS), frozenset("dfg")),
    (Filter("id", True, C.HAS), ALL),
    # contains: arrays only, every value; contains_any: one of them
    (Filter("tags", ["x"], C.CONTAINS), frozenset("af")),
    (Filter("tags", "x", C.CONTAINS), frozenset("af")),
    (Filter("tags", ["y", "x"], C.CONTAINS), frozenset("af")),
    (Filter("tags", [3.0], C.CONTAINS), frozenset("b")),
    (Filter("tags", ["3"], C.CONTAINS), frozenset()),
    (Filter("tags", [{"k": 1}], C.CONTAINS), frozenset("e")),
    (Filter("tags", [["x"]], C.CONTAINS), frozenset("e")),
    (Filter("tags", [], C.CONTAINS), frozenset("abcef")),
    (Filter("tags", ["z", 3], C.CONTAINS_ANY), frozenset("bf")),
    (Filter("tags", [], C.CONTAINS_ANY), frozenset()),
    (Filter("id", ["a"], C.CONTAINS), frozenset()),
]

# (sorting, expected order of SAMPLE ids); -last_modified breaks ties as the service does.
SORT_CASES: list[tuple[tuple[Sort, ...], list[str]]] = [
    ((Sort("last_modified", -1),), list("gfedcba")),
    ((Sort("last_modified", 1),), list("abcdefg")),
    ((Sort("id", -1),), list("gfedcba")),
    ((Sort("n", 1), Sort("last_modified", -1)), list("ecabdfg")),
    ((Sort("n", -1), Sort("last_modified", -1)), list("gfdbace")),
    ((Sort("s", 1), Sort("last_modified", -1)), list("dbacgef")),
    ((Sort("tags", 1), Sort("last_modified", -1)), list("dfabceg")),
    ((Sort("d", 1), Sort("last_modified", -1)), list("dcabegf")),
    ((Sort("d.k", 1), Sort("last_modified", 1)), list("ecabdfg")),
    ((Sort("b", 1), Sort("s", -1), Sort("last_modified", -1)), list("dbafegc")),
]


def case_id(value: Any) -> str:
    """Readable, deterministic test ids for the cases above."""
    if isinstance(value, Filter):
        return f"{value.operator.value}:{value.field}={value.value!r}"
    if isinstance(value, tuple):
        return ",".join(f"{'-' if s.direction < 0 else ''}{s.field}" for s in value)
    return "".join(sorted(value)) if isinstance(value, frozenset) else "".join(value)


class StorageContract:
    """The behaviour of :class:`nuages.storage.protocol.Storage` (protocol/04, /05)."""

    # -- objects ------------------------------------------------------------------
    async def test_create_then_get(self, storage: Storage) -> None:
        (created,) = await create_all(storage, ({"id": "x", "title": "hello"},))
        assert created["id"] == "x" and created["title"] == "hello"
        assert isinstance(created["last_modified"], int)
        assert await get(storage, "x") == created
        assert await get(storage, "x", include_deleted=True) == created
        assert await get(storage, "nope") is None

    async def test_create_existing_raises_unicity(self, storage: Storage) -> None:
        await create_all(storage, ({"id": "x"},))
        with pytest.raises(UnicityError) as info:
            await create_all(storage, ({"id": "x", "other": 1},))
        assert (info.value.resource_name, info.value.object_id) == (RESOURCE, "x")
        assert "other" not in await get(storage, "x")

    async def test_create_replaces_a_tombstone(self, storage: Storage) -> None:
        await create_all(storage, ({"id": "x", "v": 1},))
        async with storage.transaction(write=True) as tx:
            tombstone = await tx.delete(RESOURCE, PARENT, "x")
            again = await tx.create(RESOURCE, PARENT, {"id": "x", "v": 2})
        assert again["last_modified"] > tombstone["last_modified"]
        assert await get(storage, "x") == again

    async def test_update_replaces_the_whole_object(self, storage: Storage) -> None:
        (created,) = await create_all(storage, ({"id": "x", "a": 1, "b": 2},))
        async with storage.transaction(write=True) as tx:
            updated = await tx.update(RESOURCE, PARENT, "x", {"id": "ignored", "b": 3})
        assert updated == {"id": "x", "b": 3, "last_modified": updated["last_modified"]}
        assert updated["last_modified"] > created["last_modified"]
        assert await get(storage, "x") == updated

    async def test_update_creates_a_missing_object(self, storage: Storage) -> None:
        async with storage.transaction(write=True) as tx:
            created = await tx.update(RESOURCE, PARENT, "x", {"v": 1})
        assert (
            await get(storage, "x")
            == created
            == {"id": "x", "v": 1, "last_modified": created["last_modified"]}
        )

    async def test_update_revives_a_tombstone(self, storage: Storage) -> None:
        await create_all(storage, ({"id": "x"},))
        async with storage.transaction(write=True) as tx:
            await tx.delete(RESOURCE, PARENT, "x")
            revived = await tx.update(RESOURCE, PARENT, "x", {"v": 2})
        assert await get(storage, "x") == revived

    async def test_delete_leaves_a_tombstone(self, storage: Storage) -> None:
        (created,) = await create_all(storage, ({"id": "x", "v": 1},))
        async with storage.transaction(write=True) as tx:
            tombstone = await tx.delete(RESOURCE, PARENT, "x")
        assert tombstone == {
            "id": "x",
            "last_modified": tombstone["last_modified"],
            "deleted": True,
        }
        assert tombstone["last_modified"] > created["last_modified"]
        assert await get(storage, "x") is None
        assert await get(storage, "x", include_deleted=True) == tombstone
        assert await scope_timestamp(storage) == tombstone["last_modified"]

    async def test_delete_missing_or_deleted_raises_not_found(self, storage: Storage) -> None:
        await create_all(storage, ({"id": "x"},))
        async with storage.transaction(write=True) as tx:
            with pytest.raises(ObjectNotFound):
                await tx.delete(RESOURCE, PARENT, "nope")
            await tx.delete(RESOURCE, PARENT, "x")
            with pytest.raises(ObjectNotFound) as info:
                await tx.delete(RESOURCE, PARENT, "x")
        assert (info.value.resource_name, info.value.object_id) == (RESOURCE, "x")

    async def test_returned_objects_are_copies(self, storage: Storage) -> None:
        obj: JSONObject = {"id": "x", "nested": {"list": [1]}}
        (created,) = await create_all(storage, (obj,))
        obj["nested"]["list"].append(2)
        created["nested"]["list"].append(3)
        fetched = await get(storage, "x")
        fetched["nested"]["list"].append(4)
        assert (await get(storage, "x"))["nested"] == {"list": [1]}

    @pytest.mark.parametrize(
        "value",
        [
            "plain",
            "nul \u0000 inside",
            "\u0000",
            "unicode ☃ 𝄞 é",
            'quote " backslash \\ newline \n tab \t',
            "",
            0,
            -1,
            2**63 - 1,
            -(2**63),
            1.5,
            -0.0,
            1e300,
            5e-324,
            True,
            False,
            None,
            [],
            {},
            [1, "a", None, [2, [3, {"x": [4]}]]],
            {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": ["deep"]}}}}}}}},
            {"k\u0000ey": 1, 'q"k': 2, "b\\s": 3, "": 4, "a.b": 5},
        ],
    )
    async def test_values_round_trip(self, storage: Storage, value: Any) -> None:
        (created,) = await create_all(storage, ({"id": "x", "v": value},))
        assert created["v"] == value
        fetched = await get(storage, "x")
        assert fetched == created
        assert repr(fetched["v"]) == repr(value)  # -0.0 stays -0.0, 1 does not become 1.0
        assert await listing(storage) == [created]

    async def test_large_and_unusual_ids_round_trip(self, storage: Storage) -> None:
        object_ids = ("i" * 10_000, "é☃𝄞", "with space", "%_*", "nul\u0000id", "")
        created = await create_all(storage, tuple({"id": i} for i in object_ids))
        for object_id, obj in zip(object_ids, created, strict=True):
            assert await get(storage, object_id) == obj
        assert sorted(await ids(storage)) == sorted(object_ids)
        assert await ids(storage, ListQuery(ids=frozenset({"nul\u0000id", "nul"}))) == [
            "nul\u0000id"
        ]

    async def test_scopes_are_isolated(self, storage: Storage) -> None:
        async with storage.transaction(write=True) as tx:
            one = await tx.create(RESOURCE, "/buckets/one", {"id": "x", "v": 1})
            two = await tx.create(RESOURCE, "/buckets/two", {"id": "x", "v": 2})
            other = await tx.create("group", "/buckets/one", {"id": "x", "v": 3})
        async with storage.transaction(write=False) as tx:
            assert await tx.get(RESOURCE, "/buckets/one", "x") == one
            assert await tx.get(RESOURCE, "/buckets/two", "x") == two
            assert await tx.get("group", "/buckets/one", "x") == other
            assert await tx.list(RESOURCE, "/buckets/one", ListQuery()) == [one]
            assert await tx.count("group", "/buckets/one", ListQuery()) == 1

    async def test_a_transaction_sees_its_own_writes(self, storage: Storage) -> None:
        async with storage.transaction(write=True) as tx:
            created = await tx.create(RESOURCE, PARENT, {"id": "x"})
            assert await tx.get(RESOURCE, PARENT, "x") == created
            assert await tx.list(RESOURCE, PARENT, ListQuery()) == [created]
            assert await tx.resource_timestamp(RESOURCE, PARENT) == created["last_modified"]

    # -- timestamps ---------------------------------------------------------------
    async def test_timestamps_strictly_increase_within_a_burst(self, storage: Storage) -> None:
        created = await create_all(storage, tuple({"id": f"o{i}"} for i in range(50)))
        async with storage.transaction(write=True) as tx:
            for i in range(0, 50, 3):
                created.append(await tx.update(RESOURCE, PARENT, f"o{i}", {"v": i}))
            for i in range(1, 50, 5):
                created.append(await tx.delete(RESOURCE, PARENT, f"o{i}"))
        stamps = [obj["last_modified"] for obj in created]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        assert await scope_timestamp(storage) == stamps[-1]

    async def test_timestamps_increase_across_transactions(self, storage: Storage) -> None:
        stamps = []
        for i in range(10):
            (obj,) = await create_all(storage, ({"id": f"o{i}"},))
            stamps.append(obj["last_modified"])
            assert await scope_timestamp(storage) == obj["last_modified"]
        assert stamps == sorted(set(stamps))

    async def test_scope_timestamp_is_created_lazily_and_stable(self, storage: Storage) -> None:
        first = await scope_timestamp(storage)
        await asyncio.sleep(0.005)
        assert await scope_timestamp(storage) == first
        async with storage.transaction(write=False) as tx:
            assert await tx.resource_timestamp(RESOURCE, PARENT) == first
        (obj,) = await create_all(storage, ({"id": "x"},))
        assert obj["last_modified"] > first
        assert await scope_timestamp(storage) == obj["last_modified"]

    async def test_scope_timestamps_are_independent(self, storage: Storage) -> None:
        other = await scope_timestamp(storage, "/other")
        await create_all(storage, ({"id": "x"},), PARENT)
        assert await scope_timestamp(storage, "/other") == other
        async with storage.transaction(write=False) as tx:
            assert await tx.resource_timestamp("group", PARENT) > 0
            assert await tx.list("group", PARENT, ListQuery()) == []

    async def test_requested_timestamp_in_the_future_is_used(self, storage: Storage) -> None:
        (first,) = await create_all(storage, ({"id": "a"},))
        wanted = first["last_modified"] + 1000
        (obj,) = await create_all(storage, ({"id": "b", "last_modified": wanted},))
        assert obj["last_modified"] == wanted
        assert await scope_timestamp(storage) == wanted

    async def test_requested_timestamp_equal_to_scope_is_bumped(self, storage: Storage) -> None:
        (first,) = await create_all(storage, ({"id": "a"},))
        (obj,) = await create_all(storage, ({"id": "b", "last_modified": first["last_modified"]},))
        assert obj["last_modified"] == first["last_modified"] + 1
        assert await scope_timestamp(storage) == obj["last_modified"]

    async def test_requested_timestamp_in_the_past_keeps_scope(self, storage: Storage) -> None:
        (first,) = await create_all(storage, ({"id": "a"},))
        (obj,) = await create_all(storage, ({"id": "b", "last_modified": 1000},))
        assert obj["last_modified"] == 1000
        assert await scope_timestamp(storage) == first["last_modified"]
        assert await ids(storage) == ["a", "b"]

    @pytest.mark.parametrize("value", ["1000", True, -5, 1.5, None])
    async def test_non_integer_requested_timestamps_are_ignored(
        self, storage: Storage, value: Any
    ) -> None:
        (first,) = await create_all(storage, ({"id": "a"},))
        (obj,) = await create_all(storage, ({"id": "b", "last_modified": value},))
        assert obj["last_modified"] > first["last_modified"]
        assert (await get(storage, "b"))["last_modified"] == obj["last_modified"]

    async def test_update_ignores_requested_timestamp_not_above_the_object(
        self, storage: Storage
    ) -> None:
        (obj, _) = await create_all(storage, ({"id": "a"}, {"id": "b"}))
        async with storage.transaction(write=True) as tx:
            updated = await tx.update(
                RESOURCE, PARENT, "a", {"last_modified": obj["last_modified"]}
            )
        assert updated["last_modified"] > obj["last_modified"]
        assert await scope_timestamp(storage) == updated["last_modified"]

    async def test_update_keeps_requested_timestamp_between_object_and_scope(
        self, storage: Storage
    ) -> None:
        a, _, c = await create_all(storage, ({"id": "a"}, {"id": "b"}, {"id": "c"}))
        wanted = a["last_modified"] + 1
        assert wanted < c["last_modified"]
        async with storage.transaction(write=True) as tx:
            updated = await tx.update(RESOURCE, PARENT, "a", {"last_modified": wanted})
        assert updated["last_modified"] == wanted
        assert await scope_timestamp(storage) == c["last_modified"]

    async def test_delete_with_requested_timestamp(self, storage: Storage) -> None:
        a, b = await create_all(storage, ({"id": "a"}, {"id": "b"}))
        async with storage.transaction(write=True) as tx:
            ignored = await tx.delete(RESOURCE, PARENT, "a", last_modified=a["last_modified"])
            wanted = ignored["last_modified"] + 500
            used = await tx.delete(RESOURCE, PARENT, "b", last_modified=wanted)
        assert ignored["last_modified"] > b["last_modified"]
        assert used["last_modified"] == wanted
        assert await scope_timestamp(storage) == wanted

    # -- listing ------------------------------------------------------------------
    async def test_list_defaults_to_live_objects_newest_first(self, storage: Storage) -> None:
        created = await create_all(storage, SAMPLE)
        async with storage.transaction(write=True) as tx:
            await tx.delete(RESOURCE, PARENT, "c")
        assert await listing(storage) == [o for o in reversed(created) if o["id"] != "c"]

    async def test_list_with_tombstones(self, storage: Storage) -> None:
        await create_all(storage, SAMPLE)
        async with storage.transaction(write=True) as tx:
            tombstone = await tx.delete(RESOURCE, PARENT, "c")
        everything = await listing(storage, ListQuery(include_deleted=True))
        assert everything[0] == tombstone
        assert [o["id"] for o in everything] == list("cgfedba")
        only_tombstones = ListQuery(filters=(Filter("deleted", True),), include_deleted=True)
        assert await listing(storage, only_tombstones) == [tombstone]
        # A tombstone has no other field: equality hides it, `not_` keeps it.
        hidden = ListQuery(filters=(Filter("s", "apple"),), include_deleted=True)
        assert await ids(storage, hidden) == ["a"]
        kept = ListQuery(filters=(Filter("s", "apple", C.NOT),), include_deleted=True)
        assert await ids(storage, kept) == list("cgfedb")

    async def test_list_stored_is_the_listing_as_stored_text(self, storage: Storage) -> None:
        """A backend offering ``list_stored`` (StoredLister) gives the same objects, in the
        same order, as ``list``; spliced into JSON they read as ``list``'s objects, key
        order included."""
        odd = (
            {"id": "z-empty"},
            {"id": "nul\u0000id", "s": "a\u0000b", "q": 'quote " and \\'},
            {"id": "u", "é": "ünïcode ☃", "big": 2**62, "f": 1.5e-7},
        )
        await create_all(storage, SAMPLE + odd)
        async with storage.transaction(write=True) as tx:
            await tx.delete(RESOURCE, PARENT, "c")
        async with storage.transaction(write=False) as tx:
            list_stored = getattr(tx, "list_stored", None)
            if list_stored is None:
                pytest.skip("this backend has no list_stored")
            for query in (
                ListQuery(include_deleted=True),
                ListQuery(sorting=(Sort("s", -1),), limit=4),
                ListQuery(filters=(Filter("n", 1, C.GT),)),
            ):
                listed = await tx.list(RESOURCE, PARENT, query)
                rows = await list_stored(RESOURCE, PARENT, query)
                assert [reads.decode(*row) for row in rows] == listed
                spliced = orjson.dumps([reads.fragment(*row) for row in rows])
                assert spliced == orjson.dumps(listed)
                assert orjson.dumps(reads.fragments(rows)) == spliced

    async def test_since_filter_on_last_modified(self, storage: Storage) -> None:
        created = await create_all(storage, SAMPLE)
        since = created[3]["last_modified"]
        query = ListQuery(filters=(Filter("last_modified", since, C.GT),), include_deleted=True)
        assert await ids(storage, query) == list("gfe")
        before = ListQuery(filters=(Filter("last_modified", since, C.LT),))
        assert await ids(storage, before) == list("cba")
        exact = ListQuery(filters=(Filter("last_modified", since),))
        assert await ids(storage, exact) == ["d"]
        as_float = ListQuery(filters=(Filter("last_modified", since + 0.5, C.GT),))
        assert await ids(storage, as_float) == list("gfe")
        as_string = ListQuery(filters=(Filter("last_modified", str(since), C.GT),))
        assert await ids(storage, as_string) == list("gfedcba")  # numbers follow strings

    @pytest.mark.parametrize(("flt", "expected"), FILTER_CASES, ids=case_id)
    async def test_filter(self, storage: Storage, flt: Filter, expected: frozenset[str]) -> None:
        await create_all(storage, SAMPLE)
        query = ListQuery(filters=(flt,))
        assert set(await ids(storage, query)) == expected
        async with storage.transaction(write=False) as tx:
            assert await tx.count(RESOURCE, PARENT, query) == len(expected)

    async def test_filters_are_combined_with_and(self, storage: Storage) -> None:
        await create_all(storage, SAMPLE)
        tagged = Filter("tags", ["x"], C.CONTAINS)
        query = ListQuery(filters=(tagged, Filter("n", 1, C.NOT), Filter("b", True, C.HAS)))
        assert await ids(storage, query) == []
        query = ListQuery(filters=(tagged, Filter("b", False, C.HAS)))
        assert await ids(storage, query) == ["f"]

    async def test_filter_on_unusual_keys(self, storage: Storage) -> None:
        objects = (
            {"id": "1", 'q"k': 1, "b\\s": "x", "nl\nk": True, "": 0, "n": {'q"k': 2}},
            {"id": "2", 'q"k': 2, "b\\s": "y", "nl\nk": False, "": 1, "n": {'q"k': 1}},
        )
        await create_all(storage, objects)
        for flt, expected in [
            (Filter('q"k', 1), ["1"]),
            (Filter('q"k', 1, C.GT), ["2"]),
            (Filter("b\\s", "Y", C.LIKE), ["2"]),
            (Filter("nl\nk", True), ["1"]),
            (Filter("", 0), ["1"]),
            (Filter('n.q"k', 1), ["2"]),
        ]:
            assert await ids(storage, ListQuery(filters=(flt,))) == expected, flt
        by_key = ListQuery(sorting=(Sort('n.q"k', 1),))
        assert await ids(storage, by_key) == ["2", "1"]

    async def test_filters_on_strings_with_nul(self, storage: Storage) -> None:
        objects = (
            {"id": "1", "s": "a\u0000b", "t": ["a\u0000b"]},
            {"id": "2", "s": "a\u0000c", "t": ["a"]},
            {"id": "3", "s": "a", "t": ["a\u0000c"]},
        )
        await create_all(storage, objects)
        for flt, expected in [
            (Filter("s", "a"), ["3"]),
            (Filter("s", "a\u0000b"), ["1"]),
            (Filter("s", "a\u0000b", C.GT), ["2"]),
            (Filter("s", ("a", "a\u0000c"), C.IN), ["2", "3"]),
            (Filter("s", "*b", C.LIKE), ["1"]),
            (Filter("s", "A\u0000*", C.LIKE), ["1", "2"]),
            (Filter("t", ["a"], C.CONTAINS), ["2"]),
            (Filter("t", ["a\u0000c"], C.CONTAINS_ANY), ["3"]),
        ]:
            assert sorted(await ids(storage, ListQuery(filters=(flt,)))) == expected, flt
        by_s = ListQuery(sorting=(Sort("s", 1),))
        assert await ids(storage, by_s) == ["3", "1", "2"]

    async def test_like_folds_case_beyond_ascii(self, storage: Storage) -> None:
        # İ, long s and Kelvin sign match i, s and k in Python's case-insensitive regexes.
        objects = (
            {"id": "1", "s": "İstanbul"},
            {"id": "2", "s": "\u017fun"},
            {"id": "3", "s": "\u212aelvin"},
        )
        await create_all(storage, objects)
        for pattern, expected in [("i*", ["1"]), ("S*", ["2"]), ("k", ["3"]), ("xyz", [])]:
            query = ListQuery(filters=(Filter("s", pattern, C.LIKE),))
            assert sorted(await ids(storage, query)) == expected, pattern

    async def test_large_integers_and_floats_compare_exactly(self, storage: Storage) -> None:
        big = 2**53 + 1
        await create_all(storage, ({"id": "int", "v": big}, {"id": "float", "v": float(2**53)}))
        assert await ids(storage, ListQuery(filters=(Filter("v", big),))) == ["int"]
        assert await ids(storage, ListQuery(filters=(Filter("v", float(2**53), C.GT),))) == ["int"]
        assert await ids(storage, ListQuery(filters=(Filter("v", 2**64, C.LT),))) == [
            "float",
            "int",
        ]
        assert await ids(storage, ListQuery(filters=(Filter("v", 2**64),))) == []
        huge = ListQuery(filters=(Filter("last_modified", 2**64, C.LT),))
        assert len(await ids(storage, huge)) == 2

    @pytest.mark.parametrize(("sorting", "expected"), SORT_CASES, ids=case_id)
    async def test_sort(
        self, storage: Storage, sorting: tuple[Sort, ...], expected: list[str]
    ) -> None:
        await create_all(storage, SAMPLE)
        assert await ids(storage, ListQuery(sorting=sorting)) == expected

    @pytest.mark.parametrize(("sorting", "expected"), SORT_CASES, ids=case_id)
    @pytest.mark.parametrize("limit", [1, 2, 3])
    async def test_keyset_pages_reproduce_the_listing(
        self, storage: Storage, sorting: tuple[Sort, ...], expected: list[str], limit: int
    ) -> None:
        await create_all(storage, SAMPLE)
        seen: list[str] = []
        keyset = None
        while True:
            query = ListQuery(sorting=sorting, keyset=keyset, limit=limit)
            page = await listing(storage, query)
            seen.extend(obj["id"] for obj in page)
            if len(page) < limit:
                break
            keyset = Keyset(sort_values(page[-1], sorting))
        assert seen == expected

    async def test_keyset_with_missing_values(self, storage: Storage) -> None:
        created = await create_all(storage, SAMPLE)
        sorting = (Sort("n", 1), Sort("last_modified", -1))
        last_present = Keyset((True, created[5]["last_modified"]))
        assert await ids(storage, ListQuery(sorting=sorting, keyset=last_present)) == ["g"]
        after_missing = Keyset((MISSING, created[6]["last_modified"] + 1))
        assert await ids(storage, ListQuery(sorting=sorting, keyset=after_missing)) == ["g"]
        descending = (Sort("n", -1), Sort("last_modified", -1))
        after_g = Keyset((MISSING, created[6]["last_modified"]))
        assert await ids(storage, ListQuery(sorting=descending, keyset=after_g)) == list("fdbace")

    async def test_keyset_value_of_another_type(self, storage: Storage) -> None:
        await create_all(storage, SAMPLE)
        sorting = (Sort("last_modified", -1),)
        assert await ids(storage, ListQuery(sorting=sorting, keyset=Keyset(("x",)))) == []
        assert await ids(storage, ListQuery(sorting=sorting, keyset=Keyset((True,)))) == list(
            "gfedcba"
        )

    async def test_limit(self, storage: Storage) -> None:
        await create_all(storage, SAMPLE)
        assert await ids(storage, ListQuery(limit=2)) == ["g", "f"]
        assert await ids(storage, ListQuery(limit=0)) == []
        assert await ids(storage, ListQuery(limit=100)) == list("gfedcba")

    async def test_ids_restriction(self, storage: Storage) -> None:
        await create_all(storage, SAMPLE)
        assert await ids(storage, ListQuery(ids=frozenset({"a", "c", "zz"}))) == ["c", "a"]
        assert await ids(storage, ListQuery(ids=frozenset())) == []
        query = ListQuery(ids=frozenset("abc"), filters=(Filter("n", 2, C.LT),))
        assert await ids(storage, query) == ["c", "a"]
        many = frozenset({"a"} | {f"x{i}" for i in range(5000)})
        assert await ids(storage, ListQuery(ids=many)) == ["a"]

    async def test_count(self, storage: Storage) -> None:
        await create_all(storage, SAMPLE)
        async with storage.transaction(write=True) as tx:
            await tx.delete(RESOURCE, PARENT, "a")
            assert await tx.count(RESOURCE, PARENT, ListQuery()) == 6
            with_deleted = ListQuery(
                include_deleted=True, limit=1, filters=(Filter("n", 1, C.NOT),)
            )
            assert await tx.count(RESOURCE, PARENT, with_deleted) == 6
            assert await tx.count(RESOURCE, PARENT, ListQuery(ids=frozenset("abc"))) == 2
            keyset = ListQuery(keyset=Keyset((0,)))
            assert await tx.count(RESOURCE, PARENT, keyset) == 6
            assert await tx.count(RESOURCE, "/elsewhere", ListQuery()) == 0

    # -- purge, flush, rollback ---------------------------------------------------
    async def test_purge_removes_the_parent_and_below(self, storage: Storage) -> None:
        parents = ("/buckets/b", "/buckets/b/collections/c", "/buckets/bb", "/buckets", "")
        async with storage.transaction(write=True) as tx:
            for parent in parents:
                await tx.create(RESOURCE, parent, {"id": "x"})
                await tx.create(RESOURCE, parent, {"id": "y"})
                await tx.delete(RESOURCE, parent, "y")
        kept = {p: await scope_timestamp(storage, p) for p in ("/buckets/bb", "/buckets", "")}
        async with storage.transaction(write=True) as tx:
            await tx.purge("/buckets/b")
        everything = ListQuery(include_deleted=True)
        for parent in parents:
            purged = parent == "/buckets/b" or parent.startswith("/buckets/b/")
            assert await ids(storage, everything, parent) == ([] if purged else ["y", "x"])
        for parent, timestamp in kept.items():
            assert await scope_timestamp(storage, parent) == timestamp
        # The purged scopes start again: a create works and the timestamp follows it.
        (obj,) = await create_all(storage, ({"id": "x"},), "/buckets/b")
        assert await scope_timestamp(storage, "/buckets/b") == obj["last_modified"]

    async def test_flush(self, storage: Storage) -> None:
        await create_all(storage, SAMPLE)
        await storage.flush()
        assert await listing(storage, ListQuery(include_deleted=True)) == []
        assert await get(storage, "a", include_deleted=True) is None

    async def test_failed_write_transaction_leaves_no_trace(self, storage: Storage) -> None:
        await create_all(storage, SAMPLE)
        before = await listing(storage, ListQuery(include_deleted=True))
        timestamp = await scope_timestamp(storage)
        with pytest.raises(Boom):
            async with storage.transaction(write=True) as tx:
                await tx.create(RESOURCE, PARENT, {"id": "new"})
                await tx.update(RESOURCE, PARENT, "a", {"changed": True})
                await tx.delete(RESOURCE, PARENT, "b")
                await tx.create(RESOURCE, "/elsewhere", {"id": "new"})
                await tx.purge("/buckets")
                raise Boom
        assert await listing(storage, ListQuery(include_deleted=True)) == before
        assert await scope_timestamp(storage) == timestamp
        async with storage.transaction(write=False) as tx:
            assert await tx.get(RESOURCE, "/elsewhere", "new") is None

    async def test_domain_error_out_of_a_transaction_rolls_it_back(self, storage: Storage) -> None:
        await create_all(storage, ({"id": "a"},))
        with pytest.raises(UnicityError):
            async with storage.transaction(write=True) as tx:
                await tx.create(RESOURCE, PARENT, {"id": "b"})
                await tx.create(RESOURCE, PARENT, {"id": "a"})
        assert await ids(storage) == ["a"]

    async def test_ping(self, storage: Storage) -> None:
        assert await storage.ping() is True
