"""/v1/billing: plans, the subscription and its changes, Checkout, the portal, invoices,
and Stripe's webhook."""
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


def _iso(value):
    return value.isoformat() if value is not None else None


def subscription_json(row: dict) -> dict:
    """GET /v1/billing/subscription's body, from app.billing_subscription()."""
    return {"tier": row["tier"], "status": row["status"], "subscribed_tier": row["subscribed_tier"],
            "credits_remaining": row["credits_remaining"], "credits_granted_this_period": row["credits_granted"],
            "current_period_start": _iso(row["current_period_start"]),
            "current_period_end": _iso(row["current_period_end"]),
            "cancel_at_period_end": row["cancel_at_period_end"], "cancel_at": _iso(row["cancel_at"]),
            "pending_change": ({"tier": row["pending_tier"], "effective_at": _iso(row["pending_change_at"])}
                               if row["pending_tier"] else None),
            "syncing": row["syncing"]}


def _current_user_id():
    with user_tx() as cur:
        cur.execute("select app.current_user_id() as id")
        return cur.fetchone()["id"]


@api.get("/billing/plans")
def plans():
    with db.tx() as cur:
        cur.execute("select tier, name, price_cents, credits, features from plans order by sort_order")
        rows = cur.fetchall()
    return jsonify(plans=plans_json(rows), test_mode=billing.test_mode())


@api.get("/billing/subscription")
@require_auth
def subscription():
    with user_tx() as cur:
        cur.execute("select * from app.billing_subscription()")
        row = cur.fetchone()
    return jsonify(subscription_json(row))


@api.post("/billing/create-checkout-session")
@require_auth
def create_checkout_session():
    tier = string_field(json_body(), "tier", max_length=50)
    return jsonify(checkout_url=billing.checkout_url(_current_user_id(), tier))


def change_json(change: billing.Change):
    """202: the change is made at Stripe now and our copy follows within seconds (the
    worker's re-read; `syncing` in GET /v1/billing/subscription meanwhile), or, from Free,
    it continues at the Checkout given."""
    body = {"action": change.action, "detail": change.detail}
    if change.checkout_url:
        body["checkout_url"] = change.checkout_url
    return jsonify(body), 202


@api.get("/billing/packs")
def packs():
    return jsonify(packs=[{"pack": r["pack"], "name": r["name"], "credits": r["credits"],
                           "price_cents": r["price_cents"], "price": f"${r['price_cents'] / 100:.2f}",
                           "on_sale": r["on_sale"]} for r in billing.packs()],
                   expires_after_months=12)


@api.post("/billing/buy-pack")
@require_auth
def buy_pack():
    pack = string_field(json_body(), "pack", max_length=50)
    return jsonify(checkout_url=billing.buy_pack_url(_current_user_id(), pack))


@api.post("/billing/change-plan")
@require_auth
def change_plan():
    tier = string_field(json_body(), "tier", max_length=50)
    return change_json(billing.change_plan(_current_user_id(), tier))


@api.post("/billing/cancel")
@require_auth
def cancel():
    return change_json(billing.cancel(_current_user_id()))


@api.post("/billing/resume")
@require_auth
def resume():
    return change_json(billing.resume(_current_user_id()))


@api.get("/billing/invoices")
@require_auth
def invoices():
    return jsonify(invoices=billing.invoices(_current_user_id()))


@api.get("/billing/portal")
@require_auth
def portal():
    return jsonify(portal_url=billing.portal_url(_current_user_id()))


@api.post("/billing/webhook")
def webhook():
    """Stripe calls this (no auth, no CSRF: the signature, checked in the database, is the authentication)."""
    result = billing.receive_webhook(request.get_data(cache=False), request.headers.get("Stripe-Signature"))
    return jsonify(result)
