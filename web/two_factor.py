"""Two-factor sign-in: TOTP codes (pyotp) and recovery codes, shared by the API and the pages.

The web process checks a code against the secret and tells the database which 30-second
time step it matched (or a recovery code's SHA-256); the database keeps each step and each
recovery code to one use and counts wrong codes like wrong passwords (sql/37_two_factor.sql).
"""
from __future__ import annotations

import hmac
import re
import secrets
import time
from dataclasses import dataclass

import pyotp
import segno

from . import db, identity, passwords
from .accounts import Account, VerifiedLogin
from .errors import ApiError

ISSUER = "Story Genius"
RECOVERY_CODES = 10
# a code from the step before or after the current one is accepted (clock drift, typing time)
DRIFT_STEPS = 1
_TOTP_CODE = re.compile(r"\d{6}")
_RECOVERY_CODE = re.compile(r"[0-9a-f]{4}(-?[0-9a-f]{4}){3}")
WRONG_CODE = "That code is not correct."


@dataclass(frozen=True)
class Factor:
    """A code as the database takes it: the TOTP step it matched, or a recovery code's hash
    (neither when it matched nothing)."""
    totp_step: int | None = None
    recovery_hash: bytes | None = None


def new_secret() -> str:
    """A new shared secret: 160 random bits in base32 (32 characters)."""
    return pyotp.random_base32()


def provisioning_uri(secret: str, email: str) -> str:
    """The otpauth:// URI an authenticator app reads from the QR code."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    """The URI as an inline SVG QR code (no script, no external reference)."""
    return segno.make(uri, error="m").svg_inline(scale=4, title="QR code for your authenticator app")


def new_recovery_codes() -> list[str]:
    """Ten single-use codes of 64 random bits each (xxxx-xxxx-xxxx-xxxx, hexadecimal)."""
    codes = []
    for _ in range(RECOVERY_CODES):
        digits = secrets.token_hex(8)
        codes.append("-".join(digits[i:i + 4] for i in range(0, 16, 4)))
    return codes


def recovery_hash(code: str) -> bytes:
    """How a recovery code is stored: the SHA-256 of its digits, lower-case, without dashes."""
    return identity.sha256(code.strip().lower().replace("-", ""))


def factor(code: str, secret: str | None, last_step: int | None = None, now: float | None = None) -> Factor:
    """What `code` proves: the TOTP step it matches (newer than `last_step`), or a recovery
    code's hash. An empty Factor for anything else."""
    code = code.strip().replace(" ", "")
    if _TOTP_CODE.fullmatch(code) and secret:
        totp = pyotp.TOTP(secret)
        current = int((time.time() if now is None else now) // totp.interval)
        for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
            if (last_step is None or step > last_step) and hmac.compare_digest(totp.generate_otp(step), code):
                return Factor(totp_step=step)
        return Factor()
    if _RECOVERY_CODE.fullmatch(code.lower()):
        return Factor(recovery_hash=recovery_hash(code))
    return Factor()


# -- sign-in --------------------------------------------------------------------------------

def start_login(verified: VerifiedLogin) -> tuple[str, int]:
    """Store the challenge of a sign-in whose password checked out: (token, seconds to live)."""
    token = secrets.token_urlsafe(32)
    [row] = db.call("select app.start_two_factor_login(%s, %s, %s, %s, %s, %s) as expires_in",
                    (verified.attempt_id, verified.user_id, verified.session_version, verified.new_hash,
                     verified.new_device_hash, identity.sha256(token)))
    return token, row["expires_in"]


def finish_login(cur, challenge: str, code: str) -> Account | None:
    """Finish a sign-in with its second factor in the caller's transaction (the user becomes
    current). None for a wrong code: it is recorded, against the challenge and the account's
    throttle, when the caller commits; so the caller answers 401 after its transaction. 401
    at once for a dead challenge."""
    challenge_hash = identity.sha256(challenge)
    cur.execute("select * from app.two_factor_challenge(%s)", (challenge_hash,))
    live = cur.fetchone()
    if live is None:
        raise identity.unauthorized("This sign-in has expired. Sign in again.")
    proof = factor(code, live["secret"], live["last_step"])
    cur.execute("select * from app.finish_two_factor_login(%s, %s, %s)",
                (challenge_hash, proof.totp_step, proof.recovery_hash))
    row = cur.fetchone()
    return Account.from_row(row) if row else None


# -- enrolment (the signed-in user) ---------------------------------------------------------

def _check_password(cur, password: str) -> None:
    cur.execute("select app.current_password_hash() as hash")
    if not passwords.verify_password(cur.fetchone()["hash"], password):
        raise ApiError(403, "password is not correct.", field="password")


def begin(cur, email: str) -> tuple[str, str]:
    """Start (or restart) enrolment: (secret, otpauth URI)."""
    secret = new_secret()
    cur.execute("select app.begin_two_factor(%s)", (secret,))
    return secret, provisioning_uri(secret, email)


def pending(cur, email: str) -> dict | None:
    """The current user's two-factor state for the account page: {"enabled"} or, while
    enrolment waits for a code, also the secret, its URI and QR code."""
    cur.execute("select * from app.my_two_factor()")
    row = cur.fetchone()
    if row is None:
        return None
    if row["enabled"]:
        return {"enabled": True}
    uri = provisioning_uri(row["secret"], email)
    return {"enabled": False, "secret": row["secret"], "uri": uri, "qr_svg": qr_svg(uri)}


def enable(cur, password: str, code: str) -> list[str]:
    """Turn two-factor on with the password and a code from the pending secret; the ten
    recovery codes, shown once."""
    _check_password(cur, password)
    cur.execute("select * from app.my_two_factor()")
    row = cur.fetchone()
    if row is None or row["enabled"]:
        raise ApiError(409, "Start the set-up first (or two-factor sign-in is already on).")
    proof = factor(code, row["secret"])
    if proof.totp_step is None:
        raise ApiError(422, f"code: {WRONG_CODE}", field="code")
    codes = new_recovery_codes()
    cur.execute("select app.enable_two_factor(%s, %s)", (proof.totp_step, [recovery_hash(c) for c in codes]))
    return codes


def disable(cur, password: str, code: str) -> None:
    """Turn two-factor off with the password and a code (TOTP or recovery)."""
    _check_password(cur, password)
    cur.execute("select * from app.my_two_factor()")
    row = cur.fetchone()
    if row is None or not row["enabled"]:
        raise ApiError(409, "Two-factor sign-in is not on.")
    proof = factor(code, row["secret"], row["last_step"])
    if proof.totp_step is None and proof.recovery_hash is None:
        raise ApiError(422, f"code: {WRONG_CODE}", field="code")
    cur.execute("select app.disable_two_factor(%s, %s)", (proof.totp_step, proof.recovery_hash))

