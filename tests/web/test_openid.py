"""OpenID Connect over HTTP: Bearer JWTs verified against a real local issuer (protocol/10 §6).

The issuer is a small HTTP server on 127.0.0.1 serving a discovery document and a JWKS, and
the tests sign tokens with its private keys: the server under test fetches the keys over
the network and verifies signatures for real.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
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
    """A minimal OpenID provider: discovery + JWKS, keys that can be rotated."""

    url: str = ""
    keys: dict[str, Any] = field(default_factory=dict)  # kid -> private key
    published: list[str] = field(default_factory=list)  # kids in the JWKS
    requests: list[str] = field(default_factory=list)

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


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    state = Issuer()
    state.add_key("k1")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            if self.path == "/.well-known/openid-configuration":
                body: Any = {
                    "issuer": state.url,
                    "jwks_uri": f"{state.url}/jwks.json",
                    "userinfo_endpoint": f"{state.url}/userinfo",
                }
            elif self.path == "/jwks.json":
                body = state.jwks()
            else:
                self.send_response(404)
                self.end_headers()
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


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
