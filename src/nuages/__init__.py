"""Nuages: store JSON and keep it in sync across devices.

A Kinto-compatible (HTTP API 1.23) CRUD + sync server, built on a small toolkit
(:mod:`nuages.core`) that turns a resource definition into the whole protocol.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nuages")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

HTTP_API_VERSION = "1.23"

__all__ = ["HTTP_API_VERSION", "__version__"]
