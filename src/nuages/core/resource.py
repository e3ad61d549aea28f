"""Resource specifications: what a resource is, independently of HTTP and storage.

A :class:`ResourceSpec` says how a resource is named, nested, identified and
validated. The service (:mod:`nuages.core.service`) gives every spec the whole
protocol: CRUD, timestamps, preconditions, sync, filters, permissions.
"""

from __future__ import annotations

import re
import secrets
import string
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nuages.core.service import Tx

JSONObject = dict[str, Any]

# A validation hook: (new data, old data or None, whether the request carried `data`)
# -> the data to store. Raise ValidationError to reject.
Validator = Callable[[JSONObject, JSONObject | None, bool], JSONObject]
# Called inside the write transaction after an object was written or deleted.
WriteHook = Callable[["Tx", str, JSONObject | None, JSONObject | None], Awaitable[None]]

NAME_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]*$")
UUID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

_FIRST = string.ascii_letters + string.digits
_REST = _FIRST + "_-"


def generate_name() -> str:
    """8 characters: one alphanumeric, then seven of ``[A-Za-z0-9_-]`` (buckets, collections...)."""
    return secrets.choice(_FIRST) + "".join(secrets.choice(_REST) for _ in range(7))


def generate_uuid() -> str:
    return str(uuid.uuid4())


async def _no_hook(tx: Tx, uri: str, old: JSONObject | None, new: JSONObject | None) -> None:
    return None


def _keep(data: JSONObject, old: JSONObject | None, given: bool) -> JSONObject:
    return data


@dataclass(frozen=True, eq=False)
class ResourceSpec:
    """One kind of object.

    `plural` is its URI segment (``records``); an object's URI is
    ``<parent uri>/<plural>/<id>``. `permissions` are the ACL keys its objects
    accept. `known_fields` is None for schemaless resources (unknown fields kept,
    any filter accepted); otherwise filters and sorts on other fields are 400s.
    `parent_must_exist` makes writes under a missing parent a 404 (errno 111)
    answered *before* authorization, as Kinto does for records.
    """

    name: str
    plural: str
    parent: ResourceSpec | None = None
    id_pattern: re.Pattern[str] = NAME_PATTERN
    generate_id: Callable[[], str] = generate_uuid
    permissions: tuple[str, ...] = ("read", "write")
    known_fields: frozenset[str] | None = None
    parent_must_exist: bool = False
    validate: Validator = _keep
    after_write: WriteHook = _no_hook
    before_delete: WriteHook = _no_hook
    children: tuple[str, ...] = ()  # plural segments purged when an object is deleted
    extra: Mapping[str, Any] = field(default_factory=dict)

    def chain(self) -> list[ResourceSpec]:
        """Specs from the root down to this one."""
        specs: list[ResourceSpec] = []
        spec: ResourceSpec | None = self
        while spec is not None:
            specs.append(spec)
            spec = spec.parent
        return specs[::-1]

    def parent_uri(self, ids: Mapping[str, str]) -> str:
        """URI of the parent object, ``""`` for root resources. `ids` maps resource name → id."""
        return "".join(f"/{s.plural}/{ids[s.name]}" for s in self.chain()[:-1])

    def object_uri(self, ids: Mapping[str, str], object_id: str) -> str:
        return f"{self.parent_uri(ids)}/{self.plural}/{object_id}"

    def level_uris(self, ids: Mapping[str, str], object_id: str | None) -> dict[str, str]:
        """URI of each level by resource name (the object's own level when `object_id` is given)."""
        uris: dict[str, str] = {}
        uri = ""
        for spec in self.chain():
            oid = object_id if spec is self else ids.get(spec.name)
            if oid is None:
                break
            uri = f"{uri}/{spec.plural}/{oid}"
            uris[spec.name] = uri
        return uris

    def is_valid_id(self, object_id: str) -> bool:
        return object_id.isascii() and self.id_pattern.fullmatch(object_id) is not None
