"""OpenID Connect: Bearer access tokens (JWT) verified against one issuer (protocol/10 §6).

The ``openid`` auth policy accepts ``Authorization: Bearer <token>`` when the token is a
JWT that:

* is signed by one of the issuer's keys — its JWKS, found through the discovery document
  ``<issuer>/.well-known/openid-configuration`` — with an asymmetric algorithm (``none``
  and HMAC algorithms are refused: a public key must never serve as an HMAC secret);
* names the configured issuer (``iss``, also checked in the discovery document), the
  configured audience (``aud``), and is not expired (``exp`` required, ``nbf``/``iat``
  honoured, 30 s of clock skew allowed);
* carries the user claim (``openid_userid_field``, ``sub`` by default) as a string.

The user id is ``openid:<claim value>``. Anything else leaves the request anonymous (401
where authentication is needed, with a ``Bearer`` challenge). The signature is checked
locally: no request to the issuer per token. Discovery and keys are cached for
``openid_jwks_cache_seconds``; a token signed with an unknown key id triggers one early
refetch (key rotation), at most every :data:`REFETCH_INTERVAL` seconds, so bogus key ids
cannot make the server hammer the issuer. When the issuer cannot be reached, tokens simply
do not identify anyone; tokens are never logged.

Unlike Kinto, there is no ``/openid/<name>/login`` flow and no call to the userinfo
endpoint: clients obtain tokens from the issuer themselves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from typing import TYPE_CHECKING, Any, Final

import jwt

if TYPE_CHECKING:
    from nuages.core.service import Tx
    from nuages.settings import Settings
    from nuages.web.dispatch import Dispatcher
    from nuages.web.messages import WebRequest

__all__ = ["OpenIDPolicy", "install_policy"]

log = logging.getLogger("nuages.openid")

PREFIX: Final = "openid"
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
CAPABILITY: Final = {
    "description": "OpenID connect support.",
    "url": "http://kinto.readthedocs.io/en/stable/api/1.x/authentication.html",
}


def _fetch_json(url: str) -> Any:
    """GET a JSON document (blocking: run in a thread)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_SECONDS) as response:
        return json.loads(response.read(MAX_DOCUMENT_BYTES))


class OpenIDPolicy:
    """Bearer JWT access tokens of one issuer: ``openid:<claim>``."""

    name = PREFIX
    challenge = 'Bearer realm="Realm"'

    def __init__(self, settings: Settings) -> None:
        assert settings.openid_issuer is not None and settings.openid_audience is not None
        self.issuer = settings.openid_issuer
        self.audience = settings.openid_audience
        self.userid_field = settings.openid_userid_field
        self._ttl = settings.openid_jwks_cache_seconds
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._forced_at = float("-inf")
        self._lock = asyncio.Lock()
        self._provider: dict[str, Any] = {
            "name": PREFIX,
            "issuer": self.issuer,
            "audience": self.audience,
            "client_id": self.audience,
            "header_type": "Bearer",
            "userinfo_endpoint": None,  # known once the discovery document is fetched
        }
        #: The ``openid`` capability of ``GET /v1/`` (protocol/09 §1), kept up to date.
        self.capability: dict[str, Any] = {**CAPABILITY, "providers": [self._provider]}

    async def _refresh(self, *, force: bool) -> None:
        """Fetch discovery and JWKS if stale (or, with `force`, if not fetched just now)."""
        async with self._lock:
            now = time.monotonic()
            fresh = now - self._fetched_at < self._ttl
            if fresh and (not force or now - self._forced_at < REFETCH_INTERVAL):
                return
            if not fresh and now - self._attempted_at < REFETCH_INTERVAL:
                return  # the issuer failed a moment ago: do not retry on every request
            self._attempted_at = now
            if force:
                self._forced_at = now
            try:
                url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
                discovery = await asyncio.to_thread(_fetch_json, url)
                if not isinstance(discovery, dict) or discovery.get("issuer") != self.issuer:
                    raise ValueError("the discovery document names another issuer")
                jwks = await asyncio.to_thread(_fetch_json, str(discovery["jwks_uri"]))
                keys = jwt.PyJWKSet.from_dict(jwks).keys
            except Exception as exc:  # network, JSON, key formats: all mean "no keys now"
                log.warning("cannot load the keys of OpenID issuer %s: %s", self.issuer, exc)
                return
            self._provider["userinfo_endpoint"] = discovery.get("userinfo_endpoint")
            self._keys = {key.key_id: key for key in keys if key.key_id}
            self._fetched_at = now

    async def _key(self, kid: str) -> jwt.PyJWK | None:
        await self._refresh(force=False)
        if kid not in self._keys:
            await self._refresh(force=True)  # a rotated key: look again, rate-limited
        return self._keys.get(kid)

    async def identify(self, req: WebRequest, tx: Tx | None) -> str | None:
        header = req.headers.get("authorization")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            unverified = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        kid, algorithm = unverified.get("kid"), unverified.get("alg")
        if not isinstance(kid, str) or algorithm not in ALGORITHMS:
            return None
        key = await self._key(kid)
        if key is None:
            return None
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        user = claims.get(self.userid_field)
        if not isinstance(user, str) or not user:
            return None
        return f"{PREFIX}:{user}"


def install_policy(dispatcher: Dispatcher) -> OpenIDPolicy:
    """The ``openid`` policy, announced in ``GET /v1/``."""
    policy = OpenIDPolicy(dispatcher.settings)
    dispatcher.capabilities["openid"] = policy.capability
    return policy
