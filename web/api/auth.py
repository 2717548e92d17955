"""/v1/auth: signup, login, token refresh, logout, me, password change."""
from __future__ import annotations

import time

from flask import current_app, g, jsonify, request

from .. import accounts, db, identity, two_factor
from ..accounts import Account
from ..errors import ApiError
from . import api, require_auth
from .validation import json_body, string_field


def user_tx():
    """The request's transaction, acting for the authenticated caller."""
    return db.tx(identity=g.identity)


def _tokens_response(account: Account, pair: identity.TokenPair, status: int = 200, **extra):
    response = jsonify(access_token=pair.access_token, refresh_token=pair.refresh_token,
                       token_type="bearer", expires_in=pair.expires_in, user=account.public(), **extra)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


@api.post("/auth/signup")
def signup():
    body = json_body()
    email = string_field(body, "email", max_length=254, strip=True)
    password = string_field(body, "password")
    full_name = string_field(body, "full_name", required=False, max_length=200, strip=True) or None
    from .referrals import MAX_CODE, record_referral  # (referrals imports this module)

    referral_code = string_field(body, "referral_code", required=False, max_length=MAX_CODE)
    with db.tx() as cur:
        account = accounts.signup(cur, email, password, full_name, accounts.client_ip(request))
        record_referral(cur, referral_code, accounts.client_ip(request))
        pair = identity.new_token_pair(account.id, account.session_version)
        identity.store_new_refresh_token(cur, pair)
    return _tokens_response(account, pair, 201)


@api.post("/auth/login")
def login():
    """Sign in. `device_token` (from an earlier sign-in's answer) marks a known device,
    which other clients' failed attempts never throttle; the answer carries the token to
    keep for next time."""
    body = json_body()
    email = string_field(body, "email", max_length=254)
    password = string_field(body, "password", max_length=1024)
    device_token = string_field(body, "device_token", required=False, min_length=1, max_length=200)
    verified = accounts.login(email, password, accounts.client_ip(request), [device_token] if device_token else [])
    if verified.two_factor:
        challenge, expires_in = two_factor.start_login(verified)
        response = jsonify(two_factor_required=True, challenge_token=challenge, expires_in=expires_in,
                           device_token=verified.device_token)
        response.status_code = 202
        response.headers["Cache-Control"] = "no-store"
        return response
    # signed with the session version the attempt read; the call below refuses the login
    # if a password change has moved it on since
    pair = identity.new_token_pair(verified.user_id, verified.session_version)
    [row] = db.call("select * from app.login_succeeded_with_refresh_token(%s, %s, %s, %s, %s, %s, %s, %s)",
                    (verified.attempt_id, verified.user_id, verified.session_version, verified.new_hash,
                     *identity.new_refresh_token_family(pair), verified.new_device_hash))
    return _tokens_response(Account.from_row(row), pair, device_token=verified.device_token)


@api.post("/auth/login/2fa")
def login_second_factor():
    """Second step of a sign-in with two-factor on: the challenge token from /auth/login and
    a code from the authenticator app (or a recovery code)."""
    body = json_body()
    challenge = string_field(body, "challenge_token", min_length=1, max_length=200)
    code = string_field(body, "code", min_length=1, max_length=50)
    with db.tx() as cur:
        account = two_factor.finish_login(cur, challenge, code)
        if account is not None:
            pair = identity.new_token_pair(account.id, account.session_version)
            identity.store_new_refresh_token(cur, pair)
    # outside the transaction: a wrong code's failure has been committed
    if account is None:
        raise identity.unauthorized(two_factor.WRONG_CODE)
    return _tokens_response(account, pair)


@api.post("/auth/2fa/setup")
@require_auth
def two_factor_setup():
    """Start enrolment: a new secret for the authenticator app (as text and otpauth URI)."""
    with user_tx() as cur:
        cur.execute("select * from app.me()")
        secret, uri = two_factor.begin(cur, Account.from_row(cur.fetchone()).email)
    response = jsonify(secret=secret, otpauth_uri=uri)
    response.headers["Cache-Control"] = "no-store"
    return response


@api.post("/auth/2fa/enable")
@require_auth
def two_factor_enable():
    """Finish enrolment with the password and a code; the ten recovery codes, shown once."""
    body = json_body()
    password = string_field(body, "password", max_length=1024)
    code = string_field(body, "code", min_length=1, max_length=50)
    with user_tx() as cur:
        codes = two_factor.enable(cur, password, code)
    response = jsonify(recovery_codes=codes)
    response.headers["Cache-Control"] = "no-store"
    return response


@api.post("/auth/2fa/disable")
@require_auth
def two_factor_disable():
    """Turn two-factor sign-in off with the password and a code (or a recovery code)."""
    body = json_body()
    password = string_field(body, "password", max_length=1024)
    code = string_field(body, "code", min_length=1, max_length=50)
    with user_tx() as cur:
        two_factor.disable(cur, password, code)
    return jsonify(detail="Two-factor sign-in is off.")


@api.post("/auth/refresh")
def refresh():
    """Rotate a refresh token. A request that presents the token another request rotated
    seconds ago (a second tab, a retry) gets the very same new pair: its tokens are signed
    from the same claims, and the database confirms the refresh token by its hash."""
    body = json_body()
    presented = string_field(body, "refresh_token", max_length=4096)
    claims = identity.decode_token(presented, "refresh")
    user_id, version = claims["sub"], claims["ver"]
    refresh_jti, access_jti = identity.rotation_jtis(presented)
    issued_at = int(time.time())
    new_refresh, expires_at = identity.refresh_token(user_id, version, issued_at, refresh_jti)
    with db.tx() as cur:
        cur.execute("select * from app.rotate_refresh_token(%s, %s, %s)",
                    (identity.sha256(presented), identity.sha256(new_refresh), expires_at))
        rotation = cur.fetchone()
        if rotation["outcome"] == "repeated":
            issued_at = int(rotation["expires_at"].timestamp()) - current_app.config["REFRESH_TOKEN_TTL"]
            new_refresh, expires_at = identity.refresh_token(user_id, version, issued_at, refresh_jti)
        handed_out = (rotation["outcome"] in ("rotated", "repeated") and rotation["session_version"] == version
                      and rotation["user_id"] == user_id
                      and bytes(rotation["token_hash"]) == identity.sha256(new_refresh))
        account = None
        if handed_out:
            cur.execute("select * from app.me()")
            account = Account.from_row(cur.fetchone())
    # outside the transaction: a reused token's family revocation has been committed
    if account is None:
        if rotation["outcome"] == "disabled":
            raise ApiError(403, "This account is disabled.")
        raise identity.unauthorized("Refresh token is invalid, expired or already used.")
    pair = identity.token_pair(user_id, version, rotation["family_id"], new_refresh, expires_at, issued_at,
                               access_jti)
    return _tokens_response(account, pair)


@api.post("/auth/logout")
@require_auth
def logout():
    """Ends the caller's session (its access tokens stop at once) and the presented refresh
    token's session."""
    body = json_body()
    presented = string_field(body, "refresh_token", max_length=4096)
    session_id = getattr(g.identity, "session_id", None)  # API keys belong to no session
    with user_tx() as cur:
        cur.execute("select app.revoke_refresh_token(%s, %s)", (identity.sha256(presented), session_id))
    return "", 204


@api.get("/auth/me")
@require_auth
def me():
    with user_tx() as cur:
        cur.execute("select * from app.me()")
        account = Account.from_row(cur.fetchone())
    return jsonify(account.public())


@api.post("/auth/password")
@require_auth
def change_password():
    body = json_body()
    current = string_field(body, "current_password", max_length=1024)
    new = string_field(body, "new_password", max_length=1024)
    with user_tx() as cur:
        cur.execute("select * from app.me()")
        account = Account.from_row(cur.fetchone())
        version = accounts.change_password(cur, current, new, account.email)
        # the caller keeps a session: a fresh pair under the new version
        pair = identity.new_token_pair(account.id, version)
        identity.store_new_refresh_token(cur, pair)
    return _tokens_response(account, pair)


FORGOT_ANSWER = "If an account exists for that address, we have sent it a link to reset the password."


@api.post("/auth/verify")
def verify_email():
    token = string_field(json_body(), "token", min_length=1, max_length=200)
    with db.tx() as cur:
        cur.execute("select app.verify_email(%s)", (identity.sha256(token),))
    return jsonify(verified=True)


@api.post("/auth/verify/resend")
@require_auth
def resend_verification():
    with user_tx() as cur:
        cur.execute("select app.resend_verification()")
    response = jsonify(detail="Verification email sent.")
    response.status_code = 202
    return response


@api.post("/auth/password/forgot")
def forgot_password():
    """Always the same 202 whether or not the account exists (no enumeration)."""
    email = string_field(json_body(), "email", max_length=254, strip=True)
    accounts.request_password_reset(email, accounts.client_ip(request))
    response = jsonify(detail=FORGOT_ANSWER)
    response.status_code = 202
    return response


@api.post("/auth/password/reset")
def reset_password():
    body = json_body()
    token = string_field(body, "token", min_length=1, max_length=200)
    new_password = string_field(body, "new_password", max_length=1024)
    accounts.reset_password(token, new_password)
    return jsonify(detail="Password updated. Sign in with your new password.")
