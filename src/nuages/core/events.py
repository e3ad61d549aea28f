"""Change events: how plugins (history, quotas, schema validation) follow every write.

The :class:`~nuages.core.service.Service` describes each write as a :class:`Change` and hands
it to the listeners registered on its :class:`Events`, in two phases, both *inside* the write
transaction (so a batch's sub-requests share it):

``prepare``
    before the object is stored. The listener sees the object about to be written
    (``new``, without its final ``last_modified``) and may return a replacement for it, or
    reject the write by raising a domain error (e.g. a ``ValidationError``, 400). Nothing
    has been written yet, so a rejection is clean even inside a batch, where a 4xx
    sub-response does not roll the batch back.

``changed``
    after the object (and its ACL) was written; for a deletion, after the tombstone was
    written and the object's ACL deleted, before its children go (the cascade). The
    listener may write in the same transaction (a history entry, usage counters). Raising
    fails the request; its transaction is rolled back — but in a batch only a 5xx rolls the
    whole batch back (protocol/07), so a ``changed`` listener that rejects must raise an
    error answered with a 5xx (quotas answer 507), or reject in ``prepare`` instead.

Listeners are registered for some resource names (or all) and called in registration order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from nuages.core.service import Tx

JSONObject = dict[str, Any]
Action = Literal["create", "update", "delete"]
ACTIONS: Final = ("create", "update", "delete")


@dataclass(frozen=True, slots=True)
class Change:
    """One object written by one request.

    `ids` maps each resource name of the chain to its id, the object's own included
    (``{"bucket": "b", "collection": "c", "record": "r"}``). `old` is the object before the
    write (None on creation), `new` the object written — a tombstone for a deletion; in the
    ``prepare`` phase it is the object about to be stored. `timestamp` is the object's new
    ``last_modified`` (None in ``prepare``). `user_id` is the caller's, None when anonymous;
    `principals` all the caller's principals (groups included).
    """

    action: Action
    resource_name: str
    uri: str
    ids: Mapping[str, str]
    old: JSONObject | None
    new: JSONObject | None
    user_id: str | None
    timestamp: int | None = None
    principals: tuple[str, ...] = field(default=())

    @property
    def object_id(self) -> str:
        """The id of the object written."""
        return self.ids[self.resource_name]


# A prepare listener returns the object to store instead of `change.new`, or None to keep it.
PrepareListener = Callable[["Tx", Change], Awaitable[JSONObject | None]]
ChangeListener = Callable[["Tx", Change], Awaitable[None]]


@dataclass(slots=True)
class _Registration:
    listener: Any
    resources: frozenset[str] | None


class Events:
    """The listeners of one service. Empty by default: writes then pay nothing for events."""

    def __init__(self) -> None:
        self._prepare: list[_Registration] = []
        self._changed: list[_Registration] = []

    def on_prepare(self, listener: PrepareListener, resources: Iterable[str] | None = None) -> None:
        """Call `listener` before each write of the named resources (all when None)."""
        self._prepare.append(_Registration(listener, _names(resources)))

    def on_change(self, listener: ChangeListener, resources: Iterable[str] | None = None) -> None:
        """Call `listener` after each write of the named resources (all when None)."""
        self._changed.append(_Registration(listener, _names(resources)))

    @property
    def active(self) -> bool:
        """Whether any listener is registered (the service skips building changes otherwise)."""
        return bool(self._prepare or self._changed)

    async def prepare(self, tx: Tx, change: Change) -> JSONObject | None:
        """Run the prepare listeners in order; the object to store (None: unchanged)."""
        new = change.new
        replaced = False
        for reg in self._prepare:
            if reg.resources is None or change.resource_name in reg.resources:
                current = change if not replaced else replace(change, new=new)
                result = await reg.listener(tx, current)
                if result is not None:
                    new, replaced = result, True
        return new if replaced else None

    async def changed(self, tx: Tx, change: Change) -> None:
        """Run the change listeners in order."""
        for reg in self._changed:
            if reg.resources is None or change.resource_name in reg.resources:
                await reg.listener(tx, change)


def _names(resources: Iterable[str] | None) -> frozenset[str] | None:
    return None if resources is None else frozenset(resources)


__all__ = ["ACTIONS", "Action", "Change", "ChangeListener", "Events", "PrepareListener"]
