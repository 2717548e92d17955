"""Pricing, the billing page, Stripe's landing pages, and local test-mode checkout."""
from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime, timedelta, timezone

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from .. import billing, db
from ..errors import ApiError
from . import ui
from .forms import CheckoutForm, LogoutForm

CHART_DAYS = 30


@ui.get("/pricing")
def pricing():
    with db.tx() as cur:
        cur.execute("select tier, name, price_cents, credits, features from plans order by sort_order")
        plans = cur.fetchall()
    current_tier = current_user.account.tier if current_user.is_authenticated else None
    return render_template("billing/pricing.html", plans=plans, current_tier=current_tier,
                           test_mode=billing.simulated(), form=CheckoutForm())


@ui.post("/billing/checkout")
@login_required
def checkout():
    form = CheckoutForm()
    if not form.validate_on_submit():
        flash("Please choose a plan.", "error")
        return redirect(url_for("ui.pricing"))
    try:
        with db.tx(current_user.id) as cur:
            url = billing.checkout_url(cur, current_user.id, form.tier.data)
    except ApiError as error:
        flash(error.detail, "error")
        return redirect(url_for("ui.pricing"))
    return redirect(url, code=303)


def usage_chart(usage: list[dict], today: date) -> dict:
    """Bars for credits used per day over the last CHART_DAYS days (server-side SVG)."""
    per_day = Counter(row["created_at"].date() for row in usage if row["action"] == "video_generation")
    days = [today - timedelta(days=n) for n in range(CHART_DAYS - 1, -1, -1)]
    peak = max([per_day[d] for d in days] + [1])
    bars = [{"day": d.isoformat(), "count": per_day[d], "height": round(80 * per_day[d] / peak)} for d in days]
    return {"bars": bars, "peak": peak, "total": sum(per_day[d] for d in days)}


@ui.get("/billing")
@login_required
def billing_page():
    with db.tx(current_user.id) as cur:
        cur.execute("select * from app.credit_balance()")
        balance = cur.fetchone()
        cur.execute("select name, price_cents, credits from plans where tier = %s", (balance["tier"],))
        plan = cur.fetchone()
        cur.execute("select stripe_customer_id is not null as has_customer from subscriptions")
        has_customer = cur.fetchone()["has_customer"]
        cur.execute("select * from app.usage(%s)", (CHART_DAYS,))
        usage = cur.fetchall()
    return render_template("billing/billing.html", balance=balance, plan=plan, usage=usage[:50],
                           chart=usage_chart(usage, datetime.now(timezone.utc).date()),
                           has_customer=has_customer, test_mode=billing.simulated(),
                           simulated_portal=request.args.get("portal") == "simulated")


@ui.get("/billing/portal")
@login_required
def portal():
    try:
        with db.tx(current_user.id) as cur:
            url = billing.portal_url(cur)
    except ApiError as error:
        flash(error.detail, "error")
        return redirect(url_for("ui.billing_page"))
    return redirect(url, code=303)


@ui.get("/billing/success")
@login_required
def checkout_success():
    return render_template("billing/success.html")


@ui.get("/billing/canceled")
@login_required
def checkout_canceled():
    return render_template("billing/canceled.html")


@ui.route("/billing/simulate/<token>", methods=["GET", "POST"])
@login_required
def simulated_checkout(token: str):
    """Test mode's stand-in for Stripe Checkout: paying sends the events Stripe would send,
    signed, through the same webhook handler."""
    if not billing.simulated():
        raise ApiError(404, "Not found.")
    session = billing.read_simulation(token)
    if session["user_id"] != str(current_user.id):
        raise ApiError(404, "This checkout link is for another account.")
    with db.tx() as cur:
        chosen = billing.plan(cur, session["tier"])
    form = LogoutForm()  # only a CSRF token
    if request.method == "POST" and form.validate_on_submit():
        secret = billing.webhook_secret()
        for event in billing.simulated_events(session, chosen.price_cents, chosen.stripe_price_id):
            payload = json.dumps(event).encode()
            billing.receive_webhook(payload, billing.sign(payload, secret))
        return redirect(url_for("ui.checkout_success"))
    return render_template("billing/simulate.html", plan=chosen, form=form)
