"""CRUD and sync semantics of any :class:`ResourceSpec`, over the backend protocols.

Each public coroutine handles one kind of request and returns an :class:`Outcome`;
failures are :mod:`nuages.core.errors`. The order of checks reproduces Kinto's
(protocol/03 §11): parent existence for writes → authorization → id/body
validation → existence → 304 → 412 → write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from nuages.cache.protocol import Cache
from nuages.core import pagination, preconditions
from nuages.core.authorization import (
    EVERYONE,
    Caller,
    PermissionTree,
    bound_permissions,
    intersects,
    stored_principal_holders,
    unloaded_caller,
    with_stored_principals,
)
from nuages.core.errors import (
    Forbidden,
    InvalidObjectId,
    ObjectNotFound,
    PreconditionFailed,
    Unauthorized,
    UnicityError,
    ValidationError,
)
from nuages.core.events import Action, Change, Events
from nuages.core.objects import Filter, ListQuery
from nuages.core.patch import json_patch, merge_patch
from nuages.core.preconditions import ETagCondition
from nuages.core.querystring import ListParams, parse_list_params, project
from nuages.core.resource import OWNER, JSONObject, ResourceSpec
from nuages.permission.protocol import BoundPermission, Permission, PermissionTransaction
from nuages.storage.protocol import (
    ObjectKey,
    ObjectRead,
    ObjectReader,
    ObjectView,
    Storage,
    StorageTransaction,
    StoredObjects,
)
from nuages.storage.reads import decode, fragments

RESPONSE_BEHAVIORS = ("full", "light", "diff")
PATCH_TYPES = ("application/json", "application/merge-patch+json", "application/json-patch+json")


@dataclass(slots=True)
class Tx:
    """One request's (or one batch's) transaction on storage and permissions."""

    storage: StorageTransaction
    permission: PermissionTransaction
    write: bool


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    paginate_by: int | None = None
    max_fetch_size: int = 10000
    explicit_permissions: bool = True
    token_validity_seconds: int = 600
    # "<resource>:<read|write|create>" -> principals granted on every object of that type.
    principals: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(slots=True)
class Call:
    """One request, as the service sees it."""

    spec: ResourceSpec
    ids: Mapping[str, str]  # ids of the parents, by resource name
    caller: Caller
    object_id: str | None = None
    body: Any = None  # parsed JSON, None when absent
    params: Sequence[tuple[str, str]] = ()
    if_match: ETagCondition = None
    if_none_match: ETagCondition = None
    content_type: str = "application/json"
    response_behavior: str = "full"
    # The principal given `write` on what this call writes; None means the caller (an
    # account, for one, is always written as its own: "account:<id>").
    creator: str | None = None


@dataclass(slots=True)
class Outcome:
    status: int
    body: Any
    timestamp: int | None = None
    next_token: tuple[str, int] | None = None  # (token, limit) when a next page exists
    total: int | None = None
    alert: bool = False  # the deprecated `_to` was used
    cache_expires: int | None = None  # seconds an anonymous read may be cached


class Service:
    """The protocol for a set of resource specs over one storage + permission + cache."""

    def __init__(
        self,
        *,
        storage: Storage,
        permission: Permission,
        cache: Cache,
        tree: PermissionTree,
        config: ServiceConfig,
        events: Events | None = None,
    ) -> None:
        self.storage = storage
        self.permission = permission
        self.cache = cache
        self.tree = tree
        self.config = config
        self.events = events or Events()
        # _granted_by_settings' answers: the principals that settings grant, by
        # (resource, permission key, setting). The tree and the settings do not change.
        self._settings_grants: dict[tuple[str, str, str], frozenset[str]] = {}
        # One-statement object reads, when the backends keep everything in one database.
        make_reader = getattr(storage, "object_reader", None)
        self.reader: ObjectReader | None = (
            make_reader(permission) if make_reader is not None else None
        )

    @property
    def reads_pages(self) -> bool:
        """Whether :meth:`read_list` may answer: the reader also reads pages
        (:class:`~nuages.storage.protocol.PageReader`)."""
        return getattr(self.reader, "read_object_and_page", None) is not None

    @asynccontextmanager
    async def transaction(self, *, write: bool) -> AsyncIterator[Tx]:
        # Both blocks end together: the permission one needs no savepoint of its own.
        async with (
            self.storage.transaction(write=write) as st,
            self.permission.transaction(write=write, savepoint=False) as pt,
        ):
            yield Tx(st, pt, write)

    # -- authorization --------------------------------------------------------
    async def _allowed(
        self,
        tx: Tx,
        call: Call,
        perm: str,
        uris: Mapping[str, str],
        *,
        setting: str | None = None,
        checked: bool | None = None,
    ) -> bool:
        """Whether the caller holds ``<resource>:<perm>`` on the object whose chain is `uris`.
        `checked`: the permission backend's answer, when it was asked already."""
        decided = self._decided(call, perm, setting=setting)
        if decided is not None:
            return decided
        if checked is not None:
            return checked
        bound = bound_permissions(self.tree, f"{call.spec.name}:{perm}", uris)
        return bool(bound) and await tx.permission.check_permission(call.caller.principals, bound)

    def _decided(self, call: Call, perm: str, *, setting: str | None = None) -> bool | None:
        """What :meth:`_allowed` answers without the permission backend: an owned object's
        owner, or a settings grant; None when the backend must be asked."""
        if call.spec.owned:
            return self._is_owner(call)
        key = f"{call.spec.name}:{perm}"
        return True if self._granted_by_settings(call, key, setting or perm.split(":")[0]) else None

    async def _parent_exists_and_checked(
        self, tx: Tx, call: Call, perm: str, uris: Mapping[str, str]
    ) -> bool | None:
        """:meth:`_parent_exists`, and with it, when the backends can read both in one
        statement, whether the permission backend grants ``<resource>:<perm>`` on `uris`
        (else None: :meth:`_allowed` asks it)."""
        spec = call.spec
        read_object = self._read_in_transaction(tx, spec)
        if read_object is None or spec.parent is None:
            await self._parent_exists(tx, call)
            return None
        parent_key = self._parent_object_key(call)
        bound = bound_permissions(self.tree, f"{spec.name}:{perm}", uris)
        view = await read_object(
            ObjectRead(
                user_ids=(),
                principals=call.caller.principals,
                bound=tuple(bound),
                object=parent_key,
            )
        )
        if view.object is None:
            raise ObjectNotFound(parent_key[0], parent_key[2], parent=True)
        return view.granted

    def _read_in_transaction(
        self, tx: Tx, spec: ResourceSpec
    ) -> Callable[[ObjectRead], Awaitable[ObjectView]] | None:
        """The storage transaction's one-statement read of objects with their permissions
        (``read_object``), when it has one and the permission tables are in the same
        database, and `spec`'s objects have ACLs (not owned); else None."""
        read_object = getattr(tx.storage, "read_object", None)
        if read_object is None or self.reader is None or spec.parent is OWNER or spec.owned:
            return None
        return read_object  # type: ignore[no-any-return]

    @staticmethod
    def _parent_object_key(call: Call) -> ObjectKey:
        """The key of the call's parent object; 404 (errno 111) for an id it cannot have."""
        parent = call.spec.parent
        assert parent is not None and parent is not OWNER
        pid = call.ids[parent.name]
        if not parent.is_valid_id(pid):
            raise ObjectNotFound(parent.name, pid, parent=True)
        return (parent.name, parent.parent_uri(call.ids), pid)

    def _granted_by_settings(self, call: Call, key: str, perm: str) -> bool:
        """Settings grants, as Kinto's ``RouteFactory.check_permission`` (protocol/06 §3).

        Every permission that grants `key` in the tree is looked up as a setting keyed by the
        resource type *of the request*: reading a record consults ``record:read`` and
        ``record:write``, creating one ``record:create`` and ``record:write``.
        """
        memo = (call.spec.name, key, perm)
        granted = self._settings_grants.get(memo)
        if granted is None:
            resource = call.spec.name
            names = {f"{resource}:{perm}"}
            for perms in self.tree.get(key, {}).values():
                for granting in perms:
                    if ":" not in granting:
                        names.add(f"{resource}:{granting}")
                    elif granting.startswith(f"{resource}:"):
                        names.add(granting)
            principals = self.config.principals
            granted = frozenset(p for name in names for p in principals.get(name, ()))
            self._settings_grants[memo] = granted
        return not granted.isdisjoint(call.caller.principals)

    @staticmethod
    def _is_owner(call: Call) -> bool:
        """Objects of an :data:`OWNER` scope are all their user's, and nobody else's."""
        user_id = call.caller.user_id
        return user_id is not None and call.ids.get(OWNER.name) == user_id

    def _deny(self, call: Call) -> Exception:
        return Forbidden() if call.caller.authenticated else Unauthorized()

    async def _require(
        self,
        tx: Tx,
        call: Call,
        perm: str,
        uris: Mapping[str, str],
        *,
        checked: bool | None = None,
    ) -> None:
        """401/403 unless :meth:`_allowed` (`checked`: as there)."""
        if not await self._allowed(tx, call, perm, uris, checked=checked):
            raise self._deny(call)

    def _read_key(self, spec: ResourceSpec) -> str:
        """Reading one object: the extended ``read:attributes`` where the tree defines it."""
        return "read:attributes" if f"{spec.name}:read:attributes" in self.tree else "read"

    def _parent_key(self, spec: ResourceSpec, perm: str) -> str:
        assert spec.parent is not None
        return f"{spec.parent.name}:{perm}"

    async def _allowed_on_parent(self, tx: Tx, call: Call, perm: str) -> bool:
        """``read`` / ``write`` of the parent (list access); settings keyed by the request type."""
        spec = call.spec
        if spec.owned:
            return self._is_owner(call)
        if spec.parent is None:
            return intersects(
                call.caller.principals, self.config.principals.get(f"{spec.name}:{perm}", ())
            )
        if self._granted_by_settings(call, self._parent_key(spec, perm), perm):
            return True
        uris = spec.parent.level_uris(call.ids, call.ids[spec.parent.name])
        bound = bound_permissions(self.tree, self._parent_key(spec, perm), uris)
        return bool(bound) and await tx.permission.check_permission(call.caller.principals, bound)

    # -- helpers ---------------------------------------------------------------
    def _check_id(self, call: Call) -> str:
        assert call.object_id is not None
        if not call.spec.is_valid_id(call.object_id):
            raise InvalidObjectId()
        return call.object_id

    async def _parent_exists(self, tx: Tx, call: Call) -> JSONObject | None:
        """The direct parent object; 404 (errno 111) when it does not exist."""
        parent = call.spec.parent
        if parent is None or parent is OWNER:
            return None  # the root, or the caller itself: always there
        pid = call.ids[parent.name]
        found = None
        if parent.is_valid_id(pid):
            found = await tx.storage.get(parent.name, parent.parent_uri(call.ids), pid)
        if found is None:
            raise ObjectNotFound(parent.name, pid, parent=True)
        return found

    @staticmethod
    def _cache_expires(call: Call, parent: JSONObject | None) -> int | None:
        """Anonymous reads may be cached for the parent's ``cache_expires`` seconds (08 §3)."""
        value = (parent or {}).get("cache_expires")
        if call.caller.authenticated or not isinstance(value, int) or isinstance(value, bool):
            return None
        return value

    def _annotate(self, call: Call, obj: JSONObject, perms: dict[str, set[str]]) -> JSONObject:
        """Object envelope; ACLs shown only to principals in the object's own ``write``."""
        shown = perms if intersects(call.caller.principals, perms.get("write", ())) else {}
        return {"data": obj, "permissions": {k: sorted(v) for k, v in shown.items() if v}}

    def _parse_body(self, call: Call, *, required: bool = False) -> tuple[JSONObject | None, Any]:
        body = call.body
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ValidationError("Should be a JSON object", location="body", name=None)
        unknown = sorted(set(body) - {"data", "permissions"})
        if unknown:
            raise ValidationError(f"{unknown[0]} is not allowed", location="body", name=unknown[0])
        data = body.get("data")
        if "data" in body and not isinstance(data, dict):
            raise ValidationError(f"{data!r} is not a mapping type", location="body", name="data")
        perms = body.get("permissions")
        if required and data is None and perms is None:
            raise ValidationError(
                "Provide at least one of data or permissions", location="body", name="data"
            )
        return data, perms

    def _check_permissions(self, spec: ResourceSpec, perms: Any, *, nulls: bool = False) -> None:
        if perms is None:
            return
        if not isinstance(perms, dict):
            raise ValidationError(
                f"{perms!r} is not a mapping type", location="body", name="permissions"
            )
        for key, principals in perms.items():
            if key not in spec.permissions:
                allowed = ", ".join(f"'{p}'" for p in spec.permissions)
                raise ValidationError(
                    f'"{key}" is not one of {allowed}', location="body", name="permissions"
                )
            if principals is None and nulls:
                continue
            if not isinstance(principals, list) or not all(isinstance(p, str) for p in principals):
                raise ValidationError(
                    f"{principals!r} is not iterable", location="body", name=f"permissions.{key}"
                )

    def _clean_data(self, call: Call, data: JSONObject, object_id: str) -> JSONObject:
        data = dict(data)
        if "id" in data and data["id"] != object_id:
            raise ValidationError(
                "Object id does not match existing object", location="body", name="id"
            )
        data["id"] = object_id
        lm = data.get("last_modified")
        if not (isinstance(lm, int) and not isinstance(lm, bool)):
            data.pop("last_modified", None)
        data.pop("deleted", None)  # reserved for tombstones
        return data

    async def _write_permissions(
        self,
        tx: Tx,
        call: Call,
        uri: str,
        replace: Mapping[str, Any] | None,
        known: dict[str, set[str]] | None = None,
    ) -> dict[str, set[str]]:
        """Replace the object's ACL (`replace`), add its writer to ``write`` (setting
        ``explicit_permissions``), and answer the ACL. `known`: the ACL as this transaction
        read it with the object, when it did: if that changes nothing, nothing is written."""
        if call.spec.owned:
            return {}  # owned objects have no ACL: their owner may do anything
        replacing, added = self._acl_change(call, replace)
        if (
            replacing is None
            and known is not None
            and all(principal in known.get(perm, ()) for perm, principal in added)
        ):
            return known  # a writer already in `write` (the common update by its author)
        # Optional in a backend (ACLWriter): all of the below at once (one statement on
        # PostgreSQL, one job on SQLite).
        write_all = getattr(tx.permission, "write_object_permissions", None)
        if write_all is not None:
            acl: dict[str, set[str]] = await write_all(uri, replacing, added)
            return acl
        if replacing is not None:
            await tx.permission.replace_object_permissions(uri, replacing)
        for permission, principal in added:
            await tx.permission.add_principal_to_ace(uri, permission, principal)
        return await tx.permission.get_object_permissions(uri)

    def _acl_change(
        self, call: Call, replace: Mapping[str, Any] | None
    ) -> tuple[dict[str, list[str]] | None, list[tuple[str, str]]]:
        """What :meth:`_write_permissions` writes: the permissions replaced (None: none),
        and the entries added (the writer in ``write``, with ``explicit_permissions``)."""
        replacing = None if replace is None else {k: list(v or ()) for k, v in replace.items()}
        added = []
        if self.config.explicit_permissions:
            added.append(("write", call.creator or call.caller.creator))
        return replacing, added

    async def _create(
        self, tx: Tx, call: Call, parent_uri: str, new: JSONObject, uri: str, replace: Any
    ) -> tuple[JSONObject, dict[str, set[str]]]:
        """Store the new object `new` and write its ACL (:meth:`_write_permissions`); in one
        statement when the storage can (``CreatorWithACL``)."""
        spec = call.spec
        create_with_acl = getattr(tx.storage, "create_with_acl", None)
        if create_with_acl is not None and not spec.owned:
            done: tuple[JSONObject, dict[str, set[str]]] | None = await create_with_acl(
                spec.name, parent_uri, new, tx.permission, uri, *self._acl_change(call, replace)
            )
            if done is not None:
                return done
        stored = await tx.storage.create(spec.name, parent_uri, new)
        return stored, await self._write_permissions(tx, call, uri, replace)

    def _change(
        self,
        call: Call,
        action: Action,
        uri: str,
        old: JSONObject | None,
        new: JSONObject | None,
        timestamp: int | None = None,
    ) -> Change:
        object_id = (new or old or {})["id"]
        return Change(
            action=action,
            resource_name=call.spec.name,
            uri=uri,
            ids={**call.ids, call.spec.name: object_id},
            old=old,
            new=new,
            user_id=call.caller.user_id,
            timestamp=timestamp,
            principals=tuple(call.caller.principals),
        )

    async def _emit(
        self, tx: Tx, call: Call, uri: str, old: JSONObject | None, new: JSONObject
    ) -> None:
        """Tell the change listeners (protocol/10 plugins) about a write, in its transaction.

        Deletions are emitted before their cascade, so listeners still see the children.
        """
        if not self.events.active:
            return
        action: Action = "delete" if new.get("deleted") is True else "create"
        if action == "create" and old is not None:
            action = "update"
        change = self._change(call, action, uri, old, new, new["last_modified"])
        await self.events.changed(tx, change)

    async def _delete(
        self,
        tx: Tx,
        call: Call,
        parent_uri: str,
        object_id: str,
        uri: str,
        *,
        last_modified: int | None = None,
    ) -> JSONObject:
        """Store the object's tombstone and delete its ACL (its children go after the
        change listeners, :meth:`_cascade_delete`); in one statement when the storage can
        (``DeleterWithACL``)."""
        name = call.spec.name
        delete_with_acl = getattr(tx.storage, "delete_with_acl", None)
        if delete_with_acl is not None:
            done: JSONObject | None = await delete_with_acl(
                name, parent_uri, object_id, tx.permission, uri, last_modified=last_modified
            )
            if done is not None:
                return done
        tombstone = await tx.storage.delete(
            name, parent_uri, object_id, last_modified=last_modified
        )
        await tx.permission.delete_object_permissions(uri)
        return tombstone

    async def _cascade_delete(self, tx: Tx, call: Call, uri: str, obj: JSONObject) -> None:
        """What goes with a deleted object (:meth:`_delete`), after its change listeners:
        the spec's hook, then its children and their ACLs."""
        await call.spec.before_delete(tx, uri, obj, None)
        if call.spec.children:
            await tx.storage.purge(uri)
            await tx.permission.delete_object_permissions(uri + "/*")

    # -- single objects ---------------------------------------------------------
    async def get_object(
        self, tx: Tx, call: Call, *, fields: Sequence[str] | None = None
    ) -> Outcome:
        spec = call.spec
        object_id = self._check_id(call)
        uris = spec.level_uris(call.ids, object_id)
        await self._require(tx, call, self._read_key(spec), uris)
        parent = await self._parent_exists(tx, call) if spec.parent_must_exist else None
        obj = await tx.storage.get(spec.name, spec.parent_uri(call.ids), object_id)
        obj = self._readable(call, object_id, obj)
        perms = None if fields else await tx.permission.get_object_permissions(uris[spec.name])
        return self._read_outcome(call, obj, parent, perms, fields)

    async def load_caller(self, user_id: str | None) -> Caller:
        """The caller and its stored principals, read outside any transaction by the
        backends' :class:`ObjectReader` (``self.reader`` must be set)."""
        assert self.reader is not None
        caller = unloaded_caller(user_id)
        holders = stored_principal_holders(user_id)
        if not holders:
            return caller
        return with_stored_principals(caller, await self.reader.stored_principals(holders))

    async def read_object(self, call: Call, *, fields: Sequence[str] | None = None) -> Outcome:
        """:meth:`get_object` in one statement of the backends' :class:`ObjectReader`,
        outside any transaction (``self.reader`` must be set). `call.caller` holds no
        stored principals yet: they come with the read, and replace it."""
        assert self.reader is not None
        spec = call.spec
        object_id = self._check_id(call)
        uris = spec.level_uris(call.ids, object_id)
        perm = self._read_key(spec)
        parent = spec.parent
        # The URIs of the chain are those of `uris`: no need to build them again.
        parent_uri = "" if parent is None else uris[parent.name]
        parent_key = None
        checks_parent = spec.parent_must_exist and parent is not None and parent is not OWNER
        if checks_parent:
            assert parent is not None
            pid = call.ids[parent.name]
            if parent.is_valid_id(pid):
                grandparent = parent.parent
                parent_key = (
                    parent.name,
                    "" if grandparent is None else uris[grandparent.name],
                    pid,
                )
        view = await self.reader.read_object(
            ObjectRead(
                stored_principal_holders(call.caller.user_id),
                call.caller.principals,
                ()
                if spec.owned
                else tuple(bound_permissions(self.tree, f"{spec.name}:{perm}", uris)),
                (spec.name, parent_uri, object_id),
                parent_key,
                None if fields else uris[spec.name],
            )
        )
        call.caller = with_stored_principals(call.caller, view.principals)
        # The checks of get_object, in its order: authorization, parent, object.
        allowed = self._decided(call, perm)
        if not (view.granted if allowed is None else allowed):
            raise self._deny(call)
        if checks_parent and view.parent is None:
            assert parent is not None
            raise ObjectNotFound(parent.name, call.ids[parent.name], parent=True)
        obj = self._readable(call, object_id, view.object)
        perms = None if fields else view.permissions
        return self._read_outcome(call, obj, view.parent, perms, fields)

    @staticmethod
    def _readable(call: Call, object_id: str, obj: JSONObject | None) -> JSONObject:
        """The object read, after 404, 304 and 412."""
        if obj is None:
            raise ObjectNotFound(call.spec.name, object_id)
        preconditions.check(
            current=obj["last_modified"],
            if_match=call.if_match,
            if_none_match=call.if_none_match,
            read=True,
            existing=obj,
        )
        return obj

    def _read_outcome(
        self,
        call: Call,
        obj: JSONObject,
        parent: JSONObject | None,
        perms: dict[str, set[str]] | None,
        fields: Sequence[str] | None,
    ) -> Outcome:
        expires = self._cache_expires(call, parent)
        body = {"data": project(obj, fields)} if fields else self._annotate(call, obj, perms or {})
        return Outcome(200, body, obj["last_modified"], cache_expires=expires)

    async def put_object(self, tx: Tx, call: Call) -> Outcome:
        spec = call.spec
        object_id = self._check_id(call)
        parent_uri = spec.parent_uri(call.ids)
        uris = spec.level_uris(call.ids, object_id)
        # The parent (404), the object and the caller's write grant on it: one statement
        # when the backends can (as PATCH), else three. Unless If-Match says the object
        # exists, the create grant too (what a missing object needs).
        view = await self._read_for_write(
            tx, call, object_id, uris, acl=True, create=call.if_match is None
        )
        checked = create_checked = None
        if view is None:
            if spec.parent_must_exist:
                await self._parent_exists(tx, call)
            existing = await tx.storage.get(spec.name, parent_uri, object_id)
        else:
            existing, checked, create_checked = view.object, view.granted, view.create_granted
        if existing is None or call.if_none_match == preconditions.ANY:
            await self._require(tx, call, "create", uris, checked=create_checked)
        elif not await self._allowed(tx, call, "write", uris, checked=checked):
            raise self._deny(call)
        data, perms = self._parse_body(call)
        # A null principal list counts as absent (Kinto drops it), here as in PATCH.
        self._check_permissions(spec, perms, nulls=True)
        await self._check_preconditions(tx, call, existing, uris)
        if existing is None and not spec.parent_must_exist:
            await self._parent_exists(tx, call)
        if data is None:
            data = {k: v for k, v in (existing or {}).items() if k != "last_modified"}
        new = self._clean_data(call, data, object_id)
        given = call.body is not None and "data" in call.body
        new = await self._prepare(tx, call, new, existing, sent=data, given=given)
        replace = None
        if perms:  # Kinto treats `"permissions": {}` as absent: the ACL is kept
            replace = {p: perms.get(p) for p in spec.permissions}
        if existing is None:
            stored, acl = await self._create(tx, call, parent_uri, new, uris[spec.name], replace)
        else:
            stored = await tx.storage.update(spec.name, parent_uri, object_id, new)
            known = None if view is None else view.permissions
            acl = await self._write_permissions(tx, call, uris[spec.name], replace, known)
        await spec.after_write(tx, uris[spec.name], existing, stored)
        await self._emit(tx, call, uris[spec.name], existing, stored)
        status = 201 if existing is None else 200
        return Outcome(status, self._annotate(call, stored, acl), stored["last_modified"])

    async def _prepare(
        self,
        tx: Tx,
        call: Call,
        new: JSONObject,
        old: JSONObject | None,
        *,
        sent: Mapping[str, Any],
        given: bool,
    ) -> JSONObject:
        """The spec's write pipeline, then its unique fields (409 on a conflict)."""
        spec = call.spec
        new = spec.prepare(new, old, sent=sent, given=given)
        if self.events.active:
            uri = spec.object_uri(call.ids, new["id"])
            change = self._change(call, "create" if old is None else "update", uri, old, new)
            new = await self.events.prepare(tx, change) or new
        parent_uri = spec.parent_uri(call.ids)
        for name in spec.unique_fields:
            value = new.get(name)
            if value is None:
                continue
            query = ListQuery(filters=(Filter(name, value),), limit=2)
            for other in await tx.storage.list(spec.name, parent_uri, query):
                if other["id"] != new["id"]:
                    # Show the other object only to a caller who may read it.
                    uris = spec.level_uris(call.ids, other["id"])
                    readable = await self._allowed(tx, call, self._read_key(spec), uris)
                    shown = other if readable else None
                    raise UnicityError(spec.name, other["id"], field=name, existing=shown)
        return new

    async def _check_preconditions(
        self, tx: Tx, call: Call, existing: JSONObject | None, uris: Mapping[str, str]
    ) -> None:
        try:
            preconditions.check(
                current=None if existing is None else existing["last_modified"],
                if_match=call.if_match,
                if_none_match=call.if_none_match,
                read=False,
                existing=existing,
            )
        except PreconditionFailed as exc:
            if existing is None:
                # Missing target: the 412 carries the list's timestamp, as Kinto's does.
                exc.timestamp = await tx.storage.resource_timestamp(
                    call.spec.name, call.spec.parent_uri(call.ids)
                )
            # Never disclose an object the caller may not read (protocol/12 §C).
            if exc.existing is not None and not await self._allowed(
                tx, call, self._read_key(call.spec), uris
            ):
                exc.existing = None
            raise

    async def _existing_or_404(
        self, tx: Tx, call: Call, object_id: str, uris: Mapping[str, str], *, acl: bool = False
    ) -> tuple[JSONObject, dict[str, set[str]] | None]:
        """The object to change, after the parent's 404, then 401/403 and the object's 404;
        with its ACL when `acl`. When the backends can, in one statement
        (:meth:`_read_for_write`)."""
        spec = call.spec
        view = await self._read_for_write(tx, call, object_id, uris, acl=acl)
        if view is None:
            if spec.parent_must_exist:
                await self._parent_exists(tx, call)
            existing = await tx.storage.get(spec.name, spec.parent_uri(call.ids), object_id)
            checked = None
        else:
            existing, checked = view.object, view.granted
        if existing is None:
            # Missing: allowed to learn it (404) only with read on the parent.
            await self._require(tx, call, "read", uris)
            raise ObjectNotFound(spec.name, object_id)
        if not await self._allowed(tx, call, "write", uris, checked=checked):
            raise self._deny(call)
        if not acl:
            return existing, None
        if view is None:
            return existing, await tx.permission.get_object_permissions(uris[spec.name])
        return existing, view.permissions

    async def _read_for_write(
        self,
        tx: Tx,
        call: Call,
        object_id: str,
        uris: Mapping[str, str],
        *,
        acl: bool,
        create: bool = False,
    ) -> ObjectView | None:
        """The parent (404 when missing), the object, the caller's ``write`` grant on it and
        its ACL in one statement of the transaction, when the storage can read objects with
        their permissions (``read_object``, the permission tables in the same database);
        else None. With `create`, the caller's ``create`` grant too, if the settings do not
        decide it and the storage answers it (``create_granted``)."""
        spec = call.spec
        read_object = self._read_in_transaction(tx, spec)
        if read_object is None:
            return None
        parent_key = None
        if spec.parent is not None and spec.parent_must_exist:
            parent_key = self._parent_object_key(call)
        create_bound: tuple[BoundPermission, ...] = ()
        if create and self._decided(call, "create") is None:
            create_bound = tuple(bound_permissions(self.tree, f"{spec.name}:create", uris))
        view = await read_object(
            ObjectRead(
                user_ids=(),
                principals=call.caller.principals,
                bound=tuple(bound_permissions(self.tree, f"{spec.name}:write", uris)),
                object=(spec.name, spec.parent_uri(call.ids), object_id),
                parent=parent_key,
                acl_uri=uris[spec.name] if acl else None,
                create_bound=create_bound,
            )
        )
        if parent_key is not None and view.parent is None:
            raise ObjectNotFound(parent_key[0], parent_key[2], parent=True)
        return view

    async def patch_object(self, tx: Tx, call: Call) -> Outcome:
        spec = call.spec
        object_id = self._check_id(call)
        uris = spec.level_uris(call.ids, object_id)
        existing, acl = await self._existing_or_404(tx, call, object_id, uris, acl=True)
        assert acl is not None  # asked for
        if call.response_behavior not in RESPONSE_BEHAVIORS:
            raise ValidationError(
                f'"{call.response_behavior}" is not one of full, light, diff',
                location="header",
                name="Response-Behavior",
            )
        uri = uris[spec.name]
        old_data = {k: v for k, v in existing.items() if k != "last_modified"}
        sent: JSONObject = {}
        if call.content_type == "application/json-patch+json":
            new_data, replace = self._apply_json_patch(spec, old_data, acl, call.body)
        else:
            data, perms = self._parse_body(call, required=True)
            self._check_permissions(spec, perms, nulls=True)
            sent = dict(data or {})
            if call.content_type == "application/merge-patch+json":
                new_data = merge_patch(old_data, data or {})
                replace = None
                if perms is not None:
                    merged = merge_patch({k: sorted(v) for k, v in acl.items()}, perms)
                    replace = {p: merged.get(p) for p in spec.permissions}
            else:
                new_data = {**old_data, **(data or {})}
                replace = {k: v for k, v in (perms or {}).items() if v is not None} or None
        await self._check_preconditions(tx, call, existing, uris)
        new = self._clean_data(call, new_data, object_id)
        if "last_modified" in new and new["last_modified"] <= existing["last_modified"]:
            del new["last_modified"]
        if call.content_type == "application/json-patch+json":
            sent = {k: v for k, v in new_data.items() if old_data.get(k, _ABSENT) != v}
        new = await self._prepare(tx, call, new, existing, sent=sent, given=True)
        stored = await tx.storage.update(spec.name, spec.parent_uri(call.ids), object_id, new)
        acl = await self._write_permissions(tx, call, uri, replace, known=acl)
        await spec.after_write(tx, uri, existing, stored)
        await self._emit(tx, call, uri, existing, stored)
        if call.response_behavior == "full":
            return Outcome(200, self._annotate(call, stored, acl), stored["last_modified"])
        if call.response_behavior == "light":
            keys = [k for k in sent if stored.get(k, _ABSENT) != existing.get(k, _ABSENT)]
        else:
            keys = [k for k in sent if stored.get(k, _ABSENT) != sent[k]]
        changed = {k: stored[k] for k in keys if k in stored}
        return Outcome(200, {"data": changed}, stored["last_modified"])

    def _apply_json_patch(
        self, spec: ResourceSpec, data: JSONObject, acl: dict[str, set[str]], ops: Any
    ) -> tuple[JSONObject, dict[str, Any]]:
        if not isinstance(ops, list):
            raise ValidationError("JSON Patch operations must be an array", location="body")
        filled = []
        for op in ops:
            if isinstance(op, dict) and "value" not in op and isinstance(op.get("path"), str):
                parts = op["path"].split("/")
                if len(parts) == 4 and parts[1] == "permissions" and parts[2] in ("read", "write"):
                    op = {**op, "value": parts[3]}
            filled.append(op)
        doc = {
            "data": data,
            "permissions": {k: {p: p for p in v} for k, v in acl.items()},
        }
        for key in ("read", "write"):
            doc["permissions"].setdefault(key, {})
        result = json_patch(doc, filled)
        if not isinstance(result, dict) or set(result) != {"data", "permissions"}:
            raise ValidationError("JSON Patch operation failed: invalid document", location="body")
        new_data, perms = result["data"], result["permissions"]
        if not isinstance(new_data, dict) or not isinstance(perms, dict):
            raise ValidationError(
                "JSON Patch operation failed: data and permissions must be objects",
                location="body",
            )
        replace: dict[str, Any] = {}
        for key in spec.permissions:
            value = perms.get(key, {})
            principals = list(value) if isinstance(value, dict | list) else None
            if principals is None or not all(isinstance(p, str) for p in principals):
                raise ValidationError(
                    f"{value!r} is not iterable", location="body", name=f"permissions.{key}"
                )
            replace[key] = principals
        unknown = set(perms) - set(spec.permissions)
        if unknown:
            raise ValidationError(
                f'"{sorted(unknown)[0]}" is not a permission', location="body", name="permissions"
            )
        return new_data, replace

    async def delete_object(
        self, tx: Tx, call: Call, *, last_modified: int | None = None
    ) -> Outcome:
        spec = call.spec
        object_id = self._check_id(call)
        uris = spec.level_uris(call.ids, object_id)
        existing, _ = await self._existing_or_404(tx, call, object_id, uris)
        await self._check_preconditions(tx, call, existing, uris)
        parent_uri = spec.parent_uri(call.ids)
        tombstone = await self._delete(
            tx, call, parent_uri, object_id, uris[spec.name], last_modified=last_modified
        )
        await self._emit(tx, call, uris[spec.name], existing, tombstone)
        await self._cascade_delete(tx, call, uris[spec.name], existing)
        return Outcome(200, {"data": tombstone}, tombstone["last_modified"])

    # -- lists ------------------------------------------------------------------
    async def _list_visibility(self, tx: Tx, call: Call, perm: str) -> frozenset[str] | None:
        """None: every object. Otherwise the ids the caller may see (possibly none)."""
        if await self._allowed_on_parent(tx, call, perm):
            return None
        spec = call.spec
        own_key = f"{spec.name}:{self._read_key(spec) if perm == 'read' else 'write'}"
        own = self.tree.get(own_key, {}).get(spec.name, ())
        prefix = f"{spec.parent_uri(call.ids)}/{spec.plural}/"
        shared = await tx.permission.get_accessible_objects(
            call.caller.principals, [(prefix + "*", p) for p in own]
        )
        ids = frozenset(u[len(prefix) :] for u in shared if "/" not in u[len(prefix) :])
        if ids:
            return ids
        uris = spec.level_uris(call.ids, None) if spec.parent is not None else {}
        if await self._allowed(tx, call, "create", uris):
            return frozenset()
        raise self._deny(call)

    async def read_list(self, call: Call) -> Outcome | None:
        """:meth:`get_list` (not HEAD) outside any transaction, in one statement of the
        backends' reader: the parent with its ``read`` grant, and the page with the scope
        timestamp (:class:`~nuages.storage.protocol.PageReader`). `call.caller` holds no
        stored principals yet: they come with the parent's read, and replace it. None when
        the reader cannot answer alone (no ``read_object_and_page``, a parent without a
        ``read`` grant, an id that is not valid, an empty page...): then :meth:`get_list`
        in a transaction answers, from the start."""
        read_object_and_page = getattr(self.reader, "read_object_and_page", None)
        spec = call.spec
        parent = spec.parent
        if read_object_and_page is None or parent is None or parent is OWNER or spec.owned:
            return None
        pid = call.ids[parent.name]
        if not parent.is_valid_id(pid):
            return None
        # The page's query is needed first (the parent and the page are read in one
        # statement), but get_list checks visibility before parameters: parameters it
        # refuses send the request to get_list, which answers in its order.
        try:
            params = self._list_params(call)
            query, limit, offset = self._page_query(params, None)
        except ValidationError:
            return None
        key = self._parent_key(spec, "read")
        both = await read_object_and_page(
            ObjectRead(
                user_ids=stored_principal_holders(call.caller.user_id),
                principals=call.caller.principals,
                bound=tuple(bound_permissions(self.tree, key, parent.level_uris(call.ids, pid))),
                object=(parent.name, parent.parent_uri(call.ids), pid),
            ),
            spec.name,
            spec.parent_uri(call.ids),
            query,
        )
        if both is None:
            return None  # an automatic index to count: get_list does
        view, page = both
        # The checks of get_list, in its order: visibility, parameters, parent.
        call.caller = with_stored_principals(call.caller, view.principals)
        if not (self._granted_by_settings(call, key, "read") or view.granted):
            return None  # maybe some objects shared one by one, or 401/403
        checked_parent = view.object if spec.parent_must_exist else None
        if spec.parent_must_exist and checked_parent is None:
            raise ObjectNotFound(parent.name, pid, parent=True)
        if page is None:
            return None
        timestamp, rows = page
        preconditions.check(
            current=timestamp, if_match=call.if_match, if_none_match=call.if_none_match, read=True
        )
        found, next_token = self._page_of_rows(rows, params, limit, offset)
        return Outcome(
            200,
            {"data": found},
            timestamp,
            next_token,
            alert=params.deprecated_to,
            cache_expires=self._cache_expires(call, checked_parent),
        )

    def _list_params(self, call: Call) -> ListParams:
        return parse_list_params(call.params, known_fields=call.spec.known_fields)

    async def _page(
        self,
        tx: Tx,
        call: Call,
        params: ListParams,
        visible: frozenset[str] | None,
        *,
        for_response: bool = False,
    ) -> tuple[list[Any], tuple[str, int] | None]:
        """A page of objects and the next page's (token, limit). `for_response`: the objects
        as the response shows them, ``_fields`` projected, and as JSON fragments of their
        stored text when the storage offers it
        (:class:`~nuages.storage.protocol.StoredLister`); else dicts, whole."""
        spec = call.spec
        query, limit, offset = self._page_query(params, visible)
        list_stored = getattr(tx.storage, "list_stored", None) if for_response else None
        if list_stored is not None:
            rows = await list_stored(spec.name, spec.parent_uri(call.ids), query)
            return self._page_of_rows(rows, params, limit, offset)
        found = await tx.storage.list(spec.name, spec.parent_uri(call.ids), query)
        next_token = None
        if len(found) > limit:
            found = found[:limit]
            token = pagination.encode_token(found[-1], params.sorting, offset + limit)
            next_token = (token, limit)
        if for_response and params.fields:
            found = [project(o, params.fields) for o in found]
        return found, next_token

    def _page_query(
        self, params: ListParams, visible: frozenset[str] | None
    ) -> tuple[ListQuery, int, int]:
        """The storage query of a page (one object more than the page, to know whether a
        next page exists), the page's size and its offset in the listing."""
        limit = pagination.effective_limit(
            params.limit, self.config.paginate_by, self.config.max_fetch_size
        )
        keyset, offset = None, 0
        if params.token is not None:
            keyset, _, offset = pagination.decode_token(params.token, params.sorting)
        query = ListQuery(
            filters=params.filters,
            sorting=params.sorting,
            keyset=keyset,
            limit=limit + 1,
            include_deleted=params.include_deleted,
            ids=visible,
        )
        return query, limit, offset

    @staticmethod
    def _page_of_rows(
        rows: StoredObjects, params: ListParams, limit: int, offset: int
    ) -> tuple[list[Any], tuple[str, int] | None]:
        """A page from stored rows: JSON fragments of the stored text, or with ``_fields``
        the projected objects; only the last row is decoded, for the next page's token."""
        next_token = None
        if len(rows) > limit:
            rows = rows[:limit]
            token = pagination.encode_token(decode(*rows[-1]), params.sorting, offset + limit)
            next_token = (token, limit)
        if params.fields:
            return [project(decode(*row), params.fields) for row in rows], next_token
        return fragments(rows), next_token

    async def get_list(self, tx: Tx, call: Call, *, head: bool = False) -> Outcome:
        spec = call.spec
        visible = await self._list_visibility(tx, call, "read")
        params = self._list_params(call)
        parent = await self._parent_exists(tx, call) if spec.parent_must_exist else None
        expires = self._cache_expires(call, parent)
        timestamp = await tx.storage.resource_timestamp(spec.name, spec.parent_uri(call.ids))
        preconditions.check(
            current=timestamp,
            if_match=call.if_match,
            if_none_match=call.if_none_match,
            read=True,
        )
        if head:
            query = ListQuery(filters=params.filters, ids=visible)
            total = await tx.storage.count(spec.name, spec.parent_uri(call.ids), query)
            return Outcome(
                200, None, timestamp, total=total, alert=params.deprecated_to, cache_expires=expires
            )
        found, next_token = await self._page(tx, call, params, visible, for_response=True)
        return Outcome(
            200,
            {"data": found},
            timestamp,
            next_token,
            alert=params.deprecated_to,
            cache_expires=expires,
        )

    async def post_list(self, tx: Tx, call: Call) -> Outcome:
        spec = call.spec
        create_uris = spec.level_uris(call.ids, None)
        checked = None  # the create permission, when read with the parent
        if spec.parent_must_exist:
            checked = await self._parent_exists_and_checked(tx, call, "create", create_uris)
        parent_uri = spec.parent_uri(call.ids)
        body = call.body if isinstance(call.body, dict) else {}
        data_given = body.get("data")
        given: JSONObject = data_given if isinstance(data_given, dict) else {}
        object_id = given.get("id")
        existing = None
        if "id" in given:  # even `"id": null` is an invalid id (protocol/02 §3)
            if not isinstance(object_id, str) or not spec.is_valid_id(object_id):
                raise InvalidObjectId()
            existing = await tx.storage.get(spec.name, parent_uri, object_id)
        if existing is not None:
            uris = spec.level_uris(call.ids, object_id)
            await self._require(tx, call, self._read_key(spec), uris)
            # The body shape is validated even though nothing is written (protocol/03 §11).
            self._check_permissions(spec, self._parse_body(call)[1], nulls=True)
            await self._check_preconditions(tx, call, existing, uris)
            acl = await tx.permission.get_object_permissions(uris[spec.name])
            return Outcome(200, self._annotate(call, existing, acl), existing["last_modified"])
        if not await self._allowed(tx, call, "create", create_uris, checked=checked):
            raise self._deny(call)
        data, perms = self._parse_body(call)
        self._check_permissions(spec, perms, nulls=True)
        await self._check_preconditions(tx, call, None, {})
        if not spec.parent_must_exist:
            await self._parent_exists(tx, call)
        object_id = object_id or spec.generate_id()
        new = self._clean_data(call, data or {}, object_id)
        try:
            new = await self._prepare(tx, call, new, None, sent=data or {}, given=data is not None)
        except UnicityError as exc:
            if spec.on_unique_conflict != "existing" or exc.existing is None:
                raise
            # Posting a known unique value returns the existing object (e.g. a known URL).
            uri = spec.object_uri(call.ids, exc.object_id)
            acl = await tx.permission.get_object_permissions(uri)
            found = exc.existing
            return Outcome(200, self._annotate(call, found, acl), found["last_modified"])
        uri = spec.object_uri(call.ids, object_id)
        replace = {p: perms.get(p) for p in spec.permissions} if perms is not None else None
        stored, acl = await self._create(tx, call, parent_uri, new, uri, replace)
        await spec.after_write(tx, uri, None, stored)
        await self._emit(tx, call, uri, None, stored)
        return Outcome(201, self._annotate(call, stored, acl), stored["last_modified"])

    async def delete_list(self, tx: Tx, call: Call) -> Outcome:
        spec = call.spec
        if spec.parent_must_exist:
            await self._parent_exists(tx, call)
        visible = await self._list_visibility(tx, call, "write")
        params = self._list_params(call)
        parent_uri = spec.parent_uri(call.ids)
        timestamp = await tx.storage.resource_timestamp(spec.name, parent_uri)
        preconditions.check(
            current=timestamp, if_match=call.if_match, if_none_match=call.if_none_match, read=False
        )
        if params.token is not None:
            _, nonce, _ = pagination.decode_token(params.token, params.sorting)
            if await self.cache.pop(f"pagination-token:{nonce}") is None:
                raise ValidationError(
                    "_token was already used or has expired.", location="querystring", name="_token"
                )
        live = ListParams(
            filters=params.filters, sorting=params.sorting, limit=params.limit, token=params.token
        )
        found, next_token = await self._page(tx, call, live, visible)
        tombstones = []
        for obj in found:
            uri = spec.object_uri(call.ids, obj["id"])
            tombstone = await self._delete(tx, call, parent_uri, obj["id"], uri)
            await self._emit(tx, call, uri, obj, tombstone)
            await self._cascade_delete(tx, call, uri, obj)
            tombstones.append(tombstone)
        if next_token is not None:
            _, nonce, _ = pagination.decode_token(next_token[0], params.sorting)
            await self.cache.set(
                f"pagination-token:{nonce}", True, self.config.token_validity_seconds
            )
        etag = max((t["last_modified"] for t in tombstones), default=timestamp)
        return Outcome(200, {"data": tombstones}, etag, next_token)


_ABSENT = object()


__all__ = ["EVERYONE", "Call", "Outcome", "Service", "ServiceConfig", "Tx"]
