"""Routing and the per-request pipeline, free of any ASGI detail.

:meth:`Dispatcher.handle` turns a :class:`WebRequest` into a :class:`WebResponse`;
the ASGI app (:mod:`nuages.web.app`) and the batch endpoint both call it. Order of
checks as protocol/03 §11: end of service → version prefix → route → readonly →
CORS preflight → method → Accept / Content-Type → body → auth → service.
"""

from __future__ import annotations

import datetime
import fnmatch
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from nuages.core import errors
from nuages.core.authorization import load_caller, unloaded_caller
from nuages.core.contexts import Given
from nuages.core.preconditions import parse_etag
from nuages.core.querystring import parse_timestamp
from nuages.core.resource import OWNER, ResourceSpec
from nuages.core.service import PATCH_TYPES, Call, Outcome, Service, Tx
from nuages.web import errors as werr
from nuages.web.auth import Authenticator, BasicAuthPolicy
from nuages.web.messages import (
    WebRequest,
    WebResponse,
    error_response,
    etag_headers,
    http_date,
    plain_error,
    validation_response,
)

if TYPE_CHECKING:
    from nuages.settings import Settings

log = logging.getLogger("nuages.request")

DEFAULT_EXPOSED = ("Backoff", "Retry-After", "Alert", "Content-Length", "Content-Type")
READ_EXPOSED = ("Next-Page", "Last-Modified", "ETag", "Cache-Control", "Expires", "Pragma")
COUNT_EXPOSED = ("Total-Objects", "Total-Records")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; ",
    "X-Content-Type-Options": "nosniff",
}
_READ_EXPOSED_ALL = (*DEFAULT_EXPOSED, *READ_EXPOSED)
_COUNT_EXPOSED_ALL = (*_READ_EXPOSED_ALL, *COUNT_EXPOSED)
# The Access-Control-Expose-Headers value of each answer of Dispatcher._exposed.
_EXPOSED_VALUES: dict[tuple[str, ...], str] = {
    exposed: ", ".join(exposed)
    for exposed in (DEFAULT_EXPOSED, _READ_EXPOSED_ALL, _COUNT_EXPOSED_ALL)
}
_VERSION_PREFIX = re.compile(r"^/v(\d+)(/.*)?$")

Handler = Callable[[WebRequest, dict[str, str], "Tx | None"], Awaitable[WebResponse]]
# Adjusts (or refuses, by raising) the service call of a resource request: plugin rules.
CallHook = Callable[[WebRequest, Call], Awaitable[Call]]
# Runs before a route's handler and may rewrite the request (the default bucket alias).
RequestHook = Callable[
    [WebRequest, "Route", dict[str, str], "Tx | None"],
    Awaitable[tuple[WebRequest, dict[str, str]]],
]

# Of a response sent: the request's method, the name of the route that answered (None
# when none did), the status, and the time.perf_counter() when the request arrived.
ResponseObserver = Callable[[str, "str | None", int, float], None]


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    pattern: re.Pattern[str]
    methods: tuple[str, ...]
    handler: Handler
    depth: int  # segments of the template: a parameter matches one ([^/]+)
    spec: ResourceSpec | None = None
    plural: bool = False
    content_types: tuple[str, ...] = ("application/json",)
    service: Service | None = None  # None: the dispatcher's
    prepare: CallHook | None = None

    @property
    def is_resource(self) -> bool:
        return self.spec is not None


def _compile(template: str) -> re.Pattern[str]:
    """The pattern of a route template: ``{name}`` matches one segment, the rest itself."""
    parts = re.split(r"\{(\w+)\}", template)  # literal, name, literal, name, ..., literal
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts)
    )
    return re.compile(f"^{regex}$")


def json_depth_ok(value: Any, limit: int) -> bool:
    """Whether nesting stays within `limit` levels (iterative: deep input cannot blow the stack)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, dict | list))
    return True


def media_type(value: str | None) -> str | None:
    if value is None:
        return None
    return value.split(";", 1)[0].strip().lower() or None


# How many times a request runs when it keeps losing races with concurrent transactions.
_TRANSACTION_ATTEMPTS = 5


class Dispatcher:
    """Every route of the API, and the pipeline around them."""

    def __init__(self, settings: Settings, service: Service) -> None:
        self.settings = settings
        self.service = service
        self.routes: list[Route] = []
        self._by_depth: dict[int, list[int]] = {}  # match's index of routes
        self._indexed = 0  # how many routes the index holds
        self._spec_routes: dict[tuple[int, bool], Route] = {}  # _route_for's answers
        self.prefix = "/v1"
        # Capabilities announced in GET /v1/ by plugins (name -> description, url, ...), or
        # a function of the API's URL (``https://host/v1/``) returning them.
        self.capabilities: dict[str, dict[str, Any] | Callable[[str], dict[str, Any]]] = {}
        # Plugins install the configured policies (nuages.plugins.identity); basicauth before.
        basicauth = BasicAuthPolicy(settings.userid_hmac_secret)
        self.authenticator = Authenticator([basicauth] if "basicauth" in settings.auth else [])
        self.request_hooks: list[RequestHook] = []
        # Extra fields of the "user" block of GET /v1/, by user id (plugins).
        self.user_info: list[Callable[[str], dict[str, Any]]] = []
        # Told of every response sent to a client (plugins: metrics); not of a batch's
        # sub-requests.
        self.response_observers: list[ResponseObserver] = []

    # -- registration -----------------------------------------------------------
    def add(
        self, name: str, template: str, methods: tuple[str, ...], handler: Handler, **kwargs: Any
    ) -> None:
        if "GET" in methods and "HEAD" not in methods:
            methods = (*methods, "HEAD")
        depth = template.count("/")
        self.routes.append(Route(name, _compile(template), methods, handler, depth, **kwargs))

    def add_resource(
        self,
        spec: ResourceSpec,
        *,
        objects: bool = True,
        service: Service | None = None,
        prepare: CallHook | None = None,
    ) -> None:
        """Serve `spec` at its list URL and object URL, with the methods it enables
        (without `objects`, only at its list URL, as the history).

        `service` replaces the dispatcher's (a plugin with its own permission rules);
        `prepare` may adjust or refuse each call before the service runs it.
        """
        plural_template = spec.plural_template()
        self.add(
            f"{spec.name}-plural",
            plural_template,
            tuple(m for m in ("GET", "POST", "DELETE") if m in spec.methods),
            self._plural_handler(spec),
            spec=spec,
            plural=True,
            service=service,
            prepare=prepare,
        )
        if not objects:
            return
        self.add(
            f"{spec.name}-object",
            f"{plural_template}/{{id}}",
            tuple(m for m in ("GET", "PUT", "PATCH", "DELETE") if m in spec.methods),
            self._object_handler(spec),
            spec=spec,
            content_types=PATCH_TYPES,
            service=service,
            prepare=prepare,
        )

    def _route_of(self, path: str) -> Route | None:
        """The route a full ``/v1/...`` path addresses, if any."""
        m = _VERSION_PREFIX.match(path)
        if m is None or m.group(1) != "1" or m.group(2) is None:
            return None
        found = self.match(m.group(2))
        return found[0] if found is not None else None

    def match(self, path: str) -> tuple[Route, dict[str, str]] | None:
        routes = self.routes
        if self._indexed != len(routes):
            self._index_routes()
        # Only the routes with as many segments as the path can match it.
        for position in self._by_depth.get(path.count("/"), ()):
            route = routes[position]
            m = route.pattern.match(path)
            if m is not None:
                return route, m.groupdict()
        return None

    def _index_routes(self) -> None:
        """Positions in `routes` by number of segments (a parameter is one segment); a
        route replaced at its position (plugins do) keeps its template."""
        by_depth: dict[int, list[int]] = {}
        for position, route in enumerate(self.routes):
            by_depth.setdefault(route.depth, []).append(position)
        self._by_depth = by_depth
        self._indexed = len(self.routes)

    # -- pipeline ---------------------------------------------------------------
    def base_url(self, req: WebRequest) -> str:
        s = self.settings
        if s.http_scheme or s.http_host:
            scheme, _, host = req.base_url.partition("://")
            return f"{s.http_scheme or scheme}://{s.http_host or host}"
        return req.base_url

    async def handle(self, req: WebRequest, tx: Tx | None = None) -> WebResponse:
        route: Route | None = None
        try:
            route, response = await self._dispatch_retrying(req, tx)
        except errors.Error as exc:
            if tx is not None and isinstance(exc, errors.TransactionConflict):
                raise  # a batch's sub-request: the whole batch is rerun (_dispatch_retrying)
            # 304, 4xx raised by the handler: still the route's exposed headers (protocol/08 §4).
            route = self._route_of(req.path)
            response = error_response(exc)
        except Exception:  # anything else is our bug: 500, logged
            log.exception("unhandled error on %s %s", req.method, req.path)
            route = self._route_of(req.path)
            response = plain_error(
                500, werr.UNDEFINED, werr.MESSAGES[500], info=self.settings.error_info_link
            )
        self._finish(req, route, response)
        if route is not None:
            response.endpoint = route.name
        if req.method == "HEAD":
            response.data = response.raw = None
        return response

    async def _dispatch_retrying(
        self, req: WebRequest, tx: Tx | None
    ) -> tuple[Route | None, WebResponse]:
        """Run the request; rerun it when its transaction lost a race with another process
        (errors.TransactionConflict, raised by a backend before anything was committed).
        Inside a batch the conflict propagates, so that the whole batch is rerun."""
        if tx is not None:
            return await self._dispatch(req, tx)
        careful = False
        for number in range(1, _TRANSACTION_ATTEMPTS + 1):
            attempt = errors.Attempt(last=number == _TRANSACTION_ATTEMPTS, careful=careful)
            if number == 1 and req.arrived is not None:
                attempt.since = req.arrived  # the first sees what was before the request
            token = errors.CURRENT_ATTEMPT.set(attempt)
            try:
                answer = await self._dispatch(req, tx)
            except errors.TransactionConflict:
                if attempt.last:
                    raise
                careful = attempt.careful
                continue
            except errors.Error:
                if await _confirmed(attempt):
                    raise
                careful = attempt.careful
                continue
            finally:
                errors.CURRENT_ATTEMPT.reset(token)
            if await _confirmed(attempt):
                return answer
            careful = attempt.careful
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def _eos(self) -> tuple[str, bool] | None:
        eos = self.settings.eos
        if eos is None:
            return None
        hard = datetime.date.today() >= eos
        alert = {
            "code": "hard-eol" if hard else "soft-eol",
            "message": self.settings.eos_message,
            "url": self.settings.eos_url or self.settings.project_docs,
        }
        return orjson.dumps(alert).decode(), hard

    async def _dispatch(self, req: WebRequest, tx: Tx | None) -> tuple[Route | None, WebResponse]:
        s = self.settings
        if s.eos is not None and (eos := self._eos()) is not None and eos[1]:
            return None, plain_error(410, werr.SERVICE_DEPRECATED, werr.MESSAGES[410])
        m = _VERSION_PREFIX.match(req.path)
        if m is None:
            if "\r" in req.path or "\n" in req.path or not s.version_prefix_redirect_enabled:
                return None, plain_error(404, werr.MISSING_RESOURCE, werr.MESSAGES[404])
            if req.method == "OPTIONS":
                return None, WebResponse(200, None)
            return None, self._redirect(req, self.prefix + req.path)
        if m.group(1) != "1":
            return None, plain_error(
                404,
                werr.VERSION_NOT_AVAILABLE,
                "The requested API version is not available on this server.",
            )
        rest = m.group(2)
        if rest is None:
            return None, self._slash_redirect(req, self.prefix + "/")
        found = self.match(rest)
        if found is None:
            if rest.endswith("/") and rest != "/" and s.trailing_slash_redirect_enabled:
                return None, self._slash_redirect(req, self.prefix + rest.rstrip("/"))
            return None, plain_error(404, werr.MISSING_RESOURCE, werr.MESSAGES[404])
        route, params = found
        if s.readonly and req.method not in ("GET", "HEAD", "OPTIONS"):
            return route, plain_error(405, werr.METHOD_NOT_ALLOWED, werr.MESSAGES[405])
        origin = req.headers.get("origin")
        if req.method == "OPTIONS":
            return route, self._preflight(req, route)
        if origin is not None and not self._origin_allowed(origin):
            return route, validation_response(400, "header", "Origin", f"{origin} not allowed")
        if req.method not in route.methods:
            response = plain_error(405, werr.METHOD_NOT_ALLOWED, werr.MESSAGES[405])
            response.headers["Allow"] = ", ".join((*route.methods, "OPTIONS"))
            return route, response
        if route.spec is not None:  # a resource
            accept = req.headers.get("accept")
            if accept and not _accepts_json(accept):
                return route, validation_response(
                    406, "header", "Accept", "Accept header should be one of ['application/json']"
                )
        for hook in self.request_hooks:
            req, params = await hook(req, route, params, tx)
        return route, await route.handler(req, params, tx)

    def _redirect(self, req: WebRequest, path: str) -> WebResponse:
        # The path was percent-decoded: encode it again, a Location is a URL.
        location = self.base_url(req) + quote(path, safe="/:@!$&'()*+,;=~")
        if req.query:
            from urllib.parse import urlencode

            location += "?" + urlencode(req.query)
        return WebResponse(307, None, {"Location": location})

    def _slash_redirect(self, req: WebRequest, path: str) -> WebResponse:
        """A trailing-slash redirect (``/v1`` → ``/v1/`` too), cacheable (protocol/01 §2)."""
        response = self._redirect(req, path)
        ttl = self.settings.trailing_slash_redirect_ttl_seconds
        if ttl > 0:
            response.headers["Cache-Control"] = f"max-age={ttl}"
            response.headers["Expires"] = http_date(int((time.time() + ttl) * 1000))
        elif ttl == 0:
            response.headers["Cache-Control"] = "no-cache"
        return response

    def _origin_allowed(self, origin: str) -> bool:
        return any(fnmatch.fnmatchcase(origin, p) for p in self.settings.cors_origins)

    def _preflight(self, req: WebRequest, route: Route) -> WebResponse:
        origin = req.headers.get("origin")
        method = req.headers.get("access-control-request-method")
        if origin is None:
            return validation_response(400, "header", "Origin", "this header is mandatory")
        if not self._origin_allowed(origin):
            return validation_response(400, "header", "Origin", f"{origin} not allowed")
        if method is None or method not in route.methods:
            return validation_response(
                400, "header", "Access-Control-Request-Method", f"Method not allowed: {method}"
            )
        requested = [
            h.strip()
            for h in req.headers.get("access-control-request-headers", "").split(",")
            if h.strip()
        ]
        # Every header the route exposes, whatever the method (Total-* of HEAD included).
        exposed = [h for m in route.methods for h in self._exposed(route, m)]
        allowed_headers = list(dict.fromkeys([*exposed, *requested]))
        headers = {
            "Access-Control-Allow-Methods": ",".join((*route.methods, "OPTIONS")),
            "Access-Control-Allow-Headers": ",".join(allowed_headers),
        }
        if self.settings.cors_max_age_seconds is not None:
            headers["Access-Control-Max-Age"] = str(self.settings.cors_max_age_seconds)
        return WebResponse(200, None, headers, raw=b"null")

    def _exposed(self, route: Route | None, method: str) -> tuple[str, ...]:
        # Plural utility lists (GET /permissions) paginate like resources: expose Next-Page etc.
        if route is None or not (route.spec is not None or route.plural):
            return DEFAULT_EXPOSED
        if route.plural and method == "HEAD":
            return _COUNT_EXPOSED_ALL
        return _READ_EXPOSED_ALL

    def _finish(self, req: WebRequest, route: Route | None, response: WebResponse) -> None:
        """Headers every response gets: security, CORS, Backoff, Alert, Retry-After."""
        s = self.settings
        headers = response.headers
        for key, value in SECURITY_HEADERS.items():
            headers.setdefault(key, value)
        headers["Access-Control-Expose-Headers"] = _EXPOSED_VALUES[self._exposed(route, req.method)]
        origin = req.headers.get("origin")
        if origin is not None and self._origin_allowed(origin):
            headers["Access-Control-Allow-Origin"] = "*" if "*" in s.cors_origins else origin
        if s.backoff is not None and (
            s.backoff_percentage is None or random.random() * 100 < s.backoff_percentage
        ):
            headers["Backoff"] = str(s.backoff)
        if s.eos is not None and (eos := self._eos()) is not None:
            headers["Alert"] = eos[0]
        if response.status in (409, 503):
            headers["Retry-After"] = str(s.retry_after_seconds)
        if response.status == 401:
            headers["WWW-Authenticate"] = self.authenticator.challenges or 'Basic realm="Realm"'

    # -- authentication and bodies ----------------------------------------------------
    async def authenticate(self, req: WebRequest, tx: Tx | None = None) -> str | None:
        """The prefixed user id of the first policy that identifies the request, or None.

        `tx` is the transaction already open around the request (a batch), if any.
        """
        return await self.authenticator.authenticate(req, tx)

    def parse_body(self, req: WebRequest, route: Route) -> Any:
        """JSON body (None when empty) after Content-Type, size and depth checks."""
        if req.method not in ("POST", "PUT", "PATCH"):
            return None
        ctype = media_type(req.headers.get("content-type"))
        allowed = route.content_types if req.method == "PATCH" else ("application/json",)
        if ctype is not None and ctype not in allowed:
            # Only an *absent* Content-Type is accepted besides JSON, body or not (protocol/01 §3).
            names = ", ".join(f"'{c}'" for c in allowed)
            raise errors.ValidationError(
                f"Content-Type header should be one of [{names}]",
                location="header",
                name="Content-Type",
                status=415,
            )
        if not req.body.strip():
            return None
        if len(req.body) > self.settings.max_request_body_bytes:
            raise errors.ValidationError(
                f"Request body is larger than {self.settings.max_request_body_bytes} bytes",
                location="body",
                name=None,
                status=413,
                error="Request Entity Too Large",
            )
        try:
            body = orjson.loads(req.body)
        except orjson.JSONDecodeError as exc:
            # name "" as Kinto: the message is then the bare description (protocol/08 §1).
            raise errors.ValidationError(f"Invalid JSON: {exc}", location="body", name="") from None
        if not isinstance(body, dict | list):
            raise errors.ValidationError(
                "Should be a JSON object or an array", location="body", name=""
            )
        if not json_depth_ok(body, self.settings.max_json_depth):
            raise errors.ValidationError(
                f"JSON nested deeper than {self.settings.max_json_depth} levels",
                location="body",
                name=None,
            )
        return body

    def transaction(self, tx: Tx | None, *, write: bool) -> AbstractAsyncContextManager[Tx]:
        """`tx` when given (a batch's), else a new transaction of the service."""
        return Given(tx) if tx is not None else self.service.transaction(write=write)

    # -- resources ----------------------------------------------------------------
    def _call(
        self, req: WebRequest, route: Route, params: dict[str, str], body: Any, caller: Any
    ) -> Call:
        assert route.spec is not None
        object_id = params.pop("id", None)
        if route.spec.owned:
            # The owner's scope is the caller's own: there is no URL segment for it.
            if caller.user_id is None:
                raise errors.Unauthorized()
            params[OWNER.name] = caller.user_id
        headers = req.headers
        if_match = headers.get("if-match")
        if_none_match = headers.get("if-none-match")
        return Call(
            spec=route.spec,
            ids=params,
            caller=caller,
            object_id=object_id,
            body=body,
            params=req.query,
            if_match=None if if_match is None else parse_etag("If-Match", if_match),
            if_none_match=None
            if if_none_match is None
            else parse_etag("If-None-Match", if_none_match),
            content_type=media_type(headers.get("content-type")) or "application/json",
            response_behavior=headers.get("response-behavior", "full"),
        )

    def _resource_response(self, req: WebRequest, outcome: Outcome, head: bool) -> WebResponse:
        headers = etag_headers(outcome.timestamp)
        if req.method in ("GET", "HEAD"):
            headers.update(cache_headers(outcome.cache_expires))
        if outcome.total is not None:
            headers["Total-Objects"] = headers["Total-Records"] = str(outcome.total)
        if outcome.next_token is not None:
            from nuages.core.pagination import next_page_url

            token, limit = outcome.next_token
            url = self.base_url(req) + req.path
            headers["Next-Page"] = next_page_url(url, req.query, limit, token)
        if outcome.alert:
            headers["Alert"] = orjson.dumps(
                {
                    "code": "soft-eol",
                    "message": "_to is now deprecated, you should use _before instead",
                    "url": "https://kinto.readthedocs.io/en/2.4.0/api/resource.html"
                    "#list-of-available-url-parameters",
                }
            ).decode()
        return WebResponse(outcome.status, None if head else outcome.body, headers)

    def _plural_handler(self, spec: ResourceSpec) -> Handler:
        async def operate(service: Service, t: Tx, call: Call, req: WebRequest) -> Outcome:
            if req.method in ("GET", "HEAD"):
                return await service.get_list(t, call, head=req.method == "HEAD")
            if req.method == "POST":
                return await service.post_list(t, call)
            return await service.delete_list(t, call)

        async def read(service: Service, call: Call, req: WebRequest) -> Outcome | None:
            return await service.read_list(call) if req.method == "GET" else None

        return self._resource_handler(spec, True, operate, read_loaded=read)

    def _object_handler(self, spec: ResourceSpec) -> Handler:
        async def operate(service: Service, t: Tx, call: Call, req: WebRequest) -> Outcome:
            if req.method in ("GET", "HEAD"):
                return await service.get_object(t, call, fields=_fields(req.query))
            if req.method == "PUT":
                return await service.put_object(t, call)
            if req.method == "PATCH":
                return await service.patch_object(t, call)
            lm = _last_modified_param(req.query)
            return await service.delete_object(t, call, last_modified=lm)

        async def read(service: Service, call: Call, req: WebRequest) -> Outcome:
            return await service.read_object(call, fields=_fields(req.query))

        return self._resource_handler(spec, False, operate, read)

    def _resource_handler(
        self,
        spec: ResourceSpec,
        plural: bool,
        operate: Callable[[Service, Tx, Call, WebRequest], Awaitable[Outcome]],
        read: Callable[[Service, Call, WebRequest], Awaitable[Outcome]] | None = None,
        *,
        read_loaded: Callable[[Service, Call, WebRequest], Awaitable[Outcome | None]] | None = None,
    ) -> Handler:
        """The pipeline every resource request shares: body, auth, transaction, call.

        `read` serves a GET outside any transaction, when the service has a one-statement
        reader (:meth:`Service.read_object`) and no plugin rule adjusts the call.
        `read_loaded` likewise, with a reader of pages (:meth:`Service.read_list`); when it
        answers None, the transaction path does."""

        async def handler(req: WebRequest, params: dict[str, str], tx: Tx | None) -> WebResponse:
            route = self._route_for(spec, plural=plural)
            body = self.parse_body(req, route)
            user_id = await self.authenticator.authenticate(req, tx)
            service = route.service or self.service
            write = req.method not in ("GET", "HEAD")
            if not write and tx is None and service.reader is not None and route.prepare is None:
                # The caller's stored principals come with the read.
                if read is not None:
                    call = self._call(req, route, params, body, unloaded_caller(user_id))
                    outcome = await read(service, call, req)
                    return self._resource_response(req, outcome, req.method == "HEAD")
                if read_loaded is not None and service.reads_pages:
                    call = self._call(req, route, params, body, unloaded_caller(user_id))
                    read_outcome = await read_loaded(service, call, req)
                    if read_outcome is not None:
                        return self._resource_response(req, read_outcome, False)
            if write and tx is None and (attempt := errors.CURRENT_ATTEMPT.get()) is not None:
                # Writes in one scope may share a commit (PostgreSQL group commit).
                attempt.scope = req.path if plural else req.path.rpartition("/")[0]
            # With a reader, the caller's principals are read first, on their own: not while
            # the request holds a write lock.
            preloaded = None
            if tx is None and service.reader is not None:
                preloaded = await service.load_caller(user_id)
            async with self.transaction(tx, write=write) as t:
                caller = preloaded or await load_caller(t.permission, user_id)
                call = self._call(req, route, params, body, caller)
                if route.prepare is not None:
                    call = await route.prepare(req, call)
                outcome = await operate(service, t, call, req)
            return self._resource_response(req, outcome, req.method == "HEAD")

        return handler

    def _route_for(self, spec: ResourceSpec, *, plural: bool) -> Route:
        found = self._spec_routes.get((id(spec), plural))
        if found is not None:
            return found
        for route in self.routes:
            if route.spec is spec and route.plural == plural:
                self._spec_routes[(id(spec), plural)] = route
                return route
        raise LookupError(spec.name)  # pragma: no cover


async def _confirmed(attempt: errors.Attempt) -> bool:
    """Whether the caller's principals that `attempt` took from what a backend kept are
    still current, when nothing confirmed them yet (a request answered without a statement
    after them, such as a 403 decided by the settings): False, the answer rests on old
    principals, and the attempt is rerun (never the last: it reads them anew)."""
    check, attempt.unconfirmed = attempt.unconfirmed, None
    return check is None or await check()


def cache_headers(expires: int | None) -> dict[str, str]:
    """Cache headers of a read: a collection's ``cache_expires`` for anonymous reads (08 §3)."""
    if expires is None:
        return {"Cache-Control": "no-cache, no-store"}
    now_ms = int(time.time() * 1000)
    if expires > 0:
        return {
            "Cache-Control": f"max-age={expires}",
            "Expires": http_date(now_ms + expires * 1000),
        }
    return {
        "Cache-Control": "max-age=0, must-revalidate, no-cache, no-store",
        "Expires": http_date(now_ms),
        "Pragma": "no-cache",
    }


def _accepts_json(accept: str) -> bool:
    for part in accept.split(","):
        mt = media_type(part)
        if mt in ("*/*", "application/*", "application/json") or mt is None:
            return True
    return False


def _fields(query: list[tuple[str, str]]) -> tuple[str, ...] | None:
    for name, value in query:
        if name == "_fields":
            return tuple(f.strip() for f in value.split(",") if f.strip())
    return None


def _last_modified_param(query: list[tuple[str, str]]) -> int | None:
    for name, value in query:
        if name == "last_modified":
            ts = parse_timestamp("last_modified", value)
            return int(ts) if ts is not None else None
    return None
