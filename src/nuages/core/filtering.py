"""Reference semantics of filters and sorting, in pure Python.

This module *is* the specification that every backend follows: the memory backend
uses it directly and the SQL backends are property-tested against it.

Ordering of JSON values (PostgreSQL's JSONB order, which Kinto follows)::

    null < strings < numbers < booleans < arrays < objects < (missing)

Strings compare by code point, numbers numerically, ``false < true``; arrays and
objects compare by their canonical JSON text (sorted keys). A missing field is
greater than any present value.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from nuages.core.objects import MISSING, Comparison, Filter, Keyset, Sort


def get_field(obj: Mapping[str, Any], field: str) -> Any:
    """Value of a (dotted) field, or :data:`MISSING`. Only nested objects are walked."""
    if field in obj:
        return obj[field]
    if "." not in field:
        return MISSING
    value: Any = obj
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def type_rank(value: Any) -> int:
    if value is MISSING:
        return 6
    if value is None:
        return 0
    if isinstance(value, str):
        return 1
    if isinstance(value, bool):
        return 3
    if isinstance(value, int | float):
        return 2
    if isinstance(value, list):
        return 4
    return 5


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def compare_values(a: Any, b: Any) -> int:
    """Total order over JSON values and MISSING: -1, 0 or 1."""
    ra, rb = type_rank(a), type_rank(b)
    if ra != rb:
        return -1 if ra < rb else 1
    if ra in (0, 6):
        return 0
    if ra in (4, 5):
        a, b = _canonical(a), _canonical(b)
    return -1 if a < b else (1 if a > b else 0)


def json_equal(a: Any, b: Any) -> bool:
    """Type-strict JSON equality: ``1 != "1"``, ``true != 1``, ``1 == 1.0``."""
    if type_rank(a) != type_rank(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def like_regex(pattern: str) -> re.Pattern[str]:
    """``*`` is any sequence; a pattern without ``*`` is a substring match; case-insensitive."""
    if "*" not in pattern:
        pattern = f"*{pattern}*"
    parts = (re.escape(p) for p in pattern.split("*"))
    return re.compile(".*".join(parts), re.IGNORECASE | re.DOTALL)


def matches(obj: Mapping[str, Any], flt: Filter) -> bool:
    """Whether `obj` satisfies one filter (missing-field semantics of protocol/05 §2)."""
    value = get_field(obj, flt.field)
    op = flt.operator
    if op is Comparison.EQ:
        return value is not MISSING and json_equal(value, flt.value)
    if op is Comparison.NOT:
        return value is MISSING or not json_equal(value, flt.value)
    if op is Comparison.IN:
        return value is not MISSING and any(json_equal(value, v) for v in flt.value)
    if op is Comparison.EXCLUDE:
        return value is MISSING or not any(json_equal(value, v) for v in flt.value)
    if op is Comparison.HAS:
        return (value is not MISSING) == bool(flt.value)
    if op is Comparison.LIKE:
        return isinstance(value, str) and like_regex(str(flt.value)).fullmatch(value) is not None
    if op in (Comparison.CONTAINS, Comparison.CONTAINS_ANY):
        if not isinstance(value, list):
            return False
        wanted = flt.value if isinstance(flt.value, list) else [flt.value]
        found = (any(json_equal(item, w) for item in value) for w in wanted)
        return all(found) if op is Comparison.CONTAINS else any(found)
    cmp = compare_values(value, flt.value)
    if op is Comparison.LT:
        return cmp < 0
    if op is Comparison.GT:
        return cmp > 0
    if op is Comparison.MIN:
        return cmp >= 0
    if op is Comparison.MAX:
        return cmp <= 0
    raise AssertionError(op)  # pragma: no cover


def matches_all(obj: Mapping[str, Any], filters: Iterable[Filter]) -> bool:
    return all(matches(obj, f) for f in filters)


def sort_values(obj: Mapping[str, Any], sorting: Sequence[Sort]) -> tuple[Any, ...]:
    return tuple(get_field(obj, s.field) for s in sorting)


def compare_keys(a: Sequence[Any], b: Sequence[Any], sorting: Sequence[Sort]) -> int:
    for x, y, s in zip(a, b, sorting, strict=True):
        cmp = compare_values(x, y)
        if cmp:
            return cmp * s.direction
    return 0


def sort_objects(
    objects: Iterable[Mapping[str, Any]], sorting: Sequence[Sort]
) -> list[Mapping[str, Any]]:
    def cmp(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
        return compare_keys(sort_values(a, sorting), sort_values(b, sorting), sorting)

    return sorted(objects, key=functools.cmp_to_key(cmp))


def after_keyset(obj: Mapping[str, Any], sorting: Sequence[Sort], keyset: Keyset) -> bool:
    """Whether `obj` comes strictly after the keyset position in this sort order."""
    return compare_keys(sort_values(obj, sorting), keyset.values, sorting) > 0
