"""Interrupted syncs resume, losing and duplicating nothing; killed writers leave a sane store.

Real failures only: a TCP proxy that cuts the connection after the server committed, a server
process killed between two batch chunks, a backup restored under the clients, and client
processes killed with SIGKILL.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.client._server import CuttingProxy, NuagesProcess
from tests.client.conftest import ALICE, BUCKET, COLLECTION, FAST_RETRY

from nuages.client import (
    Client,
    LocalCollection,
    LocalStore,
    RetryPolicy,
    ServerFlushed,
    SyncStatus,
    TransportError,
)

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[NuagesProcess]:
    """A server of this test alone, which the test may stop, kill and start again."""
    workdir = tmp_path / "server"
    workdir.mkdir()
    server = NuagesProcess(workdir, {"paginate_by": "10"})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _alice(server: NuagesProcess) -> Iterator[Client]:
    with Client(server.url, auth=ALICE, retry=FAST_RETRY) as client:
        client.create_bucket(BUCKET)
        client.create_collection(BUCKET, COLLECTION)
        yield client


@pytest.fixture
def alice(server: NuagesProcess) -> Iterator[Client]:
    """alice's client on the module's server (bucket and collection created)."""
    yield from _alice(server)


@pytest.fixture
def alice_restartable(restartable: NuagesProcess) -> Iterator[Client]:
    """alice's client on a server of the test's own, which it may stop and restart."""
    yield from _alice(restartable)


def open_collection(path: Path) -> LocalCollection:
    return LocalStore(path).collection(COLLECTION)


def server_state(client: Client) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in client.get_records(BUCKET, COLLECTION)}


def assert_same_everywhere(client: Client, *colls: LocalCollection) -> None:
    state = server_state(client)
    for coll in colls:
        assert {r["id"]: r for r in coll.list()} == state
        pending = coll.list(status=[SyncStatus.CREATED, SyncStatus.UPDATED, SyncStatus.DELETED])
        assert pending == []
    # No duplicate: every record is there once, by id.
    assert len(client.get_records(BUCKET, COLLECTION)) == len(state)


def prepare_mixed_changes(client: Client, a: LocalCollection) -> tuple[list[str], list[str]]:
    """Synced records, then offline: 40 creations, 10 updates, 5 deletions (3 batch chunks)."""
    synced = [a.create({"title": f"old {i}", "n": i})["id"] for i in range(15)]
    a.sync(client, bucket=BUCKET)
    with a.transaction():
        for i in range(40):
            a.create({"title": f"new {i}", "n": 100 + i})
        for rid in synced[:10]:
            a.update({"id": rid, "title": "updated"}, patch=True)
        for rid in synced[10:]:
            a.delete(rid)
    return synced[:10], synced[10:]


def test_connection_cut_after_commit_then_resumed_sync(alice, server, tmp_path):
    proxy = CuttingProxy(server.port)
    try:
        a = open_collection(tmp_path / "a.db")
        updated, deleted = prepare_mixed_changes(alice, a)
        batches: list[bytes] = []

        def second_batch(head: bytes) -> bool:
            if b"POST /v1/batch" in head:
                batches.append(head)
            return len(batches) == 2

        proxy.cut_when(second_batch)
        with (
            Client(proxy.url, auth=ALICE, retry=RetryPolicy.never()) as through_proxy,
            pytest.raises(TransportError),
        ):
            a.sync(through_proxy, bucket=BUCKET)
        assert proxy.cuts == 1
        # Pending, in order: 10 updates, 5 deletions, 40 creations; chunks of 25, 25 and 5.
        # The server committed two chunks, the client saw only the first answer.
        assert len(server_state(alice)) == 10 + 35
        assert len(a.list(status=SyncStatus.SYNCED)) == 10 + 10

        with Client(proxy.url, auth=ALICE, retry=RetryPolicy.never()) as through_proxy:
            result = a.sync(through_proxy, bucket=BUCKET)
        assert result.ok, (result.conflicts, result.errors)
        b = open_collection(tmp_path / "b.db")
        b.sync(alice, bucket=BUCKET)
        assert_same_everywhere(alice, a, b)
        state = server_state(alice)
        assert len(state) == 10 + 40
        assert all(state[rid]["title"] == "updated" for rid in updated)
        assert not set(deleted) & set(state)
        assert sorted(r["n"] for r in state.values() if r["n"] >= 100) == list(range(100, 140))
    finally:
        proxy.close()


def test_connection_cut_is_retried_transparently(alice, server, tmp_path):
    proxy = CuttingProxy(server.port)
    try:
        a = open_collection(tmp_path / "a.db")
        prepare_mixed_changes(alice, a)
        proxy.cut_when(lambda head: b"POST /v1/batch" in head)
        with Client(proxy.url, auth=ALICE, retry=FAST_RETRY) as through_proxy:
            result = a.sync(through_proxy, bucket=BUCKET)
        assert proxy.cuts == 1
        assert result.ok
        assert_same_everywhere(alice, a)
        assert len(server_state(alice)) == 50
    finally:
        proxy.close()


def test_server_killed_between_batch_chunks(alice_restartable, restartable, tmp_path):
    alice = alice_restartable
    a = open_collection(tmp_path / "a.db")
    prepare_mixed_changes(alice, a)
    built: list[str] = []

    class KillServerBeforeSecondChunk:
        """Runs as each record to send is encoded, chunk by chunk. The first chunk holds 10
        updates, 5 deletions (not encoded) and 10 creations: the 21st is the second chunk's."""

        def encode(self, record: dict[str, Any]) -> dict[str, Any]:
            built.append(record["id"])
            if len(built) == 21:
                restartable.stop(kill=True)
            return record

        def decode(self, record: dict[str, Any]) -> dict[str, Any]:
            return record

    with pytest.raises(TransportError):
        a.sync(alice, bucket=BUCKET, transformers=[KillServerBeforeSecondChunk()])
    restartable.start()
    # The first chunk is confirmed locally; the rest resumes.
    assert 0 < len(a.list(status=SyncStatus.SYNCED)) < 50
    result = a.sync(alice, bucket=BUCKET)
    assert result.ok
    b = open_collection(tmp_path / "b.db")
    b.sync(alice, bucket=BUCKET)
    assert_same_everywhere(alice, a, b)
    assert len(server_state(alice)) == 50


def test_restored_server_is_detected(alice_restartable, restartable, tmp_path):
    alice = alice_restartable
    a = open_collection(tmp_path / "a.db")
    for i in range(5):
        a.create({"n": i})
    a.sync(alice, bucket=BUCKET)
    restartable.stop()
    backup = tmp_path / "backup"
    backup.mkdir()
    for path in restartable.workdir.glob("nuages.db*"):
        shutil.copy(path, backup / path.name)
    restartable.start()
    for i in range(5, 8):
        a.create({"n": i})
    a.sync(alice, bucket=BUCKET)
    newest = a.last_modified
    restartable.stop()
    for path in restartable.workdir.glob("nuages.db*"):
        path.unlink()
    for path in backup.iterdir():
        shutil.copy(path, restartable.workdir / path.name)
    restartable.start()
    with pytest.raises(ServerFlushed) as raised:
        a.sync(alice, bucket=BUCKET)
    assert raised.value.local_timestamp == newest
    assert raised.value.remote_timestamp is not None
    assert raised.value.remote_timestamp < newest
    result = a.sync(alice, bucket=BUCKET, if_flushed="reupload")
    assert result.ok
    assert len(result.pushed.created) == 3  # the five the backup has are recognised as identical
    assert_same_everywhere(alice, a)
    assert len(server_state(alice)) == 8


def test_flushed_server_with_missing_collection(alice, server, tmp_path):
    a = open_collection(tmp_path / "a.db")
    for i in range(3):
        a.create({"n": i})
    a.sync(alice, bucket=BUCKET)
    server.flush()
    alice.create_bucket(BUCKET)
    with pytest.raises(ServerFlushed):
        a.sync(alice, bucket=BUCKET)
    alice.create_collection(BUCKET, COLLECTION)
    a.reset_sync_status()
    assert a.list(status=SyncStatus.CREATED) == a.list()
    result = a.sync(alice, bucket=BUCKET)
    assert len(result.pushed.created) == 3
    assert_same_everywhere(alice, a)


WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {src!r})
    from nuages.client import LocalStore

    store = LocalStore(sys.argv[1])
    notes = store.collection("notes")
    i = 0
    while True:
        with store.transaction():  # 10 records at a time, all or none
            ids = [notes.create({{"n": i + k, "pad": "x" * 500}})["id"] for k in range(10)]
        i += 10
        print(" ".join(ids), flush=True)
    """
)


def test_store_reopened_after_its_writer_was_killed(alice, tmp_path):
    path = tmp_path / "killed.db"
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(src=str(SRC)))
    process = subprocess.Popen(
        [sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True
    )
    committed: list[str] = []
    assert process.stdout is not None
    while len(committed) < 300:
        line = process.stdout.readline()
        assert line, "the writer stopped early"
        committed.extend(line.split())
    process.send_signal(signal.SIGKILL)
    process.wait()
    with LocalStore(path) as store:
        assert store._conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        notes = store.collection(COLLECTION)
        present = {r["id"] for r in notes.list()}
        assert set(committed) <= present  # everything reported committed is there
        assert len(present) % 10 == 0  # and no transaction is half there
        result = notes.sync(alice, bucket=BUCKET)
        assert len(result.pushed.created) == len(present)
        assert_same_everywhere(alice, notes)


SYNCER = textwrap.dedent(
    """
    import sys
    import time
    sys.path.insert(0, {src!r})
    from nuages.client import Client, LocalStore

    notes = LocalStore(sys.argv[1]).collection("notes")
    with notes.transaction():
        for i in range(400):
            notes.create({{"n": i}})
    print("ready", flush=True)
    sys.stdin.readline()
    class Slow:
        def encode(self, record):
            time.sleep(0.003)
            return record

        def decode(self, record):
            return record

    with Client(sys.argv[2], auth=("alice", "pw")) as client:
        notes.sync(client, bucket="app", transformers=[Slow()])
    print("finished", flush=True)
    """
)


def test_sync_resumes_after_its_process_was_killed(alice, server, tmp_path):
    path = tmp_path / "device.db"
    script = tmp_path / "syncer.py"
    script.write_text(SYNCER.format(src=str(SRC)))
    process = subprocess.Popen(
        [sys.executable, str(script), str(path), server.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdin is not None
    assert process.stdout.readline().strip() == "ready"
    process.stdin.write("go\n")
    process.stdin.flush()
    deadline = time.monotonic() + 20
    while alice.count_records(BUCKET, COLLECTION) < 100:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    on_server = alice.count_records(BUCKET, COLLECTION)
    assert 100 <= on_server < 400, "killed in the middle of the push"
    notes = open_collection(path)
    result = notes.sync(alice, bucket=BUCKET)
    assert result.ok
    assert_same_everywhere(alice, notes)
    assert alice.count_records(BUCKET, COLLECTION) == 400
    assert sorted(r["n"] for r in notes.list()) == list(range(400))
