"""A page's JSON spliced from stored text (nuages.storage.reads): the objects decoded and
serialised, whatever the stored text looks like (the same bytes when it is compact)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.strategies import json_values

from nuages.storage import reads

ids = st.text(min_size=1, max_size=8)  # quotes, backslashes, controls, U+0000, non-BMP
objects = st.dictionaries(st.text(max_size=4), json_values, max_size=4)
timestamps = st.integers(0, 2**53)


def expected(rows: list[tuple[str, int, str]]) -> bytes:
    return orjson.dumps([reads.decode(*row) for row in rows])


@given(st.lists(st.tuples(ids, timestamps, objects), max_size=5))
def test_fragments_of_compact_text_are_the_decoded_objects(rows: list[Any]) -> None:
    stored = [(i, modified, orjson.dumps(data).decode()) for i, modified, data in rows]
    assert orjson.dumps(reads.fragments(stored)) == expected(stored)
    assert orjson.dumps([reads.fragment(*row) for row in stored]) == expected(stored)


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        "{ }",
        " {} ",
        '{ "a": 1 }',
        '{"a": [1, {"b": null}]}\n',
        ' {"a":1}',
        '{"a":1} ',
        '{\n  "a": "}"\n}',
    ],
)
def test_fragments_of_any_stored_object_text(text: str) -> None:
    # Spliced as stored (its whitespace kept): the same JSON, not the same bytes.
    stored = [("x", 1, text), ('q"\\\x00', 2, text)]
    spliced = orjson.dumps(reads.fragments(stored))
    assert orjson.loads(spliced) == orjson.loads(expected(stored))
    assert spliced == orjson.dumps([reads.fragment(*row) for row in stored])
