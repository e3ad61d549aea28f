"""Quotas: limits on the number and size of objects per bucket and per collection.

Kinto's historical ``kinto.plugins.quotas`` (protocol/10 §5). A ``changed`` listener keeps
usage counters up to date inside each write's transaction, and refuses a write that takes a
bucket or collection past a limit with 507, errno 121 (``Insufficient Storage``). Writes are
serialised per backend, so the counters stay exact under concurrency; a 507 is a 5xx, so in
a batch it rolls the whole batch back.

Usage is stored as ordinary storage objects (resource ``quota``): ``bucket_info`` under
``/buckets/<bid>`` (``collection_count``, ``record_count``, ``storage_size``) and
``collection_info`` under ``/buckets/<bid>/collections/<cid>`` (``record_count``,
``storage_size``); they are purged with their bucket or collection. The size of an object is
the length in bytes of its compact JSON with sorted keys (UTF-8). A bucket's size counts the
bucket itself, its collections, groups and records; a collection's, itself and its records.

``GET /buckets/<bid>/quota`` and ``GET /buckets/<bid>/collections/<cid>/quota`` show the usage
(and the limits) to whoever may read the bucket or collection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson

from nuages.core.authorization import load_caller
from nuages.core.errors import Forbidden, ObjectNotFound, QuotaExceeded, Unauthorized
from nuages.core.events import Change
from nuages.web.messages import WebRequest, WebResponse

if TYPE_CHECKING:
    from nuages.core.service import Tx
    from nuages.settings import Settings
    from nuages.web.dispatch import Dispatcher

JSONObject = dict[str, Any]

CAPABILITY: Final = {
    "description": "Quotas Management on buckets and collections.",
    "url": "https://kinto.readthedocs.io/en/latest/api/1.x/quotas.html",
}
QUOTA = "quota"
BUCKET_INFO = "bucket_info"
COLLECTION_INFO = "collection_info"


LIMIT_NAMES: Final = ("max_bytes", "max_items", "max_bytes_per_item")


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits of one bucket, or one collection; None means no limit."""

    bucket_max_bytes: int | None = None
    bucket_max_items: int | None = None
    bucket_max_bytes_per_item: int | None = None
    collection_max_bytes: int | None = None
    collection_max_items: int | None = None
    collection_max_bytes_per_item: int | None = None


_UNSET: Final = object()


class QuotaSettings:
    """The ``quotas_*`` settings, with Kinto's per-bucket and per-collection overrides.

    ``quotas_bucket_<bid>_<limit>`` replaces ``quotas_bucket_<limit>`` for bucket ``bid``;
    ``quotas_collection_<bid>_<cid>_<limit>``, then ``quotas_collection_<bid>_<limit>``,
    replace ``quotas_collection_<limit>`` for collection ``cid`` of ``bid``. As in Kinto the
    keys are looked up from the ids being written, so ids containing ``_`` need no escaping.
    """

    def __init__(self, settings: Settings) -> None:
        self.defaults = Limits(
            bucket_max_bytes=settings.quotas_bucket_max_bytes,
            bucket_max_items=settings.quotas_bucket_max_items,
            bucket_max_bytes_per_item=settings.quotas_bucket_max_bytes_per_item,
            collection_max_bytes=settings.quotas_collection_max_bytes,
            collection_max_items=settings.quotas_collection_max_items,
            collection_max_bytes_per_item=settings.quotas_collection_max_bytes_per_item,
        )
        self.overrides: dict[str, int | None] = {}
        for entry in settings.quotas_overrides:  # later entries win (env over file, ...)
            key, _, value = entry.partition("=")
            self.overrides[key] = int(value) if value else None

    def _pick(self, keys: tuple[str, ...], default: int | None) -> int | None:
        for key in keys:
            found = self.overrides.get(key, _UNSET)
            if found is not _UNSET:
                return found  # type: ignore[return-value]
        return default

    def limits(self, bucket_id: str, collection_id: str | None = None) -> Limits:
        """The limits of `bucket_id` and, with `collection_id`, of that collection."""
        if not self.overrides:
            return self.defaults
        values: dict[str, int | None] = {}
        for name in LIMIT_NAMES:
            values[f"bucket_{name}"] = self._pick(
                (f"bucket_{bucket_id}_{name}",), getattr(self.defaults, f"bucket_{name}")
            )
            keys: tuple[str, ...] = (f"collection_{bucket_id}_{name}",)
            if collection_id is not None:
                keys = (f"collection_{bucket_id}_{collection_id}_{name}", *keys)
            values[f"collection_{name}"] = self._pick(
                keys, getattr(self.defaults, f"collection_{name}")
            )
        return Limits(**values)


def object_size(obj: JSONObject | None) -> int:
    """Bytes of the object as compact JSON with sorted keys (0 for nothing)."""
    return 0 if obj is None else len(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS))


class Quotas:
    """The change listener maintaining usage and enforcing :class:`Limits`."""

    def __init__(self, settings: QuotaSettings) -> None:
        self.settings = settings

    async def on_change(self, tx: Tx, change: Change) -> None:
        if change.resource_name == "bucket" and change.action == "delete":
            return  # its usage objects are purged with it
        bucket_uri = f"/buckets/{change.ids['bucket']}"
        bucket = await _load(tx, bucket_uri, BUCKET_INFO)
        collection_uri = None
        collection: JSONObject | None = None
        if change.resource_name in ("collection", "record"):
            collection_uri = f"{bucket_uri}/collections/{change.ids['collection']}"
            collection = await _load(tx, collection_uri, COLLECTION_INFO)
        limits = self.settings.limits(change.ids["bucket"], change.ids.get("collection"))
        old_size = object_size(change.old)
        new_size = 0 if change.action == "delete" else object_size(change.new)
        per_item = [limits.bucket_max_bytes_per_item]
        if collection is not None:
            per_item.append(limits.collection_max_bytes_per_item)
        for limit in per_item:
            if limit is not None and new_size > limit:
                raise QuotaExceeded(
                    f"Maximum bytes per object exceeded ({new_size} > {limit} Bytes)."
                )

        if change.resource_name == "collection" and change.action == "delete":
            assert collection is not None
            # Its records go with it, without events of their own.
            bucket["storage_size"] -= collection["storage_size"]
            bucket["record_count"] -= collection["record_count"]
            bucket["collection_count"] -= 1
            await _save(tx, bucket_uri, bucket)
            return  # collection_info is purged with the collection
        diff = new_size - old_size
        bucket["storage_size"] += diff
        if collection is not None:
            collection["storage_size"] += diff
        if change.resource_name == "collection" and change.action == "create":
            bucket["collection_count"] += 1
        if change.resource_name == "record" and change.action != "update":
            step = 1 if change.action == "create" else -1
            bucket["record_count"] += step
            assert collection is not None
            collection["record_count"] += step
        if change.action != "delete":
            self._check(limits, bucket, collection)
        await _save(tx, bucket_uri, bucket)
        if collection is not None and collection_uri is not None:
            await _save(tx, collection_uri, collection)

    def _check(self, lim: Limits, bucket: JSONObject, collection: JSONObject | None) -> None:
        """Refuse a write that leaves a bucket or collection past a limit (Kinto's messages)."""
        size, count = bucket["storage_size"], bucket["record_count"]
        if lim.bucket_max_bytes is not None and size > lim.bucket_max_bytes:
            raise QuotaExceeded(
                f"Bucket maximum total size exceeded ({size} > {lim.bucket_max_bytes} Bytes). "
            )
        if lim.bucket_max_items is not None and count > lim.bucket_max_items:
            raise QuotaExceeded(
                f"Bucket maximum number of objects exceeded ({count} > {lim.bucket_max_items} "
                "objects)."
            )
        if collection is None:
            return
        size, count = collection["storage_size"], collection["record_count"]
        if lim.collection_max_bytes is not None and size > lim.collection_max_bytes:
            raise QuotaExceeded(
                f"Collection maximum size exceeded ({size} > {lim.collection_max_bytes} Bytes)."
            )
        if lim.collection_max_items is not None and count > lim.collection_max_items:
            raise QuotaExceeded(
                f"Collection maximum number of objects exceeded ({count} > "
                f"{lim.collection_max_items} objects)."
            )


async def _load(tx: Tx, parent_uri: str, info_id: str) -> JSONObject:
    found = await tx.storage.get(QUOTA, parent_uri, info_id)
    usage: JSONObject = {"id": info_id, "record_count": 0, "storage_size": 0}
    if info_id == BUCKET_INFO:
        usage["collection_count"] = 0
    for key in usage:
        if found is not None and key in found:
            usage[key] = found[key]
    return usage


async def _save(tx: Tx, parent_uri: str, usage: JSONObject) -> None:
    for key in ("record_count", "storage_size", "collection_count"):
        if key in usage:
            usage[key] = max(0, usage[key])  # usage from before the plugin was on: never < 0
    await tx.storage.update(QUOTA, parent_uri, usage["id"], usage)


class UsageEndpoint:
    """``GET /buckets/<bid>[/collections/<cid>]/quota``: usage and limits, for readers."""

    def __init__(
        self, dispatcher: Dispatcher, settings: QuotaSettings, *, collection: bool
    ) -> None:
        self.d = dispatcher
        self.settings = settings
        self.collection = collection

    async def __call__(self, req: WebRequest, params: dict[str, str], tx: Tx | None) -> WebResponse:
        bucket_uri = f"/buckets/{params['bucket']}"
        uris = [bucket_uri]
        if self.collection:
            uris.append(f"{bucket_uri}/collections/{params['collection']}")
        user_id = await self.d.authenticate(req, tx)
        async with self.d.transaction(tx, write=False) as t:
            caller = await load_caller(t.permission, user_id)
            bound = [(u, p) for u in uris for p in ("read", "write")]
            if not await t.permission.check_permission(caller.principals, bound):
                raise Forbidden() if caller.authenticated else Unauthorized()
            if self.collection:
                found = await t.storage.get("collection", bucket_uri, params["collection"])
                if found is None:
                    raise ObjectNotFound("collection", params["collection"])
                usage = await _load(t, uris[-1], COLLECTION_INFO)
            else:
                usage = await _load(t, bucket_uri, BUCKET_INFO)
        del usage["id"]
        prefix = "collection" if self.collection else "bucket"
        resolved = self.settings.limits(params["bucket"], params.get("collection"))
        limits = {
            name: getattr(resolved, f"{prefix}_{name}")
            for name in LIMIT_NAMES
            if getattr(resolved, f"{prefix}_{name}") is not None
        }
        body = {"data": {**usage, "limits": limits}}
        return WebResponse(200, body, {"Cache-Control": "no-cache, no-store"})


def install(dispatcher: Dispatcher) -> Quotas:
    """Enforce the ``quotas_*`` limits (and overrides) on `dispatcher`'s service; serve usage."""
    limits = QuotaSettings(dispatcher.settings)
    quotas = Quotas(limits)
    resources = ("bucket", "collection", "group", "record")
    dispatcher.service.events.on_change(quotas.on_change, resources=resources)
    dispatcher.add(
        "bucket-quota",
        "/buckets/{bucket}/quota",
        ("GET",),
        UsageEndpoint(dispatcher, limits, collection=False),
    )
    dispatcher.add(
        "collection-quota",
        "/buckets/{bucket}/collections/{collection}/quota",
        ("GET",),
        UsageEndpoint(dispatcher, limits, collection=True),
    )
    dispatcher.capabilities["quotas"] = dict(CAPABILITY)
    return quotas


__all__ = ["Limits", "QuotaSettings", "Quotas", "install", "object_size"]
