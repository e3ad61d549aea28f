"""The ceiling: a bare Starlette app that answers every GET with a fixed small JSON object.

``bench/load.py --start starlette-baseline`` serves it with uvicorn (same loop and HTTP
parser choice as ``nuages serve``) and drives its ``get`` scenario against it, so a
record read of Nuages can be compared with the best a Python HTTP service does on the same
machine. By hand:

    .venv/bin/uvicorn bench.baseline_app:app --port 18490 --log-level warning --no-access-log
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

# About the size of a small record answer: {"data": {...}} with a few fields.
PAYLOAD = {
    "data": {
        "id": "baseline",
        "last_modified": 1700000000000,
        "title": "a fixed small JSON object",
        "n": 42,
        "done": False,
    }
}


async def fixed(request: Request) -> JSONResponse:
    return JSONResponse(PAYLOAD)


app = Starlette(
    routes=[
        Route("/", fixed, methods=["GET", "HEAD"]),
        Route("/{path:path}", fixed, methods=["GET", "HEAD"]),
    ]
)
