"""The Reading List example (examples/readinglist) over HTTP."""

from __future__ import annotations

import ast
import asyncio
import inspect
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from examples import readinglist
from tests.conftest import ALICE, BOB, serving

from nuages.toolkit import Settings

ARTICLE = {"url": "http://example.com/a", "title": "  A title  ", "added_by": "phone"}


@pytest.fixture
async def client(backend: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    url = "memory://" if backend == "memory" else f"sqlite:///{tmp_path / 'readinglist.db'}"
    settings = Settings.load(env={}, storage_url=url)
    app = readinglist.create_app([readinglist.ARTICLE], settings, migrate=True)
    async with serving(app) as c:
        yield c


async def _post(
    client: httpx.AsyncClient, auth: tuple[str, str] = ALICE, **fields: Any
) -> dict[str, Any]:
    response = await client.post("/v1/articles", json={"data": {**ARTICLE, **fields}}, auth=auth)
    assert response.status_code in (200, 201), response.text
    return dict(response.json()["data"])


def test_the_application_code_is_at_most_15_lines() -> None:
    """Everything but imports and field declarations: the hook, server fields, the factory."""
    code = inspect.getsource(readinglist.process) + inspect.getsource(readinglist.app)
    lines = [line for line in code.splitlines() if line.strip()]
    tree = ast.parse(inspect.getsource(readinglist))
    lambdas = [n for n in ast.walk(tree) if isinstance(n, ast.Lambda)]
    lambda_lines = sum(n.end_lineno - n.lineno + 1 for n in lambdas if n.end_lineno)
    assert len(lines) + lambda_lines <= 15


async def test_creation_fills_defaults_and_server_fields(client: httpx.AsyncClient) -> None:
    article = await _post(client)
    assert article["title"] == "A title"
    assert article["resolved_url"] == ARTICLE["url"]
    assert article["resolved_title"] == "A title"
    expected = {"excerpt": "", "archived": False, "favorite": False, "is_article": True,
                "unread": True, "word_count": None, "read_position": 0, "preview": None,
                "marked_read_by": None, "marked_read_on": None}  # fmt: skip
    assert expected.items() <= article.items()
    assert isinstance(article["added_on"], int)
    assert isinstance(article["stored_on"], int)


@pytest.mark.parametrize(
    "data",
    [
        {"title": "t", "added_by": "d"},
        {"url": "http://x.org", "added_by": "d"},
        {"url": "http://x.org", "title": "t"},
        {"url": "not a url", "title": "t", "added_by": "d"},
        {"url": "http://x.org", "title": "t" * 1025, "added_by": "d"},
        {"url": "http://x.org", "title": "   ", "added_by": "d"},
    ],
)
async def test_required_and_valid_fields(client: httpx.AsyncClient, data: dict[str, Any]) -> None:
    response = await client.post("/v1/articles", json={"data": data})
    assert response.status_code == 400
    assert response.json()["errno"] == 107


async def test_a_known_url_returns_the_existing_article(client: httpx.AsyncClient) -> None:
    first = await _post(client)
    response = await client.post("/v1/articles", json={"data": {**ARTICLE, "title": "Other"}})
    assert response.status_code == 200
    assert response.json()["data"]["id"] == first["id"]
    # The resolved URL of an article is as unique as its URL.
    resolved = await _post(client, url="http://short.er/x", resolved_url="http://example.com/b")
    response = await client.post(
        "/v1/articles", json={"data": {**ARTICLE, "url": "http://example.com/b"}}
    )
    assert response.status_code == 200
    assert response.json()["data"]["id"] == resolved["id"]


async def test_each_user_sees_only_their_articles(client: httpx.AsyncClient) -> None:
    article = await _post(client)
    assert (await client.get("/v1/articles", auth=BOB)).json() == {"data": []}
    assert (await client.get(f"/v1/articles/{article['id']}", auth=BOB)).status_code == 404
    bob_article = await _post(client, auth=BOB)
    assert bob_article["id"] != article["id"]  # the same URL, another user: a new article
    assert (await client.get("/v1/articles", auth=None)).status_code == 401


async def test_put_is_not_allowed(client: httpx.AsyncClient) -> None:
    article = await _post(client)
    response = await client.put(f"/v1/articles/{article['id']}", json={"data": ARTICLE})
    assert response.status_code == 405


async def test_url_and_server_fields_are_read_only(client: httpx.AsyncClient) -> None:
    article = await _post(client)
    url = f"/v1/articles/{article['id']}"
    for field, value in (("url", "http://other.org"), ("added_on", 1), ("stored_on", 1)):
        response = await client.patch(url, json={"data": {field: value}})
        assert response.status_code == 400, field
    updated = (await client.patch(url, json={"data": {"favorite": True}})).json()["data"]
    assert updated["added_on"] == article["added_on"]
    assert updated["stored_on"] >= article["stored_on"]


async def test_read_position_never_decreases(client: httpx.AsyncClient) -> None:
    article = await _post(client)
    url = f"/v1/articles/{article['id']}"
    assert (await client.patch(url, json={"data": {"read_position": 40}})).status_code == 200
    response = await client.patch(url, json={"data": {"read_position": 39}})
    assert response.status_code == 400
    assert response.json()["details"][0]["name"] == "data.read_position"


async def test_marking_read_needs_who_or_when_and_unread_resets(
    client: httpx.AsyncClient,
) -> None:
    article = await _post(client)
    url = f"/v1/articles/{article['id']}"
    assert (await client.patch(url, json={"data": {"unread": False}})).status_code == 400
    read = {"unread": False, "marked_read_by": "phone", "marked_read_on": 1700000000000}
    response = await client.patch(url, json={"data": {**read, "read_position": 120}})
    assert response.status_code == 200
    unread = (await client.patch(url, json={"data": {"unread": True}})).json()["data"]
    assert unread["marked_read_by"] is None
    assert unread["marked_read_on"] is None
    assert unread["read_position"] == 0


async def test_two_devices_sync_with_since(client: httpx.AsyncClient) -> None:
    """A phone and a laptop of one user each keep a copy and pull changes with _since."""
    copies: list[dict[str, dict[str, Any]]] = [{}, {}]
    etags = ["0", "0"]

    async def pull(device: int) -> None:
        response = await client.get(f"/v1/articles?_since={etags[device]}")
        for change in response.json()["data"]:
            if change.get("deleted"):
                copies[device].pop(change["id"], None)
            else:
                copies[device][change["id"]] = change
        etags[device] = response.headers["ETag"].strip('"')

    first = await _post(client, added_by="phone")
    await pull(0)
    second = await _post(client, url="http://example.com/2", added_by="laptop")
    await pull(1)
    await client.patch(f"/v1/articles/{first['id']}", json={"data": {"favorite": True}})
    await client.delete(f"/v1/articles/{second['id']}")
    await pull(0)
    await pull(1)
    server = {a["id"]: a for a in (await client.get("/v1/articles")).json()["data"]}
    assert copies[0] == copies[1] == server
    assert server[first["id"]]["favorite"] is True


async def test_concurrent_posts_of_one_url_create_one_article(client: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(
        *(client.post("/v1/articles", json={"data": {**ARTICLE, "added_by": f"d{i}"}})
          for i in range(8))
    )  # fmt: skip
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 7 + [201]
    assert len({r.json()["data"]["id"] for r in responses}) == 1
    assert len((await client.get("/v1/articles")).json()["data"]) == 1
