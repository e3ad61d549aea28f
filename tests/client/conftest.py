"""Fixtures of the client tests: a real ``nuages serve`` per module, emptied before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.client._server import NuagesProcess

from nuages.client import Client, RetryPolicy

ALICE = ("alice", "pw")
BOB = ("bob", "pw")
BUCKET = "app"
COLLECTION = "notes"
# Small pages, so that a few dozen records span several of them.
DEFAULT_SETTINGS = {"paginate_by": "10", "experimental_permissions_endpoint": "true"}
FAST_RETRY = RetryPolicy(retries=2, backoff_factor=0.01, max_delay=0.05)


@pytest.fixture(scope="session")
def nuages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NuagesProcess]:
    """One ``nuages serve`` process for the client tests (SQLite, ``DEFAULT_SETTINGS``)."""
    server = NuagesProcess(tmp_path_factory.mktemp("nuages"), DEFAULT_SETTINGS)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(nuages: NuagesProcess) -> NuagesProcess:
    """The shared server, flushed."""
    nuages.flush()
    return nuages


@pytest.fixture
def client(server: NuagesProcess) -> Iterator[Client]:
    """alice's client, with bucket ``app`` and collection ``notes`` created."""
    with Client(server.url, auth=ALICE, retry=FAST_RETRY) as alice:
        alice.create_bucket(BUCKET)
        alice.create_collection(BUCKET, COLLECTION)
        yield alice
