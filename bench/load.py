#!/usr/bin/env python3
"""Load benchmark for any server speaking the Kinto HTTP API (Nuages, Kinto), side by side.

It starts the servers itself (``--start``) or is pointed at them (``--url``), fills a
collection of ``--records`` records through ``/batch``, then runs each scenario for
``--duration`` seconds with ``--concurrency`` keep-alive connections (closed loop: every
connection sends its next request as soon as the previous one is answered). With several
targets the scenarios are interleaved: scenario 1 on every target, then scenario 2, and so
on, so that the ratios of one run are meaningful on a small, noisy machine.

    python bench/load.py --start nuages-sqlite --start kinto-memory --start starlette-baseline \\
        --duration 10 --json results.json
    python bench/load.py --url nuages=http://127.0.0.1:8888/v1 --url kinto=http://127.0.0.1:8890/v1
    python bench/load.py --start nuages-sqlite --scale 10000,100000,1000000
    python bench/load.py --report results.json   # print a saved report again

Every answer that is not 2xx or 304 is an error (so is a transport failure, a failed
sub-request of a batch, or a body that does not match what was asked), counted per scenario
with samples; a 409 under concurrent writes is an error like any other. The generator
measures its own CPU and says when it, not the server, was the bottleneck; before and after
the scenarios it measures how fast the machine is (bench/machine.py). The HTTP client
is a small HTTP/1.1 implementation on asyncio streams (standard library; uvloop is used
when installed). See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ipaddress
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any
from urllib.parse import urlsplit

import machine  # bench/machine.py, next to this script
from machine import percentile

try:  # optional: more exact process accounting
    import psutil  # type: ignore[import-untyped,unused-ignore]
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None

BENCH_DIR = Path(__file__).resolve().parent
SCENARIOS_ORDER = (
    "create",
    "get",
    "update",
    "patch",
    "delete",
    "list",
    "filtered",
    "since",
    "walk",
    "batch",
    "push",
    "mixed",
)
SCALE_OPS = ("list", "filtered", "since", "get", "head")
START_KINDS = (
    "nuages-sqlite",
    "nuages-postgresql",
    "kinto-memory",
    "kinto-postgresql",
    "starlette-baseline",
)
BUCKET = "bench-load"
BIG, SCRATCH, SCALE = "big", "scratch", "scale"
GROUPS = tuple(f"g{i}" for i in range(10))
TEXT = "The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs. " * 2
# Fixed, so that the user id of --user stays the same across runs on a kept PostgreSQL
# database (it owns the bucket). These servers are throwaway benchmark servers on loopback.
HMAC_SECRET = "loadbench-fixed-hmac-key"
GENERATOR_BOUND = 0.9  # share of one core above which the generator limits the figures


def record_body(i: int) -> dict[str, Any]:
    """The same ~350-byte record for every server, from its number."""
    return {
        "n": i,
        "group": GROUPS[i % 10],
        "rank": (i * 7919) % 100_003,
        "title": f"record {i}",
        "done": i % 3 == 0,
        "tags": ["load", GROUPS[(i * 3) % 10]],
        "text": TEXT,
    }


def big_id(i: int) -> str:
    return f"r{i:07d}"


def to_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# -- HTTP/1.1 client -------------------------------------------------------------------------


class HTTPError(Exception):
    """A response this client cannot read (the connection is then closed)."""


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def etag(self) -> int | None:
        value = self.headers.get("etag", "").strip('W/"')
        return int(value) if value.isdigit() else None


class Connection:
    """One keep-alive connection; reopened transparently when the server closed it."""

    def __init__(self, host: str, port: int, authorization: str | None) -> None:
        self.host = host
        self.port = port
        fixed = f"Host: {host}:{port}\r\n"
        if authorization:
            fixed += f"Authorization: {authorization}\r\n"
        self.fixed = fixed
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = 0  # requests answered on the current socket
        self.reconnects = 0

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, limit=1 << 24
        )
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.used = 0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: str = "",
    ) -> Response:
        """Send one request; ``headers`` is a preformatted block of ``Name: value\\r\\n`` lines."""
        head = f"{method} {target} HTTP/1.1\r\n{self.fixed}{headers}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        payload = (head + "\r\n").encode("latin-1")
        if body is not None:
            payload += body
        for attempt in (0, 1):
            if self.writer is None:
                await self.open()
            reused = self.used > 0
            assert self.writer is not None
            self.writer.write(payload)
            try:
                return await self._read(method == "HEAD")
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                self.close()
                # A keep-alive socket the server closed while idle: nothing was processed.
                partial = isinstance(exc, asyncio.IncompleteReadError) and exc.partial
                if attempt == 0 and reused and not partial:
                    self.reconnects += 1
                    continue
                raise
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")

    async def _read(self, head_only: bool) -> Response:
        reader = self.reader
        assert reader is not None
        while True:
            raw = await reader.readuntil(b"\r\n\r\n")
            lines = raw[:-4].decode("latin-1").split("\r\n")
            try:
                status = int(lines[0].split(" ", 2)[1])
            except (IndexError, ValueError) as exc:
                raise HTTPError(f"bad status line {lines[0]!r}") from exc
            if status >= 200 or status == 101:
                break  # skip interim 1xx answers
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if head_only or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass  # trailers
                    break
                parts.append(await reader.readexactly(size + 2))
            body = b"".join(p[:-2] for p in parts)
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:
            body = await reader.read()
            self.close()
        self.used += 1
        if "close" in headers.get("connection", "").lower():
            self.close()
        return Response(status, headers, body)


# -- process accounting ----------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants."""
    if psutil is not None:
        try:
            proc = psutil.Process(root)
            return [root] + [p.pid for p in proc.children(recursive=True)]
        except psutil.Error:
            return []
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children[ppid].append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if Path(f"/proc/{pid}").exists():
            tree.append(pid)
            todo.extend(children.get(pid, ()))
    return tree


def process_usage(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, RSS bytes) of one process, None when it is gone."""
    if psutil is not None:
        try:
            proc = psutil.Process(pid)
            times = proc.cpu_times()
            return times.user + times.system, proc.memory_info().rss
        except psutil.Error:
            return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        statm = Path(f"/proc/{pid}/statm").read_text().split()
    except OSError:
        return None
    return (int(stat[11]) + int(stat[12])) / CLOCK_TICKS, int(statm[1]) * PAGE_SIZE


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Watch:
    """Samples the RSS of the server processes during a run, and their CPU over the window."""

    def __init__(self, roots: Sequence[int]) -> None:
        self.roots = list(roots)
        self.pids: list[int] = []
        self.rss_max = 0
        self.rss_max_process = 0
        self.cpu_start: dict[int, float] = {}
        self.task: asyncio.Task[None] | None = None

    def _refresh(self) -> None:
        self.pids = [pid for root in self.roots for pid in process_tree(root)]

    def sample(self) -> dict[int, float]:
        total = 0
        cpu: dict[int, float] = {}
        for pid in self.pids:
            usage = process_usage(pid)
            if usage is None:
                continue
            cpu[pid] = usage[0]
            total += usage[1]
            self.rss_max_process = max(self.rss_max_process, usage[1])
        self.rss_max = max(self.rss_max, total)
        return cpu

    def start(self) -> None:
        if not self.roots:
            return
        self._refresh()
        self.cpu_start = self.sample()

        async def loop() -> None:
            n = 0
            while True:
                await asyncio.sleep(0.5)
                n += 1
                if n % 4 == 0:
                    self._refresh()
                self.sample()

        self.task = asyncio.ensure_future(loop())

    def stop(self, seconds: float) -> dict[str, Any]:
        if self.task is None:
            return {}
        self.task.cancel()
        end = self.sample()
        used = sum(end[pid] - self.cpu_start.get(pid, 0.0) for pid in end)
        return {
            "processes": len(self.pids),
            "rss_max_mb": round(self.rss_max / 2**20, 1),
            "rss_max_process_mb": round(self.rss_max_process / 2**20, 1),
            "cpu_cores": round(used / seconds, 2) if seconds > 0 else None,
        }


# -- servers started by the benchmark --------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Server:
    """A server process (and its workers) in its own session, stopped at the end."""

    def __init__(self, name: str, kind: str, workers: int, threads: int, port: int) -> None:
        self.name = name
        self.kind = kind
        self.workers = workers
        self.threads = threads
        self.port = port
        self.workdir = Path(tempfile.mkdtemp(prefix=f"loadbench-{kind}-"))
        self.log_path = self.workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        prefix = "" if kind == "starlette-baseline" else "/v1"
        self.url = f"http://127.0.0.1:{port}{prefix}"

    def run_once(self, argv: Sequence[str], env: dict[str, str]) -> None:
        done = subprocess.run(
            list(argv), env=env, cwd=self.workdir, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            raise SystemExit(f"{self.name}: {' '.join(argv)} failed:\n{done.stdout}{done.stderr}")

    def start(self, argv: Sequence[str], env: dict[str, str]) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                list(argv),
                env=env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        probe = "/" if self.kind == "starlette-baseline" else "/v1/"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(
                        f"GET {probe} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
                    )
                    if sock.recv(12).startswith(b"HTTP/1.1 200"):
                        # every worker of a multi-process server is up once none is left booting
                        time.sleep(0.5 + 0.3 * self.workers)
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise SystemExit(f"{self.name} did not start:\n{self.log_path.read_text()[-3000:]}")

    def stop(self, keep_log_in: str | None = None) -> None:
        if keep_log_in and self.log_path.exists():
            Path(keep_log_in).mkdir(parents=True, exist_ok=True)
            shutil.copy(self.log_path, Path(keep_log_in) / f"{self.name}.log")
        if self.proc is None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("NUAGES_", "KINTO_"))}


def start_nuages(server: Server, storage_url: str, python: str) -> None:
    env = base_env()
    env.update(
        {
            "NUAGES_STORAGE_URL": storage_url,
            "NUAGES_AUTH": "basicauth",
            "NUAGES_BUCKET_CREATE_PRINCIPALS": "system.Authenticated",
            "NUAGES_USERID_HMAC_SECRET": HMAC_SECRET,
            "NUAGES_LOG_LEVEL": "warning",
        }
    )
    server.run_once([python, "-m", "nuages", "migrate"], env)
    server.start(
        [
            python,
            "-m",
            "nuages",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(server.port),
            "--workers",
            str(server.workers),
        ],
        env,
    )


KINTO_INI = """\
[app:main]
use = egg:kinto
kinto.storage_backend = kinto.core.storage.{backend}
kinto.storage_url = {url}
kinto.cache_backend = kinto.core.cache.{backend}
kinto.cache_url = {url}
kinto.permission_backend = kinto.core.permission.{backend}
kinto.permission_url = {url}
kinto.userid_hmac_secret = {secret}
multiauth.policies = basicauth
kinto.bucket_create_principals = system.Authenticated

[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = plain

[logger_root]
level = WARNING
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = plain

[formatter_plain]
format = %(asctime)s %(levelname)s %(name)s %(message)s
"""


def start_kinto(server: Server, venv: Path, postgresql_url: str | None) -> None:
    if not (venv / "bin" / "kinto").exists() or not (venv / "bin" / "gunicorn").exists():
        raise SystemExit(f"{server.name}: no kinto and gunicorn in {venv} (--kinto-venv)")
    backend = "postgresql" if postgresql_url else "memory"
    ini = server.workdir / "kinto.ini"
    ini.write_text(KINTO_INI.format(backend=backend, url=postgresql_url or "", secret=HMAC_SECRET))
    env = base_env()
    if postgresql_url:
        server.run_once([str(venv / "bin" / "kinto"), "migrate", "--ini", str(ini)], env)
    server.start(
        [
            str(venv / "bin" / "gunicorn"),
            "--paste",
            str(ini),
            "--bind",
            f"127.0.0.1:{server.port}",
            "--workers",
            str(server.workers),
            "--threads",
            str(server.threads),
            "--log-level",
            "warning",
        ],
        env,
    )


def start_baseline(server: Server, python: str) -> None:
    server.start(
        [
            python,
            "-m",
            "uvicorn",
            "baseline_app:app",
            "--app-dir",
            str(BENCH_DIR),
            "--host",
            "127.0.0.1",
            "--port",
            str(server.port),
            "--workers",
            str(server.workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        base_env(),
    )


# -- targets ---------------------------------------------------------------------------------


class Target:
    def __init__(self, name: str, url: str, user: str, baseline: bool = False) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise SystemExit(f"{name}: only http:// URLs are supported, got {url!r}")
        self.name = name
        self.url = url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.baseline = baseline
        self.authorization = (
            None if baseline else "Basic " + base64.b64encode(user.encode()).decode()
        )
        self.server: Server | None = None
        self.batch_max = 25
        self.info: dict[str, Any] = {}
        self.rates: dict[str, float] = {}

    def connection(self) -> Connection:
        return Connection(self.host, self.port, self.authorization)

    def collection(self, coll: str) -> str:
        return f"{self.prefix}/buckets/{BUCKET}/collections/{coll}"

    def records(self, coll: str, rid: str | None = None) -> str:
        path = f"{self.prefix}/buckets/{BUCKET}/collections/{coll}/records"
        return f"{path}/{rid}" if rid else path

    @staticmethod
    def page_path(next_page: str) -> str:
        parts = urlsplit(next_page)
        return f"{parts.path}?{parts.query}" if parts.query else parts.path

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "url": self.url, "baseline": self.baseline}
        if self.server is not None:
            out.update(
                started=self.server.kind, workers=self.server.workers, threads=self.server.threads
            )
        out.update(self.info)
        return out


class SetupError(Exception):
    pass


async def expect(
    conn: Connection,
    method: str,
    path: str,
    body: Any = None,
    ok: Iterable[int] = (200, 201),
    headers: str = "",
    tries: int = 4,
) -> Response:
    """A setup request that must succeed (retried a few times: setup is not measured)."""
    payload = None if body is None else to_json(body)
    last = ""
    for attempt in range(tries):
        try:
            r = await conn.request(method, path, payload, headers)
        except (OSError, asyncio.IncompleteReadError, HTTPError) as exc:
            last = repr(exc)
        else:
            if r.status in ok:
                return r
            last = f"{r.status} {r.body[:300]!r}"
        await asyncio.sleep(0.2 * (attempt + 1))
    raise SetupError(f"{method} {path}: {last}")


async def hello(target: Target) -> None:
    conn = target.connection()
    try:
        r = await expect(conn, "GET", (target.prefix or "") + "/", ok=(200,))
        if target.baseline:
            return
        info = r.json()
        settings = info.get("settings", {})
        target.batch_max = int(settings.get("batch_max_requests") or 25)
        target.info = {
            "project": f"{info.get('project_name', '?')} {info.get('project_version', '')}".strip(),
            "http_api_version": info.get("http_api_version"),
        }
        if "user" not in info:
            raise SetupError(f"{target.name}: basic auth not accepted (no 'user' in hello)")
        r = await conn.request("PUT", f"{target.prefix}/buckets/{BUCKET}", to_json({"data": {}}))
        if r.status == 403:
            raise SetupError(
                f"{target.name}: bucket {BUCKET!r} exists and belongs to another user"
                " (another --user, or another userid_hmac_secret): use a fresh database"
            )
        if r.status not in (200, 201):
            raise SetupError(f"{target.name}: PUT bucket: {r.status} {r.body[:300]!r}")
    finally:
        conn.close()


async def reset_collection(target: Target, coll: str) -> None:
    conn = target.connection()
    try:
        await expect(conn, "DELETE", target.collection(coll), ok=(200, 404))
        await expect(conn, "PUT", target.collection(coll), {"data": {}})
    finally:
        conn.close()


async def put_many(
    target: Target,
    coll: str,
    items: Sequence[tuple[str, dict[str, Any]]],
    concurrency: int,
    method: str = "PUT",
    label: str = "",
) -> dict[str, int]:
    """Write records through /batch, ``batch_max`` per request; returns id -> last_modified."""
    size = max(1, target.batch_max)
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    stamps: dict[str, int] = {}
    started = perf_counter()
    progress = {"done": 0, "shown": started}

    async def worker() -> None:
        conn = target.connection()
        try:
            while chunks:
                chunk = chunks.pop()
                requests = [
                    {
                        "method": method,
                        "path": target.records(coll, rid),
                        **({"body": {"data": data}} if method != "DELETE" else {}),
                    }
                    for rid, data in chunk
                ]
                for attempt in range(30):
                    r = await expect(conn, "POST", f"{target.prefix}/batch", {"requests": requests})
                    answers = r.json()["responses"]
                    good = [
                        a
                        for a in answers
                        if 200 <= a.get("status", 0) < 300
                        or (method == "DELETE" and a.get("status") == 404)
                    ]
                    if len(good) == len(requests):
                        for a in answers:
                            data = a.get("body", {}).get("data", {})
                            if "id" in data and "last_modified" in data:
                                stamps[data["id"]] = data["last_modified"]
                        break
                    # e.g. Kinto's spurious 409 on concurrent writes: the whole batch again
                    target.info["seed_retries"] = target.info.get("seed_retries", 0) + 1
                    await asyncio.sleep(random.uniform(0.05, 0.1 * (attempt + 1)))
                else:
                    statuses = sorted({a.get("status") for a in answers})
                    raise SetupError(f"{target.name}: seeding {coll} failed: statuses {statuses}")
                progress["done"] += len(chunk)
                now = perf_counter()
                if label and now - progress["shown"] > 10:
                    progress["shown"] = now
                    log(
                        f"  {target.name}: {label} {progress['done']}/{len(items)}"
                        f" ({progress['done'] / (now - started):.0f} records/s)"
                    )
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(chunks)) or 1)))
    return stamps


async def count_records(target: Target, coll: str) -> int | None:
    conn = target.connection()
    try:
        r = await conn.request("HEAD", target.records(coll))
        if r.status != 200:
            return None
        value = r.headers.get("total-objects") or r.headers.get("total-records")
        return int(value) if value is not None else None
    finally:
        conn.close()


async def record_exists(target: Target, coll: str, rid: str) -> bool:
    conn = target.connection()
    try:
        return (await conn.request("GET", target.records(coll, rid))).status == 200
    finally:
        conn.close()


async def ensure_records(target: Target, coll: str, size: int, args: argparse.Namespace) -> None:
    """Make ``coll`` hold records 0..size-1 (kept when it already does, grown when smaller)."""
    have = await count_records(target, coll) or 0
    if have == size and await record_exists(target, coll, big_id(size - 1)):
        return
    start = 0
    if 0 < have < size and await record_exists(target, coll, big_id(have - 1)):
        start = have  # records 0..have-1 are there: grow
    else:
        await reset_collection(target, coll)
    t0 = perf_counter()
    items = [(big_id(i), record_body(i)) for i in range(start, size)]
    log(f"  {target.name}: seeding {coll} with records {start}..{size - 1}")
    await put_many(target, coll, items, args.seed_concurrency, label=f"seeding {coll}")
    secs = perf_counter() - t0
    log(f"  {target.name}: {coll} seeded in {secs:.1f} s ({len(items) / secs:.0f} records/s)")
    target.info.setdefault("seed_records_per_s", {})[coll] = round(len(items) / secs, 1)


async def since_for_changes(target: Target, coll: str, changes: int) -> int:
    """A ``_since`` value that returns exactly the ``changes`` most recent changes."""
    conn = target.connection()
    try:
        stamps: list[int] = []
        path: str | None = (
            f"{target.records(coll)}?_since=0&_sort=-last_modified&_limit={changes}&_fields=id"
        )
        while path and len(stamps) < changes:
            r = await expect(conn, "GET", path, ok=(200,))
            stamps.extend(o["last_modified"] for o in r.json()["data"])
            nxt = r.headers.get("next-page")
            path = target.page_path(nxt) if nxt else None
    finally:
        conn.close()
    if len(stamps) < changes:
        raise SetupError(f"{target.name}: {coll} has fewer than {changes} changes")
    return int(stamps[changes - 1]) - 1


# -- one measured run ------------------------------------------------------------------------


Validator = Callable[[Response], str | None]


class Run:
    """Latencies (measured window only) and errors (whole run) of one scenario on one target."""

    MAX_SAMPLES = 8

    def __init__(self, warmup: float, duration: float) -> None:
        now = perf_counter()
        self.t_measure = now + warmup
        self.t_end = self.t_measure + duration
        self.t_stop: float | None = None
        self.stopping = False
        self.stop_reason: str | None = None
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, Counter[str]] = defaultdict(Counter)
        self.samples: list[str] = []
        self.extra: dict[str, Any] = {}

    def stop_early(self, reason: str) -> None:
        if not self.stopping:
            self.stopping = True
            self.stop_reason = reason
            self.t_stop = perf_counter()

    def error(self, op: str, kind: str, detail: str) -> None:
        self.errors[op][kind] += 1
        if len(self.samples) < self.MAX_SAMPLES:
            self.samples.append(f"{op}: {detail}"[:400])

    async def call(
        self,
        conn: Connection,
        op: str,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: str = "",
        check: Validator | None = None,
    ) -> Response | None:
        t0 = perf_counter()
        try:
            r = await conn.request(method, path, body, headers)
        except (OSError, asyncio.IncompleteReadError, HTTPError, asyncio.LimitOverrunError) as exc:
            self.error(op, "transport", f"{method} {path}: {exc!r}")
            await asyncio.sleep(0.05)
            return None
        t1 = perf_counter()
        status = r.status
        if not (200 <= status < 300 or status == 304):
            self.error(op, str(status), f"{method} {path} -> {status} {r.body[:200]!r}")
            return r
        if check is not None:
            try:
                problem = check(r)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                problem = f"unreadable body ({exc!r}): {r.body[:200]!r}"
            if problem:
                self.error(op, "invalid", f"{method} {path}: {problem}")
                return r
        if self.t_measure <= t0 and t1 <= (self.t_stop or self.t_end):
            self.latencies[op].append(t1 - t0)
        return r

    def window(self) -> float:
        return (self.t_stop or self.t_end) - self.t_measure

    def summary(self, primary: str | None) -> dict[str, Any]:
        window = max(self.window(), 1e-9)
        ops = {}
        for op, values in self.latencies.items():
            values.sort()
            ops[op] = op_summary(values, window, sum(self.errors.get(op, Counter()).values()))
        for op, errors in self.errors.items():
            ops.setdefault(op, op_summary([], window, sum(errors.values())))
        if primary is None:
            merged = sorted(v for vs in self.latencies.values() for v in vs)
        else:
            merged = self.latencies.get(primary, [])
        errors_by: Counter[str] = Counter()
        for counter in self.errors.values():
            errors_by.update(counter)
        out = op_summary(merged, window, sum(errors_by.values()))
        out.update(
            seconds=round(window, 3),
            errors_by_kind=dict(errors_by),
            error_samples=self.samples,
            ops=ops,
            extra=self.extra,
        )
        if self.stop_reason:
            out["stopped_early"] = self.stop_reason
        return out


def op_summary(ordered: Sequence[float], window: float, errors: int) -> dict[str, Any]:
    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 2)

    return {
        "requests": len(ordered),
        "req_per_s": round(len(ordered) / window, 1),
        "p50_ms": ms(percentile(ordered, 0.50)),
        "p99_ms": ms(percentile(ordered, 0.99)),
        "mean_ms": ms(sum(ordered) / len(ordered)) if ordered else None,
        "errors": errors,
    }


# -- scenarios -------------------------------------------------------------------------------
# A scenario is prepare(target, args) -> state, then worker(run, target, state, wid, conn, rng)
# on each of the --concurrency connections.

Prepare = Callable[[Target, argparse.Namespace], Awaitable[Any]]
Worker = Callable[["Run", Target, Any, int, Connection, random.Random], Awaitable[None]]


@dataclass
class Scenario:
    name: str
    description: str
    prepare: Prepare
    worker: Worker
    primary: str | None  # the op whose figures are the scenario's; None: every op
    baseline: bool = False  # also runs against the Starlette baseline
    cleanup: Callable[[Target, Any, argparse.Namespace], Awaitable[None]] | None = None


async def prep_nothing(target: Target, args: argparse.Namespace) -> Any:
    return None


async def prep_scratch(target: Target, args: argparse.Namespace) -> Any:
    await reset_collection(target, SCRATCH)
    return None


async def work_create(
    run: Run, t: Target, st: Any, wid: int, c: Connection, rng: random.Random
) -> None:
    path = t.records(SCRATCH)
    i = 10_000_000 * (wid + 1)

    def check(r: Response) -> str | None:
        data = r.json().get("data", {})
        return None if data.get("n") == i and "id" in data else f"unexpected body {r.body[:200]!r}"

    checks = 2
    while not run.stopping:
        i += 1
        await run.call(
            c,
            "create",
            "POST",
            path,
            to_json({"data": record_body(i)}),
            check=check if checks else None,
        )
        checks = max(0, checks - 1)


async def prep_get(target: Target, args: argparse.Namespace) -> Any:
    return {"size": args.records}


async def work_get(
    run: Run, t: Target, st: Any, wid: int, c: Connection, rng: random.Random
) -> None:
    if t.baseline:
        path = t.prefix + "/"
        while not run.stopping:
            await run.call(c, "get", "GET", path)
        return
    size = st["size"]
    checks = 2
    while not run.stopping:
        i = rng.randrange(size)

        def check(r: Response, i: int = i) -> str | None:
            return None if r.json()["data"].get("n") == i else f"record {i}: {r.body[:200]!r}"

        await run.call(c, "get", "GET", t.records(BIG, big_id(i)), check=check if checks else None)
        checks = max(0, checks - 1)


OWN_RECORDS = 16  # records each connection updates in turn (only its own: a 412 is a bug)


def prep_owned(kind: str) -> Prepare:
    async def prepare(target: Target, args: argparse.Namespace) -> Any:
        await reset_collection(target, SCRATCH)
        items = [
            (f"{kind}{w:03d}-{k:02d}", record_body(1000 * w + k))
            for w in range(args.concurrency)
            for k in range(OWN_RECORDS)
        ]
        stamps = await put_many(target, SCRATCH, items, args.seed_concurrency)
        return [
            {rid: stamps[rid] for rid, _ in items[w * OWN_RECORDS : (w + 1) * OWN_RECORDS]}
            for w in range(args.concurrency)
        ]

    return prepare


async def work_update(
    run: Run, t: Target, st: Any, wid: int, c: Connection, rng: random.Random
) -> None:
    own: dict[str, int] = st[wid]
    ids = list(own)
    k = 0
    while not run.stopping:
        rid = ids[k % len(ids)]
        k += 1
        body = to_json({"data": record_body(rng.randrange(1_000_000))})
        r = await run.call(
            c, "update", "PUT", t.records(SCRATCH, rid), body, f'If-Match: "{own[rid]}"\r\n'
        )
        if r is None:
            continue
        if r.status == 200:
            stamp = r.etag if r.etag is not None else r.json()["data"]["last_modified"]
            own[rid] = stamp
        else:  # refetch the current version (a separate op, not in the scenario's figures)
            g = await run.call(c, "refetch", "GET", t.records(SCRATCH, rid))
            if g is not None and g.status == 200:
                own[rid] = g.json()["data"]["last_modified"]


async def work_patch(
    run: Run, t: Target, st: Any, wid: int, c: Connection, rng: random.Random
) -> None:
    ids = list(st[wid])
    k = 0
    while not run.stopping:
        rid = ids[k % len(ids)]
        k += 1
        body = to_json({"data": {"rank": rng.randrange(100_003), "done": bool(k & 1)}})
        await run.call(c, "patch", "PATCH", t.records(SCRATCH, rid), body)


async def prep_delete(target: Target, args: argparse.Namespace) -> Any:
    """Records to delete, as many as this server can plausibly delete in the run: deletes
    may run several times faster than creates (one statement each, on PostgreSQL)."""
    await reset_collection(target, SCRATCH)
    rate = target.rates.get("create")
    if args.delete_pool:
        pool = args.delete_pool
    elif rate:
        pool = int(rate * (args.warmup + args.duration) * 3)
    else:
        pool = 20_000
    pool = max(pool, 50 * args.concurrency)
    items = [(f"d{k:07d}", record_body(k)) for k in range(pool)]
    t0 = perf_counter()
    await put_many(target, SCRATCH, items, args.seed_concurrency, label="delete pool")
    if perf_counter() - t0 > 10:
        log(f"  {target.name}: delete pool of {pool} records ready")
    ids = [rid for rid, _ in items]
    random.Random(7).shuffle(ids)
    per = len(ids) // args.concurrency
    return {"pools": [ids[w * per : (w + 1) * per] for w in range(args.concurrency)], "pool": pool}


async def work_delete(
    run: Run, t: Target, st: Any, wid: int, c: Connection, rng: random.Random
) -> None:
    mine: list[str] = st["pools"][wid]
    run.extra["pool"] = st["pool"]
    while not run.stopping:
        if not mine:
            run.stop_early("delete pool exhausted")  # keep the concurrency constant
            return
        await run.call(c, "delete", "DELETE", t.records(SCRATCH, mine.pop()))


def list_check(
    expected: int,
    predicate: Callable[[list[dict[str, Any]]], bool] | None = None,
    next_page: bool = False,
) -> Validator:
    def check(r: Response) -> str | None:
        data = r.json()["data"]
        if len(data) != expected:
            return f"expected {expected} records, got {len(data)}"
        if predicate is not None and not predicate(data):
            return "records do not match the filter and sort"
        if next_page and "next-page" not in r.headers:
            return "no Next-Page header"
        return None

    return check


async def prep_list(target: Target, args: argparse.Namespace) -> Any:
    return {"size": args.records, "page": args.page, "coll": BIG}


async def work_list(
    run: Run, t: Target, st: Any, wid: int, c: Connection, rng: random.Random
) -> None:
    path = f"{t.records(st['coll'])}?_limit={st['page']}"
    check = list_check(min(st["page"], st["size"]), next_page=st["size"] > st["page"])
    checks = 2
    while not run.stopping:
        await run.call(c, "list", "GET", path, check=check if checks else None)
        checks = max(0, checks - 1)


def filtered_ok(group: str) -> Callable[[list[dict[str, Any]]], bool]:
    def ok(data: list[dict[str, Any]]) -> bool:
        ranks = [d.get("rank") for d in data]
        return all(d.get("group") == group for d in data) and ranks == sorted(ranks, reverse=True)  # type: ignore[type-var]

    return ok


async def work_filtered(
    run: Run, t: Target, st: Any, wid: int, c: Connection, rng: random.Random
) -> None:
    base = t.records(st["coll"])
    expected = min(st["page"], st["size"] // 10)
    checks = 3
    while not run.stopping:
        group = GROUPS[rng.randrange(10)]
        check = list_check(expected, filtered_ok(group)) if checks else None
        checks = max(0, checks - 1)
        await run.call(
            c,
            "filtered",
            "GET",
            f"{base}?group={group}&_sort=-rank&_limit={st['page']}",
            check=check,
        )


async def prep_since(target: Target, args: argparse.Namespace) -> Any:
    since = await since_for_changes(target, BIG, args.sync_changes)
    return {"coll": BIG, "since": since, "changes": args.sync_changes}


async def work_since(
    run: Run, t: Target, st: Any, wid: int, c: Connection, rng: random.Random
) -> None:
    """An offline-first client pulling every change since the timestamp it knows."""
    first = f"{t.records(st['coll'])}?_since={st['since']}"
    checks = 2
    while not run.stopping:
        path: str | None = first
        got = 0
        while path and not run.stopping:
            r = await run.call(c, "since", "GET", path)
            if r is None or r.status != 200:
                break
            got += len(r.json()["data"]) if checks else 0
            nxt = r.headers.get("next-page")
            path = t.page_path(nxt) if nxt else None
        if checks and path is None and r is not None and r.status == 200:
            checks -= 1
            if got != st["changes"]:
                run.error("since", "invalid", f"expected {st['changes']} changes, got {got}")


async def prep_walk(target: Target, args: argparse.Namespace) -> Any:
    return {"coll": BIG, "page": args.page, "size": args.records}


async def work_walk(
    run: Run, t: Target, st: Any, wid: int, c: Connection, rng: random.Random
) -> None:
    """Follow Next-Page from the first page to the last; every page is a request."""
    first = f"{t.records(st['coll'])}?_limit={st['page']}"
    walks = run.extra.setdefault("walk_seconds", [])
    while not run.stopping:
        path: str | None = first
        t0 = perf_counter()
        seen = 0
        while path and not run.stopping:
            r = await run.call(c, "page", "GET", path)
            if r is None or r.status != 200:
                break
            seen += 1
            nxt = r.headers.get("next-page")
            path = t.page_path(nxt) if nxt else None
        if path is None and not run.stopping:
            expected = -(-st["size"] // st["page"])
            if seen < expected:
                run.error("page", "invalid", f"walk ended after {seen} pages, expected {expected}")
            elif t0 >= run.t_measure:
                walks.append(round(perf_counter() - t0, 4))


async def work_batch(
    run: Run, t: Target, st: Any, wid: int, c: Connection, rng: random.Random
) -> None:
    """``batch``: POSTs of new records. ``push``: PUTs of new records with
    ``If-None-Match: *``, as a sync client (kinto.js) pushes the records it created
    offline."""
    size = min(st["size"], t.batch_max)
    path = f"{t.prefix}/batch"
    push = st["push"]
    defaults: dict[str, Any] = {"method": "POST", "path": t.records(SCRATCH)}
    if push:
        defaults = {"method": "PUT", "headers": {"If-None-Match": "*"}}
    i = (60_000_000 if push else 50_000_000) + 1_000_000 * wid
    run.extra.setdefault("failed_subrequests", 0)
    run.extra["batch_size"] = size
    while not run.stopping:
        requests = []
        for _ in range(size):
            i += 1
            if push:
                path_i = f"{t.records(SCRATCH)}/push-{i:09d}"
                requests.append({"path": path_i, "body": {"data": record_body(i)}})
            else:
                requests.append({"body": {"data": record_body(i)}})

        def check(r: Response) -> str | None:
            answers = r.json().get("responses", [])
            bad = [a.get("status") for a in answers if not 200 <= a.get("status", 0) < 300]
            if len(answers) != size:
                return f"{len(answers)} answers for {size} sub-requests"
            if bad:
                run.extra["failed_subrequests"] += len(bad)
                return f"failed sub-requests: statuses {sorted(set(bad))}"
            return None

        await run.call(
            c,
            st["op"],
            "POST",
            path,
            to_json({"defaults": defaults, "requests": requests}),
            check=check,
        )


async def prep_batch(target: Target, args: argparse.Namespace) -> Any:
    await reset_collection(target, SCRATCH)
    return {"size": args.batch_size, "push": False, "op": "batch"}


async def prep_push(target: Target, args: argparse.Namespace) -> Any:
    await reset_collection(target, SCRATCH)
    return {"size": args.batch_size, "push": True, "op": "push"}


MIX = (  # per 100 operations
    ("read", 50),  # GET one record
    ("read_page", 20),  # GET a page of 50
    ("write_patch", 10),
    ("write_create", 5),
    ("write_delete", 5),  # one this connection created
    ("sync", 10),  # changes since the last collection timestamp this client saw
)


async def prep_mixed(target: Target, args: argparse.Namespace) -> Any:
    conn = target.connection()
    try:
        r = await expect(conn, "GET", f"{target.records(BIG)}?_limit=1", ok=(200,))
    finally:
        conn.close()
    table = [op for op, weight in MIX for _ in range(weight)]
    return {"size": args.records, "table": table, "since": r.etag or 0, "created": []}


async def work_mixed(
    run: Run, t: Target, st: Any, wid: int, c: Connection, rng: random.Random
) -> None:
    """70% reads, 20% writes, 10% sync, on the big collection (runs last: it changes it)."""
    size, table = st["size"], st["table"]
    since = st["since"]
    mine: list[str] = []
    seq = 60_000_000 + 1_000_000 * wid
    try:
        while not run.stopping:
            op = table[rng.randrange(len(table))]
            if op == "write_delete" and not mine:
                op = "write_create"
            if op == "read":
                await run.call(c, op, "GET", t.records(BIG, big_id(rng.randrange(size))))
            elif op == "read_page":
                await run.call(c, op, "GET", f"{t.records(BIG)}?_limit=50")
            elif op == "write_patch":
                body = to_json({"data": {"rank": rng.randrange(100_003)}})
                await run.call(c, op, "PATCH", t.records(BIG, big_id(rng.randrange(size))), body)
            elif op == "write_create":
                seq += 1
                r = await run.call(
                    c, op, "POST", t.records(BIG), to_json({"data": record_body(seq)})
                )
                if r is not None and r.status == 201:
                    mine.append(r.json()["data"]["id"])
            elif op == "write_delete":
                await run.call(c, op, "DELETE", t.records(BIG, mine.pop(rng.randrange(len(mine)))))
            else:
                path: str | None = f"{t.records(BIG)}?_since={since}"
                newest = None
                while path:
                    r = await run.call(c, op, "GET", path)
                    if r is None or r.status != 200:
                        break
                    newest = newest or r.etag
                    nxt = r.headers.get("next-page")
                    path = t.page_path(nxt) if nxt else None
                if path is None and newest is not None:
                    since = newest
    finally:
        st["created"].extend(mine)


async def clean_mixed(target: Target, st: Any, args: argparse.Namespace) -> None:
    """Delete the records the mixed workload created, so the big collection keeps its size."""
    if st and st["created"]:
        items: list[tuple[str, dict[str, Any]]] = [(rid, {}) for rid in st["created"]]
        await put_many(target, BIG, items, args.seed_concurrency, method="DELETE")


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("create", "POST one record", prep_scratch, work_create, "create"),
        Scenario("get", "GET one record by id", prep_get, work_get, "get", baseline=True),
        Scenario(
            "update", "PUT a whole record with If-Match", prep_owned("u"), work_update, "update"
        ),
        Scenario("patch", "PATCH one field of a record", prep_owned("p"), work_patch, "patch"),
        Scenario("delete", "DELETE one record", prep_delete, work_delete, "delete"),
        Scenario("list", "GET a page of 100 records", prep_list, work_list, "list"),
        Scenario(
            "filtered", "GET ?group=gN&_sort=-rank&_limit=100", prep_list, work_filtered, "filtered"
        ),
        Scenario("since", "GET ?_since=T (~100 changes)", prep_since, work_since, "since"),
        Scenario(
            "walk",
            "follow Next-Page over the whole collection (pages of 100)",
            prep_walk,
            work_walk,
            "page",
        ),
        Scenario("batch", "POST /batch of 25 creates", prep_batch, work_batch, "batch"),
        Scenario(
            "push",
            "POST /batch of 25 PUTs of new records with If-None-Match: * (a sync client)",
            prep_push,
            work_batch,
            "push",
        ),
        Scenario(
            "mixed",
            "70% reads, 20% writes, 10% _since syncs",
            prep_mixed,
            work_mixed,
            None,
            cleanup=clean_mixed,
        ),
    )
}


async def measure(
    target: Target,
    scenario: Scenario,
    state: Any,
    args: argparse.Namespace,
    concurrency: int,
    duration: float,
) -> dict[str, Any]:
    conns = [target.connection() for _ in range(concurrency)]
    for conn in conns:
        await conn.open()
    run = Run(args.warmup, duration)
    watch = Watch([target.server.proc.pid] if target.server and target.server.proc else [])
    rng = random.Random(1234)
    cpu0, machine0 = own_cpu(), machine_cpu()

    async def timer() -> None:
        await asyncio.sleep(max(0.0, run.t_measure - perf_counter()))
        nonlocal cpu0, machine0
        cpu0, machine0 = own_cpu(), machine_cpu()
        watch.start()
        await asyncio.sleep(max(0.0, run.t_end - perf_counter()))
        run.stop_early("")  # the normal end
        run.stop_reason = None

    workers = [
        asyncio.ensure_future(
            scenario.worker(run, target, state, w, conns[w], random.Random(rng.random()))
        )
        for w in range(concurrency)
    ]
    clock = asyncio.ensure_future(timer())
    await asyncio.wait(workers, timeout=run.t_end - perf_counter() + args.grace)
    stopped_at = run.t_stop or run.t_end
    cpu1, machine1 = own_cpu(), machine_cpu()
    if not clock.done():  # every worker ended early (e.g. delete pool exhausted)
        clock.cancel()
    window = max(1e-9, min(stopped_at, perf_counter()) - run.t_measure)
    for task in workers:
        if task.done():
            if task.exception() is not None:
                exc = task.exception()
                run.error(scenario.primary or "mixed", "generator", f"worker failed: {exc!r}")
        else:
            task.cancel()
            run.error(
                scenario.primary or "mixed",
                "timeout",
                f"a request was still unanswered {args.grace} s after the end",
            )
    for conn in conns:
        conn.close()
    await asyncio.sleep(0)
    server = watch.stop(window)
    busy, total = machine1[0] - machine0[0], machine1[1] - machine0[1]
    gen = (cpu1 - cpu0) / window
    result = run.summary(scenario.primary)
    result["generator"] = {"cpu": round(gen, 2), "bound": gen >= GENERATOR_BOUND}
    result["machine_cpu_busy"] = round(busy / total, 2) if total else None
    if server:
        result["server"] = server
    result["reconnects"] = sum(c.reconnects for c in conns)
    if "walk_seconds" in result["extra"]:
        walks = sorted(result["extra"].pop("walk_seconds"))
        result["extra"]["walks"] = len(walks)
        result["extra"]["walk_p50_s"] = percentile(walks, 0.5)
    return result


# -- scale mode ------------------------------------------------------------------------------


async def scale_state(target: Target, args: argparse.Namespace, size: int) -> dict[str, Any]:
    return {
        "coll": SCALE,
        "size": size,
        "page": args.page,
        "since": await since_for_changes(target, SCALE, args.sync_changes),
        "changes": args.sync_changes,
    }


async def work_scale_get(
    run: Run, t: Target, st: Any, wid: int, c: Connection, rng: random.Random
) -> None:
    while not run.stopping:
        await run.call(c, "get", "GET", t.records(SCALE, big_id(rng.randrange(st["size"]))))


async def work_head(
    run: Run, t: Target, st: Any, wid: int, c: Connection, rng: random.Random
) -> None:
    expected = str(st["size"])

    def check(r: Response) -> str | None:
        got = r.headers.get("total-objects") or r.headers.get("total-records")
        return None if got == expected else f"Total-Objects {got!r}, expected {expected}"

    while not run.stopping:
        await run.call(c, "head", "HEAD", t.records(SCALE), check=check)


SCALE_SCENARIOS = {
    "list": Scenario("list", "", prep_nothing, work_list, "list"),
    "filtered": Scenario("filtered", "", prep_nothing, work_filtered, "filtered"),
    "since": Scenario("since", "", prep_nothing, work_since, "since"),
    "get": Scenario("get", "", prep_nothing, work_scale_get, "get"),
    "head": Scenario("head", "", prep_nothing, work_head, "head"),
}


async def run_scale(targets: list[Target], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for size in args.scale:
        for target in targets:
            await ensure_records(target, SCALE, size, args)
        states = {t.name: await scale_state(t, args, size) for t in targets}
        for op in args.scale_ops:
            for target in targets:
                result = await measure(
                    target,
                    SCALE_SCENARIOS[op],
                    states[target.name],
                    args,
                    args.scale_concurrency,
                    args.scale_duration,
                )
                row = {"target": target.name, "size": size, "op": op, **result}
                rows.append(row)
                log(f"  {target.name} {size:>9} {op:<9} {fmt_row(result)}")
    return rows


# -- output ----------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_row(r: dict[str, Any]) -> str:
    return (
        f"{r['req_per_s']:>9.1f} req/s  p50 {fmt(r['p50_ms']):>7} ms  p99 {fmt(r['p99_ms']):>7} ms"
        f"  errors {r['errors']:>4}  gen cpu {r['generator']['cpu'] * 100:>3.0f}%"
    )


def print_results(
    results: list[dict[str, Any]], targets: list[dict[str, Any]], ref: str | None
) -> None:
    """The table of one run; ``targets`` as in the JSON report."""
    width = max(8, *(len(t["name"]) for t in targets))
    header = (
        f"{'scenario':<10} {'target':<{width}} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'errors':>6} {'gen cpu':>7} {'srv cpu':>7} {'rss MB':>7} {'machine':>7}"
    )
    if ref:
        header += f" {'x ' + ref:>12}"
    print(header)
    print("-" * len(header))
    by = {(r["scenario"], r["target"], r.get("round", 1)): r for r in results}
    baselines = {t["name"] for t in targets if t["baseline"]}
    for r in results:
        server = r.get("server", {})
        line = (
            f"{r['scenario']:<10} {r['target']:<{width}} {r['req_per_s']:>9.1f}"
            f" {fmt(r['p50_ms']):>8} {fmt(r['p99_ms']):>8} {r['errors']:>6}"
            f" {r['generator']['cpu'] * 100:>6.0f}% {fmt(server.get('cpu_cores'), 2):>7}"
            f" {fmt(server.get('rss_max_mb'), 0):>7}"
            f" {(r['machine_cpu_busy'] or 0) * 100:>6.0f}%"
        )
        other = by.get((r["scenario"], ref, r.get("round", 1))) if ref else None
        if other and other["req_per_s"] and r["target"] not in baselines:
            line += f" {r['req_per_s'] / other['req_per_s']:>11.1f}x"
        notes = []
        if r["generator"]["bound"]:
            notes.append("GENERATOR-BOUND: the load generator used a whole core")
        if r.get("stopped_early"):
            notes.append(r["stopped_early"])
        if r["extra"].get("walks") is not None:
            notes.append(f"{r['extra']['walks']} walks, p50 {fmt(r['extra']['walk_p50_s'], 3)} s")
        if r["extra"].get("failed_subrequests"):
            notes.append(f"{r['extra']['failed_subrequests']} failed sub-requests")
        if notes:
            line += "  (" + "; ".join(notes) + ")"
        print(line)
    errors = [r for r in results if r["errors"]]
    if errors:
        print("\nerrors:")
        for r in errors:
            print(f"  {r['scenario']} on {r['target']}: {r['errors_by_kind']}")
            for sample in r["error_samples"][:4]:
                print(f"      {sample}")
    mixed = [r for r in results if r["scenario"] == "mixed"]
    if mixed:
        print("\nmixed workload by operation (req/s, p50 ms):")
        for r in mixed:
            parts = [
                f"{op} {o['req_per_s']:.0f} ({fmt(o['p50_ms'])})"
                for op, o in sorted(r["ops"].items())
            ]
            print(f"  {r['target']}: " + ", ".join(parts))
    if baselines:
        print()
    for base in baselines:
        for r in results:
            b = by.get(("get", base, r.get("round", 1)))
            if r["scenario"] == "get" and r["target"] not in baselines and b and b["req_per_s"]:
                share = r["req_per_s"] / b["req_per_s"]
                print(f"get on {r['target']}: {share:.0%} of the {base} ceiling")
    bound = [r for r in results if r["generator"]["bound"]]
    print(
        f"\nload generator: at most {max(r['generator']['cpu'] for r in results):.0%} of one core"
        + (
            f"; it was the bottleneck in {len(bound)} runs (figures there are a lower bound)"
            if bound
            else "; never the bottleneck"
        )
    )


def print_scale(rows: list[dict[str, Any]]) -> None:
    print("\nscale: p50 ms (p99 ms) by collection size; ratio = p50 / p50 at the smallest size")
    sizes = sorted({r["size"] for r in rows})
    keyed = {(r["target"], r["op"], r["size"]): r for r in rows}
    for target in dict.fromkeys(r["target"] for r in rows):
        print(f"  {target}")
        for op in dict.fromkeys(r["op"] for r in rows):
            cells = []
            first = keyed.get((target, op, sizes[0]))
            for size in sizes:
                r = keyed.get((target, op, size))
                if r is None:
                    continue
                cell = f"{size}: {fmt(r['p50_ms'], 2)} ({fmt(r['p99_ms'], 2)})"
                if first and first["p50_ms"] and r["p50_ms"] and size != sizes[0]:
                    cell += f" x{r['p50_ms'] / first['p50_ms']:.2f}"
                if r["errors"]:
                    cell += f" [{r['errors']} errors]"
                cells.append(cell)
            print(f"    {op:<9} " + "   ".join(cells))


# -- main ------------------------------------------------------------------------------------


def parse_start(spec: str) -> tuple[str, str | None]:
    kind, _, size = spec.partition(":")
    if kind not in START_KINDS:
        raise SystemExit(f"--start: unknown kind {kind!r}; one of {', '.join(START_KINDS)}")
    return kind, size or None


def start_servers(args: argparse.Namespace) -> list[Target]:
    targets = []
    used_names: set[str] = set()
    for index, spec in enumerate(args.start):
        kind, size = parse_start(spec)
        if kind.startswith("kinto"):
            default = "1x4" if kind == "kinto-memory" else "3x4"
            workers_s, _, threads_s = (size or default).partition("x")
            workers, threads = int(workers_s), int(threads_s or 4)
        else:
            workers, threads = int(size or args.workers), 1
        port = args.port_base + index if args.port_base else free_port()
        if args.port_base and not port_is_free(port):
            raise SystemExit(f"port {port} is taken (--port-base)")
        name = kind if kind not in used_names else f"{kind}-{index}"
        used_names.add(name)
        server = Server(name, kind, workers, threads, port)
        log(
            f"starting {name} on port {port} ({workers} process(es)"
            + (f" x {threads} threads" if kind.startswith("kinto") else "")
            + ")"
        )
        try:
            if kind == "nuages-sqlite":
                start_nuages(
                    server, f"sqlite:///{server.workdir / 'nuages.db'}", args.nuages_python
                )
            elif kind == "nuages-postgresql":
                if not args.postgresql_url:
                    raise SystemExit("--start nuages-postgresql needs --postgresql-url")
                start_nuages(server, args.postgresql_url, args.nuages_python)
            elif kind == "kinto-memory":
                start_kinto(server, Path(args.kinto_venv), None)
            elif kind == "kinto-postgresql":
                if not args.kinto_postgresql_url:
                    raise SystemExit("--start kinto-postgresql needs --kinto-postgresql-url")
                start_kinto(server, Path(args.kinto_venv), args.kinto_postgresql_url)
            else:
                start_baseline(server, args.nuages_python)
        except BaseException:
            server.stop()
            raise
        target = Target(name, server.url, args.user, baseline=kind == "starlette-baseline")
        target.server = server
        targets.append(target)
    return targets


def check_loopback(target: Target, allow: bool) -> None:
    if allow:
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(target.host, target.port)}
    except OSError as exc:
        raise SystemExit(f"{target.name}: cannot resolve {target.host}: {exc}") from exc
    if not all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses):
        raise SystemExit(f"{target.name}: {target.host} is not a loopback address (--allow-remote)")


async def main_async(args: argparse.Namespace, targets: list[Target]) -> dict[str, Any]:
    for target in targets:
        check_loopback(target, args.allow_remote)
        await hello(target)
    kinto_targets = [t for t in targets if not t.baseline]
    output: dict[str, Any] = {
        "tool": "nuages bench/load.py",
        "format": 1,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
            "psutil": psutil is not None,
        },
        "options": {
            k: getattr(args, k)
            for k in (
                "concurrency",
                "duration",
                "warmup",
                "records",
                "page",
                "sync_changes",
                "batch_size",
                "rounds",
                "scenarios",
                "scale",
                "scale_ops",
                "scale_concurrency",
                "scale_duration",
            )
        },
        "targets": [],
        "results": [],
    }
    probe_machine(output, "before", args)
    if args.scale:
        output["scale"] = await run_scale(kinto_targets, args)
        output["targets"] = [t.describe() for t in targets]
        probe_machine(output, "after", args)
        return output
    if any(s != "get" for s in args.scenarios) or kinto_targets:
        for target in kinto_targets:
            await ensure_records(target, BIG, args.records, args)
    width = max(len(t.name) for t in targets)
    for rnd in range(1, args.rounds + 1):
        for name in args.scenarios:
            scenario = SCENARIOS[name]
            for target in targets:
                if target.baseline and not scenario.baseline:
                    continue
                state = await scenario.prepare(target, args)
                try:
                    result = await measure(
                        target, scenario, state, args, args.concurrency, args.duration
                    )
                finally:
                    if scenario.cleanup is not None:
                        await scenario.cleanup(target, state, args)
                if name == "create":
                    target.rates["create"] = result["req_per_s"]
                result = {"scenario": name, "target": target.name, "round": rnd, **result}
                output["results"].append(result)
                log(f"  {name:<9} {target.name:<{width}} {fmt_row(result)}")
    output["targets"] = [t.describe() for t in targets]
    probe_machine(output, "after", args)
    return output


def probe_machine(output: dict[str, Any], when: str, args: argparse.Namespace) -> None:
    """How fast the machine is `when` (before or after the run): bench/machine.py. It
    blocks the event loop for a few seconds, with nothing else running."""
    if args.probe_seconds <= 0:
        return
    try:
        figures = machine.probe(args.probe_dir, args.probe_seconds)
    except OSError as exc:  # the run's figures matter more than the probe's
        output["machine"][when] = {"error": str(exc)}
        log(f"machine {when}: no probe: {exc}")
        return
    output["machine"][when] = figures
    log(f"machine {when}: {machine.describe(figures)}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Load benchmark for Kinto-protocol servers (Nuages, Kinto).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="[NAME=]URL",
        help="a running server, e.g. nuages=http://127.0.0.1:8888/v1 (repeatable)",
    )
    p.add_argument(
        "--baseline-url",
        metavar="URL",
        help="a running bare HTTP endpoint (only the get scenario runs against it)",
    )
    p.add_argument(
        "--start",
        action="append",
        default=[],
        metavar="KIND[:SIZE]",
        help=f"start a server: {', '.join(START_KINDS)}; SIZE is the number of "
        "processes (nuages, baseline) or PROCESSESxTHREADS (kinto; default 1x4 "
        "for memory, 3x4 for PostgreSQL)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes of a started nuages or baseline server without :SIZE",
    )
    p.add_argument("--postgresql-url", help="database of nuages-postgresql (migrated first)")
    p.add_argument("--kinto-postgresql-url", help="database of kinto-postgresql (migrated first)")
    p.add_argument(
        "--kinto-venv",
        default="/tmp/kinto-venv",
        help="virtualenv with kinto, gunicorn (and psycopg2 for PostgreSQL)",
    )
    p.add_argument(
        "--nuages-python",
        default=sys.executable,
        help="Python that has nuages (and uvicorn, starlette) installed",
    )
    p.add_argument(
        "--port-base",
        type=int,
        default=0,
        help="first port for started servers (then +1 each); 0: free ports",
    )
    p.add_argument("--user", default="loadbench:loadbench-secret", help="basic auth user:password")
    p.add_argument(
        "--scenario",
        action="append",
        default=[],
        help=f"scenarios to run, comma-separated or repeated: {', '.join(SCENARIOS_ORDER)} or all",
    )
    p.add_argument("--concurrency", type=int, default=16, help="keep-alive connections")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per scenario")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each")
    p.add_argument("--rounds", type=int, default=1, help="repeat the whole scenario list")
    p.add_argument("--records", type=int, default=10_000, help="records of the read collection")
    p.add_argument("--page", type=int, default=100, help="page size of list, filtered, walk")
    p.add_argument("--sync-changes", type=int, default=100, help="changes a _since request returns")
    p.add_argument("--batch-size", type=int, default=25, help="creates per /batch request")
    p.add_argument(
        "--delete-pool",
        type=int,
        default=0,
        help="records prepared for delete; 0: 3x the create rate of the run over the"
        " scenario (20,000 without one)",
    )
    p.add_argument("--seed-concurrency", type=int, default=4, help="parallel /batch when seeding")
    p.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds an in-flight request may take after the end before it is an error",
    )
    p.add_argument(
        "--scale",
        type=lambda s: [int(x) for x in s.split(",")],
        default=None,
        metavar="N,N,...",
        help="scale mode: grow a collection to each size and time "
        "list, filtered, since, get, head (e.g. 10000,100000,1000000)",
    )
    p.add_argument("--scale-ops", default=",".join(SCALE_OPS), help="operations of the scale mode")
    p.add_argument(
        "--scale-duration", type=float, default=5.0, help="seconds per scale measurement"
    )
    p.add_argument(
        "--scale-concurrency",
        type=int,
        default=1,
        help="connections in scale mode (1: latency without queueing)",
    )
    p.add_argument("--ref", help="target the others are compared with (default: the first kinto*)")
    p.add_argument("--json", metavar="FILE", help="write every figure to FILE ('-': stdout)")
    p.add_argument("--server-logs", metavar="DIR", help="keep the logs of started servers in DIR")
    p.add_argument("--allow-remote", action="store_true", help="allow non-loopback targets")
    p.add_argument(
        "--probe-seconds",
        type=float,
        default=2.0,
        help="seconds of disk flushes probed before and after the run (bench/machine.py; "
        "0: no probe)",
    )
    p.add_argument(
        "--probe-dir",
        help="directory whose disk is probed: the database's (default: the temporary one)",
    )
    args = p.parse_args(argv)
    names = [n for s in args.scenario or ["all"] for n in s.split(",") if n]
    if "all" in names:
        names = list(SCENARIOS_ORDER)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS_ORDER)}")
    args.scenarios = [n for n in SCENARIOS_ORDER if n in names]
    args.scale_ops = [n for n in args.scale_ops.split(",") if n]
    if any(op not in SCALE_SCENARIOS for op in args.scale_ops):
        p.error(f"--scale-ops: known operations are {', '.join(SCALE_OPS)}")
    if args.scale and min(args.scale) <= args.sync_changes:
        p.error("--scale sizes must be larger than --sync-changes")
    if args.records <= max(args.sync_changes, args.page):
        p.error("--records must be larger than --sync-changes and --page")
    if not (args.url or args.start or args.baseline_url):
        p.error("give at least one --url or --start")
    if args.concurrency < 1 or args.duration <= 0:
        p.error("--concurrency and --duration must be positive")
    if args.probe_dir is not None and not os.path.isdir(args.probe_dir):
        p.error(f"--probe-dir {args.probe_dir}: not a directory")
    return args


def print_report(output: dict[str, Any], ref: str | None) -> None:
    for when in ("before", "after"):
        figures = output.get("machine", {}).get(when)
        if figures and "error" in figures:
            print(f"machine {when}: no probe: {figures['error']}")
        elif figures:
            print(f"machine {when}: {machine.describe(figures)}")
    if output["results"]:
        names = [t["name"] for t in output["targets"]]
        if ref is None:
            ref = next((n for n in names if n.startswith("kinto")), None)
        print_results(output["results"], output["targets"], ref if len(names) > 1 else None)
    if output.get("scale"):
        print_scale(output["scale"])


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if len(argv) >= 2 and argv[0] == "--report":  # print a saved JSON report again
        ref = argv[argv.index("--ref") + 1] if "--ref" in argv else None
        for path in argv[1:]:
            if path.endswith(".json"):
                print(f"== {path}")
                print_report(json.loads(Path(path).read_text()), ref)
        return 0
    args = parse_args(argv)
    targets: list[Target] = []
    try:
        targets = start_servers(args)
        for i, spec in enumerate(args.url):
            name, sep, url = spec.partition("=")
            if not sep:
                name, url = f"url{i + 1}", spec
            targets.append(Target(name, url, args.user))
        if args.baseline_url:
            targets.append(Target("baseline", args.baseline_url, args.user, baseline=True))
        names = [t.name for t in targets]
        if len(set(names)) != len(names):
            raise SystemExit(f"target names must differ: {names}")
        ref = args.ref or next((t.name for t in targets if t.name.startswith("kinto")), None)
        if ref is not None and ref not in names:
            raise SystemExit(f"--ref {ref!r} is not a target")
        try:
            import uvloop

            runner: Callable[[Any], Any] = uvloop.run
        except ImportError:
            runner = asyncio.run
        output = runner(main_async(args, targets))
    except SetupError as exc:
        raise SystemExit(f"setup failed: {exc}") from exc
    finally:
        for target in targets:
            if target.server is not None:
                target.server.stop(args.server_logs)
    if args.json == "-":
        json.dump(output, sys.stdout, indent=1)
        print()
    else:
        print_report(output, ref)
        if args.json:
            Path(args.json).write_text(json.dumps(output, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
