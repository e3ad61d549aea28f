"""The permission protocol every backend implements.

An access control entry (ACE) is ``(object_uri, permission, principal)``, e.g.
``("/buckets/b", "write", "basicauth:abc")``. Object URIs are paths without the
``/v1`` prefix. *URI patterns* may end with ``*`` meaning "any suffix"
(``/buckets/b/collections/*``), used for listings and cascades.

Besides ACEs, the backend stores *user principals*: extra principals a user id
holds (group URIs). The user id ``system.Authenticated`` holds principals that
every authenticated user gets.

Same transaction rules as :mod:`nuages.storage.protocol`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol

BoundPermission = tuple[str, str]  # (object uri or pattern, permission)


class PermissionTransaction(Protocol):
    async def get_object_permissions(self, uri: str) -> dict[str, set[str]]:
        """``{permission: {principals}}`` of one object; permissions without principals left out."""
        ...

    async def replace_object_permissions(
        self, uri: str, permissions: Mapping[str, Iterable[str]]
    ) -> None:
        """Replace the principals of each permission named in `permissions`; others untouched."""
        ...

    async def add_principal_to_ace(self, uri: str, permission: str, principal: str) -> None: ...

    async def delete_object_permissions(self, *uri_patterns: str) -> None:
        """Remove every ACE of the objects matching any pattern."""
        ...

    async def check_permission(
        self, principals: Iterable[str], bound_permissions: Iterable[BoundPermission]
    ) -> bool:
        """Whether any principal holds any of the exact ``(uri, permission)`` pairs."""
        ...

    async def get_accessible_objects(
        self, principals: Iterable[str], bound_permissions: Iterable[BoundPermission]
    ) -> dict[str, set[str]]:
        """``{uri: {permissions}}`` for every object matching a bound pattern on which a
        principal holds the bound permission."""
        ...

    async def get_user_principals(self, *user_ids: str) -> set[str]:
        """The principals (groups) of these users, together."""
        ...

    async def add_user_principal(self, user_id: str, principal: str) -> None: ...

    async def remove_user_principal(self, user_id: str, principal: str) -> None: ...

    async def remove_principal(self, principal: str) -> None:
        """Remove `principal` from every user's principals (a deleted group)."""
        ...


class Permission(Protocol):
    def transaction(
        self, *, write: bool, savepoint: bool = True
    ) -> AbstractAsyncContextManager[PermissionTransaction]:
        """A transaction; in a database shared with the storage, it joins the storage's
        open transaction. A joined write block is a savepoint (its failure undone alone)
        unless `savepoint` is false: the caller then ends both blocks together
        (:meth:`nuages.core.service.Service.transaction`), and a savepoint would be two
        statements for nothing."""
        ...

    async def ping(self) -> bool: ...

    async def flush(self) -> None: ...

    async def aclose(self) -> None: ...


class ACLWriter(Protocol):
    """Optional in a :class:`PermissionTransaction` (the service uses it when present)."""

    async def write_object_permissions(
        self,
        uri: str,
        replace: Mapping[str, Iterable[str]] | None,
        add: Iterable[tuple[str, str]] = (),
    ) -> dict[str, set[str]]:
        """:meth:`~PermissionTransaction.replace_object_permissions` (unless `replace` is
        None), :meth:`~PermissionTransaction.add_principal_to_ace` for each
        ``(permission, principal)`` of `add`, then the object's ACL as
        :meth:`~PermissionTransaction.get_object_permissions` reads it: at once."""
        ...
