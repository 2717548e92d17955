"""Billing against localstripe, where it has the call (customers, plans, payment methods,
subscriptions and their updates, invoices, its own signed webhooks): its objects are in
Stripe's 2017 shape, so this is the old-shape variant of the whole path — events applied,
subscriptions re-read — beside the simulator's current shape (test_billing.py). A recording
proxy plays Checkout and the portal, which localstripe lacks."""
from __future__ import annotations

import json
import urllib.request
from types import SimpleNamespace

import psycopg
import pytest
import stripe

from web import create_app
from web.config import role_dsn
from web.stripe_sync import sync_subscription

from .conftest import api_signup, balance, bearer, client_with_own_ip, ledger_sum, stripe_prices, verify, wait_for
from .stripe_fakes import LiveServer, RecordingProxy, start_localstripe
from .test_credits import run_concurrently

PRICES = {"starter": "price_ls_starter", "pro": "price_ls_pro", "agency": "price_ls_agency"}
AMOUNTS = {"starter": 900, "pro": 2900, "agency": 9900}


@pytest.fixture(scope="module")
def env(database_dsn, media_root, connect, webhook_secret):
    localstripe, localstripe_url = start_localstripe()
    proxy = RecordingProxy(localstripe_url).start()
    admin = connect("postgres")
    stripe_api = stripe.StripeClient("sk_test_localstripe", base_addresses={"api": localstripe_url}).v1
    for tier, price in PRICES.items():
        stripe_api.plans.create(params={"id": price, "amount": AMOUNTS[tier], "currency": "usd",
                                        "interval": "month", "product": {"name": tier.title()}})
    app = create_app({"TESTING": True, "DATABASE_URL": database_dsn, "SECRET_KEY": "billing-tests-" + "k" * 40,
                      "APP_DATABASE_URL": role_dsn(database_dsn, "sg_app"), "MEDIA_ROOT": str(media_root),
                      "BILLING_MODE": "stripe", "STRIPE_SECRET_KEY": "sk_test_localstripe",
                      "STRIPE_API_BASE": proxy.url, "FRONTEND_URL": "https://app.storygenius.test"})
    live = LiveServer(app)
    register = urllib.request.Request(f"{localstripe_url}/_config/webhooks/storygenius", method="POST",
                                      data=f"url={live.url}/v1/billing/webhook&secret={webhook_secret}".encode())
    urllib.request.urlopen(register)
    worker = psycopg.connect(role_dsn(database_dsn, "sg_worker"), autocommit=True)
    with stripe_prices(admin, PRICES):
        yield SimpleNamespace(app=app, live=live, proxy=proxy, stripe=stripe_api, admin=admin, worker=worker,
                              client=stripe.StripeClient("sk_test_localstripe", base_addresses={"api": localstripe_url}))
    worker.close()
    live.stop()
    proxy.stop()
    localstripe.terminate()
    localstripe.wait(timeout=10)
    app.extensions["sg_pool"].close()


@pytest.fixture
def client(env):
    return client_with_own_ip(env.app)


@pytest.fixture
def user(client, env):
    tokens = api_signup(client)
    verify(env.admin, tokens["user"]["id"])
    return SimpleNamespace(id=tokens["user"]["id"], auth=bearer(tokens["access_token"]))


def row(env, user) -> dict:
    return env.admin.execute("select * from subscriptions where user_id = %s", (user.id,)).fetchone()


def customer_of(client, env, user) -> str:
    """The user's customer at localstripe, made the way the app makes it (by a checkout)."""
    response = client.post("/v1/billing/create-checkout-session", json={"tier": "starter"}, headers=user.auth)
    assert response.status_code == 200, response.get_json()
    return row(env, user)["stripe_customer_id"]


def card_on_file(env, customer: str) -> None:
    method = env.stripe.payment_methods.create(params={"type": "card", "card": {
        "number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}})
    env.stripe.payment_methods.attach(method.id, params={"customer": customer})
    env.stripe.customers.update(customer, params={"invoice_settings": {"default_payment_method": method.id}})


def reread(env, user) -> str:
    """What the worker does for the queued re-read of the user's subscription."""
    return sync_subscription(env.worker, env.client, row(env, user)["stripe_subscription_id"])


def test_checkout_request_and_ten_concurrent_checkouts_make_one_customer(env, user):
    def checkout(_):
        request = urllib.request.Request(f"{env.live.url}/v1/billing/create-checkout-session", method="POST",
                                         data=json.dumps({"tier": "pro"}).encode(),
                                         headers={**user.auth, "Content-Type": "application/json"})
        with urllib.request.urlopen(request) as response:
            return response.status

    before = len(env.proxy.requests)
    assert run_concurrently(10, checkout) == [200] * 10
    sent = [r for r in env.proxy.requests[before:] if r.path == "/v1/checkout/sessions"]
    assert len({r.form["customer"] for r in sent}) == 1
    first = sent[0].form
    assert first["mode"] == "subscription" and first["line_items[0][price]"] == PRICES["pro"]
    assert first["metadata[user_id]"] == user.id and first["subscription_data[metadata][tier]"] == "pro"
    assert all(r.headers.get("Idempotency-Key", "").startswith(f"checkout-{user.id}-") for r in sent)
    email = env.admin.execute("select email from users where id = %s", (user.id,)).fetchone()["email"]
    assert len(env.stripe.customers.list(params={"email": email}).data) == 1


def test_localstripes_own_signed_events_and_its_subscriptions_in_the_old_shape(client, env, user):
    customer = customer_of(client, env, user)
    card_on_file(env, customer)
    subscription = env.stripe.subscriptions.create(params={
        "customer": customer, "items": [{"plan": PRICES["starter"]}], "metadata": {"user_id": user.id}})
    # localstripe's old-shape invoice (top-level `subscription`, `plan` lines) grants the plan
    assert wait_for(lambda: balance(env.admin, user.id) == 25, timeout=15)
    assert row(env, user)["stripe_subscription_id"] == subscription.id
    assert reread(env, user) == "synced"  # the old-shape subscription: top-level period, item `plan`
    state = row(env, user)
    assert (state["tier"], state["status"]) == ("starter", "active")
    assert int(state["current_period_end"].timestamp()) == subscription.current_period_end
    # a plan change made at Stripe (an operator in the dashboard, say) reaches us on the re-read
    item = subscription["items"].data[0]
    env.stripe.subscriptions.update(subscription.id, params={"items": [{"id": item.id, "plan": PRICES["pro"]}]})
    assert reread(env, user) == "synced" and row(env, user)["tier"] == "pro"
    env.stripe.subscriptions.update(subscription.id, params={"cancel_at_period_end": True})
    reread(env, user)
    assert row(env, user)["cancel_at_period_end"] is True
    env.stripe.subscriptions.cancel(subscription.id)
    assert wait_for(lambda: env.admin.execute(
        "select count(*) as n from stripe_events where type = 'customer.subscription.deleted' and subscription_id = %s",
        (subscription.id,)).fetchone()["n"] == 1, timeout=15)
    reread(env, user)
    state = row(env, user)
    assert (state["tier"], state["status"]) == ("free", "canceled")
    assert balance(env.admin, user.id) == 25 == ledger_sum(env.admin, user.id)  # granted credits stay
    # and with it ended, a new Checkout may start
    assert client.post("/v1/billing/create-checkout-session", json={"tier": "pro"},
                       headers=user.auth).status_code == 200


def test_a_live_subscription_at_localstripe_blocks_a_second_checkout(client, env, user):
    customer = customer_of(client, env, user)
    card_on_file(env, customer)
    env.stripe.subscriptions.create(params={"customer": customer, "items": [{"plan": PRICES["agency"]}]})
    response = client.post("/v1/billing/create-checkout-session", json={"tier": "starter"}, headers=user.auth)
    assert response.status_code == 409


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
