"""Fault injection: the database dropping connections under load, a storm of duplicated,
shuffled webhooks from concurrent senders, and hostile request bodies."""
from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from web import create_app
from web.config import role_dsn

from .conftest import api_signup, bearer, client_with_own_ip, verify

CLIENTS = 20
CREDITS = 100_000


def test_connections_killed_under_load_give_503_then_recover(database_dsn, connect):
    """20 clients generate while the app's database connections are terminated over and over."""
    app = create_app({"TESTING": True, "DATABASE_URL": database_dsn, "DB_POOL_MAX": 8,
                      "APP_DATABASE_URL": make_conninfo(role_dsn(database_dsn, "sg_app"), application_name="sg_fault")})
    admin = connect("postgres")
    try:
        tokens = api_signup(client_with_own_ip(app))
        uid = tokens["user"]["id"]
        verify(admin, uid)  # an unconfirmed address spends only one credit
        # enough that the run never meets a 402: a fast machine makes well over 1,000 here
        admin.execute("select app.grant_credits(%s, %s, 'admin_grant', %s)", (uid, CREDITS - 5, f"fault:{uid}"))
        auth = bearer(tokens["access_token"])
        results: list[tuple[int, dict, dict]] = []
        lock = threading.Lock()
        outage = threading.Event()
        stop = threading.Event()

        def client_loop(n: int) -> None:
            client = client_with_own_ip(app)
            while not stop.is_set():
                response = client.post("/v1/shorts/generate", json={"platform": "tiktok", "topic": f"fault {n}"},
                                       headers=auth)
                with lock:
                    results.append((response.status_code, response.get_json(), dict(response.headers)))

        def killer() -> None:
            with psycopg.connect(database_dsn, autocommit=True) as conn:
                while outage.is_set():
                    conn.execute("select pg_terminate_backend(pid) from pg_stat_activity "
                                 "where application_name = 'sg_fault' and pid <> pg_backend_pid()")
                    time.sleep(0.03)

        threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        outage.set()
        kill = threading.Thread(target=killer)
        kill.start()
        time.sleep(2.0)
        outage.clear()
        kill.join()
        during = len(results)
        time.sleep(1.5)  # recovery, with no restart of anything
        stop.set()
        for thread in threads:
            thread.join()
    finally:
        app.extensions["sg_pool"].close()

    statuses = [status for status, _, _ in results]
    assert 500 not in statuses
    assert set(statuses) <= {202, 503}, set(statuses)
    unavailable = [(body, headers) for status, body, headers in results if status == 503]
    assert unavailable, "the outage was not noticed"
    assert all(h.get("Retry-After") and "detail" in b for b, h in unavailable)
    after = [status for status, _, _ in results[during + CLIENTS:]]
    assert after and all(status == 202 for status in after), after[:20]
    accepted = [body["job_id"] for status, body, _ in results if status == 202]
    rows = admin.execute("""
        select j.id::text as id,
               (select count(*) from credit_ledger l where l.job_id = j.id and l.reason = 'render') as debits,
               (select count(*) from pgqueuer q where q.dedupe_key = 'render:' || j.id) as queued
          from jobs j where j.user_id = %s""", (uid,)).fetchall()
    by_id = {r["id"]: r for r in rows}
    assert all(by_id[job]["debits"] == 1 and by_id[job]["queued"] == 1 for job in accepted)
    # no credit lost: every credit taken has its job (a 503 after a commit still has one)
    balance = admin.execute("select credits_remaining from subscriptions where user_id = %s", (uid,)).fetchone()
    assert balance["credits_remaining"] + len(rows) == CREDITS
    assert all(r["debits"] == 1 for r in rows)


# (the webhook storm, 1,000 shuffled and duplicated deliveries of whole Stripe lifecycles,
# is in tests/test_billing_lifecycle.py)


# -- hostile bodies ------------------------------------------------------------------------

POST_ROUTES = ["/v1/auth/signup", "/v1/auth/login", "/v1/auth/refresh", "/v1/auth/logout", "/v1/auth/password",
               "/v1/keys", "/v1/shorts/generate", "/v1/billing/create-checkout-session", "/v1/billing/change-plan",
               "/v1/billing/webhook"]
HOSTILE = {
    "over 1 MB": (b'{"topic": "' + b"a" * (1024 * 1024 + 1) + b'"}', 413),
    "deeply nested": (b'{"a": ' * 50_000 + b"1" + b"}" * 50_000, None),
    "invalid utf-8": (b'{"email": "\xff\xfe\xfa", "password": "\xc3\x28"}', None),
    "nul bytes": (json.dumps({"email": "a\u0000@example.com", "password": "pass\u0000word1", "topic": "nul\u0000",
                              "platform": "tiktok", "name": "\u0000", "tier": "starter\u0000",
                              "refresh_token": "\u0000"}).encode(), None),
    "not json": (b"\x00\x01\x02garbage", None),
    "huge number": (b'{"duration_seconds": 1' + b"0" * 5000 + b', "platform": "tiktok", "topic": "big numbers"}', None),
}


@pytest.mark.parametrize("route", POST_ROUTES)
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_bodies_get_a_4xx_never_a_500(app, route, case):
    client = client_with_own_ip(app)
    tokens = api_signup(client)
    body, expected = HOSTILE[case]
    response = client.post(route, data=body, content_type="application/json",
                           headers={**bearer(tokens["access_token"]), "Stripe-Signature": "t=1,v1=00"})
    assert 400 <= response.status_code < 500, (route, case, response.status_code)
    if expected:
        assert response.status_code == expected
    assert "detail" in response.get_json()
