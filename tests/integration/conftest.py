"""A real ``nuages serve`` process on a socket, for tests that drive it with real clients."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

STARTUP_TIMEOUT_SECONDS = 20.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_environment(database: Path, settings: Mapping[str, str]) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("NUAGES_")}
    env.update(
        {
            "NUAGES_STORAGE_URL": f"sqlite:///{database}",
            "NUAGES_PLUGINS": "flush",
            "NUAGES_FLUSH_ENDPOINT_ENABLED": "true",
            "NUAGES_LOG_LEVEL": "warning",
        }
    )
    env.update({f"NUAGES_{name.upper()}": value for name, value in settings.items()})
    return env


def _wait_until_ready(process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"nuages serve exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/__lbheartbeat__", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(
        f"nuages serve did not answer within {STARTUP_TIMEOUT_SECONDS}s:\n{log_path.read_text()}"
    )


@pytest.fixture(scope="module")
def nuages_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``nuages migrate`` then ``nuages serve`` on a free port of 127.0.0.1; yields the /v1 URL.

    SQLite storage, flush endpoint on; a test module may add settings in a ``SERVER_SETTINGS``
    dict (``{"paginate_by": "5"}`` becomes ``NUAGES_PAGINATE_BY=5``).
    """
    workdir = tmp_path_factory.mktemp("nuages-server")
    settings = getattr(request.module, "SERVER_SETTINGS", {})
    env = _server_environment(workdir / "nuages.db", settings)
    migrated = subprocess.run(
        [sys.executable, "-m", "nuages", "migrate"],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr

    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1"
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "nuages", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_ready(process, url, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
