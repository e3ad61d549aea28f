"""OpenID Connect over HTTP: Bearer JWTs verified against a real local issuer (protocol/10 §6).

The issuer is a small HTTP server on 127.0.0.1 serving a discovery document and a JWKS, and
the tests sign tokens with its private keys: the server under test fetches the keys over
the network and verifies signatures for real.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import math
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tests.conftest import AppFactory

from nuages.settings import Settings, SettingsError

AUDIENCE = "nuages-client"


@dataclass
class Issuer:
    """A minimal OpenID provider: discovery, JWKS (rotatable keys), token and userinfo
    endpoints. Tokens are signed with its private keys; userinfo verifies them for real."""

    url: str = ""
    keys: dict[str, Any] = field(default_factory=dict)  # kid -> private key
    published: list[str] = field(default_factory=list)  # kids in the JWKS
    requests: list[str] = field(default_factory=list)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)  # code -> claims
    opaque: dict[str, dict[str, Any]] = field(default_factory=dict)  # token -> profile
    revoked: set[str] = field(default_factory=set)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    userinfo_tokens: list[str] = field(default_factory=list)
    client_secret: str = "s3cr3t-client"

    def add_key(self, kid: str, key: Any | None = None, *, publish: bool = True) -> None:
        self.keys[kid] = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if publish:
            self.published.append(kid)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            public = self.keys[kid].public_key()
            algorithm = jwt.algorithms.ECAlgorithm if kid.startswith("ec") else None
            jwk = json.loads(
                (algorithm or jwt.algorithms.RSAAlgorithm).to_jwk(public)  # type: ignore[attr-defined]
            )
            keys.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": keys}

    def token(
        self, kid: str = "k1", *, algorithm: str = "RS256", headers: Any = None, **claims: Any
    ) -> str:
        now = int(time.time())
        payload = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": "user-42",
            "iat": now,
            "exp": now + 300,
            **claims,
        }
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(
            payload, self.keys[kid], algorithm=algorithm, headers={"kid": kid, **(headers or {})}
        )

    def userinfo(self, token: str) -> dict[str, Any] | None:
        """The profile of a token this provider issued (verified), or None."""
        if token in self.revoked:
            return None
        if token in self.opaque:
            return self.opaque[token]
        try:
            kid = jwt.get_unverified_header(token)["kid"]
            claims = jwt.decode(
                token,
                self.keys[kid].public_key(),
                algorithms=["RS256", "ES256"],
                options={"verify_aud": False},
            )
        except (jwt.PyJWTError, KeyError):
            return None
        return {"sub": claims["sub"], "email": claims.get("email"), "name": "Test User"}


def serve(state: Issuer) -> Iterator[Issuer]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            state.requests.append(self.path)
            if self.path == "/.well-known/openid-configuration":
                self._send(
                    200,
                    {
                        "issuer": state.url,
                        "jwks_uri": f"{state.url}/jwks.json",
                        "authorization_endpoint": f"{state.url}/authorize",
                        "token_endpoint": f"{state.url}/token",
                        "userinfo_endpoint": f"{state.url}/userinfo",
                    },
                )
            elif self.path == "/jwks.json":
                self._send(200, state.jwks())
            elif self.path.startswith("/authorize?"):
                # The user logs in and consents at once: back to the client with a code.
                query = dict(urllib.parse.parse_qsl(self.path.partition("?")[2]))
                code = f"code-{len(state.codes)}-{time.monotonic_ns()}"
                state.codes[code] = {"sub": "browser-user", "email": "web@example.com"}
                back = {"code": code, "state": query["state"]}
                self.send_response(302)
                self.send_header(
                    "Location", f"{query['redirect_uri']}?{urllib.parse.urlencode(back)}"
                )
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path == "/userinfo":
                scheme, _, token = self.headers.get("Authorization", "").partition(" ")
                state.userinfo_tokens.append(token)
                profile = state.userinfo(token) if scheme == "Bearer" else None
                if profile is None:
                    self._send(401, {"error": "invalid_token"})
                else:
                    self._send(200, profile)
            else:
                self._send(404, {})

        def do_POST(self) -> None:
            state.requests.append(self.path)
            length = int(self.headers.get("Content-Length", "0"))
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            state.token_requests.append(form)
            claims = state.codes.pop(form.get("code", ""), None)
            if (
                self.path != "/token"
                or claims is None
                or form.get("client_secret") != state.client_secret
                or form.get("grant_type") != "authorization_code"
            ):
                self._send(400, {"error": "invalid_grant"})
                return
            access_token = state.token(**claims)
            self._send(
                200,
                {
                    "access_token": access_token,
                    "id_token": state.token(aud="id-audience", **claims),
                    "token_type": "Bearer",
                    "expires_in": 300,
                },
            )

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    # A short poll, so that shutdown() does not wait half a second per test.
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    state = Issuer()
    state.add_key("k1")
    yield from serve(state)


@pytest.fixture
def other_issuer() -> Iterator[Issuer]:
    state = Issuer(client_secret="other-secret")
    state.add_key("k1")
    yield from serve(state)


@pytest.fixture
async def client(make_client: AppFactory, issuer: Issuer) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(
        auth="openid basicauth", openid_issuer=issuer.url, openid_audience=AUDIENCE
    ) as c:
        c.auth = None  # type: ignore[assignment]
        yield c


async def whoami(client: httpx.AsyncClient, token: str) -> str | None:
    response = await client.get("/v1/", headers={"Authorization": f"Bearer {token}"})
    user = response.json().get("user")
    return None if user is None else str(user["id"])


async def test_a_valid_token_identifies_the_user(client: httpx.AsyncClient, issuer: Issuer) -> None:
    assert await whoami(client, issuer.token()) == "openid:user-42"
    response = await client.put(
        "/v1/buckets/b", headers={"Authorization": f"Bearer {issuer.token()}"}
    )
    assert response.status_code == 201
    assert response.json()["permissions"]["write"] == ["openid:user-42"]


async def test_keys_are_fetched_once_and_cached(client: httpx.AsyncClient, issuer: Issuer) -> None:
    for _ in range(3):
        assert await whoami(client, issuer.token()) == "openid:user-42"
    assert issuer.requests.count("/jwks.json") == 1


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"aud": "another-service"}, "another audience"),
        ({"iss": "https://evil.example"}, "another issuer"),
        ({"exp": None}, "no expiry"),
        ({"aud": None}, "no audience"),
        ({"sub": None}, "no user claim"),
        ({"nbf": int(time.time()) + 3600}, "not valid yet"),
    ],
)
async def test_invalid_claims_are_anonymous(
    client: httpx.AsyncClient, issuer: Issuer, claims: dict[str, Any], why: str
) -> None:
    assert await whoami(client, issuer.token(**claims)) is None, why


async def test_a_token_signed_by_another_key_is_refused(
    client: httpx.AsyncClient, issuer: Issuer
) -> None:
    forged = Issuer(url=issuer.url)
    forged.add_key("k1")  # same key id, other key
    assert await whoami(client, forged.token()) is None


async def test_alg_none_and_hmac_confusion_are_refused(
    client: httpx.AsyncClient, issuer: Issuer
) -> None:
    now = int(time.time())
    claims = {"iss": issuer.url, "aud": AUDIENCE, "sub": "eve", "exp": now + 300}
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": "k1"})
    assert await whoami(client, unsigned) is None
    # The public key (known to anyone) used as an HMAC secret, signed by hand (PyJWT's
    # encoder refuses to build such a token).
    public_pem = (
        issuer.keys["k1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = (
        b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
        + b"."
        + b64(json.dumps(claims).encode())
    )
    signature = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    hmac_token = (signing_input + b"." + b64(signature)).decode()
    assert await whoami(client, hmac_token) is None


async def test_garbage_tokens_are_anonymous(client: httpx.AsyncClient) -> None:
    for token in ("nope", "a.b.c", "", "%%%.&&.~~"):
        response = await client.get("/v1/", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        assert "user" not in response.json()


async def test_rotated_keys_are_picked_up(client: httpx.AsyncClient, issuer: Issuer) -> None:
    assert await whoami(client, issuer.token()) == "openid:user-42"
    issuer.add_key("k2")
    assert await whoami(client, issuer.token("k2")) == "openid:user-42"


async def test_elliptic_curve_keys(client: httpx.AsyncClient, issuer: Issuer) -> None:
    issuer.add_key("ec1", ec.generate_private_key(ec.SECP256R1()))
    assert await whoami(client, issuer.token("ec1", algorithm="ES256")) == "openid:user-42"


async def test_401_challenges_both_schemes(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/buckets")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="Realm", Basic realm="Realm"'


async def test_capability_lists_the_provider(client: httpx.AsyncClient, issuer: Issuer) -> None:
    await whoami(client, issuer.token())  # discovery fetched
    capability = (await client.get("/v1/")).json()["capabilities"]["openid"]
    assert capability["description"] == "OpenID connect support."
    provider = capability["providers"][0]
    assert provider["issuer"] == issuer.url
    assert provider["audience"] == AUDIENCE
    assert provider["header_type"] == "Bearer"
    assert provider["userinfo_endpoint"] == f"{issuer.url}/userinfo"


async def test_another_user_claim(make_client: AppFactory, issuer: Issuer) -> None:
    async with make_client(
        auth="openid",
        openid_issuer=issuer.url,
        openid_audience=AUDIENCE,
        openid_userid_field="email",
    ) as client:
        client.auth = None  # type: ignore[assignment]
        token = issuer.token(email="ann@example.com")
        assert await whoami(client, token) == "openid:ann@example.com"
        assert await whoami(client, issuer.token()) is None  # no email claim


async def test_an_unreachable_issuer_means_anonymous(make_client: AppFactory) -> None:
    async with make_client(
        auth="openid", openid_issuer="http://127.0.0.1:9", openid_audience=AUDIENCE
    ) as client:
        client.auth = None  # type: ignore[assignment]
        local = Issuer(url="http://127.0.0.1:9")
        local.add_key("k1")
        assert await whoami(client, local.token()) is None


def test_openid_needs_issuer_and_audience() -> None:
    with pytest.raises(SettingsError, match="openid_issuer and openid_audience"):
        Settings.load(env={}, auth="openid")


# --- several providers (Kinto's multiauth.policy.<name>.*), login flow, userinfo --------------

CALLBACK = "http://localhost:3000/#tokens="


def providers(alpha: Issuer, beta: Issuer, **extra: Any) -> dict[str, Any]:
    """alpha: JWT access tokens of an audience, then userinfo; beta: opaque tokens, userinfo."""
    return {
        "auth": "openid",
        "openid_providers": "alpha beta",
        "openid_alpha_issuer": alpha.url,
        "openid_alpha_client_id": "alpha-client",
        "openid_alpha_client_secret": alpha.client_secret,
        "openid_alpha_audience": AUDIENCE,
        "openid_beta_issuer": beta.url,
        "openid_beta_client_id": "beta-client",
        "openid_beta_client_secret": beta.client_secret,
        "openid_beta_userid_field": "email",
        **extra,
    }


@pytest.fixture
async def multi(
    make_client: AppFactory, issuer: Issuer, other_issuer: Issuer
) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(**providers(issuer, other_issuer)) as c:
        c.auth = None  # type: ignore[assignment]
        yield c


async def test_two_providers_identify_their_own_users(
    multi: httpx.AsyncClient, issuer: Issuer, other_issuer: Issuer
) -> None:
    token = issuer.token()
    assert await whoami(multi, token) == "alpha:user-42"
    assert issuer.userinfo_tokens == [token]  # JWT checked, then userinfo asked (Kinto)
    other_issuer.opaque["opaque-token-1"] = {"sub": "b-1", "email": "bob@example.com"}
    assert await whoami(multi, "opaque-token-1") == "beta:bob@example.com"
    # A JWT of alpha that alpha refuses is not sent to beta's userinfo endpoint either.
    assert await whoami(multi, issuer.token(aud="another")) is None
    assert other_issuer.userinfo_tokens == ["opaque-token-1"]
    assert await whoami(multi, "unknown-opaque") is None


async def test_userinfo_decides_and_gives_the_profile(
    multi: httpx.AsyncClient, issuer: Issuer
) -> None:
    token = issuer.token(email="ann@example.com")
    body = (await multi.get("/v1/", headers={"Authorization": f"Bearer {token}"})).json()
    assert body["user"]["id"] == "alpha:user-42"
    assert body["user"]["profile"] == {
        "sub": "user-42",
        "email": "ann@example.com",
        "name": "Test User",
    }
    assert "system.Authenticated" in body["user"]["principals"]
    revoked = issuer.token(sub="gone")
    issuer.revoked.add(revoked)  # a valid JWT the provider no longer accepts
    assert await whoami(multi, revoked) is None


async def test_verified_tokens_are_cached(multi: httpx.AsyncClient, issuer: Issuer) -> None:
    token = issuer.token()
    for _ in range(3):
        assert await whoami(multi, token) == "alpha:user-42"
    assert issuer.userinfo_tokens == [token]  # one round trip for three requests


async def test_cached_tokens_still_expire(make_client: AppFactory, issuer: Issuer) -> None:
    # The remembered verification never outlives the JWT (exp + clock skew).
    async with make_client(
        auth="openid", openid_issuer=issuer.url, openid_audience=AUDIENCE
    ) as client:
        client.auth = None  # type: ignore[assignment]
        # Within the 30 s skew for one to two seconds more: valid. (int(time.time()) - 29
        # left anywhere from 0 to 1 s, and a busy machine could use it all before the
        # first request.)
        exp = math.ceil(time.time()) - 29
        token = issuer.token(exp=exp)
        assert await whoami(client, token) == "openid:user-42"
        await asyncio.sleep(exp + 30 + 0.2 - time.time())
        assert await whoami(client, token) is None


async def test_jwt_checks_of_a_provider_with_an_audience(
    multi: httpx.AsyncClient, issuer: Issuer, other_issuer: Issuer
) -> None:
    now = int(time.time())
    assert await whoami(multi, issuer.token(exp=now - 3600)) is None  # expired
    assert await whoami(multi, issuer.token(aud="someone-else")) is None  # wrong audience
    assert await whoami(multi, other_issuer.token()) is None  # another issuer's key
    assert await whoami(multi, issuer.token(iss="https://evil.example")) is None
    # None of them reached alpha's userinfo endpoint: the JWT check comes first.
    assert issuer.userinfo_tokens == []


async def test_an_unknown_key_id_refetches_the_keys_once(
    multi: httpx.AsyncClient, issuer: Issuer
) -> None:
    assert await whoami(multi, issuer.token()) == "alpha:user-42"
    fetches = issuer.requests.count("/jwks.json")
    issuer.add_key("hidden", publish=False)
    assert await whoami(multi, issuer.token("hidden")) is None
    assert issuer.requests.count("/jwks.json") == fetches + 1  # looked for a rotated key
    for _ in range(3):  # more bogus key ids: no more refetches for a while
        assert await whoami(multi, issuer.token("hidden", sub="other")) is None
    assert issuer.requests.count("/jwks.json") == fetches + 1


async def test_capability_lists_every_provider(
    multi: httpx.AsyncClient, issuer: Issuer, other_issuer: Issuer
) -> None:
    capability = (await multi.get("/v1/")).json()["capabilities"]["openid"]
    assert capability["description"] == "OpenID connect support."
    assert capability["providers"] == [
        {
            "name": "alpha",
            "issuer": issuer.url,
            "auth_path": "/openid/alpha/login",
            "client_id": "alpha-client",
            "audience": AUDIENCE,
            "header_type": "Bearer",
            "userinfo_endpoint": f"{issuer.url}/userinfo",
        },
        {
            "name": "beta",
            "issuer": other_issuer.url,
            "auth_path": "/openid/beta/login",
            "client_id": "beta-client",
            "audience": "",
            "header_type": "Bearer",
            "userinfo_endpoint": f"{other_issuer.url}/userinfo",
        },
    ]


async def test_401_challenges_every_header_type(
    make_client: AppFactory, issuer: Issuer, other_issuer: Issuer
) -> None:
    settings = providers(issuer, other_issuer, openid_beta_header_type="Token")
    async with make_client(**settings) as client:
        client.auth = None  # type: ignore[assignment]
        response = await client.get("/v1/buckets")
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="Realm", Token realm="Realm"'
        other_issuer.opaque["t"] = {"email": "x@example.com"}
        headers = {"Authorization": "Token t"}
        assert (await client.get("/v1/", headers=headers)).json()["user"]["id"] == (
            "beta:x@example.com"
        )


async def login(client: httpx.AsyncClient, provider: str = "alpha", **query: str) -> str:
    """The state of a successful login redirect."""
    params = {"callback": CALLBACK, "scope": "openid email", **query}
    response = await client.get(f"/v1/openid/{provider}/login", params=params)
    assert response.status_code == 307, response.text
    location = urllib.parse.urlsplit(response.headers["Location"])
    return dict(urllib.parse.parse_qsl(location.query))["state"]


async def test_login_redirects_to_the_provider(multi: httpx.AsyncClient, issuer: Issuer) -> None:
    params = {"callback": CALLBACK, "scope": "openid email", "prompt": "none"}
    response = await multi.get("/v1/openid/alpha/login", params=params)
    assert response.status_code == 307
    location = urllib.parse.urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{issuer.url}/authorize"
    query = dict(urllib.parse.parse_qsl(location.query))
    assert query.pop("state").isalnum()
    assert query == {
        "client_id": "alpha-client",
        "response_type": "code",
        "scope": "openid email",
        "redirect_uri": "http://testserver/v1/openid/alpha/token",
        "prompt": "none",
        "audience": AUDIENCE,
    }
    state = await login(multi)
    assert len(state) == 64 and int(state, 16) >= 0  # 32 random bytes in hex


async def test_token_exchange_redirects_with_the_tokens(
    multi: httpx.AsyncClient, issuer: Issuer
) -> None:
    state = await login(multi)
    issuer.codes["the-code"] = {"sub": "carol", "email": "carol@example.com"}
    response = await multi.get(
        "/v1/openid/alpha/token", params={"code": "the-code", "state": state}
    )
    assert response.status_code == 307
    location = response.headers["Location"]
    assert location.startswith(CALLBACK)
    answer = json.loads(base64.b64decode(urllib.parse.unquote(location[len(CALLBACK) :])))
    assert set(answer) == {"access_token", "id_token", "token_type", "expires_in"}
    assert issuer.token_requests[-1] == {
        "code": "the-code",
        "client_id": "alpha-client",
        "client_secret": issuer.client_secret,
        "redirect_uri": "http://testserver/v1/openid/alpha/token",
        "grant_type": "authorization_code",
    }
    assert await whoami(multi, answer["access_token"]) == "alpha:carol"
    # The state was used: once only.
    again = await multi.get("/v1/openid/alpha/token", params={"code": "x", "state": state})
    assert again.status_code == 400


async def test_a_refused_code_is_forwarded_to_the_client(
    multi: httpx.AsyncClient, issuer: Issuer
) -> None:
    state = await login(multi)
    response = await multi.get("/v1/openid/alpha/token", params={"code": "bad", "state": state})
    assert response.status_code == 307  # Kinto forwards the token endpoint's answer as is
    encoded = response.headers["Location"][len(CALLBACK) :]
    assert json.loads(base64.b64decode(urllib.parse.unquote(encoded))) == {"error": "invalid_grant"}


async def test_a_provider_error_is_forwarded(multi: httpx.AsyncClient, issuer: Issuer) -> None:
    state = await login(multi)
    params = {"error": "access_denied", "error_description": "no way", "state": state}
    response = await multi.get("/v1/openid/alpha/token", params=params)
    assert response.status_code == 307
    assert response.headers["Location"] == CALLBACK + "error=access_denied&error_description=no+way"
    assert issuer.token_requests == []


def assert_invalid(response: httpx.Response, name: str | None, description: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["errno"] == 107 and body["error"] == "Invalid parameters"
    assert body["details"][0]["name"] == name
    assert body["details"][0]["description"] == description


async def test_bad_states_are_refused(multi: httpx.AsyncClient, issuer: Issuer) -> None:
    response = await multi.get("/v1/openid/alpha/token", params={"code": "c", "state": "nope"})
    assert_invalid(response, "state", "Invalid state")
    assert response.json()["details"][0]["errno"] == 105
    assert response.json()["message"] == "state in querystring: Invalid state"
    # A state issued for alpha is no good at beta's endpoint (and is spent by the attempt).
    state = await login(multi)
    response = await multi.get("/v1/openid/beta/token", params={"code": "c", "state": state})
    assert_invalid(response, "state", "Invalid state")
    response = await multi.get(
        "/v1/openid/alpha/token", params={"error": "access_denied", "state": "nope"}
    )
    assert_invalid(response, "state", "Invalid state")
    response = await multi.get("/v1/openid/alpha/token", params={"state": "x" * 5000, "code": "c"})
    assert_invalid(response, "state", "Invalid state")
    assert issuer.token_requests == []


async def test_token_querystring_is_validated(multi: httpx.AsyncClient) -> None:
    response = await multi.get("/v1/openid/alpha/token", params={"code": "c"})
    assert_invalid(response, "state", "Required")
    both = {"code": "c", "error": "e", "state": "s"}
    response = await multi.get("/v1/openid/alpha/token", params=both)
    assert response.status_code == 400
    assert "but not both" in response.json()["message"]


@pytest.mark.parametrize(
    "callback",
    [
        "https://evil.example/#tokens=",
        "http://localhost.evil.example:3000/",
        "http://localhost:3000@evil.example/",
        "http://evil.example\\.localhost:3000/",
        "http://localhost:3000/admin/../../x",
        "http://localhost:3000/%2e%2e/x",
        "https://localhost:3000/",
        "javascript://localhost:3000/%0aalert(1)",
    ],
)
async def test_untrusted_callbacks_are_refused(multi: httpx.AsyncClient, callback: str) -> None:
    response = await multi.get(
        "/v1/openid/alpha/login", params={"callback": callback, "scope": "openid"}
    )
    assert_invalid(response, "callback", "Untrusted callback URL")


async def test_trusted_callback_patterns(
    make_client: AppFactory, issuer: Issuer, other_issuer: Issuer
) -> None:
    settings = providers(
        issuer, other_issuer, openid_alpha_trusted_callback_urls="https://*.example.com/app/*"
    )
    async with make_client(**settings) as client:
        client.auth = None  # type: ignore[assignment]
        await login(client, callback="https://admin.example.com/app/#auth=")
        for refused in (CALLBACK, "https://example.org/app/", "http://a.example.com/app/"):
            response = await client.get(
                "/v1/openid/alpha/login", params={"callback": refused, "scope": "openid"}
            )
            assert_invalid(response, "callback", "Untrusted callback URL")


async def test_login_querystring_is_validated(multi: httpx.AsyncClient) -> None:
    url = "/v1/openid/alpha/login"
    assert_invalid(await multi.get(url, params={"scope": "openid"}), "callback", "Required")
    assert_invalid(await multi.get(url, params={"callback": CALLBACK}), "scope", "Required")
    assert_invalid(
        await multi.get(url, params={"callback": "not a url", "scope": "openid"}),
        "callback",
        "Must be a URL",
    )
    response = await multi.get(url, params={"callback": CALLBACK, "scope": "openid x"})
    assert_invalid(response, "scope", "Scopes not allowed: x")
    response = await multi.get(
        url, params={"callback": CALLBACK, "scope": "openid", "prompt": "login"}
    )
    assert response.status_code == 400
    # beta names users by e-mail: the email scope is needed.
    response = await multi.get(
        "/v1/openid/beta/login", params={"callback": CALLBACK, "scope": "openid"}
    )
    assert_invalid(response, "scope", "Provider beta requires 'email' scope")
    response = await multi.get(
        "/v1/openid/gamma/login", params={"callback": CALLBACK, "scope": "openid"}
    )
    assert_invalid(response, "provider", "Unknown provider 'gamma'")


async def test_login_with_an_unreachable_provider_is_503(make_client: AppFactory) -> None:
    settings = {
        "auth": "openid",
        "openid_providers": "down",
        "openid_down_issuer": "http://127.0.0.1:9",
        "openid_down_client_id": "c",
    }
    async with make_client(**settings) as client:
        client.auth = None  # type: ignore[assignment]
        response = await client.get(
            "/v1/openid/down/login", params={"callback": CALLBACK, "scope": "openid"}
        )
        assert response.status_code == 503
        assert await whoami(client, "some-token") is None


async def test_tokens_codes_and_secrets_never_reach_the_logs(
    multi: httpx.AsyncClient, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        token = issuer.token()
        assert await whoami(multi, token) == "alpha:user-42"
        bad = issuer.token(aud="nope")
        assert await whoami(multi, bad) is None
        await whoami(multi, "opaque-unknown-token")
        state = await login(multi)
        issuer.codes["code-123-secret"] = {"sub": "dan"}
        response = await multi.get(
            "/v1/openid/alpha/token", params={"code": "code-123-secret", "state": state}
        )
        encoded = response.headers["Location"][len(CALLBACK) :]
        answer = json.loads(base64.b64decode(urllib.parse.unquote(encoded)))
        await multi.get(
            "/v1/openid/alpha/token", params={"code": "code-123-secret", "state": state}
        )
    # The server's records (the test client's own, httpx, log the URLs it requests).
    records = [r for r in caplog.records if not r.name.startswith("httpx")]
    assert any(r.name == "nuages.openid" for r in records)  # something was logged
    text = "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in records)
    secrets_ = [token, bad, "opaque-unknown-token", state, "code-123-secret"]
    secrets_ += [answer["access_token"], answer["id_token"], issuer.client_secret]
    for secret in secrets_:
        assert secret not in text
        assert secret[:40] not in text


async def test_user_ids_of_other_policies_cannot_be_claimed(
    make_client: AppFactory, issuer: Issuer
) -> None:
    # A provider is never named like another policy's prefix (account:admin...).
    for name in ("account", "basicauth", "system"):
        with pytest.raises(SettingsError, match="reserved"):
            Settings.load(env={}, auth="openid", openid_providers=name)


def test_provider_settings_are_checked() -> None:
    base = {"auth": "openid", "openid_providers": "alpha"}
    with pytest.raises(SettingsError, match="needs openid_alpha_issuer"):
        Settings.load(env={}, **base, openid_alpha_client_id="c")
    with pytest.raises(SettingsError, match="'beta' is not in openid_providers"):
        Settings.load(
            env={},
            **base,
            openid_alpha_issuer="https://a",
            openid_alpha_client_id="c",
            openid_beta_issuer="https://b",
        )
    with pytest.raises(SettingsError, match="NUAGES_OPENID_ALPHA_STATE_LENGTH: must be between"):
        Settings.load(env={"NUAGES_OPENID_ALPHA_STATE_LENGTH": "2"}, **base)
    with pytest.raises(SettingsError, match="add openid to auth"):
        Settings.load(
            env={}, openid_providers="alpha", openid_alpha_issuer="x", openid_alpha_client_id="c"
        )
    with pytest.raises(SettingsError, match="userinfo: false needs openid_alpha_audience"):
        Settings.load(
            env={},
            **base,
            openid_alpha_issuer="https://a",
            openid_alpha_client_id="c",
            openid_alpha_userinfo="false",
        )
    s = Settings.load(
        env={
            "NUAGES_OPENID_ALPHA_ISSUER": "https://a",
            "NUAGES_OPENID_ALPHA_CLIENT_ID": "c",
            "NUAGES_OPENID_ALPHA_CLIENT_SECRET": "very-secret",
        },
        **base,
    )
    assert "very-secret" not in repr(s)


def test_provider_settings_from_toml(tmp_path: Any) -> None:
    path = tmp_path / "nuages.toml"
    path.write_text(
        'auth = "openid"\nopenid_providers = ["alpha"]\n'
        'openid_alpha_issuer = "https://a"\nopenid_alpha_client_id = "c"\n'
        'openid_alpha_allowed_scopes = ["openid", "email"]\nopenid_alpha_userinfo = true\n'
    )
    s = Settings.load(path, env={})
    from nuages.plugins.openid import provider_configs

    (config,) = provider_configs(s)
    assert (config.name, config.issuer, config.client_id) == ("alpha", "https://a", "c")
    assert config.allowed_scopes == ("openid", "email") and config.userinfo is True
    assert config.verification_ttl_seconds == 86400 and config.state_length == 32


# --- kinto-http's browser login, end to end over real sockets ---------------------------------


def _serve_app(settings: Settings) -> Iterator[str]:
    """The app under uvicorn in a thread, on a free port of 18100-18199; yields the /v1 URL."""
    import socket

    import uvicorn

    from nuages.web.app import create_app

    for port in range(18100, 18200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        break
    else:  # pragma: no cover - every port of the range busy
        pytest.skip("no free port in 18100-18199")
    app = create_app(settings, migrate=True)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_kinto_http_browser_login(
    issuer: Issuer, other_issuer: Issuer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kinto-http's BrowserOAuth: capability, /login, the provider, /token, its callback."""
    import kinto_http
    import kinto_http.login

    settings = Settings.load(
        env={},
        storage_url=f"sqlite:///{tmp_path / 'nuages.db'}",
        **providers(issuer, other_issuer),
    )
    visited: list[str] = []

    def browser(url: str) -> bool:
        # A browser following every redirect, in the background as a real one would be.
        def run() -> None:
            with httpx.Client(follow_redirects=True, timeout=10) as web:
                response = web.get(url)
                visited.extend(str(r.url) for r in (*response.history, response))

        threading.Thread(target=run, daemon=True).start()
        return True

    monkeypatch.setattr(kinto_http.login.webbrowser, "open", browser)
    for url in _serve_app(settings):
        client = kinto_http.Client(server_url=url, auth=kinto_http.BrowserOAuth(provider="alpha"))
        info = client.server_info()
        assert info["user"]["id"] == "alpha:browser-user"
        assert info["user"]["profile"]["email"] == "web@example.com"
        bucket = client.create_bucket(id="mine")
        assert bucket["permissions"]["write"] == ["alpha:browser-user"]
    assert visited[0].startswith(f"{url}/openid/alpha/login?")
    assert visited[1].startswith(f"{issuer.url}/authorize?")
    assert visited[2].startswith(f"{url}/openid/alpha/token?")
    assert visited[3].startswith("http://localhost:")
