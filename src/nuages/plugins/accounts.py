"""User accounts: ``/v1/accounts`` and the ``accounts`` auth policy (protocol/10 §3).

An account is an object ``{"id": <user name>, "password": <argon2 hash>, ...metadata}``
declared with the toolkit (:data:`ACCOUNT`); the service gives it the whole protocol. The
plugin adds Kinto's rules on top:

* creation is allowed to ``account_create_principals`` (``system.Everyone`` for open
  sign-up) and to administrators, the principals of ``account_write_principals``, who may
  also read, change and delete every account and list them all;
* an authenticated non-administrator reads and changes only their own account, and may not
  create another one (400 ``Username and account ID do not match.``);
* every account is written with ``write: ["account:<id>"]``, whoever creates it;
* passwords are hashed with argon2 (any password is accepted, as Kinto); responses carry
  the hash, never the password.

The ``accounts`` policy verifies ``Authorization: Basic`` credentials against the stored
hash and identifies the request as ``account:<id>``. A successful verification is cached for
``account_cache_ttl_seconds`` under an HMAC of the credentials, with a digest of the stored
hash as value: no password is stored in the cache, and a changed password or a deleted
account invalidates the entry by itself (the lookup compares with the current hash). Wrong
passwords feed the :class:`~nuages.plugins.brute_force.BruteForceGuard`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from argon2 import PasswordHasher
from argon2.exceptions import Argon2Error, InvalidHashError

from nuages.core.authorization import intersects
from nuages.core.errors import Unauthorized, ValidationError
from nuages.core.resource import ResourceSpec
from nuages.core.service import Call, Service
from nuages.plugins.brute_force import BruteForceGuard
from nuages.web.auth import basic_credentials

if TYPE_CHECKING:
    from nuages.core.service import Tx
    from nuages.settings import Settings
    from nuages.web.dispatch import Dispatcher
    from nuages.web.messages import WebRequest

__all__ = [
    "ACCOUNT",
    "ACCOUNT_TREE",
    "AccountsPolicy",
    "create_account",
    "hash_password",
    "install",
    "verify_password",
]

PREFIX: Final = "account"
CAPABILITY: Final = {
    "description": "Manage user accounts.",
    "url": "https://kinto.readthedocs.io/en/latest/api/1.x/accounts.html",
    "validation_enabled": False,
}
# Kinto's AccountIdGenerator: e-mail addresses are valid user names.
ACCOUNT_ID: Final = re.compile(r"^[a-zA-Z0-9][+.@a-zA-Z0-9_-]*$")

# argon2id with the library's defaults (RFC 9106 low-memory profile).
_HASHER: Final = PasswordHasher()


def hash_password(password: str) -> str:
    """The argon2id hash of `password` (salted: two calls give two different hashes)."""
    return _HASHER.hash(password)


def verify_password(hashed: str, password: str) -> bool:
    """Whether `password` matches `hashed`; any malformed hash simply does not match."""
    try:
        return _HASHER.verify(hashed, password)
    except (Argon2Error, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    """A hash no password matches, verified for unknown user names (same cost)."""
    return hash_password(secrets.token_hex(16))


def _verify_unknown(password: str) -> bool:
    return verify_password(_dummy_hash(), password)


def _no_generated_id() -> str:
    # Accounts are named by their user: a POST without an id is an error, not a random name.
    raise ValidationError("Accounts must have an ID.", location="body", name="data.id")


def _process_account(
    new: dict[str, Any], old: dict[str, Any] | None, given: bool
) -> dict[str, Any]:
    """Hash a new password; keep the stored hash when the write does not change it."""
    password = new.get("password")
    if old is not None and isinstance(password, str) and password == old.get("password"):
        return new  # PATCH without a password, PUT without data: the hash is kept as is
    if password is None:
        raise ValidationError("Required", location="body", name="data.password")
    if not isinstance(password, str) or not password:
        raise ValidationError(
            "password must be a non-empty string", location="body", name="data.password"
        )
    new["password"] = hash_password(password)
    return new


ACCOUNT: Final = ResourceSpec(
    name="account",
    plural="accounts",
    id_pattern=ACCOUNT_ID,
    generate_id=_no_generated_id,
    permissions=("read", "write"),
    process=_process_account,
)

# protocol/06 §3. `account:create` also lists `write` so that administrators
# (account_write_principals, consulted as settings grants) may create any account.
ACCOUNT_TREE: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "account:write": {"account": ("write",)},
    "account:read": {"account": ("write", "read")},
    "account:create": {"account": ("write",)},
}


def _admins(settings: Settings) -> tuple[str, ...]:
    return settings.principals_for("account", "write")


def account_service(dispatcher: Dispatcher) -> Service:
    """A service over the same backends and events, with the accounts' permission rules.

    Administrators hold ``account:read`` too, so they list every account; other users see
    the accounts shared with them (their own).
    """
    main, settings = dispatcher.service, dispatcher.settings
    admins = _admins(settings)
    principals = {
        "account:read": (*settings.principals_for("account", "read"), *admins),
        "account:write": admins,
        "account:create": settings.principals_for("account", "create"),
    }
    return Service(
        storage=main.storage,
        permission=main.permission,
        cache=main.cache,
        tree=ACCOUNT_TREE,
        config=replace(main.config, principals=principals),
        events=main.events,
    )


class _AccountRules:
    """Kinto's account rules that are not permissions (the ``prepare`` hook of the routes)."""

    def __init__(self, settings: Settings) -> None:
        self._admins = _admins(settings)

    async def __call__(self, req: WebRequest, call: Call) -> Call:
        caller = call.caller
        target = call.object_id
        if target is None and req.method in ("GET", "HEAD", "DELETE") and not caller.authenticated:
            raise Unauthorized()  # anonymous callers cannot read accounts (not even "[]")
        if req.method == "POST":
            data = call.body.get("data") if isinstance(call.body, dict) else None
            target = data.get("id") if isinstance(data, dict) else None
            if target is None:
                raise ValidationError("data.id in body: Required", location="body", name="data.id")
        if not isinstance(target, str):
            return call  # an invalid id: the service answers it
        admin = intersects(caller.principals, self._admins)
        mine = caller.user_id == f"{PREFIX}:{target}"
        if req.method in ("POST", "PUT") and caller.authenticated and not admin and not mine:
            raise ValidationError(
                "Username and account ID do not match.", location="body", name="data.id"
            )
        if req.method in ("POST", "PUT", "PATCH"):
            call.creator = f"{PREFIX}:{target}"  # an account is always its own writer
        return call


class AccountsPolicy:
    """Basic credentials verified against an account: ``account:<user name>``."""

    name = "accounts"
    challenge = 'Basic realm="Realm"'

    def __init__(self, dispatcher: Dispatcher, guard: BruteForceGuard) -> None:
        settings = dispatcher.settings
        self._dispatcher = dispatcher
        self._cache = dispatcher.service.cache
        self._ttl = settings.account_cache_ttl_seconds
        self._guard = guard
        # With basicauth listed too, unknown credentials identify a basicauth user: not a
        # failed login.
        self._count_unknown = "basicauth" not in settings.auth
        # Without a configured secret, a random one per process: the cache keys then cannot
        # be recomputed from a guessed password by whoever reads the cache (each process
        # only verifies once per TTL on its own).
        secret = settings.userid_hmac_secret or secrets.token_hex(32)
        self._secret = secret.encode()

    def _cache_key(self, username: str, password: str) -> str:
        message = f"{username}:{password}".encode()
        return "account-auth:" + hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    async def identify(self, req: WebRequest, tx: Tx | None) -> str | None:
        credentials = basic_credentials(req)
        if credentials is None:
            return None
        username = credentials.username
        account = None
        if username.isascii() and ACCOUNT_ID.fullmatch(username) is not None:
            async with self._dispatcher.transaction(tx, write=False) as t:
                account = await t.storage.get(ACCOUNT.name, "", username)
        stored = account.get("password") if account is not None else None
        if not isinstance(stored, str):
            if self._count_unknown:
                # A failed login too (probing user names): throttled, and as slow as a
                # wrong password, so that timing does not tell which accounts exist.
                await self._guard.check(username, req.client)
                await asyncio.to_thread(_verify_unknown, credentials.password)
                await self._guard.failed(username, req.client)
            return None  # no such account: maybe the next policy knows these credentials
        user_id = f"{PREFIX}:{username}"
        # The value is a digest of the stored hash: a new password or a deleted account
        # makes the entry worthless at once, in every process sharing the cache.
        fingerprint = hashlib.sha256(stored.encode()).hexdigest()
        key = self._cache_key(username, credentials.password)
        if self._ttl and await self._cache.get(key) == fingerprint:
            return user_id  # verified recently: accepted even while the guard refuses
        await self._guard.check(username, req.client)
        # argon2 takes tens of milliseconds of CPU: off the event loop.
        if not await asyncio.to_thread(verify_password, stored, credentials.password):
            await self._guard.failed(username, req.client)
            return None
        if self._ttl:
            await self._cache.set(key, fingerprint, self._ttl)
        return user_id


def install_policy(dispatcher: Dispatcher) -> AccountsPolicy:
    """The ``accounts`` auth policy of this dispatcher, with its brute-force guard."""
    settings = dispatcher.settings
    guard = BruteForceGuard(
        dispatcher.service.cache,
        secret=settings.userid_hmac_secret,
        max_failures=settings.brute_force_max_failures,
        window_seconds=settings.brute_force_window_seconds,
        enabled=settings.brute_force_protection,
    )
    return AccountsPolicy(dispatcher, guard)


def install(dispatcher: Dispatcher) -> None:
    """Serve ``/accounts`` and announce the ``accounts`` capability."""
    dispatcher.add_resource(
        ACCOUNT, service=account_service(dispatcher), prepare=_AccountRules(dispatcher.settings)
    )
    dispatcher.capabilities["accounts"] = dict(CAPABILITY)


async def create_account(settings: Settings, username: str, password: str) -> bool:
    """Create the account `username`, or set its password if it exists (``create-user``).

    Returns whether it was created. Raises ``ValueError`` for an invalid user name or an
    empty password. The database must be migrated.
    """
    from nuages import backends as backends_mod

    if not username.isascii() or ACCOUNT_ID.fullmatch(username) is None:
        raise ValueError(f"invalid user name {username!r}: expected {ACCOUNT_ID.pattern}")
    if not password:
        raise ValueError("the password must not be empty")
    hashed = await asyncio.to_thread(hash_password, password)
    backends = backends_mod.open_backends(settings)
    try:
        await backends_mod.check(backends)
        storage, permission = backends.storage, backends.permission
        async with (
            storage.transaction(write=True) as st,
            permission.transaction(write=True) as pt,
        ):
            existing = await st.get(ACCOUNT.name, "", username)
            if existing is None:
                await st.create(ACCOUNT.name, "", {"id": username, "password": hashed})
            else:
                new = {k: v for k, v in existing.items() if k != "last_modified"}
                await st.update(ACCOUNT.name, "", username, {**new, "password": hashed})
            uri = f"/{ACCOUNT.plural}/{username}"
            await pt.add_principal_to_ace(uri, "write", f"{PREFIX}:{username}")
        return existing is None
    finally:
        await backends.aclose()
