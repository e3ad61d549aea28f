"""History: an entry for every change of a bucket's objects, and collection snapshots.

Kinto's ``kinto.plugins.history`` (protocol/10 §4). A ``changed`` listener appends, in the
write's own transaction, one entry per created, updated or deleted bucket, collection,
group or record to the bucket's history. Entries are ordinary storage objects (resource
``history``, parent ``/buckets/<bid>``), so every backend keeps them without a schema
change, a bucket's deletion purges them with the rest of the bucket, and the generic list
machinery serves them: ``GET|HEAD|DELETE /buckets/<bid>/history`` with filters on a strict
field set, ``_since``, ``_sort``, pagination.

Visibility: callers who may read the bucket see every entry; others see the entries whose
read ACL names them — the readers and writers of the bucket, of the collection and of the
object at the time of the change (Kinto's rule; none when ``explicit_permissions`` is off).

``GET /buckets/<bid>/snapshot/collections/<cid>@<timestamp>`` rebuilds the records of a
collection as they were at a timestamp, from the live records and the history.

Retention (settings ``history_*``): excluded resources and user ids, trimming to the newest
N entries per resource type (optionally per user), a maximum age.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from nuages.api import BUCKET
from nuages.core.authorization import load_caller
from nuages.core.errors import Forbidden, Unauthorized, ValidationError
from nuages.core.events import Change
from nuages.core.objects import Comparison, Filter, ListQuery, Sort
from nuages.core.resource import ResourceSpec, generate_sortable_uuid
from nuages.core.timestamps import now_ms
from nuages.web.messages import WebRequest, WebResponse

if TYPE_CHECKING:
    from nuages.core.service import Tx
    from nuages.settings import Settings
    from nuages.web.dispatch import Dispatcher

log = logging.getLogger("nuages.history")

JSONObject = dict[str, Any]

CAPABILITY: Final = {
    "description": "Track changes on data.",
    "url": "http://kinto.readthedocs.io/en/latest/api/1.x/history.html",
}
TRACKED: Final = ("bucket", "collection", "group", "record")
# Filters and sorts outside these fields are 400s (protocol/10 §4).
FIELDS: Final = frozenset(
    {
        "user_id",
        "uri",
        "action",
        "date",
        "resource_name",
        "bucket_id",
        "collection_id",
        "group_id",
        "record_id",
        "target",
    }
)
HISTORY = ResourceSpec(
    name="history",
    plural="history",
    parent=BUCKET,
    methods=frozenset({"GET", "DELETE"}),
    permissions=("read",),
    known_fields=FIELDS,
)
# Who may read and purge entries (Kinto's PERMISSIONS_INHERITANCE_TREE["history"]).
TREE: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "history:read": {"bucket": ("write", "read"), "history": ("read",)},
    "history:write": {"bucket": ("write",)},
}
# ?record_id=123 is the id "123", not the number (Kinto's History._extract_filters).
_ID_FILTER = re.compile(
    r"^(?:(?:lt|min|max|not|eq|gt|in|exclude)_)?(?:record|collection|bucket)_id$"
)
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?$")
# Entries removed per write by the age limit, so one write never pays for a huge backlog.
MAX_AGE_BATCH: Final = 100


@dataclass(frozen=True, slots=True)
class Retention:
    """What is recorded and for how long (the ``history_*`` settings)."""

    exclude_resources: frozenset[str] = frozenset()
    exclude_user_ids: frozenset[str] = frozenset()
    max_count: int = -1
    threshold: int = 100
    trim_user_ids: frozenset[str] = frozenset()
    max_age_ms: int | None = None
    explicit_permissions: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention:
        age = settings.history_max_age_seconds
        return cls(
            exclude_resources=frozenset(u.rstrip("/") for u in settings.history_exclude_resources),
            exclude_user_ids=frozenset(settings.history_exclude_user_ids),
            max_count=settings.history_auto_trim_max_count,
            threshold=settings.history_auto_trim_threshold,
            trim_user_ids=frozenset(settings.history_auto_trim_user_ids),
            max_age_ms=None if age is None else age * 1000,
            explicit_permissions=settings.explicit_permissions,
        )


class History:
    """The change listener that records entries, and the retention rules."""

    def __init__(self, retention: Retention) -> None:
        self.retention = retention

    async def record(self, tx: Tx, change: Change) -> None:
        """Append the entry of `change` to its bucket's history (same transaction)."""
        rules = self.retention
        if change.user_id in rules.exclude_user_ids:
            return
        if change.resource_name == "bucket" and change.action == "delete":
            return  # the bucket's history goes with it (protocol/10 §4)
        bucket_uri = f"/buckets/{change.ids['bucket']}"
        collection_uri = None
        if "collection" in change.ids:
            collection_uri = f"{bucket_uri}/collections/{change.ids['collection']}"
        if {bucket_uri, collection_uri, change.uri} & rules.exclude_resources:
            return
        new = change.new or {}
        perms: dict[str, list[str]] = {}
        if change.action != "delete":  # a deleted object has no ACL left (as in Kinto)
            acl = await tx.permission.get_object_permissions(change.uri)
            perms = {k: sorted(v) for k, v in acl.items()}
        entry: JSONObject = {
            "id": generate_sortable_uuid(),
            "action": change.action,
            "resource_name": change.resource_name,
            "uri": change.uri,
            "user_id": change.user_id,
            "date": datetime.now(UTC).isoformat(),
            f"{change.resource_name}_id": change.object_id,
            "target": {"data": new, "permissions": perms},
        }
        if change.resource_name == "record":
            entry["collection_id"] = change.ids["collection"]
        stored = await tx.storage.create("history", bucket_uri, entry)
        if rules.explicit_permissions:
            readers = set(perms.get("read", ())) | set(perms.get("write", ()))
            for uri in (bucket_uri, collection_uri):
                if uri is not None:
                    acl = await tx.permission.get_object_permissions(uri)
                    readers |= acl.get("read", set()) | acl.get("write", set())
            entry_uri = f"{bucket_uri}/history/{stored['id']}"
            await tx.permission.replace_object_permissions(entry_uri, {"read": sorted(readers)})
        await self._trim(tx, bucket_uri, change)

    async def _trim(self, tx: Tx, bucket_uri: str, change: Change) -> None:
        """Apply the count and age limits to the bucket's history."""
        rules = self.retention
        trim_users = rules.trim_user_ids
        if rules.max_count > 0 and (not trim_users or change.user_id in trim_users):
            filters = [Filter("resource_name", change.resource_name)]
            if trim_users:
                filters.append(Filter("user_id", change.user_id))
            query = ListQuery(filters=tuple(filters))
            # Trimming once past max + threshold: amortised over `threshold` writes.
            if await tx.storage.count("history", bucket_uri, query) > (
                rules.max_count + rules.threshold
            ):
                newest = await tx.storage.list(
                    "history", bucket_uri, replace(query, limit=rules.max_count + 1)
                )
                cutoff = newest[-1]["last_modified"]
                older = (*filters, Filter("last_modified", cutoff, Comparison.MAX))
                await _delete(tx, bucket_uri, ListQuery(filters=older))
        if rules.max_age_ms is not None:
            cutoff = now_ms() - rules.max_age_ms
            old = ListQuery(
                filters=(Filter("last_modified", cutoff, Comparison.LT),),
                sorting=(Sort("last_modified", 1),),
                limit=MAX_AGE_BATCH,
            )
            await _delete(tx, bucket_uri, old)


async def _delete(tx: Tx, bucket_uri: str, query: ListQuery) -> None:
    found = await tx.storage.list("history", bucket_uri, query)
    for entry in found:
        await tx.storage.delete("history", bucket_uri, entry["id"])
        await tx.permission.delete_object_permissions(f"{bucket_uri}/history/{entry['id']}")
    if found:
        log.info("trimmed %d history entries of %s", len(found), bucket_uri)


def string_ids(query: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Numeric-looking values of id filters as JSON strings: ids are strings."""
    fixed = []
    for name, value in query:
        if _ID_FILTER.match(name.strip()):
            parts = [f'"{v}"' if _NUMBER.match(v.strip()) else v for v in value.split(",")]
            value = ",".join(parts)
        fixed.append((name, value))
    return fixed


# -- snapshot ------------------------------------------------------------------------------


async def snapshot(tx: Tx, bucket_id: str, collection_id: str, timestamp: int) -> list[JSONObject]:
    """The live records of a collection as they were at `timestamp` (Kinto's algorithm).

    Records unchanged since are taken as they are; changed or deleted ones are restored from
    their newest history entry at or before `timestamp`; records created later are left out.
    """
    bucket_uri = f"/buckets/{bucket_id}"
    collection_uri = f"{bucket_uri}/collections/{collection_id}"
    everything = await tx.storage.list(
        "record", collection_uri, ListQuery(include_deleted=True, limit=None)
    )
    result = [r for r in everything if r["last_modified"] <= timestamp and not r.get("deleted")]
    changed = tuple(r["id"] for r in everything if r["last_modified"] > timestamp)
    if changed:
        entries = await tx.storage.list(
            "history",
            bucket_uri,
            ListQuery(
                filters=(
                    Filter("resource_name", "record"),
                    Filter("collection_id", collection_id),
                    Filter("record_id", changed, Comparison.IN),
                    Filter("target.data.last_modified", timestamp, Comparison.MAX),
                ),
                sorting=(Sort("last_modified", -1),),
            ),
        )
        latest: dict[str, JSONObject] = {}
        for entry in entries:
            latest.setdefault(entry["record_id"], entry)
        for entry in latest.values():
            data = entry["target"]["data"]
            # A deletion before the timestamp: the record did not exist then.
            if not data.get("deleted"):
                result.append(data)
    return sorted(result, key=lambda r: r["last_modified"], reverse=True)


class SnapshotEndpoint:
    """``GET /buckets/<bid>/snapshot/collections/<cid>@<timestamp>``."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.d = dispatcher

    async def __call__(self, req: WebRequest, params: dict[str, str], tx: Tx | None) -> WebResponse:
        raw = params["timestamp"]
        if not raw.isascii() or not raw.isdigit():
            raise ValidationError(f"Invalid timestamp {raw!r}", location="path", name="timestamp")
        timestamp = int(raw)
        bucket_id, collection_id = params["bucket"], params["collection"]
        bucket_uri = f"/buckets/{bucket_id}"
        collection_uri = f"{bucket_uri}/collections/{collection_id}"
        user_id = await self.d.authenticate(req, tx)
        async with self.d.transaction(tx, write=False) as t:
            caller = await load_caller(t.permission, user_id)
            bound = [(u, p) for u in (bucket_uri, collection_uri) for p in ("read", "write")]
            if not await t.permission.check_permission(caller.principals, bound):
                raise Forbidden() if caller.authenticated else Unauthorized()
            records = await snapshot(t, bucket_id, collection_id, timestamp)
        return WebResponse(200, {"data": records}, {"Cache-Control": "no-cache, no-store"})


def capability(settings: Settings) -> dict[str, Any]:
    """The ``history`` capability, with the retention settings clients may show."""
    found: dict[str, Any] = dict(CAPABILITY)
    if settings.history_auto_trim_max_count > 0:
        found["auto_trim_max_count"] = settings.history_auto_trim_max_count
    if settings.history_auto_trim_user_ids:
        found["auto_trim_user_ids"] = list(settings.history_auto_trim_user_ids)
    excluded = [_uri_parts(u) for u in settings.history_exclude_resources]
    if excluded:
        found["excluded_resources"] = [e for e in excluded if e]
    return found


def _uri_parts(uri: str) -> dict[str, str]:
    parts = uri.strip("/").split("/")
    names = {"buckets": "bucket", "collections": "collection", "groups": "group"}
    names["records"] = "record"
    return {names[p]: oid for p, oid in zip(parts[::2], parts[1::2], strict=False) if p in names}


def install(dispatcher: Dispatcher) -> History:
    """Record the changes of `dispatcher`'s service; serve the history and snapshots."""
    settings = dispatcher.settings
    service = dispatcher.service
    history = History(Retention.from_settings(settings))
    service.events.on_change(history.record, resources=TRACKED)
    service.tree = {**service.tree, **TREE}  # a copy: the default tree is shared
    dispatcher.add_resource(HISTORY, objects=False)
    _with_string_ids(dispatcher)
    dispatcher.add(
        "history-snapshot",
        "/buckets/{bucket}/snapshot/collections/{collection}@{timestamp}",
        ("GET",),
        SnapshotEndpoint(dispatcher),
    )
    dispatcher.capabilities["history"] = capability(settings)
    return history


def _with_string_ids(dispatcher: Dispatcher) -> None:
    """Wrap the history list handler so that id filters are compared as strings."""
    for index, route in enumerate(dispatcher.routes):
        if route.spec is HISTORY:
            inner = route.handler

            async def handler(
                req: WebRequest, params: dict[str, str], tx: Tx | None, inner: Any = inner
            ) -> WebResponse:
                response: WebResponse = await inner(
                    replace(req, query=string_ids(req.query)), params, tx
                )
                return response

            dispatcher.routes[index] = replace(route, handler=handler)


__all__ = ["HISTORY", "History", "Retention", "install", "snapshot", "string_ids"]
