"""Merge patch (RFC 7396) and JSON Patch (RFC 6902) edge cases (protocol/03 §6)."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.strategies import json_values

from nuages.core.errors import ValidationError
from nuages.core.patch import json_patch, merge_patch

# -- merge patch ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        # RFC 7396 appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_rfc7396_examples(target, patch, expected):
    assert merge_patch(target, patch) == expected


def test_merge_patch_removes_nested_keys_with_null():
    target = {"a": {"b": 1, "c": {"d": 2, "e": 3}}, "f": 4}
    assert merge_patch(target, {"a": {"c": {"d": None}}, "f": None}) == {
        "a": {"b": 1, "c": {"e": 3}}
    }


def test_merge_patch_removing_a_missing_key_is_a_no_op():
    assert merge_patch({"a": 1}, {"z": None}) == {"a": 1}


def test_merge_patch_does_not_mutate_its_inputs():
    target = {"a": {"b": 1}}
    patch = {"a": {"c": [1]}}
    result = merge_patch(target, patch)
    result["a"]["c"].append(2)
    assert target == {"a": {"b": 1}}
    assert patch == {"a": {"c": [1]}}


@given(target=st.dictionaries(st.text("abc", max_size=2), json_values, max_size=4))
def test_merge_patch_with_target_itself_is_identity_without_nulls(target):
    cleaned = {k: v for k, v in target.items() if v is not None and not isinstance(v, dict)}
    assert merge_patch(target, cleaned) == target


@given(target=st.dictionaries(st.text("abc", max_size=2), json_values, max_size=4))
def test_merge_patch_with_empty_patch_keeps_target(target):
    assert merge_patch(target, {}) == target


# -- JSON patch -----------------------------------------------------------------------------------


DOC = {"data": {"title": "t", "tags": ["a", "b"], "n": {"x": 1}}, "permissions": {"read": {}}}


def apply(*ops):
    return json_patch(DOC, list(ops))


def failed(*ops) -> str:
    with pytest.raises(ValidationError) as info:
        json_patch(DOC, list(ops))
    (detail,) = info.value.details
    assert detail.location == "body"
    return detail.description


def test_json_patch_add_replace_remove():
    result = apply(
        {"op": "add", "path": "/data/new", "value": 1},
        {"op": "replace", "path": "/data/title", "value": "u"},
        {"op": "remove", "path": "/data/n/x"},
    )
    assert result["data"] == {"title": "u", "tags": ["a", "b"], "n": {}, "new": 1}


def test_json_patch_array_operations():
    result = apply(
        {"op": "add", "path": "/data/tags/-", "value": "z"},
        {"op": "add", "path": "/data/tags/0", "value": "first"},
        {"op": "remove", "path": "/data/tags/1"},
    )
    assert result["data"]["tags"] == ["first", "b", "z"]


def test_json_patch_move_and_copy():
    result = apply(
        {"op": "copy", "from": "/data/title", "path": "/data/copy"},
        {"op": "move", "from": "/data/n", "path": "/data/moved"},
    )
    assert result["data"] == {"title": "t", "copy": "t", "tags": ["a", "b"], "moved": {"x": 1}}


def test_json_patch_escaped_pointers():
    doc = {"a/b": 1, "m~n": 2}
    assert json_patch(doc, [{"op": "replace", "path": "/a~1b", "value": 3}]) == {
        "a/b": 3,
        "m~n": 2,
    }
    assert json_patch(doc, [{"op": "remove", "path": "/m~0n"}]) == {"a/b": 1}


def test_json_patch_test_operation():
    apply({"op": "test", "path": "/data/title", "value": "t"})
    assert failed({"op": "test", "path": "/data/title", "value": "x"}).startswith(
        "JSON Patch operation failed"
    )


def test_json_patch_test_is_type_strict():
    assert failed({"op": "test", "path": "/data/n/x", "value": True}).startswith(
        "JSON Patch operation failed"
    )


def test_json_patch_does_not_mutate_the_document():
    before = copy.deepcopy(DOC)
    apply({"op": "add", "path": "/data/tags/-", "value": "z"})
    assert before == DOC


def test_json_patch_is_all_or_nothing():
    doc = {"a": 1}
    with pytest.raises(ValidationError):
        json_patch(doc, [{"op": "add", "path": "/b", "value": 2}, {"op": "remove", "path": "/z"}])
    assert doc == {"a": 1}


@pytest.mark.parametrize(
    "op",
    [
        {"op": "remove", "path": "/data/missing"},
        {"op": "replace", "path": "/data/missing", "value": 1},
        {"op": "add", "path": "/data/missing/deep", "value": 1},
        {"op": "add", "path": "data/title", "value": 1},
        {"op": "add", "path": "/data/tags/5", "value": 1},
        {"op": "add", "path": "/data/tags/01", "value": 1},
        {"op": "remove", "path": "/data/tags/-"},
        {"op": "add", "path": "/data/title"},
        {"op": "move", "from": "/data/n", "path": "/data/n/inside"},
        {"op": "copy", "from": "/data/nothing", "path": "/data/x"},
        {"op": "add", "path": "/data/title/sub", "value": 1},
        {"op": "remove", "path": ""},
        {"op": "add", "path": 5, "value": 1},
    ],
)
def test_json_patch_failures_are_400(op):
    assert failed(op).startswith("JSON Patch operation failed")


@pytest.mark.parametrize(
    "op",
    [
        {"op": "frobnicate", "path": "/data/a"},
        {"op": "add", "path": "/data/a", "value": 1, "extra": True},
        "add",
        {"path": "/data/a", "value": 1},
    ],
)
def test_json_patch_invalid_operations_are_400(op):
    assert failed(op) == "0: invalid JSON Patch operation"


def test_json_patch_operations_must_be_a_list():
    with pytest.raises(ValidationError):
        json_patch(DOC, {"op": "add", "path": "/a", "value": 1})


def test_json_patch_replace_whole_document():
    assert json_patch(DOC, [{"op": "replace", "path": "", "value": [1]}]) == [1]
