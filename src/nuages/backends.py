"""Pick concrete backends from settings: the only place that knows them all.

URLs: ``memory://``, ``sqlite:///path`` (``sqlite:////abs/path``),
``postgresql://user:password@host:port/dbname`` and, for the cache, ``redis://host:port/db``.
Storage, permission and cache URLs naming the same SQLite file or PostgreSQL database share
one database object (one pool), so a request's object and ACL writes commit together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nuages.cache.protocol import Cache
from nuages.core.errors import BackendError
from nuages.permission.protocol import Permission
from nuages.storage.protocol import Storage

if TYPE_CHECKING:
    from nuages.settings import Settings


@dataclass
class Backends:
    storage: Storage
    permission: Permission
    cache: Cache
    databases: list[Any] = field(default_factory=list)  # shared engines to migrate and close

    async def aclose(self) -> None:
        for backend in (self.storage, self.permission, self.cache):
            await backend.aclose()
        for db in self.databases:
            await db.aclose()


def sqlite_path(url: str) -> str:
    """``sqlite:///./nuages.db`` → ``./nuages.db``; ``sqlite:////var/x.db`` → ``/var/x.db``."""
    path = url[len("sqlite://") :]
    if not path.startswith("/") or len(path) < 2:
        raise BackendError(f"invalid SQLite URL {url!r}: expected sqlite:///path/to/file.db")
    return path[1:]


def _scheme(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else url


def open_backends(settings: Settings) -> Backends:
    """Build (but do not migrate) the backends named by the settings."""
    from nuages.cache.memory import MemoryCache
    from nuages.permission.memory import MemoryPermission
    from nuages.storage.memory import MemoryStorage

    databases: dict[str, Any] = {}

    def database(url: str) -> Any:
        from nuages.sqlite import SQLiteDatabase

        path = sqlite_path(url)
        if path not in databases:
            databases[path] = SQLiteDatabase(path, readers=settings.sqlite_readers)
        return databases[path]

    def pg_database(url: str) -> Any:
        from nuages.postgresql import PostgreSQLDatabase

        if url not in databases:
            databases[url] = PostgreSQLDatabase(
                url, pool_size=settings.postgresql_pool_size, timeout=settings.postgresql_timeout
            )
        return databases[url]

    from nuages.storage.autoindex import AutoIndexConfig

    auto_index = AutoIndexConfig(
        min_objects=settings.auto_index_min_objects,
        hits=settings.auto_index_hits,
        max_indexes=settings.auto_index_max,
    )

    def build(kind: str, url: str) -> Any:
        scheme = _scheme(url)
        if scheme == "memory":
            return {"storage": MemoryStorage, "permission": MemoryPermission, "cache": MemoryCache}[
                kind
            ]()
        if scheme == "sqlite":
            from nuages.cache.sqlite import SQLiteCache
            from nuages.permission.sqlite import SQLitePermission
            from nuages.storage.sqlite import SQLiteStorage

            classes = {
                "storage": SQLiteStorage,
                "permission": SQLitePermission,
                "cache": SQLiteCache,
            }
            if kind == "storage":
                return SQLiteStorage(database(url), auto_index=auto_index)
            return classes[kind](database(url))
        if scheme in ("postgresql", "postgres"):
            from nuages.cache.postgresql import PostgreSQLCache
            from nuages.permission.postgresql import PostgreSQLPermission
            from nuages.storage.postgresql import PostgreSQLStorage

            pg_classes = {
                "storage": PostgreSQLStorage,
                "permission": PostgreSQLPermission,
                "cache": PostgreSQLCache,
            }
            pg = pg_database("postgresql" + url[len(scheme) :])
            if kind == "storage":
                return PostgreSQLStorage(pg, auto_index=auto_index)
            return pg_classes[kind](pg)
        if scheme in ("redis", "rediss") and kind == "cache":
            from nuages.cache.redis import RedisCache

            return RedisCache(url, timeout=settings.postgresql_timeout)
        raise BackendError(
            f"unsupported {kind} URL {_scheme(url)}://... (use sqlite:///, postgresql://, "
            "memory://, or redis:// for the cache)"
        )

    storage = build("storage", settings.storage_url)
    permission = build("permission", settings.effective_permission_url)
    cache = build("cache", settings.effective_cache_url)
    return Backends(storage, permission, cache, list(databases.values()))


async def migrate(settings: Settings) -> list[str]:
    """Create or upgrade the schema of every database the settings name; one line per database."""
    backends = open_backends(settings)
    try:
        done = []
        for db in backends.databases:
            await db.migrate()
            where = getattr(db, "name", None) or f"sqlite:///{db.path}"
            done.append(f"{where}: schema at version {await db.schema_version()}")
        if not backends.databases:
            done.append("memory://: nothing to migrate")
        return done
    finally:
        await backends.aclose()


async def check(backends: Backends) -> None:
    """Refuse to serve an unmigrated or newer schema (raises BackendError with the fix)."""
    for db in backends.databases:
        await db.check_schema()
