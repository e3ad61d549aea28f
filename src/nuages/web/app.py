"""The ASGI application: plain ASGI for the server plumbing, the dispatcher for the protocol."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

from nuages import backends as backends_mod
from nuages.api import PERMISSION_TREE, RESOURCES
from nuages.core.authorization import PermissionTree
from nuages.core.resource import ResourceSpec
from nuages.core.service import Service, ServiceConfig
from nuages.plugins import install_plugins
from nuages.settings import Settings
from nuages.web import errors as werr
from nuages.web.accesslog import AccessLog
from nuages.web.dispatch import Dispatcher
from nuages.web.messages import WebRequest, WebResponse, plain_error
from nuages.web.utility import Utility

log = logging.getLogger("nuages")

# The ASGI interface (asgiref's names).
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

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


class _Disconnected(Exception):
    """The client went away before its request body arrived."""


async def _read_body(receive: Receive, limit: int, declared: str | None) -> bytes | None:
    """The body, or None when it exceeds `limit` bytes (read no further than that)."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _stream_body(receive: Receive) -> AsyncIterator[bytes]:
    """The body as it arrives, for handlers that bound it themselves (uploads)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected()
        if chunk := message.get("body", b""):
            yield chunk
        if not message.get("more_body", False):
            return


# Header names as sent (lower-case bytes), by the name the code writes: a few dozen.
_HEADER_NAMES: dict[str, bytes] = {}


def _header_name(name: str) -> bytes:
    encoded = name.lower().encode("latin-1")
    if len(_HEADER_NAMES) < 256:
        _HEADER_NAMES[name] = encoded
    return encoded


async def _send_response(send: Send, response: WebResponse) -> None:
    body = response.body_bytes()
    names = _HEADER_NAMES
    headers = [
        (names[k] if k in names else _header_name(k), v.encode("latin-1"))
        for k, v in response.headers.items()
    ]
    status = response.status
    no_content = status in (204, 304)
    if (body or not no_content) and "Content-Type" not in response.headers:
        headers.append((b"content-type", b"application/json"))  # HEAD too, as its GET
    if status >= 200 and not no_content:
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _headers(scope: Scope) -> dict[str, str]:
    # ASGI servers give lower-case names (the spec asks them to); be safe with others.
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


class App:
    """The ASGI application: each HTTP request becomes a :class:`WebRequest` for the
    dispatcher; the lifespan checks (or, with `migrate`, creates) the schemas at start-up
    and closes the backends at shutdown. No framework in between: the dispatcher does the
    routing, and this is the whole server plumbing."""

    def __init__(
        self,
        settings: Settings,
        dispatcher: Dispatcher,
        backends: backends_mod.Backends,
        *,
        migrate: bool,
    ) -> None:
        self.settings = settings
        self.dispatcher = dispatcher
        self.backends = backends
        self.migrate = migrate
        self.state = SimpleNamespace(settings=settings, dispatcher=dispatcher, backends=backends)
        self.access_log = AccessLog() if settings.log_level in ("debug", "info") else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1000})

    # -- lifespan ------------------------------------------------------------------------
    @asynccontextmanager
    async def lifespan_context(self) -> AsyncIterator[None]:
        """Start-up and shutdown around a block: what the ASGI server does around serving."""
        if self.migrate:
            for db in self.backends.databases:
                await db.migrate()
        try:
            await backends_mod.check(self.backends)
            yield
        finally:
            await self.backends.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        context = self.lifespan_context()
        try:
            await context.__aenter__()
        except Exception as exc:
            log.error("start-up failed: %s", exc)
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        try:
            await context.__aexit__(None, None, None)
        except Exception as exc:
            await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.shutdown.complete"})

    # -- HTTP ----------------------------------------------------------------------------
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        method = scope["method"]
        try:
            response = await self._respond(scope, receive)
        except _Disconnected:
            return
        except Exception:  # our bug: answer like the dispatcher does
            log.exception("unhandled error on %s %s", method, scope.get("path"))
            response = self._early(scope, plain_error(500, werr.UNDEFINED, werr.MESSAGES[500]))
        await _send_response(send, response)
        if self.access_log is not None:
            client = scope.get("client")
            self.access_log.record(
                method, scope["path"], response.status, started, client[0] if client else None
            )
        for observe in self.dispatcher.response_observers:
            observe(method, response.endpoint, response.status, started)

    def _early(self, scope: Scope, response: WebResponse) -> WebResponse:
        """A response decided before the dispatcher: still gets security/CORS headers."""
        request = WebRequest(scope["method"], "", [], _headers(scope))
        self.dispatcher._finish(request, None, response)
        return response

    async def _respond(self, scope: Scope, receive: Receive) -> WebResponse:
        settings = self.settings
        raw_path = scope.get("raw_path") or scope["path"].encode()
        try:
            path = unquote_to_bytes(raw_path).decode() if b"%" in raw_path else raw_path.decode()
        except UnicodeDecodeError:
            # Kinto's plain http_error: the message alone, no details (protocol/08 §1).
            error = plain_error(
                400, werr.INVALID_PARAMETERS, "Invalid URL path.", error="Bad Request"
            )
            return self._early(scope, error)
        path = path.split("?", 1)[0]
        query_string = scope["query_string"]
        try:
            query = (
                parse_qsl(
                    query_string.decode("latin-1"),
                    keep_blank_values=True,
                    encoding="utf-8",
                    errors="strict",
                )
                if query_string
                else []
            )
        except UnicodeDecodeError:
            error = plain_error(
                400, werr.INVALID_PARAMETERS, QUERY_ENCODING_ERROR, error="Bad Request"
            )
            return self._early(scope, error)
        headers = _headers(scope)
        stream = None
        if "multipart/form-data" in headers.get("content-type", "").lower():
            # An upload (attachments): the handler reads and bounds the body as it arrives.
            route = self.dispatcher._route_of(path)
            if route is not None and getattr(route.handler, "streams_body", False):
                stream = _stream_body(receive)
        limit = settings.max_request_body_bytes
        if stream is not None:
            body: bytes | None = b""
        elif (
            "content-length" not in headers
            and "transfer-encoding" not in headers
            and scope.get("http_version") in ("1.0", "1.1")
        ):
            body = b""  # HTTP/1.x framing: such a request has no body (RFC 9112 §6.3)
        else:
            body = await _read_body(receive, limit, headers.get("content-length"))
        if body is None:
            error = plain_error(
                413, werr.REQUEST_TOO_LARGE, f"Request body is larger than {limit} bytes"
            )
            return self._early(scope, error)
        client = scope.get("client")
        web_request = WebRequest(
            method=scope["method"],
            path=path,
            query=query,
            headers=headers,
            body=body,
            base_url=f"{scope.get('scheme', 'http')}://{headers.get('host') or 'localhost'}",
            client=client[0] if client else None,
            stream=stream,
            arrived=scope.get("nuages.arrived"),
        )
        return await self.dispatcher.handle(web_request)


def create_app(
    settings: Settings | None = None,
    *,
    resources: Sequence[ResourceSpec] = RESOURCES,
    tree: PermissionTree = PERMISSION_TREE,
    migrate: bool = False,
) -> App:
    """An ASGI app serving `resources` (by default Kinto's buckets, collections, groups and
    records with their permission tree). With `migrate`, the schema is created at start-up
    (tests, demos); otherwise a server refuses an unmigrated database."""
    settings = settings or Settings.load()
    backends = backends_mod.open_backends(settings)
    dispatcher = build_dispatcher(settings, backends, resources, tree)

    return App(settings, dispatcher, backends, migrate=migrate)


def create_app_from_env() -> App:
    """Factory for ``uvicorn --factory`` and multi-worker serving: settings from the environment."""
    return create_app(Settings.load())
