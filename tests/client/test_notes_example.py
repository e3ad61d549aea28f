"""The guide's example, ``examples/notes/notes.py``, run as a command against a real server."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTES = ROOT / "examples" / "notes" / "notes.py"


def load_app():
    spec = importlib.util.spec_from_file_location("notes_example", NOTES)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def notes(server, tmp_path, monkeypatch):
    """``notes("laptop", "add", "x")`` runs the app (in this process) with the device's file."""
    app = load_app()
    monkeypatch.setenv("NOTES_SERVER", server.url)
    monkeypatch.setenv("NOTES_USER", "carol:pw")

    def run(device: str, *args: str, ok: bool = True) -> str:
        monkeypatch.setenv("NOTES_DB", str(tmp_path / f"{device}.db"))
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = app.main(args)
            except SystemExit as exc:
                status = 0 if exc.code is None else 1
                err.write(str(exc.code))
        assert (status == 0) == ok, err.getvalue()
        return out.getvalue() + err.getvalue()

    return run


def note_id(output: str) -> str:
    return output.split()[-1]


def test_notes_app_syncs_two_devices(notes):
    milk = note_id(notes("laptop", "add", "Buy milk", "--tag", "shopping"))
    notes("laptop", "add", "Call mom")
    assert "2 out" in notes("laptop", "sync")
    assert "2 in" in notes("phone", "sync")
    listing = notes("phone", "list")
    assert "Buy milk #shopping" in listing and "Call mom" in listing
    assert notes("phone", "list", "--tag", "shopping").count("\n") == 1

    notes("phone", "done", milk)
    notes("phone", "sync")
    notes("laptop", "sync")
    assert f"[x] {milk}" in notes("laptop", "list", "--done")

    # Conflicting edits, settled by hand.
    notes("laptop", "edit", milk, "Buy oat milk")
    notes("phone", "edit", milk, "Buy soy milk")
    notes("laptop", "sync")
    assert "1 to resolve" in notes("phone", "sync", "--strategy", "manual")
    assert "mine: Buy soy milk  |  theirs: Buy oat milk" in notes("phone", "conflicts")
    notes("phone", "resolve", milk, "--mine")
    notes("phone", "sync")
    notes("laptop", "sync")
    assert "Buy soy milk" in notes("laptop", "list")

    notes("laptop", "rm", milk)
    assert "(deleted)" not in notes("laptop", "list")
    notes("laptop", "sync")
    notes("phone", "sync")
    assert "milk" not in notes("phone", "list")
    assert "no note" in notes("phone", "done", "zzz", ok=False)


def test_notes_app_works_offline(notes, tmp_path):
    notes("laptop", "add", "Written on a plane")
    assert "(created)" in notes("laptop", "list")
    env_url = "http://127.0.0.1:9/v1"  # nothing listens there
    output = notes("laptop", "--server", env_url, "sync", ok=False)
    assert "notes:" in output
    assert "(created)" in notes("laptop", "list")
    notes("laptop", "sync")
    assert "(created)" not in notes("laptop", "list")


def test_notes_app_runs_as_a_script(server, tmp_path):
    env = {
        **os.environ,
        "NOTES_DB": str(tmp_path / "script.db"),
        "NOTES_SERVER": server.url,
        "NOTES_USER": "dave:pw",
        "PYTHONPATH": str(ROOT / "src"),
    }
    for args in (["add", "From the shell"], ["sync"], ["list"]):
        done = subprocess.run(
            [sys.executable, str(NOTES), *args], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    assert "From the shell" in done.stdout
