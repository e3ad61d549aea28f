"""Value types shared by the toolkit and the backends: filters, sorts, pages."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Final


class _Missing(enum.Enum):
    """Sentinel for "this field is absent", distinct from JSON ``null`` (``None``)."""

    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing.MISSING


class Comparison(enum.Enum):
    """Filter operators, named after their querystring prefix."""

    EQ = "eq"
    NOT = "not"
    LT = "lt"
    GT = "gt"
    MIN = "min"
    MAX = "max"
    IN = "in"
    EXCLUDE = "exclude"
    LIKE = "like"
    HAS = "has"
    CONTAINS = "contains"
    CONTAINS_ANY = "contains_any"


@dataclass(frozen=True, slots=True)
class Filter:
    """``<field> <operator> <value>``.

    `field` may be dotted (``a.b.c``: nested objects). `id` and `last_modified`
    name the object's id and timestamp. For ``IN``/``EXCLUDE`` the value is a
    tuple, for ``CONTAINS``/``CONTAINS_ANY`` a list, for ``HAS`` a bool.
    """

    field: str
    value: Any
    operator: Comparison = Comparison.EQ


@dataclass(frozen=True, slots=True)
class Sort:
    """Order by `field`; `direction` is 1 (ascending) or -1 (descending)."""

    field: str
    direction: int = 1


@dataclass(frozen=True, slots=True)
class Keyset:
    """Resume a sorted listing strictly after the object whose sort values are `values`.

    `values[i]` is the value of `sorting[i].field` in the last object of the previous
    page, or :data:`MISSING` when that object had no such field. Missing values sort
    after every present value.
    """

    values: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class ListQuery:
    """Everything a backend needs to produce one page of a listing."""

    filters: tuple[Filter, ...] = ()
    sorting: tuple[Sort, ...] = (Sort("last_modified", -1),)
    keyset: Keyset | None = None
    limit: int | None = None
    include_deleted: bool = False
    # Restrict to these ids (list visibility); None means no restriction.
    ids: frozenset[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
