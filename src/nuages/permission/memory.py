"""In-memory permission backend (reference)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager

from nuages.permission.protocol import BoundPermission


def uri_matches(pattern: str, uri: str) -> bool:
    """``*`` at the end of a pattern matches any suffix; elsewhere it is literal."""
    if pattern.endswith("*"):
        return uri.startswith(pattern[:-1])
    return uri == pattern


class _State:
    def __init__(self) -> None:
        # uri -> permission -> principals
        self.aces: dict[str, dict[str, set[str]]] = {}
        # user id -> principals
        self.user_principals: dict[str, set[str]] = {}


class MemoryPermissionTransaction:
    def __init__(self, state: _State) -> None:
        self._state = state
        self._undo: list[Callable[[], None]] = []

    def _remember_uri(self, uri: str) -> None:
        old = self._state.aces.get(uri)
        saved = {p: set(s) for p, s in old.items()} if old is not None else None

        def undo() -> None:
            if saved is None:
                self._state.aces.pop(uri, None)
            else:
                self._state.aces[uri] = saved

        self._undo.append(undo)

    def _remember_user(self, user_id: str) -> None:
        old = self._state.user_principals.get(user_id)
        saved = set(old) if old is not None else None

        def undo() -> None:
            if saved is None:
                self._state.user_principals.pop(user_id, None)
            else:
                self._state.user_principals[user_id] = saved

        self._undo.append(undo)

    def rollback(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    async def get_object_permissions(self, uri: str) -> dict[str, set[str]]:
        return {p: set(s) for p, s in self._state.aces.get(uri, {}).items() if s}

    async def replace_object_permissions(
        self, uri: str, permissions: Mapping[str, Iterable[str]]
    ) -> None:
        self._remember_uri(uri)
        entry = self._state.aces.setdefault(uri, {})
        for perm, principals in permissions.items():
            entry[perm] = set(principals)
        if not any(entry.values()):
            del self._state.aces[uri]

    async def add_principal_to_ace(self, uri: str, permission: str, principal: str) -> None:
        self._remember_uri(uri)
        self._state.aces.setdefault(uri, {}).setdefault(permission, set()).add(principal)

    async def delete_object_permissions(self, *uri_patterns: str) -> None:
        for uri in list(self._state.aces):
            if any(uri_matches(p, uri) for p in uri_patterns):
                self._remember_uri(uri)
                del self._state.aces[uri]

    async def check_permission(
        self, principals: Iterable[str], bound_permissions: Iterable[BoundPermission]
    ) -> bool:
        wanted = set(principals)
        for uri, perm in bound_permissions:
            if self._state.aces.get(uri, {}).get(perm, set()) & wanted:
                return True
        return False

    async def get_accessible_objects(
        self, principals: Iterable[str], bound_permissions: Iterable[BoundPermission]
    ) -> dict[str, set[str]]:
        wanted = set(principals)
        bound = list(bound_permissions)
        result: dict[str, set[str]] = {}
        for uri, perms in self._state.aces.items():
            for pattern, perm in bound:
                if perms.get(perm, set()) & wanted and uri_matches(pattern, uri):
                    result.setdefault(uri, set()).add(perm)
        return result

    async def get_user_principals(self, *user_ids: str) -> set[str]:
        found: set[str] = set()
        for user_id in user_ids:
            found |= self._state.user_principals.get(user_id, set())
        return found

    async def add_user_principal(self, user_id: str, principal: str) -> None:
        self._remember_user(user_id)
        self._state.user_principals.setdefault(user_id, set()).add(principal)

    async def remove_user_principal(self, user_id: str, principal: str) -> None:
        self._remember_user(user_id)
        self._state.user_principals.get(user_id, set()).discard(principal)

    async def remove_principal(self, principal: str) -> None:
        for user_id, principals in self._state.user_principals.items():
            if principal in principals:
                self._remember_user(user_id)
                principals.discard(principal)


class MemoryPermission:
    def __init__(self) -> None:
        self._state = _State()
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def transaction(
        self, *, write: bool, savepoint: bool = True
    ) -> AsyncIterator[MemoryPermissionTransaction]:
        async with self._lock:
            tx = MemoryPermissionTransaction(self._state)
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
