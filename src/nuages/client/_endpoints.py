"""Every endpoint's operation, once for both clients (I/O-free, see :mod:`._base`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nuages.client._base import BaseClient, Filters, Op, Permissions
from nuages.client._requests import ListParams, PatchType, Record, Request, Response

__all__ = ["Endpoints"]


class Endpoints(BaseClient):
    """The operations behind the public methods of :class:`Client` and :class:`AsyncClient`."""

    # -- buckets -------------------------------------------------------------------------------

    def _get_server_info(self) -> Op[dict[str, Any]]:
        """Server information (``GET /``): version, public settings, user, capabilities."""
        return (yield from self._server_info_op())

    def _send_batch(self, requests: Iterable[Request]) -> Op[list[Response]]:
        """Send requests (built with ``client.requests``) through ``POST /batch``.

        Chunked by the server's ``batch_max_requests``; each chunk is one transaction on the
        server. Returns one :class:`Response` per request, in order: a sub-request's error does
        not raise (check ``response.ok`` or call ``raise_for_status()``); a 5xx fails its whole
        chunk and is raised.
        """
        return (yield from self._batch_op(requests))

    def _get_bucket(self, id: str) -> Op[Record]:
        """The bucket ``id``; :class:`NotFound` / :class:`Forbidden` if there is none to read."""
        return (yield from self._get_op(self.requests.bucket_path(id)))

    def _get_buckets(
        self,
        *,
        filters: Filters | None = None,
        sort: str | Sequence[str] | None = None,
        since: int | None = None,
        limit: int | None = None,
    ) -> Op[list[Record]]:
        """Every bucket the caller can see (all pages)."""
        params = ListParams(filters, sort, since, limit=limit)
        return (yield from self._list_op(self.requests.list("/buckets", params)))

    def _create_bucket(
        self,
        id: str | None = None,
        *,
        data: Mapping[str, Any] | None = None,
        permissions: Permissions | None = None,
        if_not_exists: bool = False,
    ) -> Op[Record]:
        """Create a bucket (safe: never replaces); ``if_not_exists`` returns an existing one."""
        path = None if id is None else self.requests.bucket_path(id)
        return (yield from self._create_op("/buckets", path, data, permissions, if_not_exists))

    def _update_bucket(
        self,
        id: str,
        *,
        data: Mapping[str, Any] | None = None,
        permissions: Permissions | None = None,
        if_match: int | None = None,
    ) -> Op[Record]:
        """Replace a bucket (``PUT``); ``if_match`` fails with 412 if it changed meanwhile."""
        path = self.requests.bucket_path(id)
        return (yield from self._replace_op(path, data, permissions, if_match))

    def _patch_bucket(
        self,
        id: str,
        *,
        data: Any = None,
        permissions: Mapping[str, Iterable[str] | None] | None = None,
        patch_type: PatchType = "merge",
        if_match: int | None = None,
    ) -> Op[Record]:
        """Modify a bucket (``PATCH``, see :data:`PatchType`)."""
        path = self.requests.bucket_path(id)
        return (yield from self._patch_op(path, data, permissions, patch_type, if_match))

    def _delete_bucket(
        self, id: str, *, if_match: int | None = None, if_exists: bool = False
    ) -> Op[Record | None]:
        """Delete a bucket and everything in it; returns the tombstone."""
        path = self.requests.bucket_path(id)
        return (yield from self._delete_op(path, if_match, if_exists))

    def _delete_buckets(self, *, filters: Filters | None = None) -> Op[list[Record]]:
        """Delete every bucket the caller may write (matching ``filters``)."""
        return (yield from self._delete_list_op("/buckets", filters))

    # -- collections ---------------------------------------------------------------------------

    def _get_collection(self, bucket: str, id: str) -> Op[Record]:
        """The collection ``id`` of ``bucket``."""
        return (yield from self._get_op(self.requests.collection_path(bucket, id)))

    def _get_collections(
        self,
        bucket: str,
        *,
        filters: Filters | None = None,
        sort: str | Sequence[str] | None = None,
        since: int | None = None,
        limit: int | None = None,
    ) -> Op[list[Record]]:
        """Every collection of ``bucket`` the caller can see (all pages)."""
        params = ListParams(filters, sort, since, limit=limit)
        request = self.requests.list(self.requests.collections_path(bucket), params)
        return (yield from self._list_op(request))

    def _create_collection(
        self,
        bucket: str,
        id: str | None = None,
        *,
        data: Mapping[str, Any] | None = None,
        permissions: Permissions | None = None,
        if_not_exists: bool = False,
    ) -> Op[Record]:
        """Create a collection in ``bucket``; ``if_not_exists`` returns an existing one."""
        plural = self.requests.collections_path(bucket)
        path = None if id is None else self.requests.collection_path(bucket, id)
        return (yield from self._create_op(plural, path, data, permissions, if_not_exists))

    def _update_collection(
        self,
        bucket: str,
        id: str,
        *,
        data: Mapping[str, Any] | None = None,
        permissions: Permissions | None = None,
        if_match: int | None = None,
    ) -> Op[Record]:
        """Replace a collection (``PUT``)."""
        path = self.requests.collection_path(bucket, id)
        return (yield from self._replace_op(path, data, permissions, if_match))

    def _patch_collection(
        self,
        bucket: str,
        id: str,
        *,
        data: Any = None,
        permissions: Mapping[str, Iterable[str] | None] | None = None,
        patch_type: PatchType = "merge",
        if_match: int | None = None,
    ) -> Op[Record]:
        """Modify a collection (``PATCH``)."""
        path = self.requests.collection_path(bucket, id)
        return (yield from self._patch_op(path, data, permissions, patch_type, if_match))

    def _delete_collection(
        self, bucket: str, id: str, *, if_match: int | None = None, if_exists: bool = False
    ) -> Op[Record | None]:
        """Delete a collection and its records."""
        path = self.requests.collection_path(bucket, id)
        return (yield from self._delete_op(path, if_match, if_exists))

    def _delete_collections(
        self, bucket: str, *, filters: Filters | None = None
    ) -> Op[list[Record]]:
        """Delete every collection of ``bucket`` the caller may write."""
        return (yield from self._delete_list_op(self.requests.collections_path(bucket), filters))

    # -- groups --------------------------------------------------------------------------------

    def _get_group(self, bucket: str, id: str) -> Op[Record]:
        """The group ``id`` of ``bucket``."""
        return (yield from self._get_op(self.requests.group_path(bucket, id)))

    def _get_groups(
        self,
        bucket: str,
        *,
        filters: Filters | None = None,
        sort: str | Sequence[str] | None = None,
        limit: int | None = None,
    ) -> Op[list[Record]]:
        """Every group of ``bucket`` the caller can see (all pages)."""
        params = ListParams(filters, sort, limit=limit)
        request = self.requests.list(self.requests.groups_path(bucket), params)
        return (yield from self._list_op(request))

    def _create_group(
        self,
        bucket: str,
        id: str | None = None,
        *,
        members: Sequence[str] = (),
        data: Mapping[str, Any] | None = None,
        permissions: Permissions | None = None,
        if_not_exists: bool = False,
    ) -> Op[Record]:
        """Create a group of principals in ``bucket``."""
        fields = {**(data or {}), "members": list(members)}
        plural = self.requests.groups_path(bucket)
        path = None if id is None else self.requests.group_path(bucket, id)
        return (yield from self._create_op(plural, path, fields, permissions, if_not_exists))

    def _update_group(
        self,
        bucket: str,
        id: str,
        *,
        members: Sequence[str] = (),
        data: Mapping[str, Any] | None = None,
        permissions: Permissions | None = None,
        if_match: int | None = None,
    ) -> Op[Record]:
        """Replace a group (``PUT``)."""
        fields = {**(data or {}), "members": list(members)}
        path = self.requests.group_path(bucket, id)
        return (yield from self._replace_op(path, fields, permissions, if_match))

    def _patch_group(
        self,
        bucket: str,
        id: str,
        *,
        data: Any = None,
        permissions: Mapping[str, Iterable[str] | None] | None = None,
        patch_type: PatchType = "merge",
        if_match: int | None = None,
    ) -> Op[Record]:
        """Modify a group (``PATCH``)."""
        path = self.requests.group_path(bucket, id)
        return (yield from self._patch_op(path, data, permissions, patch_type, if_match))

    def _delete_group(
        self, bucket: str, id: str, *, if_match: int | None = None, if_exists: bool = False
    ) -> Op[Record | None]:
        """Delete a group."""
        path = self.requests.group_path(bucket, id)
        return (yield from self._delete_op(path, if_match, if_exists))

    # -- records -------------------------------------------------------------------------------

    def _records_request(
        self,
        bucket: str,
        collection: str,
        *,
        filters: Filters | None = None,
        sort: str | Sequence[str] | None = None,
        since: int | None = None,
        before: int | None = None,
        fields: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> Request:
        """The first page's request of a records list (``limit`` is the page size)."""
        params = ListParams(filters, sort, since, before, fields, limit)
        return self.requests.list(self.requests.records_path(bucket, collection), params)

    def _get_record(self, bucket: str, collection: str, id: str) -> Op[Record]:
        """The record ``id``; :class:`NotFound` if it does not exist."""
        return (yield from self._get_op(self.requests.record_path(bucket, collection, id)))

    def _get_records(
        self,
        bucket: str,
        collection: str,
        *,
        filters: Filters | None = None,
        sort: str | Sequence[str] | None = None,
        since: int | None = None,
        before: int | None = None,
        fields: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> Op[list[Record]]:
        """Every matching record, following ``Next-Page`` to the end (``limit``: page size).

        With ``since``/``before`` the list includes tombstones (``"deleted": True``).
        """
        first = self._records_request(
            bucket,
            collection,
            filters=filters,
            sort=sort,
            since=since,
            before=before,
            fields=fields,
            limit=limit,
        )
        return (yield from self._list_op(first))

    def _count_records(
        self, bucket: str, collection: str, *, filters: Filters | None = None
    ) -> Op[int]:
        """How many records match (``HEAD``, ``Total-Objects``; tombstones never count)."""
        return (yield from self._count_op(self.requests.records_path(bucket, collection), filters))

    def _get_records_timestamp(self, bucket: str, collection: str) -> Op[int]:
        """The collection's records timestamp (list ``ETag``): changes with every record write."""
        response = yield self.requests.count(self.requests.records_path(bucket, collection))
        return response.etag or 0

    def _create_record(
        self,
        bucket: str,
        collection: str,
        data: Mapping[str, Any] | None = None,
        *,
        id: str | None = None,
        permissions: Permissions | None = None,
        if_not_exists: bool = False,
    ) -> Op[Record]:
        """Create a record; its id is ``id``, ``data["id"]``, or chosen by the server.

        With a known id the creation is safe (``If-None-Match: *``): an existing record raises
        :class:`PreconditionFailed`, or is returned with ``if_not_exists=True``.
        """
        record_id = id if id is not None else (data or {}).get("id")
        plural = self.requests.records_path(bucket, collection)
        path = (
            None if record_id is None else self.requests.record_path(bucket, collection, record_id)
        )
        return (yield from self._create_op(plural, path, data, permissions, if_not_exists))

    def _update_record(
        self,
        bucket: str,
        collection: str,
        data: Mapping[str, Any],
        *,
        id: str | None = None,
        permissions: Permissions | None = None,
        if_match: int | None = None,
    ) -> Op[Record]:
        """Replace (or create) a record with ``PUT``; id from ``id`` or ``data["id"]``.

        ``if_match`` (e.g. the ``last_modified`` you read) fails with :class:`PreconditionFailed`
        when someone else changed it meanwhile.
        """
        record_id = id if id is not None else data["id"]
        path = self.requests.record_path(bucket, collection, record_id)
        return (yield from self._replace_op(path, data, permissions, if_match))

    def _patch_record(
        self,
        bucket: str,
        collection: str,
        id: str,
        *,
        data: Any = None,
        permissions: Mapping[str, Iterable[str] | None] | None = None,
        patch_type: PatchType = "merge",
        if_match: int | None = None,
    ) -> Op[Record]:
        """Modify a record (``PATCH``, see :data:`PatchType`)."""
        path = self.requests.record_path(bucket, collection, id)
        return (yield from self._patch_op(path, data, permissions, patch_type, if_match))

    def _delete_record(
        self,
        bucket: str,
        collection: str,
        id: str,
        *,
        if_match: int | None = None,
        if_exists: bool = False,
    ) -> Op[Record | None]:
        """Delete a record; returns its tombstone (``None`` if absent and ``if_exists``)."""
        path = self.requests.record_path(bucket, collection, id)
        return (yield from self._delete_op(path, if_match, if_exists))

    def _delete_records(
        self, bucket: str, collection: str, *, filters: Filters | None = None
    ) -> Op[list[Record]]:
        """Delete every matching record the caller may write; returns the tombstones."""
        path = self.requests.records_path(bucket, collection)
        return (yield from self._delete_list_op(path, filters))

    # -- permissions, history, accounts, attachments -------------------------------------------

    def _get_permissions(
        self, *, filters: Filters | None = None, sort: str | Sequence[str] | None = None
    ) -> Op[list[Record]]:
        """``GET /permissions``: the objects the caller holds a permission on (all pages)."""
        params = ListParams(filters, sort)
        return (yield from self._list_op(self.requests.permissions(params)))

    def _get_history(
        self,
        bucket: str,
        *,
        filters: Filters | None = None,
        sort: str | Sequence[str] | None = None,
        since: int | None = None,
        limit: int | None = None,
    ) -> Op[list[Record]]:
        """History entries of ``bucket`` (history plugin; all pages)."""
        params = ListParams(filters, sort, since, limit=limit)
        return (yield from self._list_op(self.requests.history(bucket, params)))

    def _create_account(
        self, id: str, password: str, *, data: Mapping[str, Any] | None = None
    ) -> Op[Record]:
        """Create the account ``id`` (accounts plugin)."""
        response = yield self.requests.create_account(id, password, data)
        return dict(response.data)

    def _get_account(self, id: str) -> Op[Record]:
        """The account ``id`` (accounts plugin)."""
        return (yield from self._get_op(self.requests.account_path(id)))

    def _get_accounts(self) -> Op[list[Record]]:
        """The accounts the caller can see (accounts plugin)."""
        return (yield from self._list_op(self.requests.list(self.requests.accounts_path())))

    def _change_password(self, id: str, password: str) -> Op[Record]:
        """Set the password of account ``id`` (accounts plugin)."""
        path = self.requests.account_path(id)
        return (yield from self._patch_op(path, {"password": password}, None, "merge", None))

    def _delete_account(self, id: str, *, if_exists: bool = False) -> Op[Record | None]:
        """Delete the account ``id`` (accounts plugin)."""
        return (yield from self._delete_op(self.requests.account_path(id), None, if_exists))

    def _add_attachment(
        self,
        bucket: str,
        collection: str,
        record: str,
        content: bytes,
        *,
        filename: str,
        mimetype: str = "application/octet-stream",
        data: Mapping[str, Any] | None = None,
        permissions: Permissions | None = None,
    ) -> Op[Record]:
        """Attach a file to a record (kinto-attachment); returns the updated record."""
        request = self.requests.add_attachment(
            bucket,
            collection,
            record,
            content,
            filename=filename,
            mimetype=mimetype,
            data=data,
            permissions=permissions,
        )
        response = yield request
        return dict(response.data or response.body or {})

    def _delete_attachment(self, bucket: str, collection: str, record: str) -> Op[None]:
        """Remove a record's attachment (kinto-attachment)."""
        yield self.requests.delete(self.requests.attachment_path(bucket, collection, record))
        return None
