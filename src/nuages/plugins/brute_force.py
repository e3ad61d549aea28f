"""Brute-force protection of password logins: a sliding window of failures in the cache.

Each wrong password is remembered (its time) under two keys: one for the user name, one for
the client address. Once either holds ``max_failures`` failures younger than ``window``
seconds, logins for that user (or from that address) are refused with 429 and a
``Retry-After`` saying when the oldest counted failure leaves the window — so nobody is ever
locked out for longer than the window, and a correct password already verified (and cached)
is still accepted, so an attacker cannot lock a signed-in user out.

Keys are HMACs of the user name (no user name lands in the cache in clear). Updates are a
read then a write, not atomic: concurrent failures may be under-counted by a few, which only
shifts the threshold slightly; the cache is shared by every server process that shares the
backend, so the window holds across processes.
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
            keys.append(f"auth-failures:address:{address}")
        return keys

    async def _recent(self, key: str, now: float) -> list[float]:
        value = await self._cache.get(key)
        if not isinstance(value, list):
            return []
        return sorted(t for t in value if isinstance(t, int | float) and t > now - self.window)

    async def check(self, username: str, address: str | None) -> None:
        """Raise :class:`TooManyRequests` when the user or the address is over the limit."""
        if not self.enabled:
            return
        now = time.time()
        wait = 0.0
        for key in self._keys(username, address):
            failures = await self._recent(key, now)
            if len(failures) >= self.max_failures:
                # Allowed again once enough failures left the window to be under the limit.
                freed_at = failures[len(failures) - self.max_failures] + self.window
                wait = max(wait, freed_at - now)
        if wait > 0:
            raise TooManyRequests(max(1, math.ceil(wait)))

    async def failed(self, username: str, address: str | None) -> None:
        """Remember one failed login for this user and this address."""
        if not self.enabled:
            return
        now = time.time()
        for key in self._keys(username, address):
            failures = await self._recent(key, now)
            failures.append(now)
            # Only the newest max_failures matter for the decision: the value stays small.
            await self._cache.set(key, failures[-self.max_failures :], self.window)
