"""In-memory storage: the reference backend. Semantics come from :mod:`nuages.core.filtering`.

Transactions are serialised by one lock; a failed write transaction is rolled
back from an undo log.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from nuages.core import filtering
from nuages.core.errors import ObjectNotFound, UnicityError
from nuages.core.objects import ListQuery
from nuages.core.timestamps import next_timestamp, now_ms, requested_timestamp

JSONObject = dict[str, Any]
Scope = tuple[str, str]  # (parent_id, resource_name)


class _State:
    def __init__(self) -> None:
        self.objects: dict[Scope, dict[str, JSONObject]] = {}
        self.timestamps: dict[Scope, int] = {}


class MemoryStorageTransaction:
    def __init__(self, state: _State, write: bool) -> None:
        self._state = state
        self._write = write
        self._undo: list[Callable[[], None]] = []

    # -- undo log -----------------------------------------------------------
    def _remember_object(self, scope: Scope, object_id: str) -> None:
        objects = self._state.objects.setdefault(scope, {})
        old = objects.get(object_id)

        def undo() -> None:
            objs = self._state.objects.setdefault(scope, {})
            if old is None:
                objs.pop(object_id, None)
            else:
                objs[object_id] = old

        self._undo.append(undo)

    def _remember_timestamp(self, scope: Scope) -> None:
        old = self._state.timestamps.get(scope)

        def undo() -> None:
            if old is None:
                self._state.timestamps.pop(scope, None)
            else:
                self._state.timestamps[scope] = old

        self._undo.append(undo)

    def rollback(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    # -- timestamps ---------------------------------------------------------
    def _bump(self, scope: Scope, requested: int | None) -> int:
        bump = next_timestamp(self._state.timestamps.get(scope), requested)
        self._remember_timestamp(scope)
        self._state.timestamps[scope] = bump.scope_timestamp
        return bump.object_timestamp

    async def resource_timestamp(self, resource_name: str, parent_id: str) -> int:
        scope = (parent_id, resource_name)
        ts = self._state.timestamps.get(scope)
        if ts is None:
            # Lazily created and then stable (protocol/04 §1); not undone on rollback.
            ts = self._state.timestamps[scope] = now_ms()
        return ts

    # -- objects ------------------------------------------------------------
    async def get(
        self, resource_name: str, parent_id: str, object_id: str, *, include_deleted: bool = False
    ) -> JSONObject | None:
        obj = self._state.objects.get((parent_id, resource_name), {}).get(object_id)
        if obj is None or (obj.get("deleted") is True and not include_deleted):
            return None
        return copy.deepcopy(obj)

    def _store(self, scope: Scope, obj: Mapping[str, Any], requested: int | None) -> JSONObject:
        stored = copy.deepcopy(dict(obj))
        stored["last_modified"] = self._bump(scope, requested)
        self._remember_object(scope, stored["id"])
        self._state.objects.setdefault(scope, {})[stored["id"]] = stored
        return copy.deepcopy(stored)

    async def create(
        self, resource_name: str, parent_id: str, obj: Mapping[str, Any]
    ) -> JSONObject:
        scope = (parent_id, resource_name)
        existing = self._state.objects.get(scope, {}).get(obj["id"])
        if existing is not None and existing.get("deleted") is not True:
            raise UnicityError(resource_name, obj["id"])
        requested = requested_timestamp(obj.get("last_modified"))
        return self._store(scope, obj, requested)

    async def update(
        self, resource_name: str, parent_id: str, object_id: str, obj: Mapping[str, Any]
    ) -> JSONObject:
        scope = (parent_id, resource_name)
        existing = self._state.objects.get(scope, {}).get(object_id)
        requested = requested_timestamp(obj.get("last_modified"))
        if (
            existing is not None
            and requested is not None
            and requested <= existing["last_modified"]
        ):
            requested = None
        data = {**obj, "id": object_id}
        return self._store(scope, data, requested)

    async def delete(
        self,
        resource_name: str,
        parent_id: str,
        object_id: str,
        *,
        last_modified: int | None = None,
    ) -> JSONObject:
        scope = (parent_id, resource_name)
        existing = self._state.objects.get(scope, {}).get(object_id)
        if existing is None or existing.get("deleted") is True:
            raise ObjectNotFound(resource_name, object_id)
        requested = requested_timestamp(last_modified)
        if requested is not None and requested <= existing["last_modified"]:
            requested = None
        return self._store(scope, {"id": object_id, "deleted": True}, requested)

    def _candidates(self, resource_name: str, parent_id: str, query: ListQuery) -> list[JSONObject]:
        objects = self._state.objects.get((parent_id, resource_name), {}).values()
        return [
            o
            for o in objects
            if (query.include_deleted or o.get("deleted") is not True)
            and (query.ids is None or o["id"] in query.ids)
            and filtering.matches_all(o, query.filters)
        ]

    async def list(self, resource_name: str, parent_id: str, query: ListQuery) -> list[JSONObject]:
        found = filtering.sort_objects(
            self._candidates(resource_name, parent_id, query), query.sorting
        )
        if query.keyset is not None:
            keyset = query.keyset
            found = [o for o in found if filtering.after_keyset(o, query.sorting, keyset)]
        if query.limit is not None:
            found = found[: query.limit]
        return [copy.deepcopy(dict(o)) for o in found]

    async def count(self, resource_name: str, parent_id: str, query: ListQuery) -> int:
        live = ListQuery(filters=query.filters, ids=query.ids, include_deleted=False)
        return len(self._candidates(resource_name, parent_id, live))

    async def purge(self, parent_prefix: str) -> None:
        below = parent_prefix + "/"
        for scope in list(self._state.objects):
            if scope[0] == parent_prefix or scope[0].startswith(below):
                for object_id in list(self._state.objects[scope]):
                    self._remember_object(scope, object_id)
                    del self._state.objects[scope][object_id]
        for scope in list(self._state.timestamps):
            if scope[0] == parent_prefix or scope[0].startswith(below):
                self._remember_timestamp(scope)
                del self._state.timestamps[scope]


class MemoryStorage:
    """Process-local storage; everything is lost when the process stops."""

    def __init__(self) -> None:
        self._state = _State()
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self, *, write: bool) -> AsyncIterator[MemoryStorageTransaction]:
        async with self._lock:
            tx = MemoryStorageTransaction(self._state, write)
            try:
                yield tx
            except BaseException:
                tx.rollback()
                raise

    async def ping(self) -> bool:
        return True

    async def flush(self) -> None:
        async with self._lock:
            self._state = _State()

    async def aclose(self) -> None:
        return None
