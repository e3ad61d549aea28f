"""The memory backend is the oracle: SQLite lists and counts exactly like it.

Each example writes random objects into a fresh scope of both backends (SQLite is given
the memory backend's timestamps, so the objects are identical), then compares random
listings: filters of every operator, sorting, keysets, ids, tombstones, limits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests import oracle

from nuages.core.filtering import get_field
from nuages.core.objects import MISSING, Comparison, Filter, ListQuery, Sort
from nuages.sqlite import SQLiteDatabase
from nuages.storage.memory import MemoryStorage
from nuages.storage.protocol import JSONObject, Storage
from nuages.storage.sqlite import SQLiteStorage

RESOURCE = oracle.RESOURCE
# Nested and dotted names, a literal key with a dot, keys SQLite's JSON paths cannot
# name, a field no object has, and the two columns.
FIELDS = ["a", "b", "a.b", "a.c", "a.b.x", "t", 'q"k', "n", "n.x", "zz", "id", "last_modified"]

# Short strings over few letters collide often (U+0000 cuts SQLite's json_extract). The
# second alphabet holds the letters that Python's ignore-case matching folds beyond ASCII
# (i s k with U+0130, U+0131, U+017F, U+212A), the third wildcards of LIKE and of the API.
colliding_text = st.text(alphabet="aA\x00", max_size=3)
text = st.one_of(
    colliding_text,
    st.text(alphabet="\u0130\u0131\u017f\u212aisk", max_size=3),
    st.text(alphabet="aé\u00c9\x00%_*. \\", max_size=4),
)
# ASCII patterns go to SQLite's LIKE, except on text that Python may fold.
ascii_patterns = st.text(alphabet="isk*", max_size=2)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 0.5, 1.0, -1.0, 2.0, 1e16]),
    text,
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.sampled_from(["x", "y"]), scalars, max_size=2),
)
nested = st.fixed_dictionaries({}, optional={"b": values, "c": values, "x": values})
objects = st.fixed_dictionaries(
    {},
    optional={
        "a": st.one_of(values, nested),
        "b": values,
        "a.b": values,
        "t": st.one_of(
            st.lists(st.one_of(scalars, colliding_text, st.lists(scalars, max_size=2)), max_size=4),
            values,
        ),
        'q"k': values,
        "n": st.one_of(nested, values),
    },
)
object_ids = st.text(alphabet="aB_é0", min_size=1, max_size=3)


@pytest.fixture
async def backends(tmp_path: Path) -> AsyncIterator[tuple[Storage, Storage]]:
    db = SQLiteDatabase(tmp_path / "oracle.db")
    await db.migrate()
    yield MemoryStorage(), SQLiteStorage(db)
    await db.aclose()


def draw_filter(
    data: st.DataObject,
    written: list[JSONObject],
    fields: Sequence[str] = FIELDS,
    operators: Sequence[Comparison] = tuple(Comparison),
) -> Filter:
    """A filter on one of `fields`, often with a value some written object holds."""
    held = sorted({key for obj in written for key in obj}.intersection(fields))
    field = data.draw(st.sampled_from(fields) | st.sampled_from(held or fields), label="field")
    operator = data.draw(st.sampled_from(operators), label="operator")
    present = [v for v in (get_field(obj, field) for obj in written) if v is not MISSING]
    some_value = st.one_of(st.sampled_from(present), values) if present else values
    if present and data.draw(st.booleans()):
        some_value = st.sampled_from(present)
    value: Any
    if operator in (Comparison.IN, Comparison.EXCLUDE):
        value = tuple(data.draw(st.lists(some_value, max_size=3)))
    elif operator in (Comparison.CONTAINS, Comparison.CONTAINS_ANY):
        items = [item for v in present if isinstance(v, list) for item in v]
        item = st.one_of(st.sampled_from(items), colliding_text, scalars) if items else scalars
        value = data.draw(st.one_of(item, st.lists(item, max_size=3)))
    elif operator is Comparison.HAS:
        value = data.draw(st.booleans())
    elif operator is Comparison.LIKE:
        strings = [v for v in present if isinstance(v, str)]
        pieces = st.sampled_from(strings) if strings else text
        patterns = st.one_of(
            ascii_patterns, text, pieces, st.builds("*{}*".format, pieces), scalars
        )
        value = data.draw(patterns)
    else:
        value = data.draw(some_value)
    return Filter(field, value, operator)


def draw_query(data: st.DataObject, written: list[JSONObject]) -> ListQuery:
    return oracle.draw_query(
        data, written, draw_filter=draw_filter, sort_fields=FIELDS, keyset_values=values
    )


ORACLE = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,  # a failure prints the @reproduce_failure that replays it
)


@ORACLE
@given(data=st.data())
async def test_sqlite_lists_and_counts_like_memory(
    backends: tuple[Storage, Storage], data: st.DataObject
) -> None:
    memory, sqlite = backends
    parent, written = await oracle.populate(data, objects, object_ids, memory, sqlite)
    for _ in range(5):
        await oracle.assert_lists_like_memory(memory, sqlite, parent, draw_query(data, written))


# LIKE, the operator furthest from SQL, drawn more often.
STRING_OPERATORS = [
    Comparison.EQ,
    Comparison.NOT,
    Comparison.IN,
    Comparison.LT,
    Comparison.MIN,
    Comparison.LIKE,
    Comparison.LIKE,
    Comparison.LIKE,
    Comparison.CONTAINS,
    Comparison.CONTAINS_ANY,
]


@ORACLE
@given(
    data=st.data(),
    strings=st.lists(st.one_of(text, st.lists(st.one_of(text, scalars), max_size=3)), max_size=8),
)
async def test_string_predicates_like_memory(
    backends: tuple[Storage, Storage], data: st.DataObject, strings: list[Any]
) -> None:
    """Focus on strings, where SQL differs most from Python: U+0000, LIKE wildcards and
    case folding, code point order; and on arrays of them."""
    memory, sqlite = backends
    parent = oracle.new_scope()
    written = []
    async with memory.transaction(write=True) as mtx, sqlite.transaction(write=True) as stx:
        for i, value in enumerate(strings):
            created = await mtx.create(RESOURCE, parent, {"id": str(i), "s": value})
            assert await stx.create(RESOURCE, parent, created) == created
            written.append(created)
    for _ in range(5):
        flt = draw_filter(data, written, ["s"], STRING_OPERATORS)
        query = ListQuery(filters=(flt,), sorting=(Sort("s", 1), Sort("last_modified", 1)))
        await oracle.assert_lists_like_memory(memory, sqlite, parent, query, count=False)


@ORACLE
@given(data=st.data(), limit=st.integers(1, 4))
async def test_keyset_pages_reproduce_the_listing(
    backends: tuple[Storage, Storage], data: st.DataObject, limit: int
) -> None:
    memory, sqlite = backends
    parent, written = await oracle.populate(data, objects, object_ids, memory, sqlite)
    query = draw_query(data, written)
    await oracle.assert_keyset_pages_like_memory(memory, sqlite, parent, query, limit)
