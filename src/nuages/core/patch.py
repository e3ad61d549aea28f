"""The three PATCH flavours of protocol/03 §6: shallow merge, RFC 7396, RFC 6902."""

from __future__ import annotations

import copy
from typing import Any

from nuages.core.errors import ValidationError
from nuages.core.filtering import json_equal

_OPS = frozenset({"test", "add", "remove", "replace", "move", "copy"})
_OP_KEYS = frozenset({"op", "path", "from", "value"})


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge recursively, ``null`` removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class _PatchFailed(Exception):
    pass


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise _PatchFailed(f"invalid path {path!r}")
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> Any:
    node = doc
    for part in parts[:-1]:
        node = _child(node, part)
    return node


def _child(node: Any, part: str) -> Any:
    if isinstance(node, dict):
        if part not in node:
            raise _PatchFailed(f"member {part!r} not found")
        return node[part]
    if isinstance(node, list):
        return node[_index(node, part, allow_end=False)]
    raise _PatchFailed(f"cannot walk into {part!r}")


def _index(node: list[Any], part: str, *, allow_end: bool) -> int:
    if part == "-" and allow_end:
        return len(node)
    if not part.isdigit() or (part != "0" and part.startswith("0")):
        raise _PatchFailed(f"invalid array index {part!r}")
    index = int(part)
    if index > len(node) or (index == len(node) and not allow_end):
        raise _PatchFailed(f"array index {index} out of range")
    return index


def _get(doc: Any, parts: list[str]) -> Any:
    node = doc
    for part in parts:
        node = _child(node, part)
    return node


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _parent(doc, parts)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True), value)
    else:
        raise _PatchFailed("cannot add into a scalar")
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    if not parts:
        raise _PatchFailed("cannot remove the whole document")
    parent = _parent(doc, parts)
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _PatchFailed(f"member {last!r} not found")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, allow_end=False))
    raise _PatchFailed("cannot remove from a scalar")


def json_patch(document: Any, operations: Any) -> Any:
    """Apply RFC 6902 operations to a copy of `document`; errors are 400s."""
    if not isinstance(operations, list):
        raise ValidationError("JSON Patch operations must be an array", location="body", name=None)
    doc = copy.deepcopy(document)
    for i, op in enumerate(operations):
        if not isinstance(op, dict) or not set(op) <= _OP_KEYS or op.get("op") not in _OPS:
            raise ValidationError(
                f"{i}: invalid JSON Patch operation", location="body", name=str(i)
            )
        try:
            parts = _pointer(op.get("path"))
            kind = op["op"]
            if kind in ("add", "replace", "test") and "value" not in op:
                raise _PatchFailed(f"'{kind}' needs a value")
            if kind == "add":
                doc = _add(doc, parts, copy.deepcopy(op["value"]))
            elif kind == "remove":
                _remove(doc, parts)
            elif kind == "replace":
                _get(doc, parts)
                if parts:
                    _remove(doc, parts)
                doc = _add(doc, parts, copy.deepcopy(op["value"]))
            elif kind == "test":
                if not json_equal(_get(doc, parts), op["value"]):
                    raise _PatchFailed(f"test failed at {op['path']}")
            else:  # move, copy
                source = _pointer(op.get("from"))
                if kind == "move" and parts[: len(source)] == source and parts != source:
                    raise _PatchFailed("cannot move a value into itself")
                value = copy.deepcopy(_get(doc, source))
                if kind == "move":
                    _remove(doc, source)
                doc = _add(doc, parts, value)
        except (_PatchFailed, KeyError, TypeError) as exc:
            raise ValidationError(
                f"JSON Patch operation failed: {exc}", location="body", name=None
            ) from None
    return doc
