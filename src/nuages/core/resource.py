"""Resource specifications: what a resource is, independently of HTTP and storage.

A :class:`ResourceSpec` says how a resource is named, nested, identified and
validated. The service (:mod:`nuages.core.service`) gives every spec the whole
protocol: CRUD, timestamps, preconditions, sync, filters, permissions.
"""

from __future__ import annotations

import copy
import functools
import re
import secrets
import string
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jsonschema_rs
from jsonschema_rs import meta as jsonschema_meta

from nuages.core.errors import ErrorDetail, ValidationError

if TYPE_CHECKING:
    from nuages.core.service import Tx

JSONObject = dict[str, Any]

# A processing hook: (new data, old data or None, whether the request carried `data`)
# -> the data to store, or None to keep `new` (adjusted in place). Raise ValidationError
# to reject the write.
Validator = Callable[[JSONObject, JSONObject | None, bool], JSONObject | None]
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
    """A random UUID (version 4)."""
    return str(uuid.uuid4())


def generate_sortable_uuid() -> str:
    """A UUID in the version-4 format (any check of a uuid4 accepts it) whose first 48 bits
    are the current time in milliseconds and whose other 74 bits are random. Ids made one
    after the other sort together, so the indexes of a collection grow at one end rather
    than at random places: an embedded database writes far fewer pages per create. Two ids
    made in one millisecond differ by 74 random bits. It tells when it was made."""
    # A uuid4's last 80 bits: its version and variant bits, and 74 random ones.
    random_bits = uuid.uuid4().int & (2**80 - 1)
    return str(uuid.UUID(int=(time.time_ns() // 1_000_000) << 80 | random_bits))


async def _no_hook(tx: Tx, uri: str, old: JSONObject | None, new: JSONObject | None) -> None:
    return None


def _keep(data: JSONObject, old: JSONObject | None, given: bool) -> JSONObject:
    return data


ALL_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True, eq=False)
class ResourceSpec:
    """One kind of object: everything the toolkit needs to serve it with the whole protocol.

    Identity and nesting
        `name` (``record``) and `plural`, its URI segment (``records``); an object's URI
        is ``<parent uri>/<plural>/<id>``. `parent` is the enclosing resource, or
        :data:`OWNER` for objects that belong to the authenticated user (each user has
        their own scope and sees only their objects). `id_pattern` validates ids,
        `generate_id` makes them for ``POST`` without one.

    Data
        `schema`: a JSON Schema every stored object must satisfy (checked after defaults,
        server fields and `process`). `defaults`: values for fields a creation leaves out.
        `server_fields(new, old)`: fields the server sets on every write (they are
        read-only for clients). `read_only_fields`: fields a client may set on creation
        but never change (400 ``Cannot modify <field>``). `unique_fields`: no two objects
        of one parent share a value of any of them; a conflicting creation answers 409
        (errno 122, ``details.existing``), or 200 with the existing object when
        `on_unique_conflict` is ``"existing"``. `process(new, old, data_given)`: a hook
        that adjusts the new object (in place, or by returning another) or rejects it (raise
        ``ValidationError``).

    Protocol
        `methods`: the HTTP methods served (others answer 405). `permissions`: ACL keys
        objects accept. `known_fields`: None for schemaless resources (any filter or sort
        accepted), otherwise filters and sorts on other fields are 400s.
        `parent_must_exist` makes writes under a missing parent a 404 (errno 111) answered
        *before* authorization, as Kinto does for records. `after_write` and
        `before_delete` run inside the write transaction; `children` are the URI segments
        purged with an object.
    """

    name: str
    plural: str
    parent: ResourceSpec | None = None
    id_pattern: re.Pattern[str] = NAME_PATTERN
    generate_id: Callable[[], str] = generate_uuid
    schema: Mapping[str, Any] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    server_fields: Callable[[JSONObject, JSONObject | None], Mapping[str, Any]] | None = None
    read_only_fields: tuple[str, ...] = ()
    unique_fields: tuple[str, ...] = ()
    on_unique_conflict: str = "error"  # or "existing"
    process: Validator = _keep
    methods: frozenset[str] = ALL_METHODS
    permissions: tuple[str, ...] = ("read", "write")
    known_fields: frozenset[str] | None = None
    parent_must_exist: bool = False
    after_write: WriteHook = _no_hook
    before_delete: WriteHook = _no_hook
    children: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.on_unique_conflict not in ("error", "existing"):
            raise ValueError("on_unique_conflict must be 'error' or 'existing'")
        unknown = set(self.methods) - ALL_METHODS
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}")
        if self.schema is not None:
            jsonschema_meta.validate(dict(self.schema))

    @functools.cached_property
    def _validator(self) -> Any:
        return None if self.schema is None else jsonschema_rs.validator_for(dict(self.schema))

    @functools.cached_property
    def owned(self) -> bool:
        """Whether objects belong to the authenticated user: :data:`OWNER` roots the chain."""
        return self.chain()[0] is OWNER

    def prepare(
        self, new: JSONObject, old: JSONObject | None, *, sent: Mapping[str, Any], given: bool
    ) -> JSONObject:
        """The object to store: read-only fields, defaults, server fields, `process`, schema.

        `sent` is what the client sent for this write (its ``data``), `given` whether the
        request carried ``data`` at all.
        """
        if old is not None:
            for name in (*self.read_only_fields, *self._server_field_names(new, old)):
                if name in sent and sent[name] != old.get(name):
                    raise ValidationError(
                        f"Cannot modify {name}", location="body", name=f"data.{name}"
                    )
                if name in old:
                    new[name] = old[name]
        else:
            for name, value in self.defaults.items():
                new.setdefault(name, copy.deepcopy(value))
        if self.server_fields is not None:
            new.update(self.server_fields(new, old))
        processed = self.process(new, old, given)
        new = new if processed is None else processed  # the hook may adjust in place
        if self._validator is not None:
            errors = [
                ErrorDetail("body", ".".join(["data", *map(str, e.instance_path)]), e.message)
                for e in self._validator.iter_errors(new)
            ]
            if errors:
                raise ValidationError(errors[0].description, details=errors)
        return new

    def _server_field_names(self, new: JSONObject, old: JSONObject | None) -> tuple[str, ...]:
        return () if self.server_fields is None else tuple(self.server_fields(new, old))

    def plural_template(self) -> str:
        """URL template of the list, e.g. ``/buckets/{bucket}/collections``; the owner's
        level is implicit (it is the caller)."""
        parents = [s for s in self.chain()[:-1] if s is not OWNER]
        return "".join(f"/{s.plural}/{{{s.name}}}" for s in parents) + f"/{self.plural}"

    def chain(self) -> list[ResourceSpec]:
        """Specs from the root down to this one."""
        return list(self._chain)

    @functools.cached_property
    def _chain(self) -> tuple[ResourceSpec, ...]:
        specs: list[ResourceSpec] = []
        spec: ResourceSpec | None = self
        while spec is not None:
            specs.append(spec)
            spec = spec.parent
        return tuple(specs[::-1])

    def parent_uri(self, ids: Mapping[str, str]) -> str:
        """URI of the parent object, ``""`` for root resources. `ids` maps resource name → id."""
        return "".join([f"/{s.plural}/{ids[s.name]}" for s in self._chain[:-1]])

    def object_uri(self, ids: Mapping[str, str], object_id: str) -> str:
        return f"{self.parent_uri(ids)}/{self.plural}/{object_id}"

    def level_uris(self, ids: Mapping[str, str], object_id: str | None) -> dict[str, str]:
        """URI of each level by resource name (the object's own level when `object_id` is given)."""
        uris: dict[str, str] = {}
        uri = ""
        for spec in self._chain:
            oid = object_id if spec is self else ids.get(spec.name)
            if oid is None:
                break
            uri = f"{uri}/{spec.plural}/{oid}"
            uris[spec.name] = uri
        return uris

    def is_valid_id(self, object_id: str) -> bool:
        return object_id.isascii() and self.id_pattern.fullmatch(object_id) is not None


OWNER = ResourceSpec(name="user", plural="users", id_pattern=re.compile(r"^.+$"))
"""The parent of resources whose objects belong to the authenticated user."""
