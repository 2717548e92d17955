"""Stripe events and re-reads, at the database's edge: the webhook's signature is checked
in Postgres, credits move only for paid invoices (read by meaning, never by position),
state comes only from re-reads of the subscription, and every Stripe status means
something defined. Events are built in today's API shape, each with an old-shape variant."""
from __future__ import annotations

import json
import time
import uuid
from datetime import timezone
from types import SimpleNamespace

import psycopg
import pytest
from psycopg.types.json import Jsonb

from .conftest import acting_as, balance, ledger_sum, verify
from .stripe_payloads import (MONTH, checkout_completed, event, invoice, invoice_paid, invoice_paid_old_shape,
                              old_proration_line, payment_failed, payment_failed_old_shape, period_line,
                              proration_line, schedule_downgrade, signed, subscription, subscription_old_shape,
                              upgrade_invoice_paid)
from .test_credits import invariant_violations

SECRET = "whsec_events_" + "e" * 24
PRICES = {"starter": "price_ev_starter", "pro": "price_ev_pro", "agency": "price_ev_agency"}
CREDITS = {"free": 5, "starter": 20, "pro": 100, "agency": 500}


@pytest.fixture(scope="module")
def admin(connect):
    admin = connect("postgres")
    admin.execute("insert into stripe_webhook_secrets (secret) values (%s) on conflict do nothing", (SECRET,))
    for tier, price in PRICES.items():
        admin.execute("update plans set stripe_price_id = %s where tier = %s", (price, tier))
    yield admin
    for tier in PRICES:
        admin.execute("update plans set stripe_price_id = null where tier = %s", (tier,))


@pytest.fixture
def customer(make_user, admin):
    """A verified user with a Stripe customer id, and names for their objects."""
    uid = make_user()
    verify(admin, uid)
    cus = f"cus_ev_{uuid.uuid4().hex[:12]}"
    admin.execute("update subscriptions set stripe_customer_id = %s where user_id = %s", (cus, uid))
    return SimpleNamespace(id=str(uid), customer=cus, sub=f"sub_ev_{uuid.uuid4().hex[:12]}")


def post(client, payload, secret=SECRET, timestamp=None):
    body, headers = signed(payload, secret, timestamp)
    return client.post("/v1/billing/webhook", data=body, headers=headers)


def row(admin, user_id) -> dict:
    return admin.execute("select * from subscriptions where user_id = %s", (user_id,)).fetchone()


def ledger(admin, user_id) -> list[tuple[str, int]]:
    rows = admin.execute("select reason, delta from credit_ledger where user_id = %s order by created_at, delta",
                         (user_id,)).fetchall()
    return [(r["reason"], r["delta"]) for r in rows]


def apply_read(conn, obj: dict, source: str = "sync") -> str:
    """What the worker does with a re-read subscription (as sg_worker)."""
    started = conn.execute("select app.start_stripe_sync(%s) as t", (obj["id"],)).fetchone()["t"]
    return conn.execute("select app.apply_stripe_subscription(%s, %s, %s) as o",
                        (Jsonb(obj), started, source)).fetchone()["o"]


# -- the signature, checked by the database ------------------------------------------------

@pytest.mark.parametrize("key, message", [(b"whsec_short", b"1700000000.{}"), (b"k" * 64, b""),
                                          (b"a much longer key than the block size " * 3, "ünïcode".encode() * 100)])
def test_the_databases_hmac_is_rfc_2104(connect, key, message):
    import hashlib
    import hmac

    ours = connect("postgres").execute("select app.hmac_sha256(%s, %s) as h", (key, message)).fetchone()["h"]
    assert bytes(ours) == hmac.new(key, message, hashlib.sha256).digest()


def test_sg_app_cannot_store_a_forged_event(admin, customer, connect):
    """The attack of issue 16: as sg_app, with no secret, a forged paid checkout used to make
    the user Agency with 505 credits. Now the database refuses anything Stripe did not sign."""
    app_conn = connect("sg_app")
    forged = checkout_completed(customer.id, customer.customer, customer.sub, "agency")
    forged_invoice = invoice_paid(customer.customer, customer.sub, PRICES["agency"], int(time.time()))
    for payload in (forged, forged_invoice):
        body = json.dumps(payload)
        for header in (None, "", f"t={int(time.time())},v1={'0' * 64}", "t=abc,v1=xyz",
                       signed(payload, "whsec_guessed_by_attacker")[1]["Stripe-Signature"]):
            with pytest.raises(psycopg.Error) as refused:
                app_conn.execute("select app.receive_stripe_event(%s, %s)", (body, header))
            assert refused.value.sqlstate == "P0400"
    assert admin.execute("select count(*) as n from stripe_events where id in (%s, %s)",
                         (forged["id"], forged_invoice["id"])).fetchone()["n"] == 0
    assert (row(admin, customer.id)["tier"], balance(admin, customer.id)) == ("free", 5)


@pytest.mark.parametrize("function, args", [
    ("app.record_stripe_event(%s, %s, %s)", ("evt_x", "invoice.paid", "{}")),
    ("app.apply_stripe_event(%s)", ("evt_x",)),
    ("app.replay_stripe_events()", ()),
    ("app.apply_stripe_subscription(%s, now())", ("{}",)),
    ("app.renew_credits(gen_random_uuid(), 5, 'renewal', 'k', now(), now())", ()),
])
def test_sg_app_may_not_call_the_functions_that_move_money_or_state(connect, function, args):
    with pytest.raises(psycopg.Error) as denied:
        connect("sg_app").execute(f"select {function}", args)
    assert denied.value.sqlstate == "42501"


@pytest.mark.parametrize("offset, accepted", [(-299, True), (-301, False), (299, True), (301, False)])
def test_signature_time_tolerance_both_ways(client, admin, customer, offset, accepted):
    payload = event("customer.created", {"id": customer.customer, "object": "customer"})
    response = post(client, payload, timestamp=int(time.time()) + offset)
    assert response.status_code == (200 if accepted else 400), response.get_json()
    stored = admin.execute("select count(*) as n from stripe_events where id = %s", (payload["id"],)).fetchone()["n"]
    assert stored == (1 if accepted else 0)


@pytest.mark.parametrize("body, stored", [
    (b'{"id": "evt_nul_%s", "type": "invoice.paid", "created": 1700000000, "x": "a\\u0000b"}', False),
    (b'{"id": "evt_surrogate_%s", "type": "invoice.paid", "created": 1700000000, "x": "\\ud800"}', False),
    (b'{"id": "evt_huge_%s", "type": "invoice.paid", "created": 1e20, "data": {"object": {}}}', True),
    (b'{"id": "evt_old_%s", "type": "invoice.paid", "created": -5, "data": {"object": {}}}', True),
    (b'{"id": "evt_notime_%s", "type": "invoice.paid", "data": {"object": {}}}', True),
    (b'["not", "an", "event", "%s"]', False),
    (b'{"id": "evt_garbage_%s", ', False),
])
def test_hostile_signed_bodies_are_400_never_500(client, admin, body, stored):
    marker = uuid.uuid4().hex
    payload = body.replace(b"%s", marker.encode())
    response = post(client, payload)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "detail" in response.get_json()
    kept = admin.execute("select processed_at, error from stripe_events where id like %s", (f"%{marker}",)).fetchall()
    assert len(kept) == (1 if stored else 0)
    if stored:  # kept as failed, never applied, never retried
        assert kept[0]["processed_at"] is None and kept[0]["error"].startswith("refused")


def test_a_raw_nul_byte_or_non_utf8_body_is_400(client):
    for body in (b'{"id": "evt_\x00"}', b'{"id": "evt_\xff\xfe"}'):
        response = client.post("/v1/billing/webhook", data=body,
                               headers={"Stripe-Signature": f"t={int(time.time())},v1={'a' * 64}"})
        assert response.status_code == 400


# -- credits come from paid invoices, read by meaning -----------------------------------------

def test_first_invoice_grants_the_plan_once_in_either_type_and_shape(client, admin, customer):
    start = int(time.time())
    paid = invoice_paid(customer.customer, customer.sub, PRICES["starter"], start, invoice_id=f"in_{customer.sub}")
    same_invoice = json.loads(json.dumps(paid))
    same_invoice.update(id=f"evt_{uuid.uuid4().hex}", type="invoice.payment_succeeded")
    for payload in (paid, same_invoice, paid):
        assert post(client, payload).status_code == 200
    assert balance(admin, customer.id) == 25 == ledger_sum(admin, customer.id)
    assert [g for g in ledger(admin, customer.id) if g[0] == "plan_grant"] == [("plan_grant", 20)]
    # an invoice changes no state: only the re-read of the subscription does
    assert row(admin, customer.id)["tier"] == "free"
    assert row(admin, customer.id)["stripe_subscription_id"] == customer.sub


def test_old_shape_first_invoice_grants_too(client, admin, customer):
    payload = invoice_paid_old_shape(customer.customer, customer.sub, PRICES["pro"], int(time.time()))
    assert post(client, payload).get_json()["outcome"] == "applied"
    assert balance(admin, customer.id) == 105


def test_an_unpaid_invoice_grants_nothing(client, admin, customer):
    start = int(time.time())
    unpaid = event("invoice.paid", invoice(customer.customer, customer.sub,
                                           [period_line(PRICES["agency"], start, subscription=customer.sub)],
                                           status="open"))
    assert post(client, unpaid).status_code == 200
    assert balance(admin, customer.id) == 5


def test_unpaid_checkout_grants_nothing_and_async_failure_changes_nothing(client, admin, customer):
    """Delayed payment methods: checkout completes `unpaid`; it used to grant and set active."""
    post(client, checkout_completed(customer.id, customer.customer, customer.sub, "pro", payment_status="unpaid"))
    post(client, checkout_completed(customer.id, customer.customer, customer.sub, "pro", payment_status="unpaid",
                                    event_type="checkout.session.async_payment_failed"))
    state = row(admin, customer.id)
    assert (state["tier"], state["status"], balance(admin, customer.id)) == ("free", "active", 5)
    assert state["stripe_subscription_id"] == customer.sub  # linked, so the re-read can find it


def test_a_renewal_with_proration_lines_first_resets_to_the_new_plan_for_the_right_period(client, admin, customer):
    """lines.data[0] used to decide: a renewal whose first lines are prorations reset the
    balance to 20 instead of 100 and set a period already in the past."""
    start = int(time.time()) - MONTH
    post(client, invoice_paid(customer.customer, customer.sub, PRICES["starter"], start, created=start))
    renewal_start = start + MONTH
    prorations = [proration_line(PRICES["starter"], -450, start + MONTH // 2, renewal_start, customer.sub, True),
                  proration_line(PRICES["pro"], 1450, start + MONTH // 2, renewal_start, customer.sub, True)]
    renewal = invoice_paid(customer.customer, customer.sub, PRICES["pro"], renewal_start, reason="subscription_cycle",
                           lines_before=prorations)
    assert post(client, renewal).get_json()["outcome"] == "applied"
    assert [g for g in ledger(admin, customer.id) if g[0] == "renewal"] == [("renewal", 100)]
    # Pro's 100, Starter's unused 20 rolled over, the signup credits (a month left)
    assert balance(admin, customer.id) == 100 + 20 + 5 == ledger_sum(admin, customer.id)
    renewal_rows = admin.execute("select period_start from credit_ledger where user_id = %s and reason = 'renewal'",
                                 (customer.id,)).fetchall()
    assert [int(r["period_start"].timestamp()) for r in renewal_rows] == [renewal_start]


def test_old_shape_renewal_with_prorations_first(client, admin, customer):
    start = int(time.time()) - MONTH
    post(client, invoice_paid_old_shape(customer.customer, customer.sub, PRICES["starter"], start))
    renewal = invoice_paid_old_shape(customer.customer, customer.sub, PRICES["agency"], start + MONTH,
                                     reason="subscription_cycle",
                                     lines_before=[old_proration_line(PRICES["starter"], -300, start, start + MONTH)])
    post(client, renewal)
    # Agency's 500, Starter's unused 20 rolled over, and the signup credits (a month left)
    assert balance(admin, customer.id) == 500 + 20 + 5
    assert [g for g in ledger(admin, customer.id) if g[0] == "renewal"] == [("renewal", 500)]


def test_an_upgrade_invoice_grants_the_difference_once_and_changes_no_plan(client, admin, customer, connect):
    """"Unused time on Starter" comes first on an upgrade invoice; it used to revert the user to Starter."""
    now = int(time.time())
    start = now - 10 * 86400
    post(client, invoice_paid(customer.customer, customer.sub, PRICES["starter"], start, created=start))
    worker = connect("sg_worker")
    apply_read(worker, subscription(customer.sub, customer.customer, PRICES["pro"], "active", start))
    upgrade = upgrade_invoice_paid(customer.customer, customer.sub, PRICES["starter"], PRICES["pro"], now, start + MONTH)
    assert upgrade["data"]["object"]["lines"]["data"][0]["amount"] < 0  # "Unused time on Starter" first
    for _ in range(3):
        post(client, upgrade)
    assert [g for g in ledger(admin, customer.id) if g[0] == "upgrade_grant"] == [("upgrade_grant", 80)]
    assert balance(admin, customer.id) == 105
    state = row(admin, customer.id)
    assert (state["tier"], int(state["current_period_start"].timestamp())) == ("pro", start)


def test_an_upgrade_arriving_after_the_next_renewal_only_tops_up_its_rollover(client, admin, customer):
    start = int(time.time()) - MONTH
    post(client, invoice_paid(customer.customer, customer.sub, PRICES["starter"], start, created=start))
    post(client, invoice_paid(customer.customer, customer.sub, PRICES["pro"], start + MONTH, reason="subscription_cycle"))
    late = upgrade_invoice_paid(customer.customer, customer.sub, PRICES["starter"], PRICES["pro"], start + 86400,
                                start + MONTH)
    post(client, late)
    # granted already over (its period ended), its 80 roll into the renewal as they would have
    # in order: Starter's 20 + the upgrade's 80, capped at one Pro allowance (100)
    assert sorted(g for g in ledger(admin, customer.id) if g[0] in ("upgrade_grant", "rollover")) == \
        [("rollover", 20), ("rollover", 80), ("upgrade_grant", 80)]
    assert balance(admin, customer.id) == 100 + 100 + 5 == ledger_sum(admin, customer.id)


def test_a_downgrade_invoice_grants_nothing(client, admin, customer):
    now = int(time.time())
    post(client, invoice_paid(customer.customer, customer.sub, PRICES["pro"], now - 86400))
    downgrade = upgrade_invoice_paid(customer.customer, customer.sub, PRICES["pro"], PRICES["starter"], now,
                                     now + MONTH, old_amount=2900, new_amount=900)
    post(client, downgrade)
    assert balance(admin, customer.id) == 105


def test_payment_failed_in_todays_shape_and_the_old_one_notify_once_per_invoice(client, admin, customer):
    """invoice.payment_failed used to read only the removed top-level `subscription`."""
    post(client, invoice_paid(customer.customer, customer.sub, PRICES["starter"], int(time.time())))
    current = payment_failed(customer.customer, customer.sub, PRICES["starter"])
    old = payment_failed_old_shape(customer.customer, customer.sub)
    for payload in (current, current, old):
        assert post(client, payload).get_json()["outcome"] in ("applied", "duplicate: already applied")
    notices = admin.execute("select dedupe_key from email_outbox where user_id = %s and kind = 'payment_failed'",
                            (customer.id,)).fetchall()
    assert sorted(n["dedupe_key"] for n in notices) == sorted(
        [f"payment_failed:{current['data']['object']['id']}", f"payment_failed:{old['data']['object']['id']}"])


# -- another subscription of the same customer ---------------------------------------------------

def test_an_invoice_of_another_subscription_waits_until_that_one_is_current(client, admin, customer, connect):
    """A renewal of a forgotten Starter subscription turned an Agency user into Starter with
    20 credits. Now it applies to nothing while the user's current subscription is live, is
    retried later, and applies once if that subscription becomes the current one."""
    worker = connect("sg_worker")
    start = int(time.time()) - 86400
    post(client, invoice_paid(customer.customer, customer.sub, PRICES["agency"], start))
    apply_read(worker, subscription(customer.sub, customer.customer, PRICES["agency"], "active", start))
    stray = f"sub_stray_{uuid.uuid4().hex[:10]}"
    renewal = invoice_paid(customer.customer, stray, PRICES["starter"], start + 100, reason="subscription_cycle")
    outcome = post(client, renewal).get_json()["outcome"]
    assert outcome.startswith("failed") and "not the customer's current subscription" in outcome
    assert (row(admin, customer.id)["tier"], balance(admin, customer.id)) == ("agency", 505)
    retry = admin.execute("select execute_after - now() as wait from pgqueuer where entrypoint = 'stripe_event_retry' "
                          "and dedupe_key = %s", (f"stripe_event_retry:{renewal['id']}:1",)).fetchone()
    assert retry is not None and 50 < retry["wait"].total_seconds() <= 60
    # the stray subscription's re-read changes nothing either
    assert apply_read(worker, subscription(stray, customer.customer, PRICES["starter"], "active", start)) \
        == f"superseded by {customer.sub}"
    # the agency subscription ends; the other one is the customer's now, and its invoice applies
    apply_read(worker, subscription(customer.sub, customer.customer, PRICES["agency"], "canceled", start))
    assert apply_read(worker, subscription(stray, customer.customer, PRICES["starter"], "active", start)) == "synced"
    state = row(admin, customer.id)
    assert (state["tier"], state["stripe_subscription_id"]) == ("starter", stray)
    # the Agency credits stay until their period ends (issue 19: a downgrade keeps granted buckets)
    assert [g for g in ledger(admin, customer.id) if g[0] == "renewal"] == [("renewal", 20)]
    assert balance(admin, customer.id) == 500 + 20 + 5 == ledger_sum(admin, customer.id)
    assert admin.execute("select processed_at is not null as done from stripe_events where id = %s",
                         (renewal["id"],)).fetchone()["done"]


def test_a_failed_event_is_retried_with_backoff_until_it_gives_up(client, admin, customer, connect):
    worker = connect("sg_worker")
    orphan = invoice_paid("cus_nobody_yet", f"sub_orphan_{uuid.uuid4().hex[:8]}", PRICES["starter"], int(time.time()))
    assert post(client, orphan).get_json()["outcome"].startswith("failed: no user")
    for attempt in range(2, 11):
        outcome = worker.execute("select app.retry_stripe_event(%s) as o", (orphan["id"],)).fetchone()["o"]
        assert outcome.startswith("failed")
    waits = admin.execute("select dedupe_key, round(extract(epoch from execute_after - now()) / 60) as minutes "
                          "from pgqueuer where dedupe_key like %s order by execute_after",
                          (f"stripe_event_retry:{orphan['id']}:%",)).fetchall()
    assert [w["minutes"] for w in waits] == [1, 2, 4, 8, 16, 32, 64, 128, 256]  # the 10th failure queues none
    # once the customer is known, the retry applies it
    admin.execute("update subscriptions set stripe_customer_id = 'cus_nobody_yet' where user_id = %s", (customer.id,))
    assert worker.execute("select app.retry_stripe_event(%s) as o", (orphan["id"],)).fetchone()["o"] == "applied"
    assert balance(admin, customer.id) == 25
    admin.execute("update subscriptions set stripe_customer_id = %s where user_id = %s", (customer.customer, customer.id))
    admin.execute("delete from pgqueuer where dedupe_key like %s", (f"stripe_event_retry:{orphan['id']}:%",))


# -- state comes from the subscription as Stripe reports it --------------------------------------

STATES = [
    # status, tier afterwards, periods taken from Stripe
    ("active", "pro", True), ("trialing", "pro", True), ("past_due", "pro", True),
    ("incomplete", "free", False), ("incomplete_expired", "free", False),
    ("unpaid", "free", True), ("canceled", "free", True), ("paused", "free", True),
]


@pytest.mark.parametrize("status, tier, moves_period", STATES)
def test_every_stripe_status_has_a_defined_meaning(admin, customer, connect, status, tier, moves_period):
    worker = connect("sg_worker")
    before = row(admin, customer.id)
    start = int(time.time()) - 3600
    ledger_before = ledger(admin, customer.id)
    assert apply_read(worker, subscription(customer.sub, customer.customer, PRICES["pro"], status, start)) == "synced"
    after = row(admin, customer.id)
    assert (after["tier"], after["status"], after["subscribed_tier"]) == (tier, status, "pro")
    if moves_period:
        assert int(after["current_period_start"].timestamp()) == start
    else:  # a subscription that never started leaves the account's own (free) periods alone
        assert after["current_period_end"] == before["current_period_end"]
    assert ledger(admin, customer.id) == ledger_before  # a re-read never moves credits
    if status in ("canceled", "unpaid", "paused"):
        assert after["period_anchor"] == after["current_period_end"]  # free months follow the paid period


def test_old_shape_subscription_is_read_too(admin, customer, connect):
    start = int(time.time()) - 60
    apply_read(connect("sg_worker"), subscription_old_shape(customer.sub, customer.customer, PRICES["agency"],
                                                            "active", start, cancel_at_period_end=True))
    state = row(admin, customer.id)
    assert (state["tier"], state["cancel_at_period_end"]) == ("agency", True)
    assert int(state["current_period_end"].timestamp()) == start + MONTH


def test_a_scheduled_downgrade_and_a_cancellation_are_shown(admin, customer, connect):
    worker = connect("sg_worker")
    start = int(time.time()) - 60
    schedule = schedule_downgrade("sub_sched_1", customer.sub, PRICES["pro"], PRICES["starter"], start, start + MONTH)
    apply_read(worker, subscription(customer.sub, customer.customer, PRICES["pro"], "active", start, schedule=schedule))
    state = row(admin, customer.id)
    assert (state["tier"], state["pending_tier"], state["stripe_schedule_id"]) == ("pro", "starter", "sub_sched_1")
    assert int(state["pending_change_at"].timestamp()) == start + MONTH
    apply_read(worker, subscription(customer.sub, customer.customer, PRICES["pro"], "active", start,
                                    cancel_at_period_end=True))
    state = row(admin, customer.id)
    assert (state["pending_tier"], state["cancel_at_period_end"]) == (None, True)
    with acting_as(admin, customer.id):
        shown = admin.execute("select * from app.billing_subscription()").fetchone()
    assert (shown["tier"], shown["cancel_at_period_end"], shown["subscription_live"]) == ("pro", True, True)


def test_a_read_that_started_before_the_one_applied_is_stale(admin, customer, connect):
    worker = connect("sg_worker")
    start = int(time.time()) - 60
    older = worker.execute("select app.start_stripe_sync(%s) as t", (customer.sub,)).fetchone()["t"]
    apply_read(worker, subscription(customer.sub, customer.customer, PRICES["agency"], "active", start))
    stale = worker.execute("select app.apply_stripe_subscription(%s, %s) as o",
                           (Jsonb(subscription(customer.sub, customer.customer, PRICES["starter"], "active", start)),
                            older)).fetchone()["o"]
    assert stale == "stale read" and row(admin, customer.id)["tier"] == "agency"


def test_a_burst_of_events_queues_one_reread_and_a_later_one_another(client, admin, customer):
    def queued():
        return admin.execute("select count(*) as n from pgqueuer where entrypoint = 'stripe_sync' and "
                             "convert_from(payload, 'UTF8')::jsonb ->> 'subscription' = %s",
                             (customer.sub,)).fetchone()["n"]

    now = int(time.time())
    for status in ("incomplete", "active", "active"):
        post(client, event("customer.subscription.updated",
                           subscription(customer.sub, customer.customer, PRICES["pro"], status, now)))
    assert queued() == 1
    # the worker starts its re-read: an event from now on needs a new one
    admin.execute("select app.start_stripe_sync(%s)", (customer.sub,))
    admin.execute("delete from pgqueuer where entrypoint = 'stripe_sync' and "
                  "convert_from(payload, 'UTF8')::jsonb ->> 'subscription' = %s", (customer.sub,))
    post(client, event("customer.subscription.updated",
                       subscription(customer.sub, customer.customer, PRICES["pro"], "past_due", now)))
    assert queued() == 1


def test_replaying_every_event_twice_changes_nothing(client, admin, customer):
    start = int(time.time())
    for payload in (checkout_completed(customer.id, customer.customer, customer.sub, "starter", created=start),
                    invoice_paid(customer.customer, customer.sub, PRICES["starter"], start, created=start),
                    payment_failed(customer.customer, customer.sub, PRICES["starter"], created=start + 3)):
        post(client, payload)

    def state():
        subs = admin.execute("select user_id, tier, status, credits_remaining, credits_total, stripe_subscription_id "
                             "from subscriptions order by user_id").fetchall()
        return subs, admin.execute("select count(*) as n, sum(delta) as s from credit_ledger").fetchone()

    before = state()
    for _ in range(2):
        admin.execute("select * from app.replay_stripe_events()").fetchall()
    assert state() == before
    assert invariant_violations(admin) == []


# -- the free tier's months -----------------------------------------------------------------------

def period_after(admin, anchor: str, at: str, zone: str = "UTC") -> tuple[str, str]:
    admin.execute(f"set timezone = '{zone}'")
    try:
        found = admin.execute("select * from app.free_period_at(%s::timestamptz, %s::timestamptz)",
                              (anchor, at)).fetchone()
    finally:
        admin.execute("set timezone = 'UTC'")
    return (found["period_start"].astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M"),
            found["period_end"].astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M"))


def test_free_periods_come_back_to_the_anchor_day_after_short_months(admin):
    """Adding one month at a time clamped Jan 31 to Feb 28 and then the 28th for ever."""
    anchor = "2026-01-31 10:00+00"
    assert period_after(admin, anchor, "2026-02-15 00:00+00") == ("2026-01-31 10:00", "2026-02-28 10:00")
    assert period_after(admin, anchor, "2026-03-05 00:00+00") == ("2026-02-28 10:00", "2026-03-31 10:00")
    assert period_after(admin, anchor, "2026-04-02 00:00+00") == ("2026-03-31 10:00", "2026-04-30 10:00")
    assert period_after(admin, anchor, "2026-05-30 12:00+00") == ("2026-04-30 10:00", "2026-05-31 10:00")


def test_free_periods_do_not_depend_on_the_session_time_zone(admin):
    for at in ("2026-03-01 03:00+00", "2026-11-01 06:30+00", "2027-01-31 23:00+00"):
        assert period_after(admin, "2025-12-31 23:30+00", at, "America/New_York") == \
            period_after(admin, "2025-12-31 23:30+00", at, "UTC")


def test_an_idle_free_account_gets_one_reset_on_its_anchor_day(admin, make_user, connect):
    uid = make_user()
    with acting_as(admin, uid):
        admin.execute("select * from app.spend_credit_and_create_job('tiktok', 'spent months ago')")
    # anchored 4 months and 2 days ago; the last period ended 3 months ago
    admin.execute("update subscriptions set period_anchor = now() - interval '4 months 2 days', "
                  "current_period_start = now() - interval '4 months 2 days', "
                  "current_period_end = now() - interval '3 months 2 days' where user_id = %s", (uid,))
    admin.execute("update credit_buckets set expires_at = now() - interval '3 months 2 days' where user_id = %s", (uid,))
    worker = connect("sg_worker")
    assert worker.execute("select app.renew_free_subscriptions() as n").fetchone()["n"] >= 1
    assert worker.execute("select app.renew_free_subscriptions() as n").fetchone()["n"] == 0
    assert [g for g in ledger(admin, uid) if g[0] in ("renewal", "expiry")] == [("expiry", -4), ("renewal", 5)]
    state = admin.execute("select current_period_start, current_period_end, "
                          "period_anchor + interval '4 months' as expected_start, "
                          "period_anchor + interval '5 months' as expected_end "
                          "from subscriptions where user_id = %s", (uid,)).fetchone()
    assert (state["current_period_start"], state["current_period_end"]) == \
        (state["expected_start"], state["expected_end"])
