"""The worker's billing entrypoints: re-reading subscriptions from Stripe, retrying Stripe
events that failed to apply, the nightly reconciliation, and auto top-up purchases.

The entrypoint names are the contract with sql/51_stripe_events.sql and
sql/52_stripe_sync.sql, which enqueue them. Each handler is safe to run twice.
"""
from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta

import psycopg
import stripe
from pgqueuer import PgQueuer
from pgqueuer.errors import RetryRequested
from pgqueuer.models import Job

from web.config import from_env
from web.stripe_sync import client as stripe_client, reconcile, sync_subscription

log = logging.getLogger("worker.billing")

# A re-read that cannot reach Stripe is retried this many times, backing off; the
# nightly reconciliation repairs whatever is still missed after that.
SYNC_ATTEMPTS = 6
# Nightly, after the free renewals' busiest hour: compare every customer with Stripe.
RECONCILE_CRON = "45 2 * * *"


def _payload(queued: Job, key: str) -> str | None:
    try:
        value = json.loads(queued.payload or b"")[key]
    except (ValueError, KeyError, TypeError):
        value = None
    if not isinstance(value, str):
        log.error("dropping %s entry %s: %r", queued.entrypoint, queued.id, queued.payload)
        return None
    return value


def register_billing(pgq: PgQueuer, dsn: str) -> None:
    """Attach the billing handlers; `dsn` is the worker role's."""
    config = from_env()

    def run_sync(subscription_id: str) -> str:
        client = stripe_client(config)
        if client is None:
            return "billing has no Stripe key: nothing to re-read"
        with psycopg.connect(dsn, autocommit=True) as conn:
            return sync_subscription(conn, client, subscription_id)

    @pgq.entrypoint("stripe_sync")
    async def stripe_sync(queued: Job) -> None:
        subscription_id = _payload(queued, "subscription")
        if subscription_id is None:
            return
        try:
            await asyncio.to_thread(run_sync, subscription_id)
        except stripe.InvalidRequestError as error:  # e.g. no such subscription in this account
            log.error("cannot re-read subscription %s: %s", subscription_id, error)
        except (stripe.StripeError, psycopg.OperationalError) as error:
            if queued.attempts + 1 < SYNC_ATTEMPTS:
                raise RetryRequested(delay=timedelta(seconds=5 * 4 ** queued.attempts), reason=str(error)) from error
            log.error("giving up re-reading subscription %s: %s", subscription_id, error)

    @pgq.entrypoint("stripe_event_retry")
    async def stripe_event_retry(queued: Job) -> None:
        event_id = _payload(queued, "event_id")
        if event_id is None:
            return

        def retry() -> str:
            with psycopg.connect(dsn, autocommit=True) as conn:
                return conn.execute("select app.retry_stripe_event(%s)", (event_id,)).fetchone()[0]

        # a failure is recorded, and the next try queued, by the SQL itself
        log.info("stripe event %s retried: %s", event_id, await asyncio.to_thread(retry))

    @pgq.entrypoint("auto_top_up")
    async def auto_top_up(queued: Job) -> None:
        attempt = _payload(queued, "attempt_id")
        if attempt is None:
            return
        try:
            outcome = await asyncio.to_thread(buy_top_up, dsn, config, attempt)
        except (stripe.RateLimitError, stripe.APIConnectionError, psycopg.OperationalError) as error:
            # the idempotency key makes a retried purchase the same purchase at Stripe
            if queued.attempts + 1 < SYNC_ATTEMPTS:
                raise RetryRequested(delay=timedelta(seconds=5 * 4 ** queued.attempts), reason=str(error)) from error
            outcome = finish_top_up(dsn, attempt, None, "Stripe could not be reached.")
        log.info("auto top-up %s: %s", attempt, outcome)

    @pgq.schedule("reconcile_stripe", RECONCILE_CRON)
    async def reconcile_stripe(schedule) -> None:
        def run() -> int:
            client = stripe_client(config)
            if client is None:
                return 0
            with psycopg.connect(dsn, autocommit=True) as conn:
                return len(reconcile(conn, client))

        log.info("stripe reconciliation: %d customer(s) compared", await asyncio.to_thread(run))


def finish_top_up(dsn: str, attempt: str, payment_intent: str | None, error: str | None) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("select app.finish_auto_top_up(%s, %s, %s)", (attempt, payment_intent, error)).fetchone()[0]


def buy_top_up(dsn: str, config: dict, attempt: str) -> str:
    """One auto top-up: charge the pack's price off-session to the customer's saved card
    (idempotency key: the attempt, so a retry never charges twice). Credits are not granted
    here: they come with Stripe's signed payment_intent.succeeded (sql/54_packs.sql). A
    decline, or no card to charge, fails the attempt, which turns auto top-up off."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        job = conn.execute("select * from app.auto_top_up_job(%s)", (attempt,)).fetchone()
    if job is None:
        return "already finished"
    user_id, pack, customer_id, price_id, amount_cents = job
    client = stripe_client(config)
    if client is None or not customer_id or not price_id:
        return finish_top_up(dsn, attempt, None, "No saved payment method to charge.")
    methods = client.v1.payment_methods.list(params={"customer": customer_id, "type": "card", "limit": 1}).data
    if not methods:
        return finish_top_up(dsn, attempt, None, "No saved card to charge.")
    try:
        intent = client.v1.payment_intents.create(
            params={"amount": amount_cents, "currency": "usd", "customer": customer_id,
                    "payment_method": methods[0].id, "off_session": True, "confirm": True,
                    "description": f"Story Genius automatic top-up ({pack})",
                    "metadata": {"user_id": str(user_id), "pack": pack, "auto_top_up_attempt": attempt}},
            options={"idempotency_key": f"auto-top-up-{attempt}"})
    except stripe.CardError as error:
        failed_intent = error.error.payment_intent if error.error else None
        failed = failed_intent.id if failed_intent is not None else None
        return finish_top_up(dsn, attempt, failed, error.user_message or "The card was declined.")
    except (stripe.InvalidRequestError, stripe.AuthenticationError, stripe.PermissionError) as error:
        log.error("auto top-up %s refused by Stripe: %s", attempt, error)
        return finish_top_up(dsn, attempt, None, "The payment could not be made.")
    return finish_top_up(dsn, attempt, intent.id, None)
