"""Stripe: customers, Checkout, plan changes, cancellation, the portal and invoices.

This module changes a subscription *at Stripe* and then asks the worker to re-read it
(`app.request_stripe_sync`): the database takes subscription state only from Stripe's
own answer (sql/52_stripe_sync.sql), and credits only from signed, paid events
(sql/51_stripe_events.sql). One live subscription per customer: Checkout only starts one
when the customer has none (checked in our database and at Stripe); a plan change
modifies that subscription — an upgrade at once, prorated and invoiced immediately, a
downgrade at the period's end through a subscription schedule, which Stripe applies.

BILLING_MODE `stripe` talks to Stripe (STRIPE_API_BASE may point the library elsewhere,
e.g. at localstripe in tests); `test` talks to the local Stripe simulator
(web/stripe_simulator.py, which `make run` starts) and is refused in production.
"""
from __future__ import annotations

import logging
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import stripe
from flask import current_app, url_for

from . import db
from .errors import ApiError

log = logging.getLogger(__name__)
PAID_TIERS = ("starter", "pro", "agency")
# Stripe statuses of a subscription that still exists (it bills, or may bill again)
LIVE_STATUSES = ("active", "trialing", "past_due", "unpaid", "incomplete", "paused")
# How long a client should wait before retrying when Stripe is busy or unreachable
RETRY_AFTER_BUSY = 5
RETRY_AFTER_MISCONFIGURED = 60


def test_mode() -> bool:
    """Whether billing runs against the local Stripe simulator (no card is ever charged)."""
    return current_app.config["BILLING_MODE"] == "test"


def client() -> stripe.StripeClient:
    """A Stripe client for the configured mode; 503 when billing is not configured."""
    config = current_app.config
    if not config.get("STRIPE_SECRET_KEY"):
        raise ApiError(503, "Billing is not configured (STRIPE_SECRET_KEY).",
                       {"Retry-After": RETRY_AFTER_MISCONFIGURED})
    base = config.get("STRIPE_API_BASE")
    return stripe.StripeClient(config["STRIPE_SECRET_KEY"], max_network_retries=2,
                               base_addresses={"api": base} if base else None)


@contextmanager
def stripe_errors() -> Iterator[None]:
    """Stripe's failures as answers a customer can act on, never a 500: a declined card is
    402 with Stripe's own message; a busy or unreachable Stripe is 503 with Retry-After; a
    rejected key or request (our misconfiguration) is 503 "temporarily unavailable" and an
    error in the log for us."""
    try:
        yield
    except stripe.CardError as error:
        raise ApiError(402, error.user_message or "Your card was declined.") from error
    except (stripe.RateLimitError, stripe.APIConnectionError) as error:
        log.warning("Stripe busy or unreachable: %s", error)
        raise ApiError(503, "Billing is busy right now; please try again in a moment.",
                       {"Retry-After": RETRY_AFTER_BUSY}) from error
    except (stripe.AuthenticationError, stripe.PermissionError, stripe.InvalidRequestError,
            stripe.IdempotencyError) as error:
        log.error("Stripe refused our request (check the Stripe settings): %s", error)
        raise ApiError(503, "Billing is temporarily unavailable.", {"Retry-After": RETRY_AFTER_MISCONFIGURED}) from error
    except stripe.StripeError as error:
        log.error("Stripe error: %s", error)
        raise ApiError(503, "Billing is temporarily unavailable.", {"Retry-After": RETRY_AFTER_BUSY}) from error


def public_url(path: str) -> str:
    """An absolute URL for Stripe to send the browser back to."""
    base = (current_app.config.get("FRONTEND_URL") or "").rstrip("/")
    return (base + path) if base else url_for("ui.index", _external=True).rstrip("/") + path


@dataclass(frozen=True)
class Plan:
    tier: str
    name: str
    price_cents: int
    credits: int
    stripe_price_id: str | None


def plan(tier: str) -> Plan:
    with db.tx() as cur:
        cur.execute("select tier, name, price_cents, credits, stripe_price_id from plans where tier = %s", (tier,))
        row = cur.fetchone()
    if row is None:
        raise ApiError(422, "tier: unknown plan", field="tier")
    return Plan(**row)


def paid_plan(tier: str) -> Plan:
    """One of the plans on sale (422 for any other tier)."""
    if tier not in PAID_TIERS:
        raise ApiError(422, f"tier: must be one of {', '.join(PAID_TIERS)}", field="tier")
    return plan(tier)


def priced(chosen: Plan) -> Plan:
    """The plan, if Stripe can sell it (its price id is configured); 503 otherwise."""
    if not chosen.stripe_price_id:
        raise ApiError(503, f"Billing is not configured: STRIPE_PRICE_{chosen.tier.upper()} is not set.",
                       {"Retry-After": RETRY_AFTER_MISCONFIGURED})
    return chosen


@dataclass(frozen=True)
class Account:
    """What billing decisions need about the signed-in user."""

    user_id: str
    email: str
    is_verified: bool
    tier: str
    status: str
    subscribed_tier: str | None
    customer_id: str | None
    subscription_id: str | None
    cancel_at_period_end: bool
    pending_tier: str | None

    @property
    def has_live_subscription(self) -> bool:
        return self.subscription_id is not None and self.status in LIVE_STATUSES


def account(user_id) -> Account:
    with db.tx(user_id) as cur:
        cur.execute("""select u.id::text as user_id, u.email, u.is_verified, s.tier, s.status, s.subscribed_tier,
                              s.stripe_customer_id as customer_id, s.stripe_subscription_id as subscription_id,
                              s.cancel_at_period_end, s.pending_tier
                         from users u join subscriptions s on s.user_id = u.id""")
        return Account(**cur.fetchone())


def _require_verified(who: Account) -> None:
    if not who.is_verified:
        raise ApiError(403, "Verify your email address before buying a plan (check your inbox, or ask for a new link).")


def request_sync(user_id, subscription_id: str | None = None) -> None:
    """Ask the worker to re-read the user's subscription (or a named one) from Stripe."""
    with db.tx(user_id) as cur:
        cur.execute("select app.request_stripe_sync(%s)", (subscription_id,))


def ensure_customer(user_id) -> str:
    """The user's Stripe customer, created once. Committed on its own, before anything else
    is asked of Stripe, so a checkout that fails afterwards never makes a retry create a
    second customer; the row lock makes concurrent first checkouts wait, and the
    idempotency key makes even a retried create return the same customer."""
    with db.tx(user_id) as cur:
        cur.execute("select * from app.lock_billing_customer()")
        row = cur.fetchone()
        if row["stripe_customer_id"]:
            return row["stripe_customer_id"]
        with stripe_errors():
            customer = client().v1.customers.create(
                params={"email": row["email"], "metadata": {"user_id": str(user_id)}},
                options={"idempotency_key": f"customer-create-{user_id}"})
        cur.execute("select app.set_stripe_customer(%s)", (customer.id,))
        return customer.id


def _live_subscription_at_stripe(customer_id: str):
    """The customer's live subscription at Stripe, if any (a second tab, the portal or the
    dashboard may have made one we have not heard of yet)."""
    with stripe_errors():
        listed = client().v1.subscriptions.list(params={"customer": customer_id, "status": "all", "limit": 20})
    return next((s for s in listed.data if s.status in LIVE_STATUSES), None)


def checkout_url(user_id, tier: str) -> str:
    """Start a subscription Checkout for `tier` (for a customer without a live
    subscription); where to send the browser. 409 when there is one already."""
    chosen = paid_plan(tier)
    who = account(user_id)
    _require_verified(who)
    priced(chosen)
    if who.has_live_subscription:
        raise ApiError(409, "You already have a subscription: change its plan instead.",
                       change_plan_url="/billing")
    customer_id = ensure_customer(user_id)
    existing = _live_subscription_at_stripe(customer_id)
    if existing is not None:
        request_sync(user_id, existing.id)
        raise ApiError(409, "You already have a subscription: change its plan instead.",
                       change_plan_url="/billing")
    stripe_api = client().v1
    # one Checkout decision per customer at a time: the row lock, held until Stripe has
    # answered, serialises a user's tabs (each would otherwise expire the others' sessions)
    with db.tx(user_id) as cur, stripe_errors():
        cur.execute("select * from app.lock_billing_customer()")
        # an older Checkout left open (another tab) could otherwise still start a second subscription
        for session in stripe_api.checkout.sessions.list(params={"customer": customer_id, "status": "open",
                                                                 "limit": 20}).data:
            stripe_api.checkout.sessions.expire(session.id)
        metadata = {"user_id": str(user_id), "tier": tier}
        session = stripe_api.checkout.sessions.create(
            params={"mode": "subscription", "customer": customer_id, "client_reference_id": str(user_id),
                    "line_items": [{"price": chosen.stripe_price_id, "quantity": 1}],
                    "metadata": metadata, "subscription_data": {"metadata": metadata},
                    "success_url": public_url("/billing/success?session_id={CHECKOUT_SESSION_ID}"),
                    "cancel_url": public_url("/billing/canceled")},
            options={"idempotency_key": f"checkout-{user_id}-{uuid.uuid4()}"})
    return session.url


# -- top-up packs -------------------------------------------------------------------------

@dataclass(frozen=True)
class Pack:
    pack: str
    name: str
    credits: int
    price_cents: int
    stripe_price_id: str | None


def packs() -> list[dict]:
    """The packs on sale, cheapest first (app.credit_packs)."""
    with db.tx() as cur:
        cur.execute("select * from app.credit_packs()")
        return cur.fetchall()


def pack_for_sale(name) -> Pack:
    """A pack Stripe can sell: 422 for a name that is no pack, 503 when its price is not configured."""
    with db.tx() as cur:
        cur.execute("select pack, name, credits, price_cents, stripe_price_id from credit_packs where pack = %s",
                    (name if isinstance(name, str) else None,))
        row = cur.fetchone()
    if row is None:
        with db.tx() as cur:
            cur.execute("select pack from credit_packs order by sort_order")
            names = [r["pack"] for r in cur.fetchall()]
        raise ApiError(422, f"pack: must be one of {', '.join(names)}", field="pack")
    if not row["stripe_price_id"]:
        raise ApiError(503, f"Billing is not configured: STRIPE_PRICE_{row['pack'].upper()} is not set.",
                       {"Retry-After": RETRY_AFTER_MISCONFIGURED})
    return Pack(**row)


def buy_pack_url(user_id, name: str) -> str:
    """Start a Checkout (mode=payment) for a pack of credits, on any plan (a verified address
    required); where to send the browser. The credits come with Stripe's signed, paid
    checkout event (sql/54_packs.sql), once per session, however often it is delivered."""
    chosen = pack_for_sale(name)
    who = account(user_id)
    if not who.is_verified:
        raise ApiError(403, "Verify your email address before buying credits (check your inbox, or ask for a new link).")
    customer_id = ensure_customer(user_id)
    metadata = {"user_id": str(user_id), "pack": chosen.pack}
    with stripe_errors():
        session = client().v1.checkout.sessions.create(
            params={"mode": "payment", "customer": customer_id, "client_reference_id": str(user_id),
                    "line_items": [{"price": chosen.stripe_price_id, "quantity": 1}],
                    "metadata": metadata, "payment_intent_data": {"metadata": metadata},
                    "success_url": public_url("/billing/success?session_id={CHECKOUT_SESSION_ID}"),
                    "cancel_url": public_url("/billing/canceled")},
            options={"idempotency_key": f"pack-{user_id}-{uuid.uuid4()}"})
    return session.url


# -- changing a live subscription ---------------------------------------------------------

@dataclass(frozen=True)
class Change:
    """What a plan change did: `action` for programs, `detail` for people, and the
    Checkout to open when there was no subscription to change."""

    action: str
    detail: str
    checkout_url: str | None = None


def _live(who: Account) -> Account:
    if not who.has_live_subscription:
        raise ApiError(409, "You have no subscription to change. Choose a plan to start one.",
                       change_plan_url="/pricing")
    if who.status == "incomplete":
        raise ApiError(409, "Your subscription is waiting for its first payment. Complete it, or wait for it to expire.")
    return who


def _subscription(subscription_id: str):
    with stripe_errors():
        return client().v1.subscriptions.retrieve(subscription_id, params={"expand": ["schedule"]})


def _our_item(subscription):
    """The subscription item that carries one of our plans' prices."""
    with db.tx() as cur:
        cur.execute("select stripe_price_id from plans where stripe_price_id is not null")
        prices = {row["stripe_price_id"] for row in cur.fetchall()}
    items = subscription["items"].data
    return next((item for item in items if item.price.id in prices), items[0])


def _release_schedule(subscription) -> None:
    """End a pending scheduled change, keeping the subscription as it is now."""
    schedule = subscription.schedule
    if schedule:
        with stripe_errors():
            client().v1.subscription_schedules.release(schedule if isinstance(schedule, str) else schedule.id)


def _set_cancel_at_period_end(subscription_id: str, cancel: bool) -> None:
    with stripe_errors():
        client().v1.subscriptions.update(subscription_id, params={"cancel_at_period_end": cancel},
                                         options={"idempotency_key": f"cancel-{subscription_id}-{cancel}-{uuid.uuid4()}"})


def change_plan(user_id, tier: str) -> Change:
    """Move the user to `tier`: Checkout from Free; an upgrade at once (prorated, invoiced
    and charged now, with the difference in credits once that invoice is paid); a
    downgrade when the period ends; Free = cancel at period end; the current plan again
    undoes a pending downgrade or cancellation."""
    if tier == "free":
        who = account(user_id)
        if not who.has_live_subscription:
            raise ApiError(409, "You are on the Free plan already.")
        return cancel(user_id)
    chosen = paid_plan(tier)
    who = account(user_id)
    _require_verified(who)
    priced(chosen)
    if not who.has_live_subscription:
        return Change("checkout", f"Continue to checkout for {chosen.name}.", checkout_url(user_id, tier))
    _live(who)
    current = plan(who.subscribed_tier)
    if tier == who.subscribed_tier:
        if who.pending_tier:
            _release_schedule(_subscription(who.subscription_id))
            request_sync(user_id)
            return Change("downgrade_canceled", f"You stay on {current.name}; the scheduled change is canceled.")
        if who.cancel_at_period_end:
            return resume(user_id)
        raise ApiError(409, f"You are on the {current.name} plan already.")
    subscription = _subscription(who.subscription_id)
    if subscription.cancel_at_period_end:
        _set_cancel_at_period_end(who.subscription_id, False)
    if chosen.price_cents > current.price_cents:
        _release_schedule(subscription)
        with stripe_errors():
            client().v1.subscriptions.update(who.subscription_id, params={
                "items": [{"id": _our_item(subscription).id, "price": chosen.stripe_price_id}],
                # charge the difference now; if the card is declined nothing changes (402)
                "proration_behavior": "always_invoice", "payment_behavior": "error_if_incomplete",
                "metadata": {"user_id": str(user_id), "tier": tier}},
                options={"idempotency_key": f"upgrade-{who.subscription_id}-{tier}-{uuid.uuid4()}"})
        request_sync(user_id)
        return Change("upgraded", f"You are on {chosen.name} now; its extra credits arrive as soon as "
                                  "the prorated invoice is paid.")
    _schedule_downgrade(subscription, chosen)
    request_sync(user_id)
    return Change("downgrade_scheduled", f"You keep {current.name} until the end of this period; "
                                         f"then {chosen.name} starts.")


def _schedule_downgrade(subscription, chosen: Plan) -> None:
    """A two-phase schedule: the current price until the period ends, then `chosen`'s
    price (no proration), after which the schedule releases the subscription to go on."""
    stripe_api = client().v1
    with stripe_errors():
        schedule = subscription.schedule
        if not schedule:
            schedule = stripe_api.subscription_schedules.create(params={"from_subscription": subscription.id})
        elif isinstance(schedule, str):
            schedule = stripe_api.subscription_schedules.retrieve(schedule)
        current_price = _our_item(subscription).price.id
        stripe_api.subscription_schedules.update(schedule.id, params={
            "end_behavior": "release",
            "phases": [
                {"items": [{"price": current_price, "quantity": 1}],
                 "start_date": schedule.current_phase.start_date, "end_date": schedule.current_phase.end_date},
                {"items": [{"price": chosen.stripe_price_id, "quantity": 1}], "proration_behavior": "none"},
            ]})


def cancel(user_id) -> Change:
    """Cancel at the period's end (a pending downgrade is dropped); resumable until then."""
    who = _live(account(user_id))
    if who.cancel_at_period_end:
        raise ApiError(409, "Your subscription is already set to end with this period.")
    _release_schedule(_subscription(who.subscription_id))
    _set_cancel_at_period_end(who.subscription_id, True)
    request_sync(user_id)
    return Change("cancel_scheduled", "Your subscription ends with this period; you keep your plan and "
                                      "credits until then, and can resume any time before.")


def resume(user_id) -> Change:
    """Undo a cancellation at period end."""
    who = _live(account(user_id))
    if not who.cancel_at_period_end:
        raise ApiError(409, "Your subscription is not set to end.")
    _set_cancel_at_period_end(who.subscription_id, False)
    request_sync(user_id)
    return Change("resumed", "Your subscription continues.")


def portal_url(user_id) -> str:
    who = account(user_id)
    if not who.customer_id:
        raise ApiError(404, "No billing account yet: subscribe to a plan first.")
    with stripe_errors():
        session = client().v1.billing_portal.sessions.create(
            params={"customer": who.customer_id, "return_url": public_url("/billing")})
    return session.url


def invoices(user_id, limit: int = 12) -> list[dict]:
    """The customer's latest invoices, newest first, with Stripe's hosted page for each."""
    who = account(user_id)
    if not who.customer_id:
        return []
    with stripe_errors():
        listed = client().v1.invoices.list(params={"customer": who.customer_id, "limit": limit})
    fields = ("id", "number", "status", "amount_paid", "amount_due", "currency", "created", "hosted_invoice_url")
    return [{name: invoice.to_dict().get(name) for name in fields} for invoice in listed.data]


# -- webhooks ----------------------------------------------------------------------------

def receive_webhook(payload: bytes, signature: str | None) -> dict:
    """Hand one delivery to app.receive_stripe_event, which checks Stripe's signature,
    stores the event and applies it in one transaction (one round trip). This process
    holds no webhook secret: an unsigned or altered body is refused by the database."""
    if not signature:
        raise ApiError(400, "Missing Stripe-Signature header.")
    try:
        body = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "Webhook body is not UTF-8.") from None
    if "\x00" in body or "\x00" in signature:
        raise ApiError(400, "Webhook body is not a Stripe event.")
    [row] = db.call("select app.receive_stripe_event(%s, %s) as outcome", (body, signature))
    outcome = row["outcome"]
    if outcome.startswith("refused"):
        raise ApiError(400, f"Stripe event refused: {outcome.removeprefix('refused: ')}.")
    if outcome.startswith("failed"):
        log.error("stripe event not applied yet (the worker retries it): %s", outcome)
    return {"received": True, "outcome": outcome}
