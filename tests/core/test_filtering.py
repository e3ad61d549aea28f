"""Reference filter and sort semantics (protocol/05 §2-§3), pure Python."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.strategies import json_values

from nuages.core.filtering import (
    after_keyset,
    compare_values,
    get_field,
    json_equal,
    matches,
    matches_all,
    sort_objects,
)
from nuages.core.objects import MISSING, Comparison, Filter, Keyset, Sort

C = Comparison


def match(obj, field, op, value):
    return matches(obj, Filter(field, value, op))


# -- field access ---------------------------------------------------------------------------------


def test_get_field_walks_nested_objects():
    obj = {"a": {"b": {"c": 1}}, "x": [1]}
    assert get_field(obj, "a.b.c") == 1
    assert get_field(obj, "a.b") == {"c": 1}
    assert get_field(obj, "a.z") is MISSING
    assert get_field(obj, "x.0") is MISSING
    assert get_field(obj, "nope") is MISSING


def test_get_field_null_is_not_missing():
    assert get_field({"a": None}, "a") is None
    assert get_field({"a": None}, "a.b") is MISSING


# -- equality -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (1, 1.0, True),
        (1, "1", False),
        (True, 1, False),
        (False, 0, False),
        (None, None, True),
        ([1, 2], [1, 2], True),
        ([1, 2], [2, 1], False),
        ({"k": 1, "j": 2}, {"j": 2, "k": 1}, True),
        ({"k": 1}, {"k": True}, False),
        ("", None, False),
    ],
)
def test_json_equal_is_type_strict(a, b, equal):
    assert json_equal(a, b) is equal


def test_eq_matches_whole_json_values():
    obj = {"a": [1, 2], "o": {"k": 1}, "n": 2, "s": "2"}
    assert match(obj, "a", C.EQ, [1, 2])
    assert not match(obj, "a", C.EQ, [1])
    assert match(obj, "o", C.EQ, {"k": 1})
    assert match(obj, "n", C.EQ, 2)
    assert not match(obj, "n", C.EQ, "2")
    assert match(obj, "s", C.EQ, "2")
    assert not match(obj, "s", C.EQ, 2)


def test_eq_null_matches_null_but_not_missing():
    assert match({"a": None}, "a", C.EQ, None)
    assert not match({}, "a", C.EQ, None)


# -- missing-field semantics table (05 §2) --------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "missing_matches"),
    [
        (C.EQ, 1, False),
        (C.IN, (1,), False),
        (C.LIKE, "a", False),
        (C.CONTAINS, [1], False),
        (C.CONTAINS_ANY, [1], False),
        (C.NOT, 1, True),
        (C.EXCLUDE, (1,), True),
        (C.GT, 1, True),
        (C.MIN, 1, True),
        (C.LT, 1, False),
        (C.MAX, 1, False),
        (C.HAS, True, False),
        (C.HAS, False, True),
    ],
)
def test_missing_field_semantics(op, value, missing_matches):
    assert match({"other": 1}, "field", op, value) is missing_matches


def test_has_true_matches_null_values():
    assert match({"a": None}, "a", C.HAS, True)
    assert not match({"a": None}, "a", C.HAS, False)


def test_has_is_anded_with_other_filters():
    filters = [Filter("a", True, C.HAS), Filter("b", 1)]
    assert matches_all({"a": 0, "b": 1}, filters)
    assert not matches_all({"a": 0, "b": 2}, filters)
    assert not matches_all({"b": 1}, filters)


# -- comparisons and cross-type ordering ----------------------------------------------------------


ORDERED = [None, "", "a", "b", -1, 0, 1.5, 2, False, True, [1], {"a": 1}, MISSING]


def test_cross_type_total_order():
    for i, a in enumerate(ORDERED):
        for j, b in enumerate(ORDERED):
            expected = (i > j) - (i < j)
            if a is MISSING and b is MISSING:
                expected = 0
            assert compare_values(a, b) == expected, (a, b)


@given(a=json_values, b=json_values)
def test_compare_values_is_antisymmetric(a, b):
    assert compare_values(a, b) == -compare_values(b, a)


@given(a=json_values)
def test_compare_values_is_reflexive(a):
    assert compare_values(a, a) == 0


def test_bounds_are_exclusive_or_inclusive():
    obj = {"n": 5}
    assert match(obj, "n", C.GT, 4) and not match(obj, "n", C.GT, 5)
    assert match(obj, "n", C.MIN, 5) and not match(obj, "n", C.MIN, 6)
    assert match(obj, "n", C.LT, 6) and not match(obj, "n", C.LT, 5)
    assert match(obj, "n", C.MAX, 5) and not match(obj, "n", C.MAX, 4)


def test_strings_compare_before_numbers():
    assert match({"n": 5}, "n", C.GT, "zzz")
    assert match({"n": "zzz"}, "n", C.LT, 0)


# -- in / exclude / not ---------------------------------------------------------------------------


def test_in_and_exclude():
    assert match({"s": 2}, "s", C.IN, (1, 2, "3"))
    assert not match({"s": "2"}, "s", C.IN, (1, 2, "3"))
    assert match({"s": "3"}, "s", C.IN, (1, 2, "3"))
    assert match({"s": "2"}, "s", C.EXCLUDE, (1, 2))
    assert not match({"s": 2}, "s", C.EXCLUDE, (1, 2))


def test_not_is_type_strict():
    assert match({"s": "1"}, "s", C.NOT, 1)
    assert not match({"s": 1}, "s", C.NOT, 1)


# -- like -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("moz", "Firefox by Mozilla", True),
        ("MOZ", "mozilla", True),
        ("moz*", "Mozilla", True),
        ("moz*", "a Mozilla", False),
        ("*lla", "Mozilla", True),
        ("*lla", "Mozillas", False),
        ("m*a", "Mozilla", True),
        ("m*z*a", "mza", True),
        ("x", "Mozilla", False),
        ("", "anything", True),
        ("a.c", "abc", False),
        ("line", "first\nline", True),
    ],
)
def test_like_wildcards_and_case(pattern, value, expected):
    assert match({"t": value}, "t", C.LIKE, pattern) is expected


@pytest.mark.parametrize("value", [10, 1.5, True, None, ["a"], {"a": "a"}])
def test_like_never_matches_non_strings(value):
    assert not match({"t": value}, "t", C.LIKE, "a")


# -- contains -------------------------------------------------------------------------------------


def test_contains_requires_all_values():
    obj = {"tags": ["b", "x", "a"]}
    assert match(obj, "tags", C.CONTAINS, ["a", "b"])
    assert not match(obj, "tags", C.CONTAINS, ["a", "z"])
    assert match(obj, "tags", C.CONTAINS_ANY, ["a", "z"])
    assert not match(obj, "tags", C.CONTAINS_ANY, ["y", "z"])


def test_contains_matches_objects_by_json_equality():
    obj = {"aliases": [{"ll": "ls -l"}, {"la": "ls -a"}]}
    assert match(obj, "aliases", C.CONTAINS, [{"ll": "ls -l"}])
    assert not match(obj, "aliases", C.CONTAINS, [{"ll": "ls"}])


def test_contains_on_non_arrays_never_matches():
    assert not match({"tags": "abc"}, "tags", C.CONTAINS, ["a"])
    assert not match({"tags": {"a": 1}}, "tags", C.CONTAINS_ANY, ["a"])


def test_contains_is_type_strict():
    assert not match({"tags": [1, 2]}, "tags", C.CONTAINS, ["1"])


# -- dotted fields --------------------------------------------------------------------------------


def test_dotted_filters_walk_nested_objects():
    obj = {"author": {"name": "Ben", "age": 3}, "flat": "x"}
    assert match(obj, "author.name", C.EQ, "Ben")
    assert match(obj, "author.age", C.MIN, 3)
    assert not match(obj, "flat.name", C.EQ, "x")
    assert match(obj, "flat.name", C.NOT, "x")


# -- sorting and keysets --------------------------------------------------------------------------


def ids(objects):
    return [o["id"] for o in objects]


OBJECTS = [
    {"id": "a", "last_modified": 1, "n": 2},
    {"id": "b", "last_modified": 2},
    {"id": "c", "last_modified": 3, "n": 1},
    {"id": "d", "last_modified": 4, "n": 2},
    {"id": "e", "last_modified": 5, "n": "x"},
]


def test_default_sort_is_newest_first():
    assert ids(sort_objects(OBJECTS, [Sort("last_modified", -1)])) == ["e", "d", "c", "b", "a"]


def test_ascending_puts_missing_last_and_breaks_ties():
    sorting = [Sort("n", 1), Sort("last_modified", -1)]
    assert ids(sort_objects(OBJECTS, sorting)) == ["e", "c", "d", "a", "b"]


def test_descending_puts_missing_first():
    sorting = [Sort("n", -1), Sort("last_modified", -1)]
    assert ids(sort_objects(OBJECTS, sorting)) == ["b", "d", "a", "c", "e"]


def test_booleans_sort_false_first():
    objs = [{"id": "t", "f": True}, {"id": "f", "f": False}]
    assert ids(sort_objects(objs, [Sort("f", -1)])) == ["t", "f"]


def test_ids_sort_by_code_point():
    objs = [{"id": i} for i in ["b", "B", "a", "_", "A"]]
    assert ids(sort_objects(objs, [Sort("id", 1)])) == ["A", "B", "_", "a", "b"]


def test_after_keyset_resumes_strictly_after_the_position():
    sorting = [Sort("n", 1), Sort("last_modified", -1)]
    ordered = sort_objects(OBJECTS, sorting)
    for i, obj in enumerate(ordered):
        keyset = Keyset(tuple(obj.get(s.field, MISSING) for s in sorting))
        after = [o for o in ordered if after_keyset(o, sorting, keyset)]
        assert after == ordered[i + 1 :]


@given(
    objects=st.lists(
        st.fixed_dictionaries({}, optional={"n": json_values, "m": st.integers(0, 3)}),
        max_size=8,
    ),
    directions=st.tuples(st.sampled_from([1, -1]), st.sampled_from([1, -1])),
)
def test_keyset_pagination_reproduces_the_sorted_list(objects, directions):
    objs = [{**o, "id": str(i), "last_modified": i} for i, o in enumerate(objects)]
    sorting = [Sort("n", directions[0]), Sort("m", directions[1]), Sort("last_modified", -1)]
    ordered = sort_objects(objs, sorting)
    for i, obj in enumerate(ordered):
        keyset = Keyset(tuple(get_field(obj, s.field) for s in sorting))
        assert [o for o in ordered if after_keyset(o, sorting, keyset)] == ordered[i + 1 :]
