"""What both clients share, I/O-free: configuration, server state, and every operation.

An operation is a generator: it yields the :class:`Request` s it needs, receives each
:class:`Response` (an error answer is thrown into it as the typed exception, so it may catch,
say, :class:`PreconditionFailed`), and returns its result. :class:`Client` drives operations with
blocking httpx calls and :class:`AsyncClient` with awaits; neither contains protocol logic, so
the two cannot drift apart.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from nuages.client._errors import NotFound, PreconditionFailed
from nuages.client._headers import EndOfLifeWarning, parse_alert, parse_seconds
from nuages.client._requests import (
    PatchType,
    Record,
    Request,
    RequestBuilder,
    Response,
)
from nuages.client._retry import RetryPolicy

__all__ = ["AlertCallback", "BaseClient", "Op"]

T = TypeVar("T")
Op = Generator[Request, Response, T]
"""An operation: yields requests, is sent their responses, returns its result."""

AlertCallback = Callable[[dict[str, Any]], None]
"""Called with the parsed ``Alert`` header (``code``, ``message``, ``url``) when it changes."""

Permissions = Mapping[str, Iterable[str]]
Filters = Mapping[str, Any]

DEFAULT_BATCH_MAX_REQUESTS = 25
"""Chunk size when the server sets no limit (``batch_max_requests`` null or 0)."""


class BaseClient:
    """Configuration and protocol logic of :class:`Client` and :class:`AsyncClient`; no I/O."""

    def __init__(
        self,
        server_url: str,
        *,
        retry: RetryPolicy | None = None,
        on_alert: AlertCallback | None = None,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self.requests = RequestBuilder()
        self.retry = retry if retry is not None else RetryPolicy()
        self._on_alert = on_alert
        self._last_alert: dict[str, Any] | None = None
        self._backoff_until = 0.0
        self._server_info: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.server_url!r})"

    # -- what the server told us ---------------------------------------------------------------

    @property
    def backoff(self) -> float:
        """Seconds the server still asks clients to wait before non-essential requests (0: none).

        Set by the ``Backoff`` header of any answer; ``sync()`` refuses to start while it lasts.
        """
        return max(0.0, self._backoff_until - time.monotonic())

    def _observe(self, response: Response) -> None:
        """Remember ``Backoff``; surface a new ``Alert`` (callback, else a warning)."""
        seconds = parse_seconds(response.headers.get("backoff"))
        if seconds:
            self._backoff_until = time.monotonic() + seconds
        alert = parse_alert(response.headers.get("alert"))
        if alert is not None and alert != self._last_alert:
            self._last_alert = alert
            if self._on_alert is not None:
                self._on_alert(alert)
            else:
                message = f"{alert.get('code')}: {alert.get('message')} ({alert.get('url')})"
                warnings.warn(message, EndOfLifeWarning, stacklevel=4)

    # -- server --------------------------------------------------------------------------------

    def _server_info_op(self) -> Op[dict[str, Any]]:
        """``GET /``: ``http_api_version``, ``settings``, ``user``, ``capabilities``, …"""
        response = yield self.requests.server_info()
        info = dict(response.body)
        self._server_info = info
        return info

    def _batch_max_requests_op(self) -> Op[int]:
        """The server's ``batch_max_requests`` (read once from ``GET /``, then remembered)."""
        info = self._server_info
        if info is None:
            info = yield from self._server_info_op()
        value = (info.get("settings") or {}).get("batch_max_requests")
        return int(value) if isinstance(value, int) and value > 0 else DEFAULT_BATCH_MAX_REQUESTS

    def _batch_op(self, requests: Iterable[Request]) -> Op[list[Response]]:
        """Send requests through ``POST /batch``, chunked by the server's ``batch_max_requests``.

        Returns one :class:`Response` per request, in order; a sub-request's error does not raise
        (check ``response.ok`` or call ``raise_for_status()``). Each chunk is one transaction on
        the server; a 5xx fails (and rolls back) its whole chunk and is raised.
        """
        pending = list(requests)
        size = yield from self._batch_max_requests_op()
        results: list[Response] = []
        for start in range(0, len(pending), size):
            chunk = pending[start : start + size]
            response = yield self.requests.batch(chunk)
            results.extend(self._sub_responses(chunk, response))
        return results

    def _sub_responses(self, chunk: Sequence[Request], response: Response) -> list[Response]:
        entries = response.body.get("responses", []) if isinstance(response.body, dict) else []
        out = []
        for request, entry in zip(chunk, entries, strict=False):
            headers = {str(k).lower(): str(v) for k, v in (entry.get("headers") or {}).items()}
            sub = Response(
                int(entry.get("status", 0)),
                headers,
                entry.get("body"),
                method=request.method,
                url=request.url(self.server_url),
            )
            self._observe(sub)
            out.append(sub)
        return out

    # -- generic operations --------------------------------------------------------------------

    def _get_op(self, path: str) -> Op[Record]:
        response = yield self.requests.get(path)
        return dict(response.data)

    def _list_op(self, first: Request) -> Op[list[Record]]:
        items: list[Record] = []
        request: Request | None = first
        while request is not None:
            response = yield request
            items.extend(response.data or [])
            request = self._next_request(response)
        return items

    def _next_request(self, response: Response) -> Request | None:
        url = response.next_page
        return None if url is None else self.requests.next_page(url)

    def _create_op(
        self,
        plural_path: str,
        object_path: str | None,
        data: Mapping[str, Any] | None,
        permissions: Permissions | None,
        if_not_exists: bool,
    ) -> Op[Record]:
        request = self.requests.create(plural_path, object_path, data, permissions)
        try:
            response = yield request
        except PreconditionFailed as exc:
            if not if_not_exists or object_path is None:
                raise
            if exc.existing is not None:
                return exc.existing
            return (yield from self._get_op(object_path))
        return dict(response.data)

    def _replace_op(
        self,
        path: str,
        data: Mapping[str, Any] | None,
        permissions: Permissions | None,
        if_match: int | None,
    ) -> Op[Record]:
        response = yield self.requests.replace(path, data, permissions, if_match=if_match)
        return dict(response.data)

    def _patch_op(
        self,
        path: str,
        data: Any,
        permissions: Mapping[str, Iterable[str] | None] | None,
        patch_type: PatchType,
        if_match: int | None,
    ) -> Op[Record]:
        response = yield self.requests.patch(
            path, data, permissions, patch_type=patch_type, if_match=if_match
        )
        return dict(response.data)

    def _delete_op(self, path: str, if_match: int | None, if_exists: bool) -> Op[Record | None]:
        try:
            response = yield self.requests.delete(path, if_match=if_match)
        except NotFound:
            if if_exists:
                return None
            raise
        return dict(response.data)

    def _delete_list_op(self, path: str, filters: Filters | None) -> Op[list[Record]]:
        deleted: list[Record] = []
        request: Request | None = self.requests.delete_list(path, filters)
        while request is not None:
            response = yield request
            deleted.extend(response.data or [])
            url = response.next_page
            request = None if url is None else Request("DELETE", url)
        return deleted

    def _count_op(self, path: str, filters: Filters | None) -> Op[int]:
        response = yield self.requests.count(path, filters)
        return response.total or 0
