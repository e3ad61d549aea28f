"""protocol/06: basicauth user ids, principals, the inheritance tree, settings grants,
required permission per request, 401/403/404 rules, list visibility, ACL maintenance."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import httpx
import pytest
from tests.conftest import ALICE, BOB, AppFactory, userid

CAROL = ("carol", "secret")
ALICE_ID = userid(ALICE)
BOB_ID = userid(BOB)

UNAUTHORIZED = {
    "code": 401,
    "errno": 104,
    "error": "Unauthorized",
    "message": "Please authenticate yourself to use this endpoint.",
}
FORBIDDEN = {
    "code": 403,
    "errno": 121,
    "error": "Forbidden",
    "message": "This user cannot access this resource.",
}

B = "/v1/buckets/b"
C = f"{B}/collections/c"
G = f"{B}/groups/g"
R = f"{C}/records/r"


def basic(value: str) -> dict[str, str]:
    """An Authorization header carrying exactly `value` (not necessarily ``user:password``)."""
    return {"Authorization": "Basic " + base64.b64encode(value.encode()).decode()}


async def seed(client: httpx.AsyncClient, **bucket_permissions: list[str]) -> None:
    """Alice's bucket b (with the given permissions), collection c, record r and group g."""
    body: dict[str, Any] = {"permissions": bucket_permissions} if bucket_permissions else {}
    assert (await client.put(B, json=body)).status_code == 201
    assert (await client.put(C)).status_code == 201
    assert (await client.put(R, json={"data": {"title": "hello"}})).status_code == 201
    assert (await client.put(G, json={"data": {"members": []}})).status_code == 201


async def share(client: httpx.AsyncClient, url: str, **permissions: list[str]) -> None:
    """Alice (a writer of `url`) grants permissions on it, keeping her own write."""
    response = await client.patch(url, json={"permissions": permissions})
    assert response.status_code == 200, response.text


async def principals_of(client: httpx.AsyncClient, auth: tuple[str, str]) -> list[str]:
    response = await client.get("/v1/", auth=auth)
    assert response.status_code == 200
    return list(response.json()["user"]["principals"])


async def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return sorted(obj["id"] for obj in response.json()["data"])


# -- basicauth user ids (06 §1) -------------------------------------------------------------


async def test_basicauth_userid_matches_the_protocol_example(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/", auth=("mat", "secret"))
    assert response.json()["user"]["id"] == (
        "basicauth:8a931a10fc88ab2f6d1cc02a07d3a81b5d4768f6f13e85c5d8d4180419acb1b4"
    )


async def test_userid_is_keyed_by_the_userid_hmac_secret(make_client: AppFactory) -> None:
    expected = hmac.new(b"s3cr3t", b"mat:secret", hashlib.sha256).hexdigest()
    async with make_client(userid_hmac_secret="s3cr3t") as client:
        response = await client.get("/v1/", auth=("mat", "secret"))
    assert response.json()["user"]["id"] == f"basicauth:{expected}"


async def test_userid_covers_the_whole_decoded_credentials(client: httpx.AsyncClient) -> None:
    # The password is part of the HMAC message, and so is everything after the first colon.
    expected = hmac.new(b"", b"mat:se:cret", hashlib.sha256).hexdigest()
    response = await client.get("/v1/", headers=basic("mat:se:cret"), auth=None)
    assert response.json()["user"]["id"] == f"basicauth:{expected}"
    other = await client.get("/v1/", auth=("mat", "other"))
    assert other.json()["user"]["id"] != response.json()["user"]["id"]


async def test_any_credentials_are_accepted_without_an_account(
    client: httpx.AsyncClient,
) -> None:
    response = await client.put("/v1/buckets/anyone", auth=("nobody-registered", "x"))
    assert response.status_code == 201
    assert response.json()["permissions"]["write"] == [userid(("nobody-registered", "x"))]


async def test_empty_username_is_anonymous(client: httpx.AsyncClient) -> None:
    root = await client.get("/v1/", headers=basic(":secret"), auth=None)
    assert "user" not in root.json()
    response = await client.put("/v1/buckets/x", headers=basic(":secret"), auth=None)
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Bearer some-token",
        "Basic",
        "garbage",
    ],
)
async def test_invalid_credentials_are_anonymous_not_an_error(
    client: httpx.AsyncClient, authorization: str
) -> None:
    root = await client.get("/v1/", headers={"Authorization": authorization}, auth=None)
    assert root.status_code == 200
    assert "user" not in root.json()
    denied = await client.put("/v1/buckets/x", headers={"Authorization": authorization}, auth=None)
    assert denied.status_code == 401
    assert denied.json() == UNAUTHORIZED


# -- principals (06 §2, §8) -------------------------------------------------------------------


async def test_root_has_no_user_block_when_anonymous(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/", auth=None)
    assert response.status_code == 200
    assert "user" not in response.json()


async def test_authenticated_principals_start_with_the_user_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/")
    user = response.json()["user"]
    assert user["id"] == ALICE_ID
    assert user["principals"][0] == ALICE_ID
    assert sorted(user["principals"]) == sorted(
        [ALICE_ID, "system.Everyone", "system.Authenticated"]
    )


async def test_group_member_gets_the_group_principal(client: httpx.AsyncClient) -> None:
    await seed(client)
    await client.patch(G, json={"data": {"members": [BOB_ID]}})
    assert "/buckets/b/groups/g" in await principals_of(client, BOB)
    assert "/buckets/b/groups/g" not in await principals_of(client, ALICE)


async def test_group_containing_system_authenticated_applies_to_every_user(
    client: httpx.AsyncClient,
) -> None:
    await seed(client)
    await client.put(f"{B}/groups/all", json={"data": {"members": ["system.Authenticated"]}})
    assert "/buckets/b/groups/all" in await principals_of(client, BOB)
    assert "/buckets/b/groups/all" in await principals_of(client, CAROL)


async def test_removing_a_member_removes_the_group_principal(client: httpx.AsyncClient) -> None:
    await seed(client)
    await client.patch(G, json={"data": {"members": [BOB_ID, userid(CAROL)]}})
    await client.patch(G, json={"data": {"members": [userid(CAROL)]}})
    assert "/buckets/b/groups/g" not in await principals_of(client, BOB)
    assert "/buckets/b/groups/g" in await principals_of(client, CAROL)


async def test_deleting_a_group_removes_its_principal(client: httpx.AsyncClient) -> None:
    await seed(client)
    await client.patch(G, json={"data": {"members": [BOB_ID]}})
    assert (await client.delete(G)).status_code == 200
    assert "/buckets/b/groups/g" not in await principals_of(client, BOB)


async def test_deleting_a_bucket_removes_the_principals_of_its_groups(
    client: httpx.AsyncClient,
) -> None:
    await seed(client)
    await client.patch(G, json={"data": {"members": [BOB_ID]}})
    await client.put(f"{B}/groups/all", json={"data": {"members": ["system.Authenticated"]}})
    assert (await client.delete(B)).status_code == 200
    principals = await principals_of(client, BOB)
    assert "/buckets/b/groups/g" not in principals
    assert "/buckets/b/groups/all" not in principals
    # A bucket re-created with the same id does not resurrect the membership.
    await client.put(B)
    await client.put(G)
    assert "/buckets/b/groups/g" not in await principals_of(client, BOB)


async def test_group_principal_grants_what_the_group_is_granted(
    client: httpx.AsyncClient,
) -> None:
    await seed(client)
    assert (await client.get(C, auth=BOB)).status_code == 403
    await share(client, C, read=["/buckets/b/groups/g"])
    await client.patch(G, json={"data": {"members": [BOB_ID]}})
    assert (await client.get(C, auth=BOB)).status_code == 200
    await client.patch(G, json={"data": {"members": []}})
    assert (await client.get(C, auth=BOB)).status_code == 403


# -- the inheritance tree (06 §3) ---------------------------------------------------------


async def test_bucket_write_grants_everything_below(client: httpx.AsyncClient) -> None:
    await seed(client, write=[BOB_ID])
    for url in (B, C, R, G, f"{C}/records", f"{B}/collections", f"{B}/groups"):
        assert (await client.get(url, auth=BOB)).status_code == 200, url
    assert (await client.patch(R, json={"data": {"x": 1}}, auth=BOB)).status_code == 200
    assert (await client.patch(C, json={"data": {"x": 1}}, auth=BOB)).status_code == 200
    assert (await client.patch(G, json={"data": {"members": []}}, auth=BOB)).status_code == 200
    assert (await client.put(f"{B}/collections/new", auth=BOB)).status_code == 201
    assert (await client.put(f"{B}/groups/new", auth=BOB)).status_code == 201
    assert (await client.post(f"{C}/records", json={}, auth=BOB)).status_code == 201
    assert (await client.patch(B, json={"data": {"x": 1}}, auth=BOB)).status_code == 200
    assert (await client.delete(R, auth=BOB)).status_code == 200


async def test_bucket_read_grants_read_below_but_no_write(client: httpx.AsyncClient) -> None:
    await seed(client, read=[BOB_ID])
    for url in (B, C, R, G):
        assert (await client.get(url, auth=BOB)).status_code == 200, url
    assert await ids(await client.get(f"{B}/collections", auth=BOB)) == ["c"]
    assert await ids(await client.get(f"{C}/records", auth=BOB)) == ["r"]
    assert (await client.patch(R, json={"data": {"x": 1}}, auth=BOB)).status_code == 403
    assert (await client.patch(C, json={"data": {"x": 1}}, auth=BOB)).status_code == 403
    assert (await client.patch(B, json={"data": {"x": 1}}, auth=BOB)).status_code == 403
    assert (await client.put(f"{B}/collections/new", auth=BOB)).status_code == 403
    assert (await client.post(f"{C}/records", json={}, auth=BOB)).status_code == 403


async def test_collection_create_reads_bucket_metadata_but_not_its_children(
    client: httpx.AsyncClient,
) -> None:
    await seed(client, **{"collection:create": [BOB_ID]})
    assert (await client.get(B, auth=BOB)).status_code == 200
    assert (await client.get(C, auth=BOB)).status_code == 403
    assert (await client.get(G, auth=BOB)).status_code == 403
    assert (await client.get(R, auth=BOB)).status_code == 403
    listing = await client.get(f"{B}/collections", auth=BOB)
    assert listing.status_code == 200
    assert listing.json() == {"data": []}
    assert (await client.put(f"{B}/collections/mine", auth=BOB)).status_code == 201
    assert (await client.put(f"{B}/groups/mine", auth=BOB)).status_code == 403
    assert await ids(await client.get(f"{B}/collections", auth=BOB)) == ["mine"]


async def test_group_create_reads_bucket_metadata_but_not_its_groups(
    client: httpx.AsyncClient,
) -> None:
    await seed(client, **{"group:create": [BOB_ID]})
    assert (await client.get(B, auth=BOB)).status_code == 200
    assert (await client.get(G, auth=BOB)).status_code == 403
    groups = await client.get(f"{B}/groups", auth=BOB)
    assert groups.status_code == 200
    assert groups.json() == {"data": []}
    assert (await client.put(f"{B}/groups/mine", auth=BOB)).status_code == 201
    assert (await client.put(f"{B}/collections/mine", auth=BOB)).status_code == 403


async def test_record_create_reads_collection_metadata_but_not_its_records(
    client: httpx.AsyncClient,
) -> None:
    await seed(client)
    await share(client, C, **{"record:create": [BOB_ID]})
    assert (await client.get(C, auth=BOB)).status_code == 200
    assert (await client.get(B, auth=BOB)).status_code == 403
    assert (await client.get(R, auth=BOB)).status_code == 403
    records = await client.get(f"{C}/records", auth=BOB)
    assert records.status_code == 200
    assert records.json() == {"data": []}
    created = await client.post(f"{C}/records", json={"data": {"mine": True}}, auth=BOB)
    assert created.status_code == 201
    assert await ids(await client.get(f"{C}/records", auth=BOB)) == [created.json()["data"]["id"]]


async def test_collection_write_grants_its_records_but_not_the_bucket(
    client: httpx.AsyncClient,
) -> None:
    await seed(client)
    await share(client, C, write=[BOB_ID])
    assert (await client.get(R, auth=BOB)).status_code == 200
    assert (await client.patch(R, json={"data": {"x": 1}}, auth=BOB)).status_code == 200
    assert (await client.post(f"{C}/records", json={}, auth=BOB)).status_code == 201
    assert (await client.get(B, auth=BOB)).status_code == 403
    assert (await client.get(G, auth=BOB)).status_code == 403


async def test_collection_read_grants_record_read_only(client: httpx.AsyncClient) -> None:
    await seed(client)
    await share(client, C, read=[BOB_ID])
    assert (await client.get(R, auth=BOB)).status_code == 200
    assert await ids(await client.get(f"{C}/records", auth=BOB)) == ["r"]
    assert (await client.patch(R, json={"data": {"x": 1}}, auth=BOB)).status_code == 403
    assert (await client.post(f"{C}/records", json={}, auth=BOB)).status_code == 403


async def test_record_write_implies_record_read(client: httpx.AsyncClient) -> None:
    await seed(client)
    await share(client, R, write=[BOB_ID])
    assert (await client.get(R, auth=BOB)).status_code == 200
    assert (await client.delete(R, auth=BOB)).status_code == 200


async def test_group_read_and_write(client: httpx.AsyncClient) -> None:
    await seed(client)
    await share(client, G, read=[BOB_ID], write=[userid(CAROL)])
    assert (await client.get(G, auth=BOB)).status_code == 200
    assert (await client.patch(G, json={"data": {"members": []}}, auth=BOB)).status_code == 403
    assert (await client.patch(G, json={"data": {"members": []}}, auth=CAROL)).status_code == 200
    assert (await client.get(B, auth=CAROL)).status_code == 403


# -- permissions from settings (06 §3) ----------------------------------------------------


async def test_bucket_create_is_granted_to_authenticated_users_by_default(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.put("/v1/buckets/x", auth=BOB)).status_code == 201
    assert (await client.post("/v1/buckets", json={}, auth=CAROL)).status_code == 201
    anonymous = await client.put("/v1/buckets/y", auth=None)
    assert anonymous.status_code == 401


async def test_bucket_create_principals_restricts_bucket_creation(
    make_client: AppFactory,
) -> None:
    async with make_client(bucket_create_principals=[BOB_ID]) as client:
        denied = await client.put("/v1/buckets/x")
        assert denied.status_code == 403
        assert denied.json() == FORBIDDEN
        assert (await client.put("/v1/buckets/x", auth=BOB)).status_code == 201
        listing = await client.get("/v1/buckets")
        assert listing.status_code == 403


async def test_record_read_principals_grant_read_on_every_record_only(
    make_client: AppFactory,
) -> None:
    async with make_client(record_read_principals=["system.Everyone"]) as client:
        await seed(client)
        assert (await client.get(R, auth=None)).status_code == 200
        assert await ids(await client.get(f"{C}/records", auth=None)) == ["r"]
        # Keyed by the resource type of the request: the collection itself stays private.
        assert (await client.get(C, auth=None)).status_code == 401
        assert (await client.get(B, auth=BOB)).status_code == 403
        assert (await client.patch(R, json={"data": {}}, auth=BOB)).status_code == 403


async def test_record_write_principals_grant_write_on_every_record_only(
    make_client: AppFactory,
) -> None:
    async with make_client(record_write_principals=[BOB_ID]) as client:
        await seed(client)
        # write implies read, and the list of every collection's records is writable, so readable.
        assert (await client.get(R, auth=BOB)).status_code == 200
        assert await ids(await client.get(f"{C}/records", auth=BOB)) == ["r"]
        assert (await client.patch(R, json={"data": {"x": 1}}, auth=BOB)).status_code == 200
        assert (await client.post(f"{C}/records", json={}, auth=BOB)).status_code == 201
        assert (await client.get(C, auth=BOB)).status_code == 403
        assert (await client.patch(C, json={"data": {"x": 1}}, auth=BOB)).status_code == 403


async def test_bucket_write_principals_do_not_cascade_to_children(
    make_client: AppFactory,
) -> None:
    async with make_client(bucket_write_principals=[BOB_ID]) as client:
        await seed(client)
        assert (await client.get(B, auth=BOB)).status_code == 200
        assert (await client.get(C, auth=BOB)).status_code == 403
        assert (await client.get(R, auth=BOB)).status_code == 403
        assert (await client.patch(C, json={"data": {"x": 1}}, auth=BOB)).status_code == 403
        assert (await client.patch(B, json={"data": {"x": 1}}, auth=BOB)).status_code == 200


async def test_bucket_read_principals_list_every_bucket(make_client: AppFactory) -> None:
    async with make_client(bucket_read_principals=[BOB_ID]) as client:
        await client.put("/v1/buckets/a")
        await client.put("/v1/buckets/b", auth=CAROL)
        assert await ids(await client.get("/v1/buckets", auth=BOB)) == ["a", "b"]
        assert await ids(await client.get("/v1/buckets")) == ["a"]


async def test_collection_create_principals_allow_creating_in_any_bucket(
    make_client: AppFactory,
) -> None:
    async with make_client(collection_create_principals=[BOB_ID]) as client:
        await seed(client)
        assert (await client.put(f"{B}/collections/bobs", auth=BOB)).status_code == 201
        assert (await client.put(f"{B}/groups/bobs", auth=BOB)).status_code == 403


# -- 401 / 403 / 404 (06 §4, §7) ------------------------------------------------------------


async def test_anonymous_denied_gets_401_with_one_www_authenticate(
    client: httpx.AsyncClient,
) -> None:
    await seed(client)
    response = await client.get(B, auth=None)
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED
    assert response.headers.get_list("WWW-Authenticate") == ['Basic realm="Realm"']


async def test_authenticated_denied_gets_403_errno_121(client: httpx.AsyncClient) -> None:
    await seed(client)
    response = await client.get(B, auth=BOB)
    assert response.status_code == 403
    assert response.json() == FORBIDDEN
    assert "WWW-Authenticate" not in response.headers


async def test_post_with_an_existing_id_needs_read_on_that_object(
    client: httpx.AsyncClient,
) -> None:
    await seed(client, **{"collection:create": [BOB_ID]})
    denied = await client.post(f"{B}/collections", json={"data": {"id": "c"}}, auth=BOB)
    assert denied.status_code == 403
    await share(client, C, read=[BOB_ID])
    allowed = await client.post(
        f"{B}/collections", json={"data": {"id": "c", "changed": True}}, auth=BOB
    )
    assert allowed.status_code == 200
    assert "changed" not in allowed.json()["data"]


async def test_put_needs_create_when_missing_and_write_when_existing(
    client: httpx.AsyncClient,
) -> None:
    await seed(client)
    await share(client, C, **{"record:create": [BOB_ID]})
    assert (await client.put(f"{C}/records/new", auth=BOB)).status_code == 201
    replaced = await client.put(R, json={"data": {"stolen": True}}, auth=BOB)
    assert replaced.status_code == 403
    assert (await client.get(R)).json()["data"]["title"] == "hello"


async def test_put_if_none_match_star_needs_create_and_never_discloses(
    client: httpx.AsyncClient,
) -> None:
    await seed(client)
    await share(client, C, **{"record:create": [BOB_ID]})
    response = await client.put(R, json={"data": {}}, headers={"If-None-Match": "*"}, auth=BOB)
    assert response.status_code == 412
    assert "existing" not in response.json().get("details", {})
    assert "hello" not in response.text


async def test_patch_and_delete_of_missing_object_are_404_with_parent_read(
    client: httpx.AsyncClient,
) -> None:
    await seed(client, read=[BOB_ID])
    missing = f"{B}/collections/missing"
    patched = await client.patch(missing, json={"data": {}}, auth=BOB)
    assert patched.status_code == 404
    assert patched.json()["errno"] == 110
    deleted = await client.delete(missing, auth=BOB)
    assert deleted.status_code == 404
    assert deleted.json()["details"] == {"id": "missing", "resource_name": "collection"}


async def test_patch_and_delete_of_missing_object_are_denied_without_parent_read(
    client: httpx.AsyncClient,
) -> None:
    await seed(client)
    missing = f"{B}/collections/missing"
    assert (await client.delete(missing, auth=BOB)).status_code == 403
    assert (await client.patch(missing, json={"data": {}}, auth=BOB)).status_code == 403
    assert (await client.delete(missing, auth=None)).status_code == 401


async def test_get_missing_object_is_404_with_parent_read_else_403(
    client: httpx.AsyncClient,
) -> None:
    await seed(client, read=[BOB_ID])
    found = await client.get(f"{C}/records/missing", auth=BOB)
    assert found.status_code == 404
    assert found.json() == {
        "code": 404,
        "errno": 110,
        "error": "Not Found",
        "details": {"id": "missing", "resource_name": "record"},
    }
    assert (await client.get(f"{C}/records/missing", auth=CAROL)).status_code == 403
    assert (await client.get(f"{C}/records/missing", auth=None)).status_code == 401


async def test_unknown_bucket_is_403_not_404(client: httpx.AsyncClient) -> None:
    for url in (
        "/v1/buckets/unknown",
        "/v1/buckets/unknown/collections/c",
        "/v1/buckets/unknown/collections",
        "/v1/buckets/unknown/groups/g",
    ):
        response = await client.get(url)
        assert response.status_code == 403, url
        assert response.json() == FORBIDDEN
        assert (await client.get(url, auth=None)).status_code == 401, url
    assert (await client.delete("/v1/buckets/unknown")).status_code == 403


async def test_unknown_bucket_is_404_for_bucket_read_principals(make_client: AppFactory) -> None:
    async with make_client(bucket_read_principals=[ALICE_ID]) as client:
        response = await client.get("/v1/buckets/unknown")
        assert response.status_code == 404
        assert response.json()["errno"] == 110
        assert (await client.delete("/v1/buckets/unknown")).status_code == 404


async def test_missing_collection_under_readable_bucket_is_404(client: httpx.AsyncClient) -> None:
    await seed(client, read=[BOB_ID])
    response = await client.get(f"{B}/collections/missing", auth=BOB)
    assert response.status_code == 404
    assert response.json()["details"] == {"id": "missing", "resource_name": "collection"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/records/r"),
        ("PATCH", "/records/r"),
        ("DELETE", "/records/r"),
        ("POST", "/records"),
        ("DELETE", "/records"),
    ],
)
@pytest.mark.parametrize("auth", [None, BOB, ALICE])
async def test_record_writes_under_missing_collection_are_404_errno_111_even_anonymous(
    client: httpx.AsyncClient, method: str, path: str, auth: tuple[str, str] | None
) -> None:
    await seed(client)
    url = f"{B}/collections/missing{path}"
    body = {"data": {}} if method in ("PUT", "PATCH", "POST") else None
    response = await client.request(method, url, json=body, auth=auth)
    assert response.status_code == 404
    assert response.json() == {
        "code": 404,
        "errno": 111,
        "error": "Not Found",
        "details": {"id": "missing", "resource_name": "collection"},
    }


# -- list visibility (06 §5) ------------------------------------------------------------


async def test_list_is_restricted_to_objects_shared_with_the_caller(
    client: httpx.AsyncClient,
) -> None:
    await seed(client)
    for cid in ("c1", "c2", "c3"):
        await client.put(f"{B}/collections/{cid}")
    await share(client, f"{B}/collections/c2", read=[BOB_ID])
    await share(client, f"{B}/collections/c3", **{"record:create": [BOB_ID]})
    await share(client, f"{B}/collections/c1", read=[userid(CAROL)])
    assert await ids(await client.get(f"{B}/collections", auth=BOB)) == ["c2", "c3"]
    head = await client.head(f"{B}/collections", auth=BOB)
    assert head.headers["Total-Objects"] == "2"


async def test_record_list_shows_records_readable_or_writable(client: httpx.AsyncClient) -> None:
    await seed(client)
    for rid in ("r1", "r2", "r3"):
        await client.put(f"{C}/records/{rid}")
    await share(client, f"{C}/records/r1", read=[BOB_ID])
    await share(client, f"{C}/records/r2", write=[BOB_ID])
    assert await ids(await client.get(f"{C}/records", auth=BOB)) == ["r1", "r2"]
    assert await ids(await client.get(f"{C}/records")) == ["r", "r1", "r2", "r3"]


async def test_list_through_a_group_principal(client: httpx.AsyncClient) -> None:
    await seed(client)
    await client.put(f"{C}/records/r1")
    await share(client, f"{C}/records/r1", read=["/buckets/b/groups/g"])
    await client.patch(G, json={"data": {"members": [BOB_ID]}})
    assert await ids(await client.get(f"{C}/records", auth=BOB)) == ["r1"]


async def test_get_buckets_is_an_empty_list_for_any_authenticated_user(
    client: httpx.AsyncClient,
) -> None:
    await seed(client)
    response = await client.get("/v1/buckets", auth=BOB)
    assert response.status_code == 200
    assert response.json() == {"data": []}
    anonymous = await client.get("/v1/buckets", auth=None)
    assert anonymous.status_code == 401
    assert anonymous.json() == UNAUTHORIZED


async def test_list_without_any_permission_is_denied(client: httpx.AsyncClient) -> None:
    await seed(client)
    response = await client.get(f"{B}/collections", auth=BOB)
    assert response.status_code == 403
    assert response.json() == FORBIDDEN
    assert (await client.get(f"{C}/records", auth=None)).status_code == 401


async def test_plural_delete_deletes_only_what_the_caller_can_write(
    client: httpx.AsyncClient,
) -> None:
    await seed(client)
    for rid in ("r1", "r2", "r3"):
        await client.put(f"{C}/records/{rid}")
    await share(client, f"{C}/records/r1", write=[BOB_ID])
    await share(client, f"{C}/records/r2", read=[BOB_ID])
    response = await client.delete(f"{C}/records", auth=BOB)
    assert response.status_code == 200
    assert [t["id"] for t in response.json()["data"]] == ["r1"]
    assert await ids(await client.get(f"{C}/records")) == ["r", "r2", "r3"]


async def test_plural_delete_without_any_write_is_denied(client: httpx.AsyncClient) -> None:
    await seed(client, read=[BOB_ID])
    assert (await client.delete(f"{C}/records", auth=BOB)).status_code == 403
    assert await ids(await client.get(f"{C}/records")) == ["r"]


async def test_plural_delete_by_the_parent_writer_deletes_everything(
    client: httpx.AsyncClient,
) -> None:
    await seed(client, write=[BOB_ID])
    await client.put(f"{C}/records/r2", auth=CAROL)  # denied: carol has nothing
    await client.put(f"{C}/records/r2")
    response = await client.delete(f"{C}/records", auth=BOB)
    assert sorted(t["id"] for t in response.json()["data"]) == ["r", "r2"]


# -- ACL maintenance (06 §6) ----------------------------------------------------------------


async def test_creator_is_added_to_the_write_permission(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/v1/buckets/x", json={"permissions": {"write": ["/buckets/x/groups/writers"]}}
    )
    assert response.status_code == 201
    assert sorted(response.json()["permissions"]["write"]) == sorted(
        ["/buckets/x/groups/writers", ALICE_ID]
    )


async def test_updater_is_added_to_the_write_permission(client: httpx.AsyncClient) -> None:
    await seed(client, write=[BOB_ID])
    assert (await client.get(C)).json()["permissions"] == {"write": [ALICE_ID]}
    response = await client.patch(C, json={"data": {"x": 1}}, auth=BOB)
    assert sorted(response.json()["permissions"]["write"]) == sorted([ALICE_ID, BOB_ID])


async def test_anonymous_creator_is_recorded_as_system_everyone(make_client: AppFactory) -> None:
    async with make_client(bucket_create_principals=["system.Everyone"]) as client:
        response = await client.put("/v1/buckets/public", auth=None)
        assert response.status_code == 201
        assert response.json()["permissions"] == {"write": ["system.Everyone"]}
        # So anyone, including another anonymous caller, may now write it.
        patched = await client.patch("/v1/buckets/public", json={"data": {"x": 1}}, auth=None)
        assert patched.status_code == 200


async def test_permissions_are_hidden_from_non_writers(client: httpx.AsyncClient) -> None:
    await seed(client, read=[BOB_ID])
    for url in (B, C, R):
        response = await client.get(url, auth=BOB)
        assert response.status_code == 200
        assert response.json()["permissions"] == {}, url
    assert response.json()["data"]["title"] == "hello"


async def test_permissions_are_shown_to_writers_of_the_object_itself(
    client: httpx.AsyncClient,
) -> None:
    await seed(client, write=[BOB_ID])
    # Bob inherits write on the collection from the bucket, but is not in its own ACL.
    assert (await client.get(C, auth=BOB)).json()["permissions"] == {}
    bucket = (await client.get(B, auth=BOB)).json()["permissions"]
    assert sorted(bucket["write"]) == sorted([ALICE_ID, BOB_ID])


async def test_explicit_permissions_false_does_not_add_the_creator(
    make_client: AppFactory,
) -> None:
    async with make_client(explicit_permissions=False) as client:
        response = await client.put("/v1/buckets/x", json={"permissions": {"read": [BOB_ID]}})
        assert response.status_code == 201
        assert response.json()["permissions"] == {}
        assert (await client.get("/v1/buckets/x", auth=BOB)).status_code == 200
        assert (await client.get("/v1/buckets/x")).status_code == 403


async def test_deleted_object_loses_its_acl(client: httpx.AsyncClient) -> None:
    await seed(client)
    await share(client, R, read=[BOB_ID])
    await client.delete(R)
    await client.put(R)  # re-created by alice, without bob
    assert (await client.get(R, auth=BOB)).status_code == 403


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_a_write_adds_its_writer_to_the_acl_once(
    client: httpx.AsyncClient, method: str
) -> None:
    """A write adds its writer to the object's ``write`` (explicit_permissions): the first
    write of a new writer changes the ACL; the next ones, and those of its author, find it
    there and leave the ACL as it is (no ACL write), answering it all the same."""
    await seed(client, write=[BOB_ID])  # bob may write every record of the bucket
    for who, writers in ((ALICE, [ALICE_ID]), (BOB, [ALICE_ID, BOB_ID]), (BOB, None)):
        body = {"data": {"title": "again"}, "permissions": {}}
        if method == "PATCH":
            body = {"data": {"title": "again"}}
        response = await client.request(method, R, json=body, auth=who)
        assert response.status_code == 200, response.text
        expected = sorted(writers or [ALICE_ID, BOB_ID])
        assert sorted(response.json()["permissions"]["write"]) == expected
        stored = (await client.get(R)).json()["permissions"]
        assert sorted(stored["write"]) == expected
        assert stored.get("read", []) == []
