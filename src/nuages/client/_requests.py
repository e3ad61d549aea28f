"""Requests and responses as values, and the I/O-free builder of every endpoint's request.

Nothing here sends anything: :class:`RequestBuilder` turns a call such as "update record r of
collection c in bucket b, if it is still at timestamp t" into a :class:`Request`, which either
client sends, or which goes into a batch. :class:`Response` is what comes back, already parsed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, urlencode

from nuages.client._errors import HTTPError, error_from_response
from nuages.client._headers import parse_etag, parse_seconds, quote_etag

__all__ = [
    "ListParams",
    "PatchType",
    "Record",
    "Request",
    "RequestBuilder",
    "Response",
    "encode_filters",
]

Record = dict[str, Any]
"""An object as the server sends it: ``id``, ``last_modified`` and the application's fields."""

PatchType = Literal["merge", "merge-patch", "json-patch"]
"""How ``patch_*`` methods change an object (protocol/03 §6):

* ``"merge"``: ``application/json``, a shallow merge where ``None`` stores ``null``;
* ``"merge-patch"``: ``application/merge-patch+json`` (RFC 7396), ``None`` removes a key;
* ``"json-patch"``: ``application/json-patch+json`` (RFC 6902), ``data`` is a list of operations.
"""

_PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/json",
    "merge-patch": "application/merge-patch+json",
    "json-patch": "application/json-patch+json",
}
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request of the protocol, not sent yet.

    ``path`` is relative to the server URL (``/buckets/b``) or, for a ``Next-Page`` link, an
    absolute URL. ``body`` is JSON (``None``: no body); ``files`` and ``form`` make a multipart
    body instead (attachments). ``idempotent`` says whether sending it twice is harmless, which
    decides whether a request cut by the network is retried.
    """

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None
    files: Mapping[str, tuple[str, bytes, str]] | None = None
    form: Mapping[str, str] | None = None
    idempotent: bool | None = None

    @property
    def is_idempotent(self) -> bool:
        """Safe to send again: by method, by a precondition header, or as declared."""
        if self.idempotent is not None:
            return self.idempotent
        if self.method in _IDEMPOTENT_METHODS:
            return True
        return any(name.lower() in ("if-match", "if-none-match") for name in self.headers)

    def url(self, server_url: str) -> str:
        """The absolute URL of this request on the server at ``server_url`` (ending in /v1)."""
        base = self.path if "://" in self.path else server_url.rstrip("/") + self.path
        if not self.params:
            return base
        return base + ("&" if "?" in base else "?") + urlencode(self.params)

    def content(self) -> bytes | None:
        """The JSON body as bytes, or ``None``."""
        return None if self.body is None else _dumps(self.body).encode("utf-8")

    def to_batch(self) -> dict[str, Any]:
        """This request as an entry of a ``POST /batch`` body (protocol/07 §1)."""
        if "://" in self.path:
            raise ValueError("an absolute URL cannot be sent in a batch")
        if self.files is not None:
            raise ValueError("a multipart request cannot be sent in a batch")
        path = self.path + ("?" + urlencode(self.params) if self.params else "")
        entry: dict[str, Any] = {"method": self.method, "path": path}
        if self.headers:
            entry["headers"] = dict(self.headers)
        if self.body is not None:
            entry["body"] = self.body
        return entry


@dataclass(frozen=True, slots=True)
class Response:
    """An answer: ``status``, ``headers`` (lower-case names), ``body`` (parsed JSON, or text).

    Also used for the sub-responses of a batch.
    """

    status: int
    headers: Mapping[str, str]
    body: Any
    method: str = ""
    url: str = ""

    @property
    def ok(self) -> bool:
        """Status below 400 (304 included)."""
        return self.status < 400

    @property
    def data(self) -> Any:
        """``body["data"]`` (an object, or a list of objects on plural URLs)."""
        if isinstance(self.body, dict):
            return self.body.get("data")
        return None

    @property
    def permissions(self) -> dict[str, list[str]]:
        """``body["permissions"]``, ``{}`` when absent."""
        if isinstance(self.body, dict) and isinstance(self.body.get("permissions"), dict):
            return dict(self.body["permissions"])
        return {}

    @property
    def etag(self) -> int | None:
        """The ``ETag`` header as an integer timestamp."""
        return parse_etag(self.headers.get("etag"))

    @property
    def next_page(self) -> str | None:
        """The ``Next-Page`` URL, absent on the last page."""
        return self.headers.get("next-page") or None

    @property
    def total(self) -> int | None:
        """``Total-Objects`` (or the legacy ``Total-Records``) of a HEAD on a list."""
        return parse_seconds(self.headers.get("total-objects") or self.headers.get("total-records"))

    def error(self) -> HTTPError:
        """The typed exception for this (error) answer."""
        return error_from_response(
            self.status, self.body, self.headers, method=self.method, url=self.url
        )

    def raise_for_status(self) -> Response:
        """Raise the typed exception if the status is 400 or more; else return ``self``."""
        if self.status >= 400:
            raise self.error()
        return self


def encode_filters(filters: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """Filters as query parameters (protocol/05 §2); values are Python values.

    ``{"done": False, "in_status": ["a", "b"], "like_title": "moz*"}`` →
    ``done=false&in_status="a","b"&like_title="moz*"``. Strings are sent JSON-quoted, so that
    ``"12"`` stays a string. ``in_``/``exclude_`` take a sequence (whose items cannot contain a
    comma: the protocol has no escape); ``contains_``/``contains_any_`` a sequence or one value.
    """
    params: list[tuple[str, str]] = []
    for name, value in (filters or {}).items():
        if name.startswith(("in_", "exclude_")) and isinstance(value, (list, tuple, set)):
            params.append((name, ",".join(_dumps(item) for item in value)))
        elif name.startswith("_") and isinstance(value, (int, str)) and not isinstance(value, bool):
            params.append((name, str(value)))
        else:
            params.append((name, _dumps(value)))
    return params


@dataclass(frozen=True, slots=True)
class ListParams:
    """The reserved list parameters (protocol/05 §1), besides filters."""

    filters: Mapping[str, Any] | None = None
    sort: str | Sequence[str] | None = None
    since: int | None = None
    before: int | None = None
    fields: Sequence[str] | None = None
    limit: int | None = None

    def to_params(self) -> list[tuple[str, str]]:
        """The query parameters."""
        params = encode_filters(self.filters)
        if self.sort:
            sort = self.sort if isinstance(self.sort, str) else ",".join(self.sort)
            params.append(("_sort", sort))
        if self.since is not None:
            params.append(("_since", str(int(self.since))))
        if self.before is not None:
            params.append(("_before", str(int(self.before))))
        if self.fields:
            params.append(("_fields", ",".join(self.fields)))
        if self.limit is not None:
            params.append(("_limit", str(int(self.limit))))
        return params


def _segment(value: str) -> str:
    if not value:
        raise ValueError("an id cannot be empty")
    return quote(value, safe="")


def _precondition(
    if_match: int | None = None, if_none_match: int | Literal["*"] | None = None
) -> dict[str, str]:
    headers: dict[str, str] = {}
    if if_match is not None:
        headers["If-Match"] = quote_etag(if_match)
    if if_none_match is not None:
        headers["If-None-Match"] = "*" if if_none_match == "*" else quote_etag(if_none_match)
    return headers


def _object_body(
    data: Mapping[str, Any] | None, permissions: Mapping[str, Iterable[str]] | None
) -> dict[str, Any] | None:
    body: dict[str, Any] = {}
    if data is not None:
        body["data"] = dict(data)
    if permissions is not None:
        body["permissions"] = {kind: list(principals) for kind, principals in permissions.items()}
    return body or None


class RequestBuilder:
    """Builds the :class:`Request` of every endpoint; sends nothing.

    Paths are relative to the server URL (``…/v1``). Object kinds and their URLs follow Kinto's
    (protocol/02 §1), including the plugin endpoints (history, accounts, attachments).
    """

    # -- paths ---------------------------------------------------------------------------------

    @staticmethod
    def buckets_path() -> str:
        """``/buckets``"""
        return "/buckets"

    @staticmethod
    def bucket_path(bucket: str) -> str:
        """``/buckets/{bucket}``"""
        return f"/buckets/{_segment(bucket)}"

    def collections_path(self, bucket: str) -> str:
        """``/buckets/{bucket}/collections``"""
        return f"{self.bucket_path(bucket)}/collections"

    def collection_path(self, bucket: str, collection: str) -> str:
        """``/buckets/{bucket}/collections/{collection}``"""
        return f"{self.collections_path(bucket)}/{_segment(collection)}"

    def groups_path(self, bucket: str) -> str:
        """``/buckets/{bucket}/groups``"""
        return f"{self.bucket_path(bucket)}/groups"

    def group_path(self, bucket: str, group: str) -> str:
        """``/buckets/{bucket}/groups/{group}``"""
        return f"{self.groups_path(bucket)}/{_segment(group)}"

    def records_path(self, bucket: str, collection: str) -> str:
        """``/buckets/{bucket}/collections/{collection}/records``"""
        return f"{self.collection_path(bucket, collection)}/records"

    def record_path(self, bucket: str, collection: str, record: str) -> str:
        """``/buckets/{bucket}/collections/{collection}/records/{record}``"""
        return f"{self.records_path(bucket, collection)}/{_segment(record)}"

    @staticmethod
    def accounts_path() -> str:
        """``/accounts``"""
        return "/accounts"

    @staticmethod
    def account_path(account: str) -> str:
        """``/accounts/{account}``"""
        return f"/accounts/{_segment(account)}"

    # -- generic requests ----------------------------------------------------------------------

    @staticmethod
    def get(path: str, *, if_none_match: int | None = None, fields: Sequence[str] = ()) -> Request:
        """``GET`` one object; ``If-None-Match`` makes an unchanged object answer 304."""
        params = (("_fields", ",".join(fields)),) if fields else ()
        return Request("GET", path, params=params, headers=_precondition(None, if_none_match))

    @staticmethod
    def list(
        path: str, params: ListParams | None = None, *, if_none_match: int | None = None
    ) -> Request:
        """``GET`` one page of a list; follow :attr:`Response.next_page` for the others."""
        query = tuple((params or ListParams()).to_params())
        return Request("GET", path, params=query, headers=_precondition(None, if_none_match))

    @staticmethod
    def count(path: str, filters: Mapping[str, Any] | None = None) -> Request:
        """``HEAD`` on a list: ``Total-Objects`` and the list ``ETag``."""
        return Request("HEAD", path, params=tuple(encode_filters(filters)))

    @staticmethod
    def next_page(url: str) -> Request:
        """``GET`` the page at a ``Next-Page`` URL, verbatim."""
        return Request("GET", url)

    @staticmethod
    def create(
        plural_path: str,
        object_path: str | None,
        data: Mapping[str, Any] | None = None,
        permissions: Mapping[str, Iterable[str]] | None = None,
        *,
        safe: bool = True,
    ) -> Request:
        """Create: ``PUT`` with ``If-None-Match: *`` when the id is known, else ``POST``.

        With ``safe=False`` and a known id, a plain ``PUT`` (creates or replaces).
        """
        body = _object_body(data, permissions)
        if object_path is None:
            return Request("POST", plural_path, body=body)
        headers = {"If-None-Match": "*"} if safe else {}
        return Request("PUT", object_path, headers=headers, body=body)

    @staticmethod
    def replace(
        path: str,
        data: Mapping[str, Any] | None = None,
        permissions: Mapping[str, Iterable[str]] | None = None,
        *,
        if_match: int | None = None,
    ) -> Request:
        """``PUT`` (create or replace entirely); ``if_match`` makes it a safe update."""
        return Request(
            "PUT", path, headers=_precondition(if_match), body=_object_body(data, permissions)
        )

    @staticmethod
    def patch(
        path: str,
        data: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        permissions: Mapping[str, Iterable[str] | None] | None = None,
        *,
        patch_type: PatchType = "merge",
        if_match: int | None = None,
    ) -> Request:
        """``PATCH``; see :data:`PatchType` for the three flavours."""
        headers = _precondition(if_match)
        headers["Content-Type"] = _PATCH_CONTENT_TYPES[patch_type]
        body: Any
        if patch_type == "json-patch":
            if isinstance(data, Mapping):
                raise TypeError("a JSON-Patch is a list of operations")
            body = [dict(operation) for operation in (data or [])]
        else:
            if data is not None and not isinstance(data, Mapping):
                raise TypeError(f"a {patch_type!r} patch takes a mapping of fields")
            body = {}
            if data is not None:
                body["data"] = dict(data)
            if permissions is not None:
                body["permissions"] = {
                    kind: None if principals is None else list(principals)
                    for kind, principals in permissions.items()
                }
        return Request("PATCH", path, headers=headers, body=body, idempotent=False)

    @staticmethod
    def delete(path: str, *, if_match: int | None = None) -> Request:
        """``DELETE`` one object; ``if_match`` makes it a safe deletion."""
        return Request("DELETE", path, headers=_precondition(if_match))

    @staticmethod
    def delete_list(
        path: str, filters: Mapping[str, Any] | None = None, *, if_match: int | None = None
    ) -> Request:
        """``DELETE`` on a list: every matching object the caller may write (one page of them)."""
        return Request(
            "DELETE", path, params=tuple(encode_filters(filters)), headers=_precondition(if_match)
        )

    # -- specific endpoints --------------------------------------------------------------------

    @staticmethod
    def server_info() -> Request:
        """``GET /``: version, public settings (``batch_max_requests``), user, capabilities."""
        return Request("GET", "/")

    @staticmethod
    def heartbeat() -> Request:
        """``GET /__heartbeat__``."""
        return Request("GET", "/__heartbeat__")

    @staticmethod
    def batch(requests: Sequence[Request]) -> Request:
        """``POST /batch`` of up to ``batch_max_requests`` requests, run in one transaction.

        Idempotent when every sub-request is.
        """
        body = {"requests": [request.to_batch() for request in requests]}
        idempotent = all(request.is_idempotent for request in requests)
        return Request("POST", "/batch", body=body, idempotent=idempotent)

    @staticmethod
    def permissions(params: ListParams | None = None) -> Request:
        """``GET /permissions``: every object the caller has a permission on."""
        return Request("GET", "/permissions", params=tuple((params or ListParams()).to_params()))

    def history(self, bucket: str, params: ListParams | None = None) -> Request:
        """``GET /buckets/{bucket}/history`` (history plugin)."""
        query = tuple((params or ListParams()).to_params())
        return Request("GET", f"{self.bucket_path(bucket)}/history", params=query)

    def create_account(
        self, account: str, password: str, data: Mapping[str, Any] | None = None
    ) -> Request:
        """``PUT /accounts/{id}`` with ``If-None-Match: *`` (accounts plugin)."""
        fields = {**(data or {}), "password": password}
        return self.create(self.accounts_path(), self.account_path(account), fields)

    def attachment_path(self, bucket: str, collection: str, record: str) -> str:
        """``…/records/{record}/attachment`` (kinto-attachment)."""
        return f"{self.record_path(bucket, collection, record)}/attachment"

    def add_attachment(
        self,
        bucket: str,
        collection: str,
        record: str,
        content: bytes,
        *,
        filename: str,
        mimetype: str = "application/octet-stream",
        data: Mapping[str, Any] | None = None,
        permissions: Mapping[str, Iterable[str]] | None = None,
    ) -> Request:
        """``POST …/attachment``, multipart: the file in field ``attachment``, plus JSON fields."""
        form: dict[str, str] = {}
        if data is not None:
            form["data"] = _dumps(dict(data))
        if permissions is not None:
            form["permissions"] = _dumps({k: list(v) for k, v in permissions.items()})
        return Request(
            "POST",
            self.attachment_path(bucket, collection, record),
            files={"attachment": (filename, content, mimetype)},
            form=form,
            idempotent=True,
        )
