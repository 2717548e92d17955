"""/v1/billing: plans, the subscription and its changes, Checkout, the portal, invoices,
and Stripe's webhook."""
from __future__ import annotations

from flask import jsonify, request

from .. import billing, db
from ..errors import ApiError
from . import api, require_auth
from .auth import user_tx
from .validation import int_field, json_body, string_field


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


def auto_top_up_json(row: dict | None) -> dict:
    if row is None:
        return {"enabled": False, "pack": None, "threshold": None, "min_hours_between": 24, "max_per_month": 3,
                "disabled_reason": None, "bought_this_month": 0, "last_attempt_at": None}
    return {**row, "last_attempt_at": _iso(row["last_attempt_at"])}


@api.get("/billing/auto-top-up")
@require_auth
def get_auto_top_up():
    with user_tx() as cur:
        cur.execute("select * from app.auto_top_up()")
        return jsonify(auto_top_up_json(cur.fetchone()))


@api.put("/billing/auto-top-up")
@require_auth
def put_auto_top_up():
    body = json_body()
    enabled = body.get("enabled")
    if not isinstance(enabled, bool):
        raise ApiError(422, "enabled: must be true or false", field="enabled")
    pack = string_field(body, "pack", max_length=50)
    threshold = int_field(body, "threshold", minimum=1, maximum=1000)
    hours = int_field(body, "min_hours_between", default=24, minimum=1, maximum=720)
    per_month = int_field(body, "max_per_month", default=3, minimum=1, maximum=31)
    with user_tx() as cur:
        cur.execute("select app.set_auto_top_up(%s, %s, %s, %s, %s)", (enabled, pack, threshold, hours, per_month))
        cur.execute("select * from app.auto_top_up()")
        return jsonify(auto_top_up_json(cur.fetchone()))


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
