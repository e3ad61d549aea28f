"""Entered and Given behave as the ``@asynccontextmanager`` wrappers they replace."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from nuages.core.contexts import Entered, Given


class Boom(Exception):
    pass


def recording(events: list[str], *, suppress: bool = False) -> AbstractAsyncContextManager[int]:
    @asynccontextmanager
    async def inner() -> AsyncIterator[int]:
        events.append("enter")
        try:
            yield 41
        except Boom:
            events.append("saw Boom")
            if not suppress:
                raise
        finally:
            events.append("exit")

    return inner()


async def test_entered_gives_the_wrapped_value_and_leaves_the_inner() -> None:
    events: list[str] = []
    async with Entered(recording(events), lambda value: value + 1) as value:
        assert value == 42
        assert events == ["enter"]
    assert events == ["enter", "exit"]


async def test_entered_passes_an_exception_to_the_inner_which_may_suppress_it() -> None:
    events: list[str] = []
    with pytest.raises(Boom):
        async with Entered(recording(events), str):
            raise Boom()
    assert events == ["enter", "saw Boom", "exit"]

    events.clear()
    async with Entered(recording(events, suppress=True), str):
        raise Boom()
    assert events == ["enter", "saw Boom", "exit"]


async def test_entered_leaves_the_inner_when_the_wrap_fails() -> None:
    events: list[str] = []

    def wrap(value: int) -> int:
        raise Boom()

    with pytest.raises(Boom):
        async with Entered(recording(events), wrap):
            pytest.fail("the body must not run")  # pragma: no cover
    assert events == ["enter", "saw Boom", "exit"]


async def test_given_gives_its_value_and_lets_exceptions_through() -> None:
    async with Given("tx") as value:
        assert value == "tx"
    with pytest.raises(Boom):
        async with Given("tx"):
            raise Boom()
