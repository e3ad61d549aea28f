"""The fast sort and paging of /permissions entries agree with the generic reference."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from nuages.core import filtering
from nuages.core.objects import Keyset, Sort
from nuages.web.permission_entries import EntryBuilder, page_start, sort_entries
from nuages.web.utility import IMPLIED, LEVELS

FIELDS = ("uri", "id", "bucket_id", "collection_id", "resource_name")
values = st.one_of(st.none(), st.text(alphabet="ab-/é", max_size=3))
entries = st.lists(
    st.fixed_dictionaries({}, optional={f: values for f in FIELDS}).map(
        lambda e: {k: v for k, v in e.items() if v is not None}
    ),
    max_size=30,
)
sortings = st.lists(
    st.builds(Sort, st.sampled_from(FIELDS), st.sampled_from((1, -1))), max_size=3
).map(lambda s: [*s, Sort("uri", -1)])


@given(entries, sortings)
def test_sort_entries_is_the_generic_order(found: list[dict[str, Any]], sorting: Any) -> None:
    expected = [filtering.sort_values(e, sorting) for e in filtering.sort_objects(found, sorting)]
    assert [filtering.sort_values(e, sorting) for e in sort_entries(found, sorting)] == expected


@given(entries, sortings, st.data())
def test_page_start_is_the_first_entry_after_the_keyset(
    found: list[dict[str, Any]], sorting: Any, data: st.DataObject
) -> None:
    ordered = sort_entries(found, sorting)
    if not ordered:
        return
    pivot = data.draw(st.sampled_from(ordered))
    keyset = Keyset(filtering.sort_values(pivot, sorting))
    start = page_start(ordered, sorting, keyset)
    expected = [e for e in ordered if filtering.after_keyset(e, sorting, keyset)]
    assert ordered[start:] == expected


def test_entries_of_nested_objects_and_other_uris() -> None:
    build = EntryBuilder(LEVELS, IMPLIED)
    record = build("/buckets/b/collections/c/records/r", {"write"})
    assert record is not None
    assert build.finish(record) == {
        "uri": "/buckets/b/collections/c/records/r",
        "bucket_id": "b",
        "collection_id": "c",
        "record_id": "r",
        "resource_name": "record",
        "id": "r",
        "permissions": ["read", "write"],
    }
    bucket = build("/buckets/b", {"write"})
    assert bucket is not None
    assert build.finish(bucket)["permissions"] == [
        "collection:create",
        "group:create",
        "read",
        "read:attributes",
        "write",
    ]
    for other in ("/buckets/b/history", "/", "buckets/b", "/buckets//collections/c", "/x/y"):
        assert build(other, {"read"}) is None, other
