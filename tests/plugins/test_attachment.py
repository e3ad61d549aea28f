"""The attachment plugin over HTTP (kinto-attachment's API): upload, record field, download,
removal with records, collections and buckets, gzip, limits, folders, and files that never
leave their folder. S3 runs against a local moto server when moto is installed."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import BOB, AppFactory, userid

from nuages.plugins.attachment import Attachments
from nuages.plugins.attachment.multipart import (
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
)
from nuages.settings import SettingsError

RECORD = "/v1/buckets/b/collections/c/records/r1"
CONTENT = b"\x00\x01binary\r\n--not-a-boundary\r\n\xff" * 10


def plugin(c: httpx.AsyncClient) -> Attachments:
    dispatcher = c.app.state.dispatcher  # type: ignore[attr-defined]
    route = next(r for r in dispatcher.routes if r.name == "attachment-file")
    found: Attachments = route.handler.__self__
    return found


def stored(base: Path) -> list[Path]:
    return sorted(p for p in base.rglob("*") if p.is_file())


@pytest.fixture
async def client(make_client: AppFactory, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    base = tmp_path / "files"
    async with make_client(plugins=["attachment"], attachment_base_path=str(base)) as c:
        c.files_base = base  # type: ignore[attr-defined]
        assert (await c.put("/v1/buckets/b")).status_code == 201
        assert (await c.put("/v1/buckets/b/collections/c")).status_code == 201
        yield c


async def setup(c: httpx.AsyncClient) -> None:
    # A test's second app shares its SQLite file: the bucket may be there already.
    await c.delete("/v1/buckets/b")
    assert (await c.put("/v1/buckets/b")).status_code == 201
    assert (await c.put("/v1/buckets/b/collections/c")).status_code == 201


async def upload(
    client: httpx.AsyncClient,
    path: str = RECORD,
    name: str = "photo.PNG",
    content: bytes = CONTENT,
    mimetype: str = "image/png",
    query: str = "",
    **fields: str,
) -> httpx.Response:
    files = {"attachment": (name, content, mimetype)}
    return await client.post(f"{path}/attachment{query}", files=files, data=fields)


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
    assert "original" not in attachment
    assert r.headers["Location"] == f"http://testserver{RECORD}"
    record = (await client.get(RECORD)).json()["data"]
    assert record["title"] == "holidays"
    assert record["attachment"] == attachment
    download = await client.get(f"/v1/attachments/{attachment['location']}")
    assert download.status_code == 200
    assert download.content == CONTENT
    # Nothing left in the folder of files being received.
    assert [p.name for p in stored(client.files_base)] == [attachment["location"][4:]]  # type: ignore[attr-defined]


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
    assert stored(client.files_base) == []  # type: ignore[attr-defined]


async def test_deleting_the_record_deletes_the_file(client: httpx.AsyncClient) -> None:
    location = (await upload(client)).json()["location"]
    await client.delete(RECORD)
    await plugin(client).drain()
    assert (await client.get(f"/v1/attachments/{location}")).status_code == 404


async def test_deleting_collection_or_bucket_deletes_files(client: httpx.AsyncClient) -> None:
    await client.put("/v1/buckets/b/collections/d")
    await client.put("/v1/buckets/b2")
    await client.put("/v1/buckets/b2/collections/c")
    for i in range(3):
        assert (await upload(client, path=f"{RECORD}{i}")).status_code == 201
    other = "/v1/buckets/b/collections/d/records/x"
    kept = (await upload(client, path=other)).json()["location"]
    elsewhere = (await upload(client, path="/v1/buckets/b2/collections/c/records/x")).json()
    assert len(stored(client.files_base)) == 5  # type: ignore[attr-defined]
    await client.delete("/v1/buckets/b/collections/c")
    await plugin(client).drain()
    assert len(stored(client.files_base)) == 2  # type: ignore[attr-defined]
    assert (await client.get(f"/v1/attachments/{kept}")).status_code == 200
    await client.delete("/v1/buckets/b")
    await plugin(client).drain()
    assert (await client.get(f"/v1/attachments/{kept}")).status_code == 404
    assert (await client.get(f"/v1/attachments/{elsewhere['location']}")).status_code == 200


async def test_keep_old_files(make_client: AppFactory, tmp_path: Path) -> None:
    settings = {
        "plugins": ["attachment"],
        "attachment_base_path": str(tmp_path / "f"),
        "attachment_keep_old_files": True,
    }
    async with make_client(**settings) as c:
        await setup(c)
        first = (await upload(c)).json()["location"]
        second = (await upload(c)).json()["location"]
        assert (await c.delete(f"{RECORD}/attachment")).status_code == 204
        third = (await upload(c, path=f"{RECORD}x")).json()["location"]
        await c.delete(f"{RECORD}x")
        await c.delete("/v1/buckets/b")
        await plugin(c).drain()
        for location in (first, second, third):
            assert (await c.get(f"/v1/attachments/{location}")).status_code == 200


async def test_a_rolled_back_deletion_keeps_the_file(
    make_client: AppFactory, tmp_path: Path
) -> None:
    settings = {
        "plugins": ["attachment", "quotas"],
        "attachment_base_path": str(tmp_path / "f"),
        "quotas_collection_max_items": 1,
    }
    async with make_client(**settings) as c:
        # The rolled-back removal is checked over 0.1 s, not the 7.75 s of the default.
        plugin(c).reap_delays = (0.0, 0.02, 0.03, 0.05)
        await setup(c)
        location = (await upload(c)).json()["location"]
        records = "/buckets/b/collections/c/records"
        batch = {
            "requests": [
                {"method": "DELETE", "path": f"{records}/r1"},
                {"method": "POST", "path": records, "body": {"data": {}}},
                {"method": "POST", "path": records, "body": {"data": {}}},
            ]
        }
        assert (await c.post("/v1/batch", json=batch)).status_code == 507
        await plugin(c).drain()
        assert (await c.get(RECORD)).json()["data"]["attachment"]["location"] == location
        assert (await c.get(f"/v1/attachments/{location}")).status_code == 200


async def test_metadata_cannot_be_edited(client: httpx.AsyncClient) -> None:
    victim = (await upload(client, path=f"{RECORD}v")).json()
    await upload(client)
    r = await client.patch(RECORD, json={"data": {"attachment": victim}})
    assert r.status_code == 400
    assert "Attachment metadata cannot be modified." in r.json()["message"]
    # Other fields can change, and a record made by hand pointing at someone else's file
    # does not take that file when it goes.
    assert (await client.patch(RECORD, json={"data": {"x": 1}})).status_code == 200
    forged = "/v1/buckets/b/collections/c/records/forged"
    assert (await client.put(forged, json={"data": {"attachment": victim}})).status_code == 201
    await client.delete(forged)
    await plugin(client).drain()
    assert (await client.get(f"/v1/attachments/{victim['location']}")).status_code == 200


async def test_permissions(client: httpx.AsyncClient) -> None:
    r = await upload(client, permissions=f'{{"read": ["{userid(BOB)}"]}}')
    assert r.status_code == 201
    assert (await client.get(RECORD, auth=BOB)).status_code == 200
    denied = await client.post(
        f"{RECORD}/attachment", files={"attachment": ("a.txt", b"x")}, auth=BOB
    )
    assert denied.status_code == 403
    assert (await client.delete(f"{RECORD}/attachment", auth=BOB)).status_code == 403
    assert len(stored(client.files_base)) == 1  # type: ignore[attr-defined]


async def test_bad_requests(client: httpx.AsyncClient) -> None:
    r = await client.post(f"{RECORD}/attachment", json={"data": {}})
    assert r.status_code == 400
    r = await client.post(f"{RECORD}/attachment", files={"other": ("a", b"x")})
    assert r.status_code == 400
    r = await client.post(
        f"{RECORD}/attachment", data={"x": "1"}, files={"attachment": ("a.txt", b"")}
    )
    assert r.status_code == 400
    assert "'x' not in ('data', 'permissions')" in r.json()["message"]
    r = await client.post(f"{RECORD}/attachment", data={"data": "{}"}, files={"a": ("a", b"")})
    assert r.status_code == 400
    assert (await upload(client, data="{not json")).status_code == 400
    assert (await upload(client, data="[1]")).status_code == 400
    assert (await upload(client, query="?gzipped=maybe")).status_code == 400
    missing = await upload(client, path="/v1/buckets/b/collections/nope/records/r")
    assert missing.status_code == 404
    assert (
        await client.delete("/v1/buckets/b/collections/c/records/zz/attachment")
    ).status_code == 404
    headers = {"Content-Type": "multipart/form-data; boundary=xyz"}
    truncated = b'--xyz\r\nContent-Disposition: form-data; name="attachment"; filename="a.txt"\r\n'
    for body in (b"", truncated, truncated + b"\r\nabc", b"--xyz--\r\n"):
        r = await client.post(f"{RECORD}/attachment", content=body, headers=headers)
        assert r.status_code == 400, body
    no_boundary = {"Content-Type": "multipart/form-data"}
    r = await client.post(f"{RECORD}/attachment", content=b"x", headers=no_boundary)
    assert r.status_code == 400
    assert stored(client.files_base) == []  # type: ignore[attr-defined]


async def test_gzip(make_client: AppFactory, tmp_path: Path) -> None:
    async with make_client(plugins=["attachment"], attachment_base_path=str(tmp_path)) as c:
        await setup(c)
        text = b"compressible text " * 500
        r = await upload(
            c, name="notes.txt", content=text, mimetype="text/plain", query="?gzipped=true"
        )
        assert r.status_code == 201, r.text
        attachment = r.json()
        download = (await c.get(f"/v1/attachments/{attachment['location']}")).content
        assert gzip.decompress(download) == text
        assert attachment["location"].endswith(".gz")
        assert attachment["filename"] == "notes.txt.gz"
        assert attachment["mimetype"] == "application/x-gzip"
        assert attachment["size"] == len(download) < len(text)
        assert attachment["hash"] == hashlib.sha256(download).hexdigest()
        assert attachment["original"] == {
            "filename": "notes.txt",
            "hash": hashlib.sha256(text).hexdigest(),
            "mimetype": "text/plain",
            "size": len(text),
        }
    settings = {
        "plugins": ["attachment"],
        "attachment_base_path": str(tmp_path),
        "attachment_gzipped": True,
    }
    async with make_client(**settings) as c:
        assert (await c.get("/v1/")).json()["capabilities"]["attachments"]["gzipped"] is True
        await setup(c)
        assert "original" in (await upload(c)).json()
        assert "original" not in (await upload(c, query="?gzipped=false")).json()


async def test_extensions(make_client: AppFactory, tmp_path: Path) -> None:
    base = str(tmp_path)
    async with make_client(plugins=["attachment"], attachment_base_path=base) as c:
        await setup(c)  # kinto-attachment's default list: documents, text, images, data
        for name in ("a.pdf", "a.TXT", "a.jpeg", "a.yaml"):
            assert (await upload(c, name=name)).status_code == 201, name
        for name in ("a.exe", "a.sh", "a.mp3", "noextension", "a.png.exe"):
            r = await upload(c, name=name)
            assert r.status_code == 400, name
            assert r.json()["message"] == "attachment in body: File extension is not allowed."
    async with make_client(
        plugins=["attachment"], attachment_base_path=base, attachment_extensions="images+pdf sh"
    ) as c:
        await setup(c)
        for name, status in (("a.png", 201), ("a.pdf", 201), ("a.sh", 201), ("a.txt", 400)):
            assert (await upload(c, name=name)).status_code == status, name
    async with make_client(
        plugins=["attachment"], attachment_base_path=base, attachment_extensions="any"
    ) as c:
        await setup(c)
        assert (await upload(c, name="whatever.bin")).status_code == 201


async def test_mimetypes(make_client: AppFactory, tmp_path: Path) -> None:
    settings: dict[str, Any] = {
        "plugins": ["attachment"],
        "attachment_base_path": str(tmp_path),
        "attachment_extensions": "any",
        "attachment_mimetypes": ".pub:application/x-pub; .PEM:text/x-pem",
        "attachment_allowed_mimetypes": ["image/*", "application/x-pub", "text/x-pem"],
    }
    async with make_client(**settings) as c:
        await setup(c)
        r = await upload(c, name="key.pub", mimetype="application/octet-stream")
        assert r.json()["mimetype"] == "application/x-pub"
        assert (await upload(c, name="cert.pem", mimetype="text/plain")).json()[
            "mimetype"
        ] == "text/x-pem"
        assert (await upload(c, name="a.gif", mimetype="image/gif")).status_code == 201
        r = await upload(c, name="a.html", mimetype="text/html")
        assert r.status_code == 400
        assert r.json()["message"] == "attachment in body: File MIME type is not allowed."
    async with make_client(
        plugins=["attachment"], attachment_base_path=str(tmp_path), attachment_extensions="any"
    ) as c:
        await setup(c)  # kinto-attachment's own defaults
        r = await upload(c, name="cert.pem", mimetype="application/octet-stream")
        assert r.json()["mimetype"] == "application/x-pem-file"


async def chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def multipart(name: str, content: bytes, boundary: str = "b0und4ry") -> bytes:
    return (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="attachment"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )


async def test_max_size_is_checked_while_streaming(make_client: AppFactory, tmp_path: Path) -> None:
    settings: dict[str, Any] = {
        "plugins": ["attachment"],
        "attachment_base_path": str(tmp_path / "f"),
        "attachment_max_size_bytes": 3000,
        "max_request_body_bytes": 1000,
    }
    headers = {"Content-Type": "multipart/form-data; boundary=b0und4ry"}
    async with make_client(**settings) as c:
        await setup(c)
        # Bigger than max_request_body_bytes, within the file limit: received in chunks.
        body = multipart("a.txt", b"y" * 2500)
        pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
        r = await c.post(f"{RECORD}/attachment", content=chunks(pieces), headers=headers)
        assert r.status_code == 201, r.text
        assert r.json()["size"] == 2500
        # Past the file limit: refused as soon as the limit is crossed.
        sent: list[int] = []

        async def endless() -> AsyncIterator[bytes]:
            yield multipart("a.txt", b"")[:-14]
            for _ in range(10_000):
                sent.append(1)
                yield b"z" * 1000

        r = await c.post(f"{RECORD}/attachment", content=endless(), headers=headers)
        assert r.status_code == 400
        assert (
            r.json()["message"] == "attachment in body: File size exceeds the limit (3000 bytes)."
        )
        assert len(sent) < 10
        assert len(stored(tmp_path / "f")) == 1  # only the first file; nothing half-received
        # Small fields stay bounded by max_request_body_bytes.
        big = await upload(c, name="a.txt", data='{"x": "' + "x" * 2000 + '"}')
        assert big.status_code == 413


def test_parser_across_chunk_boundaries() -> None:
    body = (
        b"preamble\r\n--XyZ\r\n"
        b'Content-Disposition: form-data; name="data"\r\n\r\n{"a": 1}\r\n--XyZ\r\n'
        b"Content-Disposition: form-data; name=\"attachment\"; filename*=UTF-8''%C3%A9t%C3%A9.txt"
        b"\r\nContent-Type: text/plain\r\n\r\nline\r\n--XY\r\nend\r\n--XyZ--\r\nepilogue"
    )
    for size in (1, 2, 3, 5, 64, len(body)):
        parser = MultipartParser(b"XyZ")
        events = []
        for i in range(0, len(body), size):
            events.extend(parser.feed(body[i : i + size]))
        parser.close()
        starts = [e for e in events if isinstance(e, PartStart)]
        assert [(s.name, s.filename) for s in starts] == [("data", None), ("attachment", "été.txt")]
        data = b"".join(
            e.data if isinstance(e, PartData) else b"|"
            for e in events
            if not isinstance(e, PartStart)
        )
        assert data == b'{"a": 1}|line\r\n--XY\r\nend|'
        assert sum(isinstance(e, PartEnd) for e in events) == 2
    parser = MultipartParser(b"XyZ")
    parser.feed(body[:60])
    with pytest.raises(MultipartError):
        parser.close()


async def test_folder_placeholders(make_client: AppFactory, tmp_path: Path) -> None:
    settings = {
        "plugins": ["attachment"],
        "attachment_base_path": str(tmp_path),
        "attachment_folder": "files/{bucket_id}/{collection_id}/{id}",
    }
    async with make_client(**settings) as c:
        await setup(c)
        location = (await upload(c)).json()["location"]
        assert location.startswith("files/b/c/r1/")
        assert (await c.get(f"/v1/attachments/{location}")).content == CONTENT
        assert (tmp_path / location).is_file()
    async with make_client(
        plugins=["attachment"], attachment_base_path=str(tmp_path), attachment_folder=""
    ) as c:
        await setup(c)
        location = (await upload(c)).json()["location"]
        assert "/" not in location
        assert (await c.get(f"/v1/attachments/{location}")).content == CONTENT


@pytest.mark.parametrize(
    "folder",
    ["../{bucket_id}", "{bucket_id}/../..", "/etc/{id}", "{bucket_id.__class__}", "{x}", "a\\b"],
)
async def test_unsafe_folders_are_refused(
    make_client: AppFactory, tmp_path: Path, folder: str
) -> None:
    with pytest.raises((ValueError, SettingsError)):
        async with make_client(
            plugins=["attachment"], attachment_base_path=str(tmp_path), attachment_folder=folder
        ):
            pass


@pytest.mark.parametrize(
    "name",
    ["../../../etc/passwd.txt", "..\\..\\x.txt", "/abs/path.txt", "a/../../b.png", "é.😀.txt"],
)
async def test_file_names_never_become_paths(
    make_client: AppFactory, tmp_path: Path, name: str
) -> None:
    base = tmp_path / "files"
    settings = {
        "plugins": ["attachment"],
        "attachment_base_path": str(base),
        "attachment_extensions": "any",
    }
    async with make_client(**settings) as c:
        await setup(c)
        r = await upload(c, name=name)
        assert r.status_code == 201, r.text
        location: str = r.json()["location"]
        assert location.startswith("b/c/") and ".." not in location and location.count("/") == 2
        assert all(
            p.is_relative_to(base) for p in stored(tmp_path) if not p.name.startswith("nuages.db")
        )


@pytest.mark.parametrize(
    "path",
    [
        "b/c/..%2F..%2Fsecret",
        "..%2Fb/c/x",
        "b/c/notauuid.txt",
        "b/%2E%2E/x",
        "b/c/%2E%2E",
        "b/c/.incoming",
    ],
)
async def test_downloads_stay_in_the_folder(client: httpx.AsyncClient, path: str) -> None:
    secret = client.files_base.parent / "secret"  # type: ignore[attr-defined]
    secret.write_text("secret")
    r = await client.get(f"/v1/attachments/{path}")
    assert r.status_code == 404
    assert b"secret" not in r.content


# -- S3, against a local moto server (optional) --------------------------------------------


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    executable = str(Path(sys.executable).parent / "moto_server")
    pytest.importorskip("boto3")
    if not Path(executable).exists():
        pytest.skip("moto (server mode) is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [executable, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        else:
            pytest.fail("moto_server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_s3_storage(
    make_client: AppFactory, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    s3 = boto3.client("s3", endpoint_url=moto_server)
    s3.create_bucket(Bucket="nuages-files")
    settings = {
        "plugins": ["attachment"],
        "attachment_s3_bucket": "nuages-files",
        "attachment_s3_endpoint_url": moto_server,
    }
    async with make_client(**settings) as c:
        await setup(c)
        r = await upload(c, query="?gzipped=true")
        assert r.status_code == 201, r.text
        location = r.json()["location"]
        obj = s3.get_object(Bucket="nuages-files", Key=location)
        assert obj["ContentType"] == "application/x-gzip"
        assert gzip.decompress(obj["Body"].read()) == CONTENT
        assert gzip.decompress((await c.get(f"/v1/attachments/{location}")).content) == CONTENT
        await c.delete(RECORD)
        await plugin(c).drain()
        keys = s3.list_objects_v2(Bucket="nuages-files").get("Contents", [])
        assert keys == []
        assert (await c.get(f"/v1/attachments/{location}")).status_code == 404


async def test_concurrent_uploads_to_one_record(client: httpx.AsyncClient) -> None:
    await client.put(RECORD, json={"data": {}})
    responses = await asyncio.gather(*(upload(client) for _ in range(6)))
    assert [r.status_code for r in responses] == [201] * 6, [r.text for r in responses]
    await plugin(client).drain()
    final = (await client.get(RECORD)).json()["data"]["attachment"]
    files = stored(client.files_base)  # type: ignore[attr-defined]
    assert [f.name for f in files] == [final["location"].rsplit("/", 1)[-1]]
