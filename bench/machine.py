#!/usr/bin/env python3
"""How fast this machine is right now: its CPU and its disk's flushes.

On a shared machine both change from hour to hour, and benchmark figures with them: in
the runs of docs/performance.md, a loop of 10,000,000 additions took from 0.43 s to 1.79 s
(from one minute to the next, 0.43 s and 1.1 s), and a 4 KiB ``fdatasync`` from 0.1 ms to
40 ms at its worst. Figures measured on a slow hour are not wrong, but they are not
comparable with those of a fast one; this probe says which hour a run had (the loop on one
core, then on every core at once; the disk's flushes). ``bench/load.py`` runs it before
and after its scenarios.

    python bench/machine.py                 # the CPU, and the disk of the temporary directory
    python bench/machine.py --dir /var/lib/postgresql --seconds 5

Point ``--dir`` at a directory you may write in, on the file system of the database (the
SQLite file's, PostgreSQL's data directory's): every commit waits for a flush there.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

ADDITIONS = 10_000_000
BLOCK = 4096
BLOCKS = 16  # the probe's file: 64 KiB, overwritten in place (no allocation, no metadata)
SLOW_MS = 5.0


def cpu_seconds(additions: int = ADDITIONS) -> float:
    """Seconds this Python takes for `additions` additions in a loop (one core)."""
    started = time.perf_counter()
    total = 0
    for i in range(additions):
        total += i
    return time.perf_counter() - started


def cpu_seconds_all_cores(additions: int = ADDITIONS) -> float:
    """The mean seconds of :func:`cpu_seconds` run on every core at once (one process
    each): what a server using every core gets, which one core alone need not tell on a
    shared host (here, on 2026-12-01, both gave the same figures)."""
    cores = os.cpu_count() or 1
    spawn = multiprocessing.get_context("spawn")  # nothing of the caller's state
    with concurrent.futures.ProcessPoolExecutor(cores, mp_context=spawn) as pool:
        list(pool.map(cpu_seconds, [1000] * cores))  # the processes started first
        return sum(pool.map(cpu_seconds, [additions] * cores)) / cores


def fdatasync_ms(directory: str, seconds: float, pause: float = 0.01) -> list[float]:
    """The duration (ms) of each ``fdatasync`` of a 4 KiB block overwritten in a file of
    `directory`, for about `seconds` seconds, `pause` seconds apart (a probe, not a load).
    The file is removed afterwards."""
    fd, path = tempfile.mkstemp(prefix="nuages-probe-", dir=directory)
    try:
        os.write(fd, bytes(BLOCK * BLOCKS))
        os.fsync(fd)
        durations = []
        end = time.monotonic() + seconds
        block = 0
        while time.monotonic() < end or not durations:
            os.pwrite(fd, os.urandom(BLOCK), block * BLOCK)
            block = (block + 1) % BLOCKS
            started = time.perf_counter()
            os.fdatasync(fd)
            durations.append((time.perf_counter() - started) * 1000)
            time.sleep(pause)
        return durations
    finally:
        os.close(fd)
        os.unlink(path)


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The `q` quantile (0-1) of a sorted list, by nearest rank; None when it is empty
    (bench/load.py's latencies use it too)."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def probe(directory: str | None = None, seconds: float = 2.0) -> dict[str, Any]:
    """The CPU loop's seconds and the flushes' distribution, as a JSON-ready dict."""
    directory = directory or tempfile.gettempdir()
    flushes = sorted(fdatasync_ms(directory, seconds))  # at least one
    return {
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu_loop_s": round(cpu_seconds(), 3),
        "cpu_loop_all_cores_s": round(cpu_seconds_all_cores(), 3),
        "cores": os.cpu_count() or 1,
        "disk_dir": directory,
        "fdatasync_n": len(flushes),
        "fdatasync_p50_ms": round(percentile(flushes, 0.5) or 0.0, 3),
        "fdatasync_p99_ms": round(percentile(flushes, 0.99) or 0.0, 3),
        "fdatasync_max_ms": round(flushes[-1], 3),
        "fdatasync_slow": sum(1 for ms in flushes if ms > SLOW_MS),
    }


def describe(figures: dict[str, Any]) -> str:
    """One line for a report, and a warning when the disk's flushes were slow."""
    slow = figures["fdatasync_p99_ms"] > SLOW_MS
    warning = (
        f"\n  (a flush p99 over {SLOW_MS:g} ms: writes' p99 measure this disk as much as the"
        " servers)"
    )
    return (
        f"{ADDITIONS:,} additions in {figures['cpu_loop_s']:.2f} s on one core,"
        f" {figures['cpu_loop_all_cores_s']:.2f} s on each of {figures['cores']} at once;"
        " fdatasync"
        f" ({figures['disk_dir']}) p50 {figures['fdatasync_p50_ms']:.2f} ms,"
        f" p99 {figures['fdatasync_p99_ms']:.2f} ms, max {figures['fdatasync_max_ms']:.2f} ms,"
        f" {figures['fdatasync_slow']} of {figures['fdatasync_n']} over {SLOW_MS:g} ms"
        + (warning if slow else "")
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", help="directory whose disk is probed (default: the temporary one)")
    p.add_argument("--seconds", type=float, default=2.0, help="how long the disk is probed")
    args = p.parse_args(argv)
    if args.seconds <= 0:
        p.error("--seconds must be positive")
    if args.dir is not None and not os.path.isdir(args.dir):
        p.error(f"--dir {args.dir}: not a directory")
    try:
        figures = probe(args.dir, args.seconds)
    except OSError as exc:  # a directory it may not write in
        p.error(f"cannot probe the disk of {args.dir or tempfile.gettempdir()}: {exc}")
    print(describe(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
