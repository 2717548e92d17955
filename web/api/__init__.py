"""The JSON API under /v1, for the SPA and API-key clients. Bearer auth only (no cookies),
so it is exempt from CSRF.

Every authenticated request passes `require_auth`, which, in this order:
1. reads the bearer credential and, for an API key, names the scope the operation needs
   (`KEY_SCOPES`; the database refuses a key without it, naming the scope);
2. counts the request against the caller's per-minute limit, in Postgres, and answers
   429 past it (`RateLimit-*` headers on every answer, Retry-After on the 429);
3. for a POST with an `Idempotency-Key`, carries the request out at most once per key
   (sql/42_idempotency.sql): a retry gets the kept answer with `Idempotent-Replayed: true`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from functools import wraps

import psycopg
from flask import Blueprint, Response, current_app, g, make_response, request

from .. import db, identity
from ..errors import ApiError

api = Blueprint("api", __name__, url_prefix="/v1")

# The scope an API key needs for each operation (its endpoint name). "any": every key may.
# An operation not listed needs a signed-in session (an access token): keys cannot manage
# keys, billing, passwords or sessions.
KEY_SCOPES = {
    "api.generate": "videos:write",
    "api.create_batch": "videos:write",
    "api.get_job": "videos:read",
    "api.rename_job": "videos:write",
    "api.delete_job": "videos:write",
    "api.list_jobs": "videos:read",
    "api.get_batch": "videos:read",
    "api.credits": "credits:read",
    "api.usage": "credits:read",
    "api.me": "any",
}
# Paths whose operations all need one scope (the customer webhooks' routes).
KEY_SCOPE_PREFIXES = {"/v1/webhooks": "webhooks:manage"}

# Operations whose work is only database writes that a failure should undo: their
# idempotency key is written in the work's own transaction, so key and work commit
# together. The others (Stripe calls, sign-in checks whose failures must be recorded)
# hold their key in a transaction of its own first.
ATOMIC_IDEMPOTENT = {"api.generate", "api.create_batch", "api.create_key"}
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Headers of a kept answer that a replay repeats.
KEPT_HEADERS = ("Location",)
# How long a retry waits for the first request with its key to commit before a 409
# (config IDEMPOTENCY_WAIT_SECONDS).
IDEMPOTENCY_WAIT_SECONDS = 10


def required_scope() -> str | None:
    """The scope an API key needs for this request's operation (None: keys may not)."""
    scope = KEY_SCOPES.get(request.endpoint or "")
    if scope is None:
        for prefix, prefix_scope in KEY_SCOPE_PREFIXES.items():
            if request.path == prefix or request.path.startswith(prefix + "/"):
                return prefix_scope
    return scope


def require_auth(view):
    """Resolve the Authorization header into g.identity (checked again in the database
    by `user_tx`), or answer 401; then the rate limit and the Idempotency-Key."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        credential = identity.from_authorization_header(request.headers.get("Authorization"))
        if isinstance(credential, identity.ApiKey):
            credential = dataclasses.replace(credential, scope=required_scope())
        g.identity = credential
        count_request(credential)
        if request.method == "POST" and IDEMPOTENCY_HEADER in request.headers:
            return idempotent(view, args, kwargs)
        return view(*args, **kwargs)

    return wrapped


# -- rate limits -------------------------------------------------------------------------

def rate_limits_on() -> bool:
    """RATE_LIMITS: `plan` (the default: each plan's limit) or `off`. Apps built for tests
    (TESTING) have them off unless the test asks, so suites that make thousands of calls
    as one user measure what they test."""
    setting = current_app.config.get("RATE_LIMITS")
    if setting is None:
        return not current_app.testing
    return setting != "off"


def count_request(credential: identity.Identity) -> None:
    """Count this request against its caller's limit (one upsert in Postgres, committed
    on its own so refused requests count too); 429 past it. The caller is the API key, or
    the access token's user."""
    if not rate_limits_on():
        return
    key_hash = credential.key_hash if isinstance(credential, identity.ApiKey) else None
    user_id = credential.user_id if isinstance(credential, identity.AccessToken) else None
    rows = db.call_for_nobody("select * from app.count_api_request(%s, %s)", (key_hash, user_id))
    if not rows:
        return  # unknown caller (the identity check refuses it) or a plan without a limit
    limit = rows[0]
    g.rate_limit = limit
    if limit["limited"]:
        raise ApiError(429, f"Rate limit reached: {limit['request_limit']} requests a minute on your plan. "
                            f"Retry in {limit['reset_seconds']} s.", {"Retry-After": limit["reset_seconds"]})


@api.after_request
def rate_limit_headers(response: Response) -> Response:
    """The IETF draft's RateLimit-* headers on every counted answer, refusals included."""
    limit = g.get("rate_limit")
    if limit is not None:
        response.headers["RateLimit-Limit"] = str(limit["request_limit"])
        response.headers["RateLimit-Remaining"] = str(limit["remaining"])
        response.headers["RateLimit-Reset"] = str(limit["reset_seconds"])
        response.headers["RateLimit-Policy"] = f"{limit['request_limit']};w=60"
    return response


# -- Idempotency-Key ---------------------------------------------------------------------

class _Refused(Exception):
    """A view answered with an error status: roll its transaction back, answer as it did."""

    def __init__(self, response: Response):
        self.response = response


def _idempotency_key() -> str:
    key = request.headers.get(IDEMPOTENCY_HEADER, "")
    if not 1 <= len(key) <= 255 or not all(" " <= ch <= "~" for ch in key):
        raise ApiError(422, f"{IDEMPOTENCY_HEADER}: must be 1 to 255 printable ASCII characters "
                            "(a UUID is a good choice)", field=IDEMPOTENCY_HEADER)
    return key


def request_fingerprint() -> bytes:
    """What "the same request" means for a key: method, path and body. A JSON body is
    compared by meaning (key order and spacing do not matter), anything else byte for byte."""
    raw = request.get_data(cache=True)
    try:
        body = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    except (ValueError, RecursionError):
        body = raw
    return hashlib.sha256(b"\0".join([request.method.encode(), request.path.encode(), body])).digest()


def _replay(kept: dict) -> Response:
    if kept["response_body"] is None:
        raise ApiError(409, "This request was already carried out with this Idempotency-Key, and its answer held "
                            "a secret that is shown only once. Use a new key to ask again.")
    response = Response(kept["response_body"], status=kept["status"],
                        mimetype="application/json" if kept["response_body"] else None)
    for name, value in (kept["response_headers"] or {}).items():
        response.headers[name] = value
    response.headers[REPLAYED_HEADER] = "true"
    return response


def _kept(response: Response) -> tuple:
    """(status, body, headers) to keep for a successful answer; no body for an answer
    that must not be stored anywhere (Cache-Control: no-store: a new key, a token)."""
    body = None if "no-store" in (response.headers.get("Cache-Control") or "") else response.get_data(as_text=True)
    headers = {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}
    return response.status_code, body, json.dumps(headers)


def _begin(cur, key: str) -> dict:
    try:
        cur.execute("select * from app.begin_idempotent_request(%s, %s, %s, %s, make_interval(secs => %s))",
                    (key, request.method, request.path, request_fingerprint(),
                     current_app.config.get("IDEMPOTENCY_WAIT_SECONDS", IDEMPOTENCY_WAIT_SECONDS)))
    except psycopg.Error as error:
        # the first request with the key is still running (held, or not committed within
        # the wait): ask again soon
        if error.sqlstate in ("P0409", "55P03"):
            raise ApiError(409, "A request with this Idempotency-Key is still being processed. Retry it later.",
                           {"Retry-After": 1}) from error
        raise
    return cur.fetchone()


def idempotent(view, args, kwargs) -> Response:
    """Carry a POST with an Idempotency-Key out at most once; a retry gets the kept answer."""
    key = _idempotency_key()
    if request.endpoint in ATOMIC_IDEMPOTENT:
        try:
            with db.request_transaction(g.identity) as cur:
                kept = _begin(cur, key)
                if kept["replay"]:
                    return _replay(kept)
                response = make_response(view(*args, **kwargs))
                if not 200 <= response.status_code < 300:
                    raise _Refused(response)
                cur.execute("select app.finish_idempotent_request(%s, %s, %s, %s)", (key, *_kept(response)))
            return response
        except _Refused as refused:
            return refused.response

    with db.tx(identity=g.identity) as cur:
        kept = _begin(cur, key)
        # the key's owner, as checked now: the view may end the very session that sent it
        # (logout, password change) and the key must still be settled
        owner = cur.execute("select app.current_user_id() as id").fetchone()["id"]
    if kept["replay"]:
        return _replay(kept)
    try:
        response = make_response(view(*args, **kwargs))
    except BaseException:
        _abandon(owner, key)
        raise
    if 200 <= response.status_code < 300:
        with db.tx(owner) as cur:
            cur.execute("select app.finish_idempotent_request(%s, %s, %s, %s)", (key, *_kept(response)))
    else:
        _abandon(owner, key)
    return response


def _abandon(owner, key: str) -> None:
    with db.tx(owner) as cur:
        cur.execute("select app.abandon_idempotent_request(%s)", (key,))


# -- query parameters --------------------------------------------------------------------

@api.before_request
def refuse_unknown_query_parameters():
    """A misspelt parameter (`limt=5`) is an error, not silently the default: the
    parameters each operation takes are the ones the OpenAPI document lists."""
    from ..openapi import query_parameters

    unknown = set(request.args) - query_parameters(request.url_rule.rule if request.url_rule else "",
                                                   request.method)
    if unknown:
        raise ApiError(422, f"{sorted(unknown)[0]}: unknown query parameter", field=sorted(unknown)[0])


def register(app) -> None:
    from . import account, auth, billing, branding, keys, shorts, user  # noqa: F401 - route modules attach to `api`
    from . import referrals, webhooks  # noqa: F401 - issue 20: referrals, webhooks to customers

    app.register_blueprint(api)
