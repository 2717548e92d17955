"""Stripe events as Stripe sends them (current API shapes), signed with the real library's scheme."""
from __future__ import annotations

import json
import secrets
import time

import stripe

MONTH = 30 * 86400


def event(event_type: str, obj: dict, created: int | None = None, event_id: str | None = None) -> dict:
    return {"id": event_id or f"evt_{secrets.token_hex(12)}", "object": "event", "api_version": "2026-10-28.endive",
            "type": event_type, "created": created or int(time.time()), "livemode": False,
            "data": {"object": obj}}


def checkout_completed(user_id: str, customer: str, subscription: str, tier: str, **kw) -> dict:
    return event("checkout.session.completed", {
        "id": f"cs_test_{secrets.token_hex(8)}", "object": "checkout.session", "mode": "subscription",
        "customer": customer, "subscription": subscription, "client_reference_id": user_id,
        "metadata": {"user_id": user_id, "tier": tier}, "payment_status": "paid", "status": "complete"}, **kw)


def invoice_paid(customer: str, subscription: str, price: str, period_start: int, reason: str = "subscription_create",
                 invoice_id: str | None = None, event_type: str = "invoice.paid", **kw) -> dict:
    return event(event_type, {
        "id": invoice_id or f"in_{secrets.token_hex(8)}", "object": "invoice", "customer": customer,
        "subscription": subscription, "billing_reason": reason, "status": "paid", "amount_paid": 900,
        "lines": {"object": "list", "data": [{"period": {"start": period_start, "end": period_start + MONTH},
                                              "price": {"id": price}}]}}, **kw)


def subscription_event(event_type: str, customer: str, subscription: str, price: str, status: str,
                       period_start: int, **kw) -> dict:
    return event(event_type, {
        "id": subscription, "object": "subscription", "customer": customer, "status": status,
        "items": {"object": "list", "data": [{"price": {"id": price}, "current_period_start": period_start,
                                              "current_period_end": period_start + MONTH}]}}, **kw)


def payment_failed(customer: str, subscription: str, **kw) -> dict:
    return event("invoice.payment_failed", {"id": f"in_{secrets.token_hex(8)}", "object": "invoice",
                                            "customer": customer, "subscription": subscription,
                                            "billing_reason": "subscription_cycle", "status": "open"}, **kw)


def signed(payload: dict | bytes, secret: str, timestamp: int | None = None) -> tuple[bytes, dict]:
    """(body, headers) signed as Stripe does: t=<ts>,v1=HMAC-SHA256(secret, "<ts>.<body>")."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp)
    return body, {"Stripe-Signature": header, "Content-Type": "application/json"}
