"""Async context managers that wrap another without an async generator each.

``@asynccontextmanager`` costs every use an async generator: its creation, its
registration with the event loop (for shutdown) and two steps through it. A write
request opened eight of them around its transaction; the thin ones are these now.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")
U = TypeVar("U")


class Entered(Generic[T, U]):
    """``async with Entered(inner, wrap) as value``: enters `inner` and gives
    ``wrap(what inner gave)``. Leaving leaves `inner`, which sees any exception and may
    suppress it: what ``async with inner as x: yield wrap(x)`` does in an
    ``@asynccontextmanager``."""

    __slots__ = ("_inner", "_wrap")

    def __init__(self, inner: AbstractAsyncContextManager[T], wrap: Callable[[T], U]) -> None:
        self._inner = inner
        self._wrap = wrap

    async def __aenter__(self) -> U:
        entered = await self._inner.__aenter__()
        try:
            return self._wrap(entered)
        except BaseException as exc:
            await self._inner.__aexit__(type(exc), exc, exc.__traceback__)
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        return await self._inner.__aexit__(exc_type, exc, traceback)


class Given(Generic[T]):
    """``async with Given(value) as v``: `value`, and nothing to do on leaving."""

    __slots__ = ("_value",)

    def __init__(self, value: T) -> None:
        self._value = value

    async def __aenter__(self) -> T:
        return self._value

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None
