"""The PostgreSQL database shared by the PostgreSQL storage, permission and cache backends."""

from nuages.postgresql.database import (
    CURRENT_SCHEMA_VERSION,
    PostgreSQLDatabase,
    PostgreSQLTransaction,
)

__all__ = ["CURRENT_SCHEMA_VERSION", "PostgreSQLDatabase", "PostgreSQLTransaction"]
