"""The ASGI application: Starlette for the server plumbing, the dispatcher for the protocol."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nuages import backends as backends_mod
from nuages.api import PERMISSION_TREE, RESOURCES
from nuages.core.authorization import PermissionTree
from nuages.core.resource import ResourceSpec
from nuages.core.service import Service, ServiceConfig
from nuages.plugins import install_plugins
from nuages.settings import Settings
from nuages.web import errors as werr
from nuages.web.dispatch import Dispatcher
from nuages.web.messages import WebRequest, WebResponse, plain_error
from nuages.web.utility import Utility

log = logging.getLogger("nuages")

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]
QUERY_ENCODING_ERROR = (
    "A request with an incorrect encoding in the querystring was received. "
    "Please make sure your requests are encoded in UTF-8"
)


def build_dispatcher(
    settings: Settings,
    backends: backends_mod.Backends,
    resources: Sequence[ResourceSpec] = RESOURCES,
    tree: PermissionTree = PERMISSION_TREE,
) -> Dispatcher:
    """Routes of the utility endpoints and of every resource, over one service."""
    service = Service(
        storage=backends.storage,
        permission=backends.permission,
        cache=backends.cache,
        tree=tree,
        config=ServiceConfig(
            paginate_by=settings.paginate_by,
            max_fetch_size=settings.storage_max_fetch_size,
            explicit_permissions=settings.explicit_permissions,
            token_validity_seconds=settings.pagination_token_validity_seconds,
            principals=settings.principals,
        ),
    )
    dispatcher = Dispatcher(settings, service)
    Utility(dispatcher, backends).register()
    for spec in resources:
        dispatcher.add_resource(spec)
    install_plugins(dispatcher)
    return dispatcher


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it exceeds `limit` bytes (read no further than that)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _to_response(response: WebResponse) -> Response:
    body = response.body_bytes()
    headers = dict(response.headers)
    if body or response.status not in (204, 304):
        headers.setdefault("Content-Type", "application/json")
    return Response(body, status_code=response.status, headers=headers)


def create_app(
    settings: Settings | None = None,
    *,
    resources: Sequence[ResourceSpec] = RESOURCES,
    tree: PermissionTree = PERMISSION_TREE,
    migrate: bool = False,
) -> Starlette:
    """An ASGI app serving `resources` (by default Kinto's buckets, collections, groups and
    records with their permission tree). With `migrate`, the schema is created at start-up
    (tests, demos); otherwise a server refuses an unmigrated database."""
    settings = settings or Settings.load()
    backends = backends_mod.open_backends(settings)
    dispatcher = build_dispatcher(settings, backends, resources, tree)

    def early(request: Request, response: WebResponse) -> Response:
        """A response decided before the dispatcher: still gets security/CORS headers."""
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.scope["headers"]
        }
        dispatcher._finish(WebRequest(request.method, "", [], headers), None, response)
        return _to_response(response)

    async def endpoint(request: Request) -> Response:
        scope = request.scope
        try:
            path = unquote_to_bytes(scope.get("raw_path") or scope["path"].encode()).decode()
        except UnicodeDecodeError:
            # Kinto's plain http_error: the message alone, no details (protocol/08 §1).
            return early(
                request,
                plain_error(400, werr.INVALID_PARAMETERS, "Invalid URL path.", error="Bad Request"),
            )
        path = path.split("?", 1)[0]
        try:
            query = parse_qsl(
                scope["query_string"].decode("latin-1"),
                keep_blank_values=True,
                encoding="utf-8",
                errors="strict",
            )
        except UnicodeDecodeError:
            return early(
                request,
                plain_error(
                    400, werr.INVALID_PARAMETERS, QUERY_ENCODING_ERROR, error="Bad Request"
                ),
            )
        body = await _read_body(request, settings.max_request_body_bytes)
        if body is None:
            limit = settings.max_request_body_bytes
            response = plain_error(
                413, werr.REQUEST_TOO_LARGE, f"Request body is larger than {limit} bytes"
            )
            return early(request, response)
        host = request.headers.get("host") or "localhost"
        web_request = WebRequest(
            method=request.method,
            path=path,
            query=query,
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
            body=body,
            base_url=f"{scope.get('scheme', 'http')}://{host}",
            client=request.client.host if request.client else None,
        )
        return _to_response(await dispatcher.handle(web_request))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        if migrate:
            for db in backends.databases:
                await db.migrate()
        await backends_mod.check(backends)
        try:
            yield {}
        finally:
            await backends.aclose()

    app = Starlette(
        routes=[Route("/{path:path}", endpoint, methods=ALL_METHODS)], lifespan=lifespan
    )
    app.state.settings = settings
    app.state.dispatcher = dispatcher
    app.state.backends = backends
    return app


def create_app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` and multi-worker serving: settings from the environment."""
    return create_app(Settings.load())
