"""Several server processes, each with a listening socket of its own (``SO_REUSEPORT``).

uvicorn's own workers share one listening socket, and the process that wakes first accepts
every connection of a burst: a client opening 16 keep-alive connections at once then talks
to one process while the others idle (measured with ``nuages serve --workers 2``: one
worker at 94% of a core, the other at 0%). With one socket per process on the same address,
the kernel spreads new connections over the processes.

:func:`run` is the supervisor ``nuages serve --workers N`` uses (where the platform has
``SO_REUSEPORT``): it starts N processes, restarts one that dies, and stops them all on
SIGINT or SIGTERM. A worker that fails to start (bad settings, an unmigrated database)
stops the server with uvicorn's exit code for that, 3; so does a port that something
listens on already, another Nuages server included (:func:`check_free`).
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import signal
import socket
import sys
import time
from typing import Any, Final

log = logging.getLogger("nuages")

STARTUP_FAILURE: Final = 3  # uvicorn's exit code when the app fails to start
_STOP_SECONDS: Final = 10.0  # how long workers get to finish their requests on shutdown
_MIN_LIFETIME: Final = 1.0  # a worker dying sooner than this is not restarted in a loop


def available() -> bool:
    """Whether this platform can give each worker a socket of its own."""
    return hasattr(socket, "SO_REUSEPORT")


def _bound_socket(host: str, port: int, *, shared: bool) -> socket.socket:
    """A TCP socket bound to host:port; `shared`: with SO_REUSEPORT."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on host:port, sharable with other processes (SO_REUSEPORT)."""
    sock = _bound_socket(host, port, shared=True)
    try:
        sock.listen(2048)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def check_free(host: str, port: int) -> None:
    """Raise :class:`OSError` when something listens on host:port already. Sockets with
    ``SO_REUSEPORT`` share their port with any other such socket of the same user: without
    this check, a second server started on the port of a running one would silently get
    half of its connections, on its own settings and database."""
    _bound_socket(host, port, shared=False).close()


def _cannot_listen(host: str, port: int, exc: OSError) -> None:
    print(f"Error: cannot listen on {host}:{port}: {exc}", file=sys.stderr)


def _worker(target: str, options: dict[str, Any]) -> None:
    """A worker process: uvicorn serving the app factory `target` on a socket of its own."""
    import uvicorn

    config = uvicorn.Config(target, factory=True, **options)
    server = uvicorn.Server(config)
    try:
        sock = listening_socket(config.host, config.port)
    except OSError as exc:
        _cannot_listen(config.host, config.port, exc)
        sys.exit(STARTUP_FAILURE)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def run(target: str, options: dict[str, Any], workers: int) -> int:
    """Serve the app factory `target` (``module:function``) with `workers` processes and
    uvicorn `options` (``host``, ``port``, ...); returns the exit code of the server."""
    host, port = options["host"], options["port"]
    try:
        check_free(host, port)
    except OSError as exc:
        _cannot_listen(host, port, exc)
        return STARTUP_FAILURE
    context = multiprocessing.get_context("spawn")
    stopping: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def start() -> tuple[Any, float]:
        process = context.Process(target=_worker, args=(target, options), daemon=False)
        process.start()
        return process, time.monotonic()

    processes = [start() for _ in range(workers)]
    code = 0
    try:
        while not stopping:
            sentinels = {process.sentinel: i for i, (process, _) in enumerate(processes)}
            for ready in multiprocessing.connection.wait(list(sentinels), timeout=0.5):
                i = sentinels[ready]
                process, started = processes[i]
                process.join()
                if process.exitcode == STARTUP_FAILURE:
                    log.error("a worker could not start: stopping the server")
                    stopping.append(0)
                    code = STARTUP_FAILURE
                    break
                if stopping:
                    break
                log.warning(
                    "worker %s exited with code %s: restarting it", process.pid, process.exitcode
                )
                if time.monotonic() - started < _MIN_LIFETIME:
                    time.sleep(_MIN_LIFETIME)
                processes[i] = start()
    finally:
        for process, _ in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes the requests under way
        deadline = time.monotonic() + _STOP_SECONDS
        for process, _ in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code
