"""``If-Match`` / ``If-None-Match`` parsing and the 304/412 table of protocol/04 §3."""

from __future__ import annotations

import re
from typing import Any, Final, Literal

from nuages.core.errors import NotModified, PreconditionFailed, ValidationError

ANY: Final = "*"
ETagCondition = int | Literal["*"] | None

_QUOTED_INT = re.compile(r'^"([0-9]+)"$')


def parse_etag(header: str, value: str | None) -> ETagCondition:
    """``"123"`` → 123, ``*`` → ``"*"``, absent → None; anything else is a 400."""
    if value is None:
        return None
    value = value.strip()
    if value == ANY:
        return ANY
    match = _QUOTED_INT.match(value)
    if match is None:
        raise ValidationError(
            "The value should be integer between double quotes.", location="header", name=header
        )
    return int(match.group(1))


def check(
    *,
    current: int | None,
    if_match: ETagCondition,
    if_none_match: ETagCondition,
    read: bool,
    existing: dict[str, Any] | None = None,
    list_timestamp: int | None = None,
) -> None:
    """Raise :class:`NotModified` or :class:`PreconditionFailed`, or return.

    `current` is the timestamp of the target, None when the target is missing.
    `list_timestamp` is given for plural targets, which always exist.
    `existing` is put in the 412 only by callers allowed to read it.
    """
    exists = current is not None
    if read and isinstance(if_none_match, int) and exists and if_none_match == current:
        raise NotModified(current)
    etag = current if current is not None else (list_timestamp or 0)
    if if_match is not None and (not exists or if_match not in (ANY, current)):
        raise PreconditionFailed(etag, existing if exists else None)
    if if_none_match == ANY and exists:
        raise PreconditionFailed(etag, existing)
