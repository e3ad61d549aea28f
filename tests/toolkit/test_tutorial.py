"""docs/tutorial.md runs as written: its Python blocks, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_the_tutorial_has_code() -> None:
    assert len(python_blocks(TUTORIAL.read_text(encoding="utf-8"))) >= 5


def test_the_tutorial_runs_as_written() -> None:
    namespace: dict[str, object] = {"__name__": "tutorial"}
    for number, block in enumerate(python_blocks(TUTORIAL.read_text(encoding="utf-8")), 1):
        try:
            exec(compile(block, f"{TUTORIAL.name} block {number}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"block {number} of docs/tutorial.md failed: {exc!r}")


def test_the_tutorial_matches_the_example() -> None:
    """The tutorial's final hook is the example's: the page does not drift from the code."""
    import inspect

    from examples import readinglist

    text = TUTORIAL.read_text(encoding="utf-8")
    assert inspect.getsource(readinglist.process).strip() in text
