"""Cache backends: small expiring key/value entries (tokens, verified credentials)."""

from nuages.cache.protocol import Cache

__all__ = ["Cache"]
