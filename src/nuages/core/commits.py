"""What the group commits of the SQL backends share (:mod:`nuages.sqlite.database`,
:mod:`nuages.postgresql.database`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


def settle(members: Iterable[asyncio.Future[None]], error: BaseException | None) -> None:
    """Answer the members of a group once its commit is done: all succeed, or all get
    `error` (a member already answered, or cancelled, is left as it is)."""
    for member in members:
        if not member.done():
            if error is None:
                member.set_result(None)
            else:
                member.set_exception(error)
