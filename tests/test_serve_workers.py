"""``nuages serve --workers N``: real processes, each listening on the address itself."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nuages.web import workers

pytestmark = pytest.mark.skipif(not workers.available(), reason="no SO_REUSEPORT here")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def serve(
    tmp_path: Path, port: int, *, migrate: bool = True, **extra_env: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "NUAGES_STORAGE_URL": f"sqlite:///{tmp_path / 'nuages.db'}",
        "NUAGES_LOG_LEVEL": "warning",
        **extra_env,
    }
    nuages = [sys.executable, "-m", "nuages"]
    if migrate:
        subprocess.run([*nuages, "migrate"], env=env, check=True, capture_output=True)
    return subprocess.Popen(
        [*nuages, "serve", "--workers", "2", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_until_serving(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/__heartbeat__").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("the server did not start")


def stopped(server: subprocess.Popen[bytes]) -> tuple[int, str]:
    """The exit code and output of `server`, which should stop by itself within a minute."""
    try:
        code = server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.stdout is not None
    return code, server.stdout.read().decode()


def serving_workers(server: subprocess.Popen[bytes], port: int) -> list[int]:
    """The two worker processes of `server`, once both listen on `port`."""
    wait_until_serving(port)
    # Two uvicorn processes (and multiprocessing's resource tracker). The first one
    # answering does not mean the second has started yet (a loaded machine): wait.
    deadline = time.monotonic() + 30
    while True:
        serving = [pid for pid in children(server.pid) if "spawn_main" in _cmdline(pid)]
        # Each has a listening socket of its own: the kernel spreads connections over
        # them, so many connections reach both.
        if len(serving) == 2 and all(_listens(pid, port) for pid in serving):
            return serving
        assert time.monotonic() < deadline, (serving, [_listens(p, port) for p in serving])
        time.sleep(0.2)


def test_workers_serve_on_one_port_and_stop_together(tmp_path: Path) -> None:
    port = free_port()
    server = serve(tmp_path, port)
    try:
        serving = serving_workers(server, port)
        with httpx.Client(auth=("alice", "secret")) as client:
            assert client.put(f"http://127.0.0.1:{port}/v1/buckets/b").status_code == 201
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
    assert all(not Path(f"/proc/{pid}").exists() for pid in serving)


def test_a_second_server_on_the_same_port_is_refused(tmp_path: Path) -> None:
    # SO_REUSEPORT would let it bind, and take half of the first one's connections.
    port = free_port()
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
    first = serve(tmp_path / "first", port)
    try:
        serving = serving_workers(first, port)
        code, output = stopped(serve(tmp_path / "second", port))
        assert code == workers.STARTUP_FAILURE, output
        assert f"Error: cannot listen on 127.0.0.1:{port}:" in output
        assert "in use" in output
        assert httpx.get(f"http://127.0.0.1:{port}/v1/__heartbeat__").status_code == 200
        assert all(_listens(pid, port) for pid in serving)
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=20) == 0


def test_the_workers_metrics_are_summed(tmp_path: Path) -> None:
    port = free_port()
    server = serve(tmp_path, port, NUAGES_PLUGINS="prometheus")
    try:
        serving = serving_workers(server, port)
        environ = Path(f"/proc/{serving[0]}/environ").read_bytes().split(b"\0")
        (found,) = [v for v in environ if v.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
        directory = Path(found.split(b"=", 1)[1].decode())
        url = f"http://127.0.0.1:{port}/v1"
        for _ in range(30):  # a connection each: the kernel spreads them over both workers
            assert httpx.get(f"{url}/").status_code == 200
        # Both workers answered some, each counting in files of its own...
        assert {int(p.stem.rsplit("_", 1)[1]) for p in directory.glob("counter_*.db")} == set(
            serving
        )
        # ...and whichever answers the scrape gives the sum.
        for _ in range(4):
            text = httpx.get(f"{url}/__metrics__").text
            counted = [
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "nuages_request_summary_total"
                and sample.labels == {"method": "get", "endpoint": "root", "status": "200"}
            ]
            assert counted == [30]
            assert "process_resident_memory_bytes" not in text  # one process's
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
    assert not directory.exists()


def test_a_worker_that_cannot_start_stops_the_server(tmp_path: Path) -> None:
    code, output = stopped(serve(tmp_path, free_port(), migrate=False))
    assert code == workers.STARTUP_FAILURE, output
    assert "run `nuages migrate`" in output


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _listens(pid: int, port: int) -> bool:
    """Whether process `pid` holds a socket listening on `port` (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port and inode in inodes:
                return True
    return False
