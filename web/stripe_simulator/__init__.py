"""A loopback Stripe that speaks today's API (version 2026-10-28.endive).

It is what local test mode runs on (`make run` without Stripe keys) and what the billing
tests drive through the real stripe-python library: customers, prices, Checkout (with
its hosted page), the billing portal, subscriptions with prorations, subscription
schedules, invoices, one-off payments with refunds and disputes, events and signed
webhook deliveries, plus a simulated clock that renews, retries and expires.

    sim = StripeSimulator(state_file=None)
    base_url = sim.start()                # http://127.0.0.1:PORT
    sim.ensure_price("price_starter_test", unit_amount=900, product_name="Starter")
    sim.add_webhook_endpoint(url, secret)
    sim.advance(31 * 86400)               # renewals, retries, expiries passed

`/_sim/...` exposes the same test hooks over HTTP for a separately started process, and
`python -m web.stripe_simulator` runs it as one (see __main__.py).

A client built with `max_network_retries=N` retries connection errors and 5xx answers by
itself, so `fail_next(kind, times=N + 1)` is what makes such a call fail for good.
"""
from __future__ import annotations

from .catalog import Catalog
from .checkout import Payments
from .core import FAULTS, Core, SimulatorError
from .invoices import Invoices
from .params import StripeError
from .renewals import Renewals
from .schedules import Schedules
from .shapes import API_VERSION
from .subscriptions import Subscriptions

__all__ = ["API_VERSION", "FAULTS", "SimulatorError", "StripeError", "StripeSimulator"]


class StripeSimulator(Catalog, Subscriptions, Schedules, Invoices, Renewals, Payments, Core):
    """The simulator: Core holds state, clock and delivery; the mixins hold Stripe's rules."""
