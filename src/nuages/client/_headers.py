"""Reading and writing the protocol's headers: ETags, ``Backoff``, ``Retry-After``, ``Alert``."""

from __future__ import annotations

import json
from typing import Any


class EndOfLifeWarning(UserWarning):
    """The server announced its end of life in an ``Alert`` header (protocol/08 §2).

    Issued (once per distinct alert) unless the client was given an ``on_alert`` callback.
    """


def quote_etag(timestamp: int) -> str:
    """``123`` → ``'"123"'``, the only form ``If-Match`` / ``If-None-Match`` accept."""
    return f'"{int(timestamp)}"'


def parse_etag(value: str | None) -> int | None:
    """``'"123"'`` → ``123``; ``None`` for an absent or malformed ETag."""
    if not value:
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    return int(text) if text.isdigit() else None


def parse_seconds(value: str | None) -> int | None:
    """An integer number of seconds (``Backoff``, ``Retry-After``), or ``None``."""
    if value is None:
        return None
    text = value.strip()
    return int(text) if text.isdigit() else None


def parse_alert(value: str | None) -> dict[str, Any] | None:
    """The ``Alert`` header, a JSON object (``code``, ``message``, ``url``); ``None`` if absent.

    A value that is not JSON is kept as the message, so nothing the server says is lost.
    """
    if not value:
        return None
    try:
        alert = json.loads(value)
    except ValueError:
        return {"code": None, "message": value, "url": None}
    if not isinstance(alert, dict):
        return {"code": None, "message": str(alert), "url": None}
    return alert
