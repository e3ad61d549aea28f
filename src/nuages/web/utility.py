"""Utility endpoints: root, heartbeats, version, OpenAPI, contribute.json, flush, permissions."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import nuages
from nuages.core import filtering
from nuages.core.authorization import load_caller
from nuages.core.errors import PreconditionFailed
from nuages.core.pagination import decode_token, effective_limit, encode_token, next_page_url
from nuages.core.preconditions import parse_etag
from nuages.core.querystring import parse_list_params, project
from nuages.web.messages import WebRequest, WebResponse, etag_headers, http_date
from nuages.web.permission_entries import EntryBuilder, page_start, sort_entries

if TYPE_CHECKING:
    from nuages.backends import Backends
    from nuages.web.dispatch import Dispatcher

CAPABILITIES = {
    "basicauth": {
        "description": "Very basic authentication sessions. Not for production use.",
        "url": "http://kinto.readthedocs.io/en/stable/api/1.x/authentication.html",
    },
    "flush_endpoint": {
        "description": "The __flush__ endpoint can be used to remove all data from all backends.",
        "url": "https://kinto.readthedocs.io/en/latest/api/1.x/flush.html",
    },
    "permissions_endpoint": {
        "description": "The permissions endpoint can be used to list all user objects permissions.",
        "url": "https://kinto.readthedocs.io/en/latest/configuration/settings.html"
        "#activating-the-permissions-endpoint",
    },
}

PERMISSIONS_FIELDS = frozenset(
    {"uri", "resource_name", "id", "bucket_id", "collection_id", "group_id", "record_id"}
)

# Within one object, a permission implies others (protocol/09 §7).
IMPLIED: dict[str, dict[str, tuple[str, ...]]] = {
    "bucket": {
        "write": ("read", "collection:create", "group:create", "read:attributes"),
        "read": ("read:attributes",),
        "collection:create": ("read:attributes",),
        "group:create": ("read:attributes",),
    },
    "collection": {
        "write": ("read", "record:create", "read:attributes"),
        "read": ("read:attributes",),
        "record:create": ("read:attributes",),
    },
    "group": {"write": ("read",)},
    "record": {"write": ("read",)},
    "account": {"write": ("read",)},
}
LEVELS = {
    "buckets": "bucket",
    "collections": "collection",
    "groups": "group",
    "records": "record",
    "accounts": "account",  # the accounts plugin (protocol/10 §3)
}


def flush_enabled(settings: Any) -> bool:
    return bool(settings.flush_enabled)


class Utility:
    def __init__(self, dispatcher: Dispatcher, backends: Backends) -> None:
        self.d = dispatcher
        self.backends = backends
        self._version: dict[str, Any] | None = None
        self._openapi: dict[str, Any] | None = None

    def register(self) -> None:
        d, s = self.d, self.d.settings
        d.add("root", "/", ("GET",), self.root)
        d.add("batch", "/batch", ("POST",), self.batch)
        d.add("heartbeat", "/__heartbeat__", ("GET",), self.heartbeat)
        d.add("lbheartbeat", "/__lbheartbeat__", ("GET",), self.lbheartbeat)
        d.add("version", "/__version__", ("GET",), self.version)
        d.add("api", "/__api__", ("GET",), self.openapi)
        d.add("contribute", "/contribute.json", ("GET",), self.contribute)
        if flush_enabled(s):
            d.add("flush", "/__flush__", ("POST",), self.flush)
        if s.experimental_permissions_endpoint:
            d.add("permissions", "/permissions", ("GET",), self.permissions, plural=True)

    async def root(self, req: WebRequest, params: dict[str, str], tx: Any) -> WebResponse:
        s = self.d.settings
        capabilities = {}
        if "basicauth" in s.auth:
            capabilities["basicauth"] = CAPABILITIES["basicauth"]
        if flush_enabled(s):
            capabilities["flush_endpoint"] = CAPABILITIES["flush_endpoint"]
        if s.experimental_permissions_endpoint:
            capabilities["permissions_endpoint"] = CAPABILITIES["permissions_endpoint"]
        # Plugins' (docs/plugins.md); a callable one depends on the URL of the API.
        api_url = f"{self.d.base_url(req)}{self.d.prefix}/"
        for name, capability in self.d.capabilities.items():
            capabilities[name] = capability(api_url) if callable(capability) else capability
        body: dict[str, Any] = {
            "project_name": s.project_name,
            "project_version": nuages.__version__,
            "http_api_version": nuages.HTTP_API_VERSION,
            "project_docs": s.project_docs,
            "url": f"{self.d.base_url(req)}{self.d.prefix}/",
            "settings": {
                "batch_max_requests": s.batch_max_requests or None,
                "readonly": s.readonly,
                "explicit_permissions": s.explicit_permissions,
            },
            "capabilities": capabilities,
        }
        if s.eos is not None:
            body["eos"] = s.eos.isoformat()
        user_id = await self.d.authenticate(req, tx)
        if user_id is not None:
            async with self.d.transaction(tx, write=False) as t:
                caller = await load_caller(t.permission, user_id)
            body["user"] = {"id": user_id, "principals": list(caller.principals)}
            for info in self.d.user_info:  # plugins' (the default bucket id, ...)
                body["user"].update(info(user_id))
        headers = {}
        if s.readonly:
            # Kinto's root_cache_expires_seconds default (protocol/08 §3): max-age and Expires.
            headers["Cache-Control"] = "max-age=86400"
            headers["Expires"] = http_date(int((time.time() + 86400) * 1000))
        return WebResponse(200, body, headers)

    async def batch(self, req: WebRequest, params: dict[str, str], tx: Any) -> WebResponse:
        from nuages.web.batch import run_batch

        route = self.d.match("/batch")
        assert route is not None
        return await run_batch(self.d, req, route[0])

    async def heartbeat(self, req: WebRequest, params: dict[str, str], tx: Any) -> WebResponse:
        timeout = self.d.settings.heartbeat_timeout_seconds

        async def check(backend: Any) -> bool:
            try:
                return bool(await asyncio.wait_for(backend.ping(), timeout))
            except Exception:
                return False

        names = ("storage", "permission", "cache")
        results = await asyncio.gather(*(check(getattr(self.backends, n)) for n in names))
        body = dict(zip(names, results, strict=True))
        return WebResponse(200 if all(results) else 503, body)

    async def lbheartbeat(self, req: WebRequest, params: dict[str, str], tx: Any) -> WebResponse:
        return WebResponse(200, {})

    async def version(self, req: WebRequest, params: dict[str, str], tx: Any) -> WebResponse:
        if self._version is None:
            path = self.d.settings.version_json_path
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    self._version = json.load(f)
            else:
                self._version = {
                    "name": "nuages",
                    "version": nuages.__version__,
                    "source": "https://github.com/nuages/nuages",
                    "commit": os.environ.get("NUAGES_COMMIT", "unknown"),
                }
        return WebResponse(200, self._version)

    async def openapi(self, req: WebRequest, params: dict[str, str], tx: Any) -> WebResponse:
        from nuages.web.openapi import build_openapi

        if self._openapi is None:
            self._openapi = build_openapi(self.d)
        return WebResponse(200, self._openapi)

    async def contribute(self, req: WebRequest, params: dict[str, str], tx: Any) -> WebResponse:
        return WebResponse(
            200,
            {
                "name": "Nuages",
                "description": "Store JSON and keep it in sync across devices.",
                "repository": {
                    "url": "https://github.com/nuages/nuages",
                    "license": "Apache-2.0",
                    "tests": "https://github.com/nuages/nuages/actions",
                },
                "participate": {
                    "home": "https://github.com/nuages/nuages",
                    "docs": self.d.settings.project_docs,
                },
                "bugs": {
                    "list": "https://github.com/nuages/nuages/issues",
                    "report": "https://github.com/nuages/nuages/issues/new",
                },
                "keywords": ["python", "json", "sync", "kinto"],
            },
        )

    async def flush(self, req: WebRequest, params: dict[str, str], tx: Any) -> WebResponse:
        for backend in (self.backends.storage, self.backends.permission, self.backends.cache):
            await backend.flush()
        return WebResponse(202, {})

    async def permissions(self, req: WebRequest, params: dict[str, str], tx: Any) -> WebResponse:
        s = self.d.settings
        user_id = await self.d.authenticate(req, tx)
        async with self.d.transaction(tx, write=False) as t:
            caller = await load_caller(t.permission, user_id)
            readers = s.principals_for("permissions", "read")
            if not set(caller.principals) & set(readers):
                from nuages.core.errors import Forbidden, Unauthorized

                raise Forbidden() if caller.authenticated else Unauthorized()
            perms = sorted(
                {p for tree in IMPLIED.values() for p in tree}
                | {"read", "write", "collection:create", "group:create", "record:create"}
            )
            acl = await t.permission.get_accessible_objects(
                caller.principals, [("*", p) for p in perms]
            )
            granted = _granted_by_settings(s.principals, caller.principals)
            for uri, held in (await _every_object(t, granted)).items():
                acl.setdefault(uri, set()).update(held)
            # Entries have no timestamp; the ETag is a stable one of this scope (protocol/09 §7).
            timestamp = await t.storage.resource_timestamp("permission", "")
        if_match = parse_etag("If-Match", req.headers.get("if-match"))
        if isinstance(if_match, int) and if_match != timestamp:
            raise PreconditionFailed(timestamp)
        build = EntryBuilder(LEVELS, IMPLIED)
        entries = [e for e in (build(uri, held) for uri, held in acl.items()) if e]
        root = sorted(granted.get("", ()))
        if root:
            entries.append({"uri": "/", "resource_name": "root", "permissions": root})
        return self._list_entries(req, entries, timestamp, build.finish)

    def _list_entries(
        self,
        req: WebRequest,
        entries: list[dict[str, Any]],
        timestamp: int,
        finish: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> WebResponse:
        query = [
            (k, v)
            for k, v in req.query
            if k not in ("_since", "_before", "_to")
            and k.lstrip("_") != "last_modified"
            and not k.endswith("_last_modified")
        ]
        params = parse_list_params(query, known_fields=PERMISSIONS_FIELDS)
        filters = [f for f in params.filters if f.field != "last_modified"]
        sorting = [s for s in params.sorting if s.field != "last_modified"]
        from nuages.core.objects import Sort

        sorting.append(Sort("uri", -1))
        if filters:
            entries = [e for e in entries if filtering.matches_all(e, filters)]
        headers = etag_headers(timestamp)
        headers["Cache-Control"] = "no-cache, no-store"  # as any resource read (protocol/08 §3)
        if req.method == "HEAD":
            headers["Total-Objects"] = headers["Total-Records"] = str(len(entries))
            return WebResponse(200, None, headers)
        found = sort_entries(entries, sorting)
        s = self.d.settings
        limit = effective_limit(params.limit, s.paginate_by, s.storage_max_fetch_size)
        offset = 0
        if params.token is not None:
            keyset, _, offset = decode_token(params.token, sorting)
            found = found[page_start(found, sorting, keyset) :]
        page = [finish(e) for e in found[:limit]]
        if len(found) > limit:
            token = encode_token(page[-1], sorting, offset + limit)
            url = self.d.base_url(req) + req.path
            headers["Next-Page"] = next_page_url(url, req.query, limit, token)
        if params.fields:
            page = [project(e, params.fields) for e in page]
        return WebResponse(200, {"data": page}, headers)


_PARENT_TYPE = {
    "bucket": "",
    "collection": "bucket",
    "group": "bucket",
    "record": "collection",
    "account": "",
}


def _granted_by_settings(
    settings_principals: Mapping[str, tuple[str, ...]], principals: tuple[str, ...]
) -> dict[str, set[str]]:
    """Permissions the caller holds from ``<resource>_<perm>_principals``, by target type.

    ``collection_create_principals`` is ``collection:create`` on every bucket; ``""`` is the
    root (``bucket:create``), as Kinto's ``allowed_from_settings``.
    """
    granted: dict[str, set[str]] = {}
    for key, allowed in settings_principals.items():
        resource, _, perm = key.partition(":")
        if resource not in _PARENT_TYPE or not set(allowed) & set(principals):
            continue
        if perm == "create":
            resource, perm = _PARENT_TYPE[resource], key
        granted.setdefault(resource, set()).add(perm)
    return granted


async def _every_object(tx: Any, granted: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """URI → permissions for every bucket, collection and group granted by settings."""
    from nuages.core.objects import ListQuery

    found: dict[str, set[str]] = {}
    wanted = [r for r in ("bucket", "collection", "group") if granted.get(r)]
    if not wanted:
        return found
    for bucket in await tx.storage.list("bucket", "", ListQuery(limit=None)):
        bucket_uri = f"/buckets/{bucket['id']}"
        if "bucket" in wanted:
            found[bucket_uri] = set(granted["bucket"])
        for resource in ("collection", "group"):
            if resource in wanted:
                for child in await tx.storage.list(resource, bucket_uri, ListQuery(limit=None)):
                    found[f"{bucket_uri}/{resource}s/{child['id']}"] = set(granted[resource])
    return found


__all__ = ["Utility", "etag_headers"]
