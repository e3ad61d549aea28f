"""The cache contract, on every backend of conftest.py."""

from nuages.cache.testing import CacheContract


class TestCache(CacheContract):
    pass
