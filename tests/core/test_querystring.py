"""Querystring parsing (protocol/05 §1-§3, §5): pure functions, no HTTP."""

from __future__ import annotations

import pytest

from nuages.core.errors import ValidationError
from nuages.core.objects import Comparison, Filter, Sort
from nuages.core.querystring import (
    MAX_SORT_FIELDS,
    native_value,
    parse_list_params,
    parse_timestamp,
    project,
)
from nuages.core.timestamps import now_ms

DEFAULT_SORT = (Sort("last_modified", -1),)


def parse(*pairs: tuple[str, str], known: frozenset[str] | None = None):
    return parse_list_params(list(pairs), known_fields=known)


def error_of(*pairs: tuple[str, str], known: frozenset[str] | None = None) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        parse(*pairs, known=known)
    return info.value


def only_detail(exc: ValidationError) -> tuple[str, str | None, str]:
    assert len(exc.details) == 1
    d = exc.details[0]
    return d.location, d.name, d.description


# -- native values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2", 2),
        ("2.5", 2.5),
        ('"2"', "2"),
        ("Ben", "Ben"),
        ("true", True),
        ("false", False),
        ("null", None),
        ("[1,2]", [1, 2]),
        ('{"k":1}', {"k": 1}),
        ("1.2.3", "1.2.3"),
        ("", ""),
    ],
)
def test_native_value_parses_json_or_keeps_the_raw_string(raw, expected):
    value = native_value(raw)
    assert value == expected
    assert type(value) is type(expected)


# -- defaults and reserved parameters -------------------------------------------------------------


def test_empty_querystring_gives_defaults():
    params = parse()
    assert params.filters == ()
    assert params.sorting == DEFAULT_SORT
    assert params.limit is None
    assert params.token is None
    assert params.fields is None
    assert params.include_deleted is False
    assert params.deprecated_to is False


def test_unknown_underscore_parameters_are_ignored():
    params = parse(("_expected", "123"), ("_count", "1"), ("_whatever", "x"))
    assert params.filters == ()
    assert params.include_deleted is False


def test_since_is_an_exclusive_lower_bound_and_includes_tombstones():
    params = parse(("_since", "123"))
    assert params.filters == (Filter("last_modified", 123, Comparison.GT),)
    assert params.include_deleted is True


@pytest.mark.parametrize("name", ["_before", "_to"])
def test_before_and_to_are_exclusive_upper_bounds(name):
    params = parse((name, "123"))
    assert params.filters == (Filter("last_modified", 123, Comparison.LT),)
    assert params.include_deleted is True


def test_to_is_flagged_as_deprecated_but_before_is_not():
    assert parse(("_to", "1")).deprecated_to is True
    assert parse(("_before", "1")).deprecated_to is False


def test_since_accepts_a_quoted_etag():
    assert parse(("_since", '"1434641382954"')).filters[0].value == 1434641382954


def test_since_accepts_floats():
    assert parse(("_since", "1.5")).filters[0].value == 1.5


def test_since_null_means_no_bound_but_still_includes_tombstones():
    params = parse(("_since", "null"))
    assert params.filters == ()
    assert params.include_deleted is True


@pytest.mark.parametrize("name", ["_since", "_before", "_to"])
def test_non_numeric_bound_is_not_a_number(name):
    exc = error_of((name, "abc"))
    assert only_detail(exc) == ("querystring", name, '"abc" is not a number')
    assert exc.message == f'{name} in querystring: "abc" is not a number'


def test_bound_more_than_a_day_in_the_future_is_invalid():
    exc = error_of(("_since", str(now_ms() + 25 * 3600 * 1000)))
    assert only_detail(exc) == ("querystring", "_since", "Invalid value for _since")


def test_bound_a_bit_in_the_future_is_accepted():
    assert parse(("_since", str(now_ms() + 3600 * 1000))).filters


def test_negative_bound_is_invalid():
    assert error_of(("_before", "-1")).details[0].name == "_before"


def test_parse_timestamp_keeps_integers_as_int():
    value = parse_timestamp("_since", '"42"')
    assert value == 42
    assert isinstance(value, int)


# -- _limit, _token, _fields ----------------------------------------------------------------------


def test_limit_is_parsed():
    assert parse(("_limit", "10")).limit == 10
    assert parse(("_limit", "0")).limit == 0


@pytest.mark.parametrize(
    ("raw", "description"),
    [
        ("abc", '"abc" is not a number'),
        ("1.5", '"1.5" is not a number'),
        ("-1", "-1 is less than minimum value 0"),
    ],
)
def test_invalid_limit_is_a_querystring_error(raw, description):
    assert only_detail(error_of(("_limit", raw))) == ("querystring", "_limit", description)


def test_token_is_kept_verbatim():
    assert parse(("_token", "abc==")).token == "abc=="


def test_fields_are_split_on_commas_and_stripped():
    assert parse(("_fields", "title, address.street,,")).fields == ("title", "address.street")


def test_fields_unknown_on_strict_resources_are_rejected():
    exc = error_of(("_fields", "title,nope"), known=frozenset({"title"}))
    assert only_detail(exc) == (
        "querystring",
        "Invalid _fields parameter",
        "Fields nope do not exist",
    )


def test_fields_always_know_id_and_last_modified():
    assert parse(("_fields", "id,last_modified"), known=frozenset()).fields == (
        "id",
        "last_modified",
    )


# -- NUL ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value"), [("ti\x00tle", "a"), ("title", "a\x00b")])
def test_nul_character_is_rejected(name, value):
    exc = error_of((name, value))
    assert exc.details[0].description == "Invalid character 0x00"
    assert exc.details[0].location == "querystring"


# -- sorting --------------------------------------------------------------------------------------


def test_sort_appends_last_modified_tie_breaker():
    assert parse(("_sort", "title,-age")).sorting == (
        Sort("title", 1),
        Sort("age", -1),
        Sort("last_modified", -1),
    )


def test_sort_with_explicit_last_modified_adds_no_tie_breaker():
    assert parse(("_sort", "last_modified")).sorting == (Sort("last_modified", 1),)
    assert parse(("_sort", "-last_modified,title")).sorting == (
        Sort("last_modified", -1),
        Sort("title", 1),
    )


def test_sort_plus_prefix_is_ascending():
    assert parse(("_sort", "+title")).sorting[0] == Sort("title", 1)


def test_sort_accepts_dotted_fields():
    assert parse(("_sort", "-a.b")).sorting[0] == Sort("a.b", -1)


def test_sort_invalid_entries_are_ignored():
    assert parse(("_sort", "--x,a-b,,title, ,%")).sorting == (
        Sort("title", 1),
        Sort("last_modified", -1),
    )


def test_sort_with_only_invalid_entries_is_the_default():
    assert parse(("_sort", "!!")).sorting == DEFAULT_SORT


def test_sort_maximum_number_of_fields_is_accepted():
    fields = ",".join(f"f{i}" for i in range(MAX_SORT_FIELDS))
    assert len(parse(("_sort", fields)).sorting) == MAX_SORT_FIELDS + 1


def test_too_many_sort_fields_is_rejected():
    fields = ",".join(f"f{i}" for i in range(MAX_SORT_FIELDS + 1))
    exc = error_of(("_sort", fields))
    assert exc.details[0].location == "querystring"
    assert exc.details[0].name == "_sort"


def test_sort_unknown_field_on_strict_resource_is_rejected():
    exc = error_of(("_sort", "-nope"), known=frozenset({"title"}))
    assert only_detail(exc) == ("querystring", "_sort", "Unknown sort field 'nope'")


# -- filters --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "field", "operator"),
    [
        ("title", "title", Comparison.EQ),
        ("eq_title", "title", Comparison.EQ),
        ("not_title", "title", Comparison.NOT),
        ("lt_title", "title", Comparison.LT),
        ("gt_title", "title", Comparison.GT),
        ("min_title", "title", Comparison.MIN),
        ("max_title", "title", Comparison.MAX),
        ("like_title", "title", Comparison.LIKE),
        ("contains_title", "title", Comparison.CONTAINS),
        ("contains_any_title", "title", Comparison.CONTAINS_ANY),
        ("in_stock", "stock", Comparison.IN),
        ("eq_in_stock", "in_stock", Comparison.EQ),
        ("min_a.b.c", "a.b.c", Comparison.MIN),
        ("some-field", "some-field", Comparison.EQ),
        ("not_some-field", "not_some-field", Comparison.EQ),
        ("  title  ", "title", Comparison.EQ),
    ],
)
def test_filter_operator_detection(name, field, operator):
    (flt,) = parse((name, '"x"')).filters
    assert (flt.field, flt.operator) == (field, operator)


def test_filter_values_are_json_typed():
    filters = parse(("a", "2"), ("b", '"2"'), ("c", "Ben"), ("d", "true"), ("e", "null")).filters
    assert [f.value for f in filters] == [2, "2", "Ben", True, None]


def test_in_and_exclude_split_on_commas_before_parsing():
    (flt,) = parse(("in_status", '1,2,"3",x')).filters
    assert flt.value == (1, 2, "3", "x")
    (flt,) = parse(("exclude_status", "true")).filters
    assert flt.value == (True,)


def test_in_splits_json_arrays_too():
    (flt,) = parse(("in_a", "[1,2]")).filters
    assert flt.value == ("[1", "2]")


def test_in_id_requires_strings():
    exc = error_of(("in_id", "1,2"))
    assert only_detail(exc) == ("querystring", "in_id", "Invalid value for in_id")
    assert exc.message == "Invalid value for in_id"


def test_in_id_with_quoted_numbers_is_accepted():
    (flt,) = parse(("in_id", '"1","2"')).filters
    assert flt.value == ("1", "2")


def test_id_equality_keeps_the_string():
    (flt,) = parse(("id", "1")).filters
    assert flt.value == "1"


@pytest.mark.parametrize("name", ["contains_id", "contains_any_id"])
def test_contains_on_id_is_rejected(name):
    assert only_detail(error_of((name, '"a"'))) == (
        "querystring",
        name,
        "Field 'id' is not an array",
    )


def test_like_requires_a_string():
    assert only_detail(error_of(("like_x", "10"))) == (
        "querystring",
        "like_x",
        "Invalid value for like_x",
    )
    assert parse(("like_x", '"10"')).filters[0].value == "10"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("1", True),
        ("yes", True),
        ("false", False),
        ("0", False),
        ('""', False),
        ("null", False),
    ],
)
def test_has_uses_truthiness(raw, expected):
    assert parse(("has_x", raw)).filters[0].value is expected


def test_contains_wraps_scalars_and_does_not_split_commas():
    assert parse(("contains_tags", "a,b")).filters[0].value == ["a,b"]
    assert parse(("contains_tags", '["a","b"]')).filters[0].value == ["a", "b"]
    assert parse(("contains_any_tags", "1")).filters[0].value == [1]


def test_last_modified_filter_is_a_timestamp_and_includes_tombstones():
    params = parse(("last_modified", '"123"'))
    assert params.filters == (Filter("last_modified", 123, Comparison.EQ),)
    assert params.include_deleted is True
    for prefix in ("gt_", "min_", "lt_", "max_", "not_"):
        assert parse((f"{prefix}last_modified", "5")).include_deleted is True


def test_other_filters_do_not_include_tombstones():
    assert parse(("title", "x"), ("_sort", "last_modified")).include_deleted is False


def test_last_modified_not_a_number():
    exc = error_of(("last_modified", "abc"))
    assert only_detail(exc) == ("querystring", "last_modified", '"abc" is not a number')


@pytest.mark.parametrize("name", ["in_last_modified", "exclude_last_modified"])
def test_in_last_modified_is_unusable(name):
    assert error_of((name, "1,2")).details[0].name == name


@pytest.mark.parametrize("name", ["contains_last_modified", "contains_any_last_modified"])
def test_contains_last_modified_is_rejected(name):
    assert error_of((name, "1")).details[0].name == name


def test_unknown_filter_on_strict_resource_is_rejected():
    exc = error_of(("min_nope", "1"), known=frozenset({"title"}))
    assert only_detail(exc) == ("querystring", "min_nope", "Unknown filter field 'min_nope'")


def test_known_filters_on_strict_resource_are_accepted():
    known = frozenset({"title"})
    assert (
        len(parse(("title.sub", "1"), ("id", "x"), ("gt_last_modified", "1"), known=known).filters)
        == 3
    )


# -- projection -----------------------------------------------------------------------------------


def test_project_keeps_id_and_last_modified():
    obj = {"id": "a", "last_modified": 1, "title": "t", "other": 2}
    assert project(obj, ["title"]) == {"id": "a", "last_modified": 1, "title": "t"}


def test_project_drops_deleted_unless_requested():
    tombstone = {"id": "a", "last_modified": 1, "deleted": True}
    assert project(tombstone, ["title"]) == {"id": "a", "last_modified": 1}
    assert project(tombstone, ["deleted"]) == tombstone


def test_project_dotted_fields_select_sub_fields():
    obj = {
        "id": "a",
        "last_modified": 1,
        "address": {"street": "s", "city": "c", "geo": {"x": 1, "y": 2}},
    }
    assert project(obj, ["address.street", "address.geo.x"]) == {
        "id": "a",
        "last_modified": 1,
        "address": {"street": "s", "geo": {"x": 1}},
    }


def test_project_dotted_field_on_a_non_object_returns_the_top_level_value():
    obj = {"id": "a", "last_modified": 1, "address": "nowhere"}
    assert project(obj, ["address.street"])["address"] == "nowhere"


def test_project_missing_fields_are_left_out():
    obj = {"id": "a", "last_modified": 1, "address": {"city": "c"}}
    assert project(obj, ["nope", "address.street"]) == {"id": "a", "last_modified": 1}
