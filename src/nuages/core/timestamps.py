"""Per-scope, strictly increasing epoch-millisecond timestamps (protocol/04 §1).

A *scope* is one ``(parent_id, resource_name)`` pair: all records of one collection,
all collections of one bucket, all buckets. Backends call :func:`next_timestamp`
while they hold the scope's write lock, so assignment order is commit order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

MAX_TIMESTAMP = 2**63 - 1  # the largest value every backend stores as an integer


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Bump:
    """The timestamp to give the written object, and the scope's new timestamp."""

    object_timestamp: int
    scope_timestamp: int


def next_timestamp(
    previous: int | None, requested: int | None = None, *, now: int | None = None
) -> Bump:
    """Compute the timestamp of a write in a scope whose current timestamp is `previous`.

    Without `requested`, the write gets ``max(now, previous + 1)``. A `requested`
    value (replication: a client-supplied ``last_modified``) is honoured as is when
    greater than `previous`, bumped by one when equal, and kept *without moving the
    scope* when smaller (Kinto's behaviour, protocol/04 §1).
    """
    current = now_ms() if now is None else now
    if requested is None:
        ts = current if previous is None or current > previous else previous + 1
        return Bump(ts, ts)
    if previous is None or requested > previous:
        return Bump(requested, requested)
    if requested == previous:
        return Bump(previous + 1, previous + 1)
    return Bump(requested, previous)


def requested_timestamp(value: Any) -> int | None:
    """A client-supplied ``last_modified`` when it is a usable timestamp, else None.

    Booleans, negatives and values beyond 64-bit integers are ignored, on every backend.
    """
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TIMESTAMP:
        return value
    return None
