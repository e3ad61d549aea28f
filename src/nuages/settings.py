"""One typed :class:`Settings` object, loaded from defaults, a TOML file, environment, overrides.

Names follow Kinto's (``docs/protocol/11-settings.md``) so that a Kinto operator finds them: the
TOML key is the setting name (``paginate_by``), the environment variable is ``NUAGES_`` plus the
name in upper case (``NUAGES_PAGINATE_BY``). Precedence, highest first::

    Settings.load(**overrides)  >  NUAGES_* environment  >  TOML file  >  defaults

Every problem is reported as a :class:`SettingsError` naming the setting and where it came from;
unknown names are errors too, because a misspelt setting silently left at its default is the
hardest configuration bug to find.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "APP_ENV_VAR",
    "AUTH_POLICIES",
    "BACKEND_SCHEMES",
    "CONFIG_ENV_VAR",
    "ENV_PREFIX",
    "LOG_LEVELS",
    "OPENID_OPTIONS",
    "PLUGINS",
    "PRINCIPAL_PERMISSIONS",
    "PRINCIPAL_RESOURCES",
    "SettingDoc",
    "Settings",
    "SettingsError",
    "format_value",
    "iter_settings",
    "openid_provider_options",
]

ENV_PREFIX: Final = "NUAGES_"
#: Path of the TOML file read by :meth:`Settings.load` when no ``config_file`` is given.
CONFIG_ENV_VAR: Final = "NUAGES_CONFIG"
#: ``module:attr`` of the app served by ``nuages serve --app``, handed to worker processes.
APP_ENV_VAR: Final = "NUAGES_APP"
# Variables under the prefix that are not settings, so not "unknown settings" either. The test
# suite's own switches (NUAGES_TEST_BACKENDS, ...) share the prefix; no setting starts with "test".
_RESERVED_ENV_VARS: Final = frozenset({CONFIG_ENV_VAR, APP_ENV_VAR})
_RESERVED_ENV_PREFIX: Final = "NUAGES_TEST_"

# The allowed values live in these tuples only: adding a backend, policy or plugin is one edit.
BACKEND_SCHEMES: Final = ("sqlite", "memory", "postgresql", "redis")
AUTH_POLICIES: Final = ("basicauth", "accounts", "openid")
PLUGINS: Final = (
    "flush",
    "accounts",
    "default_bucket",
    "history",
    "quotas",
    "attachment",
    "prometheus",
)
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
PRINCIPAL_RESOURCES: Final = (
    "bucket",
    "collection",
    "group",
    "record",
    "permissions",
    "account",
)
PRINCIPAL_PERMISSIONS: Final = ("read", "write", "create")
# Known but not implemented yet: say so instead of "unknown", since a Kinto user will try them.
_PLANNED: Final[frozenset[str]] = frozenset()

_DEFAULT_PRINCIPALS: Final[Mapping[str, tuple[str, ...]]] = {
    "bucket:create": ("system.Authenticated",),
    "permissions:read": ("system.Everyone",),
}

_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})
_LIST_SEPARATORS: Final = re.compile(r"[\s,]+")


class SettingsError(ValueError):
    """The configuration is invalid. ``problems`` holds one line per problem, each naming a setting.

    All problems found are reported at once, so an operator fixes a config in one round trip.
    """

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        super().__init__("\n".join(self.problems))


class _Invalid(Exception):
    """A value is wrong; the message says why, the caller adds which setting and where."""


# --- value checks (run on already-typed values, may normalise) --------------------------------


def _at_least(minimum: int) -> Callable[[Any], Any]:
    def check(value: int) -> int:
        if value < minimum:
            raise _Invalid(f"must be at least {minimum}, got {value}")
        return value

    return check


def _between(low: int, high: int) -> Callable[[Any], Any]:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise _Invalid(f"must be between {low} and {high}, got {value}")
        return value

    return check


def _positive_number(value: float) -> float:
    if not value > 0:
        raise _Invalid(f"must be a positive number, got {value}")
    return value


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], Any]:
    def check(value: str) -> str:
        normalised = value.strip().lower()
        if normalised not in choices:
            raise _Invalid(f"expected one of {', '.join(choices)}, got {value!r}")
        return normalised

    return check


_QUOTA_OVERRIDE: Final = re.compile(
    r"^quotas_((?:bucket|collection)_.+_(?:max_bytes|max_items|max_bytes_per_item))$"
)


def _quota_overrides(values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        name, sep, limit = value.partition("=")
        if not sep or not _QUOTA_OVERRIDE.fullmatch("quotas_" + name):
            raise _Invalid(f"expected <bucket|collection>_<ids>_<limit>=<number>, got {value!r}")
        if limit and (not limit.isdigit() or not limit.isascii()):
            raise _Invalid(f"{name} must be a non-negative integer or empty, got {limit!r}")
    return values


# OpenID Connect providers (Kinto's multiauth.policy.<name>.<option>): each setting
# openid_<name>_<option> lands in openid_provider_settings as '<name>_<option>=<value>'.
OPENID_OPTIONS: Final = (
    "issuer",
    "client_id",
    "client_secret",
    "audience",
    "userid_field",
    "header_type",
    "userinfo",
    "verification_ttl_seconds",
    "state_ttl_seconds",
    "state_length",
    "allowed_scopes",
    "trusted_callback_urls",
)
_OPENID_SETTING: Final = re.compile(rf"^openid_([a-z][a-z0-9]*)_({'|'.join(OPENID_OPTIONS)})$")
# Provider names are user id prefixes: never one of another policy or of system principals.
_OPENID_RESERVED: Final = frozenset({"account", "accounts", "basicauth", "system"})


def _openid_option(option: str, value: object) -> object:
    """The typed value of one provider option (a string, int, bool or tuple of strings)."""
    if option == "userinfo":
        return _to_bool(value)
    if option in ("verification_ttl_seconds", "state_ttl_seconds"):
        return _at_least(0 if option.startswith("verification") else 1)(_to_int(value))
    if option == "state_length":
        return _between(8, 256)(_to_int(value))
    if option in ("allowed_scopes", "trusted_callback_urls"):
        return _to_strs(value)
    text = _to_str(value)
    if option == "header_type" and not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", text):
        raise _Invalid(f"expected an HTTP authentication scheme such as Bearer, got {text!r}")
    return text if option in ("client_secret", "audience") else _not_empty(text)


def _subset_of_names(values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        if not re.fullmatch(r"[a-z][a-z0-9]*", value):
            raise _Invalid(f"a provider name is lowercase letters and digits, got {value!r}")
        if value in _OPENID_RESERVED:
            raise _Invalid(f"{value!r} is reserved (the prefix of other user ids)")
    return tuple(dict.fromkeys(values))


def _openid_entry(name: str, option: str, value: object) -> str:
    typed = _openid_option(option, value)
    if isinstance(typed, bool):
        typed = "true" if typed else "false"
    elif isinstance(typed, tuple):
        typed = " ".join(typed)
    return f"{name}_{option}={typed}"


def _openid_entries(values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        key, sep, raw = value.partition("=")
        m = _OPENID_SETTING.fullmatch("openid_" + key)
        if not sep or m is None:
            raise _Invalid(f"expected <provider>_<option>=<value>, got {key!r}")
        _openid_option(m.group(2), raw)
    return values


def metric_prefix(settings: Settings) -> str:
    """The prefix of the Prometheus metrics' names, as Kinto makes it: the letters and digits
    of ``prometheus_prefix`` (or of the project name), lower-cased, then ``_``."""
    given = settings.prometheus_prefix or settings.project_name
    return "".join(c for c in given.lower() if c.isascii() and c.isalnum()) + "_"


def openid_provider_options(settings: Settings) -> dict[str, dict[str, object]]:
    """Options of each provider of ``openid_providers``, typed, in order (only those set)."""
    options: dict[str, dict[str, object]] = {name: {} for name in settings.openid_providers}
    for entry in settings.openid_provider_settings:
        key, _, raw = entry.partition("=")
        m = _OPENID_SETTING.fullmatch("openid_" + key)
        if m is not None and m.group(1) in options:
            options[m.group(1)][m.group(2)] = _openid_option(m.group(2), raw)
    return options


def _not_empty(value: str) -> str:
    if not value.strip():
        raise _Invalid("must not be empty")
    return value.strip()


def _subset_of(choices: tuple[str, ...], what: str) -> Callable[[Any], Any]:
    def check(values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            if value not in choices:
                later = " (planned, not available yet)" if value in _PLANNED else ""
                raise _Invalid(f"unknown {what} {value!r}{later}; available: {', '.join(choices)}")
        return tuple(dict.fromkeys(values))  # drop repeats, keep the order (it matters for auth)

    return check


def _mask_url(url: str) -> str:
    """Hide the password of a URL (``postgresql://u:***@h/db``) for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _backend_url(url: str) -> str:
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    examples = (
        "sqlite:///relative/path.db, sqlite:////absolute/path.db, "
        "postgresql://user:password@host:5432/dbname or memory://"
    )
    if scheme == "postgres":
        scheme = "postgresql"  # libpq's short spelling
    if not sep:
        raise _Invalid(f"expected a URL such as {examples}, got {_mask_url(url)!r}")
    if scheme in _PLANNED:
        raise _Invalid(f"{scheme}:// is not supported yet (planned); use {examples}")
    if scheme not in BACKEND_SCHEMES:
        raise _Invalid(f"unsupported backend {scheme}:// in {_mask_url(url)!r}; use {examples}")
    if scheme == "sqlite" and (not rest.startswith("/") or rest == "/"):
        raise _Invalid(f"a SQLite URL needs a file path after 'sqlite:///', got {url!r}")
    if scheme in ("postgresql", "redis") and not rest.strip("/"):
        raise _Invalid(f"a {scheme} URL needs a host, e.g. {scheme}://localhost/...")
    if scheme == "memory" and rest:
        raise _Invalid(f"memory:// takes no path, got {url!r}")
    return f"{scheme}://{rest}"


def _optional_backend_url(url: str | None) -> str | None:
    return None if url is None else _backend_url(url)


def _meta(
    help: str,
    *,
    check: Callable[[Any], Any] | None = None,
    secret: bool = False,
    url: bool = False,
) -> dict[str, Any]:
    """Field metadata: help text, the value check, and how ``repr`` must show the value."""
    return {"help": help, "check": check, "secret": secret, "url": url}


class _FrozenPrincipals(Mapping[str, tuple[str, ...]]):
    """Immutable, hashable and picklable mapping, so a frozen Settings really is frozen."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, tuple[str, ...]]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> tuple[str, ...]:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __repr__(self) -> str:
        return repr(self._data)

    def __reduce__(self) -> tuple[type[_FrozenPrincipals], tuple[dict[str, tuple[str, ...]]]]:
        return (type(self), (self._data,))


def _default_principals() -> Mapping[str, tuple[str, ...]]:
    return _FrozenPrincipals(
        {
            f"{resource}:{perm}": _DEFAULT_PRINCIPALS.get(f"{resource}:{perm}", ())
            for resource in PRINCIPAL_RESOURCES
            for perm in PRINCIPAL_PERMISSIONS
        }
    )


@dataclass(frozen=True, slots=True, repr=False)
class Settings:
    """Every knob of a Nuages server, typed, defaulted and documented.

    Build it with :meth:`load` (file + environment + overrides) or directly with keyword
    arguments; either way values are checked and a :class:`SettingsError` names each bad one.
    ``repr`` masks secrets and URL passwords, so a Settings can be logged.
    """

    # Backends
    storage_url: str = field(
        default="sqlite:///./nuages.db",
        metadata=_meta(
            "Where objects are stored: sqlite:///relative/path.db, sqlite:////absolute/path.db, "
            "postgresql://user:password@host:5432/dbname (production: many processes on one "
            "database, see docs/deployment.md), or memory:// (kept in the process, lost on "
            "restart).",
            check=_backend_url,
            url=True,
        ),
    )
    permission_url: str | None = field(
        default=None,
        metadata=_meta(
            "Where ACLs are stored (same forms as storage_url); empty means storage_url.",
            check=_optional_backend_url,
            url=True,
        ),
    )
    cache_url: str | None = field(
        default=None,
        metadata=_meta(
            "Where cached data lives, e.g. pagination tokens (same forms as storage_url, or "
            "redis://host:6379/0); empty means storage_url.",
            check=_optional_backend_url,
            url=True,
        ),
    )
    auto_index_max: int = field(
        default=32,
        metadata=_meta(
            "Most automatic indexes per SQLite or PostgreSQL database (frequent filtered or "
            "sorted listings of large collections get one, docs/architecture.md); 0 turns "
            "them off.",
            check=_at_least(0),
        ),
    )
    auto_index_min_objects: int = field(
        default=5000,
        metadata=_meta(
            "A collection gets automatic indexes once it holds this many live objects.",
            check=_at_least(1),
        ),
    )
    auto_index_hits: int = field(
        default=3,
        metadata=_meta(
            "How many times a process sees a listing shape (filters and sort) on a large "
            "collection before it builds an index for it.",
            check=_at_least(1),
        ),
    )
    sqlite_readers: int = field(
        default=4,
        metadata=_meta(
            "Number of reader connections per process for SQLite backends (one writer besides).",
            check=_at_least(1),
        ),
    )
    postgresql_pool_size: int = field(
        default=10,
        metadata=_meta(
            "Maximum number of connections per process to each PostgreSQL database (its "
            "pool). Keep processes x pool size below the server's max_connections.",
            check=_at_least(1),
        ),
    )
    postgresql_timeout: float = field(
        default=10.0,
        metadata=_meta(
            "Seconds a request waits for a PostgreSQL connection, and the longest a statement "
            "may run, before the request fails with 503 (database unavailable); also the "
            "socket timeout of a redis:// cache.",
            check=_positive_number,
        ),
    )

    # Authentication and permissions
    auth: tuple[str, ...] = field(
        default=("basicauth",),
        metadata=_meta(
            "Authentication policies, tried in order; the first that identifies the request wins "
            f"(Kinto's multiauth.policies). Available: {', '.join(AUTH_POLICIES)}.",
            check=_subset_of(AUTH_POLICIES, "auth policy"),
        ),
    )
    userid_hmac_secret: str = field(
        default="",
        metadata=_meta(
            "Key of the HMAC that turns Basic Auth credentials into user ids (basicauth:<hex>). "
            "Set a long random value in production; never shown in logs.",
            secret=True,
        ),
    )
    explicit_permissions: bool = field(
        default=True,
        metadata=_meta(
            "Give the creator of an object an explicit write permission on it; when false, access "
            "comes from parents and *_principals settings only."
        ),
    )
    principals: Mapping[str, tuple[str, ...]] = field(
        default_factory=_default_principals,
        metadata=_meta(
            "Principals granted a permission on every object of a resource type, on top of "
            "stored ACLs; one setting per <resource>_<perm>_principals."
        ),
    )
    experimental_permissions_endpoint: bool = field(
        default=False,
        metadata=_meta(
            "Serve GET /permissions, listing every object the caller has a permission on."
        ),
    )

    # Collection features: JSON-schema validation, history and quotas (docs/plugins.md)
    experimental_collection_schema_validation: bool = field(
        default=False,
        metadata=_meta(
            "Validate records against their collection's schema (and collections, groups, "
            "records against the bucket's collection:schema, group:schema, record:schema)."
        ),
    )
    history_exclude_resources: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "History plugin: URIs of buckets, collections, groups or records whose changes are "
            "not tracked (e.g. /buckets/b, /buckets/b/collections/c)."
        ),
    )
    history_exclude_user_ids: tuple[str, ...] = field(
        default=(),
        metadata=_meta("History plugin: user ids whose changes are not tracked."),
    )
    history_auto_trim_max_count: int = field(
        default=-1,
        metadata=_meta(
            "History plugin: keep only the newest N entries per bucket and resource type "
            "(per user with history_auto_trim_user_ids); -1 keeps everything.",
            check=_at_least(-1),
        ),
    )
    history_auto_trim_threshold: int = field(
        default=100,
        metadata=_meta(
            "History plugin: trim once the entries exceed history_auto_trim_max_count by this "
            "many, so that trimming is paid once per that many writes.",
            check=_at_least(0),
        ),
    )
    history_auto_trim_user_ids: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "History plugin: trim only the entries of these user ids; empty trims everyone's."
        ),
    )
    history_max_age_seconds: int | None = field(
        default=None,
        metadata=_meta(
            "History plugin: entries older than this are removed as new changes are recorded; "
            "empty keeps them forever.",
            check=_at_least(1),
        ),
    )
    quotas_bucket_max_bytes: int | None = field(
        default=None,
        metadata=_meta(
            "Quotas plugin: largest total size of a bucket (its own data, collections, groups "
            "and records, as compact JSON); empty means no limit.",
            check=_at_least(0),
        ),
    )
    quotas_bucket_max_items: int | None = field(
        default=None,
        metadata=_meta(
            "Quotas plugin: most records in a bucket; empty means no limit.", check=_at_least(0)
        ),
    )
    quotas_bucket_max_bytes_per_item: int | None = field(
        default=None,
        metadata=_meta(
            "Quotas plugin: largest size of one object of a bucket; empty means no limit.",
            check=_at_least(0),
        ),
    )
    quotas_collection_max_bytes: int | None = field(
        default=None,
        metadata=_meta(
            "Quotas plugin: largest total size of a collection (its data and its records); "
            "empty means no limit.",
            check=_at_least(0),
        ),
    )
    quotas_collection_max_items: int | None = field(
        default=None,
        metadata=_meta(
            "Quotas plugin: most records in a collection; empty means no limit.",
            check=_at_least(0),
        ),
    )
    quotas_collection_max_bytes_per_item: int | None = field(
        default=None,
        metadata=_meta(
            "Quotas plugin: largest size of one record of a collection; empty means no limit.",
            check=_at_least(0),
        ),
    )
    quotas_overrides: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "Quotas plugin: limits of one bucket or collection, as Kinto's per-bucket settings: "
            "each setting quotas_bucket_<bucket_id>_<limit>, quotas_collection_<bucket_id>_<limit> "
            "(every collection of the bucket) or quotas_collection_<bucket_id>_<collection_id>_"
            "<limit> (limit: max_bytes, max_items, max_bytes_per_item; empty value: no limit) "
            "lands here as '<name without quotas_>=<value>'.",
            check=_quota_overrides,
        ),
    )
    attachment_base_path: str = field(
        default="./attachments",
        metadata=_meta(
            "Attachment plugin: folder where attached files are stored (one sub-folder per "
            "bucket and collection).",
            check=_not_empty,
        ),
    )
    attachment_base_url: str | None = field(
        default=None,
        metadata=_meta(
            "Attachment plugin: URL prefix of attached files announced to clients; empty means "
            "this server's /v1/attachments/, which serves them."
        ),
    )
    attachment_max_size_bytes: int | None = field(
        default=None,
        metadata=_meta(
            "Attachment plugin: largest attached file, checked while it is received (400 "
            "beyond); empty means max_request_body_bytes.",
            check=_at_least(1),
        ),
    )
    attachment_folder: str = field(
        default="{bucket_id}/{collection_id}",
        metadata=_meta(
            "Attachment plugin: sub-folder of a record's files under attachment_base_path, with "
            "placeholders {bucket_id}, {collection_id}, {id} (the record's); may be empty."
        ),
    )
    attachment_keep_old_files: bool = field(
        default=False,
        metadata=_meta(
            "Attachment plugin: keep a file when its attachment is replaced or removed, or its "
            "record, collection or bucket deleted."
        ),
    )
    attachment_extensions: str = field(
        default="default",
        metadata=_meta(
            "Attachment plugin: allowed file extensions, as kinto-attachment: groups (documents, "
            "text, images, audio, video, data, scripts, archives, executables, default, any) "
            "and extensions, joined by '+' (e.g. 'images+pdf txt').",
            check=_not_empty,
        ),
    )
    attachment_mimetypes: str = field(
        default="",
        metadata=_meta(
            "Attachment plugin: MIME type recorded for some extensions, as kinto-attachment: "
            "'.ext:type;.ext:type' (.pem and .geojson have one by default)."
        ),
    )
    attachment_allowed_mimetypes: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "Attachment plugin: MIME types accepted (fnmatch patterns, e.g. image/*); empty "
            "accepts any."
        ),
    )
    attachment_gzipped: bool = field(
        default=False,
        metadata=_meta(
            "Attachment plugin: store files gzipped (a ?gzipped=true|false query parameter "
            "decides per upload), the original's metadata in the attachment's 'original'."
        ),
    )
    attachment_s3_bucket: str | None = field(
        default=None,
        metadata=_meta(
            "Attachment plugin: store files in this S3 bucket instead of attachment_base_path "
            "(needs the s3 extra: pip install nuages[s3]; credentials from the usual AWS_* "
            "variables or files)."
        ),
    )
    attachment_s3_endpoint_url: str | None = field(
        default=None,
        metadata=_meta(
            "Attachment plugin: URL of an S3-compatible service (MinIO, Ceph, ...); empty "
            "means AWS.",
            url=True,
        ),
    )
    attachment_s3_region: str | None = field(
        default=None,
        metadata=_meta("Attachment plugin: region of the S3 bucket; empty means AWS's default."),
    )

    # Plugins
    plugins: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            f"Optional features to enable (Kinto's includes). Available: {', '.join(PLUGINS)}.",
            check=_subset_of(PLUGINS, "plugin"),
        ),
    )
    flush_endpoint_enabled: bool = field(
        default=False,
        metadata=_meta(
            "Serve POST /__flush__, which deletes all data (for tests only); enabling the flush "
            "plugin does the same."
        ),
    )
    prometheus_prefix: str | None = field(
        default=None,
        metadata=_meta(
            "Prometheus plugin: the prefix of metric names, kept to its letters and digits, "
            "with an underscore added (kinto gives kinto_); empty means the project name's."
        ),
    )
    account_cache_ttl_seconds: int = field(
        default=30,
        metadata=_meta(
            "How long a verified account password is remembered (in the cache, under an HMAC "
            "of the credentials), so that requests do not pay a password hash; 0 disables it.",
            check=_at_least(0),
        ),
    )
    default_bucket_hmac_secret: str = field(
        default="",
        metadata=_meta(
            "Key of the HMAC that turns a user id into the id of its personal bucket "
            "(/buckets/default). Changing it gives every user a new, empty personal bucket.",
            secret=True,
        ),
    )
    brute_force_protection: bool = field(
        default=True,
        metadata=_meta(
            "Refuse (429 with Retry-After) account logins for a user or from an address after "
            "brute_force_max_failures wrong passwords within brute_force_window_seconds."
        ),
    )
    brute_force_max_failures: int = field(
        default=10,
        metadata=_meta(
            "Wrong passwords tolerated per user and per client address within the window.",
            check=_at_least(1),
        ),
    )
    brute_force_window_seconds: int = field(
        default=300,
        metadata=_meta(
            "Length of the sliding window in which failed logins are counted; a refused client "
            "may try again once its oldest failure leaves the window.",
            check=_at_least(1),
        ),
    )
    openid_issuer: str | None = field(
        default=None,
        metadata=_meta(
            "OpenID Connect issuer URL (exactly the tokens' iss claim) whose Bearer access "
            "tokens the openid auth policy accepts; its discovery document and JWKS are "
            "fetched from it.",
            check=_not_empty,
        ),
    )
    openid_audience: str | None = field(
        default=None,
        metadata=_meta(
            "Audience (aud claim) tokens must be issued for, usually this service's client id; "
            "required with the openid policy.",
            check=_not_empty,
        ),
    )
    openid_userid_field: str = field(
        default="sub",
        metadata=_meta(
            "Claim of the token that names the user: user ids are openid:<claim value>.",
            check=_not_empty,
        ),
    )
    openid_jwks_cache_seconds: int = field(
        default=3600,
        metadata=_meta(
            "How long each OpenID provider's discovery document and signing keys are kept "
            "before being fetched again (an unknown key id refetches them sooner).",
            check=_at_least(1),
        ),
    )
    openid_providers: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "OpenID Connect providers (Kinto's policies using OpenIDConnectPolicy), tried in "
            "this order where auth lists openid. Each is configured with settings "
            "openid_<name>_<option> (Kinto's multiauth.policy.<name>.<option>): issuer and "
            "client_id (required), client_secret, audience (when set, tokens must be JWTs of "
            "this audience), userid_field (sub), header_type (Bearer), userinfo (true: the "
            "user comes from the userinfo endpoint; false: from the JWT, needs audience), "
            "verification_ttl_seconds (86400), state_ttl_seconds (3600), state_length (32), "
            "allowed_scopes (openid email profile), trusted_callback_urls (default: "
            "http://localhost:*/* and http://127.0.0.1:*/*). User ids are <name>:<user>. "
            "Names: lowercase letters and digits.",
            check=_subset_of_names,
        ),
    )
    openid_provider_settings: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "Where the openid_<name>_<option> settings land, as '<name>_<option>=<value>' "
            "(set those instead).",
            check=_openid_entries,
            secret=True,
        ),
    )

    # Pagination and limits
    paginate_by: int | None = field(
        default=None,
        metadata=_meta(
            "Default and maximum page size of lists; empty means no default page size "
            "(storage_max_fetch_size still applies).",
            check=_at_least(1),
        ),
    )
    storage_max_fetch_size: int = field(
        default=10000,
        metadata=_meta(
            "Absolute maximum number of objects returned in one page, even without paginate_by.",
            check=_at_least(1),
        ),
    )
    pagination_token_validity_seconds: int = field(
        default=600,
        metadata=_meta(
            "How long a pagination token of a plural DELETE stays valid.", check=_at_least(1)
        ),
    )
    batch_max_requests: int = field(
        default=25,
        metadata=_meta(
            "Maximum number of requests in one POST /batch; 0 removes the limit.",
            check=_at_least(0),
        ),
    )
    max_request_body_bytes: int = field(
        default=8 * 1024 * 1024,
        metadata=_meta(
            "Largest request body accepted; bigger requests get 413.", check=_at_least(1)
        ),
    )
    max_json_depth: int = field(
        default=128,
        metadata=_meta(
            "Deepest nesting of JSON arrays and objects accepted in a request body.",
            check=_at_least(1),
        ),
    )

    # Service state announced to clients
    readonly: bool = field(
        default=False,
        metadata=_meta("Refuse every write with 405 and let clients cache the root URL."),
    )
    backoff: int | None = field(
        default=None,
        metadata=_meta(
            "Send a Backoff header with this many seconds, asking clients to slow down; empty "
            "sends none.",
            check=_at_least(0),
        ),
    )
    backoff_percentage: int | None = field(
        default=None,
        metadata=_meta(
            "Send the Backoff header on this share (0-100) of responses only; empty means all.",
            check=_between(0, 100),
        ),
    )
    retry_after_seconds: int = field(
        default=3,
        metadata=_meta(
            "Value of the Retry-After header on 503 and 409 responses.", check=_at_least(0)
        ),
    )
    eos: date | None = field(
        default=None,
        metadata=_meta(
            "End-of-service date (YYYY-MM-DD): before it responses carry a soft-eol Alert header, "
            "from that day on every request gets 410."
        ),
    )
    eos_message: str | None = field(
        default=None, metadata=_meta("Message of the end-of-service Alert header.")
    )
    eos_url: str | None = field(
        default=None,
        metadata=_meta("URL of the end-of-service Alert header; empty means project_docs."),
    )

    # CORS
    cors_origins: tuple[str, ...] = field(
        default=("*",),
        metadata=_meta(
            "Origins allowed to call the API from a browser (fnmatch patterns, e.g. "
            "https://*.example.com)."
        ),
    )
    cors_max_age_seconds: int | None = field(
        default=3600,
        metadata=_meta(
            "Access-Control-Max-Age of preflight responses; empty sends none.", check=_at_least(0)
        ),
    )

    # URLs and identity shown to clients
    project_name: str = field(
        default="nuages", metadata=_meta("Project name shown in GET /.", check=_not_empty)
    )
    project_docs: str = field(
        default="https://github.com/nuages/nuages/tree/main/docs",
        metadata=_meta("Documentation URL shown in GET / and in Alert headers."),
    )
    error_info_link: str = field(
        default="https://github.com/nuages/nuages/issues/",
        metadata=_meta("URL given as info in 500 error responses."),
    )
    http_scheme: str | None = field(
        default=None,
        metadata=_meta(
            "Force the scheme (http or https) of URLs the server writes (Next-Page, redirects); "
            "empty means the request's.",
            check=_one_of(("http", "https")),
        ),
    )
    http_host: str | None = field(
        default=None,
        metadata=_meta(
            "Force the host[:port] of URLs the server writes; empty means the request's.",
            check=_not_empty,
        ),
    )
    version_prefix_redirect_enabled: bool = field(
        default=True,
        metadata=_meta("Redirect URLs without the /v1 prefix to their prefixed form (307)."),
    )
    trailing_slash_redirect_enabled: bool = field(
        default=True,
        metadata=_meta("Redirect URLs with a trailing slash to the form without it (307)."),
    )
    trailing_slash_redirect_ttl_seconds: int = field(
        default=3600,
        metadata=_meta(
            "How long clients may cache the trailing-slash redirects, in seconds; 0 sends "
            "`Cache-Control: no-cache`, -1 sends no cache headers.",
            check=_at_least(-1),
        ),
    )
    heartbeat_timeout_seconds: float = field(
        default=10.0,
        metadata=_meta(
            "Time allowed to the health checks of GET /__heartbeat__ before they count as failed.",
            check=_positive_number,
        ),
    )
    version_json_path: str = field(
        default="version.json",
        metadata=_meta(
            "File served by GET /__version__ (relative paths start at the working directory).",
            check=_not_empty,
        ),
    )

    # Server process
    host: str = field(
        default="127.0.0.1", metadata=_meta("Address nuages serve listens on.", check=_not_empty)
    )
    port: int = field(
        default=8888, metadata=_meta("Port nuages serve listens on.", check=_between(1, 65535))
    )
    workers: int = field(
        default=1,
        metadata=_meta(
            "Number of server processes; more than one needs a shared backend (not memory://).",
            check=_at_least(1),
        ),
    )
    log_level: str = field(
        default="info",
        metadata=_meta(f"Server log level: {', '.join(LOG_LEVELS)}.", check=_one_of(LOG_LEVELS)),
    )

    def __post_init__(self) -> None:
        problems: list[str] = []
        for spec in _SPECS.values():
            if spec.principal_key is not None:
                continue
            try:
                value = spec.convert(getattr(self, spec.field_name))
            except _Invalid as exc:
                problems.append(f"{spec.name}: {exc}")
            else:
                # Frozen: normalising (list -> tuple, "INFO" -> "info") needs the escape hatch.
                object.__setattr__(self, spec.field_name, value)
        try:
            object.__setattr__(self, "principals", _normalise_principals(self.principals))
        except SettingsError as exc:
            problems.extend(exc.problems)
        if not problems:  # cross-field checks need every value converted first
            problems.extend(self._cross_field_problems())
        if problems:
            raise SettingsError(problems)

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata["secret"] and value:
                text = "'***'"
            elif f.metadata["url"] and isinstance(value, str):
                text = repr(_mask_url(value))
            else:
                text = repr(value)
            shown.append(f"{f.name}={text}")
        return f"Settings({', '.join(shown)})"

    @property
    def effective_permission_url(self) -> str:
        """``permission_url``, or ``storage_url`` when it is not set."""
        return self.permission_url or self.storage_url

    @property
    def effective_cache_url(self) -> str:
        """``cache_url``, or ``storage_url`` when it is not set."""
        return self.cache_url or self.storage_url

    @property
    def flush_enabled(self) -> bool:
        """Whether ``POST /__flush__`` is served (setting or plugin, as Kinto allowed both)."""
        return self.flush_endpoint_enabled or "flush" in self.plugins

    def principals_for(self, resource: str, perm: str) -> tuple[str, ...]:
        """Principals granted ``perm`` on every ``resource`` object by settings (06 §3).

        The resource is the one *of the request* (a record update consults
        ``record_write_principals``). Unknown pairs grant nothing: denying is the safe default.
        """
        return self.principals.get(f"{resource}:{perm}", ())

    def value_of(self, name: str) -> object:
        """The value of the setting ``name`` (its TOML key), e.g. ``bucket_create_principals``."""
        spec = _SPECS.get(name)
        if spec is None:
            raise KeyError(f"unknown setting {name!r}")
        if spec.principal_key is not None:
            return self.principals[spec.principal_key]
        return getattr(self, spec.field_name)

    def _cross_field_problems(self) -> Iterator[str]:
        urls = {
            "storage_url": self.storage_url,
            "permission_url": self.effective_permission_url,
            "cache_url": self.effective_cache_url,
        }
        in_memory = [name for name, url in urls.items() if url.startswith("memory://")]
        if self.workers > 1 and in_memory:
            # Each worker process would hold its own memory backend: clients would see data
            # appear and vanish depending on which worker answers.
            yield (
                f"workers: {self.workers} workers need shared backends, but "
                f"{', '.join(in_memory)} use memory:// (one per process); "
                "use sqlite:///... or a single worker"
            )
        for name in ("storage_url", "permission_url"):
            if urls[name].startswith("redis://"):
                yield f"{name}: redis:// can only hold the cache (cache_url)"
        both = "accounts" in self.auth and "basicauth" in self.auth
        # basicauth accepts any credentials: listed first, it would shadow every account.
        if both and self.auth.index("basicauth") < self.auth.index("accounts"):
            yield "auth: 'basicauth' must come after 'accounts' (it identifies anyone)"
        if "accounts" in self.plugins and "accounts" not in self.auth:
            yield "plugins: the accounts plugin needs the accounts auth policy (auth = accounts)"
        if "prometheus" in self.plugins and not (prefix := metric_prefix(self))[:1].isalpha():
            yield (
                f"prometheus_prefix: metric names cannot start with {prefix!r}; "
                "set a prefix that starts with a letter"
            )
        legacy = bool(self.openid_issuer and self.openid_audience)
        if "openid" in self.auth and not (legacy or self.openid_providers):
            yield (
                "auth: the openid policy needs openid_issuer and openid_audience, "
                "or openid_providers"
            )
        if self.openid_providers and "openid" not in self.auth:
            yield "openid_providers: add openid to auth to accept their tokens"
        if legacy and "openid" in self.openid_providers:
            yield "openid_providers: 'openid' is the provider of openid_issuer already"
        options = openid_provider_options(self)
        for name, given in options.items():
            for required in ("issuer", "client_id"):
                if required not in given:
                    yield f"openid_providers: provider {name!r} needs openid_{name}_{required}"
            if given.get("userinfo") is False and not given.get("audience"):
                yield f"openid_{name}_userinfo: false needs openid_{name}_audience"
        for entry in self.openid_provider_settings:
            m = _OPENID_SETTING.fullmatch("openid_" + entry.partition("=")[0])
            if m is not None and m.group(1) not in options:
                yield f"openid_{m.group(1)}_*: {m.group(1)!r} is not in openid_providers"

    @classmethod
    def load(
        cls,
        config_file: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: object,
    ) -> Settings:
        """Build Settings: defaults < TOML ``config_file`` < ``NUAGES_*`` ``env`` < ``overrides``.

        ``env`` defaults to :data:`os.environ`; when ``config_file`` is None, ``NUAGES_CONFIG``
        in ``env`` names the file. Overrides use setting names (``port=80``,
        ``bucket_create_principals=["account:admin"]``) and take typed values or strings.
        Raises :class:`SettingsError` listing every unknown setting and invalid value.
        """
        env = os.environ if env is None else env
        problems: list[str] = []
        values: dict[str, object] = {}  # setting name -> typed value; later sources win

        if config_file is None and env.get(CONFIG_ENV_VAR):
            config_file = env[CONFIG_ENV_VAR]
            file_items = _read_toml(Path(config_file), f"{CONFIG_ENV_VAR}={config_file}")
        elif config_file is not None:
            file_items = _read_toml(Path(config_file), str(config_file))
        else:
            file_items = {}
        for key, raw in file_items.items():
            _take(values, problems, key, raw, label=f"{config_file}: ")

        for var, raw in env.items():
            if (
                var.startswith(ENV_PREFIX)
                and var not in _RESERVED_ENV_VARS
                and not var.startswith(_RESERVED_ENV_PREFIX)
            ):
                name = var[len(ENV_PREFIX) :].lower()
                _take(values, problems, name, raw, label="", env_var=var)

        for name, raw in overrides.items():
            if name == "principals":
                # The dataclass spelling: {"bucket:create": [...]} names only what changes.
                if not isinstance(raw, Mapping):
                    problems.append("principals: expected a mapping like {'bucket:create': [...]}")
                    continue
                for key, principals in raw.items():
                    flat = str(key).replace(":", "_") + "_principals"
                    _take(values, problems, flat, principals, label="principals: ")
            else:
                _take(values, problems, name, raw, label="")

        if problems:
            raise SettingsError(problems)
        return cls(**_to_field_values(values))

    @classmethod
    def documented(cls) -> Iterator[SettingDoc]:
        """Every setting (principal families expanded) with its env var, type, default and help."""
        return iter_settings()


def _normalise_principals(given: Mapping[str, Iterable[str]]) -> Mapping[str, tuple[str, ...]]:
    """Complete ``given`` with defaults and check each key is a known ``resource:perm`` pair."""
    if not isinstance(given, Mapping):
        raise SettingsError(f"principals: expected a mapping, got {given!r}")
    merged = dict(_default_principals())
    problems = []
    for key, principals in given.items():
        spec = _PRINCIPAL_SPECS.get(key)
        if spec is None:
            problems.append(
                f"principals: unknown key {key!r}; expected <resource>:<perm> with resource in "
                f"{', '.join(PRINCIPAL_RESOURCES)} and perm in {', '.join(PRINCIPAL_PERMISSIONS)}"
            )
            continue
        try:
            merged[key] = typing.cast(tuple[str, ...], spec.convert(principals))
        except _Invalid as exc:
            problems.append(f"{spec.name}: {exc}")
    if problems:
        raise SettingsError(problems)
    return _FrozenPrincipals(merged)


# --- specs: what each setting is, derived once from the dataclass -----------------------------

_TYPE_NAMES: Final = {
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "strs": "list of strings",
    "date": "date (YYYY-MM-DD)",
}


@dataclass(frozen=True, slots=True)
class _Spec:
    name: str  # setting name: TOML key and, upper-cased, env var suffix
    field_name: str
    principal_key: str | None  # "bucket:create" for the *_principals family
    kind: str  # a key of _TYPE_NAMES
    optional: bool
    default: object
    help: str
    check: Callable[[Any], Any] | None
    secret: bool

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def type_name(self) -> str:
        base = _TYPE_NAMES[self.kind]
        return f"{base} (optional)" if self.optional else base

    def convert(self, value: object) -> object:
        """Turn a string (env, TOML, flag) or a native value into this setting's type."""
        if self.optional and (value is None or (isinstance(value, str) and not value.strip())):
            return None  # TOML has no null: the empty string stands for "unset" everywhere
        typed = _CONVERTERS[self.kind](value)
        return typed if self.check is None else self.check(typed)


def _describe(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _to_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise _Invalid(f"expected a boolean (true/false, yes/no, on/off, 1/0), got {_describe(value)}")


def _to_int(value: object) -> int:
    # bool is an int subclass: "paginate_by = true" is a mistake, not 1.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise _Invalid(f"expected an integer, got {_describe(value)}")


def _to_float(value: object) -> float:
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value.strip())
    if number is None or not math.isfinite(number):
        raise _Invalid(f"expected a number, got {_describe(value)}")
    return number


def _to_str(value: object) -> str:
    if isinstance(value, str):
        return value
    raise _Invalid(f"expected a string, got {_describe(value)}")


def _to_strs(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(item for item in _LIST_SEPARATORS.split(value) if item)
    if isinstance(value, list | tuple):
        items = []
        for item in value:
            if not isinstance(item, str) or not item.strip():
                raise _Invalid(f"expected a list of non-empty strings, got {value!r}")
            items.append(item.strip())
        return tuple(items)
    raise _Invalid(f"expected a list of strings, got {_describe(value)}")


def _to_date(value: object) -> date:
    # datetime is a date subclass, and TOML has both: a time of day here would be ignored.
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise _Invalid(f"expected a date as YYYY-MM-DD, got {_describe(value)}")


_CONVERTERS: Final[Mapping[str, Callable[[object], object]]] = {
    "bool": _to_bool,
    "int": _to_int,
    "float": _to_float,
    "str": _to_str,
    "strs": _to_strs,
    "date": _to_date,
}


def _kind_of(hint: object) -> tuple[str, bool]:
    optional = False
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        members = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        optional = len(members) < len(typing.get_args(hint))
        (hint,) = members
    kinds: dict[object, str] = {
        bool: "bool",
        int: "int",
        float: "float",
        str: "str",
        date: "date",
        tuple[str, ...]: "strs",
    }
    return kinds[hint], optional


def _build_specs() -> dict[str, _Spec]:
    hints = typing.get_type_hints(Settings)
    specs: dict[str, _Spec] = {}
    for f in fields(Settings):
        if f.name == "principals":
            for resource in PRINCIPAL_RESOURCES:
                for perm in PRINCIPAL_PERMISSIONS:
                    key = f"{resource}:{perm}"
                    target = (
                        "the /permissions endpoint"
                        if resource == "permissions"
                        else (f"every {resource}")
                    )
                    specs[f"{resource}_{perm}_principals"] = _Spec(
                        name=f"{resource}_{perm}_principals",
                        field_name=f.name,
                        principal_key=key,
                        kind="strs",
                        optional=False,
                        default=_DEFAULT_PRINCIPALS.get(key, ()),
                        help=f"Principals granted {perm} on {target}, on top of stored ACLs.",
                        check=None,
                        secret=False,
                    )
            continue
        kind, optional = _kind_of(hints[f.name])
        specs[f.name] = _Spec(
            name=f.name,
            field_name=f.name,
            principal_key=None,
            kind=kind,
            optional=optional,
            default=f.default,
            help=f.metadata["help"],
            check=f.metadata["check"],
            secret=f.metadata["secret"],
        )
    return specs


_SPECS: Final = _build_specs()
_PRINCIPAL_SPECS: Final = {s.principal_key: s for s in _SPECS.values() if s.principal_key}


# --- loading -----------------------------------------------------------------------------------


def _read_toml(path: Path, label: str) -> dict[str, object]:
    try:
        with path.open("rb") as file:
            data: dict[str, object] = tomllib.load(file)
    except FileNotFoundError:
        raise SettingsError(f"{label}: config file not found") from None
    except OSError as exc:
        raise SettingsError(f"{label}: cannot read config file: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{label}: invalid TOML: {exc}") from exc
    table = data.pop("nuages", None)
    if table is None:
        return data
    if not isinstance(table, dict):
        raise SettingsError(f"{label}: 'nuages' must be a table ([nuages]) of settings")
    both = sorted(set(data) & set(table))
    if both:
        raise SettingsError(f"{label}: {', '.join(both)} set both at the top level and in [nuages]")
    return {**data, **table}


def _take(
    values: dict[str, object],
    problems: list[str],
    name: str,
    raw: object,
    *,
    label: str,
    env_var: str | None = None,
) -> None:
    """Convert one raw value into ``values[name]``, or append a problem naming the setting."""
    spec = _SPECS.get(name)
    shown = env_var or repr(name)
    provider = _OPENID_SETTING.fullmatch(name) if spec is None else None
    if provider is not None:
        # A provider option (Kinto's multiauth.policy.<name>.<option>).
        try:
            entry = _openid_entry(provider.group(1), provider.group(2), raw)
        except _Invalid as exc:
            problems.append(f"{label}{env_var or name}: {exc}")
            return
        kept = [
            e
            for e in typing.cast(Any, values.get("openid_provider_settings", ()))
            if e.partition("=")[0] != entry.partition("=")[0]
        ]
        values["openid_provider_settings"] = (*kept, entry)
        return
    override = _QUOTA_OVERRIDE.fullmatch(name) if spec is None else None
    if override is not None:
        # A per-bucket/collection quota (Kinto's quotas.bucket_<bid>_max_bytes...).
        try:
            limit = _SPECS["quotas_bucket_max_bytes"].convert(raw)
        except _Invalid as exc:
            problems.append(f"{label}{env_var or name}: {exc}")
            return
        entry = f"{override.group(1)}={'' if limit is None else limit}"
        values["quotas_overrides"] = (*typing.cast(Any, values.get("quotas_overrides", ())), entry)
        return
    if spec is None:
        # Compare bare names: the shared NUAGES_ prefix would make any name look close.
        close = difflib.get_close_matches(name, _SPECS, n=1)
        hint = ""
        if close:
            hint = f" (did you mean {_SPECS[close[0]].env_var if env_var else repr(close[0])}?)"
        problems.append(f"{label}unknown setting {shown}{hint}")
        return
    try:
        values[name] = spec.convert(raw)
    except _Invalid as exc:
        problems.append(f"{label}{env_var or name}: {exc}")


def _to_field_values(values: Mapping[str, object]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    principals: dict[str, object] = {}
    for name, value in values.items():
        spec = _SPECS[name]
        if spec.principal_key is not None:
            principals[spec.principal_key] = value
        else:
            kwargs[name] = value
    if principals:
        kwargs["principals"] = principals
    return kwargs


# --- documentation -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SettingDoc:
    """One setting as documented: ``docs/settings.md`` and ``nuages settings`` come from these."""

    name: str
    env_var: str
    type: str
    default: object
    help: str
    secret: bool = False

    @property
    def toml_key(self) -> str:
        """The key in the TOML file (top level or in ``[nuages]``)."""
        return self.name

    @property
    def default_text(self) -> str:
        """The default written as in a TOML file, or ``(unset)`` for None."""
        return format_value(self.default)


def format_value(value: object) -> str:
    """Write a setting value as a TOML literal (``"x"``, ``25``, ``true``, ``["a", "b"]``)."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(format_value(item) for item in value) + "]"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def iter_settings() -> Iterator[SettingDoc]:
    """Yield the documentation of every setting, in declaration order."""
    for spec in _SPECS.values():
        yield SettingDoc(
            name=spec.name,
            env_var=spec.env_var,
            type=spec.type_name,
            default=spec.default,
            help=spec.help,
            secret=spec.secret,
        )
