"""Filters and sorts of the local store, translated to SQL over ``json_extract`` (pure).

The filter syntax is the server's (protocol/05 §2), with Python values instead of querystring
text: ``{"done": False, "min_priority": 2, "in_tag": ["a", "b"], "like_title": "moz*"}``.
Semantics follow the server's reference backend: matching is type-strict (``1`` never equals
``"1"``), a missing field differs from ``null``, and values of different JSON types order as
``null < strings < numbers < booleans < arrays < objects < missing``.

Fields ``id`` and ``last_modified`` are columns; any other (dotted for nested objects) is read
from the record's JSON with ``json_extract``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["FilterError", "SQLFragment", "compile_filters", "compile_sort", "json_path"]

_OPERATOR = re.compile(
    r"^(lt|min|max|not|eq|gt|in|exclude|like|has|contains_any|contains)_([\w.]+)$"
)
_SORT_FIELD = re.compile(r"^[+-]?[\w.]+$")
_COLUMNS = {"id": "r.id", "last_modified": "r.last_modified"}


class FilterError(ValueError):
    """A filter or sort the local store cannot evaluate (unknown operator value, bad field)."""


@dataclass(frozen=True, slots=True)
class SQLFragment:
    """A piece of SQL with its ``?`` parameters, in order."""

    sql: str
    params: tuple[Any, ...] = ()


def json_path(field: str) -> str:
    """``"a.b"`` → ``'$."a"."b"'``: a JSON path with every key quoted."""
    parts = field.split(".")
    if not all(parts):
        raise FilterError(f"invalid field name {field!r}")
    return "$" + "".join('."' + part.replace('"', '\\"') + '"' for part in parts)


def _type_rank(kind: str) -> str:
    return (
        f"CASE {kind} WHEN 'null' THEN 0 WHEN 'text' THEN 1 WHEN 'integer' THEN 2 "
        "WHEN 'real' THEN 2 WHEN 'false' THEN 3 WHEN 'true' THEN 3 WHEN 'array' THEN 4 "
        "WHEN 'object' THEN 5 ELSE 6 END"
    )


def _value_rank(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        return 3
    if isinstance(value, str):
        return 1
    if isinstance(value, (int, float)):
        return 2
    if isinstance(value, (list, tuple)):
        return 4
    if isinstance(value, dict):
        return 5
    raise FilterError(f"{value!r} is not a JSON value")


def _sql_value(value: Any) -> Any:
    """The value ``json_extract`` would give for ``value`` (booleans are 0/1, arrays JSON text)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return value


class _Field:
    """SQL expressions for one field: its JSON type, value, and sort rank."""

    def __init__(self, name: str, kind: str, value: str, path: str | None) -> None:
        self.name = name
        self.kind = kind
        self.value = value
        self.path = path

    @classmethod
    def of(cls, name: str) -> _Field:
        """The field ``name`` of the record (a column for ``id`` and ``last_modified``)."""
        column = _COLUMNS.get(name)
        if column is None:
            path = _quote_sql(json_path(name))
            kind = f"json_type(r.data, '{path}')"
            return cls(name, kind, f"json_extract(r.data, '{path}')", json_path(name))
        text = "'text'" if name == "id" else "'integer'"
        return cls(name, f"(CASE WHEN {column} IS NULL THEN NULL ELSE {text} END)", column, None)

    def rank(self) -> str:
        return _type_rank(self.kind)

    def equals(self, value: Any) -> SQLFragment:
        """Type-strict equality; never NULL (0 or 1)."""
        kind = f"IFNULL({self.kind}, 'missing')"
        if value is None:
            return SQLFragment(f"({kind} = 'null')")
        if isinstance(value, bool):
            return SQLFragment(f"({kind} = '{'true' if value else 'false'}')")
        if isinstance(value, str):
            return SQLFragment(f"({kind} = 'text' AND {self.value} = ?)", (value,))
        if isinstance(value, (int, float)):
            return SQLFragment(f"({kind} IN ('integer', 'real') AND {self.value} = ?)", (value,))
        if isinstance(value, (list, tuple, dict)):
            kind_name = "object" if isinstance(value, dict) else "array"
            return SQLFragment(
                f"({kind} = '{kind_name}' AND {self.value} = json(?))", (_sql_value(value),)
            )
        raise FilterError(f"{value!r} is not a JSON value")

    def compare(self, operator: str, value: Any) -> SQLFragment:
        """``<``, ``<=``, ``>``, ``>=`` over (type rank, value); a missing field ranks last."""
        rank = _value_rank(value)
        sql_value = _sql_value(value)
        if value is None:
            # Every null is equal: only the rank decides.
            return SQLFragment(f"({self.rank()} {operator} ?)", (rank,))
        strict = operator.rstrip("=")
        return SQLFragment(
            f"({self.rank()} {strict} ? OR ({self.rank()} = ? AND {self.value} {operator} ?))",
            (rank, rank, sql_value),
        )


def _quote_sql(text: str) -> str:
    return text.replace("'", "''")


def _like_pattern(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    if "*" not in escaped:
        escaped = f"*{escaped}*"
    return escaped.replace("*", "%")


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() not in ("", "0", "false", "null")
    return bool(value)


def _contains(field: _Field, values: Sequence[Any], *, any_of: bool) -> SQLFragment:
    if field.path is None:
        raise FilterError(f"field {field.name!r} is not an array")
    if not values:
        return SQLFragment("0" if any_of else f"(IFNULL({field.kind}, '') = 'array')")
    parts: list[str] = []
    params: list[Any] = []
    for value in values:
        test = _Field(field.name, "e.type", "e.value", None).equals(value)
        parts.append(
            f"EXISTS (SELECT 1 FROM json_each(r.data, '{_quote_sql(field.path)}') AS e "
            f"WHERE {test.sql})"
        )
        params.extend(test.params)
    joined = (" OR " if any_of else " AND ").join(parts)
    return SQLFragment(f"(IFNULL({field.kind}, '') = 'array' AND ({joined}))", tuple(params))


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    return [value]


def _compile_one(name: str, value: Any) -> SQLFragment:
    match = _OPERATOR.match(name.strip())
    operator, field_name = (match.group(1), match.group(2)) if match else ("eq", name.strip())
    field = _Field.of(field_name)
    if operator == "eq":
        return field.equals(value)
    if operator == "not":
        test = field.equals(value)
        return SQLFragment(f"(NOT {test.sql})", test.params)
    if operator in ("lt", "gt", "min", "max"):
        symbol = {"lt": "<", "gt": ">", "min": ">=", "max": "<="}[operator]
        return field.compare(symbol, value)
    if operator in ("in", "exclude"):
        tests = [field.equals(item) for item in _as_list(value)]
        if not tests:
            return SQLFragment("0" if operator == "in" else "1")
        sql = "(" + " OR ".join(test.sql for test in tests) + ")"
        params = tuple(param for test in tests for param in test.params)
        return SQLFragment(sql if operator == "in" else f"(NOT {sql})", params)
    if operator == "like":
        if not isinstance(value, str):
            raise FilterError(f"like_{field_name} needs a string, not {value!r}")
        return SQLFragment(
            f"(IFNULL({field.kind}, '') = 'text' AND {field.value} LIKE ? ESCAPE '\\')",
            (_like_pattern(value),),
        )
    if operator == "has":
        return SQLFragment(f"({field.kind} IS {'NOT ' if _truthy(value) else ''}NULL)")
    # contains / contains_any
    return _contains(field, _as_list(value), any_of=operator == "contains_any")


def compile_filters(filters: Mapping[str, Any] | None) -> SQLFragment:
    """A ``WHERE`` condition (``"1"`` when there is no filter); all filters are AND-ed."""
    fragments = [_compile_one(name, value) for name, value in (filters or {}).items()]
    if not fragments:
        return SQLFragment("1")
    sql = " AND ".join(fragment.sql for fragment in fragments)
    return SQLFragment(sql, tuple(param for fragment in fragments for param in fragment.params))


def compile_sort(sort: str | Sequence[str] | None) -> str:
    """An ``ORDER BY`` list for ``"-priority,title"`` (or a list); ``id`` breaks ties.

    Missing fields sort last ascending, first descending, as on the server.
    """
    entries = sort.split(",") if isinstance(sort, str) else list(sort or [])
    terms: list[str] = []
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        if not _SORT_FIELD.match(entry):
            raise FilterError(f"invalid sort field {entry!r}")
        descending = entry.startswith("-")
        field = _Field.of(entry.lstrip("+-"))
        direction = "DESC" if descending else "ASC"
        terms.append(f"{field.rank()} {direction}, {field.value} {direction}")
    terms.append("r.id ASC")
    return ", ".join(terms)
