"""Account operations shared by the JSON API and the web pages: each validates, calls
the SQL functions, and raises ApiError for the client."""
from __future__ import annotations

import secrets
import unicodedata
from dataclasses import dataclass
from uuid import UUID

import psycopg
from email_validator import EmailNotValidError, validate_email
from . import db, passwords
from .errors import ApiError
from .identity import sha256

INVALID_LOGIN = "Invalid email or password."


@dataclass(frozen=True)
class Account:
    id: UUID
    email: str
    full_name: str | None
    is_verified: bool
    tier: str
    credits_remaining: int
    session_version: int

    @classmethod
    def from_row(cls, row: dict) -> "Account":
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    def public(self) -> dict:
        """The user as the API shows it."""
        return {"id": str(self.id), "email": self.email, "full_name": self.full_name,
                "is_verified": self.is_verified, "tier": self.tier,
                "credits_remaining": self.credits_remaining}


def normalise_email(email: str) -> str:
    """The one form of an address that every email input goes through (signup, sign-in,
    password reset, and whatever else takes an address): email_validator's normalised form,
    as stored at signup (domain lower-cased and in Unicode, NFC). ApiError 422 if invalid."""
    try:
        return validate_email(email, check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise ApiError(422, f"email: {error}", field="email") from None


# Bidirectional embedding, override and isolate controls: they reorder what a reader sees.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def name_problem(name: str) -> str | None:
    """Why `name` is not one line of printable text (it goes into mail headers), or None.
    Refused: control characters (CR, LF, NUL, ESC, C1 controls such as NEL), line and
    paragraph separators, bidi overrides, and lone surrogates; other format characters
    (the zero-width joiners some scripts need) are allowed."""
    for character in name:
        if unicodedata.category(character) in ("Cc", "Cs", "Zl", "Zp") or character in _BIDI_CONTROLS:
            return "must be one line of printable text (no line breaks or control characters)"
    return None


def check_new_password(password: str, *context: str | None) -> None:
    problem = passwords.password_problem(password, [c for c in context if c])
    if problem:
        raise ApiError(422, f"password: {problem}", field="password")


def signup(cur, email: str, password: str, full_name: str | None, client_ip: str | None = None) -> Account:
    """Create the account in the caller's transaction; it becomes the current user.
    With `client_ip`, the signup counts against the client's network: 429 + Retry-After
    over the limit."""
    email = normalise_email(email)
    if full_name and (problem := name_problem(full_name)):
        raise ApiError(422, f"full_name: {problem}", field="full_name")
    check_new_password(password, email, full_name)
    try:
        cur.execute("select * from app.signup(%s, %s, %s, %s)",
                    (email, passwords.hash_password(password), full_name, client_ip))
    except psycopg.Error as error:
        if error.sqlstate == "P0429":  # the DETAIL is the seconds to wait
            raise ApiError(429, error.diag.message_primary, {"Retry-After": error.diag.message_detail}) from None
        raise
    return Account.from_row(cur.fetchone())


# A device that signed in keeps a random token (a cookie, or the API's device_token); a
# client presents at most this many, one per account it signed in to.
MAX_DEVICE_TOKENS = 5


@dataclass(frozen=True)
class VerifiedLogin:
    """A login attempt whose password checked out, for the caller to finish."""
    attempt_id: int
    user_id: UUID
    session_version: int
    new_hash: str | None  # set when the stored hash needs rehashing
    # the device token that now vouches for this client: the one it presented when that
    # was a known device of the account, else a new one (stored by the finishing call)
    device_token: str
    new_device_hash: bytes | None
    # the account signs in with a second factor: finish through web/two_factor.py
    two_factor: bool = False


def login(email: str, password: str, client_ip: str | None, device_tokens: list[str] = ()) -> VerifiedLogin:
    """Check a login attempt against the throttle and the stored hash.

    The caller finishes the login in a transaction of its own (`finish_login`, or
    app.login_succeeded_with_refresh_token for the API). Raises 401 (the same for
    unknown email and wrong password), 403 for a disabled account, 429 when throttled,
    422 for something that is not an email address (no account can have it).
    The password is verified outside any transaction, so no connection waits on argon2.
    `device_tokens` are the client's device tokens: one of this account's makes the
    client a known device, which strangers' failures cannot throttle.
    """
    presented = {sha256(token): token for token in list(device_tokens)[:MAX_DEVICE_TOKENS]}
    [attempt] = db.call("select * from app.login_attempt(%s, %s, %s)",
                        (normalise_email(email), client_ip, list(presented) or None))
    if attempt["retry_after"] is not None:
        minutes = max(1, round(attempt["retry_after"] / 60))
        raise ApiError(429, f"Too many login attempts. Try again in about {minutes} minute(s).",
                       {"Retry-After": attempt["retry_after"]})
    if not passwords.verify_password(attempt["password_hash"], password):
        raise ApiError(401, INVALID_LOGIN)
    if not attempt["is_active"]:
        raise ApiError(403, "This account is disabled.")
    new_hash = passwords.hash_password(password) if passwords.needs_rehash(attempt["password_hash"]) else None
    device_token, new_device_hash = _device_token(attempt, presented)
    return VerifiedLogin(attempt["attempt_id"], attempt["user_id"], attempt["session_version"], new_hash,
                         device_token, new_device_hash, attempt["two_factor"])


def _device_token(attempt: dict, presented: dict[bytes, str]) -> tuple[str, bytes | None]:
    """(token, hash to store): the known device's own token, or a new one to remember."""
    if attempt["device_id"] is not None:
        return presented[bytes(attempt["device_hash"])], None
    token = secrets.token_urlsafe(32)
    return token, sha256(token)


def finish_login(cur, verified: VerifiedLogin) -> Account:
    """Record the successful login in the caller's transaction; the user becomes current."""
    cur.execute("select * from app.login_succeeded(%s, %s, %s, %s, %s)",
                (verified.attempt_id, verified.user_id, verified.session_version, verified.new_hash,
                 verified.new_device_hash))
    return Account.from_row(cur.fetchone())


def change_password(cur, current_password: str, new_password: str, email: str) -> int:
    """Change the current user's password; every earlier session ends. New session version."""
    cur.execute("select app.current_password_hash() as hash")
    if not passwords.verify_password(cur.fetchone()["hash"], current_password):
        raise ApiError(403, "current_password is not correct.", field="current_password")
    problem = passwords.password_problem(new_password, [email])
    if problem:
        raise ApiError(422, f"new_password: {problem}", field="new_password")
    cur.execute("select app.change_password(%s) as version", (passwords.hash_password(new_password),))
    return cur.fetchone()["version"]


def client_ip(request) -> str | None:
    """The client address the throttle counts (ProxyFix rewrites it behind a proxy)."""
    return request.remote_addr or None


def request_password_reset(email: str, ip: str | None) -> None:
    """Queue a reset mail if the account exists; 429 when this email or IP asked too often,
    422 when it is not an address at all."""
    with db.tx() as cur:
        cur.execute("select app.request_password_reset(%s, %s) as retry_after", (normalise_email(email), ip))
        retry_after = cur.fetchone()["retry_after"]
    if retry_after is not None:
        raise ApiError(429, "Too many reset requests. Try again later.", {"Retry-After": retry_after})


def reset_password(token: str, new_password: str) -> None:
    """Set the password through a reset link; every session of that user ends."""
    problem = passwords.password_problem(new_password)
    if problem:
        raise ApiError(422, f"new_password: {problem}", field="new_password")
    with db.tx() as cur:
        cur.execute("select app.reset_password(%s, %s)", (sha256(token), passwords.hash_password(new_password)))
