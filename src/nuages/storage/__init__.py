"""Storage backends: objects and tombstones, scoped by parent, with timestamps."""

from nuages.storage.protocol import Storage, StorageTransaction

__all__ = ["Storage", "StorageTransaction"]
