"""Billing end to end against the Stripe simulator (today's API shapes: web/stripe_simulator):
the app calls it through the real stripe library, the simulator sends its own signed
webhooks to a live server, and the worker's re-read (web.stripe_sync, run here the way the
worker's `stripe_sync` handler runs it) applies what Stripe says. One live subscription per
customer; upgrades now, downgrades and cancellations at the period's end."""
from __future__ import annotations

import json
from types import SimpleNamespace

import psycopg
import pytest
from psycopg.rows import dict_row

from web.config import role_dsn
from web.stripe_sync import reconcile

from .billing_env import PRICES, session_of, settle, simulated_billing
from .conftest import api_signup, balance, bearer, client_with_own_ip, ledger_sum, verify
from .test_credits import invariant_violations, run_concurrently

DAY = 86400


@pytest.fixture(scope="module")
def env(database_dsn, media_root, connect, webhook_secret):
    with simulated_billing(database_dsn, media_root, connect("postgres"), webhook_secret) as env:
        yield env


@pytest.fixture
def client(env):
    return client_with_own_ip(env.app)


@pytest.fixture
def user(client, env):
    tokens = api_signup(client)
    verify(env.admin, tokens["user"]["id"])
    return SimpleNamespace(id=tokens["user"]["id"], auth=bearer(tokens["access_token"]), tokens=tokens)


def state(env, user) -> dict:
    return env.admin.execute("select * from subscriptions where user_id = %s", (user.id,)).fetchone()


def signup_credits_left(env, user) -> int:
    """What is left of the signup credits: they expire a month after sign-up, which in these
    tests falls within a second of the first paid period's end, on either side of it."""
    return env.admin.execute("select coalesce(sum(remaining), 0)::int as n from credit_buckets "
                             "where user_id = %s and source = 'signup'", (user.id,)).fetchone()["n"]


def movements(env, user) -> list[tuple[str, int]]:
    rows = env.admin.execute("select reason, delta from credit_ledger where user_id = %s order by created_at, delta",
                             (user.id,)).fetchall()
    return [(r["reason"], r["delta"]) for r in rows]


def subscribe(env, client, user, tier: str = "starter", outcome: str = "paid") -> dict:
    response = client.post("/v1/billing/create-checkout-session", json={"tier": tier}, headers=user.auth)
    assert response.status_code == 200, response.get_json()
    session = env.sim.complete_checkout(session_of(response.get_json()["checkout_url"]), outcome)
    settle(env)
    return session


def stripe_subscriptions(env, customer: str) -> list:
    return env.stripe.v1.subscriptions.list(params={"customer": customer, "status": "all"}).data


def change(client, user, tier: str):
    return client.post("/v1/billing/change-plan", json={"tier": tier}, headers=user.auth)


# -- Checkout ------------------------------------------------------------------------------

def test_checkout_asks_stripe_for_the_right_session(client, env, user):
    response = client.post("/v1/billing/create-checkout-session", json={"tier": "pro"}, headers=user.auth)
    assert response.status_code == 200
    url = response.get_json()["checkout_url"]
    session = env.stripe.v1.checkout.sessions.retrieve(session_of(url))
    customer = state(env, user)["stripe_customer_id"]
    assert (session.mode, session.customer, session.status) == ("subscription", customer, "open")
    assert session.metadata.to_dict() == {"user_id": user.id, "tier": "pro"}
    assert session.client_reference_id == user.id
    assert session.success_url == "https://app.storygenius.test/billing/success?session_id={CHECKOUT_SESSION_ID}"
    lines = env.stripe.v1.checkout.sessions.line_items.list(session.id).data
    assert [(line.price.id, line.quantity) for line in lines] == [(PRICES["pro"], 1)]
    assert env.stripe.v1.customers.retrieve(customer).metadata["user_id"] == user.id


def test_ten_concurrent_checkouts_create_one_customer_and_leave_one_session_open(env, user):
    import urllib.request

    def checkout(_):
        request = urllib.request.Request(f"{env.live.url}/v1/billing/create-checkout-session", method="POST",
                                         data=json.dumps({"tier": "starter"}).encode(),
                                         headers={**user.auth, "Content-Type": "application/json"})
        with urllib.request.urlopen(request) as response:
            return response.status

    assert run_concurrently(10, checkout) == [200] * 10
    email = env.admin.execute("select email from users where id = %s", (user.id,)).fetchone()["email"]
    assert len(env.stripe.v1.customers.list(params={"email": email}).data) == 1
    customer = state(env, user)["stripe_customer_id"]
    open_sessions = env.stripe.v1.checkout.sessions.list(params={"customer": customer, "status": "open"}).data
    assert len(open_sessions) == 1  # a new Checkout expires the older ones: no second subscription from a stale tab


def test_purchase_through_checkout(client, env, user):
    subscribe(env, client, user, "starter")
    row = state(env, user)
    [subscription] = stripe_subscriptions(env, row["stripe_customer_id"])
    assert (row["tier"], row["status"], row["stripe_subscription_id"]) == ("starter", "active", subscription.id)
    assert row["current_period_end"].timestamp() == subscription["items"].data[0].current_period_end
    assert balance(env.admin, user.id) == 25 == ledger_sum(env.admin, user.id)
    assert movements(env, user) == [("signup_grant", 5), ("plan_grant", 20)]
    body = client.get("/v1/billing/subscription", headers=user.auth).get_json()
    assert (body["tier"], body["status"], body["credits_granted_this_period"], body["pending_change"]) == \
        ("starter", "active", 25, None)


def test_a_checkout_link_pays_once(client, env, user):
    """The old test mode's simulated link could be paid again and again (+100 credits each time)."""
    response = client.post("/v1/billing/create-checkout-session", json={"tier": "pro"}, headers=user.auth)
    session_id = session_of(response.get_json()["checkout_url"])
    env.sim.complete_checkout(session_id, "paid")
    with pytest.raises(Exception, match="no longer available"):
        env.sim.complete_checkout(session_id, "paid")
    settle(env)
    assert balance(env.admin, user.id) == 105
    assert len(stripe_subscriptions(env, state(env, user)["stripe_customer_id"])) == 1


def test_a_second_checkout_is_refused_while_a_subscription_lives(client, env, user):
    subscribe(env, client, user, "starter")
    response = client.post("/v1/billing/create-checkout-session", json={"tier": "pro"}, headers=user.auth)
    assert response.status_code == 409
    assert response.get_json()["change_plan_url"] == "/billing"


def test_a_subscription_we_have_not_heard_of_yet_also_blocks_checkout(client, env, user):
    """Made in another tab, the portal or the dashboard: Stripe knows it before we do."""
    client.post("/v1/billing/create-checkout-session", json={"tier": "starter"}, headers=user.auth)
    customer = state(env, user)["stripe_customer_id"]
    env.sim.auto_deliver = False
    try:
        made_elsewhere = env.stripe.v1.subscriptions.create(params={
            "customer": customer, "items": [{"price": PRICES["agency"]}], "metadata": {"user_id": user.id}})
    finally:
        env.sim.auto_deliver = True
    response = client.post("/v1/billing/create-checkout-session", json={"tier": "starter"}, headers=user.auth)
    assert response.status_code == 409
    settle(env)  # the refusal queued a re-read of the one found
    row = state(env, user)
    assert (row["tier"], row["stripe_subscription_id"]) == ("agency", made_elsewhere.id)


def test_unpaid_delayed_checkout_gives_nothing_until_paid(client, env, user):
    subscribe(env, client, user, "pro", outcome="delayed")
    row = state(env, user)
    assert (row["tier"], row["status"], row["subscribed_tier"]) == ("free", "incomplete", "pro")
    assert balance(env.admin, user.id) == 5
    keys = client.post("/v1/keys", json={"name": "too early"}, headers=user.auth)
    assert keys.status_code == 403


@pytest.mark.parametrize("succeed, tier, status, credits", [(True, "pro", "active", 105),
                                                             (False, "free", "incomplete_expired", 5)])
def test_a_delayed_payment_settles(client, env, user, succeed, tier, status, credits):
    session = subscribe(env, client, user, "pro", outcome="delayed")
    env.sim.settle_delayed_payment(session["id"], succeed=succeed)
    settle(env)
    row = state(env, user)
    assert (row["tier"], row["status"], balance(env.admin, user.id)) == (tier, status, credits)
    if not succeed:  # free to start again
        again = client.post("/v1/billing/create-checkout-session", json={"tier": "starter"}, headers=user.auth)
        assert again.status_code == 200


def test_same_second_events_in_the_worst_order_end_active(client, env, user):
    """subscription.updated (active), invoice.paid, checkout.session.completed, then
    subscription.created (incomplete), all in one second, used to end pro/incomplete."""
    response = client.post("/v1/billing/create-checkout-session", json={"tier": "pro"}, headers=user.auth)
    env.sim.auto_deliver = False
    try:
        first = len(env.sim.events)
        env.sim.complete_checkout(session_of(response.get_json()["checkout_url"]), "paid")
        made = env.sim.events[first:]
    finally:
        env.sim.auto_deliver = True
    assert len({e["created"] for e in made}) == 1
    by_type = {}
    for event in made:
        by_type.setdefault(event["type"], event)
    order = [by_type["customer.subscription.updated"], by_type["invoice.paid"],
             by_type["checkout.session.completed"], by_type["customer.subscription.created"]]
    assert order[-1]["data"]["object"]["status"] == "incomplete"
    for event in order + [e for e in made if e not in order]:
        env.sim.deliver(event)
    settle(env)
    row = state(env, user)
    assert (row["tier"], row["status"]) == ("pro", "active")
    assert balance(env.admin, user.id) == 105
    assert client.post("/v1/keys", json={"name": "allowed"}, headers=user.auth).status_code == 201
    assert client.post("/v1/billing/create-checkout-session", json={"tier": "agency"},
                       headers=user.auth).status_code == 409


# -- plan changes --------------------------------------------------------------------------------

def test_upgrade_modifies_the_subscription_and_grants_the_difference_once_paid(client, env, user):
    subscribe(env, client, user, "starter")
    before = state(env, user)
    calls = len(env.sim.requests)
    response = change(client, user, "pro")
    assert response.status_code == 202 and response.get_json()["action"] == "upgraded"
    [update] = [r for r in env.sim.requests[calls:] if r["method"] == "POST"]
    subscription_id = before["stripe_subscription_id"]
    assert update["path"] == f"/v1/subscriptions/{subscription_id}"
    assert (update["params"]["proration_behavior"], update["params"]["payment_behavior"]) == \
        ("always_invoice", "error_if_incomplete")
    assert update["params"]["items"][0]["price"] == PRICES["pro"]
    settle(env)
    row = state(env, user)
    subscriptions = stripe_subscriptions(env, row["stripe_customer_id"])
    assert len(subscriptions) == 1 and subscriptions[0]["items"].data[0].price.id == PRICES["pro"]
    assert (row["tier"], row["current_period_end"]) == ("pro", before["current_period_end"])
    assert movements(env, user) == [("signup_grant", 5), ("plan_grant", 20), ("upgrade_grant", 80)]
    upgrade_invoice = env.stripe.v1.invoices.list(params={"customer": row["stripe_customer_id"]}).data[0]
    assert upgrade_invoice.billing_reason == "subscription_update" and upgrade_invoice.status == "paid"


def test_a_declined_card_on_upgrade_is_402_and_changes_nothing(client, env, user):
    subscribe(env, client, user, "starter")
    env.sim.set_payment_failure(state(env, user)["stripe_customer_id"], True)
    response = change(client, user, "agency")
    assert response.status_code == 402 and "declined" in response.get_json()["detail"]
    settle(env)
    row = state(env, user)
    [subscription] = stripe_subscriptions(env, row["stripe_customer_id"])
    assert subscription["items"].data[0].price.id == PRICES["starter"] and row["tier"] == "starter"
    assert balance(env.admin, user.id) == 25


def test_downgrade_waits_for_the_period_end_then_renews_at_the_lower_plan(client, env, user):
    subscribe(env, client, user, "pro")
    period_end = state(env, user)["current_period_end"]
    response = change(client, user, "starter")
    assert response.status_code == 202 and response.get_json()["action"] == "downgrade_scheduled"
    settle(env)
    row = state(env, user)
    assert (row["tier"], row["pending_tier"], row["pending_change_at"]) == ("pro", "starter", period_end)
    pending = client.get("/v1/billing/subscription", headers=user.auth).get_json()["pending_change"]
    assert pending == {"tier": "starter", "effective_at": period_end.isoformat()}
    env.sim.advance(int(period_end.timestamp() - env.sim.now()) + 60)
    settle(env)
    row = state(env, user)
    assert (row["tier"], row["pending_tier"]) == ("starter", None)
    assert row["current_period_start"] == period_end
    # Pro's unused 100 expire; at most one Starter allowance (20) rolls over into the new period
    assert balance(env.admin, user.id) == 20 + 20 + signup_credits_left(env, user) == ledger_sum(env.admin, user.id)
    assert ("expiry", -100) in movements(env, user) and movements(env, user)[-2:] == [("renewal", 20), ("rollover", 20)]


def test_undo_a_downgrade(client, env, user):
    subscribe(env, client, user, "agency")
    change(client, user, "pro")
    settle(env)
    assert state(env, user)["pending_tier"] == "pro"
    response = change(client, user, "agency")
    assert response.status_code == 202 and response.get_json()["action"] == "downgrade_canceled"
    settle(env)
    assert (state(env, user)["tier"], state(env, user)["pending_tier"]) == ("agency", None)


def test_cancel_at_period_end_resume_then_cancel_for_good(client, env, user):
    subscribe(env, client, user, "pro")
    assert client.post("/v1/billing/cancel", headers=user.auth).status_code == 202
    settle(env)
    row = state(env, user)
    assert (row["tier"], row["cancel_at_period_end"]) == ("pro", True)
    assert client.post("/v1/billing/cancel", headers=user.auth).status_code == 409
    assert client.post("/v1/billing/resume", headers=user.auth).status_code == 202
    settle(env)
    assert state(env, user)["cancel_at_period_end"] is False
    assert change(client, user, "free").get_json()["action"] == "cancel_scheduled"  # Free = cancel
    settle(env)
    period_end = state(env, user)["current_period_end"]
    env.sim.advance(int(period_end.timestamp() - env.sim.now()) + 60)
    settle(env)
    row = state(env, user)
    assert (row["tier"], row["status"], row["cancel_at_period_end"]) == ("free", "canceled", False)
    # granted credits stay until they expire: the simulated period end is a month ahead of this
    # server's clock, so none has expired yet
    assert balance(env.admin, user.id) == 105
    assert row["period_anchor"] == period_end
    # the period ends on this server's clock too
    env.admin.execute("update subscriptions set current_period_end = now() - interval '1 minute' where user_id = %s",
                      (user.id,))
    env.admin.execute("update credit_buckets set expires_at = now() - interval '1 minute' where user_id = %s",
                      (user.id,))
    env.worker.execute("select app.renew_free_subscriptions()")
    assert balance(env.admin, user.id) == 5 == ledger_sum(env.admin, user.id)
    # and a new subscription can start
    assert client.post("/v1/billing/create-checkout-session", json={"tier": "starter"},
                       headers=user.auth).status_code == 200


def test_failed_renewal_is_past_due_then_recovers(client, env, user):
    subscribe(env, client, user, "starter")
    customer = state(env, user)["stripe_customer_id"]
    env.sim.set_payment_failure(customer, True)
    env.sim.advance(int(state(env, user)["current_period_end"].timestamp() - env.sim.now()) + 60)
    settle(env)
    row = state(env, user)
    assert (row["tier"], row["status"]) == ("starter", "past_due")
    notices = env.admin.execute("select count(*) as n from email_outbox where user_id = %s and kind = 'payment_failed'",
                                (user.id,)).fetchone()["n"]
    assert notices == 1
    generate = client.post("/v1/shorts/generate", json={"platform": "tiktok", "topic": "still working"},
                           headers=user.auth)
    assert generate.status_code == 202
    env.sim.set_payment_failure(customer, False)
    env.sim.advance(3 * DAY + 60)  # Stripe's next retry succeeds
    settle(env)
    row = state(env, user)
    assert (row["tier"], row["status"]) == ("starter", "active")
    # the renewal, and the first period's unused credits rolled over (19 + the signup credits
    # the video did not take: at most one allowance, 20)
    assert balance(env.admin, user.id) == 20 + 20 == ledger_sum(env.admin, user.id)


def test_a_paused_subscription_has_no_paid_features(client, env, user):
    subscribe(env, client, user, "pro")
    env.sim.pause_subscription(state(env, user)["stripe_subscription_id"])
    settle(env)
    row = state(env, user)
    assert (row["tier"], row["status"], row["subscribed_tier"]) == ("free", "paused", "pro")


@pytest.mark.parametrize("body, status", [({"tier": "platinum"}, 422), ({}, 422), ({"tier": 3}, 422)])
def test_change_plan_rejects_bad_tiers(client, user, body, status):
    assert client.post("/v1/billing/change-plan", json=body, headers=user.auth).status_code == status


def test_change_plan_from_free_goes_to_checkout_and_free_to_free_is_409(client, env, user):
    response = change(client, user, "starter")
    assert response.status_code == 202 and response.get_json()["action"] == "checkout"
    assert response.get_json()["checkout_url"].startswith(env.sim.base_url)
    assert change(client, user, "free").status_code == 409
    assert client.post("/v1/billing/cancel", headers=user.auth).status_code == 409


# -- Stripe's failures become answers -------------------------------------------------------------

FAULTS = [("card_declined", 402, None), ("rate_limit", 503, "5"), ("api_error", 503, "5"),
          ("connection", 503, "5"), ("authentication", 503, "60"), ("invalid_request", 503, "60")]


@pytest.mark.parametrize("fault, status, retry_after", FAULTS)
def test_every_stripe_error_class_is_a_clear_answer_on_the_api(client, env, user, fault, status, retry_after):
    subscribe(env, client, user, "starter")
    env.sim.fail_next(fault, times=3)  # the stripe library itself retries twice
    response = change(client, user, "pro")
    env.sim._faults.clear()
    assert response.status_code == status, response.get_json()
    assert response.headers.get("Retry-After") == retry_after
    detail = response.get_json()["detail"]
    assert "Traceback" not in detail and "sk_test" not in detail
    settle(env)
    assert state(env, user)["tier"] == "starter"


@pytest.mark.parametrize("fault", [f[0] for f in FAULTS])
def test_every_stripe_error_class_is_a_flash_message_on_the_pages(env, fault):
    from .test_auth_ui import csrf_token, sign_up

    browser = env.app.test_client()
    sign_up(browser)
    email = browser.get("/account").get_data(as_text=True).split('class="email" href="/account">')[1].split("<")[0]
    env.admin.execute("update users set is_verified = true where email = %s", (email,))
    env.sim.fail_next(fault, times=3)
    page = browser.get("/pricing").get_data(as_text=True)
    response = browser.post("/billing/change-plan", data={"csrf_token": csrf_token(page), "tier": "pro"})
    env.sim._faults.clear()
    assert response.status_code == 302
    billing = browser.get("/billing")
    assert billing.status_code == 200
    assert 'class="flash flash-error"' in billing.get_data(as_text=True)


def test_the_customer_survives_a_failed_checkout_so_a_retry_makes_no_second_one(client, env, user):
    env.admin.execute("update plans set stripe_price_id = 'price_does_not_exist' where tier = 'agency'")
    try:
        failed = client.post("/v1/billing/create-checkout-session", json={"tier": "agency"}, headers=user.auth)
    finally:
        env.admin.execute("update plans set stripe_price_id = %s where tier = 'agency'", (PRICES["agency"],))
    assert failed.status_code == 503
    customer = state(env, user)["stripe_customer_id"]
    assert customer is not None
    assert client.post("/v1/billing/create-checkout-session", json={"tier": "agency"},
                       headers=user.auth).status_code == 200
    email = env.admin.execute("select email from users where id = %s", (user.id,)).fetchone()["email"]
    assert [c.id for c in env.stripe.v1.customers.list(params={"email": email}).data] == [customer]


# -- reconciliation ---------------------------------------------------------------------------------

def test_sync_stripe_repairs_a_corrupted_row_once(client, env, user):
    subscribe(env, client, user, "pro")
    customer = state(env, user)["stripe_customer_id"]
    env.admin.execute("update subscriptions set tier = 'agency', status = 'past_due', cancel_at_period_end = true "
                      "where user_id = %s", (user.id,))
    runner = env.app.test_cli_runner()
    first = runner.invoke(args=["sync-stripe", "--customer", customer])
    assert first.exit_code == 0, first.output
    assert f"{customer}: sub_" in first.output and ": synced" in first.output
    row = state(env, user)
    assert (row["tier"], row["status"], row["cancel_at_period_end"]) == ("pro", "active", False)
    drift = env.admin.execute("select field, before, after from stripe_drift where user_id = %s order by field",
                              (user.id,)).fetchall()
    assert [(d["field"], d["before"], d["after"]) for d in drift] == [
        ("cancel_at_period_end", "true", "false"), ("status", "past_due", "active"), ("tier", "agency", "pro")]
    second = runner.invoke(args=["sync-stripe", "--customer", customer])
    assert ": unchanged" in second.output
    assert env.admin.execute("select count(*) as n from stripe_drift where user_id = %s",
                             (user.id,)).fetchone()["n"] == 3
    analyst = psycopg.connect(role_dsn(env.config["DATABASE_URL"], "sg_analyst"), row_factory=dict_row)
    with analyst:
        shown = analyst.execute("select field, before, after from reporting.stripe_drift where subscription_id = %s",
                                (row["stripe_subscription_id"],)).fetchall()
    assert len(shown) == 3


def test_reconciliation_reports_a_second_live_subscription(client, env, user):
    subscribe(env, client, user, "starter")
    customer = state(env, user)["stripe_customer_id"]
    extra = env.stripe.v1.subscriptions.create(params={"customer": customer, "items": [{"price": PRICES["pro"]}]})
    settle(env)
    assert state(env, user)["tier"] == "starter"  # never adopted while the current one lives
    [line] = reconcile(env.worker, env.stripe, customer)
    assert line.extra == (extra.id,)
    assert env.admin.execute("select count(*) as n from stripe_drift where subscription_id = %s and "
                             "field = 'extra live subscription'", (extra.id,)).fetchone()["n"] == 1
    reconcile(env.worker, env.stripe, customer)
    assert env.admin.execute("select count(*) as n from stripe_drift where subscription_id = %s",
                             (extra.id,)).fetchone()["n"] == 1


# -- the whole lifecycle, in one order and in a thousand shuffled ones ----------------------------------

def test_upgrade_downgrade_cancel_resume_leaves_one_subscription_and_the_books_right(client, env, user):
    subscribe(env, client, user, "starter")
    assert change(client, user, "pro").status_code == 202
    settle(env)
    assert change(client, user, "starter").get_json()["action"] == "downgrade_scheduled"
    settle(env)
    assert client.post("/v1/billing/cancel", headers=user.auth).get_json()["action"] == "cancel_scheduled"
    settle(env)
    row = state(env, user)
    assert (row["tier"], row["pending_tier"], row["cancel_at_period_end"]) == ("pro", None, True)
    assert client.post("/v1/billing/resume", headers=user.auth).get_json()["action"] == "resumed"
    settle(env)
    row = state(env, user)
    assert (row["tier"], row["cancel_at_period_end"]) == ("pro", False)
    assert len(stripe_subscriptions(env, row["stripe_customer_id"])) == 1
    assert balance(env.admin, user.id) == 105 == ledger_sum(env.admin, user.id)
    assert invariant_violations(env.admin) == []
    statement = client.get("/v1/billing/invoices", headers=user.auth).get_json()["invoices"]
    assert [i["status"] for i in statement] == ["paid", "paid"]
    assert all(i["hosted_invoice_url"] for i in statement)
