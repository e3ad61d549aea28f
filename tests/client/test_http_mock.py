"""What a real server rarely does on demand: 5xx, Retry-After, Backoff, Alert, cut connections.

Driven through ``httpx.MockTransport`` (the senders are real; only the answers are scripted).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from nuages.client import (
    AsyncClient,
    BackendUnavailable,
    BackoffError,
    Client,
    EndOfLifeWarning,
    Gone,
    LocalStore,
    RetryPolicy,
    ServerError,
    TransportError,
)

URL = "http://server/v1"
FAST = RetryPolicy(retries=3, backoff_factor=0.0, max_delay=0.0)


def scripted(
    *answers: httpx.Response | Exception,
) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A transport giving ``answers`` in order (the last one again once exhausted)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        answer = answers[min(len(seen), len(answers) - 1)]
        seen.append(request)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handler), seen


def ok(data: Any = None, **headers: str) -> httpx.Response:
    return httpx.Response(200, json={"data": data if data is not None else {}}, headers=headers)


def error(status: int, errno: int, **headers: str) -> httpx.Response:
    body = {"code": status, "errno": errno, "error": "x", "message": "m"}
    return httpx.Response(status, json=body, headers=headers)


def test_retry_after_is_honoured_then_succeeds():
    transport, seen = scripted(error(503, 201, **{"Retry-After": "0"}), ok({"id": "b"}))
    with Client(URL, transport=transport, retry=FAST) as client:
        assert client.get_bucket("b") == {"id": "b"}
    assert len(seen) == 2


def test_retries_are_bounded():
    transport, seen = scripted(error(503, 201, **{"Retry-After": "0"}))
    with Client(URL, transport=transport, retry=FAST) as client, pytest.raises(BackendUnavailable):
        client.get_bucket("b")
    assert len(seen) == 4  # one try and three retries


def test_500_is_a_server_error_and_not_retried_without_policy():
    transport, seen = scripted(error(500, 999))
    client = Client(URL, transport=transport, retry=RetryPolicy.never())
    with client, pytest.raises(ServerError) as raised:
        client.get_bucket("b")
    assert raised.value.errno == 999
    assert len(seen) == 1


def test_cut_connections_are_retried_only_when_safe():
    cut = httpx.RemoteProtocolError("cut")
    transport, seen = scripted(cut, ok({"id": "r"}))
    with Client(URL, transport=transport, retry=FAST) as client:
        assert client.get_record("b", "c", "r") == {"id": "r"}
    transport, seen = scripted(cut, ok({"id": "new"}))
    client = Client(URL, transport=transport, retry=FAST)
    with client, pytest.raises(TransportError) as raised:
        client.create_record("b", "c", {"title": "no id: a POST"})
    assert isinstance(raised.value.__cause__, httpx.RemoteProtocolError)
    assert len(seen) == 1
    refused = httpx.ConnectError("refused")
    transport, seen = scripted(refused, httpx.Response(201, json={"data": {"id": "new"}}))
    with Client(URL, transport=transport, retry=FAST) as client:
        assert client.create_record("b", "c", {"title": "never sent: safe"})["id"] == "new"


def test_backoff_is_remembered_and_stops_sync(tmp_path: Path):
    transport, _ = scripted(ok({"id": "b"}, Backoff="60"))
    with Client(URL, transport=transport) as client:
        assert client.backoff == 0
        client.get_bucket("b")
        assert 59 < client.backoff <= 60
        with LocalStore(tmp_path / "s.db") as store:
            with pytest.raises(BackoffError) as raised:
                store.collection("c").sync(client, bucket="b")
            assert raised.value.seconds > 59


def test_alert_warns_once_per_alert():
    alert = json.dumps({"code": "soft-eol", "message": "going away", "url": "http://doc"})
    transport, _ = scripted(ok({"id": "b"}, Alert=alert))
    with Client(URL, transport=transport) as client:
        with pytest.warns(EndOfLifeWarning, match="going away"):
            client.get_bucket("b")
        client.get_bucket("b")  # the same alert again: no new warning (warnings are errors here)


def test_alert_callback_and_gone():
    alerts: list[dict[str, Any]] = []
    hard = json.dumps({"code": "hard-eol", "message": "gone", "url": "u"})
    transport, _ = scripted(error(410, 202, Alert=hard))
    client = Client(URL, transport=transport, on_alert=alerts.append)
    with client, pytest.raises(Gone) as raised:
        client.get_bucket("b")
    assert raised.value.alert["code"] == "hard-eol"
    assert alerts == [{"code": "hard-eol", "message": "gone", "url": "u"}]


def test_batch_is_chunked_by_the_servers_limit():
    chunks: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/":
            return httpx.Response(200, json={"settings": {"batch_max_requests": 3}})
        body = json.loads(request.content)
        chunks.append(len(body["requests"]))
        responses = [
            {
                "status": 201,
                "path": "/v1" + r["path"],
                "headers": {},
                "body": {"data": r["body"]["data"]},
            }
            for r in body["requests"]
        ]
        return httpx.Response(200, json={"responses": responses})

    with Client(URL, transport=httpx.MockTransport(handler)) as client:
        requests = [client.requests.create("/x", f"/x/{i}", {"i": i}) for i in range(8)]
        results = client.batch(requests)
    assert chunks == [3, 3, 2]
    assert [r.data["i"] for r in results] == list(range(8))
    assert all(r.status == 201 for r in results)


def pages(handler_pages: list[list[int]]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        index = int(request.url.params.get("_token", "0"))
        headers = {"ETag": '"10"'}
        if index + 1 < len(handler_pages):
            headers["Next-Page"] = f"{URL}/buckets/b/collections/c/records?_token={index + 1}"
        data = [{"id": str(i), "last_modified": i} for i in handler_pages[index]]
        return httpx.Response(200, json={"data": data}, headers=headers)

    return handler


def test_pagination_iterators_follow_next_page():
    transport = httpx.MockTransport(pages([[1, 2], [3, 4], [5]]))
    with Client(URL, transport=transport) as client:
        assert [r["id"] for r in client.iter_records("b", "c")] == ["1", "2", "3", "4", "5"]
        assert len(client.get_records("b", "c")) == 5


async def test_async_iterators_and_retries():
    transport = httpx.MockTransport(pages([[1], [2, 3]]))
    async with AsyncClient(URL, transport=transport) as client:
        assert [r["id"] async for r in client.iter_records("b", "c")] == ["1", "2", "3"]
    seen = 0

    def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal seen
        seen += 1
        if seen == 1:
            return httpx.Response(429, json={"errno": 117}, headers={"Retry-After": "0"})
        return httpx.Response(200, json={"data": {"id": "b"}})

    async with AsyncClient(URL, transport=httpx.MockTransport(flaky), retry=FAST) as client:
        assert await client.get_bucket("b") == {"id": "b"}
    assert seen == 2
