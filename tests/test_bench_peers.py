"""The benchmark's peer and limit endpoints (bench/app.py) answer as the figures assume:
if one of them broke, `make bench` would compare against errors."""
from __future__ import annotations

import json

import psycopg
import pytest
import stripe

from bench.app import BENCH_PASSWORD, PEER_SCHEMA, create_bench_app
from web.config import role_dsn
from web.migrate import migrate

from .conftest import throwaway_database

SECRET = "whsec_bench_test_" + "b" * 20


@pytest.fixture(scope="module")
def bench(media_root):
    with throwaway_database("sg_bench_peers") as dsn:
        migrate(dsn, environ={})
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(PEER_SCHEMA)
        app = create_bench_app({"TESTING": True, "DATABASE_URL": dsn, "APP_DATABASE_URL": role_dsn(dsn, "sg_app"),
                                "MEDIA_ROOT": str(media_root), "BENCH_PEER_DSN": dsn, "BENCH_WEBHOOK_SECRET": SECRET})
        client = app.test_client()
        body = client.post("/v1/auth/signup", json={"email": "bench-peer@example.com", "password": BENCH_PASSWORD}).get_json()
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("insert into seed_peer.subscriptions values (%s, 2)", (body["user"]["id"],))
        yield client, dsn, {"Authorization": f"Bearer {body['access_token']}"}
        app.extensions["sg_pool"].close()
        app.extensions["bench_seed_pool"].close()


def test_the_seed_peer_spends_its_own_balance_then_answers_402(bench):
    client, dsn, auth = bench
    statuses = [client.post("/_bench/seed/generate", json={"platform": "tiktok", "topic": "coffee"},
                            headers=auth).status_code for _ in range(3)]
    assert statuses == [202, 202, 402]
    with psycopg.connect(dsn) as admin:
        assert admin.execute("select count(*) from seed_peer.jobs").fetchone()[0] == 2
        assert admin.execute("select count(*) from pgqueuer where entrypoint = 'seed_render'").fetchone()[0] == 2


def test_the_write_limit_authenticates_like_the_api_and_writes_one_row(bench):
    client, dsn, auth = bench
    assert client.post("/_bench/limit/write", headers=auth).status_code == 202
    assert client.post("/_bench/limit/write", headers={"Authorization": "Bearer nonsense"}).status_code == 401
    with psycopg.connect(dsn) as admin:
        assert admin.execute("select count(*) from bench_writes").fetchone()[0] == 1


def test_the_bare_login_verifies_one_password(bench):
    client, _, _ = bench
    assert client.post("/_bench/bare/login", json={"email": "x@example.com", "password": BENCH_PASSWORD}).status_code == 200
    assert client.post("/_bench/bare/login", json={"email": "x@example.com", "password": "wrong-one-here"}).status_code == 401


def test_the_bare_webhook_checks_the_signature_only(bench):
    client, _, _ = bench
    payload = json.dumps({"id": "evt_bench", "type": "customer.subscription.updated"})
    good = stripe.WebhookSignature.generate_signature_header(payload, SECRET)
    assert client.post("/_bench/bare/webhook", data=payload, headers={"Stripe-Signature": good}).status_code == 200
    bad = stripe.WebhookSignature.generate_signature_header(payload, "whsec_other_" + "x" * 20)
    assert client.post("/_bench/bare/webhook", data=payload, headers={"Stripe-Signature": bad}).status_code == 400
