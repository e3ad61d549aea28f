"""Automatic expression indexes: listings of a large collection cost what their page costs.

A generic service cannot know which JSON fields its clients filter and sort on, so the SQL
backends learn it. A listing's *shape* is its scope, the fields of its top-level equality
filters and its sort order (e.g. ``category = ?`` sorted by ``-score, -last_modified``).
When one shape has been listed `hits` times by this process in a scope holding at least
`min_objects` live objects, the backend builds, in the background and outside any request
transaction, a partial index on exactly the expressions that listing's SQL uses: the
equality fields, then the sort keys in the typed JSON order of :mod:`nuages.core.filtering`,
restricted to the live objects of that one scope. From then on the listing is an index
range read in order, and stops after its page.

The number of automatic indexes of a database is bounded (`max_indexes`); they are named
``nuages_auto_<digest of their definition>``, so several processes agree on them and build
each one once. docs/architecture.md ("Indexes for large collections") has the rationale.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from nuages.core.objects import Comparison, Filter, ListQuery, Sort

logger = logging.getLogger(__name__)

PREFIX: Final = "nuages_auto_"
_COLUMNS: Final = frozenset({"id", "last_modified"})
_MAX_EQUAL: Final = 3
_MAX_SORT: Final = 4
# Other processes may build indexes too: the list of existing ones is read again this often.
_RELOAD_SECONDS: Final = 30.0
_MAX_TRACKED: Final = 10_000
# A build that failed is tried again after this long (when its shape is still listed).
_RETRY_SECONDS: Final = 300.0


@dataclass(frozen=True, slots=True)
class AutoIndexConfig:
    """When automatic indexes are built. ``max_indexes = 0`` turns them off."""

    min_objects: int = 5_000
    hits: int = 3
    max_indexes: int = 32


@dataclass(frozen=True, slots=True)
class Shape:
    """What an index serves: equality on `equal` (sorted), then `sorting`, in one scope.
    `sorting` is normalised so that its first key is ascending (an index serves an order
    and its exact reverse)."""

    parent_id: str
    resource_name: str
    equal: tuple[str, ...]
    sorting: tuple[Sort, ...]


def shape_of(
    parent_id: str,
    resource_name: str,
    query: ListQuery,
    *,
    equality_indexable: Callable[[Filter], bool],
    field_indexable: Callable[[str], bool],
) -> Shape | None:
    """The shape of a listing an automatic index would serve, or None when the existing
    indexes already serve it (no JSON field involved) or it cannot be indexed."""
    if query.include_deleted:
        return None  # automatic indexes hold live objects only
    equal = sorted(
        {
            f.field
            for f in query.filters
            if f.operator is Comparison.EQ and f.field not in _COLUMNS and equality_indexable(f)
        }
    )
    sorting = query.sorting
    if not equal and all(s.field in _COLUMNS for s in sorting):
        return None
    if len(equal) > _MAX_EQUAL or len(sorting) > _MAX_SORT:
        return None
    if not all(field_indexable(name) for name in [*equal, *(s.field for s in sorting)]):
        return None
    if sorting and sorting[0].direction < 0:
        sorting = tuple(Sort(s.field, -s.direction) for s in sorting)
    return Shape(parent_id, resource_name, tuple(equal), tuple(sorting))


@dataclass(slots=True)
class AutoIndexer:
    """The automatic indexes of one database, as this process knows them.

    `load` lists the names of the valid automatic indexes; `build` creates one (a name,
    its statement, and a function to call as soon as the index serves listings, before
    any work the build does after it), idempotent across processes, and says whether the
    index now exists (False: another process is building it).
    """

    config: AutoIndexConfig
    load: Callable[[], Awaitable[set[str]]]
    build: Callable[[str, str, Callable[[], None]], Awaitable[bool]]
    known: set[str] = field(default_factory=set)
    _loaded_at: float = float("-inf")
    _counts: dict[str, int] = field(default_factory=dict)
    _pending: set[str] = field(default_factory=set)
    _failed: dict[str, float] = field(default_factory=dict)  # name: when it may retry
    _building: asyncio.Lock = field(default_factory=asyncio.Lock)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def enabled(self) -> bool:
        return self.config.max_indexes > 0

    async def refresh(self) -> None:
        """Read the list of existing indexes when it is older than a few seconds."""
        if time.monotonic() - self._loaded_at < _RELOAD_SECONDS:
            return
        self._loaded_at = time.monotonic()
        try:
            self.known = await self.load()
        except Exception:
            logger.warning("could not list the automatic indexes", exc_info=True)

    async def observe(
        self, name: str, statement: str, live_objects: Callable[[], Awaitable[int]]
    ) -> None:
        """Count one listing of a shape this process has no index for (`name`); start
        building its index when the shape is frequent and its scope large."""
        if name in self._pending or name in self.known:
            return
        if name in self._failed:
            if time.monotonic() < self._failed[name]:
                return
            del self._failed[name]
        if len(self._counts) >= _MAX_TRACKED and name not in self._counts:
            self._counts.clear()  # many rare shapes: start counting again
        count = self._counts.get(name, 0) + 1
        self._counts[name] = count
        if count < self.config.hits:
            return
        self._counts[name] = 0
        if len(self.known) + len(self._pending) >= self.config.max_indexes:
            return
        if await live_objects() < self.config.min_objects:
            return
        self._pending.add(name)
        # A fresh context: the build must not join the transaction of the request that
        # happened to trigger it (the database modules keep it in a context variable).
        task = asyncio.get_running_loop().create_task(
            self._build(name, statement), context=contextvars.Context()
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _build(self, name: str, statement: str) -> None:
        try:
            # One build at a time: concurrent builds on one table wait for each other.
            async with self._building:
                started = time.monotonic()
                built = await self.build(name, statement, lambda: self.known.add(name))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.warning("could not build the automatic index %s", name, exc_info=True)
            self._failed[name] = time.monotonic() + _RETRY_SECONDS
        else:
            if not built:
                return
            self.known.add(name)
            logger.info("built the automatic index %s in %.1f s", name, time.monotonic() - started)
        finally:
            self._pending.discard(name)

    async def wait(self) -> None:
        """Wait for the indexes being built (tests, benchmarks)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self._loaded_at = float("-inf")
        self._building = asyncio.Lock()  # the next lifespan may run on another event loop
