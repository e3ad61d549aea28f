"""``If-Match`` / ``If-None-Match`` parsing and the 304/412 table (protocol/04 §3)."""

from __future__ import annotations

import pytest

from nuages.core.errors import NotModified, PreconditionFailed, ValidationError
from nuages.core.preconditions import ANY, check, parse_etag

OBJ = {"id": "a", "last_modified": 10}


def test_absent_header_is_none():
    assert parse_etag("If-Match", None) is None


@pytest.mark.parametrize(("raw", "expected"), [('"123"', 123), ("*", ANY), ('  "0" ', 0)])
def test_valid_header_values(raw, expected):
    assert parse_etag("If-Match", raw) == expected


@pytest.mark.parametrize("raw", ['W/"1"', "1", '"*"', '"abc"', '"-1"', '"1.5"', "", '"1', "'1'"])
@pytest.mark.parametrize("header", ["If-Match", "If-None-Match"])
def test_invalid_header_values_are_rejected(header, raw):
    with pytest.raises(ValidationError) as info:
        parse_etag(header, raw)
    assert info.value.message == (
        f"{header} in header: The value should be integer between double quotes."
    )
    (detail,) = info.value.details
    assert (detail.location, detail.name) == ("header", header)


def run(current, if_match=None, if_none_match=None, *, read=False, existing=None):
    check(
        current=current,
        if_match=if_match,
        if_none_match=if_none_match,
        read=read,
        existing=existing,
    )


def test_no_headers_proceed():
    run(10)
    run(None)


@pytest.mark.parametrize("read", [True, False])
def test_if_none_match_current_is_304_only_on_reads(read):
    if read:
        with pytest.raises(NotModified) as info:
            run(10, if_none_match=10, read=True)
        assert info.value.timestamp == 10
    else:
        run(10, if_none_match=10)


def test_if_none_match_other_value_has_no_effect():
    run(10, if_none_match=9, read=True)
    run(None, if_none_match=9, read=True)


def test_304_is_checked_before_412():
    with pytest.raises(NotModified):
        run(10, if_match=3, if_none_match=10, read=True)


def test_if_match_current_proceeds():
    run(10, if_match=10)
    run(10, if_match=ANY)


def test_if_match_other_value_fails_with_existing():
    with pytest.raises(PreconditionFailed) as info:
        run(10, if_match=9, existing=OBJ)
    assert info.value.timestamp == 10
    assert info.value.existing == OBJ


@pytest.mark.parametrize("if_match", [10, ANY])
def test_if_match_on_missing_target_fails_without_existing(if_match):
    with pytest.raises(PreconditionFailed) as info:
        run(None, if_match=if_match)
    assert info.value.existing is None


@pytest.mark.parametrize("read", [True, False])
def test_if_none_match_star_on_existing_target_fails(read):
    with pytest.raises(PreconditionFailed) as info:
        run(10, if_none_match=ANY, read=read, existing=OBJ)
    assert info.value.existing == OBJ


def test_if_none_match_star_on_missing_target_proceeds():
    run(None, if_none_match=ANY)


def test_if_none_match_star_never_gives_304():
    with pytest.raises(PreconditionFailed):
        run(10, if_none_match=ANY, read=True)
