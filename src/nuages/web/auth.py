"""Authentication policies: who is calling, as a prefixed user id (protocol/06 §1).

A policy looks at a request and either identifies it (``"<prefix>:<id>"``) or passes. The
:class:`Authenticator` tries the policies of setting ``auth`` in order and keeps the first
identification, as Kinto's ``multiauth``: with ``auth = accounts basicauth`` a known account
is ``account:<name>`` and any other Basic credentials ``basicauth:<hmac>``. Credentials that
identify nobody are not an error: the request is anonymous, and only a permission check may
then answer 401.

Policies are small objects; plugins provide their own (:mod:`nuages.plugins.accounts`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from nuages.core.authorization import basicauth_userids

if TYPE_CHECKING:
    from nuages.core.service import Tx
    from nuages.web.messages import WebRequest

__all__ = [
    "AuthPolicy",
    "Authenticator",
    "BasicAuthPolicy",
    "BasicCredentials",
    "basic_credentials",
]


@dataclass(frozen=True, slots=True, repr=False)
class BasicCredentials:
    """Decoded ``Authorization: Basic`` credentials. ``repr`` hides the password."""

    username: str
    password: str
    decoded: str  # the exact "user:password" string (basicauth hashes it as sent)

    def __repr__(self) -> str:
        return f"BasicCredentials(username={self.username!r}, password='***')"


def basic_credentials(req: WebRequest) -> BasicCredentials | None:
    """The Basic credentials of a request, or None (absent, another scheme, undecodable,
    or an empty user name, which means anonymous as in Kinto)."""
    decoded = _basic_decoded(req)
    if decoded is None:
        return None
    user, _, password = decoded.partition(":")
    return BasicCredentials(user, password, decoded)


def _basic_decoded(req: WebRequest) -> str | None:
    """The ``user:password`` string of :func:`basic_credentials`, or None."""
    header = req.headers.get("authorization")
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, sep, _ = decoded.partition(":")
    return decoded if sep and user else None


class AuthPolicy(Protocol):
    """One way of identifying a request."""

    #: The policy name, as listed in setting ``auth``.
    name: str
    #: The ``WWW-Authenticate`` challenge sent with 401 responses.
    challenge: str

    async def identify(self, req: WebRequest, tx: Tx | None) -> str | None:
        """The prefixed user id, or None when this policy does not identify the request.

        `tx` is the transaction already open around the request (a batch), to be used for
        any lookup instead of opening another one. May raise
        :class:`nuages.core.errors.TooManyRequests`.
        """
        ...


class BasicAuthPolicy:
    """Kinto's legacy ``basicauth``: any credentials, user id = HMAC of ``user:password``."""

    name = "basicauth"
    challenge = 'Basic realm="Realm"'

    def __init__(self, secret: str) -> None:
        self._userid = basicauth_userids(secret)

    async def identify(self, req: WebRequest, tx: Tx | None) -> str | None:
        decoded = _basic_decoded(req)
        return None if decoded is None else self._userid(decoded)


class Authenticator:
    """The policies of a server, tried in order; the first identification wins."""

    def __init__(self, policies: Sequence[AuthPolicy]) -> None:
        self.policies = tuple(policies)

    @property
    def challenges(self) -> str | None:
        """``WWW-Authenticate`` value: each distinct challenge once (protocol/06 §7)."""
        distinct = dict.fromkeys(p.challenge for p in self.policies)
        return ", ".join(distinct) or None

    async def authenticate(self, req: WebRequest, tx: Tx | None = None) -> str | None:
        for policy in self.policies:
            user_id = await policy.identify(req, tx)
            if user_id is not None:
                return user_id
        return None
