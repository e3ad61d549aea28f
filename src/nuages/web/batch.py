"""``POST /v1/batch``: several requests in one transaction (protocol/07)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson

from nuages.core.errors import ValidationError
from nuages.web.messages import WebRequest, WebResponse

if TYPE_CHECKING:
    from nuages.web.dispatch import Dispatcher, Route

METHODS = ("GET", "HEAD", "DELETE", "TRACE", "POST", "PUT", "PATCH")
_REQUEST_KEYS = frozenset({"method", "path", "headers", "body"})


class _Abort(Exception):
    """A sub-request failed with a 5xx: roll the whole batch back."""

    def __init__(self, response: WebResponse) -> None:
        self.response = response


def merge_defaults(request: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Deep merge that never overwrites what the request already says."""
    merged = dict(request)
    for key, value in defaults.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(value, dict) and isinstance(merged[key], dict):
            merged[key] = merge_defaults(merged[key], value)
    return merged


def _invalid(description: str, name: str | None = "requests") -> ValidationError:
    return ValidationError(description, location="body", name=name)


def _check_request(req: Any, index: int, *, is_default: bool = False) -> None:
    where = "defaults" if is_default else f"requests.{index}"
    if not isinstance(req, dict):
        raise _invalid(f"{req!r} is not a mapping type", where)
    unknown = sorted(set(req) - _REQUEST_KEYS)
    if unknown:
        raise _invalid(f"{unknown[0]} is not allowed", f"{where}.{unknown[0]}")
    if "method" in req and req["method"] not in METHODS:
        raise _invalid(f'"{req["method"]}" is not one of {", ".join(METHODS)}', f"{where}.method")
    if "path" in req and (not isinstance(req["path"], str) or not req["path"].startswith("/")):
        raise _invalid(f"{req['path']!r} is not a valid path", f"{where}.path")
    headers = req.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise _invalid("headers must be an object of strings", f"{where}.headers")
    if "body" in req and not isinstance(req["body"], dict):
        raise _invalid(f"{req['body']!r} is not a mapping type", f"{where}.body")


def parse_batch(body: Any, max_requests: int | None) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        raise _invalid("Should be a JSON object", None)
    unknown = sorted(set(body) - {"requests", "defaults"})
    if unknown:
        raise _invalid(f"{unknown[0]} is not allowed", unknown[0])
    requests = body.get("requests")
    if not isinstance(requests, list):
        raise _invalid("Required" if requests is None else f"{requests!r} is not iterable")
    if max_requests and len(requests) > max_requests:
        raise _invalid(f"Number of requests is limited to {max_requests}")
    defaults = body.get("defaults", {})
    _check_request(defaults, 0, is_default=True)
    merged = []
    for i, request in enumerate(requests):
        _check_request(request, i)
        full = merge_defaults(request, defaults)
        full.setdefault("method", "GET")
        if "path" not in full:
            raise _invalid("Required", f"requests.{i}.path")
        if "/batch" in full["path"]:
            raise _invalid("Recursive call on /batch endpoint is forbidden.")
        merged.append(full)
    return merged


async def run_batch(dispatcher: Dispatcher, req: WebRequest, route: Route) -> WebResponse:
    body = dispatcher.parse_body(req, route)
    requests = parse_batch(body, dispatcher.settings.batch_max_requests)
    inherited = {k: v for k, v in req.headers.items() if k not in ("content-length",)}
    # Before the transaction: a password is verified (and cached) once, outside the write
    # lock, and a refused login (429) refuses the whole batch.
    await dispatcher.authenticate(req)
    try:
        async with dispatcher.transaction(None, write=True) as tx:
            responses = [await _one(dispatcher, req, inherited, sub, tx) for sub in requests]
    except _Abort as abort:
        return abort.response
    return WebResponse(200, {"responses": responses})


async def _one(
    dispatcher: Dispatcher,
    outer: WebRequest,
    inherited: dict[str, str],
    sub: dict[str, Any],
    tx: Any,
) -> dict[str, Any]:
    path = sub["path"]
    if not path.startswith(dispatcher.prefix + "/") and path != dispatcher.prefix:
        path = dispatcher.prefix + path
    parts = urlsplit(path)
    headers = {**inherited, **{k.lower(): v for k, v in sub.get("headers", {}).items()}}
    payload = b""
    if "body" in sub:
        payload = orjson.dumps(sub["body"])
        headers["content-type"] = "application/json; charset=utf-8"
    request = WebRequest(
        method=sub["method"],
        path=unquote(parts.path),
        query=parse_qsl(parts.query, keep_blank_values=True),
        headers=headers,
        body=payload,
        base_url=outer.base_url,
        client=outer.client,
    )
    response = await dispatcher.handle(request, tx)
    if response.status == 307 and "Location" in response.headers:
        target = urlsplit(response.headers["Location"])
        request.path = unquote(target.path)
        request.query = parse_qsl(target.query, keep_blank_values=True)
        response = await dispatcher.handle(request, tx)
    if response.status >= 500 or response.status == 409:
        raise _Abort(response)
    if request.method == "HEAD" or response.status == 304:
        sub_body: Any = ""
    elif response.data is not None:
        sub_body = response.data
    else:
        raw = response.body_bytes()
        try:
            sub_body = orjson.loads(raw) if raw else ""
        except orjson.JSONDecodeError:
            sub_body = raw.decode("utf-8", "replace")
    sub_headers = dict(response.headers)
    if response.status != 304:
        # "every header of the sub-response" (protocol/07 §3), as a standalone request gets it.
        sub_headers.setdefault("Content-Type", "application/json")
    return {
        "status": response.status,
        "path": request.path,
        "headers": sub_headers,
        "body": sub_body,
    }
