"""``nuages create-user``: the first administrator, created from the command line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from tests.conftest import serving

from nuages import cli
from nuages.settings import Settings
from nuages.web.app import create_app

PASSWORD = "the admin's password"


def invoke(env: dict[str, str], *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli.main, list(args), env=env, input=stdin, prog_name="nuages")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in ("NUAGES_CONFIG", "NUAGES_STORAGE_URL", "NUAGES_AUTH", "NUAGES_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    values = {
        "NUAGES_STORAGE_URL": f"sqlite:///{tmp_path / 'nuages.db'}",
        "NUAGES_AUTH": "accounts",
        "NUAGES_PLUGINS": "accounts",
        "NUAGES_ACCOUNT_WRITE_PRINCIPALS": "account:admin",
    }
    assert invoke(values, "migrate").exit_code == 0
    return values


def whoami(env: dict[str, str], auth: tuple[str, str]) -> str | None:
    """The user id the server gives these credentials (a server of its own: sync test)."""
    return asyncio.run(_whoami(env, auth))


async def _whoami(env: dict[str, str], auth: tuple[str, str]) -> str | None:
    app = create_app(Settings.load(env=env))
    async with serving(app, auth=None, base_url="http://t") as client:
        accounts = await client.get("/v1/accounts", auth=auth)
        user = (await client.get("/v1/", auth=auth)).json().get("user")
        if user is not None:
            assert accounts.status_code == 200  # the administrator lists accounts
        return None if user is None else str(user["id"])


def test_create_user_from_stdin(env: dict[str, str]) -> None:
    result = invoke(env, "create-user", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert result.output == "Created account:admin\n"
    assert PASSWORD not in result.output
    assert whoami(env, ("admin", PASSWORD)) == "account:admin"


def test_create_user_prompts_twice_and_resets(env: dict[str, str]) -> None:
    result = invoke(env, "create-user", "admin", stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    again = invoke(env, "create-user", "admin", "--password-stdin", stdin="new\n")
    assert again.output == "Updated the password of account:admin\n"
    assert whoami(env, ("admin", PASSWORD)) is None
    assert whoami(env, ("admin", "new")) == "account:admin"


@pytest.mark.parametrize(("name", "password"), [("-bad", "pw"), ("admin", "")])
def test_create_user_refuses_bad_input(env: dict[str, str], name: str, password: str) -> None:
    result = invoke(env, "create-user", name, "--password-stdin", stdin=password + "\n")
    assert result.exit_code == 2
    assert "Error" in result.output


def test_create_user_needs_a_migrated_database(tmp_path: Path) -> None:
    env = {"NUAGES_STORAGE_URL": f"sqlite:///{tmp_path / 'new.db'}"}
    result = invoke(env, "create-user", "admin", "--password-stdin", stdin="pw\n")
    assert result.exit_code == 1
    assert "migrate" in result.output
