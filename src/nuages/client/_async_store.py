"""The asyncio flavour of the local store: the same store, run on one worker thread.

Every call goes to a single worker thread that owns the SQLite work, so the event loop never
waits on the disk. An asyncio lock keeps one task's ``transaction()`` to itself: other tasks'
calls wait until it ends. ``sync()`` drives the same operation as the blocking flavour, with
its local steps on the worker thread and its requests awaited on the loop.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from nuages.client._errors import HTTPError, TransportError
from nuages.client._model import (
    ChangeCallback,
    MergeCallback,
    Strategy,
    SyncMode,
    SyncResult,
    Transformer,
)
from nuages.client._requests import Request, Response
from nuages.client._store import LocalCollection, LocalStore

if TYPE_CHECKING:
    from nuages.client._client import AsyncClient
    from nuages.client._sync import FlushPolicy

__all__ = ["AsyncLocalCollection", "AsyncLocalStore"]

P = ParamSpec("P")
T = TypeVar("T")


class AsyncLocalStore:
    """A :class:`LocalStore` for asyncio code: same file format, awaitable methods.

    Close it with :meth:`aclose`, or use ``async with``.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.store = LocalStore(path, timeout=timeout)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nuages-store")
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None
        self._collections: dict[str, AsyncLocalCollection] = {}

    @property
    def path(self) -> str:
        """The SQLite file."""
        return self.store.path

    def __repr__(self) -> str:
        return f"AsyncLocalStore({self.store.path!r})"

    def collection(self, name: str) -> AsyncLocalCollection:
        """The local collection ``name``."""
        if name not in self._collections:
            self._collections[name] = AsyncLocalCollection(self, self.store.collection(name))
        return self._collections[name]

    async def aclose(self) -> None:
        """Close the database and stop the worker thread."""
        await self._call(self.store.close)
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> AsyncLocalStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def _owned(self) -> bool:
        return self._owner is not None and self._owner is asyncio.current_task()

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._owned():
            return await self._run(fn, *args, **kwargs)
        async with self._lock:
            return await self._run(fn, *args, **kwargs)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """``async with store.transaction():`` — writes inside are one atomic transaction.

        Other tasks' calls on this store wait until it ends; see :meth:`LocalStore.transaction`.
        """
        if self._owned():
            await self._run(self.store._begin)
            try:
                yield
            except BaseException:
                await self._run(self.store._end, commit=False)
                raise
            await self._run(self.store._end, commit=True)
            return
        async with self._lock:
            self._owner = asyncio.current_task()
            try:
                await self._run(self.store._begin)
                try:
                    yield
                except BaseException:
                    await self._run(self.store._end, commit=False)
                    raise
                await self._run(self.store._end, commit=True)
            finally:
                self._owner = None


def _threaded(
    method: Callable[Concatenate[LocalCollection, P], T],
) -> Callable[Concatenate[AsyncLocalCollection, P], Coroutine[Any, Any, T]]:
    async def wrapper(self: AsyncLocalCollection, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.store._call(method, self.local, *args, **kwargs)

    wrapper.__name__ = wrapper.__qualname__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


def _step(
    op: Generator[Request, Response, SyncResult],
    response: Response | None,
    error: BaseException | None,
) -> tuple[bool, Any]:
    try:
        if error is not None:
            return False, op.throw(error)
        if response is None:
            return False, next(op)
        return False, op.send(response)
    except StopIteration as stop:
        return True, stop.value


class AsyncLocalCollection:
    """The awaitable twin of :class:`LocalCollection` (same methods, awaited)."""

    def __init__(self, store: AsyncLocalStore, local: LocalCollection) -> None:
        self.store = store
        self.local = local
        self.name = local.name

    def __repr__(self) -> str:
        return f"AsyncLocalCollection({self.store.path!r}, {self.name!r})"

    def transaction(self) -> AbstractAsyncContextManager[None]:
        """``async with collection.transaction():`` — see :meth:`AsyncLocalStore.transaction`."""
        return self.store.transaction()

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """See :meth:`LocalCollection.on_change`; callbacks run on the store's worker thread."""
        return self.local.on_change(callback)

    async def last_modified(self) -> int | None:
        """The server collection timestamp this store has pulled up to (``None``: never)."""
        return await self.store._call(lambda: self.local.last_modified)

    get = _threaded(LocalCollection.get)
    status = _threaded(LocalCollection.status)
    list = _threaded(LocalCollection.list)
    count = _threaded(LocalCollection.count)
    conflicts = _threaded(LocalCollection.conflicts)
    create = _threaded(LocalCollection.create)
    update = _threaded(LocalCollection.update)
    delete = _threaded(LocalCollection.delete)
    clear = _threaded(LocalCollection.clear)
    reset_sync_status = _threaded(LocalCollection.reset_sync_status)
    resolve = _threaded(LocalCollection.resolve)

    async def sync(
        self,
        client: AsyncClient,
        *,
        bucket: str,
        collection: str | None = None,
        strategy: Strategy = Strategy.MANUAL,
        merge: MergeCallback | None = None,
        mode: SyncMode = SyncMode.BOTH,
        transformers: Sequence[Transformer] = (),
        page_size: int | None = None,
        if_flushed: FlushPolicy = "raise",
        ignore_backoff: bool = False,
    ) -> SyncResult:
        """See :meth:`LocalCollection.sync`; local work happens on the store's worker thread."""
        from nuages.client._sync import SyncOptions, sync_op

        options = SyncOptions(
            bucket=bucket,
            collection=collection or self.name,
            strategy=Strategy(strategy),
            merge=merge,
            mode=SyncMode(mode),
            transformers=tuple(transformers),
            page_size=page_size,
            if_flushed=if_flushed,
            ignore_backoff=ignore_backoff,
        )
        op = sync_op(self.local, client, options)
        done, value = await self.store._call(_step, op, None, None)
        while not done:
            try:
                response = await client.send(value)
            except (HTTPError, TransportError) as exc:
                done, value = await self.store._call(_step, op, None, exc)
            else:
                done, value = await self.store._call(_step, op, response, None)
        result: SyncResult = value
        return result
