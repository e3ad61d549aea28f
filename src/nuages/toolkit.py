"""The toolkit's public API: declare resources, get a service that syncs.

A resource is a :class:`Resource` (name, parent, JSON schema, id policy, defaults,
server-set, read-only and unique fields, enabled methods, a processing hook).
:func:`create_app` turns resources and :class:`~nuages.settings.Settings` into an ASGI
app that speaks the whole protocol: CRUD, timestamps, ETags and preconditions,
tombstones, ``_since`` sync, filters, sorting, pagination, ``_fields``, permissions,
batch, the utility endpoints, on every backend. ``nuages serve --app module:attr``
serves it. Nuages' own buckets, collections, groups and records are declared with this
same API (:mod:`nuages.api`).

.. code-block:: python

    from nuages.toolkit import OWNER, Resource, create_app

    NOTE = Resource(
        name="note",
        plural="notes",
        parent=OWNER,  # each authenticated user has their own notes
        schema={"type": "object", "required": ["text"],
                "properties": {"text": {"type": "string"}}},
    )

    def app(settings):
        return create_app([NOTE], settings)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from nuages.core.authorization import AUTHENTICATED, EVERYONE, PermissionTree
from nuages.core.errors import ValidationError
from nuages.core.resource import (
    NAME_PATTERN,
    OWNER,
    UUID_PATTERN,
    generate_name,
    generate_sortable_uuid,
    generate_uuid,
)
from nuages.core.resource import ResourceSpec as Resource
from nuages.core.timestamps import now_ms
from nuages.settings import Settings

if TYPE_CHECKING:
    from nuages.web.app import App


def create_app(
    resources: Sequence[Resource],
    settings: Settings | None = None,
    *,
    permission_tree: Mapping[str, Mapping[str, tuple[str, ...]]] | None = None,
    migrate: bool = False,
) -> App:
    """An ASGI app serving `resources` under ``/v1`` with the whole protocol.

    `settings` default to :meth:`Settings.load` (environment and ``NUAGES_CONFIG``).
    `permission_tree` says which permissions on which ancestors grant
    ``"<resource>:<permission>"`` (see :data:`nuages.api.PERMISSION_TREE`); resources
    under :data:`OWNER` need none. With `migrate`, the database schema is created at
    start-up.
    """
    from nuages.web.app import create_app as _create_app

    tree: PermissionTree = permission_tree or {}
    return _create_app(settings, resources=resources, tree=tree, migrate=migrate)


__all__ = [
    "AUTHENTICATED",
    "EVERYONE",
    "NAME_PATTERN",
    "OWNER",
    "UUID_PATTERN",
    "Resource",
    "Settings",
    "ValidationError",
    "create_app",
    "generate_name",
    "generate_sortable_uuid",
    "generate_uuid",
    "now_ms",
]
