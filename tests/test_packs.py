"""Top-up packs (issue 19): bought with Checkout in payment mode through the Stripe
simulator (today's API shapes, signed webhooks to a live server), granted once per session
whatever the delivery order, clawed back — only the unspent part — on charge.refunded and
charge.dispute.created, on the statement, from the API and the billing page."""
from __future__ import annotations

import random
import re
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest

from .billing_env import session_of, simulated_billing
from .conftest import api_signup, bearer, client_with_own_ip
from .test_auth_ui import csrf_token, sign_up
from .test_credit_buckets import assert_invariants

PACK_PRICES = {"pack_10": ("price_sim_pack_10", 500), "pack_50": ("price_sim_pack_50", 2000),
               "pack_200": ("price_sim_pack_200", 7000)}


@contextmanager
def pack_prices(env):
    """The packs priced at the simulator (one-time prices) and in credit_packs, then unpriced."""
    for pack, (price, amount) in PACK_PRICES.items():
        env.sim.ensure_price(price, unit_amount=amount, product_name=f"Story Genius {pack}", interval=None)
        env.admin.execute("update credit_packs set stripe_price_id = %s where pack = %s", (price, pack))
    try:
        yield
    finally:
        env.admin.execute("update credit_packs set stripe_price_id = null")


@pytest.fixture(scope="module")
def env(database_dsn, media_root, connect, webhook_secret):
    with simulated_billing(database_dsn, media_root, connect("postgres"), webhook_secret) as env:
        with pack_prices(env):
            yield env


@pytest.fixture
def buyer(env):
    """A confirmed API user (5 signup credits)."""
    client = client_with_own_ip(env.app)
    signed = api_signup(client)
    env.admin.execute("update users set is_verified = true where id = %s", (signed["user"]["id"],))
    return type("Buyer", (), {"client": client, "id": signed["user"]["id"], "auth": bearer(signed["access_token"])})


def buy(env, buyer, pack: str = "pack_10", outcome: str = "paid") -> str:
    """POST /v1/billing/buy-pack, then pay on the simulator's hosted Checkout; the session id."""
    response = buyer.client.post("/v1/billing/buy-pack", json={"pack": pack}, headers=buyer.auth)
    assert response.status_code == 200, response.get_json()
    session = session_of(response.get_json()["checkout_url"])
    env.sim.complete_checkout(session, outcome)
    assert env.sim.wait_for_deliveries(15)
    return session


def balance(env, uid) -> int:
    return env.admin.execute("select credits_remaining from subscriptions where user_id = %s", (uid,)).fetchone()[
        "credits_remaining"]


def pack_bucket(env, uid) -> dict:
    [bucket] = env.admin.execute("select * from credit_buckets where user_id = %s and source = 'pack'", (uid,)).fetchall()
    return bucket


def spend(buyer, n: int) -> None:
    for _ in range(n):
        response = buyer.client.post("/v1/shorts/generate", json={"platform": "tiktok", "topic": "pack video"},
                                     headers=buyer.auth)
        assert response.status_code == 202, response.get_json()


def charge_of(env, session: str) -> str:
    intent = env.stripe.v1.checkout.sessions.retrieve(session).payment_intent
    return env.stripe.v1.payment_intents.retrieve(intent).latest_charge


def test_the_packs_are_listed_for_everyone(env):
    body = env.app.test_client().get("/v1/billing/packs").get_json()
    assert [(p["pack"], p["credits"], p["price"], p["on_sale"]) for p in body["packs"]] == [
        ("pack_10", 10, "$5.00", True), ("pack_50", 50, "$20.00", True), ("pack_200", 200, "$70.00", True)]
    assert body["expires_after_months"] == 12


def test_a_paid_pack_checkout_grants_a_bucket_for_twelve_months_once(env, buyer):
    session = buy(env, buyer, "pack_50")
    assert balance(env, buyer.id) == 55
    bucket = pack_bucket(env, buyer.id)
    assert (bucket["amount"], bucket["remaining"]) == (50, 50)
    assert timedelta(days=364) < bucket["expires_at"] - datetime.now(timezone.utc) <= timedelta(days=366)
    stored = env.admin.execute("select checkout_session_id, amount_cents, pack from pack_purchases where user_id = %s",
                               (buyer.id,)).fetchall()
    assert stored == [{"checkout_session_id": session, "amount_cents": 2000, "pack": "pack_50"}]
    # the session at Stripe is a one-off payment of the pack's price
    at_stripe = env.stripe.v1.checkout.sessions.retrieve(session)
    assert (at_stripe.mode, at_stripe.payment_status, at_stripe.amount_total) == ("payment", "paid", 2000)
    # Stripe delivers again: nothing more
    for event in [e for e in env.sim.events if e["data"]["object"].get("id") == session]:
        env.sim.deliver(event)
    assert balance(env, buyer.id) == 55
    assert_invariants(env.admin, buyer.id)


def test_a_delayed_payment_grants_when_it_succeeds_and_never_when_it_fails(env, buyer):
    pending = buy(env, buyer, "pack_10", "delayed")
    assert balance(env, buyer.id) == 5
    env.sim.settle_delayed_payment(pending, succeed=True)
    assert env.sim.wait_for_deliveries(15)
    assert balance(env, buyer.id) == 15
    failing = buy(env, buyer, "pack_10", "delayed")
    env.sim.settle_delayed_payment(failing, succeed=False)
    assert env.sim.wait_for_deliveries(15)
    assert balance(env, buyer.id) == 15


def test_a_refund_after_partial_use_claws_back_only_the_unspent_part(env, buyer):
    session = buy(env, buyer, "pack_10")
    spend(buyer, 8)  # the 5 signup credits expire first, then 3 of the pack
    assert pack_bucket(env, buyer.id)["remaining"] == 7
    charge = charge_of(env, session)
    env.stripe.v1.refunds.create(params={"charge": charge, "amount": 200})  # 40 %: 4 credits
    assert env.sim.wait_for_deliveries(15)
    assert pack_bucket(env, buyer.id)["remaining"] == 3
    env.stripe.v1.refunds.create(params={"charge": charge})  # the rest: all 10, 7 already asked
    assert env.sim.wait_for_deliveries(15)
    assert pack_bucket(env, buyer.id)["remaining"] == 0 and balance(env, buyer.id) == 0
    rows = env.admin.execute("select delta, note from credit_ledger where user_id = %s and reason = 'clawback' "
                             "order by created_at", (buyer.id,)).fetchall()
    assert [r["delta"] for r in rows] == [-4, -3]
    assert "refunded" in rows[0]["note"]
    statement = buyer.client.get("/v1/credits/statement", query_string={"kind": "expired"},
                                 headers=buyer.auth).get_json()["movements"]
    assert [m["delta"] for m in statement] == [-4, -3]
    assert all(m["description"].startswith("Taken back: the purchase was refunded") for m in statement)
    assert_invariants(env.admin, buyer.id)


def test_a_dispute_claws_back_what_is_left_and_a_refunded_video_credit_does_not_return(env, buyer, connect):
    session = buy(env, buyer, "pack_10")
    spend(buyer, 7)
    job = buyer.client.get("/v1/jobs", headers=buyer.auth).get_json()["jobs"][0]["job_id"]
    env.sim.dispute_charge(charge_of(env, session))
    assert env.sim.wait_for_deliveries(15)
    assert pack_bucket(env, buyer.id)["remaining"] == 0 and balance(env, buyer.id) == 0
    # the last video (paid from the pack) fails: its credit belongs to a disputed purchase
    admin = env.admin
    claim = admin.execute("select attempts from app.claim_job(%s)", (job,)).fetchone()
    assert admin.execute("select app.fail_job(%s, %s, 'x') as f", (job, claim["attempts"])).fetchone()["f"]
    assert balance(env, buyer.id) == 0
    assert_invariants(env.admin, buyer.id)


def test_duplicated_and_shuffled_deliveries_grant_once_and_claw_back_the_same(env, buyer):
    """The purchase's and the refund's events, each delivered two or three times, in a
    random order: one grant, the same clawback, whatever the order."""
    env.sim.auto_deliver = False
    try:
        first = len(env.sim.events)
        response = buyer.client.post("/v1/billing/buy-pack", json={"pack": "pack_10"}, headers=buyer.auth)
        session = session_of(response.get_json()["checkout_url"])
        env.sim.complete_checkout(session, "paid")
        spend(buyer, 5)  # the signup credits (the pack arrives only with the deliveries below)
        env.stripe.v1.refunds.create(params={"charge": charge_of(env, session)})
        events = env.sim.events[first:]
    finally:
        env.sim.auto_deliver = True
    assert {"checkout.session.completed", "charge.refunded"} <= {e["type"] for e in events}
    deliveries = events * 2 + random.Random(19).sample(events, len(events) // 2)
    random.Random(7).shuffle(deliveries)
    # at least once, the refund arrives before anything of the purchase
    deliveries.insert(0, next(e for e in events if e["type"] == "charge.refunded"))
    for event in deliveries:
        assert env.sim.deliver(event) == [200]
    grants = env.admin.execute("select count(*) as n from credit_ledger where user_id = %s and reason = 'pack_grant'",
                               (buyer.id,)).fetchone()["n"]
    assert grants == 1
    # whenever the grant arrived, the refund took back everything left of the pack
    assert pack_bucket(env, buyer.id)["remaining"] == 0
    assert_invariants(env.admin, buyer.id)


@pytest.mark.parametrize("body, status", [({"pack": "pack_999"}, 422), ({}, 422), ({"pack": 10}, 422),
                                          ({"pack": "x" * 60}, 422)])
def test_buy_pack_refuses_bad_packs(env, buyer, body, status):
    assert buyer.client.post("/v1/billing/buy-pack", json=body, headers=buyer.auth).status_code == status


def test_an_unverified_address_cannot_buy_a_pack(env):
    client = client_with_own_ip(env.app)
    signed = api_signup(client)
    response = client.post("/v1/billing/buy-pack", json={"pack": "pack_10"}, headers=bearer(signed["access_token"]))
    assert response.status_code == 403 and "Verify" in response.get_json()["detail"]


def test_a_pack_is_bought_from_the_billing_page(env):
    browser = env.app.test_client()
    sign_up(browser)
    email = re.search(r'class="email" href="/account">([^<]+)<', browser.get("/dashboard").get_data(as_text=True))[1]
    uid = env.admin.execute("update users set is_verified = true where email = %s returning id", (email,)).fetchone()["id"]
    page = browser.get("/billing").get_data(as_text=True)
    assert [p for p in re.findall(r'data-pack="(\w+)"', page)] == ["pack_10", "pack_50", "pack_200"]
    response = browser.post("/billing/buy-pack", data={"csrf_token": csrf_token(page), "pack": "pack_200"})
    assert response.status_code == 303 and response.headers["Location"].startswith(env.sim.base_url + "/checkout/")
    env.sim.complete_checkout(session_of(response.headers["Location"]), "paid")
    assert env.sim.wait_for_deliveries(15)
    page = browser.get("/billing").get_data(as_text=True)
    assert "205 credits left" in page and 'data-source="pack"' in page
    assert browser.post("/billing/buy-pack", data={"pack": "pack_10"}).status_code in (302, 303, 400)
    bad = browser.post("/billing/buy-pack", data={"csrf_token": csrf_token(page), "pack": "nope"},
                       follow_redirects=True).get_data(as_text=True)
    assert "pack: must be one of" in bad
    assert balance(env, uid) == 205


def test_pack_prices_come_from_the_environment():
    import psycopg

    from web.migrate import migrate

    from .conftest import throwaway_database

    with throwaway_database("sg_packprice") as dsn:
        migrate(dsn, environ={"STRIPE_PRICE_PACK_10": "price_pack_ten", "STRIPE_PRICE_PACK_200": "price_pack_big"})
        with psycopg.connect(dsn) as conn:
            prices = dict(conn.execute("select pack, stripe_price_id from credit_packs").fetchall())
    assert prices == {"pack_10": "price_pack_ten", "pack_50": None, "pack_200": "price_pack_big"}
