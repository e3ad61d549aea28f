"""The storage contract, on every backend of conftest.py."""

from nuages.storage.testing import StorageContract


class TestStorage(StorageContract):
    pass
