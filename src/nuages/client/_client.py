"""``Client`` and ``AsyncClient``: thin senders over httpx that drive the shared operations.

Each public method is an operation of :class:`Endpoints` bound to this sender's way of sending
(``_blocking`` / ``_awaiting`` keep its signature and docstring for type checkers and ``help``).
The senders own only I/O: the HTTP connection pool, retries with sleeps, and pagination loops.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx

from nuages.client._base import AlertCallback, BaseClient, Op
from nuages.client._endpoints import Endpoints
from nuages.client._errors import HTTPError, TransportError
from nuages.client._requests import Record, Request, Response
from nuages.client._retry import RetryPolicy

__all__ = ["AsyncClient", "Auth", "Client"]

P = ParamSpec("P")
T = TypeVar("T")

Auth = tuple[str, str] | httpx.Auth | None
"""Credentials: ``(user, password)`` for Basic Auth, or any ``httpx.Auth``."""


def _public_name(op: Callable[..., Any]) -> str:
    return op.__name__.lstrip("_")


def _blocking(
    op: Callable[Concatenate[Endpoints, P], Op[T]],
) -> Callable[Concatenate[Client, P], T]:
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(op(self, *args, **kwargs))

    method.__name__ = method.__qualname__ = _public_name(op)
    method.__doc__ = op.__doc__
    return method


def _awaiting(
    op: Callable[Concatenate[Endpoints, P], Op[T]],
) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]:
    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(op(self, *args, **kwargs))

    method.__name__ = method.__qualname__ = _public_name(op)
    method.__doc__ = op.__doc__
    return method


def _iterating(
    first: Callable[Concatenate[Endpoints, P], Request],
) -> Callable[Concatenate[Client, P], Iterator[Record]]:
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[Record]:
        return self.iter_pages(first(self, *args, **kwargs))

    method.__name__ = method.__qualname__ = "iter_records"
    method.__doc__ = "Iterate over the matching records, one page (``limit``) fetched at a time."
    return method


def _async_iterating(
    first: Callable[Concatenate[Endpoints, P], Request],
) -> Callable[Concatenate[AsyncClient, P], AsyncIterator[Record]]:
    def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[Record]:
        return self.iter_pages(first(self, *args, **kwargs))

    method.__name__ = method.__qualname__ = "iter_records"
    method.__doc__ = "Iterate over the matching records, one page (``limit``) fetched at a time."
    return method


def _to_response(request: Request, raw: httpx.Response) -> Response:
    headers = {name.lower(): value for name, value in raw.headers.items()}
    body: Any = None
    if raw.content:
        if "json" in headers.get("content-type", ""):
            try:
                body = json.loads(raw.content)
            except ValueError:
                body = raw.text
        else:
            body = raw.text
    return Response(raw.status_code, headers, body, method=request.method, url=str(raw.url))


def _httpx_arguments(client: BaseClient, request: Request) -> dict[str, Any]:
    headers = dict(request.headers)
    arguments: dict[str, Any] = {"method": request.method, "url": request.url(client.server_url)}
    if request.files is not None:
        arguments["files"] = dict(request.files)
        arguments["data"] = dict(request.form or {})
    elif request.body is not None:
        headers.setdefault("Content-Type", "application/json")
        arguments["content"] = request.content()
    arguments["headers"] = headers
    return arguments


def _never_sent(exc: httpx.TransportError) -> bool:
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))


def _transport_error(request: Request, url: str, exc: httpx.TransportError) -> TransportError:
    error = TransportError(f"{request.method} {url}: {exc!r}", method=request.method, url=url)
    error.__cause__ = exc
    return error


def _default_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    return {"Accept": "application/json", **(headers or {})}


class Client(Endpoints):
    """Blocking client of a Kinto-compatible server (Nuages, Kinto ≥ 1.x API).

    ``server_url`` ends with the version prefix, e.g. ``http://127.0.0.1:8888/v1``. ``auth`` is a
    ``(user, password)`` pair or an ``httpx.Auth``; ``retry`` bounds the retries of failed
    requests (:class:`RetryPolicy`); ``on_alert`` receives end-of-life ``Alert`` headers (else a
    :class:`EndOfLifeWarning` is issued). ``transport`` (e.g. ``httpx.MockTransport``) or a whole
    ``http_client`` may be given instead of the default connection pool.

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        server_url: str,
        *,
        auth: Auth = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        on_alert: AlertCallback | None = None,
        transport: httpx.BaseTransport | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(server_url, retry=retry, on_alert=on_alert)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(
            auth=auth, headers=_default_headers(headers), timeout=timeout, transport=transport
        )

    def close(self) -> None:
        """Close the connection pool (unless it was given by the caller)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def send(self, request: Request) -> Response:
        """Send one request, retrying as the :class:`RetryPolicy` allows.

        Returns the :class:`Response` (status < 400, 304 included); raises the typed
        :class:`HTTPError` for an error answer, :class:`TransportError` when none came.
        """
        attempt = 0
        while True:
            arguments = _httpx_arguments(self, request)
            try:
                raw = self._http.request(**arguments)
            except httpx.TransportError as exc:
                delay = self.retry.delay_after_transport_error(
                    request, attempt, sent=not _never_sent(exc)
                )
                if delay is None:
                    raise _transport_error(request, arguments["url"], exc) from exc
            else:
                response = _to_response(request, raw)
                self._observe(response)
                if response.ok:
                    return response
                delay = self.retry.delay_after_response(request, response, attempt)
                if delay is None:
                    raise response.error()
            time.sleep(delay)
            attempt += 1

    def _run(self, op: Op[T]) -> T:
        try:
            request = next(op)
            while True:
                try:
                    response = self.send(request)
                except (HTTPError, TransportError) as exc:
                    request = op.throw(exc)
                else:
                    request = op.send(response)
        except StopIteration as stop:
            result: T = stop.value
            return result

    def iter_pages(self, first: Request) -> Iterator[Record]:
        """Iterate over the objects of a list, from ``first`` and then along ``Next-Page``."""
        request: Request | None = first
        while request is not None:
            response = self.send(request)
            yield from response.data or []
            request = self._next_request(response)

    server_info = _blocking(Endpoints._get_server_info)
    batch = _blocking(Endpoints._send_batch)
    get_bucket = _blocking(Endpoints._get_bucket)
    get_buckets = _blocking(Endpoints._get_buckets)
    create_bucket = _blocking(Endpoints._create_bucket)
    update_bucket = _blocking(Endpoints._update_bucket)
    patch_bucket = _blocking(Endpoints._patch_bucket)
    delete_bucket = _blocking(Endpoints._delete_bucket)
    delete_buckets = _blocking(Endpoints._delete_buckets)
    get_collection = _blocking(Endpoints._get_collection)
    get_collections = _blocking(Endpoints._get_collections)
    create_collection = _blocking(Endpoints._create_collection)
    update_collection = _blocking(Endpoints._update_collection)
    patch_collection = _blocking(Endpoints._patch_collection)
    delete_collection = _blocking(Endpoints._delete_collection)
    delete_collections = _blocking(Endpoints._delete_collections)
    get_group = _blocking(Endpoints._get_group)
    get_groups = _blocking(Endpoints._get_groups)
    create_group = _blocking(Endpoints._create_group)
    update_group = _blocking(Endpoints._update_group)
    patch_group = _blocking(Endpoints._patch_group)
    delete_group = _blocking(Endpoints._delete_group)
    get_record = _blocking(Endpoints._get_record)
    get_records = _blocking(Endpoints._get_records)
    iter_records = _iterating(Endpoints._records_request)
    count_records = _blocking(Endpoints._count_records)
    get_records_timestamp = _blocking(Endpoints._get_records_timestamp)
    create_record = _blocking(Endpoints._create_record)
    update_record = _blocking(Endpoints._update_record)
    patch_record = _blocking(Endpoints._patch_record)
    delete_record = _blocking(Endpoints._delete_record)
    delete_records = _blocking(Endpoints._delete_records)
    get_permissions = _blocking(Endpoints._get_permissions)
    get_history = _blocking(Endpoints._get_history)
    create_account = _blocking(Endpoints._create_account)
    get_account = _blocking(Endpoints._get_account)
    get_accounts = _blocking(Endpoints._get_accounts)
    change_password = _blocking(Endpoints._change_password)
    delete_account = _blocking(Endpoints._delete_account)
    add_attachment = _blocking(Endpoints._add_attachment)
    delete_attachment = _blocking(Endpoints._delete_attachment)


class AsyncClient(Endpoints):
    """The asyncio twin of :class:`Client`: same constructor, same methods, awaited.

    Use it as an async context manager, or call :meth:`aclose`.
    """

    def __init__(
        self,
        server_url: str,
        *,
        auth: Auth = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        on_alert: AlertCallback | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(server_url, retry=retry, on_alert=on_alert)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(
            auth=auth, headers=_default_headers(headers), timeout=timeout, transport=transport
        )

    async def aclose(self) -> None:
        """Close the connection pool (unless it was given by the caller)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def send(self, request: Request) -> Response:
        """Send one request, retrying as the :class:`RetryPolicy` allows (see ``Client.send``)."""
        attempt = 0
        while True:
            arguments = _httpx_arguments(self, request)
            try:
                raw = await self._http.request(**arguments)
            except httpx.TransportError as exc:
                delay = self.retry.delay_after_transport_error(
                    request, attempt, sent=not _never_sent(exc)
                )
                if delay is None:
                    raise _transport_error(request, arguments["url"], exc) from exc
            else:
                response = _to_response(request, raw)
                self._observe(response)
                if response.ok:
                    return response
                delay = self.retry.delay_after_response(request, response, attempt)
                if delay is None:
                    raise response.error()
            await asyncio.sleep(delay)
            attempt += 1

    async def _run(self, op: Op[T]) -> T:
        try:
            request = next(op)
            while True:
                try:
                    response = await self.send(request)
                except (HTTPError, TransportError) as exc:
                    request = op.throw(exc)
                else:
                    request = op.send(response)
        except StopIteration as stop:
            result: T = stop.value
            return result

    async def iter_pages(self, first: Request) -> AsyncIterator[Record]:
        """Iterate over the objects of a list, from ``first`` and then along ``Next-Page``."""
        request: Request | None = first
        while request is not None:
            response = await self.send(request)
            for item in response.data or []:
                yield item
            request = self._next_request(response)

    server_info = _awaiting(Endpoints._get_server_info)
    batch = _awaiting(Endpoints._send_batch)
    get_bucket = _awaiting(Endpoints._get_bucket)
    get_buckets = _awaiting(Endpoints._get_buckets)
    create_bucket = _awaiting(Endpoints._create_bucket)
    update_bucket = _awaiting(Endpoints._update_bucket)
    patch_bucket = _awaiting(Endpoints._patch_bucket)
    delete_bucket = _awaiting(Endpoints._delete_bucket)
    delete_buckets = _awaiting(Endpoints._delete_buckets)
    get_collection = _awaiting(Endpoints._get_collection)
    get_collections = _awaiting(Endpoints._get_collections)
    create_collection = _awaiting(Endpoints._create_collection)
    update_collection = _awaiting(Endpoints._update_collection)
    patch_collection = _awaiting(Endpoints._patch_collection)
    delete_collection = _awaiting(Endpoints._delete_collection)
    delete_collections = _awaiting(Endpoints._delete_collections)
    get_group = _awaiting(Endpoints._get_group)
    get_groups = _awaiting(Endpoints._get_groups)
    create_group = _awaiting(Endpoints._create_group)
    update_group = _awaiting(Endpoints._update_group)
    patch_group = _awaiting(Endpoints._patch_group)
    delete_group = _awaiting(Endpoints._delete_group)
    get_record = _awaiting(Endpoints._get_record)
    get_records = _awaiting(Endpoints._get_records)
    iter_records = _async_iterating(Endpoints._records_request)
    count_records = _awaiting(Endpoints._count_records)
    get_records_timestamp = _awaiting(Endpoints._get_records_timestamp)
    create_record = _awaiting(Endpoints._create_record)
    update_record = _awaiting(Endpoints._update_record)
    patch_record = _awaiting(Endpoints._patch_record)
    delete_record = _awaiting(Endpoints._delete_record)
    delete_records = _awaiting(Endpoints._delete_records)
    get_permissions = _awaiting(Endpoints._get_permissions)
    get_history = _awaiting(Endpoints._get_history)
    create_account = _awaiting(Endpoints._create_account)
    get_account = _awaiting(Endpoints._get_account)
    get_accounts = _awaiting(Endpoints._get_accounts)
    change_password = _awaiting(Endpoints._change_password)
    delete_account = _awaiting(Endpoints._delete_account)
    add_attachment = _awaiting(Endpoints._add_attachment)
    delete_attachment = _awaiting(Endpoints._delete_attachment)
