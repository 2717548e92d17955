"""Stripe billing end to end: localstripe plays Stripe's API (and sends its own signed
webhooks to a live server), a recording proxy plays Checkout and the portal, and the
tests send signed events the way Stripe does, in every order and multiplicity."""
from __future__ import annotations

import json
import time
import urllib.request
from types import SimpleNamespace

import pytest
import stripe

from web import create_app
from web.config import role_dsn

from .conftest import acting_as, api_signup, balance, bearer, client_with_own_ip, ledger_sum, verify, wait_for
from .stripe_fakes import LiveServer, RecordingProxy, start_localstripe
from .stripe_payloads import (MONTH, checkout_completed, event, invoice_paid, payment_failed, signed,
                              subscription_event)
from .test_credits import invariant_violations, run_concurrently

WEBHOOK_SECRET = "whsec_test_" + "x" * 32
PRICES = {"starter": "price_starter_test", "pro": "price_pro_test", "agency": "price_agency_test"}
AMOUNTS = {"starter": 900, "pro": 2900, "agency": 9900}


@pytest.fixture(scope="module")
def env(database_dsn, media_root, connect):
    localstripe, localstripe_url = start_localstripe()
    proxy = RecordingProxy(localstripe_url).start()
    admin = connect("postgres")
    stripe_api = stripe.StripeClient("sk_test_localstripe", base_addresses={"api": localstripe_url}).v1
    for tier, price in PRICES.items():
        admin.execute("update plans set stripe_price_id = %s where tier = %s", (price, tier))
        stripe_api.plans.create(params={"id": price, "amount": AMOUNTS[tier], "currency": "usd",
                                        "interval": "month", "product": {"name": tier.title()}})
    app = create_app({"TESTING": True, "DATABASE_URL": database_dsn, "SECRET_KEY": "billing-tests-" + "k" * 40,
                      "APP_DATABASE_URL": role_dsn(database_dsn, "sg_app"), "MEDIA_ROOT": str(media_root),
                      "STRIPE_SECRET_KEY": "sk_test_localstripe", "STRIPE_API_BASE": proxy.url,
                      "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET, "FRONTEND_URL": "https://app.storygenius.test"})
    live = LiveServer(app)
    register = urllib.request.Request(f"{localstripe_url}/_config/webhooks/storygenius", method="POST",
                                      data=f"url={live.url}/v1/billing/webhook&secret={WEBHOOK_SECRET}".encode())
    urllib.request.urlopen(register)
    yield SimpleNamespace(app=app, live=live, proxy=proxy, stripe=stripe_api, admin=admin)
    live.stop()
    proxy.stop()
    localstripe.terminate()
    localstripe.wait(timeout=10)
    app.extensions["sg_pool"].close()
    for tier in PRICES:
        admin.execute("update plans set stripe_price_id = null where tier = %s", (tier,))


@pytest.fixture
def client(env):
    return client_with_own_ip(env.app)


@pytest.fixture
def user(client, env):
    tokens = api_signup(client)
    verify(env.admin, tokens["user"]["id"])
    return SimpleNamespace(id=tokens["user"]["id"], auth=bearer(tokens["access_token"]), tokens=tokens)


def post_event(client, payload, secret=WEBHOOK_SECRET, timestamp=None):
    body, headers = signed(payload, secret, timestamp)
    return client.post("/v1/billing/webhook", data=body, headers=headers)


def subscription_row(env, user_id) -> dict:
    return env.admin.execute("select * from subscriptions where user_id = %s", (user_id,)).fetchone()


def grants(env, user_id) -> list[tuple[str, int]]:
    rows = env.admin.execute("select reason, delta from credit_ledger where user_id = %s order by created_at, reason",
                             (user_id,)).fetchall()
    return [(r["reason"], r["delta"]) for r in rows]


def customer_of(client, env, user) -> str:
    """Create the user's Stripe customer the way the app does (via a checkout)."""
    response = client.post("/v1/billing/create-checkout-session", json={"tier": "starter"}, headers=user.auth)
    assert response.status_code == 200, response.get_json()
    return subscription_row(env, user.id)["stripe_customer_id"]


# -- plans and checkout ----------------------------------------------------------------

def test_plans_are_public(client):
    response = client.get("/v1/billing/plans")
    assert response.status_code == 200
    plans = response.get_json()["plans"]
    assert [(p["tier"], p["credits"], p["price_cents"]) for p in plans] == [
        ("free", 5, 0), ("starter", 20, 900), ("pro", 100, 2900), ("agency", 500, 9900)]
    assert plans[2]["features"]["api_keys"] is True


def test_checkout_sends_the_right_request_to_stripe(client, env, user):
    before = len(env.proxy.requests)
    response = client.post("/v1/billing/create-checkout-session", json={"tier": "pro"}, headers=user.auth)
    assert response.status_code == 200
    assert response.get_json()["checkout_url"].startswith("https://checkout.stripe.test/")
    sent = env.proxy.requests[before]
    customer = subscription_row(env, user.id)["stripe_customer_id"]
    assert sent.path == "/v1/checkout/sessions"
    assert sent.form["mode"] == "subscription" and sent.form["customer"] == customer
    assert sent.form["line_items[0][price]"] == PRICES["pro"] and sent.form["line_items[0][quantity]"] == "1"
    assert sent.form["metadata[user_id]"] == user.id and sent.form["metadata[tier]"] == "pro"
    assert sent.form["subscription_data[metadata][tier]"] == "pro"
    assert sent.form["client_reference_id"] == user.id
    assert sent.form["success_url"] == "https://app.storygenius.test/billing/success?session_id={CHECKOUT_SESSION_ID}"
    assert sent.form["cancel_url"] == "https://app.storygenius.test/billing/canceled"
    assert sent.headers.get("Idempotency-Key", "").startswith(f"checkout-{user.id}-")
    # the customer really exists at Stripe, with our user in its metadata
    assert env.stripe.customers.retrieve(customer).metadata["user_id"] == user.id


def test_ten_concurrent_checkouts_create_one_customer(env, user):
    def checkout(_):
        request = urllib.request.Request(f"{env.live.url}/v1/billing/create-checkout-session", method="POST",
                                         data=json.dumps({"tier": "starter"}).encode(),
                                         headers={**user.auth, "Content-Type": "application/json"})
        with urllib.request.urlopen(request) as response:
            return response.status

    before = len(env.proxy.requests)
    assert run_concurrently(10, checkout) == [200] * 10
    customers = {r.form["customer"] for r in env.proxy.requests[before:]}
    assert len(customers) == 1
    email = env.admin.execute("select email from users where id = %s", (user.id,)).fetchone()["email"]
    assert len(env.stripe.customers.list(params={"email": email}).data) == 1


@pytest.mark.parametrize("payload, status", [
    ({"tier": "free"}, 422), ({"tier": "platinum"}, 422), ({}, 422), ({"tier": 3}, 422)])
def test_checkout_rejects_bad_tiers(client, user, payload, status):
    assert client.post("/v1/billing/create-checkout-session", json=payload, headers=user.auth).status_code == status


def test_checkout_for_the_current_tier_is_409(client, env, user):
    env.admin.execute("update subscriptions set tier = 'starter' where user_id = %s", (user.id,))
    response = client.post("/v1/billing/create-checkout-session", json={"tier": "starter"}, headers=user.auth)
    assert response.status_code == 409


def test_checkout_needs_a_signed_in_user(client):
    assert client.post("/v1/billing/create-checkout-session", json={"tier": "starter"}).status_code == 401


def test_checkout_needs_a_verified_address(client):
    tokens = api_signup(client)
    response = client.post("/v1/billing/create-checkout-session", json={"tier": "starter"},
                           headers=bearer(tokens["access_token"]))
    assert response.status_code == 403 and "Verify your email" in response.get_json()["detail"]


def test_portal(client, env, user):
    response = client.get("/v1/billing/portal", headers=user.auth)
    assert response.status_code == 404 and "subscribe" in response.get_json()["detail"]
    customer = customer_of(client, env, user)
    response = client.get("/v1/billing/portal", headers=user.auth)
    assert response.status_code == 200
    assert response.get_json()["portal_url"].startswith("https://billing.stripe.test/")
    sent = env.proxy.requests[-1]
    assert sent.path == "/v1/billing_portal/sessions" and sent.form["customer"] == customer
    assert sent.form["return_url"] == "https://app.storygenius.test/billing"


# -- the purchase ------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["checkout first", "invoice first"])
def test_purchase_grants_the_plan_once_in_either_order(client, env, user, order):
    customer = customer_of(client, env, user)
    subscription = f"sub_test_{order.split()[0]}_{user.id[:8]}"
    start = int(time.time())
    events = [checkout_completed(user.id, customer, subscription, "starter"),
              invoice_paid(customer, subscription, PRICES["starter"], start)]
    if order == "invoice first":
        events.reverse()
    for payload in events:
        response = post_event(client, payload)
        assert response.status_code == 200 and response.get_json()["outcome"] == "applied"
    row = subscription_row(env, user.id)
    assert row["tier"] == "starter" and row["status"] == "active" and row["stripe_subscription_id"] == subscription
    assert balance(env.admin, user.id) == 25 == ledger_sum(env.admin, user.id)
    assert [g for g in grants(env, user.id) if g[0] == "plan_grant"] == [("plan_grant", 20)]


def test_same_event_five_times_concurrently_has_one_effect(env, user, client):
    customer = customer_of(client, env, user)
    payload = checkout_completed(user.id, customer, f"sub_dup_{user.id[:8]}", "pro")
    clients = [client_with_own_ip(env.app) for _ in range(5)]
    statuses = run_concurrently(5, lambda i: post_event(clients[i], payload).status_code)
    assert statuses == [200] * 5
    assert balance(env.admin, user.id) == 105
    stored = env.admin.execute("select count(*) as n, bool_and(processed_at is not null) as done from stripe_events "
                               "where id = %s", (payload["id"],)).fetchone()
    assert stored == {"n": 1, "done": True}


def test_one_invoice_under_two_event_ids_grants_once(client, env, user):
    customer = customer_of(client, env, user)
    subscription = f"sub_twice_{user.id[:8]}"
    start = int(time.time())
    first = invoice_paid(customer, subscription, PRICES["starter"], start, invoice_id="in_same")
    second = invoice_paid(customer, subscription, PRICES["starter"], start, invoice_id="in_same",
                          event_type="invoice.payment_succeeded")
    assert post_event(client, first).status_code == 200
    assert post_event(client, second).status_code == 200
    assert balance(env.admin, user.id) == 25


def test_subscription_update_before_checkout_and_stale_updates_lose(client, env, user):
    customer = customer_of(client, env, user)
    subscription = f"sub_order_{user.id[:8]}"
    now = int(time.time())
    newest = subscription_event("customer.subscription.updated", customer, subscription, PRICES["pro"], "active",
                                now, created=now + 20)
    older = subscription_event("customer.subscription.updated", customer, subscription, PRICES["starter"], "past_due",
                               now, created=now + 10)
    checkout = checkout_completed(user.id, customer, subscription, "starter", created=now)
    for payload in (newest, checkout, older):
        assert post_event(client, payload).status_code == 200
    row = subscription_row(env, user.id)
    assert (row["tier"], row["status"]) == ("pro", "active")
    assert int(row["stripe_updated_at"].timestamp()) == now + 20


def test_renewal_resets_the_balance_with_expiry_and_renewal(client, env, user):
    customer = customer_of(client, env, user)
    subscription = f"sub_cycle_{user.id[:8]}"
    start = int(time.time()) - MONTH
    post_event(client, checkout_completed(user.id, customer, subscription, "starter", created=start))
    post_event(client, invoice_paid(customer, subscription, PRICES["starter"], start, created=start))
    with acting_as(env.admin, user.id):
        env.admin.execute("select * from app.spend_credit_and_create_job('tiktok', 'used before renewal')")
    assert balance(env.admin, user.id) == 24
    renewal = invoice_paid(customer, subscription, PRICES["starter"], start + MONTH, reason="subscription_cycle")
    assert post_event(client, renewal).get_json()["outcome"] == "applied"
    assert balance(env.admin, user.id) == 20 == ledger_sum(env.admin, user.id)
    tail = grants(env, user.id)[-2:]
    assert sorted(tail) == [("expiry", -24), ("renewal", 20)]
    row = subscription_row(env, user.id)
    assert int(row["current_period_start"].timestamp()) == start + MONTH
    # the same renewal again (Stripe retries) changes nothing
    post_event(client, invoice_paid(customer, subscription, PRICES["starter"], start + MONTH,
                                    reason="subscription_cycle"))
    assert balance(env.admin, user.id) == 20
    assert invariant_violations(env.admin) == []


def test_payment_failed_is_past_due_but_still_generates(client, env, user):
    customer = customer_of(client, env, user)
    subscription = f"sub_fail_{user.id[:8]}"
    now = int(time.time())
    post_event(client, checkout_completed(user.id, customer, subscription, "starter", created=now))
    post_event(client, payment_failed(customer, subscription, created=now + 5))
    row = subscription_row(env, user.id)
    assert (row["tier"], row["status"]) == ("starter", "past_due")
    response = client.post("/v1/shorts/generate", json={"platform": "tiktok", "topic": "still working"},
                           headers=user.auth)
    assert response.status_code == 202


def test_deleted_subscription_goes_back_to_free_keeping_credits(client, env, user):
    customer = customer_of(client, env, user)
    subscription = f"sub_del_{user.id[:8]}"
    now = int(time.time())
    post_event(client, checkout_completed(user.id, customer, subscription, "pro", created=now))
    post_event(client, subscription_event("customer.subscription.deleted", customer, subscription, PRICES["pro"],
                                          "canceled", now, created=now + 5))
    row = subscription_row(env, user.id)
    assert (row["tier"], row["status"], row["stripe_subscription_id"]) == ("free", "canceled", None)
    assert balance(env.admin, user.id) == 105  # paid credits stay until the period ends


def test_unknown_event_types_are_stored_and_acknowledged(client, env):
    payload = event("charge.dispute.created", {"id": "dp_1", "object": "dispute"})
    response = post_event(client, payload)
    assert response.status_code == 200 and response.get_json()["outcome"] == "ignored"
    assert env.admin.execute("select processed_at is not null as done from stripe_events where id = %s",
                             (payload["id"],)).fetchone()["done"]


def test_an_event_that_fails_is_kept_and_can_be_reapplied(client, env, user):
    subscription = f"sub_orphan_{user.id[:8]}"
    orphan = invoice_paid("cus_nobody_yet", subscription, PRICES["starter"], int(time.time()))
    response = post_event(client, orphan)
    assert response.status_code == 200 and response.get_json()["outcome"].startswith("failed")
    stored = env.admin.execute("select processed_at, error from stripe_events where id = %s", (orphan["id"],)).fetchone()
    assert stored["processed_at"] is None and "no user" in stored["error"]
    # the customer becomes known; re-applying the stored event now works
    env.admin.execute("update subscriptions set stripe_customer_id = 'cus_nobody_yet' where user_id = %s", (user.id,))
    outcome = env.admin.execute("select app.apply_stripe_event(%s) as o", (orphan["id"],)).fetchone()["o"]
    assert outcome == "applied" and balance(env.admin, user.id) == 25


# -- bad deliveries ------------------------------------------------------------------------

MARKER = "bad-delivery-marker"


def bad_deliveries():
    good = checkout_completed("00000000-0000-0000-0000-000000000000", "cus_x", "sub_x", "starter")
    good["data"]["object"]["description"] = MARKER
    body, headers = signed(good, WEBHOOK_SECRET)
    old_body, old_headers = signed(good, WEBHOOK_SECRET, timestamp=int(time.time()) - 600)
    garbage, garbage_headers = signed(b"{this is not json " + MARKER.encode(), WEBHOOK_SECRET)
    not_event, not_event_headers = signed(b'["a", "list", "' + MARKER.encode() + b'"]', WEBHOOK_SECRET)
    return {
        "bad signature": (body, {**headers, "Stripe-Signature": headers["Stripe-Signature"][:-4] + "beef"}),
        "missing header": (body, {"Content-Type": "application/json"}),
        "ten minutes old": (old_body, old_headers),
        "altered after signing": (body.replace(b"starter", b"agency"), headers),
        "other secret": signed(good, "whsec_someone_else"),
        "garbage json": (garbage, garbage_headers),
        "not an event": (not_event, not_event_headers),
    }


@pytest.mark.parametrize("case", list(bad_deliveries()))
def test_bad_webhook_deliveries_are_400_and_apply_nothing(client, env, case):
    body, headers = bad_deliveries()[case]
    response = client.post("/v1/billing/webhook", data=body, headers=headers)
    assert response.status_code == 400, response.get_json()
    assert "detail" in response.get_json()
    # (localstripe may deliver its own events meanwhile, so look for this delivery, not a count)
    stored = env.admin.execute("select count(*) as n from stripe_events where payload::text like %s",
                               (f"%{MARKER}%",)).fetchone()["n"]
    assert stored == 0


# -- localstripe as the sender ----------------------------------------------------------

def test_localstripe_delivers_its_own_signed_events(client, env, user):
    customer = customer_of(client, env, user)
    method = env.stripe.payment_methods.create(params={"type": "card", "card": {
        "number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}})
    env.stripe.payment_methods.attach(method.id, params={"customer": customer})
    env.stripe.customers.update(customer, params={"invoice_settings": {"default_payment_method": method.id}})
    subscription = env.stripe.subscriptions.create(params={
        "customer": customer, "items": [{"plan": PRICES["starter"]}],
        "metadata": {"user_id": user.id, "tier": "starter"}})
    assert wait_for(lambda: subscription_row(env, user.id)["tier"] == "starter" and
                    balance(env.admin, user.id) == 25, timeout=15), grants(env, user.id)
    assert subscription_row(env, user.id)["stripe_subscription_id"] == subscription.id
    env.stripe.subscriptions.cancel(subscription.id)
    assert wait_for(lambda: subscription_row(env, user.id)["tier"] == "free", timeout=15)
    assert subscription_row(env, user.id)["status"] == "canceled"
    types = {r["type"] for r in env.admin.execute(
        "select type from stripe_events where payload -> 'data' -> 'object' ->> 'customer' = %s", (customer,))}
    assert {"invoice.payment_succeeded", "customer.subscription.deleted"} <= types


# -- renewals and replays ----------------------------------------------------------------

def test_free_renewal_runs_once_per_period(env, client, connect):
    tokens = api_signup(client)
    uid = tokens["user"]["id"]
    with acting_as(env.admin, uid):
        env.admin.execute("select * from app.spend_credit_and_create_job('tiktok', 'spent before the month ends')")
    env.admin.execute("update subscriptions set current_period_start = now() - interval '1 month 1 hour', "
                      "current_period_end = now() - interval '1 hour' where user_id = %s", (uid,))
    worker = connect("sg_worker")
    first = worker.execute("select app.renew_free_subscriptions() as n").fetchone()["n"]
    second = worker.execute("select app.renew_free_subscriptions() as n").fetchone()["n"]
    assert first >= 1 and second == 0
    assert balance(env.admin, uid) == 5 == ledger_sum(env.admin, uid)
    assert [g for g in grants(env, uid) if g[0] in ("renewal", "expiry")] == [("expiry", -4), ("renewal", 5)]
    assert subscription_row(env, uid)["current_period_end"].timestamp() > time.time()


def test_replaying_every_event_twice_changes_nothing(env, client, user):
    customer = customer_of(client, env, user)
    subscription = f"sub_replay_{user.id[:8]}"
    now = int(time.time())
    for payload in (checkout_completed(user.id, customer, subscription, "starter", created=now),
                    invoice_paid(customer, subscription, PRICES["starter"], now, created=now),
                    payment_failed(customer, subscription, created=now + 3)):
        post_event(client, payload)

    def state():
        subs = env.admin.execute("select user_id, tier, status, credits_remaining, credits_total, stripe_subscription_id, "
                                 "current_period_start, current_period_end from subscriptions order by user_id").fetchall()
        ledger = env.admin.execute("select count(*) as n, sum(delta) as s from credit_ledger").fetchone()
        return subs, ledger

    before = state()
    with env.app.app_context():
        runner = env.app.test_cli_runner()
        for _ in range(2):
            result = runner.invoke(args=["replay-stripe-events"])
            assert result.exit_code == 0, result.output
            assert "event(s) replayed" in result.output
    assert state() == before
