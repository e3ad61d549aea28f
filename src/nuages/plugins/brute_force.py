"""Brute-force protection of password logins: atomic failure counters in the cache.

Each failed login — a wrong password, or a user name with no account (so that probing for
user names is throttled as much as guessing passwords) — adds one to two counters: one for
the user name, one for the client address. A counter lives ``window`` seconds from its
first failure (a fixed window, :meth:`nuages.cache.protocol.Cache.increment`). Once it
reaches ``max_failures``, a *blocked* marker is stored until the counter expires, and logins
for that user (or from that address) are refused with 429 and a ``Retry-After`` saying
when the window ends. Refused attempts are not verified and not counted, so nobody is ever
locked out for longer than one window; and a correct password already verified (and cached)
is still accepted, so an attacker cannot lock a signed-in user out.

Increments are atomic in every cache backend (one upsert in SQL, ``MULTI`` in Redis), so
the limit holds exactly across every server process sharing the cache: concurrent failures
are all counted. Keys are HMACs of the user name (no user name lands in the cache in
clear); addresses are stored as sent by the server (``client`` of the ASGI scope).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from typing import TYPE_CHECKING

from nuages.core.errors import TooManyRequests

if TYPE_CHECKING:
    from nuages.cache.protocol import Cache

__all__ = ["BruteForceGuard"]

_BLOCKED = ":blocked"


class BruteForceGuard:
    """Counts failed logins per user and per address; refuses once either is over the limit."""

    def __init__(
        self,
        cache: Cache,
        *,
        secret: str,
        max_failures: int,
        window_seconds: int,
        enabled: bool = True,
    ) -> None:
        self._cache = cache
        self._secret = secret.encode()
        self.max_failures = max_failures
        self.window = window_seconds
        self.enabled = enabled

    def _keys(self, username: str, address: str | None) -> list[str]:
        digest = hmac.new(self._secret, username.encode(), hashlib.sha256).hexdigest()
        keys = [f"auth-failures:user:{digest}"]
        if address:
            keys.append(f"auth-failures:address:{address[:100]}")
        return keys

    async def check(self, username: str, address: str | None) -> None:
        """Raise :class:`TooManyRequests` when the user or the address is over the limit."""
        if not self.enabled:
            return
        now = time.time()
        wait = 0.0
        for key in self._keys(username, address):
            until = await self._cache.get(key + _BLOCKED)
            if isinstance(until, int | float) and not isinstance(until, bool):
                wait = max(wait, min(until - now, self.window))
        if wait > 0:
            raise TooManyRequests(max(1, math.ceil(wait)))

    async def failed(self, username: str, address: str | None) -> None:
        """Count one failed login for this user and this address."""
        if not self.enabled:
            return
        for key in self._keys(username, address):
            count, left = await self._cache.increment(key, self.window)
            if count >= self.max_failures and left > 0:
                # Blocked until the counter's window ends (and the counter with it).
                await self._cache.set(key + _BLOCKED, time.time() + left, left)
