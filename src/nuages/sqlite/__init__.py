"""The SQLite database shared by the SQLite storage, permission and cache backends."""

from nuages.sqlite.database import CURRENT_SCHEMA_VERSION, SQLiteDatabase, SQLiteTransaction

__all__ = ["CURRENT_SCHEMA_VERSION", "SQLiteDatabase", "SQLiteTransaction"]
