"""Entries of ``GET /v1/permissions``, built, sorted and paged fast (protocol/09 §7).

A user may hold permissions on 100,000 objects or more (every record they created has its
own ACL): this endpoint is a known slow spot in Kinto. The generic helpers of
:mod:`nuages.core.filtering` compare any JSON values with a comparison function; here every
sortable field is a string or absent, so entries sort with plain key functions (one stable
pass per sort field, last field first) and a page is found by bisection instead of a scan.
The order is exactly the generic one: strings by code point, absent fields after every
string (before them when descending).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nuages.core import filtering
from nuages.core.objects import Keyset, Sort

__all__ = ["EntryBuilder", "page_start", "sort_entries"]


class EntryBuilder:
    """Builds entries from ``(uri, permissions held)``.

    `levels` maps URI segments to resource names, `implied` the permissions a permission
    implies within the same object (write ⇒ read, ...). Two savings make 100,000 entries
    cheap: the fields of a parent URI are parsed once for all its children (a user's
    records mostly share a collection), and ``permissions`` holds the raw set until
    :meth:`finish`, which expands it only for the entries actually returned.
    """

    def __init__(
        self, levels: Mapping[str, str], implied: Mapping[str, Mapping[str, tuple[str, ...]]]
    ) -> None:
        self._levels = levels
        self._implied = implied
        self._expanded: dict[tuple[str, frozenset[str]], list[str]] = {}
        self._parents: dict[str, dict[str, str] | None] = {"": {}}

    def _parent(self, uri: str) -> dict[str, str] | None:
        """``{"<name>_id": id, ...}`` of a parent URI, None when it is no object URI."""
        if uri in self._parents:
            return self._parents[uri]
        parts = uri.split("/")
        fields: dict[str, str] | None = {}
        # "/a/b/c/d" splits into ["", "a", "b", "c", "d"]: an empty head, then pairs.
        if len(parts) % 2 == 0 or parts[0]:
            fields = None
        else:
            for index in range(1, len(parts), 2):
                name = self._levels.get(parts[index])
                if not name or not parts[index + 1]:
                    fields = None
                    break
                fields[name + "_id"] = parts[index + 1]  # type: ignore[index]
        self._parents[uri] = fields
        return fields

    def __call__(self, uri: str, held: set[str]) -> dict[str, Any] | None:
        """The entry of one object URI (``/buckets/b/collections/c``), None for others."""
        head, _, object_id = uri.rpartition("/")
        parent_uri, _, plural = head.rpartition("/")
        name = self._levels.get(plural)
        parent = self._parent(parent_uri)
        if not name or not object_id or parent is None or not uri.startswith("/"):
            return None
        entry: dict[str, Any] = {"uri": uri, **parent, name + "_id": object_id}
        entry["resource_name"] = name
        entry["id"] = object_id
        entry["permissions"] = held  # expanded by finish()
        return entry

    def finish(self, entry: dict[str, Any]) -> dict[str, Any]:
        """The entry as returned: its permissions expanded within the object, sorted."""
        held = entry["permissions"]
        if isinstance(held, set | frozenset):
            name = entry["resource_name"]
            key = (name, frozenset(held))
            found = self._expanded.get(key)
            if found is None:
                expanded = set(held)
                for perm in held:
                    expanded.update(self._implied.get(name, {}).get(perm, ()))
                found = self._expanded[key] = sorted(expanded)
            entry = {**entry, "permissions": list(found)}
        return entry


def _key(field: str) -> Any:
    def key(entry: Mapping[str, Any]) -> tuple[int, str]:
        value = entry.get(field)
        return (0, value) if isinstance(value, str) else (1, "")

    return key


def sort_entries(entries: list[dict[str, Any]], sorting: Sequence[Sort]) -> list[dict[str, Any]]:
    """`entries` in the order of `sorting` (as :func:`filtering.sort_objects` would)."""
    ordered = list(entries)
    for sort in reversed(sorting):  # stable sorts: the last key first, the first key last
        ordered.sort(key=_key(sort.field), reverse=sort.direction < 0)
    return ordered


def page_start(
    ordered: Sequence[Mapping[str, Any]], sorting: Sequence[Sort], keyset: Keyset
) -> int:
    """Index of the first entry strictly after `keyset` in `ordered` (sorted by `sorting`)."""
    low, high = 0, len(ordered)
    while low < high:
        middle = (low + high) // 2
        if filtering.after_keyset(ordered[middle], sorting, keyset):
            high = middle
        else:
            low = middle + 1
    return low
