"""The attachment plugin over HTTP (kinto-attachment's API): upload, record field, download,
removal, permissions, and files that never leave their folder."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import BOB, AppFactory, userid

RECORD = "/v1/buckets/b/collections/c/records/r1"
CONTENT = b"\x00\x01binary\r\n--not-a-boundary\r\n\xff" * 10


@pytest.fixture
async def client(make_client: AppFactory, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    base = tmp_path / "files"
    async with make_client(plugins=["attachment"], attachment_base_path=str(base)) as c:
        c.files_base = base  # type: ignore[attr-defined]
        assert (await c.put("/v1/buckets/b")).status_code == 201
        assert (await c.put("/v1/buckets/b/collections/c")).status_code == 201
        yield c


async def upload(
    client: httpx.AsyncClient, path: str = RECORD, name: str = "photo.PNG", **fields: str
) -> httpx.Response:
    files = {"attachment": (name, CONTENT, "image/png")}
    return await client.post(f"{path}/attachment", files=files, data=fields)


async def test_capability(client: httpx.AsyncClient) -> None:
    capability = (await client.get("/v1/")).json()["capabilities"]["attachments"]
    assert capability["base_url"] == "http://testserver/v1/attachments/"
    assert capability["gzipped"] is False


async def test_upload_creates_the_record(client: httpx.AsyncClient) -> None:
    r = await upload(client, data='{"title": "holidays"}')
    assert r.status_code == 201, r.text
    attachment = r.json()
    assert attachment["filename"] == "photo.PNG"
    assert attachment["mimetype"] == "image/png"
    assert attachment["size"] == len(CONTENT)
    assert attachment["hash"] == hashlib.sha256(CONTENT).hexdigest()
    assert attachment["location"].startswith("b/c/") and attachment["location"].endswith(".png")
    assert r.headers["Location"] == f"http://testserver{RECORD}"
    record = (await client.get(RECORD)).json()["data"]
    assert record["title"] == "holidays"
    assert record["attachment"] == attachment
    download = await client.get(f"/v1/attachments/{attachment['location']}")
    assert download.status_code == 200
    assert download.content == CONTENT


async def test_replacing_and_removing(client: httpx.AsyncClient) -> None:
    await client.put(RECORD, json={"data": {"keep": True}})
    first = (await upload(client)).json()
    second = (await upload(client, name="other.txt")).json()
    assert first["location"] != second["location"]
    assert (await client.get(f"/v1/attachments/{first['location']}")).status_code == 404
    record = (await client.get(RECORD)).json()["data"]
    assert record["keep"] is True and record["attachment"] == second
    assert (await client.delete(f"{RECORD}/attachment")).status_code == 204
    assert (await client.get(RECORD)).json()["data"]["attachment"] is None
    assert (await client.get(f"/v1/attachments/{second['location']}")).status_code == 404


async def test_deleting_the_record_deletes_the_file(client: httpx.AsyncClient) -> None:
    location = (await upload(client)).json()["location"]
    await client.delete(RECORD)
    assert (await client.get(f"/v1/attachments/{location}")).status_code == 404


async def test_permissions(client: httpx.AsyncClient) -> None:
    r = await upload(client, permissions=f'{{"read": ["{userid(BOB)}"]}}')
    assert r.status_code == 201
    assert (await client.get(RECORD, auth=BOB)).status_code == 200
    denied = await client.post(
        f"{RECORD}/attachment", files={"attachment": ("a.txt", b"x")}, auth=BOB
    )
    assert denied.status_code == 403
    assert (await client.delete(f"{RECORD}/attachment", auth=BOB)).status_code == 403
    files = [p for p in client.files_base.rglob("*") if p.is_file()]  # type: ignore[attr-defined]
    assert len(files) == 1  # the refused upload left nothing behind


async def test_bad_requests(client: httpx.AsyncClient) -> None:
    r = await client.post(f"{RECORD}/attachment", json={"data": {}})
    assert r.status_code == 400
    r = await client.post(f"{RECORD}/attachment", files={"other": ("a", b"x")})
    assert r.status_code == 400
    r = await client.post(f"{RECORD}/attachment", data={"x": "1"}, files={"attachment": ("a", b"")})
    assert r.status_code == 400
    assert (await upload(client, data="{not json")).status_code == 400
    assert (await upload(client, data="[1]")).status_code == 400
    missing = await upload(client, path="/v1/buckets/b/collections/nope/records/r")
    assert missing.status_code == 404
    assert (
        await client.delete("/v1/buckets/b/collections/c/records/zz/attachment")
    ).status_code == 404
    assert [p for p in client.files_base.rglob("*") if p.is_file()] == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "name", ["../../../etc/passwd", "..\\..\\x.txt", "/abs/path.sh", "a/../../b", "é.😀"]
)
async def test_file_names_never_become_paths(client: httpx.AsyncClient, name: str) -> None:
    r = await upload(client, name=name)
    assert r.status_code == 201, r.text
    location: str = r.json()["location"]
    assert location.startswith("b/c/") and ".." not in location and location.count("/") == 2
    stored = [p for p in client.files_base.rglob("*") if p.is_file()]  # type: ignore[attr-defined]
    assert all(p.is_relative_to(client.files_base) for p in stored)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "path", ["b/c/..%2F..%2Fsecret", "..%2Fb/c/x", "b/c/notauuid.txt", "b/%2E%2E/x"]
)
async def test_downloads_stay_in_the_folder(client: httpx.AsyncClient, path: str) -> None:
    secret = client.files_base.parent / "secret"  # type: ignore[attr-defined]
    secret.write_text("secret")
    r = await client.get(f"/v1/attachments/{path}")
    assert r.status_code == 404
    assert b"secret" not in r.content


async def test_max_size(make_client: AppFactory, tmp_path: Path) -> None:
    settings: dict[str, Any] = {
        "plugins": ["attachment"],
        "attachment_base_path": str(tmp_path / "f"),
        "attachment_max_size_bytes": 10,
    }
    async with make_client(**settings) as c:
        await c.put("/v1/buckets/b")
        await c.put("/v1/buckets/b/collections/c")
        assert (await upload(c)).status_code == 400
