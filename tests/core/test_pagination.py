"""Page sizes, tokens and Next-Page URLs (protocol/05 §4): pure functions."""

from __future__ import annotations

import base64
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nuages.core.errors import ValidationError
from nuages.core.objects import MISSING, Sort
from nuages.core.pagination import decode_token, effective_limit, encode_token, next_page_url

SORTING = (Sort("title", 1), Sort("a.b", -1), Sort("last_modified", -1))


@pytest.mark.parametrize(
    ("requested", "paginate_by", "max_fetch", "expected"),
    [
        (None, None, 10000, 10000),
        (0, None, 10000, 10000),
        (5, None, 10000, 5),
        (20000, None, 10000, 10000),
        (None, 3, 10000, 3),
        (10, 3, 10000, 3),
        (2, 3, 10000, 2),
        (0, 3, 10000, 10000),  # _limit=0 is "maximum", even past paginate_by (Kinto)
        (None, 50, 20, 20),
        (30, 50, 20, 20),
    ],
)
def test_effective_limit(requested, paginate_by, max_fetch, expected):
    assert effective_limit(requested, paginate_by, max_fetch) == expected


def decoded(token: str) -> dict:
    return orjson.loads(base64.b64decode(token, validate=True))


def test_token_is_padded_standard_base64_json():
    token = encode_token({"id": "x", "title": "t", "last_modified": 7}, SORTING, 10)
    payload = decoded(token)
    assert set(payload) == {"last_object", "offset", "nonce"}
    assert payload["offset"] == 10
    assert payload["nonce"].startswith("pagination-token-")
    assert len(token) % 4 == 0


def test_token_stores_sort_values_under_dotted_keys_and_omits_missing_ones():
    token = encode_token({"id": "x", "a": {"b": 3}, "last_modified": 7}, SORTING, 1)
    assert decoded(token)["last_object"] == {"a.b": 3, "last_modified": 7}


def test_tokens_have_distinct_nonces():
    obj = {"id": "x", "last_modified": 7}
    assert (
        decoded(encode_token(obj, SORTING, 1))["nonce"]
        != decoded(encode_token(obj, SORTING, 1))["nonce"]
    )


def test_decode_round_trips_with_missing_values():
    token = encode_token({"id": "x", "title": None, "last_modified": 7}, SORTING, 4)
    keyset, nonce, offset = decode_token(token, SORTING)
    assert keyset.values == (None, MISSING, 7)
    assert nonce.startswith("pagination-token-")
    assert offset == 4


def b64(value: object) -> str:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    "token",
    [
        "",
        "%%%",
        "abc",
        b64(b"not json"),
        b64([1, 2]),
        b64({"offset": 1, "nonce": "n"}),
        b64({"last_object": [], "offset": 1, "nonce": "n"}),
        b64({"last_object": {}, "offset": 1}),
        b64({"last_object": {}, "offset": "1", "nonce": "n"}),
        "é",
    ],
)
def test_invalid_tokens_are_rejected(token):
    with pytest.raises(ValidationError) as info:
        decode_token(token, SORTING)
    (detail,) = info.value.details
    assert (detail.location, detail.name, detail.description) == (
        "querystring",
        "_token",
        "_token has invalid content",
    )


@given(
    values=st.fixed_dictionaries(
        {},
        optional={
            "title": st.one_of(
                st.none(),
                st.text("abcé", max_size=5),
                st.integers(-(2**63), 2**63 - 1),
                st.booleans(),
            ),
            "a": st.fixed_dictionaries({}, optional={"b": st.integers(-(2**63), 2**63 - 1)}),
        },
    ),
    offset=st.integers(0, 10**6),
)
def test_token_round_trip(values, offset):
    obj = {"id": "x", "last_modified": 99, **values}
    keyset, _, decoded_offset = decode_token(encode_token(obj, SORTING, offset), SORTING)
    expected_b = obj.get("a", {}).get("b", MISSING)
    assert keyset.values == (obj.get("title", MISSING), expected_b, 99)
    assert decoded_offset == offset


def test_next_page_url_keeps_params_and_replaces_limit_and_token():
    url = next_page_url(
        "http://h:8888/v1/buckets/b/collections/c/records",
        [("_since", '"12"'), ("_limit", "99"), ("title", "a b&c"), ("_token", "old")],
        5,
        "tok/+=",
    )
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "http",
        "h:8888",
        "/v1/buckets/b/collections/c/records",
    )
    assert parse_qsl(parts.query) == [
        ("_since", '"12"'),
        ("title", "a b&c"),
        ("_limit", "5"),
        ("_token", "tok/+="),
    ]


@given(
    params=st.lists(st.tuples(st.text(max_size=6), st.text(max_size=6)), max_size=4),
    limit=st.integers(0, 10_000),
    title=st.text(max_size=12),
    other=st.text(max_size=12),
)
def test_next_page_url_encodes_as_urlencode_does(
    params: list[tuple[str, str]], limit: int, title: str, other: str
) -> None:
    """Its own encoding of encode_token's tokens, urlencode's for any other: the same URL."""
    base = "http://h/v1/buckets/b/collections/c/records"
    ours = encode_token({"id": "x", "title": title, "last_modified": 7}, SORTING, limit)
    for token in (ours, other):
        kept = [(k, v) for k, v in params if k not in ("_limit", "_token")]
        expected = f"{base}?{urlencode([*kept, ('_limit', str(limit)), ('_token', token)])}"
        assert next_page_url(base, params, limit, token) == expected
