"""/v1/billing: plans, Checkout, the customer portal, and Stripe's webhook."""
from __future__ import annotations

from flask import jsonify, request

from .. import billing, db
from . import api, require_auth
from .auth import user_tx
from .validation import json_body, string_field


def plans_json(rows: list[dict]) -> list[dict]:
    return [{"tier": r["tier"], "name": r["name"], "price_cents": r["price_cents"],
             "price": f"${r['price_cents'] / 100:.2f}", "credits": r["credits"],
             "features": r["features"]} for r in rows]


@api.get("/billing/plans")
def plans():
    with db.tx() as cur:
        cur.execute("select tier, name, price_cents, credits, features from plans order by sort_order")
        rows = cur.fetchall()
    return jsonify(plans=plans_json(rows), test_mode=billing.simulated())


@api.post("/billing/create-checkout-session")
@require_auth
def create_checkout_session():
    tier = string_field(json_body(), "tier", max_length=50)
    with user_tx() as cur:
        cur.execute("select app.current_user_id() as id")
        url = billing.checkout_url(cur, cur.fetchone()["id"], tier)
    return jsonify(checkout_url=url)


@api.get("/billing/portal")
@require_auth
def portal():
    with user_tx() as cur:
        url = billing.portal_url(cur)
    return jsonify(portal_url=url)


@api.post("/billing/webhook")
def webhook():
    """Stripe calls this (no auth, no CSRF: the signature is the authentication)."""
    result = billing.receive_webhook(request.get_data(cache=False), request.headers.get("Stripe-Signature"))
    return jsonify(result)
