"""``sync()``: one operation that both clients drive (it yields requests, like every other).

Pull: ``GET …/records?_since=<stored timestamp>&_sort=last_modified`` and every ``Next-Page``.
Pages come in ascending timestamp order, so after each page (applied in one local transaction)
everything up to its last timestamp is known locally: that is stored as progress, and an
interrupted pull resumes from there. Server changes over pending local ones are conflicts.

Push: pending records in ``POST /batch`` chunks of ``batch_max_requests``. Creations are
``PUT`` with ``If-None-Match: *`` (ids are made on the client, so a creation sent twice cannot
duplicate), updates ``PUT`` with ``If-Match``, deletions ``DELETE`` with ``If-Match``. Records
are marked in flight before a chunk is sent; when its answer is lost, the next sync sends them
again, and the server's 412 with an identical record (or 404 for a deletion) counts as done.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from nuages.client._base import BaseClient, Op
from nuages.client._errors import (
    BackoffError,
    HTTPError,
    NotFound,
    PreconditionFailed,
    ServerFlushed,
    SyncError,
)
from nuages.client._model import (
    Conflict,
    MergeCallback,
    Strategy,
    SyncFailure,
    SyncMode,
    SyncResult,
    SyncStatus,
    Transformer,
)
from nuages.client._requests import ListParams, Record, Request, Response
from nuages.client._store import Row, _fields

if TYPE_CHECKING:
    from nuages.client._store import LocalCollection

__all__ = ["FlushPolicy", "SyncOptions", "apply_resolution", "sync_op"]

FlushPolicy = Literal["raise", "reupload"]
"""What ``sync()`` does when the server lost the collection's data (see ``ServerFlushed``)."""

MAX_PUSH_ROUNDS = 3
"""Pushes per sync: conflicts settled in favour of local versions are pushed again."""


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """The parameters of one ``sync()`` (see ``LocalCollection.sync``)."""

    bucket: str
    collection: str
    strategy: Strategy = Strategy.MANUAL
    merge: MergeCallback | None = None
    mode: SyncMode = SyncMode.BOTH
    transformers: tuple[Transformer, ...] = ()
    page_size: int | None = None
    if_flushed: FlushPolicy = "raise"
    ignore_backoff: bool = False


def sync_op(coll: LocalCollection, client: BaseClient, options: SyncOptions) -> Op[SyncResult]:
    """Synchronise ``coll`` with the server collection named in ``options``."""
    if client.backoff > 0 and not options.ignore_backoff:
        raise BackoffError(client.backoff)
    remote = client.requests.collection_path(options.bucket, options.collection)
    stored_remote, timestamp = coll._meta()
    if stored_remote is not None and stored_remote != remote:
        raise SyncError(f"{coll!r} syncs with {stored_remote}, not {remote}")
    if stored_remote is None:
        with coll.transaction():
            coll._set_meta(remote, timestamp)
    result = SyncResult()
    if options.merge is not None or options.strategy != Strategy.MANUAL:
        _settle_stored(coll, options, result)
    if options.mode != SyncMode.PUSH:
        yield from _pull(coll, client, options, result, remote)
    if options.mode != SyncMode.PULL:
        pushed = yield from _push(coll, client, options, result)
        if pushed and options.mode == SyncMode.BOTH:
            yield from _pull(coll, client, options, result, remote)
    result.timestamp = coll.last_modified
    return result


# -- pull ----------------------------------------------------------------------------------------


def _pull(
    coll: LocalCollection,
    client: BaseClient,
    options: SyncOptions,
    result: SyncResult,
    remote: str,
) -> Op[None]:
    since = coll.last_modified
    path = client.requests.records_path(options.bucket, options.collection)
    params = ListParams(sort="last_modified", since=since, limit=options.page_size)
    try:
        response = yield client.requests.list(path, params, if_none_match=since)
    except NotFound:
        if since is None:
            raise
        _flushed(coll, options, since, None, remote)
        raise ServerFlushed(since, None) from None
    etag = response.etag
    if response.status == 304:
        return
    if since is not None and etag is not None and etag < since:
        _flushed(coll, options, since, etag, remote)
        yield from _pull(coll, client, options, result, remote)
        return
    while True:
        with coll.transaction():
            top = since
            for item in response.data or []:
                _apply_incoming(coll, item, options, result)
                stamp = item.get("last_modified")
                if isinstance(stamp, int) and (top is None or stamp > top):
                    top = stamp
            progress = top if etag is None or top is None else min(top, etag)
            if progress is not None and progress != since:
                coll._set_meta(remote, progress)
                since = progress
        url = response.next_page
        if url is None:
            break
        response = yield client.requests.next_page(url)
    if etag is not None and (since is None or etag > since):
        with coll.transaction():
            coll._set_meta(remote, etag)


def _flushed(
    coll: LocalCollection,
    options: SyncOptions,
    local: int,
    remote_timestamp: int | None,
    remote: str,
) -> None:
    if options.if_flushed != "reupload":
        raise ServerFlushed(local, remote_timestamp)
    with coll.transaction():
        coll.reset_sync_status()
        coll._set_meta(remote, None)


def _decode(item: Record, transformers: Sequence[Transformer]) -> Record:
    record = dict(item)
    for transformer in reversed(transformers):
        record = transformer.decode(record)
    record["id"] = item["id"]
    if "last_modified" in item:
        record["last_modified"] = item["last_modified"]
    return record


def _apply_incoming(
    coll: LocalCollection, item: Record, options: SyncOptions, result: SyncResult
) -> None:
    """Apply one server change (record or tombstone) to the local collection."""
    record_id = item["id"]
    stamp = item.get("last_modified")
    deleted = item.get("deleted") is True
    row = coll._row(record_id)
    remote = None if deleted else _decode(item, options.transformers)
    if row is None:
        if remote is not None:
            new = Row(record_id, _fields(remote), SyncStatus.SYNCED, stamp)
            coll._put(new)
            coll._emit("create", record_id, new.record(), None, "remote")
            result.pulled.created.append(new.record())
        return
    if row.last_modified == stamp:
        # The version this record is already based on (our own push, or a page seen twice).
        if row.in_flight:
            coll._put(replace(row, in_flight=False))
        return
    if row.status == SyncStatus.SYNCED:
        if remote is None:
            coll._remove(record_id)
            coll._emit("delete", record_id, None, row.record(), "remote")
            result.pulled.deleted.append(row.record())
        else:
            new = replace(row, data=_fields(remote), last_modified=stamp, in_flight=False)
            coll._put(new)
            coll._emit("update", record_id, new.record(), row.record(), "remote")
            result.pulled.updated.append(new.record())
        return
    if remote is None and row.status == SyncStatus.DELETED:
        coll._remove(record_id)
        coll._drop_conflict(record_id)
        return
    if remote is not None and row.status != SyncStatus.DELETED and _fields(remote) == row.data:
        # Same content on both sides, e.g. our own push whose answer was lost.
        coll._put(replace(row, status=SyncStatus.SYNCED, last_modified=stamp, in_flight=False))
        coll._drop_conflict(record_id)
        return
    local = None if row.status == SyncStatus.DELETED else row.record()
    _settle(coll, Conflict(record_id, local, remote), options, result)


# -- conflicts -----------------------------------------------------------------------------------

_UNSET: Any = object()


def _settle(
    coll: LocalCollection, conflict: Conflict, options: SyncOptions, result: SyncResult
) -> None:
    resolution = _UNSET
    if options.merge is not None:
        merged = options.merge(conflict)
        if merged is not None:
            resolution = {**merged, "id": conflict.id}
    if resolution is _UNSET:
        if options.strategy == Strategy.SERVER_WINS:
            resolution = conflict.remote
        elif options.strategy == Strategy.CLIENT_WINS:
            resolution = conflict.local
        else:
            coll._save_conflict(conflict)
            result.conflicts.append(conflict)
            return
    apply_resolution(coll, conflict, resolution)
    result.resolved.append(conflict)


def _settle_stored(coll: LocalCollection, options: SyncOptions, result: SyncResult) -> None:
    """Settle the conflicts left by earlier syncs, now that a strategy or a merge is given."""
    with coll.transaction():
        for stored in coll.conflicts():
            row = coll._row(stored.id)
            local = None if row is None or row.status == SyncStatus.DELETED else row.record()
            _settle(coll, Conflict(stored.id, local, stored.remote), options, result)


def apply_resolution(
    coll: LocalCollection, conflict: Conflict, resolution: Record | None
) -> Record | None:
    """Make ``resolution`` (``None``: deleted) the local version, based on the server's.

    Must run inside a transaction of ``coll``'s store. Returns the record as now stored.
    """
    record_id = conflict.id
    row = coll._row(record_id)
    old = None if row is None or row.status == SyncStatus.DELETED else row.record()
    revision = row.revision + 1 if row is not None else 1
    in_flight = row.in_flight if row is not None else False
    remote = conflict.remote
    new: Row | None
    if remote is not None:
        stamp = conflict.remote_timestamp
        if resolution is None:
            data = row.data if row is not None else _fields(remote)
            new = Row(record_id, data, SyncStatus.DELETED, stamp, revision, in_flight)
        elif _fields(resolution) == _fields(remote):
            new = Row(record_id, _fields(remote), SyncStatus.SYNCED, stamp, revision)
        else:
            new = Row(
                record_id, _fields(resolution), SyncStatus.UPDATED, stamp, revision, in_flight
            )
    elif resolution is None:
        new = None
    else:
        new = Row(record_id, _fields(resolution), SyncStatus.CREATED, None, revision, in_flight)
    if new is None:
        if row is not None:
            coll._remove(record_id)
    else:
        coll._put(new)
    coll._drop_conflict(record_id)
    visible = None if new is None or new.status == SyncStatus.DELETED else new.record()
    if old is None and visible is not None:
        coll._emit("create", record_id, visible, None, "remote")
    elif old is not None and visible is None:
        coll._emit("delete", record_id, None, old, "remote")
    elif old is not None and visible is not None and _fields(old) != _fields(visible):
        coll._emit("update", record_id, visible, old, "remote")
    return visible


# -- push ----------------------------------------------------------------------------------------


def _push_request(client: BaseClient, options: SyncOptions, row: Row) -> Request:
    path = client.requests.record_path(options.bucket, options.collection, row.id)
    if row.status == SyncStatus.DELETED:
        return client.requests.delete(path, if_match=row.last_modified)
    record: Record = {"id": row.id, **row.data}
    for transformer in options.transformers:
        record = transformer.encode(record)
    record.pop("last_modified", None)
    record["id"] = row.id
    if row.last_modified is None:
        return client.requests.create(path, path, record)
    return client.requests.replace(path, record, if_match=row.last_modified)


def _push(
    coll: LocalCollection, client: BaseClient, options: SyncOptions, result: SyncResult
) -> Op[int]:
    size = yield from client._batch_max_requests_op()
    failed: set[str] = set()
    sent = 0
    for _ in range(MAX_PUSH_ROUNDS):
        rows = coll._pending(failed)
        if not rows:
            break
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            requests = [_push_request(client, options, row) for row in chunk]
            coll._mark_in_flight([row.id for row in chunk])
            response = yield client.requests.batch(requests)
            sent += len(chunk)
            for row, sub in zip(chunk, client._sub_responses(requests, response), strict=True):
                yield from _pushed(coll, client, options, result, failed, row, sub)
    return sent


def _pushed(
    coll: LocalCollection,
    client: BaseClient,
    options: SyncOptions,
    result: SyncResult,
    failed: set[str],
    sent: Row,
    sub: Response,
) -> Op[None]:
    """Apply the server's answer to one pushed record."""
    if sub.ok:
        with coll.transaction():
            _accepted(coll, options, result, sent, sub.data)
        return
    error = sub.error()
    if sub.status == 404 and sent.status == SyncStatus.DELETED and error.errno != 111:
        with coll.transaction():  # already deleted on the server
            _accepted(coll, options, result, sent, {"id": sent.id, "deleted": True})
        return
    if sub.status != 412:
        failed.add(sent.id)
        result.errors.append(SyncFailure(sent.id, error))
        return
    existing = error.existing if isinstance(error, PreconditionFailed) else None
    if existing is None:
        path = client.requests.record_path(options.bucket, options.collection, sent.id)
        try:
            response = yield client.requests.get(path)
            existing = dict(response.data)
        except NotFound:
            existing = None
        except HTTPError as exc:
            failed.add(sent.id)
            result.errors.append(SyncFailure(sent.id, exc))
            return
    remote = None if existing is None else _decode(existing, options.transformers)
    with coll.transaction():
        current = coll._row(sent.id)
        if current is None:
            return
        if remote is None and current.status == SyncStatus.DELETED:
            coll._remove(sent.id)
            return
        same = remote is not None and _fields(remote) == current.data
        if same and current.status != SyncStatus.DELETED:
            # An earlier push of this very version landed; its answer was lost.
            _accepted(coll, options, result, sent, existing or {})
            return
        local = None if current.status == SyncStatus.DELETED else current.record()
        _settle(coll, Conflict(sent.id, local, remote), options, result)


def _accepted(
    coll: LocalCollection,
    options: SyncOptions,
    result: SyncResult,
    sent: Row,
    data: Any,
) -> None:
    """The server holds ``sent`` (or its deletion); ``data`` is what it answered."""
    current = coll._row(sent.id)
    if current is None:
        return
    if sent.status == SyncStatus.DELETED or (isinstance(data, dict) and data.get("deleted")):
        tombstone = {"id": sent.id, "deleted": True}
        if isinstance(data, dict) and "last_modified" in data:
            tombstone["last_modified"] = data["last_modified"]
        if current.revision == sent.revision:
            coll._remove(sent.id)
        elif current.status != SyncStatus.DELETED:
            # Re-created locally while the deletion was on its way: create it again.
            coll._put(
                replace(current, status=SyncStatus.CREATED, last_modified=None, in_flight=False)
            )
        result.pushed.deleted.append(tombstone)
        return
    server = _decode(dict(data), options.transformers)
    stamp = server.get("last_modified")
    if current.revision == sent.revision:
        new = replace(
            current,
            data=_fields(server),
            status=SyncStatus.SYNCED,
            last_modified=stamp,
            in_flight=False,
        )
        coll._put(new)
        if new.data != current.data:
            coll._emit("update", sent.id, new.record(), current.record(), "remote")
    else:
        status = SyncStatus.DELETED if current.status == SyncStatus.DELETED else SyncStatus.UPDATED
        coll._put(replace(current, status=status, last_modified=stamp, in_flight=False))
    bucket = result.pushed.created if sent.status == SyncStatus.CREATED else result.pushed.updated
    bucket.append(server)
