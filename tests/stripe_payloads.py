"""Stripe events as Stripe sends them today (API version 2026-10-28.endive), signed with
the real library's scheme, plus one old-shape variant per event type (API 2017-08-15 style,
what localstripe and endpoints pinned to an old version send).

Today's shapes (checked against stripe/openapi's fixtures3.json):
- a subscription's period is on each item (`items.data[].current_period_start/end`);
- an invoice names its subscription under `parent.subscription_details.subscription`
  (and `.metadata`), not a top-level `subscription`;
- an invoice line's price is `pricing.price_details.price`, and its proration flag is
  `parent.subscription_item_details.proration` (`parent.invoice_item_details.proration`
  for a pending proration item billed with a renewal).
"""
from __future__ import annotations

import json
import secrets
import time

import stripe

MONTH = 30 * 86400
API_VERSION = "2026-10-28.endive"
OLD_API_VERSION = "2017-08-15"


def event(event_type: str, obj: dict, created: int | None = None, event_id: str | None = None,
          api_version: str = API_VERSION, previous_attributes: dict | None = None) -> dict:
    data = {"object": obj}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return {"id": event_id or f"evt_{secrets.token_hex(12)}", "object": "event", "api_version": api_version,
            "type": event_type, "created": created or int(time.time()), "livemode": False,
            "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None}, "data": data}


# -- checkout ------------------------------------------------------------------------------

def checkout_session(user_id: str, customer: str, subscription: str | None, tier: str,
                     payment_status: str = "paid", mode: str = "subscription") -> dict:
    return {"id": f"cs_test_{secrets.token_hex(8)}", "object": "checkout.session", "mode": mode,
            "status": "complete", "payment_status": payment_status, "customer": customer,
            "subscription": subscription, "client_reference_id": user_id, "currency": "usd",
            "metadata": {"user_id": user_id, "tier": tier}, "livemode": False}


def checkout_completed(user_id: str, customer: str, subscription: str, tier: str, payment_status: str = "paid",
                       event_type: str = "checkout.session.completed", **kw) -> dict:
    return event(event_type, checkout_session(user_id, customer, subscription, tier, payment_status), **kw)


# -- invoices --------------------------------------------------------------------------------

def period_line(price: str, start: int, end: int | None = None, subscription: str | None = None,
                amount: int = 900) -> dict:
    """The charge for a period of the subscription's price (today's shape)."""
    return {"id": f"il_{secrets.token_hex(8)}", "object": "line_item", "amount": amount, "currency": "usd",
            "description": "1 × plan (at $%.2f / month)" % (amount / 100),
            "period": {"start": start, "end": end or start + MONTH}, "quantity": 1,
            "pricing": {"type": "price_details", "price_details": {"price": price, "product": "prod_test"},
                        "unit_amount_decimal": str(amount)},
            "parent": {"type": "subscription_item_details", "subscription_item_details": {
                "subscription": subscription, "subscription_item": "si_test", "proration": False,
                "invoice_item": None}}}


def proration_line(price: str, amount: int, start: int, end: int, subscription: str | None = None,
                   pending_item: bool = False) -> dict:
    """'Unused time on …' (negative) or 'Remaining time on …' (positive), today's shape;
    `pending_item` for a proration billed later with the renewal (an invoice item)."""
    what = "Remaining time on" if amount > 0 else "Unused time on"
    details = {"subscription": subscription, "proration": True, "invoice_item": f"ii_{secrets.token_hex(6)}"}
    parent = ({"type": "invoice_item_details", "invoice_item_details": details} if pending_item else
              {"type": "subscription_item_details",
               "subscription_item_details": {**details, "subscription_item": "si_test"}})
    return {"id": f"il_{secrets.token_hex(8)}", "object": "line_item", "amount": amount, "currency": "usd",
            "description": f"{what} plan after {time.strftime('%d %b %Y', time.gmtime(start))}",
            "period": {"start": start, "end": end}, "quantity": 1,
            "pricing": {"type": "price_details", "price_details": {"price": price, "product": "prod_test"},
                        "unit_amount_decimal": str(abs(amount))},
            "parent": parent}


def invoice(customer: str, subscription: str | None, lines: list[dict], reason: str = "subscription_create",
            status: str = "paid", invoice_id: str | None = None, metadata: dict | None = None,
            amount_paid: int | None = None) -> dict:
    total = sum(line["amount"] for line in lines)
    return {"id": invoice_id or f"in_{secrets.token_hex(8)}", "object": "invoice", "customer": customer,
            "billing_reason": reason, "status": status, "currency": "usd",
            "amount_due": total, "amount_paid": total if status == "paid" and amount_paid is None else (amount_paid or 0),
            "amount_remaining": 0 if status == "paid" else total,
            "hosted_invoice_url": "https://invoice.stripe.test/i/" + secrets.token_hex(6),
            "parent": {"type": "subscription_details",
                       "subscription_details": {"subscription": subscription, "metadata": metadata or {}}}
            if subscription else None,
            "lines": {"object": "list", "data": lines, "has_more": False}}


def invoice_paid(customer: str, subscription: str, price: str, period_start: int, reason: str = "subscription_create",
                 invoice_id: str | None = None, event_type: str = "invoice.paid", lines_before: list | None = None,
                 metadata: dict | None = None, **kw) -> dict:
    """A paid invoice for one period of `price`, after `lines_before` (e.g. prorations)."""
    lines = [*(lines_before or []), period_line(price, period_start, subscription=subscription)]
    return event(event_type, invoice(customer, subscription, lines, reason, invoice_id=invoice_id,
                                     metadata=metadata), **kw)


def upgrade_invoice_paid(customer: str, subscription: str, old_price: str, new_price: str, at: int, period_end: int,
                         old_amount: int = 900, new_amount: int = 2900, **kw) -> dict:
    """What `proration_behavior=always_invoice` bills at once for a price change: the unused
    time on the old price first (negative), then the rest of the period on the new one."""
    share = (period_end - at) / MONTH
    lines = [proration_line(old_price, -round(old_amount * share), at, period_end, subscription),
             proration_line(new_price, round(new_amount * share), at, period_end, subscription)]
    return event("invoice.paid", invoice(customer, subscription, lines, "subscription_update"), **kw)


def payment_failed(customer: str, subscription: str, price: str = "price_unknown", **kw) -> dict:
    start = int(time.time())
    return event("invoice.payment_failed", invoice(customer, subscription, [period_line(price, start, subscription=subscription)],
                                                   "subscription_cycle", status="open"), **kw)


# -- subscriptions -----------------------------------------------------------------------------

def subscription(subscription_id: str, customer: str, price: str, status: str, period_start: int,
                 period_end: int | None = None, cancel_at_period_end: bool = False, metadata: dict | None = None,
                 schedule=None, created: int | None = None) -> dict:
    end = period_end or period_start + MONTH
    return {"id": subscription_id, "object": "subscription", "customer": customer, "status": status,
            "created": created or period_start, "start_date": period_start, "billing_cycle_anchor": period_start,
            "cancel_at_period_end": cancel_at_period_end, "cancel_at": end if cancel_at_period_end else None,
            "canceled_at": None, "ended_at": None, "metadata": metadata or {}, "schedule": schedule,
            "latest_invoice": None, "livemode": False, "pause_collection": None, "pending_update": None,
            "items": {"object": "list", "has_more": False, "data": [{
                "id": f"si_{subscription_id[-8:]}", "object": "subscription_item", "quantity": 1,
                "subscription": subscription_id, "current_period_start": period_start, "current_period_end": end,
                "price": {"id": price, "object": "price", "currency": "usd", "unit_amount": 900,
                          "recurring": {"interval": "month", "interval_count": 1}, "type": "recurring"}}]}}


def schedule_downgrade(schedule_id: str, subscription_id: str, current_price: str, next_price: str,
                       phase_start: int, phase_end: int) -> dict:
    """An active subscription schedule: the current price until phase_end, then next_price."""
    return {"id": schedule_id, "object": "subscription_schedule", "subscription": subscription_id,
            "status": "active", "end_behavior": "release",
            "current_phase": {"start_date": phase_start, "end_date": phase_end},
            "phases": [{"start_date": phase_start, "end_date": phase_end,
                        "items": [{"price": current_price, "quantity": 1}], "proration_behavior": "create_prorations"},
                       {"start_date": phase_end, "end_date": phase_end + MONTH,
                        "items": [{"price": next_price, "quantity": 1}], "proration_behavior": "none"}]}


def subscription_event(event_type: str, customer: str, subscription_id: str, price: str, status: str,
                       period_start: int, **kw) -> dict:
    return event(event_type, subscription(subscription_id, customer, price, status, period_start), **kw)


# -- the old shapes (one per event type) -------------------------------------------------------

def invoice_paid_old_shape(customer: str, subscription_id: str, price: str, period_start: int,
                           reason: str = "subscription_create", lines_before: list | None = None, **kw) -> dict:
    """API 2017-08-15: top-level `subscription`, lines with `price`/`plan` objects and a top-level
    `proration` flag."""
    line = {"id": f"sli_{secrets.token_hex(6)}", "object": "line_item", "type": "subscription", "amount": 900,
            "period": {"start": period_start, "end": period_start + MONTH}, "proration": False,
            "plan": {"id": price, "object": "plan"}, "price": {"id": price, "object": "price"},
            "subscription": subscription_id}
    return event("invoice.payment_succeeded", {
        "id": f"in_{secrets.token_hex(8)}", "object": "invoice", "customer": customer,
        "subscription": subscription_id, "billing_reason": reason, "status": "paid", "paid": True,
        "amount_paid": 900, "lines": {"object": "list", "data": [*(lines_before or []), line]}},
        api_version=OLD_API_VERSION, **kw)


def old_proration_line(price: str, amount: int, start: int, end: int) -> dict:
    return {"id": f"ii_{secrets.token_hex(6)}", "object": "line_item", "type": "invoiceitem", "amount": amount,
            "period": {"start": start, "end": end}, "proration": True,
            "plan": {"id": price, "object": "plan"}, "price": {"id": price, "object": "price"}}


def subscription_old_shape(subscription_id: str, customer: str, price: str, status: str, period_start: int,
                           cancel_at_period_end: bool = False, metadata: dict | None = None) -> dict:
    """API 2017-08-15: the period at the top level, items carrying `plan`."""
    return {"id": subscription_id, "object": "subscription", "customer": customer, "status": status,
            "current_period_start": period_start, "current_period_end": period_start + MONTH,
            "cancel_at_period_end": cancel_at_period_end, "metadata": metadata or {},
            "plan": {"id": price, "object": "plan"},
            "items": {"object": "list", "data": [{"id": "si_old", "object": "subscription_item",
                                                  "plan": {"id": price, "object": "plan"}, "quantity": 1}]}}


def payment_failed_old_shape(customer: str, subscription_id: str, **kw) -> dict:
    return event("invoice.payment_failed", {"id": f"in_{secrets.token_hex(8)}", "object": "invoice",
                                            "customer": customer, "subscription": subscription_id,
                                            "billing_reason": "subscription_cycle", "status": "open",
                                            "paid": False}, api_version=OLD_API_VERSION, **kw)


def signed(payload: dict | bytes, secret: str, timestamp: int | None = None) -> tuple[bytes, dict]:
    """(body, headers) signed as Stripe does: t=<ts>,v1=HMAC-SHA256(secret, "<ts>.<body>")."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp)
    return body, {"Stripe-Signature": header, "Content-Type": "application/json"}
