"""The access log: one JSON line per answered request, without secrets."""

from __future__ import annotations

import asyncio
import json

import pytest
from tests.conftest import ALICE, AppFactory


async def access_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    await asyncio.sleep(0)  # lines are written at the end of the event-loop iteration
    err = capsys.readouterr().err
    return [json.loads(line) for line in err.splitlines() if '"nuages.access"' in line]


async def test_each_request_is_one_json_line(
    make_client: AppFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    async with make_client(log_level="info") as client:
        capsys.readouterr()
        await client.put("/v1/buckets/b")
        await client.get("/v1/buckets/b/collections/missing/records?_limit=1&token=s3cret")
        await client.get("/v1/buckets/b", auth=("mallory", "wrong-password-123"))
        lines = await access_lines(capsys)
    assert [(line["method"], line["path"], line["status"]) for line in lines] == [
        ("PUT", "/v1/buckets/b", 201),
        ("GET", "/v1/buckets/b/collections/missing/records", 404),
        ("GET", "/v1/buckets/b", 403),
    ]
    for line in lines:
        assert set(line) == {"time", "logger", "method", "path", "status", "ms", "client"}
        assert isinstance(line["ms"], float | int) and line["ms"] >= 0
        assert str(line["time"]).endswith("Z")
    text = json.dumps(lines)
    # Neither the querystring nor a credential ever reaches the log.
    for secret in ("s3cret", "wrong-password-123", ALICE[1], "Basic "):
        assert secret not in text


async def test_no_access_log_below_info(
    make_client: AppFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    async with make_client(log_level="warning") as client:
        capsys.readouterr()
        await client.get("/v1/")
        assert await access_lines(capsys) == []
