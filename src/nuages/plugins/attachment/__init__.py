"""Attachments: files attached to records, compatible with kinto-attachment (protocol/10 §9).

* ``POST /buckets/<bid>/collections/<cid>/records/<rid>/attachment`` with
  ``multipart/form-data``: an ``attachment`` file part, optional ``data`` and ``permissions``
  parts (JSON strings), optional ``?gzipped=true|false``. The body is parsed as it arrives
  (:mod:`.multipart`): the file goes to a temporary file while its size (checked against
  ``attachment_max_size_bytes``), SHA-256 and, when gzipped, its compressed form are computed,
  so an upload is never held in memory. Its extension and MIME type are checked before any
  byte is stored. The file then goes to the store (:mod:`.stores`: a local folder or S3) as
  ``<attachment_folder>/<uuid4><extension>``, and the record is created or updated (a
  ``PATCH``, with the usual permissions, schema validation, history, quotas) with an
  ``attachment`` field ``{"location", "filename", "hash", "mimetype", "size"}`` (plus
  ``original`` when gzipped). Answers 201 with that field and a ``Location`` header.
* ``DELETE …/attachment``: sets the record's ``attachment`` to null and removes the file (204).
* ``GET /attachments/<location>``: the stored files (the default ``base_url``), to anyone who
  has the URL (it contains a random UUID), as a static server would serve them.

Which file belongs to which record is kept, as kinto-attachment does, in *links*: storage
objects (resource ``attachment``, scope ``/buckets/<bid>``, purged with the bucket) written in
the record's transaction. A file is removed only once its link is gone in committed data
(:meth:`Attachments._reap`), so a rolled-back write never loses a file, and a record whose
``attachment`` field was edited by hand can never make the server delete another file.
Replacing or removing an attachment, or deleting its record, collection or bucket, removes
the files unless ``attachment_keep_old_files``. Nothing a client sends becomes a path.
"""

from __future__ import annotations

import asyncio
import contextvars
import fnmatch
import hashlib
import logging
import mimetypes
import re
import string
import uuid
import zlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import orjson

from nuages.api import RECORD
from nuages.core.authorization import load_caller
from nuages.core.errors import ObjectNotFound, TransactionConflict, ValidationError
from nuages.core.events import Change
from nuages.core.objects import Filter, ListQuery
from nuages.core.resource import NAME_PATTERN
from nuages.core.service import Call
from nuages.plugins.attachment.multipart import (
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    boundary_of,
)
from nuages.plugins.attachment.stores import (
    FileStore,
    LocalFileStore,
    S3FileStore,
    open_store,
    safe_location,
)
from nuages.web.messages import WebRequest, WebResponse

if TYPE_CHECKING:
    from nuages.core.service import Tx
    from nuages.settings import Settings
    from nuages.web.dispatch import Dispatcher

log = logging.getLogger("nuages.attachment")

JSONObject = dict[str, Any]
FIELD: Final = "attachment"
LINK: Final = "attachment"  # storage resource of the links, in scope /buckets/<bid>
_EXTENSION: Final = re.compile(r"^\.[a-z0-9]{1,16}$")
_TRUE: Final = ("true", "1", "yes", "on")
_FALSE: Final = ("false", "0", "no", "off")
# Seconds between checks that a removed link is gone in committed data (_reap).
_REAP_DELAYS: Final = (0.0, 0.05, 0.2, 0.5, 1.0, 2.0, 4.0)
_CHUNK: Final = 64 * 1024
_WRITE_ATTEMPTS: Final = 10

# kinto-attachment's extension groups (its attachment.extensions setting).
EXTENSION_GROUPS: Final[dict[str, tuple[str, ...]]] = {
    "documents": ("pdf", "rtf", "odf", "ods", "gnumeric", "abw", "doc", "docx", "xls", "xlsx"),
    "text": ("txt",),
    "images": ("jpg", "jpe", "jpeg", "png", "gif", "svg", "bmp", "tiff"),
    "audio": ("wav", "mp3", "aac", "ogg", "oga", "flac"),
    "video": ("mpeg", "3gp", "avi", "divx", "dvr", "flv", "mp4", "wmv"),
    "data": ("csv", "ini", "json", "plist", "xml", "yaml", "yml"),
    "scripts": ("js", "php", "pl", "py", "rb", "sh"),
    "archives": ("gz", "bz2", "zip", "tar", "tgz", "txz", "7z"),
    "executables": ("so", "exe", "dll"),
}
EXTENSION_GROUPS["default"] = (
    EXTENSION_GROUPS["documents"]
    + EXTENSION_GROUPS["text"]
    + EXTENSION_GROUPS["images"]
    + EXTENSION_GROUPS["data"]
)
EXTENSION_GROUPS["any"] = ()
# MIME types kinto-attachment records for these extensions, whatever the client said.
DEFAULT_MIMETYPES: Final = {".pem": "application/x-pem-file", ".geojson": "application/geojson"}
FOLDER_FIELDS: Final = ("bucket_id", "collection_id", "id")

# Set while the plugin itself writes a record's `attachment` field.
_OWN_WRITE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "nuages_attachment_own_write", default=False
)


def resolve_extensions(spec: str) -> frozenset[str]:
    """The extensions a kinto-attachment ``extensions`` value allows (empty: any)."""
    allowed: set[str] = set()
    for group in spec.split("+"):
        group = group.strip()
        if group in EXTENSION_GROUPS:
            allowed.update(EXTENSION_GROUPS[group])
        else:
            allowed.update(e.lower().lstrip(".") for e in group.split())
    return frozenset(allowed)


def parse_mimetypes(spec: str) -> dict[str, str]:
    """kinto-attachment's ``mimetypes`` value (``.ext:type;.ext:type``) over its defaults."""
    found = dict(DEFAULT_MIMETYPES)
    for item in filter(None, (i.strip() for i in spec.split(";"))):
        extension, sep, mimetype = item.partition(":")
        if not sep or not extension.strip() or "/" not in mimetype:
            raise ValueError(f"attachment_mimetypes: expected '.ext:type', got {item!r}")
        extension = extension.strip().lower()
        found[extension if extension.startswith(".") else f".{extension}"] = mimetype.strip()
    return found


def check_folder(pattern: str) -> str:
    """Refuse a folder pattern that could produce an unsafe path (at start-up)."""
    for literal, name, spec, conversion in string.Formatter().parse(pattern):
        if name is not None and (name not in FOLDER_FIELDS or spec or conversion):
            raise ValueError(
                f"attachment_folder: unknown placeholder {{{name}}}; use "
                + ", ".join(f"{{{f}}}" for f in FOLDER_FIELDS)
            )
        if "\\" in literal:
            raise ValueError("attachment_folder: use / between folders")
    if pattern.startswith("/"):
        raise ValueError("attachment_folder: must be relative to attachment_base_path")
    sample = pattern.format(bucket_id="b", collection_id="c", id="r").strip("/")
    if sample and not safe_location(f"{sample}/{uuid.UUID(int=0)}"):
        raise ValueError(f"attachment_folder: {pattern!r} is not a safe relative folder")
    return pattern.strip("/")


def _invalid(description: str, name: str | None = None, status: int = 400) -> ValidationError:
    return ValidationError(description, location="body", name=name, status=status)


@dataclass(slots=True)
class _Incoming:
    """The file part being received: a temporary file, its size and hashes."""

    path: Path
    file: IO[bytes]
    filename: str
    mimetype: str
    max_size: int
    gzip: Any = None  # a zlib compressor producing gzip, when gzipped
    size: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    stored_size: int = 0
    stored_digest: Any = field(default_factory=hashlib.sha256)

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_size:
            raise _invalid(f"File size exceeds the limit ({self.max_size} bytes).", FIELD)
        self.digest.update(data)
        self._out(self.gzip.compress(data) if self.gzip is not None else data)

    def _out(self, data: bytes) -> None:
        if data:
            self.stored_size += len(data)
            self.stored_digest.update(data)
            self.file.write(data)

    def finish(self) -> None:
        if self.gzip is not None:
            self._out(self.gzip.flush())
        self.file.close()

    def discard(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)

    @property
    def stored_name(self) -> str:
        return self.filename + ".gz" if self.gzip is not None else self.filename

    def metadata(self, location: str) -> JSONObject:
        meta: JSONObject = {
            "filename": self.filename,
            "hash": self.digest.hexdigest(),
            "mimetype": self.mimetype,
            "size": self.size,
        }
        if self.gzip is None:
            return {**meta, "location": location}
        return {
            "filename": self.filename + ".gz",
            "hash": self.stored_digest.hexdigest(),
            "mimetype": "application/x-gzip",
            "size": self.stored_size,
            "location": location,
            "original": meta,
        }


async def _once(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), _CHUNK):
        yield body[start : start + _CHUNK]


class Attachments:
    """File storage, the links of files to records, and the endpoints around them."""

    def __init__(self, dispatcher: Dispatcher, store: FileStore | None = None) -> None:
        settings: Settings = dispatcher.settings
        self.d = dispatcher
        self.store = store if store is not None else open_store(settings)
        self.base_url = settings.attachment_base_url
        self.max_size = settings.attachment_max_size_bytes or settings.max_request_body_bytes
        self.max_fields = settings.max_request_body_bytes
        self.folder = check_folder(settings.attachment_folder)
        self.keep_old_files = settings.attachment_keep_old_files
        self.gzipped = settings.attachment_gzipped
        self.extensions = resolve_extensions(settings.attachment_extensions)
        self.mimetypes = parse_mimetypes(settings.attachment_mimetypes)
        self.allowed_mimetypes = settings.attachment_allowed_mimetypes
        self._tasks: set[asyncio.Task[None]] = set()
        # Seconds between the checks of _reap (a test shortens them).
        self.reap_delays: tuple[float, ...] = _REAP_DELAYS

    # -- receiving -------------------------------------------------------------------------
    def _start_file(self, part: PartStart, gzipped: bool) -> _Incoming:
        if part.filename is None:
            raise _invalid("Filename is required.", FIELD)
        filename = part.filename.replace("\\", "/").rsplit("/", 1)[-1][:255] or "attachment"
        extension = Path(filename).suffix.lower()
        if self.extensions and extension.lstrip(".") not in self.extensions:
            raise _invalid("File extension is not allowed.", FIELD)
        mimetype = part.content_type
        if mimetype in ("text/plain", "application/octet-stream"):
            mimetype = mimetypes.guess_type(filename)[0] or mimetype
        mimetype = self.mimetypes.get(extension, mimetype)
        if self.allowed_mimetypes and not any(
            fnmatch.fnmatchcase(mimetype, p) for p in self.allowed_mimetypes
        ):
            raise _invalid("File MIME type is not allowed.", FIELD)
        path = self.store.incoming() / f"{uuid.uuid4()}.part"
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31) if gzipped else None
        return _Incoming(path, path.open("wb"), filename, mimetype, self.max_size, compressor)

    async def _receive(self, req: WebRequest, gzipped: bool) -> tuple[_Incoming, JSONObject]:
        """Parse the multipart body as it arrives: the file part, and the record's body."""
        content_type = req.headers.get("content-type", "")
        if "multipart/form-data" not in content_type.lower():
            raise _invalid("Content-Type should be multipart/form-data")
        try:
            parser = MultipartParser(boundary_of(content_type))
        except MultipartError as exc:
            raise _invalid(str(exc)) from None
        incoming: _Incoming | None = None
        fields: dict[str, bytearray] = {}
        current: _Incoming | bytearray | None = None
        field_bytes = received = 0
        limit = self.max_size + self.max_fields + 64 * 1024  # + part headers
        chunks = req.stream if req.stream is not None else _once(req.body)
        try:
            async for chunk in chunks:
                received += len(chunk)
                if received > limit:
                    raise _invalid(f"Request body is larger than {limit} bytes", status=413)
                for event in parser.feed(chunk):
                    if isinstance(event, PartStart):
                        if event.name == FIELD and incoming is None:
                            incoming = current = self._start_file(event, gzipped)
                        elif event.name in ("data", "permissions") and event.name not in fields:
                            current = fields[event.name] = bytearray()
                        elif event.name in (FIELD, "data", "permissions"):
                            raise _invalid(f"body: {event.name!r} given twice", event.name)
                        else:
                            name = event.name or ""
                            raise _invalid(f"body: {name!r} not in ('data', 'permissions')", name)
                    elif isinstance(event, PartData):
                        if isinstance(current, _Incoming):
                            current.write(event.data)
                        elif current is not None:
                            field_bytes += len(event.data)
                            if field_bytes > self.max_fields:
                                raise _invalid("data and permissions are too large", status=413)
                            current += event.data
                    elif isinstance(event, PartEnd):
                        current = None
            parser.close()
            if incoming is None:
                raise _invalid("Attachment missing.", FIELD)
            incoming.finish()
            return incoming, self._record_body(fields)
        except MultipartError as exc:
            if incoming is not None:
                incoming.discard()
            raise _invalid(f"Invalid multipart body: {exc}") from None
        except BaseException:
            if incoming is not None:
                incoming.discard()
            raise

    @staticmethod
    def _record_body(fields: dict[str, bytearray]) -> JSONObject:
        body: JSONObject = {"data": {}}
        for name, raw in fields.items():
            try:
                body[name] = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise _invalid(f"body: {name} is not valid JSON ({exc})", name) from None
        if not isinstance(body["data"], dict):
            raise _invalid("data is not a JSON object", "data")
        return body

    def _gzipped(self, req: WebRequest) -> bool:
        values = [v for k, v in req.query if k == "gzipped"]
        if not values:
            return self.gzipped
        value = values[-1].strip().lower()
        if value in _TRUE or value in _FALSE:
            return value in _TRUE
        raise ValidationError("Invalid value for gzipped", location="querystring", name="gzipped")

    def _location(self, bucket_id: str, collection_id: str, record_id: str, name: str) -> str:
        extension = Path(name).suffix.lower()
        stored = f"{uuid.uuid4()}{extension if _EXTENSION.fullmatch(extension) else ''}"
        folder = self.folder.format(bucket_id=bucket_id, collection_id=collection_id, id=record_id)
        location = f"{folder.strip('/')}/{stored}" if folder.strip("/") else stored
        if not safe_location(location):  # ids are validated: cannot happen, never write elsewhere
            raise _invalid("Invalid attachment location", FIELD)
        return location

    # -- endpoints -------------------------------------------------------------------------
    def _ids(self, params: dict[str, str]) -> tuple[str, str, str]:
        bucket_id, collection_id, record_id = params["bucket"], params["collection"], params["id"]
        if not all(NAME_PATTERN.fullmatch(i) and i.isascii() for i in (bucket_id, collection_id)):
            raise ObjectNotFound("collection", collection_id, parent=True)
        if not RECORD.is_valid_id(record_id):
            raise ValidationError("Invalid object id", location="path", name=None)
        return bucket_id, collection_id, record_id

    async def post(self, req: WebRequest, params: dict[str, str], tx: Tx | None) -> WebResponse:
        bucket_id, collection_id, record_id = self._ids(params)
        gzipped = self._gzipped(req)
        await self.d.authenticate(req, tx)  # bad credentials: 401 before reading the body
        incoming, body = await self._receive(req, gzipped)
        location = self._location(bucket_id, collection_id, record_id, incoming.stored_name)
        saved = incoming.metadata(location)
        try:
            await self.store.save(location, incoming.path, saved["mimetype"])
        finally:
            incoming.path.unlink(missing_ok=True)
        body["data"][FIELD] = saved
        link = {"id": location.rsplit("/", 1)[-1], "location": location}
        try:
            previous = await self._write(req, tx, params, record_id, body, link)
        except BaseException:
            await self.store.delete(location)  # the record was not written: no orphan file
            raise
        await self._discard(bucket_id, previous, wait=tx is None)
        ids = {"bucket": bucket_id, "collection": collection_id}
        url = f"{self.d.base_url(req)}{self.d.prefix}{RECORD.object_uri(ids, record_id)}"
        return WebResponse(201, saved, {"Location": url})

    async def delete(self, req: WebRequest, params: dict[str, str], tx: Tx | None) -> WebResponse:
        bucket_id, _, record_id = self._ids(params)
        body: JSONObject = {"data": {FIELD: None}}
        previous = await self._write(req, tx, params, record_id, body, None, existing=True)
        await self._discard(bucket_id, previous, wait=tx is None)
        return WebResponse(204, None)

    async def _write(
        self,
        req: WebRequest,
        tx: Tx | None,
        params: dict[str, str],
        record_id: str,
        body: JSONObject,
        link: JSONObject | None,
        *,
        existing: bool = False,
    ) -> list[JSONObject]:
        """Create or patch the record and relink its file; the links removed."""
        # The body was consumed: a conflict with another process is retried here, not by
        # the dispatcher (which would rerun the handler). A batch is rerun whole.
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                return await self._write_once(req, tx, params, record_id, body, link, existing)
            except TransactionConflict:
                if tx is not None or attempt == _WRITE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.005 * attempt)
        raise AssertionError("unreachable")

    async def _write_once(
        self,
        req: WebRequest,
        tx: Tx | None,
        params: dict[str, str],
        record_id: str,
        body: JSONObject,
        link: JSONObject | None,
        existing: bool,
    ) -> list[JSONObject]:
        ids = {"bucket": params["bucket"], "collection": params["collection"]}
        user_id = await self.d.authenticate(req, tx)
        service = self.d.service
        async with self.d.transaction(tx, write=True) as t:
            caller = await load_caller(t.permission, user_id)
            call = Call(spec=RECORD, ids=ids, caller=caller, object_id=record_id, body=body)
            current = await t.storage.get(RECORD.name, RECORD.parent_uri(ids), record_id)
            if current is None and existing:
                # As a DELETE of a missing record: 404 for readers of the collection.
                await service.delete_object(t, call)
                return []
            token = _OWN_WRITE.set(True)
            try:
                if current is None:
                    await service.put_object(t, call)
                else:
                    await service.patch_object(t, call)
            finally:
                _OWN_WRITE.reset(token)
            removed = await self._unlink(t, ids["bucket"], ids["collection"], record_id)
            if link is not None:
                new = {**link, "collection": ids["collection"], "record": record_id}
                await t.storage.create(LINK, f"/buckets/{ids['bucket']}", new)
            return removed

    async def serve(self, req: WebRequest, params: dict[str, str], tx: Tx | None) -> WebResponse:
        location = "/".join(params[f"p{i}"] for i in range(len(params)))
        content = await self.store.read(location) if safe_location(location) else None
        if content is None:
            raise ObjectNotFound("attachment", location.rsplit("/", 1)[-1])
        mimetype = mimetypes.guess_type(location)[0] or "application/octet-stream"
        headers = {
            "Content-Type": mimetype,
            "Content-Disposition": "attachment",
            "Cache-Control": "max-age=3600",
        }
        return WebResponse(200, None, headers, raw=content)

    # -- links and removal -----------------------------------------------------------------
    @staticmethod
    async def _links(t: Tx, bucket_id: str, filters: Iterable[Filter]) -> list[JSONObject]:
        query = ListQuery(filters=tuple(filters))
        return await t.storage.list(LINK, f"/buckets/{bucket_id}", query)

    async def _unlink(
        self, t: Tx, bucket_id: str, collection_id: str, record_id: str | None = None
    ) -> list[JSONObject]:
        filters = [Filter("collection", collection_id)]
        if record_id is not None:
            filters.append(Filter("record", record_id))
        links = await self._links(t, bucket_id, filters)
        for link in links:
            await t.storage.delete(LINK, f"/buckets/{bucket_id}", link["id"])
        return links

    async def _discard(self, bucket_id: str, links: list[JSONObject], *, wait: bool) -> None:
        """Remove the files of `links` once their removal is committed (unless kept)."""
        if self.keep_old_files or not links:
            return
        if wait:
            await self._reap(bucket_id, links)
            return
        # Inside a transaction not committed yet: check from a task of its own, outside it
        # (an empty context: it must not join the open transaction).
        task = asyncio.get_running_loop().create_task(
            self._reap(bucket_id, links), context=contextvars.Context()
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reap(self, bucket_id: str, links: list[JSONObject]) -> None:
        """Delete the files whose link is gone in committed data; a link still there after
        a while means its removal was rolled back, and the file stays."""
        pending = {link["id"]: link["location"] for link in links}
        for delay in self.reap_delays:
            if delay:
                await asyncio.sleep(delay)
            try:
                async with self.d.transaction(None, write=False) as t:
                    for link_id in list(pending):
                        if await t.storage.get(LINK, f"/buckets/{bucket_id}", link_id) is None:
                            await self.store.delete(pending.pop(link_id))
            except Exception:
                log.exception("could not remove attachment files of bucket %s", bucket_id)
                return
            if not pending:
                return
        log.debug("attachment files kept, their records were not changed: %s", pending)

    async def on_prepare(self, tx: Tx, change: Change) -> JSONObject | None:
        """As kinto-attachment: a client may not edit an existing attachment's metadata."""
        if change.action != "update" or _OWN_WRITE.get() or change.old is None:
            return None
        before, after = change.old.get(FIELD), (change.new or {}).get(FIELD)
        if before and after and before != after:
            raise _invalid("Attachment metadata cannot be modified.", FIELD)
        return None

    async def on_change(self, tx: Tx, change: Change) -> None:
        """A deleted record, collection or bucket takes its files with it."""
        if change.action != "delete":
            return
        bucket_id = change.ids["bucket"]
        if change.resource_name == "bucket":  # the links are purged with the bucket
            links = await self._links(tx, bucket_id, ())
        else:
            record_id = change.ids.get("record")
            links = await self._unlink(tx, bucket_id, change.ids["collection"], record_id)
        await self._discard(bucket_id, links, wait=False)

    async def drain(self) -> None:
        """Wait for the pending removals (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def install(dispatcher: Dispatcher, store: FileStore | None = None) -> Attachments:
    """Serve attachments of records; announce the ``attachments`` capability."""
    attachments = Attachments(dispatcher, store)
    dispatcher.add(
        "attachment",
        "/buckets/{bucket}/collections/{collection}/records/{id}/attachment",
        ("POST", "DELETE"),
        _dispatching(attachments),
    )
    depth = len([p for p in attachments.folder.split("/") if p]) + 1
    dispatcher.add(
        "attachment-file",
        "/attachments/" + "/".join(f"{{p{i}}}" for i in range(depth)),
        ("GET",),
        attachments.serve,
    )
    events = dispatcher.service.events
    events.on_prepare(attachments.on_prepare, resources=("record",))
    events.on_change(attachments.on_change, resources=("record", "collection", "bucket"))
    configured = attachments.base_url

    def capability(api_url: str) -> JSONObject:
        # Clients download base_url + location (kinto-http.py download_attachment).
        base_url = configured if configured is not None else f"{api_url}attachments/"
        return {
            "description": "Add file attachments to records",
            "url": "https://github.com/Kinto/kinto-attachment/",
            "base_url": base_url if base_url.endswith("/") else base_url + "/",
            "gzipped": attachments.gzipped,
        }

    dispatcher.capabilities["attachments"] = capability
    return attachments


def _dispatching(attachments: Attachments) -> Any:
    async def handler(req: WebRequest, params: dict[str, str], tx: Tx | None) -> WebResponse:
        if req.method == "POST":
            return await attachments.post(req, params, tx)
        return await attachments.delete(req, params, tx)

    handler.streams_body = True  # type: ignore[attr-defined]  # see nuages.web.app
    return handler


__all__ = [
    "EXTENSION_GROUPS",
    "Attachments",
    "FileStore",
    "LocalFileStore",
    "S3FileStore",
    "install",
    "parse_mimetypes",
    "resolve_extensions",
]
