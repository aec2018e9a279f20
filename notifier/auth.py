"""Credentials: producers' API keys and the short-lived user tokens producers mint.

A user token is a JWT (HS256, ``sub`` = user id, ``exp``, ``typ`` = "user"). Keys and tokens are
never logged; an API key is known to the database only by ``api_key_id``, a hash prefix.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import jwt

from notifier.models.base import utcnow

TOKEN_ALGORITHM = "HS256"
TOKEN_TYPE = "user"


class InvalidCredentials(Exception):
    """The credential is missing, malformed, expired or not ours."""


def api_key_id(key: str) -> str:
    return _key_id_of(hashlib.sha256(key.encode()).digest())


def _key_id_of(digest: bytes) -> str:
    return digest.hex()[:32]


class ApiKeyRing:
    """The set of valid producer keys, compared in constant time."""

    def __init__(self, keys: list[str]) -> None:
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def identify(self, presented: str) -> str | None:
        digest = hashlib.sha256(presented.encode()).digest()
        found = False
        for known in self._digests:  # no early exit: timing does not tell which key matched
            found |= hmac.compare_digest(known, digest)
        return _key_id_of(digest) if found else None  # api_key_id, from the same hash


@dataclass(frozen=True, slots=True)
class MintedToken:
    token: str
    expires_at: datetime


class UserTokens:
    def __init__(self, secret: str, *, default_ttl_seconds: int) -> None:
        if len(secret) < 16:
            raise ValueError("the token secret must be at least 16 characters")
        self._secret = secret
        self._default_ttl = default_ttl_seconds

    def mint(self, user_id: str, *, ttl_seconds: int | None = None) -> MintedToken:
        now = utcnow().replace(microsecond=0)
        expires_at = now + timedelta(seconds=ttl_seconds or self._default_ttl)
        claims = {"sub": user_id, "typ": TOKEN_TYPE, "iat": now, "exp": expires_at}
        return MintedToken(jwt.encode(claims, self._secret, algorithm=TOKEN_ALGORITHM), expires_at)

    def verify(self, token: str) -> str:
        """The token's user id; raises InvalidCredentials if it is not valid now."""
        return self.verify_until(token)[0]

    def verify_until(self, token: str) -> tuple[str, datetime]:
        """The token's user id and when it expires (an open WebSocket is closed then); raises
        InvalidCredentials if it is not valid now."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[TOKEN_ALGORITHM],
                options={"require": ["sub", "exp", "typ"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidCredentials(type(exc).__name__) from exc
        if claims.get("typ") != TOKEN_TYPE or not isinstance(claims.get("sub"), str):
            raise InvalidCredentials("not a user token")
        return str(claims["sub"]), datetime.fromtimestamp(claims["exp"], UTC)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a producer (API key) or one end user (user token)."""

    kind: Literal["api_key", "user"]
    api_key_id: str | None = None
    user_id: str | None = None

    @property
    def is_producer(self) -> bool:
        return self.kind == "api_key"

    def may_access_user(self, user_id: str) -> bool:
        return self.is_producer or self.user_id == user_id
