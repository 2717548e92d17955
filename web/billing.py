"""Stripe: customers, Checkout, the billing portal and webhook verification.

With STRIPE_SECRET_KEY set, every call goes to Stripe (STRIPE_API_BASE points the
library elsewhere, e.g. at localstripe in tests). Without it, billing runs in local
test mode: checkout is a page of this app that "pays" by sending Stripe-shaped,
signed events through the very webhook code Stripe's own deliveries use.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass

import stripe
from flask import current_app, url_for
from psycopg import Cursor

from . import db
from .errors import ApiError

log = logging.getLogger(__name__)
PAID_TIERS = ("starter", "pro", "agency")
WEBHOOK_TOLERANCE = 300  # seconds


def simulated() -> bool:
    """Local test mode: on exactly when no Stripe secret key is configured."""
    return not current_app.config.get("STRIPE_SECRET_KEY")


def client() -> stripe.StripeClient:
    config = current_app.config
    base = config.get("STRIPE_API_BASE")
    return stripe.StripeClient(config["STRIPE_SECRET_KEY"], max_network_retries=2,
                               base_addresses={"api": base} if base else None)


def webhook_secret() -> str:
    secret = current_app.config.get("STRIPE_WEBHOOK_SECRET")
    if secret:
        return secret
    if simulated():
        # test mode signs and verifies its own events with a key only this deployment knows
        return "whsec_local_" + hmac.new(current_app.config["SECRET_KEY"].encode(), b"stripe-webhook",
                                         hashlib.sha256).hexdigest()
    raise ApiError(503, "Billing is not configured (STRIPE_WEBHOOK_SECRET).")


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


def plan(cur: Cursor, tier: str) -> Plan:
    cur.execute("select tier, name, price_cents, credits, stripe_price_id from plans where tier = %s", (tier,))
    row = cur.fetchone()
    if row is None:
        raise ApiError(422, "tier: unknown plan", field="tier")
    return Plan(**row)


def ensure_customer(cur: Cursor, user_id: str) -> str:
    """The user's Stripe customer, created once: the row lock taken first makes concurrent
    checkouts wait, and the idempotency key makes even a retried create return the same one."""
    cur.execute("select * from app.lock_billing_customer()")
    row = cur.fetchone()
    if row["stripe_customer_id"]:
        return row["stripe_customer_id"]
    if simulated():
        customer_id = f"cus_local_{uuid.UUID(str(user_id)).hex}"
    else:
        customer = client().v1.customers.create(
            params={"email": row["email"], "metadata": {"user_id": str(user_id)}},
            options={"idempotency_key": f"customer-create-{user_id}"})
        customer_id = customer.id
    cur.execute("select app.set_stripe_customer(%s)", (customer_id,))
    return customer_id


def checkout_url(cur: Cursor, user_id: str, tier: str) -> str:
    """Start a subscription checkout for `tier`; where to send the browser."""
    if tier not in PAID_TIERS:
        raise ApiError(422, f"tier: must be one of {', '.join(PAID_TIERS)}", field="tier")
    chosen = plan(cur, tier)
    cur.execute("select is_verified from users")
    if not cur.fetchone()["is_verified"]:
        raise ApiError(403, "Verify your email address before buying a plan (check your inbox, or ask for a new link).")
    cur.execute("select tier, status from app.credit_balance()")
    current = cur.fetchone()
    if current["tier"] == tier and current["status"] in ("active", "trialing", "past_due"):
        raise ApiError(409, f"You are already on the {chosen.name} plan.")
    customer_id = ensure_customer(cur, user_id)
    if simulated():
        token = signed_simulation(user_id, tier, customer_id)
        return url_for("ui.simulated_checkout", token=token)
    if not chosen.stripe_price_id:
        raise ApiError(503, f"Billing is not configured: STRIPE_PRICE_{tier.upper()} is not set.")
    metadata = {"user_id": str(user_id), "tier": tier}
    session = client().v1.checkout.sessions.create(
        params={"mode": "subscription", "customer": customer_id, "client_reference_id": str(user_id),
                "line_items": [{"price": chosen.stripe_price_id, "quantity": 1}],
                "metadata": metadata, "subscription_data": {"metadata": metadata},
                "success_url": public_url("/billing/success?session_id={CHECKOUT_SESSION_ID}"),
                "cancel_url": public_url("/billing/canceled")},
        options={"idempotency_key": f"checkout-{user_id}-{uuid.uuid4()}"})
    return session.url


def portal_url(cur: Cursor) -> str:
    cur.execute("select stripe_customer_id from subscriptions")
    row = cur.fetchone()
    if not row or not row["stripe_customer_id"]:
        raise ApiError(404, "No billing account yet: subscribe to a plan first.")
    if simulated():
        return url_for("ui.billing_page", portal="simulated")
    session = client().v1.billing_portal.sessions.create(
        params={"customer": row["stripe_customer_id"], "return_url": public_url("/billing")})
    return session.url


# -- webhooks ----------------------------------------------------------------------------

def receive_webhook(payload: bytes, signature: str | None) -> dict:
    """Verify one Stripe event, then store and apply it with one SQL call (one
    transaction): app.receive_stripe_event keeps an event it could not apply, with the
    error, for replay."""
    if not signature:
        raise ApiError(400, "Missing Stripe-Signature header.")
    try:
        # the signature only: Stripe's own parse into StripeObjects costs more than the rest
        stripe.WebhookSignature.verify_header(payload, signature, webhook_secret(), tolerance=WEBHOOK_TOLERANCE)
        body = json.loads(payload)
    except stripe.SignatureVerificationError:
        raise ApiError(400, "Invalid Stripe signature.") from None
    except (ValueError, TypeError, AttributeError, KeyError, UnicodeDecodeError):
        raise ApiError(400, "Webhook body is not a valid Stripe event.") from None
    if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not isinstance(body.get("type"), str):
        raise ApiError(400, "Webhook body is not a Stripe event.")
    [row] = db.call("select app.receive_stripe_event(%s, %s, %s::jsonb) as outcome",
                    (body["id"], body["type"], payload.decode()))
    outcome = row["outcome"]
    if outcome.startswith("failed"):
        log.error("stripe event %s (%s) not applied: %s", body["id"], body["type"], outcome)
    return {"received": True, "outcome": outcome}


def sign(payload: bytes, secret: str) -> str:
    """A Stripe-Signature header for payload (Stripe's scheme: HMAC-SHA256 of "t.body")."""
    return stripe.WebhookSignature.generate_signature_header(payload.decode(), secret)


# -- local test mode ---------------------------------------------------------------------

def signed_simulation(user_id: str, tier: str, customer_id: str) -> str:
    from itsdangerous import URLSafeTimedSerializer

    serializer = URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="simulated-checkout")
    return serializer.dumps({"user_id": str(user_id), "tier": tier, "customer": customer_id,
                             "nonce": secrets.token_hex(8)})


def read_simulation(token: str) -> dict:
    from itsdangerous import BadSignature, URLSafeTimedSerializer

    serializer = URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="simulated-checkout")
    try:
        return serializer.loads(token, max_age=3600)
    except BadSignature:
        raise ApiError(404, "This checkout link is invalid or expired.") from None


def simulated_events(session: dict, price_cents: int, stripe_price_id: str | None) -> list[dict]:
    """What Stripe sends after a subscription checkout: checkout.session.completed and the
    first invoice.paid (current API shapes)."""
    now = int(time.time())
    subscription = f"sub_local_{secrets.token_hex(8)}"
    metadata = {"user_id": session["user_id"], "tier": session["tier"]}
    period = {"start": now, "end": now + 30 * 86400}
    price = stripe_price_id or f"price_local_{session['tier']}"
    return [
        {"id": f"evt_local_{secrets.token_hex(10)}", "object": "event", "type": "checkout.session.completed",
         "created": now, "data": {"object": {
             "id": f"cs_local_{secrets.token_hex(10)}", "object": "checkout.session", "mode": "subscription",
             "customer": session["customer"], "subscription": subscription, "metadata": metadata,
             "client_reference_id": session["user_id"], "payment_status": "paid", "amount_total": price_cents}}},
        {"id": f"evt_local_{secrets.token_hex(10)}", "object": "event", "type": "invoice.paid",
         "created": now, "data": {"object": {
             "id": f"in_local_{secrets.token_hex(10)}", "object": "invoice", "customer": session["customer"],
             "subscription": subscription, "billing_reason": "subscription_create", "amount_paid": price_cents,
             "status": "paid", "period_start": now, "period_end": now,
             "subscription_details": {"metadata": metadata},
             "lines": {"object": "list", "data": [{"period": period, "price": {"id": price},
                                                   "pricing": {"price_details": {"price": price}}}]}}}},
    ]
