"""The ``nuages`` command line, driven in-process with click's CliRunner.

uvicorn itself is not under test: ``uvicorn.run`` is replaced by a recorder, so these tests
check what ``serve`` would start, never start a server. ``python tests/test_cli.py`` rewrites
the generated reference in docs/cli.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import nuages
from nuages import cli
from nuages.settings import Settings, iter_settings
from nuages.web.server import HttpProtocol

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
BEGIN = "<!-- BEGIN GENERATED REFERENCE: python tests/test_cli.py -->"
END = "<!-- END GENERATED REFERENCE -->"
COMMANDS = ("serve", "migrate", "create-user", "settings", "version")
# Variables `serve --workers N` writes for its workers; the fixture below restores them.
WORKER_VARS = ("NUAGES_CONFIG", "NUAGES_APP", "NUAGES_HOST", "NUAGES_PORT", "NUAGES_WORKERS")


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli.main, list(args), env=env, prog_name="nuages", terminal_width=80)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No NUAGES_* from the outer shell; anything `serve` exports is undone after the test."""
    for name in list(os.environ):
        if name.startswith("NUAGES_") and not name.startswith("NUAGES_TEST_"):
            monkeypatch.delenv(name)
    for name in WORKER_VARS:
        # setenv records "absent" as the value to restore; delenv then leaves it absent.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


class FakeUvicorn:
    """Records the arguments of ``uvicorn.run``."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, dict[str, Any]]] = []

    def run(self, app: Any, **kwargs: Any) -> None:
        self.calls.append((app, kwargs))


@pytest.fixture
def uvicorn_run(monkeypatch: pytest.MonkeyPatch) -> FakeUvicorn:
    import uvicorn

    fake = FakeUvicorn()
    monkeypatch.setattr(uvicorn, "run", fake.run)
    return fake


class FakeWorkers:
    """Records the arguments of ``nuages.web.workers.run`` (the multi-process supervisor)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], int]] = []

    def run(self, target: str, options: dict[str, Any], workers: int) -> int:
        self.calls.append((target, options, workers))
        return 0


@pytest.fixture
def workers_run(monkeypatch: pytest.MonkeyPatch) -> FakeWorkers:
    from nuages.web import workers

    fake = FakeWorkers()
    monkeypatch.setattr(workers, "run", fake.run)
    return fake


@pytest.fixture
def fake_web_app(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """Stand-in for nuages.web.app, so these tests do not depend on the web layer."""
    built: list[Settings] = []
    module = types.ModuleType("nuages.web.app")

    def create_app(settings: Settings) -> str:
        built.append(settings)
        return "the-nuages-app"

    module.create_app = create_app  # type: ignore[attr-defined]
    module.create_app_from_env = lambda: create_app(Settings.load())  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "nuages.web.app", module)
    return built


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An importable module with an ASGI app and an app factory, for ``serve --app``."""
    name = f"custom_app_{os.getpid()}_{id(tmp_path)}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            async def app(scope, receive, send):
                pass

            def factory(settings):
                return ("built", settings)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


# --- help and version


def test_main_help_lists_every_command() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert result.output.startswith("Usage: nuages [OPTIONS] COMMAND [ARGS]...")
    for command in COMMANDS:
        assert f"  {command} " in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: nuages {command} [OPTIONS]")
    assert invoke(command, "-h").output == result.output


def test_version() -> None:
    result = invoke("version")
    assert result.exit_code == 0
    assert result.output == f"nuages {nuages.__version__} (HTTP API {nuages.HTTP_API_VERSION})\n"
    assert "(HTTP API 1.23)" in result.output


def test_python_m_nuages_runs_without_loading_the_server() -> None:
    # `nuages version` / `settings` must not pay for (or break on) the web layer and backends.
    code = (
        "import runpy, sys; sys.argv = ['nuages', 'version']\n"
        "try:\n    runpy.run_module('nuages', run_name='__main__')\n"
        "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "loaded = [m for m in ('nuages.web', 'nuages.backends', 'uvicorn') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("nuages ")


# --- serve


def test_serve_runs_uvicorn_with_the_app(
    uvicorn_run: FakeUvicorn, fake_web_app: list[Settings]
) -> None:
    result = invoke("serve", env={"NUAGES_STORAGE_URL": "memory://"})
    assert result.exit_code == 0, result.output
    [(app, kwargs)] = uvicorn_run.calls
    assert app == "the-nuages-app"
    assert kwargs == {
        "host": "127.0.0.1",
        "port": 8888,
        "log_level": "info",
        "proxy_headers": True,
        "server_header": False,
        "access_log": False,  # Nuages writes its own (nuages.web.accesslog)
        "http": HttpProtocol,  # each response in one write (nuages.web.server)
        "workers": 1,
    }
    assert fake_web_app[0].storage_url == "memory://"


def test_serve_flags_override_env_and_file(
    tmp_path: Path, uvicorn_run: FakeUvicorn, fake_web_app: list[Settings]
) -> None:
    config = tmp_path / "nuages.toml"
    config.write_text('host = "0.0.0.0"\nport = 1000\nlog_level = "debug"\npaginate_by = 5\n')
    result = invoke(
        "serve",
        "--config",
        str(config),
        "--port",
        "3000",
        "--log-level",
        "WARNING",
        env={"NUAGES_PORT": "2000", "NUAGES_PAGINATE_BY": "7"},
    )
    assert result.exit_code == 0, result.output
    [(_, kwargs)] = uvicorn_run.calls
    assert (kwargs["host"], kwargs["port"], kwargs["log_level"]) == ("0.0.0.0", 3000, "warning")
    assert fake_web_app[0].paginate_by == 7


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {"NUAGES_PORT": "abc"}, "Error: NUAGES_PORT: expected an integer, got 'abc'"),
        (
            (),
            {"NUAGES_PAGINATE_BYY": "1"},
            "Error: unknown setting NUAGES_PAGINATE_BYY (did you mean NUAGES_PAGINATE_BY?)",
        ),
        (("--port", "0"), {}, "Error: port: must be between 1 and 65535, got 0"),
        (("--workers", "0"), {}, "Error: workers: must be at least 1, got 0"),
        (
            ("--workers", "2"),
            {"NUAGES_STORAGE_URL": "memory://"},
            "Error: workers: 2 workers need shared backends",
        ),
        (
            (),
            {"NUAGES_STORAGE_URL": "redis://localhost/0"},
            "Error: storage_url: redis:// can only hold the cache",
        ),
    ],
)
def test_serve_refuses_bad_settings(
    uvicorn_run: FakeUvicorn, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = invoke("serve", *args, env=env)
    assert result.exit_code == 2
    assert result.output.startswith(message)
    assert "Traceback" not in result.output
    assert uvicorn_run.calls == []


def test_serve_refuses_a_metrics_directory_that_is_not_one(
    tmp_path: Path, uvicorn_run: FakeUvicorn
) -> None:
    missing = tmp_path / "metrics"
    env = {"NUAGES_PLUGINS": "prometheus", "PROMETHEUS_MULTIPROC_DIR": str(missing)}
    result = invoke("serve", env=env)
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: PROMETHEUS_MULTIPROC_DIR='{missing}' is not a")
    assert uvicorn_run.calls == []
    missing.mkdir()
    assert invoke("serve", env=env).exit_code == 0
    assert len(uvicorn_run.calls) == 1


def test_serve_missing_config_file(tmp_path: Path, uvicorn_run: FakeUvicorn) -> None:
    missing = tmp_path / "nope.toml"
    result = invoke("serve", "--config", str(missing))
    assert result.exit_code == 2
    assert result.output == f"Error: {missing}: config file not found\n"


def test_serve_bad_toml_key(tmp_path: Path, uvicorn_run: FakeUvicorn) -> None:
    config = tmp_path / "nuages.toml"
    config.write_text("paginate_byy = 5\n")
    result = invoke("serve", "--config", str(config))
    assert result.exit_code == 2
    assert f"Error: {config}: unknown setting 'paginate_byy'" in result.output


def test_serve_several_workers_pass_settings_through_the_environment(
    tmp_path: Path, workers_run: FakeWorkers, fake_web_app: list[Settings]
) -> None:
    config = tmp_path / "nuages.toml"
    config.write_text(f'storage_url = "sqlite:///{tmp_path}/db.sqlite"\nport = 1000\n')
    result = invoke("serve", "--config", str(config), "--workers", "3", "--port", "4000")
    assert result.exit_code == 0, result.output
    [(target, kwargs, workers)] = workers_run.calls
    assert target == "nuages.web.app:create_app_from_env"
    assert workers == 3 and kwargs["port"] == 4000 and "workers" not in kwargs
    assert os.environ["NUAGES_CONFIG"] == str(config.resolve())
    assert (os.environ["NUAGES_WORKERS"], os.environ["NUAGES_PORT"]) == ("3", "4000")
    # What a worker process does on start: the same settings as the parent validated.
    parent = Settings.load(config, env={}, workers=3, port=4000)
    assert Settings.load() == parent
    assert fake_web_app == []  # the parent builds no app: each worker builds its own


def test_worker_environment_round_trips_every_value_type(tmp_path: Path) -> None:
    overrides: dict[str, object] = {
        "port": 9000,
        "readonly": True,
        "cors_origins": ("https://a.example", "https://b.example"),
        "paginate_by": None,
        "eos": date(2030, 1, 1),
        "heartbeat_timeout_seconds": 2.5,
    }
    env = cli._worker_environment(None, overrides, None)
    assert Settings.load(env=env) == Settings.load(None, {}, **overrides)


def test_serve_app_object(uvicorn_run: FakeUvicorn, app_module: str) -> None:
    result = invoke("serve", "--app", f"{app_module}:app")
    assert result.exit_code == 0, result.output
    [(app, _)] = uvicorn_run.calls
    assert app is sys.modules[app_module].app


def test_serve_app_factory_gets_the_settings(uvicorn_run: FakeUvicorn, app_module: str) -> None:
    result = invoke("serve", "--app", f"{app_module}:factory", "--port", "9999")
    assert result.exit_code == 0, result.output
    [((tag, settings), _)] = uvicorn_run.calls
    assert tag == "built" and settings.port == 9999


def test_serve_app_with_workers_uses_the_cli_trampoline(
    tmp_path: Path, workers_run: FakeWorkers, app_module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"NUAGES_STORAGE_URL": f"sqlite:///{tmp_path}/db.sqlite"}
    result = invoke("serve", "--app", f"{app_module}:factory", "--workers", "2", env=env)
    assert result.exit_code == 0, result.output
    [(target, _, workers)] = workers_run.calls
    assert target == "nuages.cli:_app_from_environment" and workers == 2
    assert os.environ["NUAGES_APP"] == f"{app_module}:factory"
    # In a worker: CliRunner's env is gone, so put back what the shell had given.
    monkeypatch.setenv("NUAGES_STORAGE_URL", env["NUAGES_STORAGE_URL"])
    tag, settings = cli._app_from_environment()
    assert tag == "built" and settings.workers == 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "expected MODULE:ATTR, got 'no_colon'"),
        ("no_such_module_xyz:app", "cannot import 'no_such_module_xyz'"),
        ("os:no_such_attr", "module 'os' has no attribute 'no_such_attr'"),
    ],
)
def test_serve_bad_app(uvicorn_run: FakeUvicorn, spec: str, message: str) -> None:
    result = invoke("serve", "--app", spec)
    assert result.exit_code == 2
    assert message in result.output
    assert uvicorn_run.calls == []


# --- migrate


def test_migrate_prints_what_it_did(tmp_path: Path) -> None:
    pytest.importorskip("nuages.backends", reason="nuages.backends is not written yet")
    result = invoke("migrate", env={"NUAGES_STORAGE_URL": "memory://"})
    assert result.exit_code == 0, result.output
    assert "memory://" in result.output


def test_migrate_echoes_each_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    backends = pytest.importorskip("nuages.backends", reason="nuages.backends is not written yet")
    seen: list[Settings] = []

    async def migrate(settings: Settings) -> list[str]:
        seen.append(settings)
        return ["sqlite:///./a.db: schema at version 3", "sqlite:///./b.db: schema at version 1"]

    monkeypatch.setattr(backends, "migrate", migrate)
    config = tmp_path / "nuages.toml"
    config.write_text('storage_url = "sqlite:///./a.db"\n')
    result = invoke("migrate", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert result.output == (
        "sqlite:///./a.db: schema at version 3\nsqlite:///./b.db: schema at version 1\n"
    )
    assert seen[0].storage_url == "sqlite:///./a.db"


def test_migrate_backend_error(monkeypatch: pytest.MonkeyPatch) -> None:
    backends = pytest.importorskip("nuages.backends", reason="nuages.backends is not written yet")
    from nuages.core.errors import BackendError

    async def migrate(settings: Settings) -> list[str]:
        raise BackendError("schema version 9 is newer than this Nuages (3)")

    monkeypatch.setattr(backends, "migrate", migrate)
    result = invoke("migrate")
    assert result.exit_code == 1
    assert result.output.startswith("Error: schema version 9 is newer")


def test_migrate_refuses_bad_settings() -> None:
    result = invoke("migrate", env={"NUAGES_STORAGE_URL": "mysql://x"})
    assert result.exit_code == 2
    assert result.output.startswith("Error: NUAGES_STORAGE_URL: unsupported backend mysql://")


# --- settings


def test_settings_lists_every_setting() -> None:
    result = invoke("settings")
    assert result.exit_code == 0
    for doc in iter_settings():
        assert f"{doc.name}  [{doc.env_var}]" in result.output
    assert "current:" not in result.output


def test_settings_current_masks_secrets() -> None:
    env = {"NUAGES_USERID_HMAC_SECRET": "hunter2", "NUAGES_PAGINATE_BY": "42"}
    result = invoke("settings", "--current", env=env)
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    assert "    current: ***" in result.output
    assert "    current: 42" in result.output


def test_settings_with_config_shows_current_values(tmp_path: Path) -> None:
    config = tmp_path / "nuages.toml"
    config.write_text("paginate_by = 33\n")
    result = invoke("settings", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert "    current: 33" in result.output


def test_settings_current_reports_bad_settings() -> None:
    result = invoke("settings", "--current", env={"NUAGES_NOPE": "1"})
    assert result.exit_code == 2
    assert result.output.startswith("Error: unknown setting NUAGES_NOPE")


# --- docs/cli.md


def render_reference() -> str:
    """The generated part of docs/cli.md: every command's --help, as a user sees it."""
    parts = []
    for command in ("", *COMMANDS):
        args = [command, "--help"] if command else ["--help"]
        output = invoke(*args).output.rstrip()
        parts.append(f"### `nuages {command or '--help'}`\n\n```\n{output}\n```\n")
    return "\n".join(parts)


def _generated_part(text: str) -> str:
    start = text.index(BEGIN) + len(BEGIN)
    return text[start : text.index(END)].strip("\n")


def test_every_command_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for command in cli.main.commands:
        assert f"nuages {command}" in text, f"`nuages {command}` missing from docs/cli.md"


def test_cli_reference_is_up_to_date() -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert _generated_part(text) == render_reference().strip("\n"), (
        "docs/cli.md is stale: run `python tests/test_cli.py`"
    )


if __name__ == "__main__":
    current = DOCS.read_text(encoding="utf-8")
    head, _, rest = current.partition(BEGIN)
    _, _, tail = rest.partition(END)
    DOCS.write_text(f"{head}{BEGIN}\n\n{render_reference().strip()}\n\n{END}{tail}", "utf-8")
