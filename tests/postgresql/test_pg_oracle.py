"""The memory backend is the oracle: PostgreSQL lists and counts exactly like it.

Same method as tests/backends/test_oracle_properties.py (SQLite): random objects written in
a fresh scope of both backends (PostgreSQL given the memory backend's timestamps), then
random listings compared. Values avoid the documented approximations of the PostgreSQL
compiler (storage/postgresql.py): no U+0000 in strings, and no sorting or ordered
comparison among arrays and objects (equality, ``in``, ``has`` and ``contains`` on them are
exact and tested).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests import oracle, services

from nuages.core.filtering import get_field
from nuages.core.objects import MISSING, Comparison, Filter, ListQuery
from nuages.postgresql import PostgreSQLDatabase
from nuages.storage.memory import MemoryStorage
from nuages.storage.postgresql import PostgreSQLStorage
from nuages.storage.protocol import JSONObject, Storage

text = st.one_of(
    st.text(alphabet="aA", max_size=3),
    st.text(alphabet="\u0130\u0131\u017f\u212aisk", max_size=3),
    st.text(alphabet="aé\u00c9%_*. \\", max_size=4),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 0.5, 1.0, -1.0, 2.0, 1e16]),
    text,
)
# Filter values may go beyond what JSON storage accepts (integers beyond 64 bits).
query_scalars = st.one_of(scalars, st.integers(-(2**70), 2**70))
containers = st.one_of(
    st.lists(scalars, max_size=3), st.dictionaries(st.sampled_from(["x", "y"]), scalars, max_size=2)
)
objects = st.fixed_dictionaries(
    {},
    optional={
        "a": st.one_of(scalars, st.fixed_dictionaries({}, optional={"b": scalars})),
        "b": scalars,
        "a.b": scalars,
        "c": st.one_of(scalars, containers),
        "t": st.one_of(st.lists(scalars, max_size=4), scalars),
    },
)
object_ids = st.text(alphabet="aB_é0", min_size=1, max_size=3)
SORTABLE = ["b", "a.b", "id", "zz", "last_modified"]
ORDERED = [Comparison.LT, Comparison.GT, Comparison.MIN, Comparison.MAX]
EXACT = [Comparison.EQ, Comparison.NOT, Comparison.IN, Comparison.EXCLUDE, Comparison.HAS]


ORACLE = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,  # a failure prints the @reproduce_failure that replays it
)


@pytest.fixture
async def backends() -> AsyncIterator[tuple[Storage, Storage]]:
    services.require("postgresql")
    url = await services.create_database()
    await services.empty_database(url)
    db = PostgreSQLDatabase(url, pool_size=2)
    yield MemoryStorage(), PostgreSQLStorage(db)
    await db.aclose()


def draw_filter(data: st.DataObject, written: list[JSONObject]) -> Filter:
    kind = data.draw(st.sampled_from(["ordered", "exact", "like", "contains"]))
    if kind == "ordered":
        field, operator = data.draw(st.sampled_from(SORTABLE)), data.draw(st.sampled_from(ORDERED))
        pool = query_scalars
    elif kind == "exact":
        field = data.draw(st.sampled_from(["a", "b", "a.b", "c", "t", "id", "zz"]))
        operator = data.draw(st.sampled_from(EXACT))
        pool = st.one_of(query_scalars, containers)
    elif kind == "like":
        field, operator, pool = (
            data.draw(st.sampled_from(["b", "a.b", "id"])),
            Comparison.LIKE,
            text,
        )
    else:
        field = "t"
        operator = data.draw(st.sampled_from([Comparison.CONTAINS, Comparison.CONTAINS_ANY]))
        pool = scalars
    present = [v for v in (get_field(o, field) for o in written) if v is not MISSING]
    if kind == "contains":
        present = [item for v in present if isinstance(v, list) for item in v]
    if kind == "ordered":
        present = [v for v in present if not isinstance(v, list | dict)]
    some = st.one_of(st.sampled_from(present), pool) if present else pool
    value: Any
    if operator in (Comparison.IN, Comparison.EXCLUDE):
        value = tuple(data.draw(st.lists(some, max_size=3)))
    elif operator is Comparison.HAS:
        value = data.draw(st.booleans())
    elif kind == "contains":
        value = data.draw(st.one_of(some, st.lists(some, max_size=3)))
    elif kind == "like":
        strings = [v for v in present if isinstance(v, str)]
        value = data.draw(st.one_of(text, st.sampled_from(strings)) if strings else text)
    else:
        value = data.draw(some)
    return Filter(field, value, operator)


def draw_query(data: st.DataObject, written: list[JSONObject]) -> ListQuery:
    return oracle.draw_query(
        data, written, draw_filter=draw_filter, sort_fields=SORTABLE[:-1], keyset_values=scalars
    )


@ORACLE
@given(data=st.data())
async def test_postgresql_lists_and_counts_like_memory(
    backends: tuple[Storage, Storage], data: st.DataObject
) -> None:
    memory, pg = backends
    parent, written = await oracle.populate(data, objects, object_ids, memory, pg)
    for _ in range(5):
        await oracle.assert_lists_like_memory(memory, pg, parent, draw_query(data, written))


@ORACLE
@given(data=st.data(), limit=st.integers(1, 4))
async def test_postgresql_keyset_pages_reproduce_the_listing(
    backends: tuple[Storage, Storage], data: st.DataObject, limit: int
) -> None:
    memory, pg = backends
    parent, written = await oracle.populate(data, objects, object_ids, memory, pg)
    query = draw_query(data, written)
    await oracle.assert_keyset_pages_like_memory(memory, pg, parent, query, limit)
