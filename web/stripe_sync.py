"""Re-reading subscriptions from Stripe and applying what it says.

Used by the worker (`stripe_sync` queue entries, one per burst of events, and the nightly
reconciliation) and by `flask --app web sync-stripe`. The database decides what a read
means (app.apply_stripe_subscription); this module only fetches and hands over, on a
connection as sg_worker. Stripe's answer is not signed, so applying it changes state and
features, never credits.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import psycopg
import stripe
from psycopg.types.json import Jsonb

log = logging.getLogger(__name__)
LIVE_STATUSES = ("active", "trialing", "past_due", "unpaid", "incomplete", "paused")


def client(config: dict) -> stripe.StripeClient | None:
    """A Stripe client from the settings (web/config.py), or None when billing has no key."""
    if not config.get("STRIPE_SECRET_KEY"):
        return None
    base = config.get("STRIPE_API_BASE")
    return stripe.StripeClient(config["STRIPE_SECRET_KEY"], max_network_retries=2,
                               base_addresses={"api": base} if base else None)


def read_subscription(stripe_client: stripe.StripeClient, subscription_id: str) -> dict:
    """The subscription as Stripe answers it (its own JSON, not the library's objects), with
    its schedule in place of the schedule's id when it has one. The schedule is fetched on
    its own rather than expanded, so the read also works against Stripe stand-ins that
    expand nothing (localstripe)."""
    subscription = json.loads(stripe_client.v1.subscriptions.retrieve(subscription_id).last_response.body)
    if isinstance(subscription.get("schedule"), str):
        schedule = stripe_client.v1.subscription_schedules.retrieve(subscription["schedule"])
        subscription["schedule"] = json.loads(schedule.last_response.body)
    return subscription


def sync_subscription(conn: psycopg.Connection, stripe_client: stripe.StripeClient, subscription_id: str,
                      source: str = "sync", *, _follow: bool = True) -> str:
    """Re-read one subscription (with its schedule) and apply it; returns the outcome.

    'superseded by sub_C' means the customer's current subscription is another one that
    our records call live: that one is re-read first (it may have ended, which frees the
    customer for this one), then this one again.
    """
    started_at = conn.execute("select app.start_stripe_sync(%s)", (subscription_id,)).fetchone()[0]
    outcome = conn.execute("select app.apply_stripe_subscription(%s, %s, %s)",
                           (Jsonb(read_subscription(stripe_client, subscription_id)), started_at, source)).fetchone()[0]
    if _follow and outcome.startswith("superseded by sub_"):
        current = outcome.removeprefix("superseded by ")
        sync_subscription(conn, stripe_client, current, source, _follow=False)
        outcome = sync_subscription(conn, stripe_client, subscription_id, source, _follow=False)
    log.info("stripe subscription %s: %s", subscription_id, outcome)
    return outcome


@dataclass(frozen=True)
class Reconciled:
    customer: str
    subscription: str | None
    outcome: str
    extra: tuple[str, ...] = ()


def reconcile(conn: psycopg.Connection, stripe_client: stripe.StripeClient,
              customer: str | None = None) -> list[Reconciled]:
    """Compare every known customer (or one) with Stripe and repair our state: the current
    subscription is re-read and applied, recording each changed field as drift; any other
    live subscription of the customer is recorded as drift too (never adopted: it bills
    the customer twice and needs a person to look at it). A second run changes nothing."""
    customers = [customer] if customer else [row[0] for row in conn.execute("select * from app.stripe_customers()")]
    report = []
    for customer_id in customers:
        state = conn.execute("select * from app.stripe_customer_state(%s)", (customer_id,)).fetchone()
        if state is None:
            report.append(Reconciled(customer_id, None, "not one of our customers"))
            continue
        ours = state[1]
        listed = list(stripe_client.v1.subscriptions.list(
            params={"customer": customer_id, "status": "all", "limit": 100}).auto_paging_iter())
        live = [s for s in listed if s.status in LIVE_STATUSES]
        current = next((s for s in listed if s.id == ours), None)
        if current is None or (current.status not in LIVE_STATUSES and live):
            current = max(live or listed, key=lambda s: s.created, default=None)
        if current is None:
            report.append(Reconciled(customer_id, None, "no subscription at Stripe"))
            continue
        outcome = sync_subscription(conn, stripe_client, current.id, "reconcile")
        extra = tuple(s.id for s in live if s.id != current.id)
        for subscription in live:
            if subscription.id != current.id:
                conn.execute("select app.record_extra_subscription(%s, %s, %s)",
                             (customer_id, subscription.id, subscription.status))
                log.error("customer %s has a second live subscription %s (%s) besides %s",
                          customer_id, subscription.id, subscription.status, current.id)
        report.append(Reconciled(customer_id, current.id, outcome, extra))
    return report
