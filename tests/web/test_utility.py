"""protocol/09: root document, heartbeats, version, OpenAPI, contribute.json, flush and the
permissions endpoint."""

from __future__ import annotations

import json
import re
import time
from datetime import date, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import ALICE, BOB, AppFactory, userid

ALICE_ID = userid(ALICE)
BOB_ID = userid(BOB)
ROOT_KEYS = {
    "project_name",
    "project_version",
    "http_api_version",
    "project_docs",
    "url",
    "settings",
    "capabilities",
}
BASICAUTH = {
    "description": "Very basic authentication sessions. Not for production use.",
    "url": "http://kinto.readthedocs.io/en/stable/api/1.x/authentication.html",
}
FLUSH = {
    "description": "The __flush__ endpoint can be used to remove all data from all backends.",
    "url": "https://kinto.readthedocs.io/en/latest/api/1.x/flush.html",
}
PERMISSIONS_ENDPOINT = {
    "description": "The permissions endpoint can be used to list all user objects permissions.",
    "url": "https://kinto.readthedocs.io/en/latest/configuration/settings.html"
    "#activating-the-permissions-endpoint",
}


# -- GET / (09 §1) ----------------------------------------------------------------------------


async def test_root_has_exactly_the_documented_keys(client: httpx.AsyncClient) -> None:
    anonymous = await client.get("/v1/", auth=None)
    assert anonymous.status_code == 200
    assert set(anonymous.json()) == ROOT_KEYS
    authenticated = await client.get("/v1/")
    assert set(authenticated.json()) == ROOT_KEYS | {"user"}


async def test_root_values_clients_depend_on(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/")).json()
    assert body["http_api_version"] == "1.23"
    assert isinstance(body["http_api_version"], str)
    assert body["url"] == "http://testserver/v1/"
    assert body["settings"] == {
        "batch_max_requests": 25,
        "readonly": False,
        "explicit_permissions": True,
    }
    assert body["project_name"] == "nuages"
    assert isinstance(body["project_version"], str)
    assert body["user"] == {
        "id": ALICE_ID,
        "principals": [ALICE_ID, "system.Everyone", "system.Authenticated"],
    }


async def test_root_url_follows_the_request_host(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/", headers={"Host": "kinto.example.com:8443"})
    assert response.json()["url"] == "http://kinto.example.com:8443/v1/"


async def test_root_url_uses_http_scheme_and_host_settings(make_client: AppFactory) -> None:
    async with make_client(http_scheme="https", http_host="sync.example.org") as client:
        assert (await client.get("/v1/")).json()["url"] == "https://sync.example.org/v1/"


async def test_root_settings_reflect_the_configuration(make_client: AppFactory) -> None:
    async with make_client(
        batch_max_requests=10, readonly=True, explicit_permissions=False, project_name="mine"
    ) as client:
        body = (await client.get("/v1/")).json()
    assert body["settings"] == {
        "batch_max_requests": 10,
        "readonly": True,
        "explicit_permissions": False,
    }
    assert body["project_name"] == "mine"


async def test_default_capabilities_are_basicauth_only(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/")).json()["capabilities"] == {"basicauth": BASICAUTH}


async def test_capabilities_follow_the_settings(make_client: AppFactory) -> None:
    async with make_client(
        experimental_permissions_endpoint=True, plugins=["flush"], flush_endpoint_enabled=True
    ) as client:
        capabilities = (await client.get("/v1/")).json()["capabilities"]
    assert capabilities == {
        "basicauth": BASICAUTH,
        "flush_endpoint": FLUSH,
        "permissions_endpoint": PERMISSIONS_ENDPOINT,
    }


async def test_without_basicauth_no_capability_and_no_user(make_client: AppFactory) -> None:
    async with make_client(auth=[]) as client:
        body = (await client.get("/v1/")).json()
        assert body["capabilities"] == {}
        assert "user" not in body
        assert (await client.put("/v1/buckets/b")).status_code == 401


async def test_root_shows_eos_when_set(make_client: AppFactory) -> None:
    eos = date.today() + timedelta(days=30)
    async with make_client(eos=eos.isoformat()) as client:
        assert (await client.get("/v1/")).json()["eos"] == eos.isoformat()


async def test_root_ignores_accept(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response.json()["http_api_version"] == "1.23"


async def test_head_root(client: httpx.AsyncClient) -> None:
    response = await client.head("/v1/")
    assert response.status_code == 200
    assert response.content == b""


async def test_root_has_no_cache_headers_unless_readonly(make_client: AppFactory) -> None:
    async with make_client() as client:
        assert "Cache-Control" not in (await client.get("/v1/")).headers
    async with make_client(readonly=True) as client:
        response = await client.get("/v1/")
    assert response.headers["Cache-Control"] == "max-age=86400"
    expires = parsedate_to_datetime(response.headers["Expires"])
    assert abs(expires.timestamp() - time.time() - 86400) < 60


# -- heartbeats and version (09 §2-4) ------------------------------------------------------


async def test_heartbeat_reports_every_backend(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/__heartbeat__", auth=None)
    assert response.status_code == 200
    assert response.json() == {"storage": True, "permission": True, "cache": True}


async def test_heartbeat_is_503_with_a_plain_map_when_a_backend_fails(
    client: httpx.AsyncClient, backend: str, tmp_path: Path
) -> None:
    if backend != "sqlite":
        pytest.skip("only a real database can be made unreachable without mocks")
    await client.app.state.backends.aclose()  # type: ignore[attr-defined]
    for leftover in tmp_path.glob("nuages.db*"):
        leftover.unlink()
    (tmp_path / "nuages.db").mkdir()  # the file is now unopenable
    response = await client.get("/v1/__heartbeat__", auth=None)
    assert response.status_code == 503
    assert response.json() == {"storage": False, "permission": False, "cache": False}
    assert response.headers["Retry-After"] == "3"
    lb = await client.get("/v1/__lbheartbeat__", auth=None)
    assert (lb.status_code, lb.json()) == (200, {})


async def test_lbheartbeat_is_an_empty_object(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/__lbheartbeat__", auth=None)
    assert response.status_code == 200
    assert response.json() == {}


async def test_version_serves_the_version_file(make_client: AppFactory, tmp_path: Path) -> None:
    content = {"name": "nuages", "version": "9.9.9", "commit": "abc", "source": "https://x"}
    path = tmp_path / "version.json"
    path.write_text(json.dumps(content))
    async with make_client(version_json_path=str(path)) as client:
        response = await client.get("/v1/__version__", auth=None)
    assert response.status_code == 200
    assert response.json() == content


async def test_version_without_file_describes_the_running_server(
    make_client: AppFactory, tmp_path: Path
) -> None:
    async with make_client(version_json_path=str(tmp_path / "missing.json")) as client:
        response = await client.get("/v1/__version__", auth=None)
        root = (await client.get("/v1/")).json()
    assert response.status_code == 200
    body = response.json()
    assert {"name", "version", "source", "commit"} <= set(body)
    assert body["version"] == root["project_version"]


# -- __api__ (09 §5) --------------------------------------------------------------------------


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


async def test_api_is_an_openapi_3_document(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/__api__", auth=None)
    assert response.status_code == 200
    doc = response.json()
    assert re.fullmatch(r"3\.\d+\.\d+", doc["openapi"])
    assert doc["info"]["title"] == "nuages"
    assert doc["info"]["version"] == "1.23"
    assert doc["servers"][0]["url"].endswith("/v1")
    operation_ids = []
    for path, item in doc["paths"].items():
        assert path.startswith("/"), path
        declared = set(re.findall(r"\{(\w+)\}", path))
        for method, operation in item.items():
            assert method in {"get", "head", "post", "put", "patch", "delete"}, method
            assert operation["responses"], (path, method)
            for status, answer in operation["responses"].items():
                assert re.fullmatch(r"[1-5]\d\d|default", status)
                assert isinstance(answer["description"], str)
            params = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert params == declared, (path, method)
            operation_ids.append(operation["operationId"])
    assert len(operation_ids) == len(set(operation_ids))
    for ref in _refs(doc):
        assert _resolve(doc, ref) is not None
    for requirement in doc.get("security", []):
        assert set(requirement) <= set(doc["components"]["securitySchemes"])


async def test_api_lists_our_paths(make_client: AppFactory) -> None:
    async with make_client(experimental_permissions_endpoint=True) as client:
        paths = (await client.get("/v1/__api__")).json()["paths"]
    for path in (
        "/",
        "/batch",
        "/__heartbeat__",
        "/__lbheartbeat__",
        "/__version__",
        "/permissions",
        "/buckets",
        "/buckets/{id}",
        "/buckets/{bucket}/collections",
        "/buckets/{bucket}/collections/{id}",
        "/buckets/{bucket}/groups",
        "/buckets/{bucket}/groups/{id}",
        "/buckets/{bucket}/collections/{collection}/records",
        "/buckets/{bucket}/collections/{collection}/records/{id}",
    ):
        assert path in paths, path
    assert set(paths["/buckets/{id}"]) >= {"get", "put", "patch", "delete"}
    assert set(paths["/batch"]) == {"post"}
    assert "/__flush__" not in paths


# -- contribute.json (09 §6) --------------------------------------------------------------


async def test_contribute_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/contribute.json", auth=None)
    assert response.status_code == 200
    body = response.json()
    assert {"name", "description", "repository", "participate", "bugs", "keywords"} <= set(body)
    assert {"url", "license"} <= set(body["repository"])
    assert isinstance(body["keywords"], list)
    # A template's literal text is matched as such: its "." is not a regex wildcard.
    assert (await client.get("/v1/contributeXjson", auth=None)).status_code == 404


# -- __flush__ (09 §8) ------------------------------------------------------------------------


async def test_flush_is_not_served_by_default(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/__flush__")
    assert response.status_code == 404
    assert response.json()["errno"] == 111


@pytest.mark.parametrize("settings", [{"plugins": ["flush"]}, {"flush_endpoint_enabled": True}])
async def test_flush_is_enabled_by_the_plugin_or_the_setting(
    make_client: AppFactory, settings: dict[str, Any]
) -> None:
    # Kinto enabled it either way: `includes = kinto.plugins.flush` or the setting.
    async with make_client(**settings) as client:
        assert (await client.post("/v1/__flush__", auth=None)).status_code == 202
        assert "flush_endpoint" in (await client.get("/v1/")).json()["capabilities"]


async def test_flush_deletes_everything(make_client: AppFactory) -> None:
    async with make_client(plugins=["flush"], flush_endpoint_enabled=True) as client:
        await client.put("/v1/buckets/b", json={"permissions": {"read": [BOB_ID]}})
        await client.put("/v1/buckets/b/groups/g", json={"data": {"members": [BOB_ID]}})
        response = await client.post("/v1/__flush__", auth=None)
        assert response.status_code == 202
        assert response.json() == {}
        assert (await client.get("/v1/buckets/b")).status_code == 403
        assert (await client.get("/v1/buckets")).json() == {"data": []}
        bob = (await client.get("/v1/", auth=BOB)).json()["user"]["principals"]
        assert "/buckets/b/groups/g" not in bob
        assert (await client.put("/v1/buckets/b")).status_code == 201


async def test_flush_only_accepts_post(make_client: AppFactory) -> None:
    async with make_client(plugins=["flush"], flush_endpoint_enabled=True) as client:
        response = await client.get("/v1/__flush__")
        assert response.status_code == 405
        assert response.json()["errno"] == 115


# -- /permissions (09 §7) ---------------------------------------------------------------------


async def permissions_client_seed(client: httpx.AsyncClient) -> None:
    await client.put("/v1/buckets/b", json={"permissions": {"read": [BOB_ID]}})
    await client.put(
        "/v1/buckets/b/collections/c", json={"permissions": {"record:create": [BOB_ID]}}
    )
    await client.put("/v1/buckets/b/groups/g")
    await client.put(
        "/v1/buckets/b/collections/c/records/r", json={"permissions": {"write": [BOB_ID]}}
    )
    await client.put("/v1/buckets/b/collections/c/records/private")


def by_uri(response: httpx.Response) -> dict[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    return {entry["uri"]: entry for entry in response.json()["data"]}


async def test_permissions_endpoint_is_404_unless_enabled(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/permissions")
    assert response.status_code == 404
    assert response.json()["errno"] == 111


async def test_permissions_entries_shape(make_client: AppFactory) -> None:
    async with make_client(experimental_permissions_endpoint=True) as client:
        await permissions_client_seed(client)
        entries = by_uri(await client.get("/v1/permissions", auth=BOB))
    assert set(entries) == {
        "/",
        "/buckets/b",
        "/buckets/b/collections/c",
        "/buckets/b/collections/c/records/r",
    }
    record = entries["/buckets/b/collections/c/records/r"]
    assert {k: v for k, v in record.items() if k != "permissions"} == {
        "uri": "/buckets/b/collections/c/records/r",
        "resource_name": "record",
        "id": "r",
        "bucket_id": "b",
        "collection_id": "c",
        "record_id": "r",
    }
    assert sorted(record["permissions"]) == ["read", "write"]
    bucket = entries["/buckets/b"]
    assert (bucket["resource_name"], bucket["id"], bucket["bucket_id"]) == ("bucket", "b", "b")
    assert sorted(bucket["permissions"]) == ["read", "read:attributes"]
    collection = entries["/buckets/b/collections/c"]
    assert sorted(collection["permissions"]) == ["read:attributes", "record:create"]
    assert entries["/"] == {"uri": "/", "resource_name": "root", "permissions": ["bucket:create"]}


async def test_permissions_are_expanded_within_the_object_only(make_client: AppFactory) -> None:
    async with make_client(experimental_permissions_endpoint=True) as client:
        await permissions_client_seed(client)
        entries = by_uri(await client.get("/v1/permissions"))
    assert sorted(entries["/buckets/b"]["permissions"]) == [
        "collection:create",
        "group:create",
        "read",
        "read:attributes",
        "write",
    ]
    assert sorted(entries["/buckets/b/collections/c"]["permissions"]) == [
        "read",
        "read:attributes",
        "record:create",
        "write",
    ]
    assert sorted(entries["/buckets/b/groups/g"]["permissions"]) == ["read", "write"]
    assert entries["/buckets/b/groups/g"]["group_id"] == "g"


async def test_permissions_of_anonymous_callers(make_client: AppFactory) -> None:
    async with make_client(experimental_permissions_endpoint=True) as client:
        await client.put("/v1/buckets/b")
        await client.put(
            "/v1/buckets/b/collections/c", json={"permissions": {"read": ["system.Everyone"]}}
        )
        response = await client.get("/v1/permissions", auth=None)
    # No root entry: anonymous callers may not create buckets.
    assert [e["uri"] for e in response.json()["data"]] == ["/buckets/b/collections/c"]


async def test_permissions_via_groups_and_deleted_objects(make_client: AppFactory) -> None:
    async with make_client(experimental_permissions_endpoint=True) as client:
        await client.put("/v1/buckets/b")
        await client.put("/v1/buckets/b/groups/g", json={"data": {"members": [BOB_ID]}})
        await client.put(
            "/v1/buckets/b/collections/c", json={"permissions": {"read": ["/buckets/b/groups/g"]}}
        )
        await client.put("/v1/buckets/b/collections/gone", json={"permissions": {"read": [BOB_ID]}})
        await client.delete("/v1/buckets/b/collections/gone")
        entries = by_uri(await client.get("/v1/permissions", auth=BOB))
    assert set(entries) == {"/", "/buckets/b/collections/c"}


async def test_permissions_from_settings_list_every_object(make_client: AppFactory) -> None:
    async with make_client(
        experimental_permissions_endpoint=True,
        bucket_write_principals=[BOB_ID],
        record_create_principals=[BOB_ID],
        bucket_create_principals=["system.Everyone"],
    ) as client:
        await client.put("/v1/buckets/a")
        await client.put("/v1/buckets/b")
        await client.put("/v1/buckets/b/collections/c")
        await client.put("/v1/buckets/b/groups/g")
        entries = by_uri(await client.get("/v1/permissions", auth=BOB))
        anonymous = by_uri(await client.get("/v1/permissions", auth=None))
    assert set(entries) == {"/", "/buckets/a", "/buckets/b", "/buckets/b/collections/c"}
    assert "write" in entries["/buckets/a"]["permissions"]
    assert "collection:create" in entries["/buckets/a"]["permissions"]
    assert sorted(entries["/buckets/b/collections/c"]["permissions"]) == [
        "read:attributes",
        "record:create",
    ]
    assert anonymous == {
        "/": {"uri": "/", "resource_name": "root", "permissions": ["bucket:create"]}
    }


async def test_permissions_endpoint_obeys_permissions_read_principals(
    make_client: AppFactory,
) -> None:
    async with make_client(
        experimental_permissions_endpoint=True, permissions_read_principals=[ALICE_ID]
    ) as client:
        assert (await client.get("/v1/permissions")).status_code == 200
        assert (await client.get("/v1/permissions", auth=BOB)).status_code == 403
        assert (await client.get("/v1/permissions", auth=None)).status_code == 401


async def test_permissions_filters_and_sorting(make_client: AppFactory) -> None:
    async with make_client(experimental_permissions_endpoint=True) as client:
        await permissions_client_seed(client)
        buckets = await client.get("/v1/permissions?resource_name=bucket")
        assert [e["uri"] for e in buckets.json()["data"]] == ["/buckets/b"]
        excluded = await client.get("/v1/permissions?exclude_resource_name=bucket,record,root")
        assert sorted(e["uri"] for e in excluded.json()["data"]) == [
            "/buckets/b/collections/c",
            "/buckets/b/groups/g",
        ]
        by_id = await client.get("/v1/permissions?_sort=id&resource_name=record")
        assert [e["id"] for e in by_id.json()["data"]] == ["private", "r"]
        default = await client.get("/v1/permissions")
        uris = [e["uri"] for e in default.json()["data"]]
        assert uris == sorted(uris, reverse=True)
        fields = await client.get("/v1/permissions?_fields=uri&resource_name=root")
        assert fields.json()["data"] == [{"uri": "/"}]


@pytest.mark.parametrize(
    "query", ["unknown=1", "permissions=read", "_sort=unknown", "_fields=unknown", "like_nothing=x"]
)
async def test_permissions_filters_are_strict(make_client: AppFactory, query: str) -> None:
    async with make_client(experimental_permissions_endpoint=True) as client:
        response = await client.get(f"/v1/permissions?{query}")
    assert response.status_code == 400
    assert response.json()["errno"] == 107


async def test_permissions_ignores_timestamp_parameters(make_client: AppFactory) -> None:
    async with make_client(experimental_permissions_endpoint=True) as client:
        await permissions_client_seed(client)
        full = (await client.get("/v1/permissions")).json()
        response = await client.get("/v1/permissions?_since=1&_before=2&last_modified=3")
    assert response.status_code == 200
    assert response.json() == full


async def test_permissions_pagination_and_head(make_client: AppFactory) -> None:
    async with make_client(experimental_permissions_endpoint=True) as client:
        await permissions_client_seed(client)
        total = len((await client.get("/v1/permissions")).json()["data"])
        head = await client.head("/v1/permissions")
        assert head.headers["Total-Objects"] == str(total)
        exposed = head.headers["Access-Control-Expose-Headers"]
        assert {"Next-Page", "ETag", "Total-Objects"} <= {h.strip() for h in exposed.split(",")}
        seen: list[str] = []
        url: str | None = "/v1/permissions?_limit=2"
        while url is not None:
            page = await client.get(url)
            assert len(page.json()["data"]) <= 2
            seen.extend(e["uri"] for e in page.json()["data"])
            url = page.headers.get("Next-Page")
        assert len(seen) == total == len(set(seen))


async def test_permissions_etag_is_a_stable_millisecond_timestamp(
    make_client: AppFactory,
) -> None:
    async with make_client(experimental_permissions_endpoint=True) as client:
        first = await client.get("/v1/permissions")
        await client.put("/v1/buckets/b")
        second = await client.get("/v1/permissions", auth=BOB)
        head = await client.head("/v1/permissions")
    etag = first.headers["ETag"]
    assert re.fullmatch(r'"\d{13}"', etag)
    assert abs(int(etag.strip('"')) - time.time() * 1000) < 3_600_000
    assert second.headers["ETag"] == etag
    assert head.headers["ETag"] == etag


async def test_permissions_if_none_match_never_gives_304(make_client: AppFactory) -> None:
    async with make_client(experimental_permissions_endpoint=True) as client:
        etag = (await client.get("/v1/permissions")).headers["ETag"]
        response = await client.get("/v1/permissions", headers={"If-None-Match": etag})
    assert response.status_code == 200
    assert response.json()["data"]


async def test_permissions_if_match_proceeds_or_412_never_5xx(make_client: AppFactory) -> None:
    async with make_client(experimental_permissions_endpoint=True) as client:
        etag = (await client.get("/v1/permissions")).headers["ETag"]
        same = await client.get("/v1/permissions", headers={"If-Match": etag})
        assert same.status_code == 200
        assert same.json()["data"]
        star = await client.get("/v1/permissions", headers={"If-Match": "*"})
        assert star.status_code == 200
        other = await client.get("/v1/permissions", headers={"If-Match": '"123"'})
        assert other.status_code == 412
        assert other.json()["errno"] == 114
        assert other.headers["ETag"] == etag
        invalid = await client.get("/v1/permissions", headers={"If-Match": "yesterday"})
        assert invalid.status_code == 400
