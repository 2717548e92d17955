"""Who is making a request: access token (JWT), API key or browser session -> user id.

Tokens are checked in two steps. The signature and claims are checked here, without
the database; the database check (user active, session not ended, key not revoked,
`Identity.check`) runs as the first statement of the request's own transaction
(web/db.py), which also makes the user current for row-level security.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
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
    session_id: UUID  # the refresh family it was issued with: logout or revocation ends it

    def check(self) -> tuple[str, tuple]:
        """The database check as SQL: its one row's user_id is the user it made current."""
        return ("select app.authenticate_access(%s, %s, %s) as user_id",
                (self.user_id, self.session_version, self.session_id))


@dataclass(frozen=True)
class ApiKey:
    """An `sk_…` key, known only by its SHA-256, and the scope the request's operation
    needs (web/api/__init__.py: one of the key scopes, "any", or None for operations
    that need a signed-in session)."""

    key_hash: bytes
    scope: str | None = "any"

    def check(self) -> tuple[str, tuple]:
        """The database check as SQL: its one row's user_id is the user it made current."""
        return "select app.authenticate_api_key(%s, %s) as user_id", (self.key_hash, self.scope)


Identity = AccessToken | ApiKey


# -- JWT -------------------------------------------------------------------------------
#
# An access token names its session (`sid`, the refresh family), which the per-request
# check reads, so ending the session refuses the token at once. A refresh token is known
# to the database by its hash only.

def _encode(claims: dict) -> str:
    return jwt.encode(claims, current_app.config["SECRET_KEY"], algorithm=ALGORITHM)


def decode_token(token: str, expected_type: str) -> dict:
    """Claims of a token we signed, of the expected type (access|refresh); 401 otherwise.
    An access token must name its session (`sid`, a UUID)."""
    required = ["sub", "type", "iat", "exp", "jti", "ver"] + (["sid"] if expected_type == "access" else [])
    try:
        claims = jwt.decode(token, current_app.config["SECRET_KEY"], algorithms=[ALGORITHM],
                            options={"require": required})
        claims["sub"] = UUID(claims["sub"])
        if expected_type == "access":
            claims["sid"] = UUID(claims["sid"])
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
    family_id: UUID
    refresh_expires_at: datetime


def _claims(user_id: UUID, session_version: int, token_type: str, issued_at: int, ttl: int, jti: str) -> dict:
    return {"sub": str(user_id), "type": token_type, "iat": issued_at, "exp": issued_at + ttl, "jti": jti,
            "ver": session_version}


def refresh_token(user_id: UUID, session_version: int, issued_at: int, jti: str) -> tuple[str, datetime]:
    """A refresh token and its expiry, as stored with the token's hash."""
    ttl = current_app.config["REFRESH_TOKEN_TTL"]
    token = _encode(_claims(user_id, session_version, "refresh", issued_at, ttl, jti))
    return token, datetime.fromtimestamp(issued_at + ttl, timezone.utc)


def token_pair(user_id: UUID, session_version: int, family_id: UUID, refresh: str, refresh_expires_at: datetime,
               issued_at: int, access_jti: str) -> TokenPair:
    """The pair handed to a client: `refresh` and an access token of the same session."""
    ttl = current_app.config["ACCESS_TOKEN_TTL"]
    access = _encode({**_claims(user_id, session_version, "access", issued_at, ttl, access_jti),
                      "sid": str(family_id)})
    return TokenPair(access, refresh, ttl, family_id, refresh_expires_at)


def new_token_pair(user_id: UUID, session_version: int) -> TokenPair:
    """A pair that starts a new session (refresh family): signup, sign-in, password change."""
    issued_at = int(time.time())
    refresh, expires_at = refresh_token(user_id, session_version, issued_at, uuid.uuid4().hex)
    return token_pair(user_id, session_version, uuid.uuid4(), refresh, expires_at, issued_at, uuid.uuid4().hex)


def rotation_jtis(presented: str) -> tuple[str, str]:
    """The (refresh, access) token ids of the pair that replaces a presented refresh token.
    Derived from it, so a concurrent retry of the same rotation re-signs the identical pair."""
    key = current_app.config["SECRET_KEY"].encode()
    return tuple(hmac.new(key, f"{kind}:{presented}".encode(), hashlib.sha256).hexdigest()[:32]
                 for kind in ("refresh", "access"))


def new_refresh_token_family(pair: TokenPair) -> tuple[uuid.UUID, bytes, datetime]:
    """(family id, token hash, expiry): the arguments that store the pair's refresh token
    as the first of its new family."""
    return pair.family_id, sha256(pair.refresh_token), pair.refresh_expires_at


def store_new_refresh_token(cur: Cursor, pair: TokenPair) -> None:
    """Start the pair's session (refresh family) with its refresh token, for the current user."""
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
    return AccessToken(claims["sub"], claims["ver"], claims["sid"])


# -- browser sessions ------------------------------------------------------------------

def new_browser_session_token() -> tuple[str, bytes]:
    token = secrets.token_urlsafe(32)
    return token, sha256(token)
