"""OpenID Connect: Bearer access tokens of configured providers, login flow (protocol/10 §6).

Each provider is an auth policy named after it, as Kinto's ``OpenIDConnectPolicy`` instances
are, and identifies a request as ``<name>:<user>``. Providers are configured with settings
``openid_<name>_<option>`` (Kinto's ``multiauth.policy.<name>.<option>``) and listed, in
the order they are tried, in ``openid_providers``; the older ``openid_issuer`` and
``openid_audience`` settings configure one more provider, named ``openid``, tried first.
See docs/accounts.md.

Verifying ``Authorization: <header_type> <token>`` (Kinto's rules):

* with an ``audience``, the token must be a JWT signed by one of the provider's keys (its
  JWKS, found through the discovery document) with an asymmetric algorithm (``none`` and
  HMAC are refused: a public key must never serve as an HMAC secret), naming the issuer
  (``iss``) and the audience (``aud``), not expired (``exp`` required, ``nbf``/``iat``
  honoured, 30 s of clock skew);
* with ``userinfo`` (the default, as Kinto), the token is then sent to the provider's
  userinfo endpoint, whose answer is the user's profile; without it the JWT claims are;
* the user is the profile's ``userid_field`` (``sub`` by default). ``GET /v1/`` shows the
  profile as ``user.profile``.

A verified token is remembered in the cache, under an HMAC of the token, for
``verification_ttl_seconds`` (never beyond the JWT's ``exp``), so that a request does not
pay a round trip to the provider. Unlike Kinto, a cache hit does not extend that time.
A JWT naming another issuer is never sent to this provider's userinfo endpoint. Discovery
and keys are fetched at startup and kept ``openid_jwks_cache_seconds``; a token signed with
an unknown key id triggers one early refetch (key rotation), at most every
:data:`REFETCH_INTERVAL` seconds per provider, so bogus key ids cannot make the server
hammer the provider. When a provider cannot be reached, its tokens identify nobody (and
the login endpoints answer 503). Tokens, codes and states are never logged.

Endpoints, as Kinto's:

* ``GET /v1/openid/<name>/login?callback=<URL>&scope=<scopes>[&prompt=none]`` → 307 to the
  provider's authorization endpoint, with a random ``state`` remembered in the cache
  (``state_ttl_seconds``) with the callback. The callback must match one of
  ``trusted_callback_urls`` (``*`` wildcards; ambiguous URLs never match), the scopes be
  within ``allowed_scopes``.
* ``GET /v1/openid/<name>/token?code=…&state=…`` → trades the code at the token endpoint
  and redirects (307) to ``callback + urlquote(base64(<token endpoint answer>))``. A state
  is used once (atomic :meth:`~nuages.cache.protocol.Cache.pop`) and only with the provider
  it was issued for. ``?error=…&state=…`` (the provider refused) redirects to
  ``callback + urlencode(error, error_description)``.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import hashlib
import hmac
import json
import logging
import re
import secrets
import string
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import jwt

from nuages.core.errors import BackendError, ErrorDetail, ValidationError
from nuages.settings import openid_provider_options
from nuages.web.errors import INVALID_PARAMETERS, envelope
from nuages.web.messages import WebResponse

if TYPE_CHECKING:
    from nuages.cache.protocol import Cache
    from nuages.core.service import Tx
    from nuages.settings import Settings
    from nuages.web.dispatch import Dispatcher
    from nuages.web.messages import WebRequest

__all__ = ["OpenIDPolicy", "ProviderConfig", "install_policies", "is_trusted_callback"]

log = logging.getLogger("nuages.openid")

ALGORITHMS: Final = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "EdDSA",
)
LEEWAY_SECONDS: Final = 30
REFETCH_INTERVAL: Final = 10.0
FETCH_TIMEOUT_SECONDS: Final = 5.0
MAX_DOCUMENT_BYTES: Final = 1024 * 1024
MAX_TOKEN_LENGTH: Final = 16 * 1024
MAX_STATE_LENGTH: Final = 1024
INVALID_AUTH_TOKEN: Final = 105  # errno of an unknown state (Kinto's INVALID_AUTH_TOKEN)
CAPABILITY: Final = {
    "description": "OpenID connect support.",
    "url": "http://kinto.readthedocs.io/en/stable/api/1.x/authentication.html",
}
DEFAULT_TRUSTED_CALLBACK_URLS: Final = ("http://localhost:*/*", "http://127.0.0.1:*/*")
DEFAULT_ALLOWED_SCOPES: Final = ("openid", "email", "profile")

# The profile of the user identified by an OpenID policy in this request (user.profile).
_PROFILE: contextvars.ContextVar[tuple[str, dict[str, Any]] | None] = contextvars.ContextVar(
    "nuages_openid_profile", default=None
)


@dataclass(frozen=True, slots=True, repr=False)
class ProviderConfig:
    """One provider's settings (Kinto's ``multiauth.policy.<name>.*``)."""

    name: str
    issuer: str
    client_id: str
    client_secret: str = ""
    audience: str = ""
    userid_field: str = "sub"
    header_type: str = "Bearer"
    userinfo: bool = True
    verification_ttl_seconds: int = 86400
    state_ttl_seconds: int = 3600
    state_length: int = 32
    allowed_scopes: tuple[str, ...] = DEFAULT_ALLOWED_SCOPES
    trusted_callback_urls: tuple[str, ...] = DEFAULT_TRUSTED_CALLBACK_URLS
    jwks_cache_seconds: int = 3600

    def __repr__(self) -> str:  # the client secret stays out of logs
        return f"ProviderConfig(name={self.name!r}, issuer={self.issuer!r})"


def provider_configs(settings: Settings) -> list[ProviderConfig]:
    """The configured providers, in the order they are tried."""
    configs = []
    if settings.openid_issuer and settings.openid_audience:
        # The single-issuer settings: JWT access tokens verified locally, no userinfo call.
        configs.append(
            ProviderConfig(
                name="openid",
                issuer=settings.openid_issuer,
                client_id=settings.openid_audience,
                audience=settings.openid_audience,
                userid_field=settings.openid_userid_field,
                userinfo=False,
                jwks_cache_seconds=settings.openid_jwks_cache_seconds,
            )
        )
    for name, options in openid_provider_options(settings).items():
        values: dict[str, Any] = {k: v for k, v in options.items()}
        if not values.get("trusted_callback_urls"):
            values.pop("trusted_callback_urls", None)
        configs.append(
            ProviderConfig(
                name=name, jwks_cache_seconds=settings.openid_jwks_cache_seconds, **values
            )
        )
    return configs


# --- HTTP to the provider (blocking: run in a thread) -----------------------------------------


def _read_json(response: Any) -> Any:
    return json.loads(response.read(MAX_DOCUMENT_BYTES))


def _fetch_json(url: str, token: str | None = None) -> Any:
    """GET a JSON document; HTTP errors raise."""
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_SECONDS) as response:
        return _read_json(response)


def _post_form(url: str, data: dict[str, str]) -> bytes:
    """POST a form; the answer's body whatever its status (Kinto forwards it as is)."""
    body = urllib.parse.urlencode(data).encode()
    request = urllib.request.Request(
        url,
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_SECONDS) as response:
            return bytes(response.read(MAX_DOCUMENT_BYTES))
    except urllib.error.HTTPError as exc:
        return bytes(exc.read(MAX_DOCUMENT_BYTES))


def _load(config: ProviderConfig) -> tuple[dict[str, Any], dict[str, jwt.PyJWK]]:
    """The discovery document and, for JWT checks, the signing keys by key id."""
    url = config.issuer.rstrip("/") + "/.well-known/openid-configuration"
    discovery = _fetch_json(url)
    if not isinstance(discovery, dict):
        raise ValueError("the discovery document is not a JSON object")
    if str(discovery.get("issuer", "")).rstrip("/") != config.issuer.rstrip("/"):
        raise ValueError("the discovery document names another issuer")
    keys: dict[str, jwt.PyJWK] = {}
    if config.audience:
        jwks = _fetch_json(str(discovery["jwks_uri"]))
        keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.key_id}
    return discovery, keys


# --- callback URLs ----------------------------------------------------------------------------

_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}
_HOST_CHARS: Final = frozenset(string.ascii_lowercase + string.digits + ".-*")
_IPV6_CHARS: Final = frozenset(string.hexdigits.lower() + ":.")
_PORT_CHARS: Final = frozenset(string.digits + "*")


def _url_parts(url: str) -> tuple[str, str, str, str]:
    """(scheme, host, port, rest) of an http(s) URL, normalised for comparison.

    Raises ``ValueError`` for anything a browser might read differently than
    ``urlsplit``: spaces or control characters, user info, odd host or port characters,
    dot segments (also encoded or with backslashes).
    """
    if not url or any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError("spaces or control characters")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or "@" in parts.netloc:
        raise ValueError("scheme or user info")
    host = parts.hostname or ""
    bracketed = parts.netloc.startswith("[")
    if not host or not set(host) <= (_IPV6_CHARS if bracketed else _HOST_CHARS):
        raise ValueError("host")
    after_host = parts.netloc.rsplit("]", 1)[-1] if bracketed else parts.netloc
    _, _, port = after_host.partition(":")
    if not set(port) <= _PORT_CHARS:
        raise ValueError("port")
    path = parts.path.lower().replace("%2e", ".").replace("\\", "/")
    if any(segment in (".", "..") for segment in path.split("/")):
        raise ValueError("dot segments")
    rest = url[len(parts.scheme) + 3 + len(parts.netloc) :] or "/"
    return parts.scheme, host, port or _DEFAULT_PORTS[parts.scheme], rest


def _wildcard(pattern: str) -> re.Pattern[str]:
    """``*`` matches anything; every other character only itself."""
    return re.compile(".*".join(re.escape(piece) for piece in pattern.split("*")), re.DOTALL)


def is_trusted_callback(callback: str, patterns: tuple[str, ...]) -> bool:
    """Whether `callback` matches a pattern (scheme exactly; host, port, rest with ``*``)."""
    try:
        scheme, host, port, rest = _url_parts(callback)
    except ValueError:
        return False
    for pattern in patterns:
        try:
            p_scheme, p_host, p_port, p_rest = _url_parts(pattern)
        except ValueError:
            continue
        if (
            scheme == p_scheme
            and _wildcard(p_host).fullmatch(host)
            and _wildcard(p_port).fullmatch(port)
            and _wildcard(p_rest).fullmatch(rest)
        ):
            return True
    return False


def _is_url(value: str) -> bool:
    """Colander's ``url`` check, roughly: a scheme and a host."""
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError:
        return False
    return bool(parts.scheme and parts.netloc) and len(value) <= 2048


# --- the policy -------------------------------------------------------------------------------


class OpenIDPolicy:
    """Access tokens of one provider: ``<name>:<user>``."""

    def __init__(self, config: ProviderConfig, cache: Cache, secret: str) -> None:
        self.config = config
        self.name = config.name
        self.challenge = f'{config.header_type} realm="Realm"'
        self._cache = cache
        self._secret = secret.encode()
        self._discovery: dict[str, Any] | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._forced_at = float("-inf")
        self._lock = asyncio.Lock()

    # -- discovery and keys -----------------------------------------------------------------------
    def prefetch(self) -> None:
        """Fetch discovery and keys now (startup, as Kinto); on failure, later on demand."""
        self._attempted_at = time.monotonic()
        try:
            self._store(*_load(self.config))
        except Exception as exc:  # network, JSON, key formats: all mean "not now"
            log.warning("cannot load OpenID provider %s (%s): %s", self.name, self.issuer, exc)

    @property
    def issuer(self) -> str:
        return self.config.issuer

    def _store(self, discovery: dict[str, Any], keys: dict[str, jwt.PyJWK]) -> None:
        self._discovery, self._keys = discovery, keys
        self._fetched_at = time.monotonic()

    async def _refresh(self, *, force: bool) -> None:
        """Fetch discovery and keys if stale (or, with `force`, if not fetched just now)."""
        async with self._lock:
            now = time.monotonic()
            fresh = now - self._fetched_at < self.config.jwks_cache_seconds
            if fresh and (not force or now - self._forced_at < REFETCH_INTERVAL):
                return
            if not fresh and now - self._attempted_at < REFETCH_INTERVAL:
                return  # the provider failed a moment ago: do not retry on every request
            self._attempted_at = now
            if force:
                self._forced_at = now
            try:
                self._store(*await asyncio.to_thread(_load, self.config))
            except Exception as exc:
                log.warning("cannot load OpenID provider %s (%s): %s", self.name, self.issuer, exc)

    async def discovery(self) -> dict[str, Any]:
        """The discovery document; :class:`BackendError` (503) when it cannot be had."""
        await self._refresh(force=False)
        if self._discovery is None:
            raise BackendError(f"OpenID provider {self.name} unreachable")
        return self._discovery

    async def _key(self, kid: str) -> jwt.PyJWK | None:
        await self._refresh(force=False)
        if kid not in self._keys:
            await self._refresh(force=True)  # a rotated key: look again, rate-limited
        return self._keys.get(kid)

    def provider_info(self) -> dict[str, Any]:
        """This provider in the ``openid`` capability (protocol/09 §1)."""
        discovery = self._discovery or {}
        return {
            "name": self.name,
            "issuer": discovery.get("issuer", self.issuer),
            "auth_path": f"/openid/{self.name}/login",
            "client_id": self.config.client_id,
            "audience": self.config.audience,
            "header_type": self.config.header_type,
            "userinfo_endpoint": discovery.get("userinfo_endpoint"),
        }

    # -- verification -----------------------------------------------------------------------------
    def _token(self, req: WebRequest) -> str | None:
        header = req.headers.get("authorization")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != self.config.header_type.lower() or not token:
            return None
        if len(token) > MAX_TOKEN_LENGTH or not token.isascii() or not token.isprintable():
            return None
        return token

    async def _decode(self, token: str) -> dict[str, Any] | None:
        """The claims of a valid JWT access token of this provider, or None."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        kid, algorithm = header.get("kid"), header.get("alg")
        if not isinstance(kid, str) or algorithm not in ALGORITHMS:
            return None
        key = await self._key(kid)
        if key is None:
            return None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=self.config.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        return claims

    async def _userinfo(self, token: str) -> dict[str, Any] | None:
        try:
            endpoint = (await self.discovery())["userinfo_endpoint"]
            profile = await asyncio.to_thread(_fetch_json, str(endpoint), token)
        except Exception as exc:  # refused, unreachable, not JSON: not verified
            log.debug("no user profile from OpenID provider %s: %s", self.name, type(exc).__name__)
            return None
        return profile if isinstance(profile, dict) else None

    def _other_issuer(self, token: str) -> bool:
        """Whether the token is a JWT that names another issuer (not worth sending anywhere)."""
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return False
        issuer = claims.get("iss") if isinstance(claims, dict) else None
        return issuer is not None and issuer != self.issuer

    async def _verify(self, token: str) -> tuple[dict[str, Any], float] | None:
        """(profile, seconds it may be remembered) of a valid token, or None."""
        claims = None
        if self.config.audience:
            claims = await self._decode(token)
            if claims is None:
                return None
        elif self._other_issuer(token):
            return None
        profile = await self._userinfo(token) if self.config.userinfo else claims
        if profile is None:
            return None
        ttl = float(self.config.verification_ttl_seconds)
        if claims is not None and isinstance(claims.get("exp"), int | float):
            ttl = min(ttl, claims["exp"] + LEEWAY_SECONDS - time.time())
        return profile, ttl

    def _cache_key(self, token: str) -> str:
        c = self.config
        message = f"{c.name}:{c.issuer}:{c.client_id}:{c.audience}:{token}".encode()
        return "openid:verify:" + hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    async def identify(self, req: WebRequest, tx: Tx | None) -> str | None:
        token = self._token(req)
        if token is None:
            return None
        key = self._cache_key(token)
        cached = await self._cache.get(key)
        if isinstance(cached, dict) and isinstance(cached.get("profile"), dict):
            profile: dict[str, Any] = cached["profile"]
        else:
            verified = await self._verify(token)
            if verified is None:
                return None
            profile, ttl = verified
            if ttl > 0:
                await self._cache.set(key, {"profile": profile}, ttl)
        user = profile.get(self.config.userid_field)
        if isinstance(user, int) and not isinstance(user, bool):
            user = str(user)
        if not isinstance(user, str) or not user:
            return None
        user_id = f"{self.name}:{user}"
        _PROFILE.set((user_id, profile))
        return user_id


def _user_profile(user_id: str) -> dict[str, Any]:
    """``user.profile`` in ``GET /v1/``: the profile of the user this request identified."""
    current = _PROFILE.get()
    if current is None or current[0] != user_id:
        return {}
    return {"profile": current[1]}


# --- login endpoints --------------------------------------------------------------------------


def _invalid(details: list[ErrorDetail]) -> ValidationError:
    return ValidationError("", details=details)


def _query(req: WebRequest) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, value in req.query:
        values.setdefault(name, value)
    return values


class _Endpoints:
    def __init__(self, dispatcher: Dispatcher, policies: dict[str, OpenIDPolicy]) -> None:
        self._d = dispatcher
        self._policies = policies
        self._cache = dispatcher.service.cache

    def _provider(self, params: dict[str, str], details: list[ErrorDetail]) -> OpenIDPolicy | None:
        policy = self._policies.get(params["provider"])
        if policy is None:
            details.append(
                ErrorDetail("path", "provider", f"Unknown provider {params['provider']!r}")
            )
        return policy

    def _token_url(self, req: WebRequest, name: str) -> str:
        return f"{self._d.base_url(req)}{self._d.prefix}/openid/{urllib.parse.quote(name)}/token"

    async def login(self, req: WebRequest, params: dict[str, str], tx: Any) -> WebResponse:
        query = _query(req)
        details: list[ErrorDetail] = []
        callback = query.get("callback", "").strip()
        scope = query.get("scope")
        prompt = query.get("prompt")
        if "callback" not in query:
            details.append(ErrorDetail("querystring", "callback", "Required"))
        elif not _is_url(callback):
            details.append(ErrorDetail("querystring", "callback", "Must be a URL"))
        if scope is None:
            details.append(ErrorDetail("querystring", "scope", "Required"))
        if prompt is not None and prompt != "none":
            details.append(
                ErrorDetail("querystring", "prompt", "String does not match expected pattern")
            )
        policy = self._provider(params, details)
        if details or policy is None or scope is None:
            raise _invalid(details)
        config = policy.config
        scopes = scope.split()
        unknown = sorted(set(scopes) - set(config.allowed_scopes))
        if unknown:
            raise ValidationError(
                f"Scopes not allowed: {', '.join(unknown)}", location="querystring", name="scope"
            )
        if not is_trusted_callback(callback, config.trusted_callback_urls):
            raise ValidationError("Untrusted callback URL", location="querystring", name="callback")
        if config.userid_field == "email" and "email" not in scopes:
            raise ValidationError(
                f"Provider {policy.name} requires 'email' scope",
                location="querystring",
                name="scope",
            )
        endpoint = str((await policy.discovery())["authorization_endpoint"])
        state = secrets.token_hex(config.state_length)
        await self._cache.set(
            "openid:state:" + state,
            {"provider": policy.name, "callback": callback},
            config.state_ttl_seconds,
        )
        query_params = {
            "client_id": config.client_id,
            "response_type": "code",
            "scope": scope,
            "redirect_uri": self._token_url(req, policy.name),
            "state": state,
        }
        if prompt:
            query_params["prompt"] = prompt
        if config.audience:
            query_params["audience"] = config.audience
        separator = "&" if "?" in endpoint else "?"
        location = f"{endpoint}{separator}{urllib.parse.urlencode(query_params)}"
        return WebResponse(307, None, {"Location": location, "Cache-Control": "no-store"})

    async def token(self, req: WebRequest, params: dict[str, str], tx: Any) -> WebResponse:
        query = _query(req)
        details: list[ErrorDetail] = []
        state = query.get("state")
        if state is None:
            details.append(ErrorDetail("querystring", "state", "Required"))
        if ("code" in query) == ("error" in query):
            details.append(
                ErrorDetail(
                    "querystring",
                    None,
                    "Provide either 'state' and 'code', or 'error' and 'error_description', "
                    "but not both.",
                )
            )
        policy = self._provider(params, details)
        if details or policy is None or state is None:
            raise _invalid(details)
        entry = None
        if len(state) <= MAX_STATE_LENGTH:
            entry = await self._cache.pop("openid:state:" + state)  # usable once
        if not isinstance(entry, dict) or entry.get("provider") != policy.name:
            return _invalid_state()
        callback = str(entry["callback"])
        if "error" in query:
            # The provider refused (e.g. access_denied): tell the client, do not trade.
            forwarded = {"error": query["error"]}
            if query.get("error_description"):
                forwarded["error_description"] = query["error_description"]
            location = callback + urllib.parse.urlencode(forwarded)
            return WebResponse(307, None, {"Location": location, "Cache-Control": "no-store"})
        endpoint = str((await policy.discovery())["token_endpoint"])
        form = {
            "code": query["code"],
            "client_id": policy.config.client_id,
            "client_secret": policy.config.client_secret,
            "redirect_uri": self._token_url(req, policy.name),
            "grant_type": "authorization_code",
        }
        try:
            answer = await asyncio.to_thread(_post_form, endpoint, form)
        except Exception as exc:  # unreachable: nothing to forward
            log.warning(
                "cannot reach the token endpoint of %s: %s", policy.name, type(exc).__name__
            )
            raise BackendError(f"OpenID provider {policy.name} unreachable") from None
        encoded = urllib.parse.quote(base64.b64encode(answer).decode())
        return WebResponse(307, None, {"Location": callback + encoded, "Cache-Control": "no-store"})


def _invalid_state() -> WebResponse:
    detail = {
        "location": "querystring",
        "name": "state",
        "description": "Invalid state",
        "errno": INVALID_AUTH_TOKEN,
    }
    body = envelope(
        400,
        INVALID_PARAMETERS,
        error="Invalid parameters",
        message="state in querystring: Invalid state",
        details=[detail],
    )
    return WebResponse(400, body)


def install_policies(dispatcher: Dispatcher) -> list[OpenIDPolicy]:
    """One policy per configured provider, the login endpoints, the ``openid`` capability
    and ``user.profile`` in ``GET /v1/``."""
    settings = dispatcher.settings
    # Without a configured secret, a random one per process (see accounts.py).
    secret = settings.userid_hmac_secret or secrets.token_hex(32)
    policies = [
        OpenIDPolicy(config, dispatcher.service.cache, secret)
        for config in provider_configs(settings)
    ]
    for policy in policies:
        policy.prefetch()
    endpoints = _Endpoints(dispatcher, {p.name: p for p in policies})
    dispatcher.add("openid-login", "/openid/{provider}/login", ("GET",), endpoints.login)
    dispatcher.add("openid-token", "/openid/{provider}/token", ("GET",), endpoints.token)

    def capability(api_url: str) -> dict[str, Any]:
        return {**CAPABILITY, "providers": [p.provider_info() for p in policies]}

    dispatcher.capabilities["openid"] = capability
    dispatcher.user_info.append(_user_profile)
    return policies
