"""The access log: one JSON object per answered request, on standard error.

A line carries the time (UTC, milliseconds), method, path (never the querystring, which may
hold OAuth codes or tokens; never a header), status, duration in milliseconds and client
address::

    {"time":"2026-11-29T08:01:02.345Z","logger":"nuages.access","method":"GET",
     "path":"/v1/buckets/b/collections/c/records/r1","status":200,"ms":0.84,"client":"127.0.0.1"}

It does without :mod:`logging` on purpose: that machinery (a record, a formatter, a flush
per line) cost more than a whole cached read. Lines of one event-loop iteration are written
together, so a busy server makes one write per iteration, not one per request. It is on
when the log level is ``debug`` or ``info``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

import orjson


class AccessLog:
    """Collects the lines of an event-loop iteration and writes them in one go."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lines: list[bytes] = []

    def record(
        self, method: str, path: str, status: int, started: float, client: str | None
    ) -> None:
        """Log a request answered now that began at ``time.perf_counter()`` `started`."""
        now = time.time()
        line = orjson.dumps(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
                + f".{int(now * 1000) % 1000:03d}Z",
                "logger": "nuages.access",
                "method": method,
                "path": path,
                "status": status,
                "ms": round((time.perf_counter() - started) * 1000, 2),
                "client": client,
            }
        )
        if not self._lines:
            asyncio.get_running_loop().call_soon(self.flush)
        self._lines.append(line)

    def flush(self) -> None:
        if not self._lines:
            return
        text = b"\n".join(self._lines).decode() + "\n"
        self._lines.clear()
        # Looked up at each write: a test harness or a daemon may replace sys.stderr.
        stream = self._stream or sys.stderr
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stderr must not fail requests
