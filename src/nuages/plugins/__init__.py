"""Optional features built on the change events of :mod:`nuages.core.events`.

Each plugin is a module with an ``install(dispatcher)`` function that registers event
listeners on the dispatcher's service, routes, and its capability for ``GET /v1/``. A
plugin is enabled by its name in ``settings.plugins``; JSON-schema validation, a core
feature in Kinto, by ``settings.experimental_collection_schema_validation``.
See docs/plugins.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nuages.web.dispatch import Dispatcher


def serves_buckets(dispatcher: Dispatcher) -> bool:
    """Whether the dispatcher serves Kinto's buckets (plugins about buckets need them)."""
    return any(r.spec is not None and r.spec.name == "bucket" for r in dispatcher.routes)


def install_plugins(dispatcher: Dispatcher) -> None:
    """Install the features the settings enable, once per dispatcher."""
    settings = dispatcher.settings
    from nuages.plugins import identity  # auth policies, accounts, default bucket

    identity.install(dispatcher)
    if "prometheus" in settings.plugins:  # any app: toolkit apps too
        from nuages.plugins import prometheus

        prometheus.install(dispatcher)
    if not serves_buckets(dispatcher):
        return  # a toolkit app of its own resources: these features are about buckets
    if settings.experimental_collection_schema_validation:
        from nuages.plugins import schema

        schema.install(dispatcher)
    if "history" in settings.plugins:
        from nuages.plugins import history

        history.install(dispatcher)
    if "quotas" in settings.plugins:
        from nuages.plugins import quotas

        quotas.install(dispatcher)
    if "attachment" in settings.plugins:
        from nuages.plugins import attachment

        attachment.install(dispatcher)


__all__ = ["install_plugins", "serves_buckets"]
