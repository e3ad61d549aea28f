"""The one-statement object reads of PostgreSQL (postgresql/reads.py) and the stored
principals they keep: kept per user with the token of ``principals_version``, which every
change of ``user_principals`` replaces; a read whose token is not the kept one reads
the principals again, in the same call."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests import services

from nuages.core.authorization import AUTHENTICATED
from nuages.permission.postgresql import PostgreSQLPermission
from nuages.postgresql import PostgreSQLDatabase
from nuages.postgresql import reads as pg_reads
from nuages.storage.postgresql import PostgreSQLStorage
from nuages.storage.protocol import ObjectRead

PARENT = "/buckets/b/collections/c"
URI = f"{PARENT}/records/x"
GROUP = "/buckets/b/groups/g"


@pytest.fixture
async def pair() -> AsyncIterator[tuple[pg_reads.PostgreSQLObjectReader, PostgreSQLPermission]]:
    """A reader, and the permission backend of another process (a database of its own)."""
    services.require("postgresql")
    url = await services.create_database()
    await services.empty_database(url)
    storage = PostgreSQLStorage(PostgreSQLDatabase(url, pool_size=2))
    reader = storage.object_reader(PostgreSQLPermission(storage.db))
    assert reader is not None
    other = PostgreSQLPermission(PostgreSQLDatabase(url, pool_size=2))
    async with other.transaction(write=True) as tx:
        await tx.add_principal_to_ace(URI, "read", GROUP)
    yield reader, other
    await storage.aclose()
    await other.db.aclose()


@contextlib.asynccontextmanager
async def _sent(reader: pg_reads.PostgreSQLObjectReader) -> AsyncIterator[list[str]]:
    """The statements the reader sends in the block."""
    sent: list[str] = []
    statements = reader.db.statements

    @contextlib.asynccontextmanager
    async def logged() -> AsyncIterator[Any]:
        async with statements() as fetch:

            async def fetch_logged(sql: str, *args: Any) -> list[Any]:
                sent.append(sql)
                return await fetch(sql, *args)

            yield fetch_logged

    reader.db.statements = logged  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        del reader.db.statements


def _read(user: str) -> ObjectRead:
    return ObjectRead(
        (user, AUTHENTICATED), (user, AUTHENTICATED), ((URI, "read"),), ("record", PARENT, "x")
    )


async def _granted(
    reader: pg_reads.PostgreSQLObjectReader, user: str = "alice"
) -> tuple[bool, int]:
    """Whether `user` may read, and the statements the read took."""
    async with _sent(reader) as sent:
        view = await reader.read_object(_read(user))
    assert view.granted == (GROUP in view.principals)
    return view.granted, len(sent)


async def test_kept_principals_hold_until_any_membership_changes(
    pair: tuple[pg_reads.PostgreSQLObjectReader, PostgreSQLPermission],
) -> None:
    reader, other = pair
    assert await _granted(reader) == (False, 2)  # the principals, then the rest
    assert await _granted(reader) == (False, 1)  # kept
    async with other.transaction(write=True) as tx:
        await tx.add_user_principal("alice", GROUP)
        # Not committed: the read's snapshot has the kept token, and no group.
        assert await _granted(reader) == (False, 1)
    assert await _granted(reader) == (True, 3)  # an old token: principals, read again
    assert await _granted(reader) == (True, 1)
    async with other.transaction(write=True) as tx:
        await tx.add_user_principal("bob", "/buckets/b/groups/h")  # anyone's change
    assert await _granted(reader) == (True, 3)
    async with other.transaction(write=True) as tx:
        await tx.remove_principal(GROUP)
    assert await _granted(reader) == (False, 3)
    async with other.transaction(write=True) as tx:
        await tx.add_user_principal(AUTHENTICATED, GROUP)  # through system.Authenticated
    assert await _granted(reader) == (True, 3)
    assert await _granted(reader, "carol") == (True, 2)
    async with other.transaction(write=True) as tx:
        await tx.remove_user_principal(AUTHENTICATED, GROUP)
    # stored_principals reads them with the token, and keeps them too.
    assert await reader.stored_principals(("alice", AUTHENTICATED)) == frozenset()
    assert await _granted(reader) == (False, 1)
    async with other.transaction(write=True) as tx:
        await tx.add_user_principal("alice", GROUP)
    assert await _granted(reader) == (True, 3)
    await other.flush()  # whatever deletes them
    assert await _granted(reader) == (False, 3)


async def test_the_oldest_kept_principals_are_forgotten_first(
    pair: tuple[pg_reads.PostgreSQLObjectReader, PostgreSQLPermission],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reader, _ = pair
    monkeypatch.setattr(pg_reads, "MAX_KEPT_PRINCIPALS", 2)
    assert [(await _granted(reader, user))[1] for user in "abab"] == [2, 2, 1, 1]
    assert (await _granted(reader, "c"))[1] == 2  # forgets a
    assert [(await _granted(reader, user))[1] for user in "bca"] == [1, 1, 2]
