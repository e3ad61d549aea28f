"""The ``nuages`` command: thin click commands over library calls.

::

    nuages serve      run the HTTP server (uvicorn)
    nuages migrate    create or upgrade the database schemas
    nuages create-user  create an account (the first administrator) or reset its password
    nuages settings   list every setting with its environment variable, default and help
    nuages version    print the Nuages and HTTP API versions

Every command that needs settings builds them with :meth:`nuages.settings.Settings.load`, so a
TOML file (``--config`` or ``$NUAGES_CONFIG``), ``NUAGES_*`` variables and flags mean the same
thing everywhere. Bad settings end the command with ``Error: <message>`` and exit code 2, the
code click uses for bad usage, without a traceback: the operator needs the setting's name, not
our call stack.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import sys
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

import click

import nuages
from nuages.core.errors import Error
from nuages.settings import (
    APP_ENV_VAR,
    CONFIG_ENV_VAR,
    ENV_PREFIX,
    LOG_LEVELS,
    Settings,
    SettingsError,
    format_value,
    iter_settings,
)

__all__ = ["main"]

# uvicorn's workers are new processes that import the app by name instead of receiving it.
_DEFAULT_APP_FACTORY = "nuages.web.app:create_app_from_env"
_CUSTOM_APP_FACTORY = "nuages.cli:_app_from_environment"


class _SettingsFailure(click.ClickException):
    """Printed as ``Error: <message>``; exit code 2 like any other usage error."""

    exit_code = 2


def _load_settings(config_file: Path | None, overrides: Mapping[str, object]) -> Settings:
    try:
        return Settings.load(config_file, None, **overrides)
    except SettingsError as exc:
        raise _SettingsFailure(str(exc)) from exc


def _given(**values: object) -> dict[str, object]:
    """The flags actually passed: an absent flag must not mask the file or the environment."""
    return {name: value for name, value in values.items() if value is not None}


_config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help=f"TOML settings file; defaults to ${CONFIG_ENV_VAR} when set.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Nuages: store JSON and keep it in sync across devices.

    A Kinto-compatible (HTTP API 1.23) storage and sync server. Settings come from a TOML file
    (--config or $NUAGES_CONFIG), then NUAGES_* environment variables, then command-line flags,
    each overriding the one before; `nuages settings` lists them all.
    """


@main.command()
@_config_option
@click.option("--host", help="Address to listen on (setting host).")
@click.option("--port", type=int, help="Port to listen on (setting port).")
@click.option(
    "--workers",
    type=int,
    help="Number of server processes, each listening on the address itself (setting workers).",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    help="Server log level (setting log_level).",
)
@click.option(
    "--app",
    "app_spec",
    metavar="MODULE:ATTR",
    envvar=APP_ENV_VAR,
    help="Serve another ASGI app built on the toolkit: an app, or a function taking Settings "
    f"and returning one. Also ${APP_ENV_VAR}.",
)
def serve(
    config_file: Path | None,
    host: str | None,
    port: int | None,
    workers: int | None,
    log_level: str | None,
    app_spec: str | None,
) -> None:
    """Run the HTTP server (uvicorn) with the configured settings."""
    overrides = _given(host=host, port=port, workers=workers, log_level=log_level)
    settings = _load_settings(config_file, overrides)
    if app_spec is not None:
        _import_attribute(app_spec)  # fail here, once, rather than in every worker
    if "prometheus" in settings.plugins:
        from nuages.plugins.prometheus import multiprocess_directory

        try:
            multiprocess_directory()
        except ValueError as exc:
            raise _SettingsFailure(str(exc)) from exc

    import uvicorn

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        # Honour X-Forwarded-* from trusted proxies ($FORWARDED_ALLOW_IPS), so that the URLs we
        # write (Next-Page, redirects) use the client's scheme and host.
        "proxy_headers": True,
        "server_header": False,
        # Nuages writes its own access log (nuages.web.accesslog), cheaper than uvicorn's.
        "access_log": False,
        # HTTP/1.1 on httptools with less Python per request than uvicorn's (nuages.web.server).
        "http": _http_protocol(),
        # Always explicit: left to None, uvicorn would read $WEB_CONCURRENCY behind our back.
        "workers": settings.workers,
    }
    if settings.workers == 1:
        uvicorn.run(_build_app(settings, app_spec), **options)
        return
    # Worker processes build their own app: hand them the same inputs through the environment
    # (which they inherit), so that each one loads exactly the settings validated above.
    os.environ.update(_worker_environment(config_file, overrides, app_spec))
    target = _DEFAULT_APP_FACTORY if app_spec is None else _CUSTOM_APP_FACTORY
    from nuages.plugins.prometheus import shared_directory
    from nuages.web import workers as workers_mod

    with shared_directory(settings):  # the workers' metrics, summed (plugins/prometheus.py)
        if not workers_mod.available():
            uvicorn.run(target, factory=True, **options)  # one socket shared by the workers
            return
        # A listening socket per worker, so the kernel spreads connections over them.
        del options["workers"]
        code = workers_mod.run(target, options, settings.workers)
    if code:
        sys.exit(code)


def _http_protocol() -> Any:
    try:
        from nuages.web.server import HttpProtocol
    except ImportError:  # uvicorn without httptools: its own choice
        return "auto"
    return HttpProtocol


def _worker_environment(
    config_file: Path | None, overrides: Mapping[str, object], app_spec: str | None
) -> dict[str, str]:
    """Environment variables that make a worker's ``Settings.load()`` equal the parent's."""
    env: dict[str, str] = {}
    if config_file is not None:
        # Absolute, in case a worker runs from another directory.
        env[CONFIG_ENV_VAR] = str(Path(config_file).resolve())
    for name, value in overrides.items():
        # Flags outrank the environment, and the environment outranks the file: writing the
        # flags over the inherited variables keeps that order in the workers.
        env[ENV_PREFIX + name.upper()] = _env_text(value)
    if app_spec is not None:
        env[APP_ENV_VAR] = app_spec
    return env


def _env_text(value: object) -> str:
    """A setting value written so that the environment parser reads it back unchanged."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return " ".join(str(item) for item in value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _build_app(settings: Settings, app_spec: str | None) -> Any:
    if app_spec is None:
        # Imported here: the web layer (Starlette, backends) is not needed by other commands.
        from nuages.web.app import create_app

        return create_app(settings)
    target = _import_attribute(app_spec)
    return target(settings) if _is_app_factory(target) else target


def _app_from_environment() -> Any:
    """uvicorn factory for ``serve --workers N --app ...``: rebuild settings and app in a worker."""
    return _build_app(Settings.load(), os.environ[APP_ENV_VAR])


def _import_attribute(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise click.BadParameter(f"expected MODULE:ATTR, got {spec!r}", param_hint="'--app'")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as uvicorn's --app-dir: apps next to the caller
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(
            f"cannot import {module_name!r}: {exc}", param_hint="'--app'"
        ) from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise click.BadParameter(
                f"module {module_name!r} has no attribute {attr!r}", param_hint="'--app'"
            ) from None
    return target


def _is_app_factory(target: object) -> bool:
    """A plain function of one required argument is a factory; an ASGI app takes three."""
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        return False  # e.g. a Starlette instance: already an app
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [
        p
        for p in inspect.signature(target).parameters.values()
        if p.kind in positional and p.default is inspect.Parameter.empty
    ]
    return len(required) == 1


@main.command()
@_config_option
def migrate(config_file: Path | None) -> None:
    """Create or upgrade the schema of every configured database.

    Safe to run again: an up-to-date schema is left as it is. Run it before `nuages serve`
    after each upgrade of Nuages.
    """
    settings = _load_settings(config_file, {})
    # Imported here: backends pull in database drivers that `nuages version` does not need.
    from nuages.backends import migrate as migrate_backends

    try:
        done = asyncio.run(migrate_backends(settings))
    except Error as exc:
        raise click.ClickException(str(exc)) from exc
    for line in done:
        click.echo(line)


@main.command()
def version() -> None:
    """Print the Nuages version and the Kinto HTTP API version it speaks."""
    click.echo(f"nuages {nuages.__version__} (HTTP API {nuages.HTTP_API_VERSION})")


@main.command("create-user")
@_config_option
@click.argument("username")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input instead of prompting.",
)
def create_user(config_file: Path | None, username: str, password_stdin: bool) -> None:
    """Create the account USERNAME, or set its password if it exists.

    Use it for the first administrator: then list `account:USERNAME` in
    account_write_principals. Needs the accounts plugin's tables, so run `nuages migrate`
    first; the password is never echoed nor logged.
    """
    settings = _load_settings(config_file, {})
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    # Imported here: argon2 and the backends are not needed by other commands.
    from nuages.plugins.accounts import create_account

    try:
        created = asyncio.run(create_account(settings, username, password))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    except Error as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{'Created' if created else 'Updated the password of'} account:{username}")


@main.command("settings")
@_config_option
@click.option(
    "--current",
    is_flag=True,
    help="Also show the value each setting has here (file and environment); secrets masked. "
    "Implied by --config.",
)
def settings_command(config_file: Path | None, current: bool) -> None:
    """List every setting: name, environment variable, type, default and help."""
    current = current or config_file is not None
    loaded = _load_settings(config_file, {}) if current else None
    for doc in iter_settings():
        click.echo(f"{doc.name}  [{doc.env_var}]")
        click.echo(f"    {doc.type}, default {doc.default_text}")
        if loaded is not None:
            value = loaded.value_of(doc.name)
            shown = "***" if doc.secret and value else format_value(value)
            click.echo(f"    current: {shown}")
        click.echo(
            click.wrap_text(doc.help, width=88, initial_indent="    ", subsequent_indent="    ")
        )
        click.echo()
