"""Where attached files live: a folder of the local filesystem, or an S3-compatible bucket.

A *location* is the file's relative name (``<folder>/<uuid><ext>``), the same in every store.
Only locations made of safe segments are accepted (:func:`safe_location`), so no name given to
a store can escape its folder or bucket prefix.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from nuages.settings import Settings

_SEGMENT: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$")
STORED_NAME: Final = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(\.[a-z0-9]{1,16})?$"
)
MAX_DEPTH: Final = 8


def safe_location(location: str) -> bool:
    """Whether `location` is one of ours: safe folder segments, then a stored file name."""
    parts = location.split("/")
    if not 1 <= len(parts) <= MAX_DEPTH or not STORED_NAME.fullmatch(parts[-1]):
        return False
    return all(_SEGMENT.fullmatch(p) and p not in (".", "..") for p in parts[:-1])


class FileStore(Protocol):
    """Files by location. `save` moves a finished temporary file into the store."""

    async def save(self, location: str, source: Path, mimetype: str) -> None: ...

    async def delete(self, location: str) -> None: ...

    async def read(self, location: str) -> bytes | None: ...

    def incoming(self) -> Path:
        """A folder for files being received (same filesystem as the store when local)."""
        ...


class LocalFileStore:
    """Files under one folder of the local filesystem."""

    def __init__(self, base: str | os.PathLike[str]) -> None:
        self.base = Path(base).resolve()

    def path(self, location: str) -> Path | None:
        """The file of a location, or None when it is not one of ours."""
        if not safe_location(location):
            return None
        path = (self.base / location).resolve()
        return path if path.is_relative_to(self.base) else None

    def incoming(self) -> Path:
        folder = self.base / ".incoming"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    async def save(self, location: str, source: Path, mimetype: str) -> None:
        path = self.path(location)
        if path is None:  # locations are built by the plugin: never write elsewhere
            raise ValueError(f"invalid attachment location {location!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, path)

    async def delete(self, location: str) -> None:
        path = self.path(location)
        if path is not None:
            path.unlink(missing_ok=True)

    async def read(self, location: str) -> bytes | None:
        path = self.path(location)
        if path is None or not path.is_file():
            return None
        return await asyncio.to_thread(path.read_bytes)


class S3FileStore:
    """Files in an S3-compatible bucket (boto3, the ``s3`` extra), under ``prefix``."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        prefix: str = "",
        incoming: str | os.PathLike[str] | None = None,
        client: Any = None,
    ) -> None:
        if client is None:
            try:
                import boto3  # type: ignore[import-untyped, unused-ignore]
            except ImportError:
                raise RuntimeError(
                    "attachment_s3_bucket needs boto3: pip install 'nuages[s3]'"
                ) from None
            client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self._incoming = Path(incoming) if incoming is not None else None

    def key(self, location: str) -> str | None:
        return self.prefix + location if safe_location(location) else None

    def incoming(self) -> Path:
        import tempfile

        folder = self._incoming or Path(tempfile.gettempdir()) / "nuages-attachments"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    async def save(self, location: str, source: Path, mimetype: str) -> None:
        key = self.key(location)
        if key is None:
            raise ValueError(f"invalid attachment location {location!r}")
        try:
            await asyncio.to_thread(
                self.client.upload_file,
                str(source),
                self.bucket,
                key,
                ExtraArgs={"ContentType": mimetype},
            )
        finally:
            source.unlink(missing_ok=True)

    async def delete(self, location: str) -> None:
        key = self.key(location)
        if key is not None:
            await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=key)

    async def read(self, location: str) -> bytes | None:
        key = self.key(location)
        if key is None:
            return None

        def get() -> bytes | None:
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=key)
            except self.client.exceptions.NoSuchKey:
                return None
            body: bytes = answer["Body"].read()
            return body

        return await asyncio.to_thread(get)


def open_store(settings: Settings) -> FileStore:
    """The store the settings name: S3 when ``attachment_s3_bucket`` is set, else local."""
    if settings.attachment_s3_bucket:
        return S3FileStore(
            settings.attachment_s3_bucket,
            endpoint_url=settings.attachment_s3_endpoint_url,
            region=settings.attachment_s3_region,
        )
    return LocalFileStore(settings.attachment_base_path)


__all__ = ["FileStore", "LocalFileStore", "S3FileStore", "open_store", "safe_location"]
