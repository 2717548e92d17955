"""A Stripe simulator wired to the app for the billing tests: prices created at the
simulator and configured in `plans`, its signed webhooks delivered to a live server, and
the worker's re-reads run on demand (`settle`)."""
from __future__ import annotations

import json
from contextlib import contextmanager
from types import SimpleNamespace

import psycopg
import stripe

from web import create_app
from web.config import role_dsn
from web.stripe_simulator import StripeSimulator
from web.stripe_sync import sync_subscription

from .conftest import stripe_prices
from .stripe_fakes import LiveServer

PRICES = {"starter": "price_sim_starter", "pro": "price_sim_pro", "agency": "price_sim_agency"}
AMOUNTS = {"starter": 900, "pro": 2900, "agency": 9900}


@contextmanager
def simulated_billing(database_dsn: str, media_root, admin: psycopg.Connection, webhook_secret: str, **config):
    """The app (with `config`) on a live server, billing against a fresh Stripe simulator."""
    sim = StripeSimulator()
    base = sim.start()
    for tier, price in PRICES.items():
        sim.ensure_price(price, unit_amount=AMOUNTS[tier], product_name=tier.title())
    config = {"TESTING": True, "DATABASE_URL": database_dsn, "SECRET_KEY": "billing-tests-" + "k" * 40,
              "APP_DATABASE_URL": role_dsn(database_dsn, "sg_app"), "MEDIA_ROOT": str(media_root),
              "BILLING_MODE": "stripe", "STRIPE_SECRET_KEY": "sk_test_simulated", "STRIPE_API_BASE": base,
              "FRONTEND_URL": "https://app.storygenius.test", **config}
    app = create_app(config)
    live = LiveServer(app)
    sim.add_webhook_endpoint(f"{live.url}/v1/billing/webhook", webhook_secret)
    worker = psycopg.connect(role_dsn(database_dsn, "sg_worker"), autocommit=True)
    stripe_client = stripe.StripeClient(config["STRIPE_SECRET_KEY"], base_addresses={"api": base})
    try:
        with stripe_prices(admin, PRICES):
            yield SimpleNamespace(app=app, live=live, sim=sim, admin=admin, worker=worker, stripe=stripe_client,
                                  config=config)
    finally:
        worker.close()
        live.stop()
        sim.stop()
        app.extensions["sg_pool"].close()


def settle(env, rounds: int = 20) -> list[str]:
    """Let the simulator's webhooks arrive, then run every queued re-read the way the
    worker's `stripe_sync` handler does (web.stripe_sync.sync_subscription), until none is
    left; their outcomes. (The real worker runs them in the end-to-end and browser tests.)"""
    outcomes = []
    for _ in range(rounds):
        assert env.sim.wait_for_deliveries(15)
        queued = env.admin.execute("delete from pgqueuer where entrypoint = 'stripe_sync' returning payload").fetchall()
        if not queued:
            return outcomes
        for row in queued:
            subscription = json.loads(bytes(row["payload"]))["subscription"]
            try:
                outcomes.append(sync_subscription(env.worker, env.stripe, subscription))
            except stripe.InvalidRequestError:  # another test's Stripe: the worker logs and drops it too
                outcomes.append("no such subscription")
    raise AssertionError("re-reads kept coming")


def session_of(url: str) -> str:
    """The Checkout Session id in the simulator's hosted-page URL."""
    return url.rstrip("/").rsplit("/", 1)[1]
