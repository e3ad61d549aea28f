"""``nuages.client`` stands alone: no server import, a pinned public API, installable with httpx."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import nuages.client

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "src" / "nuages" / "client"
SERVER_SIDE = (
    "nuages.core",
    "nuages.web",
    "nuages.api",
    "nuages.storage",
    "nuages.permission",
    "nuages.cache",
    "nuages.sqlite",
    "nuages.settings",
    "nuages.backends",
    "nuages.cli",
    "starlette",
    "uvicorn",
    "orjson",
    "click",
)


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                names.add("." * node.level + (node.module or ""))
            elif node.module:
                names.add(node.module)
    return names


def test_client_imports_nothing_from_the_server_side():
    found = []
    for path in sorted(CLIENT.rglob("*.py")):
        for name in imports_of(path):
            server_side = any(name == s or name.startswith(s + ".") for s in SERVER_SIDE)
            outside = name.startswith("nuages") and not name.startswith("nuages.client")
            if name.startswith("..") or server_side or outside:
                found.append(f"{path.name} imports {name}")
    assert found == []


def test_importing_the_client_loads_no_server_module():
    code = (
        "import sys, nuages.client; "
        "print(sorted(m for m in sys.modules if m.startswith(('nuages.', 'starlette', 'uvicorn'))"
        " and not m.startswith('nuages.client')))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert output.stdout.strip() == "[]"


def test_httpx_is_a_runtime_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(dep.replace(" ", "").startswith("httpx>=") for dep in project["dependencies"])


def test_public_api_is_pinned():
    assert sorted(nuages.client.__all__) == sorted(
        [
            "AlertCallback",
            "AsyncClient",
            "AsyncLocalCollection",
            "AsyncLocalStore",
            "Auth",
            "BackendUnavailable",
            "BackoffError",
            "BadRequest",
            "BaseClient",
            "Change",
            "ChangeCallback",
            "Client",
            "ClientError",
            "Conflict",
            "EndOfLifeWarning",
            "FilterError",
            "FlushPolicy",
            "Forbidden",
            "Gone",
            "HTTPError",
            "ListParams",
            "LocalCollection",
            "LocalStore",
            "LocalStoreError",
            "MergeCallback",
            "MethodNotAllowed",
            "NotFound",
            "Op",
            "PatchType",
            "PreconditionFailed",
            "Record",
            "RecordExists",
            "RecordNotFound",
            "Request",
            "RequestBuilder",
            "Response",
            "RetryPolicy",
            "ServerError",
            "ServerFlushed",
            "Strategy",
            "SyncChanges",
            "SyncConflict",
            "SyncError",
            "SyncFailure",
            "SyncMode",
            "SyncResult",
            "SyncStatus",
            "TooManyRequests",
            "Transformer",
            "TransportError",
            "Unauthorized",
        ]
    )
    for name in nuages.client.__all__:
        assert getattr(nuages.client, name) is not None


def test_sender_methods_match():
    """``Client`` and ``AsyncClient`` expose the same operations, with docstrings."""
    from nuages.client import AsyncClient, Client

    def public(cls):
        return {n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))}

    assert public(Client) - {"close"} == public(AsyncClient) - {"aclose"}
    for name in public(Client):
        assert getattr(Client, name).__doc__, name
