"""Permission backends: access control entries and user principals."""

from nuages.permission.protocol import Permission, PermissionTransaction

__all__ = ["Permission", "PermissionTransaction"]
