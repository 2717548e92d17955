"""Whole Stripe lifecycles, delivered a thousand times out of order: purchase, upgrade,
renewal, a failed payment and its recovery, a downgrade, cancellation and the end, for
many customers, made by the Stripe simulator with many events in the same second. The
events are duplicated, shuffled and posted by 16 senders at once; once the worker's
re-reads have run, every customer's state is what Stripe reports and every balance is
what in-order delivery gives — in every shuffle."""
from __future__ import annotations

import json
import random
import threading
import urllib.error
import urllib.request
from collections import Counter
from contextlib import contextmanager

import psycopg
import stripe
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from web import create_app
from web.config import role_dsn
from web.migrate import migrate
from web.stripe_simulator import StripeSimulator
from web.stripe_sync import sync_subscription

from .billing_env import AMOUNTS, PRICES
from .conftest import ADMIN_DSN, PASSWORD_HASH, throwaway_database
from .stripe_fakes import LiveServer
from .stripe_payloads import signed

CUSTOMERS = 12
DELIVERIES = 1000
SENDERS = 16
SHUFFLES = (3, 17, 2024)
SECRET = "whsec_lifecycle_" + "l" * 20
MINUTE = 60

STATE = """select u.email, s.tier, s.status, s.subscribed_tier, s.credits_remaining, s.stripe_subscription_id,
                  s.current_period_start, s.current_period_end, s.cancel_at_period_end, s.pending_tier,
                  (select coalesce(sum(l.delta), 0) from credit_ledger l where l.user_id = s.user_id) as ledger
             from users u join subscriptions s on s.user_id = u.id
            where u.email like 'lifecycle-%%' order by u.email"""


def live_lifecycles(sim: StripeSimulator, api, users: list[tuple[str, str]]) -> None:
    """Each customer, at the simulator: buys Starter, upgrades to Pro at once, renews,
    fails a renewal and recovers at Stripe's retry, downgrades to Starter at the period's
    end, renews at Starter, cancels at the period's end, and ends."""
    subscriptions = {}
    for user_id, customer in users:
        session = api.checkout.sessions.create(params={
            "mode": "subscription", "customer": customer, "line_items": [{"price": PRICES["starter"], "quantity": 1}],
            "metadata": {"user_id": user_id, "tier": "starter"},
            "subscription_data": {"metadata": {"user_id": user_id, "tier": "starter"}},
            "success_url": "https://app.test/ok", "cancel_url": "https://app.test/no"})
        subscriptions[customer] = sim.complete_checkout(session.id, "paid")["subscription"]

    def to_period_end() -> None:
        ends = {api.subscriptions.retrieve(s)["items"].data[0].current_period_end for s in subscriptions.values()}
        sim.advance(max(ends) - sim.now() + MINUTE)

    for subscription in subscriptions.values():
        item = api.subscriptions.retrieve(subscription)["items"].data[0]
        api.subscriptions.update(subscription, params={
            "items": [{"id": item.id, "price": PRICES["pro"]}], "proration_behavior": "always_invoice",
            "payment_behavior": "error_if_incomplete"})
    to_period_end()                                     # renewal at Pro
    for customer in subscriptions:
        sim.set_payment_failure(customer, True)
    to_period_end()                                     # the renewal fails: past_due
    for customer in subscriptions:
        sim.set_payment_failure(customer, False)
    sim.advance(3 * 86400 + MINUTE)                     # Stripe's retry succeeds
    for subscription in subscriptions.values():
        schedule = api.subscription_schedules.create(params={"from_subscription": subscription})
        api.subscription_schedules.update(schedule.id, params={"end_behavior": "release", "phases": [
            {"items": [{"price": PRICES["pro"], "quantity": 1}], "start_date": schedule.current_phase.start_date,
             "end_date": schedule.current_phase.end_date},
            {"items": [{"price": PRICES["starter"], "quantity": 1}], "proration_behavior": "none"}]})
    to_period_end()                                     # renewal at Starter
    for subscription in subscriptions.values():
        # the schedule still holds its last phase; as the app does, release it to cancel
        api.subscription_schedules.release(api.subscriptions.retrieve(subscription).schedule)
        api.subscriptions.update(subscription, params={"cancel_at_period_end": True})
    to_period_end()                                     # the end


@contextmanager
def base_database():
    """A migrated database with the customers' accounts, to copy for each delivery run."""
    with throwaway_database("sg_life") as dsn:
        migrate(dsn, environ={**{f"STRIPE_PRICE_{tier.upper()}": price for tier, price in PRICES.items()},
                              "STRIPE_WEBHOOK_SECRET": SECRET})
        yield dsn


@contextmanager
def copy_of(template_dsn: str):
    """A new database made from the template (which must have no connections)."""
    template = conninfo_to_dict(template_dsn)["dbname"]
    name = f"{template}_c{random.randrange(10**8)}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'create database "{name}" template "{template}"')
    try:
        yield make_conninfo(**{**conninfo_to_dict(template_dsn), "dbname": name})
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')


def deliver(dsn: str, api_base: str, deliveries: list[dict]) -> list[tuple[int, str]]:
    """POST every delivery, signed, to a live server on `dsn` from SENDERS threads."""
    app = create_app({"TESTING": True, "DATABASE_URL": dsn, "DB_POOL_MAX": SENDERS, "BILLING_MODE": "stripe",
                      "STRIPE_SECRET_KEY": "sk_test_lifecycle", "STRIPE_API_BASE": api_base})
    live = LiveServer(app)
    queue, answers, lock = list(deliveries), [], threading.Lock()

    def sender():
        while True:
            with lock:
                if not queue:
                    return
                payload = queue.pop()
            body, headers = signed(payload, SECRET)
            request = urllib.request.Request(live.url + "/v1/billing/webhook", data=body, headers=headers)
            try:
                with urllib.request.urlopen(request) as response:
                    answer = (response.status, json.load(response)["outcome"])
            except urllib.error.HTTPError as error:
                answer = (error.code, error.read().decode())
            with lock:
                answers.append(answer)

    threads = [threading.Thread(target=sender) for _ in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    live.stop()
    app.extensions["sg_pool"].close()
    return answers


def run_the_worker(dsn: str, api) -> None:
    """What the worker does with what the deliveries queued: every re-read, and every
    retry of an event that could not apply yet (without waiting for its backoff)."""
    with psycopg.connect(dsn, autocommit=True) as admin, \
            psycopg.connect(role_dsn(dsn, "sg_worker"), autocommit=True) as worker:
        for _ in range(20):
            entries = admin.execute("delete from pgqueuer where entrypoint in ('stripe_sync', 'stripe_event_retry') "
                                    "returning entrypoint, payload").fetchall()
            if not entries:
                return
            for entrypoint, payload in entries:
                body = json.loads(bytes(payload))
                if entrypoint == "stripe_sync":
                    sync_subscription(worker, api, body["subscription"])
                else:
                    worker.execute("select app.retry_stripe_event(%s)", (body["event_id"],))
    raise AssertionError("the queue never emptied")


def test_a_thousand_shuffled_duplicated_deliveries_of_whole_lifecycles_end_as_stripe_says():
    sim = StripeSimulator()
    base = sim.start()
    sim.auto_deliver = False
    for tier, price in PRICES.items():
        sim.ensure_price(price, unit_amount=AMOUNTS[tier], product_name=tier.title())
    client = stripe.StripeClient("sk_test_lifecycle", base_addresses={"api": base})
    try:
        with base_database() as base_dsn:
            with psycopg.connect(base_dsn, autocommit=True) as admin:
                users = []
                for n in range(CUSTOMERS):
                    user_id = admin.execute("select id from app.signup(%s, %s, null)",
                                            (f"lifecycle-{n:02}@example.com", PASSWORD_HASH)).fetchone()[0]
                    customer = client.v1.customers.create(params={"email": f"lifecycle-{n:02}@example.com",
                                                                  "metadata": {"user_id": str(user_id)}}).id
                    admin.execute("update subscriptions set stripe_customer_id = %s where user_id = %s",
                                  (customer, user_id))
                    users.append((str(user_id), customer))
            live_lifecycles(sim, client.v1, users)
            unique = list(sim.events)
            seconds = Counter(event["created"] for event in unique)
            assert max(seconds.values()) >= 20  # many events share a second, as with real Stripe
            assert len(unique) < DELIVERIES

            states = {}
            with copy_of(base_dsn) as ordered_dsn:
                answers = deliver(ordered_dsn, base, list(reversed(unique)))  # senders pop from the end
                assert Counter(code for code, _ in answers) == {200: len(unique)}
                run_the_worker(ordered_dsn, client)
                with psycopg.connect(ordered_dsn, row_factory=dict_row) as conn:
                    states["in order"] = conn.execute(STATE).fetchall()

            for seed in SHUFFLES:
                rng = random.Random(seed)
                deliveries = unique + [rng.choice(unique) for _ in range(DELIVERIES - len(unique))]
                rng.shuffle(deliveries)
                with copy_of(base_dsn) as dsn:
                    answers = deliver(dsn, base, deliveries)
                    assert all(code == 200 for code, _ in answers), [a for a in answers if a[0] != 200][:3]
                    run_the_worker(dsn, client)
                    with psycopg.connect(dsn, row_factory=dict_row) as conn:
                        states[seed] = conn.execute(STATE).fetchall()
                        stuck = conn.execute("select type, error from stripe_events where processed_at is null"
                                             ).fetchall()
                    assert stuck == []
        stripe_says = {customer: client.v1.subscriptions.list(params={"customer": customer, "status": "all"}).data
                       for _, customer in users}
    finally:
        sim.stop()

    # Stripe's own final word on every customer: canceled at the end of a Starter period
    for row, (user_id, customer) in zip(states["in order"], users):
        [subscription] = stripe_says[customer]
        item = subscription["items"].data[0]
        assert (subscription.status, item.price.id) == ("canceled", PRICES["starter"])
        assert (row["tier"], row["status"], row["subscribed_tier"], row["stripe_subscription_id"]) == \
            ("free", "canceled", "starter", subscription.id)
        assert int(row["current_period_end"].timestamp()) == item.current_period_end
        assert (row["cancel_at_period_end"], row["pending_tier"]) == (False, None)
        # the last renewal (Starter): its 20 and the previous Starter period's unused 20 rolled
        # over (capped at one allowance); everything older expired; nothing arriving late undid it
        assert row["credits_remaining"] == 20 + 20 == row["ledger"]
    for seed in SHUFFLES:
        assert states[seed] == states["in order"], seed
