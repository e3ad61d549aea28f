"""Dependencies point one way: web/cli → api → core → backend protocols (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "nuages"

FORBIDDEN_IN_CORE = (
    "starlette",
    "uvicorn",
    "httpx",
    "sqlite3",
    "asyncpg",
    "redis",
    "click",
    "nuages.web",
    "nuages.api",
    "nuages.cli",
    "nuages.settings",
    "nuages.backends",
    "nuages.sqlite",
    "nuages.storage.memory",
    "nuages.storage.sqlite",
    "nuages.permission.memory",
    "nuages.permission.sqlite",
    "nuages.cache.memory",
    "nuages.cache.sqlite",
)
FORBIDDEN_IN_API = (
    "starlette",
    "uvicorn",
    "sqlite3",
    "nuages.web",
    "nuages.cli",
    "nuages.backends",
    "nuages.sqlite",
)


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((SRC / package).rglob("*.py")):
        for name in imports_of(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(SRC)} imports {name}")
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("core", FORBIDDEN_IN_CORE),
        ("api", FORBIDDEN_IN_API),
    ],
)
def test_layers_only_depend_downwards(package: str, forbidden: tuple[str, ...]) -> None:
    assert _violations(package, forbidden) == []


def test_backend_protocols_import_no_driver() -> None:
    for package in ("storage", "permission", "cache"):
        protocol = SRC / package / "protocol.py"
        assert not {"sqlite3", "asyncpg", "redis"} & imports_of(protocol)
