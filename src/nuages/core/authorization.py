"""Who may do what: principals, the permission inheritance tree, settings grants.

A permission *key* is ``"<resource>:<permission>"`` (``"record:write"``). The
inheritance tree maps a key to the ``(level, permissions)`` pairs that grant it,
where a level is a resource name of the object's chain (protocol/06 §3)::

    "record:read": {"bucket": ["write", "read"], "collection": ["write", "read"],
                    "record": ["write", "read"]}
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from nuages.permission.protocol import BoundPermission, PermissionTransaction

EVERYONE = "system.Everyone"
AUTHENTICATED = "system.Authenticated"

PermissionTree = Mapping[str, Mapping[str, tuple[str, ...]]]


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated (or anonymous) user of a request and every principal it holds."""

    user_id: str | None
    principals: tuple[str, ...]

    @property
    def authenticated(self) -> bool:
        return self.user_id is not None

    @property
    def creator(self) -> str:
        """The principal added to the ``write`` ACL of what this caller creates."""
        return self.user_id if self.user_id is not None else EVERYONE


ANONYMOUS = Caller(None, (EVERYONE,))


def basicauth_userid(secret: str, credentials: str) -> str:
    """``basicauth:`` + hex HMAC-SHA256 of ``"user:password"`` (protocol/06 §1)."""
    return basicauth_userids(secret)(credentials)


def basicauth_userids(secret: str) -> Callable[[str], str]:
    """:func:`basicauth_userid` with `secret`, keyed once: each call copies the keyed
    HMAC state instead of preparing the key again (1.5 against 2.6 µs here)."""
    keyed = hmac.new(secret.encode(), digestmod=hashlib.sha256)

    def userid(credentials: str) -> str:
        mac = keyed.copy()
        mac.update(credentials.encode())
        return f"basicauth:{mac.hexdigest()}"

    return userid


async def load_caller(permission: PermissionTransaction, user_id: str | None) -> Caller:
    """Principals of a user: its id, Everyone, Authenticated and its groups."""
    if user_id is None:
        return ANONYMOUS
    return with_stored_principals(
        unloaded_caller(user_id), await permission.get_user_principals(user_id, AUTHENTICATED)
    )


def unloaded_caller(user_id: str | None) -> Caller:
    """The caller before its stored principals are read: its id, Everyone, Authenticated."""
    if user_id is None:
        return ANONYMOUS
    return Caller(user_id, (user_id, EVERYONE, AUTHENTICATED))


def stored_principal_holders(user_id: str | None) -> tuple[str, ...]:
    """The user ids whose stored principals a caller holds: its own, Authenticated's."""
    return () if user_id is None else (user_id, AUTHENTICATED)


def with_stored_principals(caller: Caller, stored: Iterable[str]) -> Caller:
    """`caller` holding also `stored` (groups, read from the permission backend)."""
    if not stored:
        return caller
    extra = sorted(set(stored) - set(caller.principals))
    return Caller(caller.user_id, (*caller.principals, *extra)) if extra else caller


def bound_permissions(
    tree: PermissionTree, key: str, level_uris: Mapping[str, str]
) -> list[BoundPermission]:
    """The ``(uri, permission)`` pairs granting `key` on the object whose chain is `level_uris`."""
    return [
        (uri, perm)
        for level, perms in tree.get(key, {}).items()
        if (uri := level_uris.get(level)) is not None
        for perm in perms
    ]


def intersects(principals: Iterable[str], allowed: Iterable[str]) -> bool:
    return not set(principals).isdisjoint(allowed)
