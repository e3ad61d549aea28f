"""Python client of Nuages (and of any Kinto-compatible server): HTTP and offline-first sync.

* :class:`Client` / :class:`AsyncClient`: every endpoint over httpx, with pagination, batches
  chunked by the server's limit, bounded retries (``Retry-After``, ``Backoff``), end-of-life
  alerts, and one exception class per error (:class:`NotFound`, :class:`PreconditionFailed`, …).
* :class:`LocalStore` / :class:`AsyncLocalStore`: records kept in a SQLite file with a sync
  status each, queried in SQL, and :meth:`LocalCollection.sync` to exchange changes with the
  server (conflict strategies, resumable after any interruption).

This package imports nothing from the server side of Nuages. See ``docs/client.md``.
"""

from nuages.client._async_store import AsyncLocalCollection, AsyncLocalStore
from nuages.client._base import AlertCallback, BaseClient, Op
from nuages.client._client import AsyncClient, Auth, Client
from nuages.client._errors import (
    BackendUnavailable,
    BackoffError,
    BadRequest,
    ClientError,
    Conflict,
    Forbidden,
    Gone,
    HTTPError,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    ServerError,
    ServerFlushed,
    SyncError,
    TooManyRequests,
    TransportError,
    Unauthorized,
)
from nuages.client._headers import EndOfLifeWarning
from nuages.client._model import (
    Change,
    ChangeCallback,
    LocalStoreError,
    MergeCallback,
    RecordExists,
    RecordNotFound,
    Strategy,
    SyncChanges,
    SyncFailure,
    SyncMode,
    SyncResult,
    SyncStatus,
    Transformer,
)
from nuages.client._model import Conflict as SyncConflict
from nuages.client._query import FilterError
from nuages.client._requests import (
    ListParams,
    PatchType,
    Record,
    Request,
    RequestBuilder,
    Response,
)
from nuages.client._retry import RetryPolicy
from nuages.client._store import LocalCollection, LocalStore
from nuages.client._sync import FlushPolicy

__all__ = [
    "AlertCallback",
    "AsyncClient",
    "AsyncLocalCollection",
    "AsyncLocalStore",
    "Auth",
    "BackendUnavailable",
    "BackoffError",
    "BadRequest",
    "BaseClient",
    "Change",
    "ChangeCallback",
    "Client",
    "ClientError",
    "Conflict",
    "EndOfLifeWarning",
    "FilterError",
    "FlushPolicy",
    "Forbidden",
    "Gone",
    "HTTPError",
    "ListParams",
    "LocalCollection",
    "LocalStore",
    "LocalStoreError",
    "MergeCallback",
    "MethodNotAllowed",
    "NotFound",
    "Op",
    "PatchType",
    "PreconditionFailed",
    "Record",
    "RecordExists",
    "RecordNotFound",
    "Request",
    "RequestBuilder",
    "Response",
    "RetryPolicy",
    "ServerError",
    "ServerFlushed",
    "Strategy",
    "SyncChanges",
    "SyncConflict",
    "SyncError",
    "SyncFailure",
    "SyncMode",
    "SyncResult",
    "SyncStatus",
    "TooManyRequests",
    "Transformer",
    "TransportError",
    "Unauthorized",
]
