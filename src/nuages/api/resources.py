"""Buckets, collections, groups, records: Kinto's data model declared with the toolkit."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
from jsonschema_rs import meta as jsonschema_meta

from nuages.core.authorization import AUTHENTICATED, EVERYONE
from nuages.core.errors import ValidationError
from nuages.core.resource import NAME_PATTERN, ResourceSpec, generate_name, generate_sortable_uuid
from nuages.core.service import Tx

JSONObject = dict[str, Any]

# protocol/06 §3: which (level, permissions) grant each "<resource>:<permission>".
PERMISSION_TREE: dict[str, dict[str, tuple[str, ...]]] = {
    "bucket:write": {"bucket": ("write",)},
    "bucket:read": {"bucket": ("write", "read")},
    "bucket:read:attributes": {"bucket": ("write", "read", "collection:create", "group:create")},
    "collection:create": {"bucket": ("write", "collection:create")},
    "group:create": {"bucket": ("write", "group:create")},
    "group:write": {"bucket": ("write",), "group": ("write",)},
    "group:read": {"bucket": ("write", "read"), "group": ("write", "read")},
    "collection:write": {"bucket": ("write",), "collection": ("write",)},
    "collection:read": {"bucket": ("write", "read"), "collection": ("write", "read")},
    "collection:read:attributes": {
        "bucket": ("write", "read"),
        "collection": ("write", "read", "record:create"),
    },
    "record:create": {"bucket": ("write",), "collection": ("write", "record:create")},
    "record:write": {"bucket": ("write",), "collection": ("write",), "record": ("write",)},
    "record:read": {
        "bucket": ("write", "read"),
        "collection": ("write", "read"),
        "record": ("write", "read"),
    },
}


def _check_schema_field(data: JSONObject, name: str) -> None:
    """A `schema` / `*:schema` field must be a valid JSON schema, even with validation off."""
    if name not in data:
        return
    schema = data[name]
    if not isinstance(schema, dict):
        raise ValidationError(
            f"{schema!r} is not a mapping type", location="body", name=f"data.{name}"
        )
    try:
        jsonschema_meta.validate(schema)
    except jsonschema_rs.ValidationError as exc:
        reason = str(exc).splitlines()[0]
        raise ValidationError(
            f"Invalid JSON schema: {reason}", location="body", name=f"data.{name}"
        ) from None


def validate_bucket(data: JSONObject, old: JSONObject | None, given: bool) -> JSONObject:
    for name in ("collection:schema", "group:schema", "record:schema"):
        _check_schema_field(data, name)
    return data


def validate_collection(data: JSONObject, old: JSONObject | None, given: bool) -> JSONObject:
    _check_schema_field(data, "schema")
    expires = data.get("cache_expires")
    if "cache_expires" in data and (not isinstance(expires, int) or isinstance(expires, bool)):
        raise ValidationError(
            f"{expires!r} is not a number", location="body", name="data.cache_expires"
        )
    return data


def validate_group(data: JSONObject, old: JSONObject | None, given: bool) -> JSONObject:
    if given:
        data.setdefault("members", [])
    members = data.get("members")
    if "members" not in data:
        return data
    if not isinstance(members, list):
        raise ValidationError(f"{members!r} is not iterable", location="body", name="data.members")
    # Errors name the offending entry, "data.members.<index>", as Kinto does.
    for index, member in enumerate(members):
        if not isinstance(member, str):
            raise ValidationError(
                f"{member!r} is not a string", location="body", name=f"data.members.{index}"
            )
        if member == EVERYONE or member.startswith("/buckets/"):
            raise ValidationError(
                f"'{member}' is not a valid user ID.", location="body", name=f"data.members.{index}"
            )
    return data


def _members(obj: JSONObject | None) -> set[str]:
    members = (obj or {}).get("members") or []
    return {m for m in members if isinstance(m, str)}


async def group_membership(
    tx: Tx, uri: str, old: JSONObject | None, new: JSONObject | None
) -> None:
    """Keep user principals in sync with the group's members (protocol/06 §2)."""
    before, after = _members(old), _members(new)
    for member in before - after:
        await tx.permission.remove_user_principal(member, uri)
    for member in after - before:
        await tx.permission.add_user_principal(member, uri)


async def group_deleted(tx: Tx, uri: str, old: JSONObject | None, new: JSONObject | None) -> None:
    await tx.permission.remove_principal(uri)


async def bucket_deleted(tx: Tx, uri: str, old: JSONObject | None, new: JSONObject | None) -> None:
    """A bucket's groups disappear with it: so do their principals."""
    from nuages.core.objects import ListQuery

    groups = await tx.storage.list("group", uri, ListQuery(limit=None))
    for group in groups:
        await tx.permission.remove_principal(f"{uri}/groups/{group['id']}")


BUCKET = ResourceSpec(
    name="bucket",
    plural="buckets",
    id_pattern=NAME_PATTERN,
    generate_id=generate_name,
    permissions=("read", "write", "collection:create", "group:create"),
    process=validate_bucket,
    before_delete=bucket_deleted,
    children=("collections", "groups"),
)

COLLECTION = ResourceSpec(
    name="collection",
    plural="collections",
    parent=BUCKET,
    generate_id=generate_name,
    permissions=("read", "write", "record:create"),
    process=validate_collection,
    children=("records",),
)

GROUP = ResourceSpec(
    name="group",
    plural="groups",
    parent=BUCKET,
    generate_id=generate_name,
    permissions=("read", "write"),
    process=validate_group,
    after_write=group_membership,
    before_delete=group_deleted,
)

RECORD = ResourceSpec(
    name="record",
    plural="records",
    parent=COLLECTION,
    generate_id=generate_sortable_uuid,
    permissions=("read", "write"),
    parent_must_exist=True,
)

RESOURCES = (BUCKET, COLLECTION, GROUP, RECORD)

__all__ = [
    "AUTHENTICATED",
    "BUCKET",
    "COLLECTION",
    "GROUP",
    "PERMISSION_TREE",
    "RECORD",
    "RESOURCES",
]
