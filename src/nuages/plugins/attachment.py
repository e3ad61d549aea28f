"""Attachments: files attached to records, compatible with kinto-attachment (protocol/10 §9).

* ``POST /buckets/<bid>/collections/<cid>/records/<rid>/attachment`` with
  ``multipart/form-data``: an ``attachment`` file part, optional ``data`` and
  ``permissions`` parts (JSON strings). The file is stored under
  ``attachment_base_path``, then the record is created or updated (as a ``PATCH``, with the
  usual permissions, schema validation, history, quotas) with an ``attachment`` field
  ``{"location", "filename", "hash", "mimetype", "size"}``. Answers 201 with that field and
  a ``Location`` header (the record's URL).
* ``DELETE …/attachment``: removes the file and sets the record's ``attachment`` to null
  (204).
* ``GET /attachments/<bid>/<cid>/<file>``: the stored files (the default ``base_url``), as
  a static server would serve them: to anyone who has the URL, which contains a random
  UUID.

Files are named by the server (``<bid>/<cid>/<uuid4><extension>``): nothing a client sends
becomes a path, so no upload escapes ``attachment_base_path``; served paths are checked the
same way. A record's deletion removes its file.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import re
import uuid
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from nuages.api import RECORD
from nuages.core.authorization import load_caller
from nuages.core.errors import ObjectNotFound, ValidationError
from nuages.core.events import Change
from nuages.core.resource import NAME_PATTERN
from nuages.core.service import Call, Outcome
from nuages.web.messages import WebRequest, WebResponse

if TYPE_CHECKING:
    from nuages.core.service import Tx
    from nuages.web.dispatch import Dispatcher

log = logging.getLogger("nuages.attachment")

JSONObject = dict[str, Any]
FIELD: Final = "attachment"
_EXTENSION = re.compile(r"^\.[A-Za-z0-9]{1,16}$")
_STORED_NAME = re.compile(r"^[0-9a-f-]{36}(\.[A-Za-z0-9]{1,16})?$")


def _invalid(description: str, name: str | None = None) -> ValidationError:
    return ValidationError(description, location="body", name=name)


def parse_multipart(content_type: str, body: bytes) -> dict[str, EmailMessage]:
    """The parts of a ``multipart/form-data`` body by field name (400 when malformed)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    try:
        message = BytesParser(policy=HTTP).parsebytes(head + body)
    except (ValueError, TypeError, LookupError) as exc:
        raise _invalid(f"Invalid multipart body: {exc}") from None
    if not isinstance(message, EmailMessage) or not message.is_multipart():
        raise _invalid("Content-Type should be multipart/form-data")
    parts: dict[str, EmailMessage] = {}
    for part in message.iter_parts():
        if not isinstance(part, EmailMessage):
            continue
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            parts[name] = part
    return parts


class Attachments:
    """File storage under one folder, and the endpoints around it."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        settings = dispatcher.settings
        self.d = dispatcher
        self.base = Path(settings.attachment_base_path).resolve()
        self.base_url = settings.attachment_base_url
        self.max_size = settings.attachment_max_size_bytes

    # -- files ---------------------------------------------------------------------------
    def _path(self, location: str) -> Path | None:
        """The stored file of a location, or None when it is not one of ours."""
        parts = location.split("/")
        if len(parts) != 3 or not all(NAME_PATTERN.fullmatch(p) for p in parts[:2]):
            return None
        if not _STORED_NAME.fullmatch(parts[2]):
            return None
        path = (self.base / parts[0] / parts[1] / parts[2]).resolve()
        return path if path.is_relative_to(self.base) else None

    def _save(self, bucket_id: str, collection_id: str, part: EmailMessage) -> JSONObject:
        content = part.get_payload(decode=True)
        if not isinstance(content, bytes):
            raise _invalid("Attachment missing.", FIELD)
        if self.max_size is not None and len(content) > self.max_size:
            raise _invalid(f"File size exceeds {self.max_size} bytes", FIELD)
        filename = part.get_filename() or "attachment"
        filename = filename.replace("\\", "/").rsplit("/", 1)[-1][:255] or "attachment"
        extension = Path(filename).suffix
        if not _EXTENSION.fullmatch(extension):
            extension = ""
        location = f"{bucket_id}/{collection_id}/{uuid.uuid4()}{extension.lower()}"
        path = self._path(location)
        if path is None:  # ids were validated: cannot happen, but never write elsewhere
            raise _invalid("Invalid attachment location", FIELD)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        mimetype = part.get_content_type()
        if mimetype in ("text/plain", "application/octet-stream"):
            mimetype = mimetypes.guess_type(filename)[0] or mimetype
        return {
            "filename": filename,
            "hash": hashlib.sha256(content).hexdigest(),
            "mimetype": mimetype,
            "size": len(content),
            "location": location,
        }

    def _remove(self, attachment: Any) -> None:
        if isinstance(attachment, dict) and isinstance(attachment.get("location"), str):
            path = self._path(attachment["location"])
            if path is not None:
                path.unlink(missing_ok=True)

    # -- endpoints -----------------------------------------------------------------------
    def _ids(self, params: dict[str, str]) -> tuple[str, str, str]:
        bucket_id, collection_id, record_id = params["bucket"], params["collection"], params["id"]
        if not all(NAME_PATTERN.fullmatch(i) and i.isascii() for i in (bucket_id, collection_id)):
            raise ObjectNotFound("collection", collection_id, parent=True)
        if not RECORD.is_valid_id(record_id):
            raise ValidationError("Invalid object id", location="path", name=None)
        return bucket_id, collection_id, record_id

    async def post(self, req: WebRequest, params: dict[str, str], tx: Tx | None) -> WebResponse:
        bucket_id, collection_id, record_id = self._ids(params)
        content_type = req.headers.get("content-type", "")
        if "multipart/form-data" not in content_type.lower():
            raise _invalid("Content-Type should be multipart/form-data")
        parts = parse_multipart(content_type, req.body)
        unknown = sorted(set(parts) - {FIELD, "data", "permissions"})
        if unknown:
            raise _invalid(f"body: {unknown[0]!r} not in ('data', 'permissions')", unknown[0])
        if FIELD not in parts:
            raise _invalid("Attachment missing.", FIELD)
        body: JSONObject = {"data": {}}
        for name in ("data", "permissions"):
            if name in parts:
                raw = parts[name].get_payload(decode=True)
                try:
                    body[name] = orjson.loads(raw if isinstance(raw, bytes) else b"")
                except orjson.JSONDecodeError as exc:
                    raise _invalid(f"body: {name} is not valid JSON ({exc})", name) from None
        if not isinstance(body["data"], dict):
            raise _invalid("data is not a JSON object", "data")
        saved = self._save(bucket_id, collection_id, parts[FIELD])
        try:
            _, previous = await self._write(req, tx, params, record_id, body, saved)
        except BaseException:
            self._remove(saved)  # the record was not written: no orphan file
            raise
        self._remove(previous)
        ids = {"bucket": bucket_id, "collection": collection_id}
        location = f"{self.d.base_url(req)}{self.d.prefix}{RECORD.object_uri(ids, record_id)}"
        return WebResponse(201, saved, {"Location": location})

    async def delete(self, req: WebRequest, params: dict[str, str], tx: Tx | None) -> WebResponse:
        _, _, record_id = self._ids(params)
        body: JSONObject = {"data": {FIELD: None}}
        _, previous = await self._write(req, tx, params, record_id, body, None, existing=True)
        self._remove(previous)
        return WebResponse(204, None)

    async def _write(
        self,
        req: WebRequest,
        tx: Tx | None,
        params: dict[str, str],
        record_id: str,
        body: JSONObject,
        saved: JSONObject | None,
        *,
        existing: bool = False,
    ) -> tuple[Outcome, Any]:
        """Create or patch the record through the service; the previous attachment."""
        if saved is not None:
            body["data"][FIELD] = saved
        ids = {"bucket": params["bucket"], "collection": params["collection"]}
        user_id = await self.d.authenticate(req, tx)
        service = self.d.service
        async with self.d.transaction(tx, write=True) as t:
            caller = await load_caller(t.permission, user_id)
            call = Call(spec=RECORD, ids=ids, caller=caller, object_id=record_id, body=body)
            parent_uri = RECORD.parent_uri(ids)
            current = await t.storage.get(RECORD.name, parent_uri, record_id)
            if current is None and existing:
                # As a DELETE of a missing record: 404 for readers of the collection.
                return await service.delete_object(t, call), None
            if current is None:
                return await service.put_object(t, call), None
            outcome = await service.patch_object(t, call)
            return outcome, current.get(FIELD)

    async def serve(self, req: WebRequest, params: dict[str, str], tx: Tx | None) -> WebResponse:
        location = f"{params['bucket']}/{params['collection']}/{params['name']}"
        path = self._path(location)
        if path is None or not path.is_file():
            raise ObjectNotFound("attachment", params["name"])
        mimetype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        headers = {
            "Content-Type": mimetype,
            "Content-Disposition": "attachment",
            "Cache-Control": "max-age=3600",
        }
        return WebResponse(200, None, headers, raw=path.read_bytes())

    async def on_change(self, tx: Tx, change: Change) -> None:
        """A deleted record takes its file with it."""
        if change.action == "delete" and change.old is not None:
            self._remove(change.old.get(FIELD))


def install(dispatcher: Dispatcher) -> Attachments:
    """Serve attachments of records; announce the ``attachments`` capability."""
    attachments = Attachments(dispatcher)
    dispatcher.add(
        "attachment",
        "/buckets/{bucket}/collections/{collection}/records/{id}/attachment",
        ("POST", "DELETE"),
        _dispatching(attachments),
    )
    dispatcher.add(
        "attachment-file",
        "/attachments/{bucket}/{collection}/{name}",
        ("GET",),
        attachments.serve,
    )
    dispatcher.service.events.on_change(attachments.on_change, resources=("record",))
    configured = attachments.base_url

    def capability(api_url: str) -> JSONObject:
        # Clients download base_url + location (kinto-http.py download_attachment).
        base_url = configured if configured is not None else f"{api_url}attachments/"
        return {
            "description": "Add file attachments to records",
            "url": "https://github.com/Kinto/kinto-attachment/",
            "base_url": base_url if base_url.endswith("/") else base_url + "/",
            "gzipped": False,
        }

    dispatcher.capabilities["attachments"] = capability
    return attachments


def _dispatching(attachments: Attachments) -> Any:
    async def handler(req: WebRequest, params: dict[str, str], tx: Tx | None) -> WebResponse:
        if req.method == "POST":
            return await attachments.post(req, params, tx)
        return await attachments.delete(req, params, tx)

    return handler


__all__ = ["Attachments", "install", "parse_multipart"]
