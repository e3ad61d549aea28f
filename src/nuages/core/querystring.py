"""Querystring → typed filters, sorting and list options (protocol/05).

Pure functions: the web layer hands over decoded ``(name, value)`` pairs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from nuages.core.errors import ValidationError
from nuages.core.objects import Comparison, Filter, Sort
from nuages.core.timestamps import now_ms

MAX_SORT_FIELDS = 10
_DAY_MS = 24 * 3600 * 1000

_OPERATOR = re.compile(
    r"^(lt|min|max|not|eq|gt|in|exclude|like|has|contains_any|contains)_([\w.]+)$"
)
_SORT_ENTRY = re.compile(r"^([-+]?)([\w.]+)$")
_NUMBER = re.compile(r"^-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$")


@dataclass(frozen=True, slots=True)
class ListParams:
    """What a list request asks for, before pagination is resolved."""

    filters: tuple[Filter, ...] = ()
    sorting: tuple[Sort, ...] = (Sort("last_modified", -1),)
    limit: int | None = None
    token: str | None = None
    fields: tuple[str, ...] | None = None
    include_deleted: bool = False
    deprecated_to: bool = False
    raw: tuple[tuple[str, str], ...] = field(default=())


def _error(name: str, description: str) -> ValidationError:
    return ValidationError(description, location="querystring", name=name)


def native_value(raw: str) -> Any:
    """JSON-parse a value; fall back to the raw string (``?a=Ben`` is the string "Ben")."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


def _number(name: str, raw: str) -> float | int:
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if not _NUMBER.match(text):
        raise _error(name, f'"{raw}" is not a number')
    value = float(text)
    return int(value) if value.is_integer() and "e" not in text.lower() else value


def parse_timestamp(name: str, raw: str, *, allow_null: bool = False) -> int | float | None:
    """A ``_since``/``_before``/``last_modified`` value: number, optionally quoted, < now+24h."""
    if allow_null and raw.strip() == "null":
        return None
    value = _number(name, raw)
    if value < 0 or value > now_ms() + _DAY_MS:
        raise _error(name, f"Invalid value for {name}")
    return value


def _parse_limit(raw: str) -> int:
    text = raw.strip()
    if not re.fullmatch(r"-?\d+", text):
        raise _error("_limit", f'"{raw}" is not a number')
    value = int(text)
    if value < 0:
        raise _error("_limit", f"{value} is less than minimum value 0")
    return value


def _parse_sort(raw: str, known: frozenset[str] | None) -> tuple[Sort, ...]:
    sorting: list[Sort] = []
    for entry in raw.split(","):
        match = _SORT_ENTRY.match(entry.strip())
        if match is None:
            continue  # invalid entries are ignored silently (Kinto)
        direction, name = match.groups()
        if known is not None and name.split(".")[0] not in known:
            raise _error("_sort", f"Unknown sort field '{name}'")
        sorting.append(Sort(name, -1 if direction == "-" else 1))
    if len(sorting) > MAX_SORT_FIELDS:
        raise _error("_sort", f"_sort accepts at most {MAX_SORT_FIELDS} fields")
    if not any(s.field == "last_modified" for s in sorting):
        sorting.append(Sort("last_modified", -1))
    return tuple(sorting)


def _parse_filter(name: str, raw: str, known: frozenset[str] | None) -> Filter:
    match = _OPERATOR.match(name)
    if match is None:
        operator, fieldname = Comparison.EQ, name
    else:
        operator, fieldname = Comparison(match.group(1)), match.group(2)
    if known is not None and fieldname.split(".")[0] not in known:
        raise _error(name, f"Unknown filter field '{name}'")

    if operator in (Comparison.IN, Comparison.EXCLUDE):
        value: Any = tuple(native_value(v) for v in raw.split(","))
    else:
        value = native_value(raw)

    if fieldname == "last_modified":
        if operator in (Comparison.IN, Comparison.EXCLUDE, Comparison.LIKE, Comparison.HAS):
            raise _error(name, f"Invalid value for {name}")
        if operator in (Comparison.CONTAINS, Comparison.CONTAINS_ANY):
            raise _error(name, "Field 'last_modified' is not an array")
        value = parse_timestamp(name, raw)
    elif fieldname == "id":
        if operator in (Comparison.CONTAINS, Comparison.CONTAINS_ANY):
            raise _error(name, "Field 'id' is not an array")
        if operator in (Comparison.IN, Comparison.EXCLUDE):
            if not all(isinstance(v, str) for v in value):
                raise _error(name, f"Invalid value for {name}")
        elif operator is not Comparison.HAS:
            value = raw  # ids are strings: ?id=1 means the id "1"

    if operator is Comparison.LIKE and not isinstance(value, str):
        raise _error(name, f"Invalid value for {name}")
    if operator is Comparison.HAS:
        value = bool(value)
    if operator in (Comparison.CONTAINS, Comparison.CONTAINS_ANY) and not isinstance(value, list):
        value = [value]
    return Filter(fieldname, value, operator)


def parse_list_params(
    params: Sequence[tuple[str, str]],
    *,
    known_fields: frozenset[str] | None = None,
) -> ListParams:
    """Parse the querystring of a plural request.

    `known_fields` is None on schemaless resources; otherwise unknown filter and sort
    fields are rejected (``id`` and ``last_modified`` are always known).
    """
    if known_fields is not None:
        known_fields = known_fields | {"id", "last_modified"}
    filters: list[Filter] = []
    sorting: tuple[Sort, ...] = (Sort("last_modified", -1),)
    limit: int | None = None
    token: str | None = None
    fields: tuple[str, ...] | None = None
    include_deleted = False
    deprecated_to = False

    for rawname, raw in params:
        if "\x00" in rawname or "\x00" in raw:
            raise _error(rawname, "Invalid character 0x00")
        name = rawname.strip()
        if name in ("_since", "_before", "_to"):
            value = parse_timestamp(name, raw, allow_null=True)
            include_deleted = True
            deprecated_to = deprecated_to or name == "_to"
            if value is not None:
                op = Comparison.GT if name == "_since" else Comparison.LT
                filters.append(Filter("last_modified", value, op))
        elif name == "_limit":
            limit = _parse_limit(raw)
        elif name == "_token":
            token = raw
        elif name == "_sort":
            sorting = _parse_sort(raw, known_fields)
        elif name == "_fields":
            fields = tuple(f.strip() for f in raw.split(",") if f.strip())
            if known_fields is not None:
                unknown = [f for f in fields if f.split(".")[0] not in known_fields]
                if unknown:
                    raise ValidationError(
                        f"Fields {','.join(unknown)} do not exist",
                        location="querystring",
                        name="Invalid _fields parameter",
                    )
        elif name.startswith("_"):
            continue  # unknown reserved parameters are ignored (e.g. _expected)
        else:
            flt = _parse_filter(name, raw, known_fields)
            if flt.field == "last_modified":
                include_deleted = True
            filters.append(flt)

    return ListParams(
        filters=tuple(filters),
        sorting=sorting,
        limit=limit,
        token=token,
        fields=fields,
        include_deleted=include_deleted,
        deprecated_to=deprecated_to,
        raw=tuple(params),
    )


def project(obj: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """``_fields`` projection: dotted names select sub-fields; id and last_modified are kept."""
    result: dict[str, Any] = {}
    for name in (*fields, "id", "last_modified"):
        root, _, rest = name.partition(".")
        if root not in obj:
            continue
        if not rest or not isinstance(obj[root], dict):
            result[root] = obj[root]
            continue
        sub = project_nested(obj[root], rest)
        if sub is not None:
            target = result.setdefault(root, {})
            if isinstance(target, dict):
                _deep_merge(target, sub)
    return result


def project_nested(value: dict[str, Any], path: str) -> dict[str, Any] | None:
    key, _, rest = path.partition(".")
    if key not in value:
        return None
    if not rest or not isinstance(value[key], dict):
        return {key: value[key]}
    sub = project_nested(value[key], rest)
    return None if sub is None else {key: sub}


def _deep_merge(target: dict[str, Any], source: dict[str, Any]) -> None:
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = value
