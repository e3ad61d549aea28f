"""The toolkit's resource declaration, driven over HTTP on a small app of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import BOB, serving

from nuages.toolkit import OWNER, Resource, Settings, ValidationError, create_app

SCHEMA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "maxLength": 10}, "size": {"type": "integer"}},
}


def _check_size(new: dict[str, Any], old: dict[str, Any] | None, given: bool) -> dict[str, Any]:
    if old is not None and new.get("size", 0) < old.get("size", 0):
        raise ValidationError("size cannot shrink", name="data.size")
    return new


THING = Resource(
    name="thing",
    plural="things",
    parent=OWNER,
    schema=SCHEMA,
    defaults={"size": 1},
    server_fields=lambda new, old: {"revision": (old or {}).get("revision", 0) + 1},
    read_only_fields=("name",),
    unique_fields=("name",),
    methods=frozenset({"GET", "POST", "PATCH", "DELETE"}),
    process=_check_size,
)


@pytest.fixture
async def client(backend: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    url = "memory://" if backend == "memory" else f"sqlite:///{tmp_path / 'toolkit.db'}"
    app = create_app([THING], Settings.load(env={}, storage_url=url), migrate=True)
    async with serving(app) as c:
        yield c


async def test_defaults_and_server_fields_are_filled(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/things", json={"data": {"name": "box"}})
    assert response.status_code == 201
    data = response.json()["data"]
    assert data["size"] == 1
    assert data["revision"] == 1


async def test_schema_violations_are_400_naming_the_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/things", json={"data": {"name": 3}})
    assert response.status_code == 400
    body = response.json()
    assert body["errno"] == 107
    assert body["details"][0]["name"] == "data.name"
    response = await client.post("/v1/things", json={"data": {}})
    assert response.status_code == 400


async def test_read_only_fields_cannot_change(client: httpx.AsyncClient) -> None:
    created = (await client.post("/v1/things", json={"data": {"name": "box"}})).json()["data"]
    url = f"/v1/things/{created['id']}"
    response = await client.patch(url, json={"data": {"name": "crate"}})
    assert response.status_code == 400
    assert response.json()["message"] == "data.name in body: Cannot modify name"
    # Sending the same value is not a change.
    assert (await client.patch(url, json={"data": {"name": "box"}})).status_code == 200


async def test_server_fields_are_read_only_and_recomputed(client: httpx.AsyncClient) -> None:
    created = (await client.post("/v1/things", json={"data": {"name": "box"}})).json()["data"]
    url = f"/v1/things/{created['id']}"
    assert (await client.patch(url, json={"data": {"revision": 99}})).status_code == 400
    updated = (await client.patch(url, json={"data": {"size": 2}})).json()["data"]
    assert updated["revision"] == 2


async def test_process_hook_can_reject(client: httpx.AsyncClient) -> None:
    created = (await client.post("/v1/things", json={"data": {"name": "box", "size": 5}})).json()
    url = f"/v1/things/{created['data']['id']}"
    response = await client.patch(url, json={"data": {"size": 4}})
    assert response.status_code == 400
    assert response.json()["details"][0]["description"] == "size cannot shrink"


async def test_unique_fields_conflict_is_409_with_the_existing_object(
    client: httpx.AsyncClient,
) -> None:
    first = (await client.post("/v1/things", json={"data": {"name": "box"}})).json()["data"]
    response = await client.post("/v1/things", json={"data": {"name": "box"}})
    assert response.status_code == 409
    body = response.json()
    assert body["errno"] == 122
    assert body["details"]["field"] == "name"
    assert body["details"]["existing"]["id"] == first["id"]
    assert "Retry-After" in response.headers


async def test_unique_fields_are_scoped_to_the_owner(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/things", json={"data": {"name": "box"}})).status_code == 201
    response = await client.post("/v1/things", json={"data": {"name": "box"}}, auth=BOB)
    assert response.status_code == 201


async def test_owned_objects_are_private(client: httpx.AsyncClient) -> None:
    created = (await client.post("/v1/things", json={"data": {"name": "box"}})).json()["data"]
    assert (await client.get("/v1/things", auth=BOB)).json() == {"data": []}
    response = await client.get(f"/v1/things/{created['id']}", auth=BOB)
    assert response.status_code == 404
    assert (await client.delete(f"/v1/things/{created['id']}", auth=BOB)).status_code == 404
    assert (await client.get("/v1/things", auth=None)).status_code == 401


async def test_disabled_methods_answer_405_with_allow(client: httpx.AsyncClient) -> None:
    created = (await client.post("/v1/things", json={"data": {"name": "box"}})).json()["data"]
    response = await client.put(f"/v1/things/{created['id']}", json={"data": {"name": "box"}})
    assert response.status_code == 405
    assert response.json()["errno"] == 115
    assert "PUT" not in response.headers["Allow"]
    assert "PATCH" in response.headers["Allow"]


async def test_the_whole_protocol_comes_with_it(client: httpx.AsyncClient) -> None:
    """Sync, filters, sorting, pagination and preconditions need no code of the resource."""
    for name in ("a", "b", "c"):
        await client.post("/v1/things", json={"data": {"name": name, "size": ord(name)}})
    listing = await client.get("/v1/things?_sort=-size&_limit=2")
    assert [t["name"] for t in listing.json()["data"]] == ["c", "b"]
    assert "Next-Page" in listing.headers
    etag = listing.headers["ETag"]
    assert (await client.get("/v1/things", headers={"If-None-Match": etag})).status_code == 304
    thing = listing.json()["data"][0]
    await client.delete(f"/v1/things/{thing['id']}")
    changes = (await client.get(f"/v1/things?_since={etag.strip(chr(34))}")).json()["data"]
    assert changes == [{"id": thing["id"], "last_modified": changes[0]["last_modified"],
                        "deleted": True}]  # fmt: skip
    stale = (await client.get("/v1/things?name=b")).json()["data"][0]
    response = await client.patch(
        f"/v1/things/{stale['id']}",
        json={"data": {"size": 500}},
        headers={"If-Match": f'"{stale["last_modified"] - 1}"'},
    )
    assert response.status_code == 412


def test_invalid_declarations_fail_early() -> None:
    with pytest.raises(ValueError):
        Resource(name="x", plural="xs", on_unique_conflict="maybe")
    with pytest.raises(ValueError):
        Resource(name="x", plural="xs", methods=frozenset({"FETCH"}))
    with pytest.raises(ValueError):
        Resource(name="x", plural="xs", schema={"type": "nonsense"})


def test_the_storage_service_uses_the_same_api() -> None:
    """No back door: Kinto's resources are plain toolkit Resources."""
    from nuages import api

    assert all(isinstance(spec, Resource) for spec in api.RESOURCES)
    assert [spec.plural_template() for spec in api.RESOURCES] == [
        "/buckets",
        "/buckets/{bucket}/collections",
        "/buckets/{bucket}/groups",
        "/buckets/{bucket}/collections/{collection}/records",
    ]


def test_the_public_api_is_pinned() -> None:
    import nuages.toolkit

    assert sorted(nuages.toolkit.__all__) == [
        "AUTHENTICATED",
        "EVERYONE",
        "NAME_PATTERN",
        "OWNER",
        "Resource",
        "Settings",
        "UUID_PATTERN",
        "ValidationError",
        "create_app",
        "generate_name",
        "generate_sortable_uuid",
        "generate_uuid",
        "now_ms",
    ]
    for name in nuages.toolkit.__all__:
        assert hasattr(nuages.toolkit, name)
