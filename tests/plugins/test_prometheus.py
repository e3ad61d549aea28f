"""The prometheus plugin: GET /v1/__metrics__, read back with prometheus_client's parser."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from examples import readinglist
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import AppFactory, serving

from nuages.settings import Settings, SettingsError

RECORDS = "/v1/buckets/b/collections/c/records"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient, **headers: str) -> Samples:
    response = await client.get("/v1/__metrics__", auth=None, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_requests_are_counted_by_route_method_and_status(make_client: AppFactory) -> None:
    async with make_client(plugins=["prometheus"]) as c:
        assert (await c.put("/v1/buckets/b")).status_code == 201
        for _ in range(3):
            assert (await c.get("/v1/buckets/b")).status_code == 200
        assert (await c.get("/v1/buckets/b", auth=None)).status_code == 401
        assert (await c.get("/v1/nowhere")).status_code == 404
        assert (await c.request("BREW", "/v1/buckets/b")).status_code == 405
        samples = await scrape(c)
        count = "nuages_request_summary_total"
        assert value(samples, count, method="put", endpoint="bucket-object", status="201") == 1
        assert value(samples, count, method="get", endpoint="bucket-object", status="200") == 3
        assert value(samples, count, method="get", endpoint="bucket-object", status="401") == 1
        assert value(samples, count, method="get", endpoint="unknown", status="404") == 1
        # A method of the client's own makes no series of its own.
        assert value(samples, count, method="other", endpoint="bucket-object", status="405") == 1
        assert not any("brew" in dict(labels).values() for _, labels in samples)
        timed = "nuages_request_duration_seconds_count"
        assert value(samples, timed, method="get", endpoint="bucket-object") == 4
        inf = value(
            samples,
            "nuages_request_duration_seconds_bucket",
            method="get",
            endpoint="bucket-object",
            le="+Inf",
        )
        assert inf == 4
        assert (
            0
            < value(
                samples,
                "nuages_request_duration_seconds_sum",
                method="put",
                endpoint="bucket-object",
            )
            < 10
        )
        # The scrape before this one is counted too, once answered.
        again = await scrape(c)
        assert value(again, count, method="get", endpoint="prometheus_metrics", status="200") == 1


async def test_the_endpoint_needs_no_credentials_and_is_announced(
    make_client: AppFactory,
) -> None:
    async with make_client(plugins=["prometheus"]) as c:
        root = (await c.get("/v1/")).json()
        assert root["capabilities"]["prometheus"]["prefix"] == "nuages_"
        head = await c.head("/v1/__metrics__", auth=None)
        assert head.status_code == 200
        assert head.content == b""
    async with make_client() as c:  # not enabled: no endpoint, no capability
        assert (await c.get("/v1/__metrics__")).status_code == 404
        assert "prometheus" not in (await c.get("/v1/")).json()["capabilities"]


async def test_the_scraper_chooses_the_format(make_client: AppFactory) -> None:
    async with make_client(plugins=["prometheus"]) as c:
        response = await c.get(
            "/v1/__metrics__", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/openmetrics-text")
        assert response.text.endswith("# EOF\n")
        # A version prometheus_client cannot compare: the plain format, not an error.
        for accept in ("text/plain; version=abc", "application/openmetrics-text; version=x.y"):
            samples = await scrape(c, Accept=accept)
            assert (
                value(
                    samples,
                    "nuages_request_summary_total",
                    method="get",
                    endpoint="prometheus_metrics",
                    status="200",
                )
                >= 1
            )


async def test_the_prefix_is_kintos(make_client: AppFactory) -> None:
    async with make_client(plugins=["prometheus"], prometheus_prefix="Remote-Settings") as c:
        await c.get("/v1/")
        samples = await scrape(c)
        assert (
            value(
                samples,
                "remotesettings_request_summary_total",
                method="get",
                endpoint="root",
                status="200",
            )
            == 1
        )
        assert (await c.get("/v1/")).json()["capabilities"]["prometheus"]["prefix"] == (
            "remotesettings_"
        )
    async with make_client(plugins=["prometheus"], project_name="My Cloud") as c:
        await c.get("/v1/")
        assert "mycloud_request_summary_total" in {name for name, _ in await scrape(c)}


def test_a_prefix_must_make_valid_names() -> None:
    for settings in ({"prometheus_prefix": "2fast"}, {"project_name": "---"}):
        with pytest.raises(SettingsError, match="prometheus_prefix"):
            Settings.load(env={}, plugins=["prometheus"], **settings)
    Settings.load(env={}, project_name="---")  # without the plugin, no metric names


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process metrics read /proc")
async def test_process_metrics_are_there(make_client: AppFactory) -> None:
    async with make_client(plugins=["prometheus"]) as c:
        samples = await scrape(c)
        assert value(samples, "process_resident_memory_bytes") > 1_000_000
        assert any(name == "python_gc_collections_total" for name, _ in samples)


async def test_group_commits_are_observed(make_client: AppFactory, backend: str) -> None:
    async with make_client(plugins=["prometheus"]) as c:
        assert (await c.put("/v1/buckets/b")).status_code == 201
        assert (await c.put("/v1/buckets/b/collections/c")).status_code == 201
        # Concurrent writes to one collection: PostgreSQL commits them in groups.
        responses = await asyncio.gather(
            *(c.post(RECORDS, json={"data": {"n": n}}) for n in range(40))
        )
        assert all(r.status_code == 201 for r in responses)
        samples = await scrape(c)
        groups = value(samples, "nuages_postgresql_group_commit_writes_count")
        writes = value(samples, "nuages_postgresql_group_commit_writes_sum")
        steps = {
            step: value(samples, "nuages_postgresql_write_step_seconds_count", step=step)
            for step in ("join", "lock", "commit")
        }
        if backend != "postgresql":
            assert groups == writes == 0  # only PostgreSQL commits in groups
            assert steps == {"join": 0, "lock": 0, "commit": 0}
            return
        # Every create went through a group; some groups held several.
        assert writes >= 40
        assert 1 <= groups < writes
        assert value(samples, "nuages_postgresql_group_commit_seconds_count") == groups
        assert value(samples, "nuages_postgresql_group_rollbacks_total") == 0
        # Each write joined a group and waited for its commit; the first member of a
        # group locks the collection for the others.
        assert steps["join"] == steps["commit"] == writes
        assert 1 <= steps["lock"] <= groups


async def test_a_toolkit_app_has_metrics_too() -> None:
    settings = Settings.load(env={}, storage_url="memory://", plugins=["prometheus"])
    app = readinglist.create_app([readinglist.ARTICLE], settings, migrate=True)
    async with serving(app) as c:
        assert (await c.get("/v1/articles")).status_code == 200
        samples = await scrape(c)
        assert (
            value(
                samples,
                "nuages_request_summary_total",
                method="get",
                endpoint="article-plural",
                status="200",
            )
            == 1
        )
