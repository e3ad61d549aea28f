"""Prometheus metrics at ``GET /v1/__metrics__``, like Kinto's ``prometheus`` plugin.

Enabled by ``plugins = ["prometheus"]``. The endpoint needs no authentication (as Kinto's)
and answers in Prometheus' text format. Its metrics, named with the prefix of
:func:`nuages.settings.metric_prefix` (``nuages_`` by default):

- ``request_summary_total`` (counter; ``method``, ``endpoint``, ``status``): the responses
  sent, as Kinto counts them. ``endpoint`` is the name of the route that answered
  (``record-object``, ``record-plural``, ``batch``...), ``unknown`` for a 404 of a path no
  route serves, ``unnamed`` for a response decided before routing (a 413, a bad URL). A
  batch counts once, not once per sub-request.
- ``request_duration_seconds`` (histogram; ``method``, ``endpoint``): from the request's
  arrival to its response's last byte handed to the server.
- ``postgresql_group_commit_writes`` (histogram): the write requests committed together by
  one group commit (:mod:`nuages.postgresql.database`); its count is the number of commits.
- ``postgresql_group_commit_seconds`` (histogram): how long such a transaction was open.
- ``postgresql_group_rollbacks_total`` (counter): group commits rolled back (their members
  are rerun, or answered with an error).
- ``postgresql_write_step_seconds`` (histogram; ``step``): where a write request in a group
  commit waits: ``join`` (for its collection's lane in this process, and the opening of
  a group), ``lock`` (the collection's lock, held by other processes' groups), ``commit``
  (from the end of its code to its group's ``COMMIT``).
- one process (``process_*``, ``python_*``): memory, CPU, open files, garbage collection.
  Not with several processes (below).

Methods outside HTTP's usual ones are counted as ``other``, so that a client cannot make
new time series at will; statuses and route names are few.

**Several processes.** ``nuages serve --workers N`` gives its processes one directory for
their metrics (prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``), so
that any of them answers ``/__metrics__`` with the sums of all, the exited ones included;
it removes the directory when it stops. A server run otherwise with several processes
(gunicorn, uvicorn's ``--workers``) must set ``PROMETHEUS_MULTIPROC_DIR`` to an empty
directory itself. The ``process_*`` and ``python_*`` metrics are then absent: they are of
one process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from nuages.settings import metric_prefix
from nuages.web.messages import WebResponse

if TYPE_CHECKING:
    from nuages.settings import Settings
    from nuages.web.dispatch import Dispatcher
    from nuages.web.messages import WebRequest

MULTIPROCESS_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
# Seconds: a cached read takes about a millisecond here, a page of 100 about ten.
DURATION_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
GROUP_BUCKETS: Final = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
GROUP_SECONDS_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
STEP_BUCKETS: Final = (0.0005, *GROUP_SECONDS_BUCKETS)
METHODS: Final = frozenset({"get", "head", "post", "put", "patch", "delete", "options"})
PLAIN_TEXT: Final = "text/plain; version=0.0.4; charset=utf-8"  # what any scraper reads
CAPABILITY: Final = {"description": "Prometheus metrics.", "url": "https://prometheus.io/"}


class Metrics:
    """The metrics of one app: its registry (or, with several processes, the shared
    directory), and the observers that feed them."""

    def __init__(self, prefix: str, directory: str | None = None) -> None:
        import prometheus_client as prom
        from prometheus_client import multiprocess

        self.registry = prom.CollectorRegistry(auto_describe=True)
        if directory is not None:
            # The values live in files of the directory: the metrics are registered
            # nowhere, and a scrape reads the files of every process.
            multiprocess.MultiProcessCollector(self.registry, path=directory)  # type: ignore[no-untyped-call]
            owner = None
        else:
            owner = self.registry
            prom.ProcessCollector(registry=owner)
            prom.PlatformCollector(registry=owner)
            prom.GCCollector(registry=owner)
        self.requests = prom.Counter(
            f"{prefix}request_summary",
            "Responses sent, by method, endpoint (route name) and status.",
            ("method", "endpoint", "status"),
            registry=owner,
        )
        self.durations = prom.Histogram(
            f"{prefix}request_duration_seconds",
            "Time from a request's arrival to its response, by method and endpoint.",
            ("method", "endpoint"),
            buckets=DURATION_BUCKETS,
            registry=owner,
        )
        self.group_writes = prom.Histogram(
            f"{prefix}postgresql_group_commit_writes",
            "Write requests committed together by one PostgreSQL group commit.",
            buckets=GROUP_BUCKETS,
            registry=owner,
        )
        self.group_seconds = prom.Histogram(
            f"{prefix}postgresql_group_commit_seconds",
            "How long a group commit's transaction was open, from BEGIN to COMMIT.",
            buckets=GROUP_SECONDS_BUCKETS,
            registry=owner,
        )
        self.write_steps = prom.Histogram(
            f"{prefix}postgresql_write_step_seconds",
            "Where a write request in a group commit waits: join, lock, commit.",
            ("step",),
            buckets=STEP_BUCKETS,
            registry=owner,
        )
        self.group_rollbacks = prom.Counter(
            f"{prefix}postgresql_group_rollbacks",
            "Group commits rolled back: their write requests were rerun or failed.",
            registry=owner,
        )
        # The labelled children, by their labels: labels() costs a lock and a tuple.
        self._counted: dict[tuple[str, str, int], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}
        self._steps: dict[str, Any] = {}

    def observe_response(
        self, method: str, endpoint: str | None, status: int, started: float
    ) -> None:
        seconds = time.perf_counter() - started
        method = method.lower()
        if method not in METHODS:
            method = "other"
        if endpoint is None:
            endpoint = "unknown" if status == 404 else "unnamed"
        counter = self._counted.get((method, endpoint, status))
        if counter is None:
            counter = self.requests.labels(method, endpoint, str(status))
            self._counted[method, endpoint, status] = counter
        counter.inc()
        timer = self._timed.get((method, endpoint))
        if timer is None:
            timer = self._timed[method, endpoint] = self.durations.labels(method, endpoint)
        timer.observe(seconds)

    def observe_group(self, members: int, seconds: float, committed: bool) -> None:
        if committed:
            self.group_writes.observe(members)
            self.group_seconds.observe(seconds)
        else:
            self.group_rollbacks.inc()

    def observe_step(self, step: str, seconds: float) -> None:
        timer = self._steps.get(step)
        if timer is None:
            timer = self._steps[step] = self.write_steps.labels(step)
        timer.observe(seconds)

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The metrics in the format `accept` asks for (Prometheus text or OpenMetrics),
        and its content type."""
        from prometheus_client.exposition import choose_encoder, generate_latest

        try:
            encode, content_type = choose_encoder(accept)
        except (TypeError, ValueError):  # prometheus_client on a version like "x.y"
            encode, content_type = generate_latest, PLAIN_TEXT
        return encode(self.registry), content_type


def multiprocess_directory() -> str | None:
    """The directory ``PROMETHEUS_MULTIPROC_DIR`` names, or None when it is unset; a
    :class:`ValueError` that says what to do when it names no directory."""
    directory = os.environ.get(MULTIPROCESS_ENV)
    if not directory:
        return None
    if not os.path.isdir(directory):
        raise ValueError(
            f"{MULTIPROCESS_ENV}={directory!r} is not a directory: "
            "create it (empty) for the metrics of several processes, or unset it"
        )
    return directory


def _postgresql_databases(dispatcher: Dispatcher) -> list[Any]:
    """The distinct PostgreSQL databases behind the service's backends."""
    from nuages.postgresql.database import PostgreSQLDatabase

    found: list[Any] = []
    service = dispatcher.service
    for backend in (service.storage, service.permission, service.cache):
        db = getattr(backend, "db", None)
        if isinstance(db, PostgreSQLDatabase) and all(db is not seen for seen in found):
            found.append(db)
    return found


@contextlib.contextmanager
def shared_directory(settings: Settings) -> Iterator[None]:
    """Around serving with several processes: a directory of their own for their metrics
    (unless ``PROMETHEUS_MULTIPROC_DIR`` names one already), removed afterwards. The
    processes started inside inherit it through the environment."""
    if "prometheus" not in settings.plugins or os.environ.get(MULTIPROCESS_ENV):
        yield
        return
    directory = tempfile.mkdtemp(prefix="nuages-metrics-")
    os.environ[MULTIPROCESS_ENV] = directory
    try:
        yield
    finally:
        os.environ.pop(MULTIPROCESS_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)


def install(dispatcher: Dispatcher) -> Metrics:
    """Serve ``/__metrics__``, observe responses and group commits; announce the
    ``prometheus`` capability."""
    settings = dispatcher.settings
    prefix = metric_prefix(settings)
    metrics = Metrics(prefix, multiprocess_directory())

    async def serve(req: WebRequest, params: dict[str, str], tx: Any) -> WebResponse:
        body, content_type = metrics.exposition(req.headers.get("accept", ""))
        return WebResponse(200, raw=body, headers={"Content-Type": content_type})

    dispatcher.add("prometheus_metrics", "/__metrics__", ("GET",), serve)
    dispatcher.response_observers.append(metrics.observe_response)
    for db in _postgresql_databases(dispatcher):
        db.group_observers.append(metrics.observe_group)
        db.step_observers.append(metrics.observe_step)
    dispatcher.capabilities["prometheus"] = {**CAPABILITY, "prefix": prefix}
    return metrics


__all__ = ["Metrics", "install", "multiprocess_directory", "shared_directory"]
