"""Who is making a request: access token (JWT), API key or browser session -> user id.

Tokens are checked in two steps. The signature and claims are checked here, without
the database; the database check (user active, session not ended, key not revoked,
`Identity.check`) runs as the first statement of the request's own transaction
(web/db.py), which also makes the user current for row-level security.
"""
from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from uuid import UUID

import jwt
from flask import current_app
from psycopg import Cursor

from .errors import ApiError

ALGORITHM = "HS256"  # pinned: a token naming any other algorithm (or none) is refused
API_KEY_PREFIX = "sk_"
API_KEY_VISIBLE = 10  # characters of the key shown in listings ("sk_" + 7)
_UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="story-genius"'}


def sha256(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def unauthorized(detail: str = "Invalid or expired token.") -> ApiError:
    return ApiError(401, detail, _UNAUTHORIZED)


@dataclass(frozen=True)
class AccessToken:
    """A verified access JWT; the database still decides if its session is live."""

    user_id: UUID
    session_version: int

    def check(self) -> tuple[str, tuple]:
        """The database check as SQL: its one row's user_id is the user it made current."""
        return "select app.authenticate_access(%s, %s) as user_id", (self.user_id, self.session_version)


@dataclass(frozen=True)
class ApiKey:
    """An `sk_…` key, known only by its SHA-256."""

    key_hash: bytes

    def check(self) -> tuple[str, tuple]:
        """The database check as SQL: its one row's user_id is the user it made current."""
        return "select app.authenticate_api_key(%s) as user_id", (self.key_hash,)


Identity = AccessToken | ApiKey


# -- JWT -------------------------------------------------------------------------------

def _encode(user_id: UUID, session_version: int, token_type: str, ttl: int) -> str:
    now = int(time.time())
    claims = {"sub": str(user_id), "type": token_type, "iat": now, "exp": now + ttl,
              "jti": uuid.uuid4().hex, "ver": session_version}
    return jwt.encode(claims, current_app.config["SECRET_KEY"], algorithm=ALGORITHM)


def decode_token(token: str, expected_type: str) -> dict:
    """Claims of a token we signed, of the expected type (access|refresh); 401 otherwise."""
    try:
        claims = jwt.decode(token, current_app.config["SECRET_KEY"], algorithms=[ALGORITHM],
                            options={"require": ["sub", "type", "iat", "exp", "jti", "ver"]})
        claims["sub"] = UUID(claims["sub"])
    except (jwt.PyJWTError, ValueError, TypeError, AttributeError):
        raise unauthorized() from None
    if claims["type"] != expected_type or not isinstance(claims["ver"], int):
        raise unauthorized()
    return claims


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


def new_token_pair(user_id: UUID, session_version: int) -> TokenPair:
    config = current_app.config
    return TokenPair(
        access_token=_encode(user_id, session_version, "access", config["ACCESS_TOKEN_TTL"]),
        refresh_token=_encode(user_id, session_version, "refresh", config["REFRESH_TOKEN_TTL"]),
        expires_in=config["ACCESS_TOKEN_TTL"],
    )


def refresh_expiry() -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=current_app.config["REFRESH_TOKEN_TTL"])


def new_refresh_token_family(pair: TokenPair) -> tuple[uuid.UUID, bytes, datetime]:
    """(family id, token hash, expiry): the arguments that store the pair's refresh token
    as the first of a new family."""
    return uuid.uuid4(), sha256(pair.refresh_token), refresh_expiry()


def store_new_refresh_token(cur: Cursor, pair: TokenPair) -> None:
    """Start a new token family with the pair's refresh token, for the current user."""
    cur.execute("select app.issue_refresh_token(%s, %s, %s)", new_refresh_token_family(pair))


# -- API keys --------------------------------------------------------------------------

def new_api_key() -> tuple[str, str, bytes]:
    """(full key, visible prefix, hash) for a new API key."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return key, key[:API_KEY_VISIBLE], sha256(key)


# -- the Authorization header ----------------------------------------------------------

def from_authorization_header(header: str | None) -> Identity:
    """The identity a `Bearer …` header claims (JWT or API key); 401 when absent or malformed."""
    scheme, _, credential = (header or "").partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise unauthorized("Not authenticated. Send 'Authorization: Bearer <token>'.")
    if credential.startswith(API_KEY_PREFIX):
        return ApiKey(sha256(credential))
    claims = decode_token(credential, "access")
    return AccessToken(claims["sub"], claims["ver"])


# -- browser sessions ------------------------------------------------------------------

def new_browser_session_token() -> tuple[str, bytes]:
    token = secrets.token_urlsafe(32)
    return token, sha256(token)
