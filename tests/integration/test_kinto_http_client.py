"""The official Kinto Python client (kinto-http, from PyPI) against a real ``nuages serve``.

Each test starts from an empty server (``POST /__flush__``) and talks to it over a socket,
exactly as an application using kinto-http would.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from kinto_http import AsyncClient, Client, KintoBatchException, KintoException
from kinto_http.patch_type import JSONPatch, MergePatch

from nuages.core.authorization import basicauth_userid

ALICE = ("alice", "pw")
BOB = ("bob", "pw")
ALICE_ID = basicauth_userid("", "alice:pw")
BOB_ID = basicauth_userid("", "bob:pw")

# Read by the nuages_server fixture: small pages, so that a dozen records span three of them.
SERVER_PAGINATE_BY = 5
SERVER_SETTINGS = {
    "paginate_by": str(SERVER_PAGINATE_BY),
    "experimental_permissions_endpoint": "true",
}


def status_of(exc: pytest.ExceptionInfo[KintoException]) -> int:
    return int(exc.value.response.status_code)


def body_of(exc: pytest.ExceptionInfo[KintoException]) -> dict[str, Any]:
    return dict(exc.value.response.json())


@pytest.fixture
def server(nuages_server: str) -> str:
    """The /v1 URL of the module's server, emptied before each test."""
    response = httpx.post(f"{nuages_server}/__flush__", timeout=5)
    assert response.status_code == 202
    return nuages_server


@pytest.fixture
def alice(server: str) -> Client:
    return Client(server_url=server, auth=ALICE, bucket="app", collection="tasks")


@pytest.fixture
def bob(server: str) -> Client:
    return Client(server_url=server, auth=BOB, bucket="app", collection="tasks")


@pytest.fixture
def tasks(alice: Client) -> Client:
    """alice's client, with bucket ``app`` and collection ``tasks`` created."""
    alice.create_bucket(id="app")
    alice.create_collection(id="tasks", bucket="app")
    return alice


# -- server info -------------------------------------------------------------------------


def test_server_info_speaks_http_api_1_23(alice: Client, server: str) -> None:
    info = alice.server_info()
    assert info["http_api_version"] == "1.23"
    assert [int(part) for part in info["http_api_version"].split(".")] == [1, 23]
    assert info["url"] == f"{server}/"
    assert info["settings"]["batch_max_requests"] == 25
    assert "flush_endpoint" in info["capabilities"]


def test_server_info_shows_the_authenticated_user(alice: Client) -> None:
    assert alice.server_info()["user"]["id"] == ALICE_ID


# -- buckets -------------------------------------------------------------------------------


def test_create_bucket_returns_data_and_creator_write_permission(alice: Client) -> None:
    created = alice.create_bucket(id="app", data={"title": "App"})
    assert created["data"]["id"] == "app"
    assert created["data"]["title"] == "App"
    assert isinstance(created["data"]["last_modified"], int)
    assert created["permissions"] == {"write": [ALICE_ID]}


def test_create_existing_bucket_safely_is_a_412(alice: Client) -> None:
    alice.create_bucket(id="app")
    with pytest.raises(KintoException) as exc:
        alice.create_bucket(id="app")
    assert status_of(exc) == 412
    assert body_of(exc)["errno"] == 114


def test_create_bucket_if_not_exists_returns_the_existing_one(alice: Client) -> None:
    first = alice.create_bucket(id="app", data={"title": "first"})
    again = alice.create_bucket(id="app", data={"title": "second"}, if_not_exists=True)
    assert again["data"] == first["data"]


def test_get_update_patch_and_delete_bucket(alice: Client) -> None:
    alice.create_bucket(id="app", data={"title": "App"})
    assert alice.get_bucket(id="app")["data"]["title"] == "App"

    updated = alice.update_bucket(id="app", data={"color": "red"})
    assert "title" not in updated["data"]
    assert updated["data"]["color"] == "red"

    patched = alice.patch_bucket(id="app", data={"title": "Again"})
    assert patched["data"]["color"] == "red"
    assert patched["data"]["title"] == "Again"
    assert patched["data"]["last_modified"] > updated["data"]["last_modified"]

    deleted = alice.delete_bucket(id="app")
    assert deleted["deleted"] is True
    assert deleted["id"] == "app"
    with pytest.raises(KintoException) as exc:
        alice.get_bucket(id="app")
    assert status_of(exc) == 403  # an unknown bucket is not readable, hence forbidden


def test_list_and_delete_buckets(alice: Client) -> None:
    for name in ("one", "two", "three"):
        alice.create_bucket(id=name)
    assert sorted(bucket["id"] for bucket in alice.get_buckets()) == ["one", "three", "two"]

    deleted = alice.delete_buckets()
    assert sorted(bucket["id"] for bucket in deleted) == ["one", "three", "two"]
    assert all(bucket["deleted"] is True for bucket in deleted)
    assert alice.get_buckets() == []


def test_delete_bucket_if_exists_ignores_a_missing_bucket(alice: Client) -> None:
    assert alice.delete_bucket(id="ghost", if_exists=True) is None


# -- collections -----------------------------------------------------------------------------


def test_collection_crud(alice: Client) -> None:
    alice.create_bucket(id="app")
    created = alice.create_collection(id="tasks", bucket="app", data={"kind": "todo"})
    assert created["data"]["kind"] == "todo"
    assert created["permissions"]["write"] == [ALICE_ID]

    assert alice.get_collection(id="tasks", bucket="app")["data"]["kind"] == "todo"
    replaced = alice.update_collection(id="tasks", bucket="app", data={"kind": "done"})
    assert replaced["data"]["kind"] == "done"
    patched = alice.patch_collection(id="tasks", bucket="app", data={"extra": 1})
    assert (patched["data"]["kind"], patched["data"]["extra"]) == ("done", 1)

    deleted = alice.delete_collection(id="tasks", bucket="app")
    assert deleted["deleted"] is True
    with pytest.raises(KintoException) as exc:
        alice.get_collection(id="tasks", bucket="app")
    assert status_of(exc) == 404
    assert body_of(exc)["errno"] == 110
    assert body_of(exc)["details"] == {"id": "tasks", "resource_name": "collection"}


def test_list_and_delete_collections(alice: Client) -> None:
    alice.create_bucket(id="app")
    for name in ("a", "b"):
        alice.create_collection(id=name, bucket="app")
    assert sorted(c["id"] for c in alice.get_collections(bucket="app")) == ["a", "b"]
    deleted = alice.delete_collections(bucket="app")
    assert sorted(c["id"] for c in deleted) == ["a", "b"]
    assert alice.get_collections(bucket="app") == []


def test_collection_in_a_missing_bucket_is_forbidden(alice: Client) -> None:
    with pytest.raises(KintoException) as exc:
        alice.create_collection(id="tasks", bucket="ghost")
    assert status_of(exc) == 403
    assert body_of(exc)["errno"] == 121


# -- groups ----------------------------------------------------------------------------------


def test_group_crud(alice: Client) -> None:
    alice.create_bucket(id="app")
    created = alice.create_group(id="team", bucket="app", data={"members": [ALICE_ID]})
    assert created["data"]["members"] == [ALICE_ID]

    updated = alice.update_group(id="team", bucket="app", data={"members": [BOB_ID]})
    assert updated["data"]["members"] == [BOB_ID]
    patched = alice.patch_group(id="team", bucket="app", data={"label": "Team"})
    assert patched["data"]["members"] == [BOB_ID]
    assert patched["data"]["label"] == "Team"
    assert alice.get_group(id="team", bucket="app")["data"]["label"] == "Team"

    assert [g["id"] for g in alice.get_groups(bucket="app")] == ["team"]
    assert alice.delete_group(id="team", bucket="app")["deleted"] is True
    assert alice.get_groups(bucket="app") == []


def test_delete_groups(alice: Client) -> None:
    alice.create_bucket(id="app")
    alice.create_group(id="g1", bucket="app", data={"members": []})
    alice.create_group(id="g2", bucket="app", data={"members": []})
    assert sorted(g["id"] for g in alice.delete_groups(bucket="app")) == ["g1", "g2"]


def test_group_membership_grants_the_group_permissions(tasks: Client, bob: Client) -> None:
    tasks.create_group(id="readers", bucket="app", data={"members": [BOB_ID]})
    tasks.create_record(id="r1", data={"title": "shared"})
    with pytest.raises(KintoException) as exc:
        bob.get_record(id="r1")
    assert status_of(exc) == 403

    tasks.patch_collection(id="tasks", permissions={"read": ["/buckets/app/groups/readers"]})
    assert bob.get_record(id="r1")["data"]["title"] == "shared"


def test_group_members_must_not_be_everyone(alice: Client) -> None:
    alice.create_bucket(id="app")
    with pytest.raises(KintoException) as exc:
        alice.create_group(id="all", bucket="app", data={"members": ["system.Everyone"]})
    assert status_of(exc) == 400
    assert body_of(exc)["errno"] == 107


# -- records ---------------------------------------------------------------------------------


def test_record_crud(tasks: Client) -> None:
    created = tasks.create_record(id="r1", data={"title": "write tests", "done": False})
    assert created["data"]["id"] == "r1"
    assert created["permissions"] == {"write": [ALICE_ID]}

    fetched = tasks.get_record(id="r1")
    assert fetched["data"] == created["data"]

    replaced = tasks.update_record(id="r1", data={"title": "ship it"})
    assert "done" not in replaced["data"]
    assert replaced["data"]["last_modified"] > created["data"]["last_modified"]

    patched = tasks.patch_record(id="r1", data={"done": True})
    assert patched["data"]["title"] == "ship it"
    assert patched["data"]["done"] is True

    deleted = tasks.delete_record(id="r1")
    assert deleted["id"] == "r1"
    assert deleted["deleted"] is True
    assert deleted["last_modified"] > patched["data"]["last_modified"]


def test_create_record_without_id_gets_a_generated_uuid(tasks: Client) -> None:
    created = tasks.create_record(data={"title": "no id"})
    record_id = created["data"]["id"]
    assert len(record_id) == 36
    assert tasks.get_record(id=record_id)["data"]["title"] == "no id"


def test_create_record_if_not_exists_keeps_the_existing_one(tasks: Client) -> None:
    tasks.create_record(id="r1", data={"title": "first"})
    again = tasks.create_record(id="r1", data={"title": "second"}, if_not_exists=True)
    assert again["data"]["title"] == "first"


def test_get_missing_record_raises_404(tasks: Client) -> None:
    with pytest.raises(KintoException) as exc:
        tasks.get_record(id="ghost")
    assert status_of(exc) == 404
    assert body_of(exc) == {
        "code": 404,
        "errno": 110,
        "error": "Not Found",
        "details": {"id": "ghost", "resource_name": "record"},
    }


def test_record_in_a_missing_collection_raises_404(tasks: Client) -> None:
    with pytest.raises(KintoException) as exc:
        tasks.get_record(id="r1", collection="ghost")
    assert status_of(exc) == 404
    assert body_of(exc)["details"] == {"id": "ghost", "resource_name": "collection"}


def test_delete_record_if_exists_ignores_a_missing_record(tasks: Client) -> None:
    assert tasks.delete_record(id="ghost", if_exists=True) is None


def test_list_and_delete_records(tasks: Client) -> None:
    for n in range(3):
        tasks.create_record(id=f"r{n}", data={"n": n})
    assert sorted(r["id"] for r in tasks.get_records()) == ["r0", "r1", "r2"]

    deleted = tasks.delete_records()
    assert sorted(r["id"] for r in deleted) == ["r0", "r1", "r2"]
    assert tasks.get_records() == []


def test_merge_patch_removes_null_fields(tasks: Client) -> None:
    tasks.create_record(id="r1", data={"title": "t", "meta": {"a": 1, "b": 2}})
    patched = tasks.patch_record(id="r1", changes=MergePatch({"meta": {"a": None}}))
    assert patched["data"]["meta"] == {"b": 2}


def test_json_patch_edits_data_and_permissions(tasks: Client) -> None:
    tasks.create_record(id="r1", data={"tags": ["a"]})
    patched = tasks.patch_record(
        id="r1",
        changes=JSONPatch(
            [
                {"op": "add", "path": "/data/tags/-", "value": "b"},
                {"op": "add", "path": f"/permissions/read/{BOB_ID}"},
            ]
        ),
    )
    assert patched["data"]["tags"] == ["a", "b"]
    assert patched["permissions"]["read"] == [BOB_ID]


# -- permissions -----------------------------------------------------------------------------


def test_permissions_in_the_body_are_stored_and_returned(tasks: Client) -> None:
    created = tasks.create_record(
        id="r1", data={"title": "t"}, permissions={"read": [BOB_ID, "system.Authenticated"]}
    )
    assert sorted(created["permissions"]["read"]) == sorted([BOB_ID, "system.Authenticated"])
    assert created["permissions"]["write"] == [ALICE_ID]
    assert sorted(tasks.get_record(id="r1")["permissions"]["read"]) == sorted(
        [BOB_ID, "system.Authenticated"]
    )


def test_read_permission_lets_another_user_read_but_not_write(tasks: Client, bob: Client) -> None:
    tasks.create_record(id="r1", data={"title": "t"}, permissions={"read": [BOB_ID]})
    seen = bob.get_record(id="r1")
    assert seen["data"]["title"] == "t"
    assert seen["permissions"] == {}  # bob is not in the record's write list

    with pytest.raises(KintoException) as exc:
        bob.update_record(id="r1", data={"title": "mine"})
    assert status_of(exc) == 403
    assert body_of(exc)["errno"] == 121


def test_lists_are_restricted_to_shared_objects(tasks: Client, bob: Client) -> None:
    tasks.create_record(id="shared", data={}, permissions={"read": [BOB_ID]})
    tasks.create_record(id="private", data={})
    assert [r["id"] for r in bob.get_records()] == ["shared"]


def test_anonymous_write_is_401(tasks: Client, server: str) -> None:
    anonymous = Client(server_url=server, bucket="app", collection="tasks")
    with pytest.raises(KintoException) as exc:
        anonymous.create_record(id="r1", data={})
    assert status_of(exc) == 401
    assert "WWW-Authenticate" in exc.value.response.headers


def test_everyone_read_lets_anonymous_clients_read(tasks: Client, server: str) -> None:
    tasks.patch_collection(id="tasks", permissions={"read": ["system.Everyone"]})
    tasks.create_record(id="r1", data={"title": "public"})
    anonymous = Client(server_url=server, bucket="app", collection="tasks")
    assert [r["id"] for r in anonymous.get_records()] == ["r1"]


def test_bucket_create_permission_is_given_to_authenticated_users(bob: Client) -> None:
    assert bob.create_bucket(id="bobs")["permissions"] == {"write": [BOB_ID]}


def test_get_permissions_lists_what_the_user_may_do(tasks: Client) -> None:
    tasks.create_record(id="r1", data={})
    entries = {(e["resource_name"], e.get("id")): e for e in tasks.get_permissions()}
    assert set(entries) == {
        ("root", None),
        ("bucket", "app"),
        ("collection", "tasks"),
        ("record", "r1"),
    }
    assert entries[("root", None)]["permissions"] == ["bucket:create"]
    assert "write" in entries[("record", "r1")]["permissions"]
    assert entries[("record", "r1")]["uri"] == "/buckets/app/collections/tasks/records/r1"


# -- batch -----------------------------------------------------------------------------------


def test_batch_sends_all_operations_in_one_request(alice: Client) -> None:
    with alice.batch() as batch:
        batch.create_bucket(id="app")
        batch.create_collection(id="tasks", bucket="app")
        for n in range(3):
            batch.create_record(id=f"r{n}", data={"n": n})
    results = batch.results()
    assert len(results) == 5
    assert results[0]["data"]["id"] == "app"
    assert [r["data"]["n"] for r in results[2:]] == [0, 1, 2]
    assert sorted(r["id"] for r in alice.get_records()) == ["r0", "r1", "r2"]


def test_batch_above_batch_max_requests_is_chunked(tasks: Client) -> None:
    total = 25 + 7  # more than the server's batch_max_requests
    with tasks.batch() as batch:
        for n in range(total):
            batch.create_record(id=f"r{n:02d}", data={"n": n})
    results = batch.results()
    assert len(results) == total
    assert sorted(r["data"]["n"] for r in results) == list(range(total))
    assert len(tasks.get_records()) == total


def test_batch_reports_sub_request_errors(tasks: Client) -> None:
    tasks.create_record(id="r1", data={})
    with pytest.raises(KintoBatchException) as exc, tasks.batch() as batch:
        batch.create_record(id="r2", data={})
        batch.create_record(id="r1", data={})  # safe create of an existing id: 412
    (error,) = exc.value.exceptions
    assert error.response.status_code == 412
    # the 4xx did not stop the batch: r2 was created
    assert tasks.get_record(id="r2")["data"]["id"] == "r2"


def test_batch_ignoring_4xx_errors_returns_every_result(server: str) -> None:
    client = Client(server_url=server, auth=ALICE, ignore_batch_4xx=True)
    client.create_bucket(id="app")
    with client.batch() as batch:
        batch.create_collection(id="tasks", bucket="app")
        batch.delete_collection(id="ghost", bucket="app")
    created, missing = batch.results()
    assert created["data"]["id"] == "tasks"
    assert missing["errno"] == 110
    assert missing["details"] == {"id": "ghost", "resource_name": "collection"}


# -- synchronisation -------------------------------------------------------------------------


def test_since_returns_changes_and_tombstones(tasks: Client) -> None:
    tasks.create_record(id="kept", data={"v": 1})
    tasks.create_record(id="gone", data={"v": 1})
    since = tasks.get_records_timestamp()

    tasks.patch_record(id="kept", data={"v": 2})
    tasks.delete_record(id="gone")
    tasks.create_record(id="new", data={"v": 1})

    changes = {r["id"]: r for r in tasks.get_records(_since=since)}
    assert set(changes) == {"kept", "gone", "new"}
    assert changes["kept"]["v"] == 2
    assert changes["gone"]["deleted"] is True
    assert set(changes["gone"]) == {"id", "last_modified", "deleted"}
    assert all(r["last_modified"] > int(since) for r in changes.values())


def test_since_the_latest_timestamp_is_empty(tasks: Client) -> None:
    tasks.create_record(id="r1", data={})
    tasks.get_records()  # remembers the list ETag
    latest = tasks.get_records_timestamp()
    assert tasks.get_records(_since=latest) == []


def test_records_timestamp_is_the_latest_last_modified(tasks: Client, server: str) -> None:
    tasks.create_record(id="r1", data={})
    last = tasks.create_record(id="r2", data={})["data"]["last_modified"]
    fresh = Client(server_url=server, auth=ALICE, bucket="app", collection="tasks")
    assert fresh.get_records_timestamp() == str(last)


def test_if_none_match_current_timestamp_is_not_modified(tasks: Client) -> None:
    last = tasks.create_record(id="r1", data={})["data"]["last_modified"]
    assert tasks.get_records(if_none_match=last) == []
    assert [r["id"] for r in tasks.get_records(if_none_match=last - 1)] == ["r1"]


# -- concurrency control ---------------------------------------------------------------------


def test_update_with_stale_last_modified_is_a_412(tasks: Client) -> None:
    original = tasks.create_record(id="r1", data={"title": "v1"})["data"]
    tasks.update_record(id="r1", data={"title": "v2"})
    stale = {**original, "title": "v3"}
    with pytest.raises(KintoException) as exc:
        tasks.update_record(data=stale)  # safe=True sends If-Match: "<last_modified>"
    assert status_of(exc) == 412
    body = body_of(exc)
    assert body["errno"] == 114
    assert body["details"]["existing"]["title"] == "v2"


def test_update_with_explicit_stale_if_match_is_a_412(tasks: Client) -> None:
    stale = tasks.create_record(id="r1", data={})["data"]["last_modified"]
    tasks.patch_record(id="r1", data={"x": 1})
    with pytest.raises(KintoException) as exc:
        tasks.update_record(id="r1", data={"x": 2}, if_match=stale)
    assert status_of(exc) == 412


def test_patch_and_delete_with_stale_if_match_are_412(tasks: Client) -> None:
    original = tasks.create_record(id="r1", data={})["data"]
    tasks.patch_record(id="r1", data={"x": 1})
    with pytest.raises(KintoException) as patch_exc:
        tasks.patch_record(original=original, data={"x": 2})
    assert status_of(patch_exc) == 412
    with pytest.raises(KintoException) as delete_exc:
        tasks.delete_record(id="r1", if_match=original["last_modified"])
    assert status_of(delete_exc) == 412


def test_unsafe_update_ignores_the_stale_last_modified(tasks: Client) -> None:
    original = tasks.create_record(id="r1", data={"title": "v1"})["data"]
    tasks.update_record(id="r1", data={"title": "v2"})
    updated = tasks.update_record(data={**original, "title": "v3"}, safe=False)
    assert updated["data"]["title"] == "v3"


def test_update_with_current_if_match_succeeds(tasks: Client) -> None:
    current = tasks.create_record(id="r1", data={"v": 1})["data"]
    updated = tasks.update_record(data={**current, "v": 2})
    assert updated["data"]["v"] == 2


# -- pagination, sorting, filtering ----------------------------------------------------------


@pytest.fixture
def twelve(tasks: Client) -> Client:
    with tasks.batch() as batch:
        for n in range(12):
            batch.create_record(id=f"r{n:02d}", data={"rank": n % 4, "n": n})
    return tasks


def test_get_records_follows_next_page_links(twelve: Client) -> None:
    assert SERVER_PAGINATE_BY < 12
    records = twelve.get_records()
    assert sorted(r["id"] for r in records) == [f"r{n:02d}" for n in range(12)]


def test_paginated_records_come_in_pages_of_paginate_by(twelve: Client) -> None:
    pages = list(twelve.get_paginated_records())
    assert [len(page["data"]) for page in pages] == [5, 5, 2]
    ids = [r["id"] for page in pages for r in page["data"]]
    assert len(set(ids)) == 12


def test_limit_returns_a_single_page(twelve: Client) -> None:
    assert len(twelve.get_records(_limit=3)) == 3


def test_sort_over_several_pages(twelve: Client) -> None:
    records = twelve.get_records(_sort="-rank,n")
    assert [(r["rank"], r["n"]) for r in records] == sorted(
        ((n % 4, n) for n in range(12)), key=lambda pair: (-pair[0], pair[1])
    )


def test_sort_by_id_ascending(twelve: Client) -> None:
    assert [r["id"] for r in twelve.get_records(_sort="id")] == [f"r{n:02d}" for n in range(12)]


def test_filters(twelve: Client) -> None:
    assert sorted(r["n"] for r in twelve.get_records(rank=3)) == [3, 7, 11]
    assert sorted(r["n"] for r in twelve.get_records(min_n=10)) == [10, 11]
    assert sorted(r["id"] for r in twelve.get_records(in_id=["r01", "r02"])) == ["r01", "r02"]
    assert [r["n"] for r in twelve.get_records(_sort="n", _fields="n", lt_n=2)] == [0, 1]


def test_list_etag_and_since_over_pages(twelve: Client) -> None:
    since = twelve.get_records_timestamp()
    for n in range(6):
        twelve.patch_record(id=f"r{n:02d}", data={"touched": True})
    changed = twelve.get_records(_since=since, _sort="n")
    assert [r["n"] for r in changed] == [0, 1, 2, 3, 4, 5]


# -- async client ----------------------------------------------------------------------------


async def test_async_client_crud_and_batch(server: str) -> None:
    client = AsyncClient(server_url=server, auth=ALICE, bucket="app", collection="tasks")
    info = await client.server_info()
    assert info["http_api_version"] == "1.23"

    await client.create_bucket(id="app")
    await client.create_collection(id="tasks")
    created = await client.create_record(id="r1", data={"title": "async"})
    assert created["data"]["title"] == "async"
    patched = await client.patch_record(id="r1", data={"done": True})
    assert patched["data"]["done"] is True

    for n in range(3):
        await client.create_record(id=f"b{n}", data={"n": n})
    records = await client.get_records(_sort="id")
    assert [r["id"] for r in records] == ["b0", "b1", "b2", "r1"]

    with pytest.raises(KintoException) as exc:
        await client.get_record(id="ghost")
    assert status_of(exc) == 404
    deleted = await client.delete_records()
    assert len(deleted) == 4
