"""The app as production builds it, plus the peers and limits the benchmarks compare it
with. Mounted only here: none of these routes exists in the service.

  /_bench/select1             one pooled SELECT 1, no transaction, no identity
  POST /_bench/seed/generate  the seed's generate, ported faithfully: the bearer token
                              decoded in Python and its user read, then the balance read,
                              402 if <= 0, job inserted, balance decremented, usage row,
                              queue entry — separate autocommit statements on the seed's
                              tables (schema `seed_peer`, no ledger, no CHECK), as one
                              database user with no row-level security
  POST /_bench/limit/write    the limit for a write: the same identity check as the API
                              (app.authenticate_access in the same round trip) and one
                              durable single-row INSERT, committed
  POST /_bench/bare/login     the limit for a login: parse JSON, one argon2id verify
  POST /_bench/bare/webhook   the limit for a webhook: Stripe's signature checked, nothing stored
"""
from __future__ import annotations

import os
import threading

import stripe
from flask import jsonify, request
from psycopg_pool import ConnectionPool

from web import create_app, csrf, db
from web.api.validation import json_body, string_field
from web.errors import ApiError
from web.identity import decode_token, from_authorization_header
from web.passwords import hasher

BENCH_PASSWORD = "velvet-otter-canyon-42"
_opening = threading.Lock()

# what the bench database gets before the servers start (bench.peers.prepare)
PEER_SCHEMA = """
create schema if not exists seed_peer;
-- the seed's tables: a balance column with no CHECK, jobs and usage without a ledger
create table if not exists seed_peer.subscriptions (user_id uuid primary key, credits_remaining integer not null);
create table if not exists seed_peer.jobs (
  id uuid primary key default gen_random_uuid(), user_id uuid not null, platform text not null,
  topic text not null, status text not null default 'queued', created_at timestamptz not null default now());
create table if not exists seed_peer.usage_logs (
  id uuid primary key default gen_random_uuid(), user_id uuid not null, action text not null,
  credits_used integer not null, job_id uuid, created_at timestamptz not null default now());
create index if not exists seed_jobs_user on seed_peer.jobs (user_id);
create index if not exists seed_usage_user on seed_peer.usage_logs (user_id, created_at);
-- the limit endpoint's one row per request, written as the web role like every API write
create table if not exists public.bench_writes (
  id bigint generated always as identity primary key, user_id uuid not null,
  created_at timestamptz not null default now());
grant select, insert on public.bench_writes to sg_app;
grant usage on sequence public.bench_writes_id_seq to sg_app;
"""


def create_bench_app(test_config: dict | None = None):
    app = create_app(test_config)
    # the seed connected as one all-powerful user; so does its port (the bench database's owner)
    peer_dsn = app.config.get("BENCH_PEER_DSN") or os.environ.get("BENCH_PEER_DSN")
    seed_pool = ConnectionPool(peer_dsn, min_size=1, max_size=app.config["DB_POOL_MAX"],
                               kwargs={"autocommit": True}, open=False) if peer_dsn else None
    app.extensions["bench_seed_pool"] = seed_pool
    stored_hash = hasher.hash(BENCH_PASSWORD)
    webhook_secret = app.config.get("BENCH_WEBHOOK_SECRET") or os.environ.get("BENCH_WEBHOOK_SECRET", "")

    @app.get("/_bench/select1")
    def select1():
        """The floor: one pooled connection, one SELECT 1, no transaction, no identity."""
        with app.extensions["sg_pool"].get().connection() as conn:
            conn.execute("select 1").fetchone()
        return jsonify(ok=1)

    @app.post("/_bench/seed/generate")
    def seed_generate():
        """The seed's endpoint: read, check, then write in separate statements."""
        header = request.headers.get("Authorization", "")
        claims = decode_token(header.removeprefix("Bearer ").strip(), "access")
        body = json_body()
        platform = string_field(body, "platform", max_length=50)
        topic = string_field(body, "topic", max_length=1000)
        if seed_pool.closed:
            with _opening:  # two first requests at once must not both open it
                if seed_pool.closed:
                    seed_pool.open()
        with seed_pool.connection() as conn:
            user = conn.execute("select id from users where id = %s", (claims["sub"],)).fetchone()
            if user is None:
                raise ApiError(401, "Invalid or expired token.")
            [credits] = conn.execute("select credits_remaining from seed_peer.subscriptions where user_id = %s",
                                     (user[0],)).fetchone()
            if credits <= 0:
                raise ApiError(402, "Out of credits.")
            [job_id] = conn.execute("insert into seed_peer.jobs (user_id, platform, topic) values (%s, %s, %s) "
                                    "returning id", (user[0], platform, topic)).fetchone()
            conn.execute("update seed_peer.subscriptions set credits_remaining = credits_remaining - 1 "
                         "where user_id = %s", (user[0],))
            conn.execute("insert into seed_peer.usage_logs (user_id, action, credits_used, job_id) "
                         "values (%s, 'video_generation', 1, %s)", (user[0], job_id))
            conn.execute("insert into pgqueuer (priority, entrypoint, payload, status) "
                         "values (0, 'seed_render', %s, 'queued')", (str(job_id).encode(),))
        response = jsonify(job_id=str(job_id), status="queued", credits_remaining=credits - 1)
        response.status_code = 202
        return response

    @app.post("/_bench/limit/write")
    def limit_write():
        """One durable row for the caller, authenticated as the API does, in one round trip."""
        identity = from_authorization_header(request.headers.get("Authorization"))
        [row] = db.call("insert into bench_writes (user_id) values (current_setting('app.user_id')::uuid) "
                        "returning id", identity=identity)
        response = jsonify(id=row["id"])
        response.status_code = 202
        return response

    @app.post("/_bench/bare/login")
    def bare_login():
        """JSON in, one argon2id verify, JSON out: what any login must at least do."""
        body = json_body()
        string_field(body, "email", max_length=254)
        password = string_field(body, "password", max_length=1024)
        try:
            hasher.verify(stored_hash, password)
        except Exception:  # noqa: BLE001 - a wrong password is a 401 here, as in the real route
            raise ApiError(401, "Invalid email or password.") from None
        return jsonify(ok=True)

    @app.post("/_bench/bare/webhook")
    def bare_webhook():
        """Stripe's signature checked in Python, nothing stored or applied."""
        try:
            stripe.WebhookSignature.verify_header(request.get_data(as_text=True),
                                                  request.headers.get("Stripe-Signature", ""), webhook_secret, 300)
        except stripe.SignatureVerificationError:
            raise ApiError(400, "Bad signature.") from None
        return jsonify(received=True)

    # bearer-token and signed endpoints like the /v1 API, which needs no CSRF token either
    for view in (seed_generate, limit_write, bare_login, bare_webhook):
        csrf.exempt(view)
    return app

