"""The worker's billing entrypoints: re-reading subscriptions from Stripe, retrying Stripe
events that failed to apply, and the nightly reconciliation.

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

    @pgq.schedule("reconcile_stripe", RECONCILE_CRON)
    async def reconcile_stripe(schedule) -> None:
        def run() -> int:
            client = stripe_client(config)
            if client is None:
                return 0
            with psycopg.connect(dsn, autocommit=True) as conn:
                return len(reconcile(conn, client))

        log.info("stripe reconciliation: %d customer(s) compared", await asyncio.to_thread(run))
