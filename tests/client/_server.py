"""A real ``nuages serve`` process that tests can stop and restart, and a TCP proxy that can cut.

Both are plain sockets and processes: nothing of the server is mocked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

STARTUP_TIMEOUT_SECONDS = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NuagesProcess:
    """``nuages serve`` on 127.0.0.1 with a SQLite file in ``workdir``; ``url`` ends in /v1."""

    def __init__(self, workdir: Path, settings: Mapping[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = workdir / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("NUAGES_")}
        env.update(
            {
                "NUAGES_STORAGE_URL": f"sqlite:///{workdir / 'nuages.db'}",
                "NUAGES_PLUGINS": "flush",
                "NUAGES_FLUSH_ENDPOINT_ENABLED": "true",
                "NUAGES_LOG_LEVEL": "warning",
            }
        )
        env.update({f"NUAGES_{k.upper()}": v for k, v in (settings or {}).items()})
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.started = False
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

    def start(self) -> None:
        """Start the server; on its first start, a port taken meanwhile is traded for another."""
        attempts = 1 if self.started else 3
        for attempt in range(attempts):
            try:
                self._start_once()
                self.started = True
                return
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}/v1"

    def _start_once(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "nuages",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"nuages serve exited:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/__lbheartbeat__", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop(kill=True)
        raise RuntimeError(f"nuages serve did not start:\n{self.log_path.read_text()}")

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.send_signal(signal.SIGKILL)
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def flush(self) -> None:
        assert httpx.post(f"{self.url}/__flush__", timeout=5).status_code == 202


class CuttingProxy:
    """A TCP proxy to ``target_port``; ``cut_when(predicate)`` arms it to cut one exchange.

    When a request whose head satisfies the predicate goes through, the proxy forwards it,
    waits for the first bytes of the server's answer (so the server has done the work), then
    closes both connections without relaying the answer: the client sees a cut connection
    although the server committed. Each arming cuts once.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._predicate: Callable[[bytes], bool] | None = None
        self._lock = threading.Lock()
        self.cuts = 0
        self._closed = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_when(self, predicate: Callable[[bytes], bool]) -> None:
        with self._lock:
            self._predicate = predicate

    def _take_cut(self, head: bytes) -> bool:
        with self._lock:
            if self._predicate is not None and self._predicate(head):
                self._predicate = None
                self.cuts += 1
                return True
            return False

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            client.close()
            return
        self._sockets += [client, upstream]
        cutting = threading.Event()

        def close_both() -> None:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        def downstream() -> None:
            try:
                while True:
                    data = upstream.recv(65536)
                    if not data or cutting.is_set():
                        # With cutting set, these are the first bytes of the answer: the
                        # server has committed; the client never gets them.
                        break
                    client.sendall(data)
            except OSError:
                pass
            finally:
                close_both()

        threading.Thread(target=downstream, daemon=True).start()
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                if not cutting.is_set() and self._take_cut(data):
                    cutting.set()
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            close_both()
            client.close()
            upstream.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
