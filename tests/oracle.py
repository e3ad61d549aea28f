"""The harness shared by the memory-oracle property tests of the SQL backends.

Each backend's test module keeps its own value strategies (they differ on purpose: each
avoids its backend's documented approximations); the way objects are written, queries
drawn and results compared is the same for every backend, and lives here.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import strategies as st

from nuages.core.filtering import sort_values
from nuages.core.objects import MISSING, Filter, Keyset, ListQuery, Sort
from nuages.storage.protocol import JSONObject, Storage

RESOURCE = "record"

_scopes = itertools.count()


def new_scope() -> str:
    """A parent id no earlier example used."""
    return f"/scope/{next(_scopes)}"


async def populate(
    data: st.DataObject,
    objects: st.SearchStrategy[dict[str, Any]],
    object_ids: st.SearchStrategy[str],
    memory: Storage,
    other: Storage,
) -> tuple[str, list[JSONObject]]:
    """Write the same random objects (and tombstones) in a new scope of both backends;
    `other` is given the memory backend's timestamps, so the objects are identical."""
    drawn = data.draw(st.lists(objects, max_size=10), label="objects")
    ids = data.draw(st.lists(object_ids, min_size=len(drawn), max_size=len(drawn), unique=True))
    deleted = data.draw(st.sets(st.sampled_from(ids)) if ids else st.just(set()), label="deleted")
    parent = new_scope()
    written = []
    async with memory.transaction(write=True) as mtx, other.transaction(write=True) as otx:
        for object_id, obj in zip(ids, drawn, strict=True):
            created = await mtx.create(RESOURCE, parent, {**obj, "id": object_id})
            assert await otx.create(RESOURCE, parent, created) == created
            written.append(created)
        for object_id in sorted(deleted):
            tombstone = await mtx.delete(RESOURCE, parent, object_id)
            copied = await otx.delete(
                RESOURCE, parent, object_id, last_modified=tombstone["last_modified"]
            )
            assert copied == tombstone
            written.append(tombstone)
    return parent, written


def draw_query(
    data: st.DataObject,
    written: list[JSONObject],
    *,
    draw_filter: Callable[[st.DataObject, list[JSONObject]], Filter],
    sort_fields: Sequence[str],
    keyset_values: st.SearchStrategy[Any],
) -> ListQuery:
    """Any listing a service may ask for: filters, sorting, keyset, ids, limit, tombstones."""
    count = data.draw(st.integers(0, 2), label="filters")
    filters = tuple(draw_filter(data, written) for _ in range(count))
    fields = data.draw(st.lists(st.sampled_from(sort_fields), max_size=2), label="sort fields")
    directions = st.sampled_from([1, -1])
    sorting = tuple(Sort(f, data.draw(directions)) for f in fields)
    # The service always ends with last_modified, unique in a scope: a total order.
    sorting += (Sort("last_modified", data.draw(directions)),)
    keyset = None
    if written and data.draw(st.booleans(), label="keyset"):
        after = data.draw(st.sampled_from(written))
        keyset = Keyset(
            tuple(
                data.draw(st.one_of(st.just(v), keyset_values, st.just(MISSING)))
                for v in sort_values(after, sorting)
            )
        )
    ids = None
    if data.draw(st.booleans(), label="restrict ids"):
        ids = frozenset(data.draw(st.lists(st.sampled_from([o["id"] for o in written] + ["zz"]))))
    return ListQuery(
        filters=filters,
        sorting=sorting,
        keyset=keyset,
        limit=data.draw(st.none() | st.integers(0, 6), label="limit"),
        include_deleted=data.draw(st.booleans(), label="include_deleted"),
        ids=ids,
    )


async def assert_lists_like_memory(
    memory: Storage, other: Storage, parent: str, query: ListQuery, *, count: bool = True
) -> None:
    """`other` lists (and counts) exactly what the memory backend does."""
    # (This module is not a test module: pytest does not explain its asserts, so they say
    # what they compared.)
    async with memory.transaction(write=False) as mtx, other.transaction(write=False) as otx:
        listed, expected = (
            await otx.list(RESOURCE, parent, query),
            await mtx.list(RESOURCE, parent, query),
        )
        assert listed == expected, f"listed {listed} where memory lists {expected}: {query}"
        if count:
            counted = await otx.count(RESOURCE, parent, query)
            expected_count = await mtx.count(RESOURCE, parent, query)
            assert counted == expected_count, (
                f"counted {counted} where memory counts {expected_count} (and lists"
                f" {len(expected)}): {query}"
            )


async def assert_keyset_pages_like_memory(
    memory: Storage, other: Storage, parent: str, query: ListQuery, limit: int
) -> None:
    """Walking `other` page by page with keysets reproduces memory's unpaged listing."""
    unpaged = dataclasses.replace(query, keyset=None, limit=None)
    async with memory.transaction(write=False) as mtx:
        expected = await mtx.list(RESOURCE, parent, unpaged)
    pages: list[JSONObject] = []
    async with other.transaction(write=False) as otx:
        while True:
            keyset = Keyset(sort_values(pages[-1], unpaged.sorting)) if pages else None
            query = dataclasses.replace(unpaged, keyset=keyset, limit=limit)
            page = await otx.list(RESOURCE, parent, query)
            pages.extend(page)
            if len(page) < limit:
                break
    assert pages == expected
