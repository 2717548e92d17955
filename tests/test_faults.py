"""Fault injection: the database dropping connections under load, a storm of duplicated,
shuffled webhooks from concurrent senders, and hostile request bodies."""
from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from web import create_app
from web.config import role_dsn
from web.migrate import migrate

from .conftest import PASSWORD_HASH, api_signup, bearer, client_with_own_ip, throwaway_database, verify
from .stripe_fakes import LiveServer
from .stripe_payloads import MONTH, checkout_completed, invoice_paid, payment_failed, signed, subscription_event

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


# -- webhook storm -----------------------------------------------------------------------

STORM_USERS = 40


def storm_events(prices: dict[str, str]) -> list[dict]:
    """About 20 events per customer with distinct timestamps, in the order Stripe made them."""
    rng = random.Random(7)
    base = int(time.time()) - 3 * MONTH
    events = []
    for n in range(STORM_USERS):
        customer, subscription = f"cus_storm_{n}", f"sub_storm_{n}"
        t = base + n * 1000
        tier = rng.choice(["starter", "pro", "agency"])
        checkout = checkout_completed("", customer, subscription, tier, created=t)
        del checkout["data"]["object"]["metadata"]["user_id"], checkout["data"]["object"]["client_reference_id"]
        events += [checkout, invoice_paid(customer, subscription, prices[tier], t, created=t + 1)]
        clock = t + 2
        for step in range(18):
            clock += 1
            kind = rng.random()
            if kind < 0.6:
                tier = rng.choice(["starter", "pro", "agency"])
                status = rng.choice(["active", "active", "past_due"])
                events.append(subscription_event("customer.subscription.updated", customer, subscription,
                                                 prices[tier], status, t, created=clock))
            elif kind < 0.8:
                events.append(payment_failed(customer, subscription, created=clock))
            else:
                period = t + (1 + step) * MONTH // 8
                events.append(invoice_paid(customer, subscription, prices[tier], period, reason="subscription_cycle",
                                           created=clock))
        if n % 5 == 0:
            events.append(subscription_event("customer.subscription.deleted", customer, subscription, prices[tier],
                                             "canceled", t, created=clock + 1))
    return events


def make_storm_users(conn) -> None:
    for n in range(STORM_USERS):
        uid = conn.execute("select id from app.signup(%s, %s, null)", (f"storm-{n}@example.com", PASSWORD_HASH)
                           ).fetchone()["id"]
        conn.execute("update subscriptions set stripe_customer_id = %s where user_id = %s", (f"cus_storm_{n}", uid))


STATE = """select u.email, s.tier, s.status, s.credits_remaining, s.credits_total, s.stripe_subscription_id,
                  s.current_period_start, s.current_period_end
             from users u join subscriptions s on s.user_id = u.id
            where u.email like 'storm-%%' order by u.email"""


def test_a_thousand_shuffled_duplicated_webhooks_from_16_senders_equal_in_order(database_dsn, connect):
    prices = {"starter": "price_storm_starter", "pro": "price_storm_pro", "agency": "price_storm_agency"}
    unique = storm_events(prices)
    rng = random.Random(11)
    deliveries = unique + [rng.choice(unique) for _ in range(len(unique) // 4)]  # 20% of deliveries are repeats
    rng.shuffle(deliveries)
    assert len(deliveries) >= 1000
    secret = "whsec_storm_" + "s" * 20

    with throwaway_database("sg_storm") as storm_dsn, throwaway_database("sg_inorder") as ordered_dsn:
        for dsn in (storm_dsn, ordered_dsn):
            migrate(dsn, environ={f"STRIPE_PRICE_{t.upper()}": p for t, p in prices.items()})
            with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
                make_storm_users(conn)
        # 16 concurrent senders against a live server
        app = create_app({"TESTING": True, "DATABASE_URL": storm_dsn, "DB_POOL_MAX": 16,
                          "STRIPE_SECRET_KEY": "sk_test_storm", "STRIPE_WEBHOOK_SECRET": secret})
        live = LiveServer(app)
        statuses, lock = [], threading.Lock()
        queue = list(deliveries)

        def sender():
            while True:
                with lock:
                    if not queue:
                        return
                    payload = queue.pop()
                body, headers = signed(payload, secret)
                request = urllib.request.Request(live.url + "/v1/billing/webhook", data=body, headers=headers)
                try:
                    with urllib.request.urlopen(request) as response:
                        outcome = json.load(response)["outcome"]
                        code = response.status
                except urllib.error.HTTPError as error:
                    code, outcome = error.code, error.read().decode()
                with lock:
                    statuses.append((code, outcome))

        senders = [threading.Thread(target=sender) for _ in range(16)]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join()
        live.stop()
        app.extensions["sg_pool"].close()
        assert all(code == 200 for code, _ in statuses), [s for s in statuses if s[0] != 200][:5]
        assert not [o for _, o in statuses if o.startswith("failed")]

        # the reference: each unique event once, in the order Stripe created them
        with psycopg.connect(ordered_dsn, autocommit=True, row_factory=dict_row) as conn:
            for payload in sorted(unique, key=lambda e: e["created"]):
                conn.execute("select app.record_stripe_event(%s, %s, %s)",
                             (payload["id"], payload["type"], json.dumps(payload)))
                conn.execute("select app.apply_stripe_event(%s)", (payload["id"],))
            expected = conn.execute(STATE).fetchall()
        with psycopg.connect(storm_dsn, row_factory=dict_row) as conn:
            actual = conn.execute(STATE).fetchall()
            stored = conn.execute("select count(*) as n, count(processed_at) as done from stripe_events").fetchone()
            violations = conn.execute("select count(*) as n from subscriptions s where credits_remaining <> "
                                      "(select sum(delta) from credit_ledger l where l.user_id = s.user_id)").fetchone()
    assert stored == {"n": len(unique), "done": len(unique)}
    assert violations["n"] == 0
    assert actual == expected


# -- hostile bodies ------------------------------------------------------------------------

POST_ROUTES = ["/v1/auth/signup", "/v1/auth/login", "/v1/auth/refresh", "/v1/auth/logout", "/v1/auth/password",
               "/v1/keys", "/v1/shorts/generate", "/v1/billing/create-checkout-session", "/v1/billing/webhook"]
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
