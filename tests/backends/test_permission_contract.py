"""The permission contract, on every backend of conftest.py."""

from nuages.permission.testing import PermissionContract


class TestPermission(PermissionContract):
    pass
