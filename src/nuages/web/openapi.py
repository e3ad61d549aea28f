"""An OpenAPI 3 document generated from the registered routes (``GET /v1/__api__``)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import nuages

if TYPE_CHECKING:
    from nuages.web.dispatch import Dispatcher, Route

_TAGS = {
    "bucket": "Buckets",
    "collection": "Collections",
    "group": "Groups",
    "record": "Records",
    "history": "History",
}
_ERROR = {"$ref": "#/components/schemas/Error"}


def _template(route: Route) -> str:
    pattern = route.pattern.pattern[1:-1]
    return re.sub(r"\(\?P<(\w+)>\[\^/\]\+\)", r"{\1}", pattern).replace("\\", "") or "/"


def _operation(route: Route, method: str, path: str) -> dict[str, Any]:
    spec = route.spec
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"\{(\w+)\}", path)
    ]
    op: dict[str, Any] = {
        "operationId": f"{method.lower()}_{route.name.replace('-', '_')}",
        # Resources of toolkit apps and plugins are tagged by their own name.
        "tags": [
            _TAGS.get(spec.name, spec.plural.capitalize())
            if spec
            else ("Batch" if route.name == "batch" else "Utilities")
        ],
        "parameters": params,
        "responses": {
            "200": {"description": "Success"},
            "400": {
                "description": "Invalid request",
                "content": {"application/json": {"schema": _ERROR}},
            },
            "401": {"description": "Authentication required"},
            "403": {"description": "Forbidden"},
        },
    }
    if method in ("POST", "PUT", "PATCH"):
        op["requestBody"] = {
            "content": {ct: {"schema": {"type": "object"}} for ct in route.content_types}
        }
    if spec is not None and route.plural and method == "GET":
        op["parameters"] += [
            {"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
            for n in ("_since", "_before", "_sort", "_limit", "_token", "_fields")
        ]
    return op


def build_openapi(dispatcher: Dispatcher) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route in dispatcher.routes:
        path = _template(route)
        paths[path] = {m.lower(): _operation(route, m, path) for m in route.methods}
    s = dispatcher.settings
    return {
        "openapi": "3.0.3",
        "info": {
            "title": s.project_name,
            "version": nuages.HTTP_API_VERSION,
            "description": "Kinto HTTP API 1.23, served by Nuages " + nuages.__version__,
        },
        "servers": [{"url": dispatcher.prefix}],
        "paths": paths,
        "components": {
            "securitySchemes": {"basicauth": {"type": "http", "scheme": "basic"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["code", "errno", "error"],
                    "properties": {
                        "code": {"type": "integer"},
                        "errno": {"type": "integer"},
                        "error": {"type": "string"},
                        "message": {"type": "string"},
                        "info": {"type": "string"},
                        "details": {},
                    },
                }
            },
        },
        "security": [{"basicauth": []}, {}],
    }
