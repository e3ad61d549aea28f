"""Settings: defaults, parsing from TOML and environment, precedence, errors, docs coverage.

``python tests/test_settings.py`` rewrites the generated reference in docs/settings.md.
"""

from __future__ import annotations

import dataclasses
import pickle
import sys
import tomllib
from datetime import date
from pathlib import Path

import pytest

from nuages.settings import (
    AUTH_POLICIES,
    PLUGINS,
    PRINCIPAL_PERMISSIONS,
    PRINCIPAL_RESOURCES,
    SettingDoc,
    Settings,
    SettingsError,
    format_value,
    iter_settings,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "settings.md"
BEGIN = "<!-- BEGIN GENERATED REFERENCE: python tests/test_settings.py -->"
END = "<!-- END GENERATED REFERENCE -->"


def load_error(**kwargs: object) -> str:
    with pytest.raises(SettingsError) as info:
        Settings.load(**kwargs)  # type: ignore[arg-type]
    return str(info.value)


def write_toml(tmp_path: Path, text: str, name: str = "nuages.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults


def test_defaults_match_the_brief_and_kinto() -> None:
    s = Settings()
    assert s.storage_url == "sqlite:///./nuages.db"
    assert s.permission_url is None and s.cache_url is None
    assert s.effective_permission_url == s.effective_cache_url == s.storage_url
    assert s.auth == ("basicauth",)
    assert s.plugins == ()
    assert s.userid_hmac_secret == ""
    assert s.paginate_by is None
    assert (s.storage_max_fetch_size, s.batch_max_requests) == (10000, 25)
    assert s.pagination_token_validity_seconds == 600
    assert s.explicit_permissions is True
    assert s.retry_after_seconds == 3
    assert s.cors_origins == ("*",) and s.cors_max_age_seconds == 3600
    assert s.max_request_body_bytes == 8 * 1024 * 1024 and s.max_json_depth == 128
    assert (s.host, s.port, s.workers, s.log_level) == ("127.0.0.1", 8888, 1, "info")
    assert s.heartbeat_timeout_seconds == 10.0
    assert s.sqlite_readers == 4
    assert s.flush_enabled is False
    assert Settings.load(env={}) == s


def test_default_principals() -> None:
    s = Settings()
    assert s.principals_for("bucket", "create") == ("system.Authenticated",)
    assert s.principals_for("permissions", "read") == ("system.Everyone",)
    for resource in PRINCIPAL_RESOURCES:
        for perm in PRINCIPAL_PERMISSIONS:
            assert f"{resource}:{perm}" in s.principals
            if (resource, perm) not in {("bucket", "create"), ("permissions", "read")}:
                assert s.principals_for(resource, perm) == ()
    # Unknown pairs grant nothing rather than fail: denying is the safe answer.
    assert s.principals_for("article", "read") == ()


def test_effective_urls_fall_back_to_storage_url() -> None:
    s = Settings(storage_url="memory://", cache_url="sqlite:///cache.db")
    assert s.effective_permission_url == "memory://"
    assert s.effective_cache_url == "sqlite:///cache.db"


def test_every_field_has_help_and_a_default() -> None:
    for f in dataclasses.fields(Settings):
        assert f.metadata["help"], f.name
        has_default = f.default is not dataclasses.MISSING
        assert has_default or f.default_factory is not dataclasses.MISSING, f.name


# --- immutability, repr


def test_settings_are_frozen_hashable_and_picklable() -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.principals["bucket:create"] = ()  # type: ignore[index]
    assert hash(s) == hash(Settings())
    assert pickle.loads(pickle.dumps(s)) == s


def test_repr_masks_secrets_and_url_passwords() -> None:
    s = Settings(userid_hmac_secret="s3cr3t-value")
    assert "s3cr3t-value" not in repr(s)
    assert "userid_hmac_secret='***'" in repr(s)
    assert "userid_hmac_secret=''" in repr(Settings())  # an unset secret is worth seeing
    assert "s3cr3t-value" not in str(s)

    from nuages.settings import _mask_url

    assert _mask_url("postgresql://user:pw@db:5432/x") == "postgresql://user:***@db:5432/x"
    assert _mask_url("sqlite:///./nuages.db") == "sqlite:///./nuages.db"


def test_error_messages_do_not_leak_url_passwords() -> None:
    message = load_error(env={"NUAGES_STORAGE_URL": "mysql://u:hunter2@db/x"})
    assert "hunter2" not in message and "mysql" in message


# --- environment parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("On", True),
        (" true ", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("OFF", False),
    ],
)
def test_env_booleans(text: str, expected: bool) -> None:
    assert Settings.load(env={"NUAGES_READONLY": text}).readonly is expected


def test_env_scalars() -> None:
    s = Settings.load(
        env={
            "NUAGES_PAGINATE_BY": "50",
            "NUAGES_PORT": " 9000 ",
            "NUAGES_HEARTBEAT_TIMEOUT_SECONDS": "2.5",
            "NUAGES_PROJECT_NAME": "my cloud",
            "NUAGES_EOS": "2030-06-01",
            "NUAGES_EOS_MESSAGE": "Bye",
            "NUAGES_LOG_LEVEL": "WARNING",
            "NUAGES_HTTP_SCHEME": "HTTPS",
            "NUAGES_STORAGE_URL": "sqlite:////var/lib/nuages.db",
        }
    )
    assert s.paginate_by == 50
    assert s.port == 9000
    assert s.heartbeat_timeout_seconds == 2.5
    assert s.project_name == "my cloud"
    assert s.eos == date(2030, 6, 1)
    assert s.eos_message == "Bye"
    assert s.log_level == "warning"  # normalised for uvicorn
    assert s.http_scheme == "https"
    assert s.storage_url == "sqlite:////var/lib/nuages.db"


def test_env_empty_string_unsets_optional_settings() -> None:
    s = Settings.load(env={"NUAGES_CORS_MAX_AGE_SECONDS": "", "NUAGES_PAGINATE_BY": " "})
    assert s.cors_max_age_seconds is None
    assert s.paginate_by is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://a.example https://b.example", ("https://a.example", "https://b.example")),
        ("https://a.example,https://b.example", ("https://a.example", "https://b.example")),
        (" https://a.example ,\n https://b.example ", ("https://a.example", "https://b.example")),
        ("", ()),
    ],
)
def test_env_lists_split_on_spaces_and_commas(text: str, expected: tuple[str, ...]) -> None:
    assert Settings.load(env={"NUAGES_CORS_ORIGINS": text}).cors_origins == expected


def test_env_principals_family() -> None:
    s = Settings.load(
        env={
            "NUAGES_BUCKET_CREATE_PRINCIPALS": "account:admin",
            "NUAGES_RECORD_WRITE_PRINCIPALS": "system.Authenticated, group:editors",
        }
    )
    assert s.principals_for("bucket", "create") == ("account:admin",)
    assert s.principals_for("record", "write") == ("system.Authenticated", "group:editors")
    assert s.principals_for("permissions", "read") == ("system.Everyone",)  # untouched default
    assert s.value_of("record_write_principals") == ("system.Authenticated", "group:editors")


def test_env_ignores_other_variables_and_reserved_names() -> None:
    s = Settings.load(
        env={
            "PATH": "/bin",
            "KINTO_PAGINATE_BY": "abc",
            "NUAGES_APP": "x:y",
            "NUAGES_TEST_BACKENDS": "memory",
        }
    )
    assert s == Settings()


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUAGES_PAGINATE_BY", "7")
    assert Settings.load().paginate_by == 7


# --- error messages


def test_invalid_env_value_names_the_variable() -> None:
    message = load_error(env={"NUAGES_PAGINATE_BY": "abc"})
    assert message == "NUAGES_PAGINATE_BY: expected an integer, got 'abc'"


def test_unknown_env_variable_suggests_the_closest() -> None:
    message = load_error(env={"NUAGES_PAGINATE_BYY": "5"})
    assert message == "unknown setting NUAGES_PAGINATE_BYY (did you mean NUAGES_PAGINATE_BY?)"
    assert load_error(env={"NUAGES_XYZZY": "1"}) == "unknown setting NUAGES_XYZZY"


def test_unknown_toml_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "paginate_byy = 5\n")
    message = load_error(config_file=path, env={})
    assert message.startswith(f"{path}: unknown setting 'paginate_byy'")
    assert "did you mean 'paginate_by'?" in message


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.load(env={"NUAGES_PORT": "x", "NUAGES_WORKERS": "0", "NUAGES_NOPE": "1"})
    assert len(info.value.problems) == 3
    assert isinstance(info.value, ValueError)
    assert str(info.value) == "\n".join(info.value.problems)


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("NUAGES_PORT", "0", "must be between 1 and 65535, got 0"),
        ("NUAGES_PORT", "65536", "must be between 1 and 65535"),
        ("NUAGES_WORKERS", "0", "must be at least 1, got 0"),
        ("NUAGES_SQLITE_READERS", "0", "must be at least 1"),
        ("NUAGES_BACKOFF_PERCENTAGE", "101", "must be between 0 and 100, got 101"),
        ("NUAGES_BACKOFF_PERCENTAGE", "-1", "must be between 0 and 100"),
        ("NUAGES_BACKOFF", "-5", "must be at least 0"),
        ("NUAGES_PAGINATE_BY", "0", "must be at least 1"),
        ("NUAGES_STORAGE_MAX_FETCH_SIZE", "0", "must be at least 1"),
        ("NUAGES_BATCH_MAX_REQUESTS", "-1", "must be at least 0"),
        ("NUAGES_MAX_JSON_DEPTH", "0", "must be at least 1"),
        ("NUAGES_HEARTBEAT_TIMEOUT_SECONDS", "0", "must be a positive number"),
        ("NUAGES_HEARTBEAT_TIMEOUT_SECONDS", "nan", "expected a number, got 'nan'"),
        ("NUAGES_PORT", "80.5", "expected an integer, got '80.5'"),
        ("NUAGES_READONLY", "maybe", "expected a boolean"),
        ("NUAGES_EOS", "next year", "expected a date as YYYY-MM-DD, got 'next year'"),
        ("NUAGES_LOG_LEVEL", "verbose", "expected one of debug, info, warning, error"),
        ("NUAGES_HTTP_SCHEME", "ftp", "expected one of http, https"),
        ("NUAGES_PROJECT_NAME", " ", "must not be empty"),
        ("NUAGES_AUTH", "basicauth account", "unknown auth policy 'account'"),
        ("NUAGES_AUTH", "ldap", "unknown auth policy 'ldap'; available: basicauth"),
        ("NUAGES_PLUGINS", "admin", "unknown plugin 'admin'; available: flush"),
        ("NUAGES_STORAGE_URL", "postgresql://", "a postgresql URL needs a host"),
        ("NUAGES_STORAGE_URL", "mysql://localhost", "unsupported backend mysql://"),
        ("NUAGES_STORAGE_URL", "nuages.db", "expected a URL such as sqlite:///"),
        ("NUAGES_STORAGE_URL", "sqlite://", "needs a file path"),
        ("NUAGES_STORAGE_URL", "sqlite:///", "needs a file path"),
        ("NUAGES_STORAGE_URL", "sqlite://host/x.db", "needs a file path"),
        ("NUAGES_STORAGE_URL", "memory://x", "memory:// takes no path"),
        ("NUAGES_CACHE_URL", "redis://", "a redis URL needs a host"),
    ],
)
def test_invalid_values(var: str, value: str, fragment: str) -> None:
    message = load_error(env={var: value})
    assert message.startswith(f"{var}: ")
    assert fragment in message


def test_constructor_validates_too() -> None:
    with pytest.raises(SettingsError, match=r"^port: must be between 1 and 65535, got 0$"):
        Settings(port=0)
    with pytest.raises(SettingsError, match="paginate_by: expected an integer, got True"):
        Settings(paginate_by=True)


def test_constructor_normalises() -> None:
    s = Settings(auth=["basicauth", "basicauth"], cors_origins=["*"], log_level="DEBUG")  # type: ignore[arg-type]
    assert s.auth == ("basicauth",)  # repeats dropped, order kept
    assert s.cors_origins == ("*",)
    assert s.log_level == "debug"


def test_constructor_principals_merge_with_defaults() -> None:
    s = Settings(principals={"record:read": ("system.Everyone",)})
    assert s.principals_for("record", "read") == ("system.Everyone",)
    assert s.principals_for("bucket", "create") == ("system.Authenticated",)
    with pytest.raises(SettingsError, match="principals: unknown key 'bucket:delete'"):
        Settings(principals={"bucket:delete": ()})
    with pytest.raises(SettingsError, match="principals: expected a mapping, got None"):
        Settings(principals=None)  # type: ignore[arg-type]


def test_memory_backends_cannot_be_shared_by_workers() -> None:
    message = load_error(env={"NUAGES_STORAGE_URL": "memory://", "NUAGES_WORKERS": "2"})
    assert message.startswith("workers: 2 workers need shared backends")
    assert "storage_url, permission_url, cache_url use memory://" in message
    message = load_error(env={"NUAGES_CACHE_URL": "memory://", "NUAGES_WORKERS": "2"})
    assert "but cache_url use memory://" in message
    assert Settings.load(env={"NUAGES_WORKERS": "4"}).workers == 4  # SQLite is shared


def test_known_values_come_from_one_constant() -> None:
    # The allowed values are the constants, so extending one is the whole change.
    # Every policy at once, in an order that makes sense (accounts before basicauth).
    every_policy = tuple(sorted(AUTH_POLICIES))
    openid = {"openid_issuer": "https://issuer.example", "openid_audience": "nuages"}
    assert Settings(auth=every_policy, **openid).auth == every_policy
    assert Settings(auth=every_policy, plugins=PLUGINS, **openid).plugins == PLUGINS
    assert Settings(plugins=("flush",)).flush_enabled
    assert Settings(flush_endpoint_enabled=True).flush_enabled


# --- TOML


def test_toml_native_types(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
storage_url = "memory://"
paginate_by = 100
readonly = true
auth = ["basicauth"]
cors_origins = ["https://*.example.com", "http://localhost:*"]
bucket_create_principals = ["account:admin"]
eos = 2030-01-31
heartbeat_timeout_seconds = 3
""",
    )
    s = Settings.load(path, env={})
    assert s.storage_url == "memory://"
    assert s.paginate_by == 100
    assert s.readonly is True
    assert s.cors_origins == ("https://*.example.com", "http://localhost:*")
    assert s.principals_for("bucket", "create") == ("account:admin",)
    assert s.eos == date(2030, 1, 31)
    assert s.heartbeat_timeout_seconds == 3.0


def test_toml_strings_are_parsed_like_env(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        'paginate_by = "100"\nreadonly = "yes"\nauth = "basicauth"\neos = "2030-01-31"\n'
        'cors_max_age_seconds = ""\n',
    )
    s = Settings.load(str(path), env={})
    assert (s.paginate_by, s.readonly, s.auth, s.eos) == (
        100,
        True,
        ("basicauth",),
        date(2030, 1, 31),
    )
    assert s.cors_max_age_seconds is None  # TOML has no null: "" unsets


def test_toml_nuages_table(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = 9000\n[nuages]\npaginate_by = 10\n")
    s = Settings.load(path, env={})
    assert (s.port, s.paginate_by) == (9000, 10)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("paginate_by = true\n", "paginate_by: expected an integer, got True"),
        ("port = 8080.0\n", "port: expected an integer, got 8080.0"),
        ("http_host = 8080\n", "http_host: expected a string, got 8080"),
        ("auth = [1]\n", "auth: expected a list of non-empty strings"),
        ("eos = 2030-01-31T10:00:00\n", "eos: expected a date as YYYY-MM-DD"),
        ("readonly = 1\n", "readonly: expected a boolean"),
        ("[tool]\nx = 1\n", "unknown setting 'tool'"),
        ("nuages = 1\n", "'nuages' must be a table"),
        ("port = 1\n[nuages]\nport = 2\n", "port set both at the top level and in [nuages]"),
        ("port = \n", "invalid TOML"),
    ],
)
def test_toml_errors_name_file_and_setting(tmp_path: Path, text: str, fragment: str) -> None:
    path = write_toml(tmp_path, text)
    message = load_error(config_file=path, env={})
    assert message.startswith(f"{path}: ")
    assert fragment in message


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert load_error(config_file=missing, env={}) == f"{missing}: config file not found"


def test_config_file_from_nuages_config(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = 9001\n")
    assert Settings.load(env={"NUAGES_CONFIG": str(path)}).port == 9001
    # An explicit file wins over $NUAGES_CONFIG.
    other = write_toml(tmp_path, "port = 9002\n", name="other.toml")
    assert Settings.load(other, env={"NUAGES_CONFIG": str(path)}).port == 9002
    message = load_error(env={"NUAGES_CONFIG": str(tmp_path / "nope.toml")})
    assert message.startswith("NUAGES_CONFIG=") and "config file not found" in message


# --- precedence and overrides


def test_precedence_overrides_env_file_defaults(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = 1001\nworkers = 2\nhost = '0.0.0.0'\n")
    env = {"NUAGES_PORT": "2002", "NUAGES_WORKERS": "3"}
    s = Settings.load(path, env=env, port=3003)
    assert s.port == 3003  # override beats env
    assert s.workers == 3  # env beats file
    assert s.host == "0.0.0.0"  # file beats default
    assert s.log_level == "info"  # default


def test_principal_precedence_is_per_entry(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'bucket_create_principals = ["a"]\nrecord_read_principals = "b"\n')
    s = Settings.load(path, env={"NUAGES_RECORD_READ_PRINCIPALS": "c"})
    assert s.principals_for("bucket", "create") == ("a",)
    assert s.principals_for("record", "read") == ("c",)


def test_overrides_accept_typed_values_strings_and_principals() -> None:
    s = Settings.load(
        env={},
        port="9000",
        readonly=True,
        eos=date(2031, 1, 1),
        bucket_create_principals=["account:admin"],
        principals={"record:read": ["system.Everyone"]},
        paginate_by=None,
    )
    assert (s.port, s.readonly, s.eos) == (9000, True, date(2031, 1, 1))
    assert s.principals_for("bucket", "create") == ("account:admin",)
    assert s.principals_for("record", "read") == ("system.Everyone",)


def test_override_errors() -> None:
    assert load_error(env={}, port=0) == "port: must be between 1 and 65535, got 0"
    assert load_error(env={}, pagniate_by=1).startswith("unknown setting 'pagniate_by'")
    assert "principals: expected a mapping" in load_error(env={}, principals=["x"])
    message = load_error(env={}, principals={"bucket:delete": ["x"]})
    assert message.startswith("principals: unknown setting 'bucket_delete_principals'")


# --- documentation


def test_documented_covers_every_setting_once() -> None:
    docs = list(Settings.documented())
    names = [d.name for d in docs]
    assert len(names) == len(set(names))
    fields = {f.name for f in dataclasses.fields(Settings)} - {"principals"}
    family = {f"{r}_{p}_principals" for r in PRINCIPAL_RESOURCES for p in PRINCIPAL_PERMISSIONS}
    assert set(names) == fields | family
    defaults = Settings()
    for doc in docs:
        assert doc.env_var == "NUAGES_" + doc.name.upper()
        assert doc.toml_key == doc.name
        assert doc.help and doc.type
        assert defaults.value_of(doc.name) == doc.default, doc.name


def test_documented_defaults_are_valid_toml(tmp_path: Path) -> None:
    # The docs show defaults as TOML literals: pasting one into a file must give the default.
    lines = [f"{d.name} = {d.default_text}" for d in iter_settings() if d.default is not None]
    path = write_toml(tmp_path, "\n".join(lines) + "\n")
    tomllib.loads(path.read_text())
    assert Settings.load(path, env={}) == Settings()
    assert format_value(None) == "(unset)"
    assert format_value('a"b') == '"a\\"b"'


def test_value_of_unknown_setting() -> None:
    with pytest.raises(KeyError, match="nope"):
        Settings().value_of("nope")


def _default(doc: SettingDoc) -> str:
    return "unset" if doc.default is None else f"`{doc.default_text}`"


def render_reference() -> str:
    """The generated part of docs/settings.md: one section per setting."""
    out: list[str] = []
    family = [d for d in iter_settings() if d.name.endswith("_principals")]
    family_written = False
    for doc in iter_settings():
        if doc.name.endswith("_principals"):
            if family_written:
                continue
            family_written = True
            out += [
                "### `<resource>_<perm>_principals`",
                "",
                "Principals granted a permission on every object of a resource type, on top of "
                "the ACLs stored on objects (protocol 06 §3). Type: list of strings.",
                "",
                "The entry consulted is the one of the resource *being requested*: a record "
                "update checks `record_write_principals`, and `bucket_write_principals` does "
                "not cascade to collections or records. `permissions_read_principals` decides "
                "who may read `GET /permissions`.",
                "",
                "| TOML key | environment variable | default |",
                "|---|---|---|",
            ]
            out += [f"| `{d.toml_key}` | `{d.env_var}` | {_default(d)} |" for d in family]
            out.append("")
            continue
        out += [
            f"### `{doc.name}`",
            "",
            doc.help,
            "",
            f"- TOML key: `{doc.toml_key}`",
            f"- environment: `{doc.env_var}`",
            f"- type: {doc.type}",
            f"- default: {_default(doc)}",
            "",
        ]
    return "\n".join(out)


def _generated_part(text: str) -> str:
    start = text.index(BEGIN) + len(BEGIN)
    return text[start : text.index(END)].strip("\n")


def test_every_setting_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for doc in iter_settings():
        assert doc.env_var in text, f"{doc.env_var} missing from docs/settings.md"
        assert f"`{doc.toml_key}`" in text, f"{doc.toml_key} missing from docs/settings.md"


def test_settings_reference_is_up_to_date() -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert _generated_part(text) == render_reference().strip("\n"), (
        "docs/settings.md is stale: run `python tests/test_settings.py`"
    )


if __name__ == "__main__":
    current = DOCS.read_text(encoding="utf-8")
    head, _, rest = current.partition(BEGIN)
    _, _, tail = rest.partition(END)
    DOCS.write_text(f"{head}{BEGIN}\n\n{render_reference().strip()}\n\n{END}{tail}", "utf-8")
    sys.exit(0)
