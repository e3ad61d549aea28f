"""Hypothesis strategies shared by the property tests.

Everything is small and bounded (short texts over a fixed alphabet, 64-bit integers,
shallow nesting) so that examples stay cheap to send over HTTP.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

ALPHABET = "abcAB_é 1"

#: JSON scalars that survive a round trip through the API unchanged.
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False, width=32).filter(lambda f: not f.is_integer()),
    st.text(ALPHABET, max_size=4),
)

#: Any JSON value, nested at most two levels.
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text("abc", min_size=1, max_size=2), children, max_size=3),
    ),
    max_leaves=5,
)

#: Values for sortable fields: few distinct ones (so ties happen) of mixed types.
sort_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from(["", "a", "b", "B"]),
    st.sampled_from([[], [1], {"k": 1}]),
)

#: Field names used by the property tests.
FIELDS = ("a", "b")

#: Record data: each of FIELDS present or missing, with a possibly nested ``n.x``.
record_data = st.fixed_dictionaries(
    {},
    optional={
        "a": sort_values,
        "b": sort_values,
        "n": st.fixed_dictionaries({}, optional={"x": sort_values}),
    },
)

#: A ``_sort`` value over the property fields (``last_modified`` sometimes explicit).
sort_params = st.lists(
    st.tuples(
        st.sampled_from(["", "-", "+"]), st.sampled_from(["a", "b", "n.x", "id", "last_modified"])
    ),
    min_size=0,
    max_size=3,
    unique_by=lambda t: t[1],
).map(lambda entries: ",".join(f"{sign}{name}" for sign, name in entries))


def _op(kind: str, index: st.SearchStrategy[int]) -> st.SearchStrategy[tuple[str, int, Any]]:
    return st.tuples(st.just(kind), index, record_data)


#: One write: (kind, record index among a small id pool, data).
#: ``create`` POSTs, ``put`` creates or replaces, ``patch``/``delete`` target a maybe-missing id.
operations = st.lists(
    st.one_of(
        _op("create", st.integers(0, 5)),
        _op("put", st.integers(0, 5)),
        _op("patch", st.integers(0, 5)),
        _op("delete", st.integers(0, 5)),
        st.tuples(st.just("sync"), st.just(0), st.just({})),
    ),
    min_size=1,
    max_size=12,
)
