"""bench/load.py end to end: a real ``nuages serve`` and the Starlette baseline, every scenario.

Short runs (under a second each, two connections, a small collection): this checks that
every scenario runs without a single error against Nuages and that the JSON report has its
documented shape. It asserts no timing: the figures are for docs/performance.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = {
    "create",
    "get",
    "update",
    "patch",
    "delete",
    "list",
    "filtered",
    "since",
    "walk",
    "batch",
    "push",
    "mixed",
}
FIGURES = {"requests", "req_per_s", "p50_ms", "p99_ms", "mean_ms", "errors", "seconds"}


def test_every_scenario_runs_against_nuages_without_errors(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "load.py"),
            "--start",
            "nuages-sqlite",
            "--start",
            "starlette-baseline",
            "--records",
            "250",
            "--concurrency",
            "2",
            "--duration",
            "0.8",
            "--warmup",
            "0.1",
            "--probe-seconds",
            "0.2",
            "--probe-dir",
            str(tmp_path),
            "--json",
            str(out),
            "--server-logs",
            str(tmp_path / "logs"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    logs = "".join(p.read_text()[-4000:] for p in sorted((tmp_path / "logs").glob("*.log")))
    assert done.returncode == 0, done.stdout + done.stderr + logs
    report = json.loads(out.read_text())

    assert {"tool", "format", "machine", "options", "targets", "results"} <= report.keys()
    for when in ("before", "after"):  # bench/machine.py's probe, around the run
        figures = report["machine"][when]
        assert figures["disk_dir"] == str(tmp_path)
        assert figures["cpu_loop_s"] > 0 and figures["cpu_loop_all_cores_s"] > 0
        assert figures["cores"] >= 1 and figures["fdatasync_n"] >= 1
        assert figures["fdatasync_p50_ms"] <= figures["fdatasync_max_ms"]
    assert "machine before: 10,000,000 additions in" in done.stdout
    targets = {t["name"]: t for t in report["targets"]}
    assert set(targets) == {"nuages-sqlite", "starlette-baseline"}
    assert targets["nuages-sqlite"]["started"] == "nuages-sqlite"
    assert targets["nuages-sqlite"]["project"].startswith("nuages")

    by_target: dict[str, set[str]] = {}
    for result in report["results"]:
        by_target.setdefault(result["target"], set()).add(result["scenario"])
        where = f"{result['scenario']} on {result['target']}"
        assert result.keys() >= FIGURES, where
        assert result["errors"] == 0, (where, result["error_samples"], logs)
        assert result["requests"] > 0, where
        assert result["p50_ms"] is not None and result["p99_ms"] >= result["p50_ms"], where
        assert result["generator"]["cpu"] >= 0 and isinstance(result["generator"]["bound"], bool)
        assert result["server"]["processes"] >= 1, where
        assert result["server"]["rss_max_mb"] > 0, where
    assert by_target == {"nuages-sqlite": SCENARIOS, "starlette-baseline": {"get"}}

    mixed = next(r for r in report["results"] if r["scenario"] == "mixed")
    assert {"read", "read_page", "write_patch", "sync"} <= mixed["ops"].keys()
    walk = next(r for r in report["results"] if r["scenario"] == "walk")
    assert walk["extra"]["walks"] >= 1

    # the text report names every scenario and the generator's own CPU
    assert "load generator:" in done.stdout
    for scenario in SCENARIOS:
        assert f"\n{scenario} " in done.stdout


def _bench(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``bench/<script>`` with `args`; its exit code, output and errors."""
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_machine_probe_reports_the_cpu_and_the_disk_and_leaves_nothing(tmp_path: Path) -> None:
    done = _bench("machine.py", "--dir", str(tmp_path), "--seconds", "0.2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("10,000,000 additions in ")
    assert f"fdatasync ({tmp_path}) p50 " in done.stdout
    assert list(tmp_path.iterdir()) == []  # the probe's file is removed

    done = _bench("machine.py", "--dir", str(tmp_path / "missing"))
    assert done.returncode == 2 and "not a directory" in done.stderr

    # A directory where nobody can create a file: /proc (Linux), else one without write
    # permission (but root writes in that one all the same).
    unwritable = Path("/proc")
    if not unwritable.is_dir():
        unwritable = tmp_path / "locked"
        unwritable.mkdir(mode=0o500)
        if os.access(unwritable, os.W_OK):
            pytest.skip("no directory here that this user cannot write in")
    done = _bench("machine.py", "--dir", str(unwritable))
    assert done.returncode == 2 and "cannot probe the disk of" in done.stderr


def test_a_saved_report_says_when_the_machine_could_not_be_probed(tmp_path: Path) -> None:
    saved = tmp_path / "saved.json"
    before = {"error": "[Errno 13] Permission denied: '/data/nuages-probe-x'"}
    saved.write_text(json.dumps({"machine": {"before": before}, "results": [], "targets": []}))
    done = _bench("load.py", "--report", str(saved))
    assert done.returncode == 0, done.stderr
    assert f"machine before: no probe: {before['error']}" in done.stdout


def test_a_saved_report_warns_of_a_disk_whose_flushes_were_slow(tmp_path: Path) -> None:
    probe = {
        "cpu_loop_s": 0.5,
        "cpu_loop_all_cores_s": 0.5,
        "cores": 2,
        "disk_dir": "/data",
        "fdatasync_n": 200,
        "fdatasync_p50_ms": 0.3,
        "fdatasync_p99_ms": 0.4,
        "fdatasync_max_ms": 0.6,
        "fdatasync_slow": 0,
    }
    slow = {**probe, "fdatasync_p99_ms": 12.8, "fdatasync_max_ms": 17.2, "fdatasync_slow": 9}
    saved = tmp_path / "saved.json"
    report = {"machine": {"before": probe, "after": slow}, "results": [], "targets": []}
    saved.write_text(json.dumps(report))
    done = _bench("load.py", "--report", str(saved))
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.split("machine after: ")
    assert "fdatasync (/data) p50 0.30 ms, p99 0.40 ms" in before and "over 5 ms:" not in before
    assert after.startswith("10,000,000 additions in 0.50 s on one core, 0.50 s on each of 2")
    assert "9 of 200 over 5 ms\n  (a flush p99 over 5 ms: writes' p99 measure this disk" in after
