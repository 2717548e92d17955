"""Pricing, the billing page (plan, pending changes, statement, invoices), plan changes,
and Stripe's landing pages."""
from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta, timezone

from flask import flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from .. import billing, db
from ..errors import ApiError
from . import ui
from .forms import ChangePlanForm, LogoutForm

CHART_DAYS = 30
# What each ledger reason means on a statement (videos and refunds also name their topic)
STATEMENT_LABELS = {
    "signup_grant": "Welcome credits",
    "plan_grant": "Plan credits",
    "upgrade_grant": "Upgrade: the new plan's extra credits",
    "renewal": "Renewal: this period's credits",
    "expiry": "Unused credits expired",
    "render": "Video",
    "refund": "Refund for a failed video",
    "admin_grant": "Credits from support",
}


def subscription_state() -> dict | None:
    """The signed-in user's app.billing_subscription() row (None for visitors)."""
    if not current_user.is_authenticated:
        return None
    with db.tx(current_user.id) as cur:
        cur.execute("select * from app.billing_subscription()")
        return cur.fetchone()


def plan_actions(plans: list[dict], state: dict | None) -> dict[str, dict]:
    """What each plan card offers the viewer: a badge or a button, by tier."""
    actions = {}
    live = state is not None and state["subscription_live"] and state["status"] != "incomplete"
    subscribed = state["subscribed_tier"] if live else (state["tier"] if state else None)
    price = {p["tier"]: p["price_cents"] for p in plans}
    for plan in plans:
        tier = plan["tier"]
        if state is None:
            actions[tier] = {"kind": "signup"}
        elif live and tier == subscribed:
            if state["cancel_at_period_end"]:
                actions[tier] = {"kind": "resume", "label": f"Resume {plan['name']}"}
            elif state["pending_tier"]:
                actions[tier] = {"kind": "change", "label": f"Keep {plan['name']}"}
            else:
                actions[tier] = {"kind": "badge", "label": "Current plan"}
        elif live and tier == state["pending_tier"]:
            actions[tier] = {"kind": "badge", "label": "Starts " + day(state["pending_change_at"])}
        elif live and tier == "free" and state["cancel_at_period_end"]:
            actions[tier] = {"kind": "badge", "label": "From " + day(state["current_period_end"])}
        elif tier == subscribed:
            actions[tier] = {"kind": "badge", "label": "Current plan"}
        else:
            verb = "Upgrade" if price[tier] > price.get(subscribed, 0) else "Downgrade"
            actions[tier] = {"kind": "change", "label": f"{verb} to {plan['name']}"}
    return actions


def day(moment: datetime | None) -> str:
    """A date as people read it, in UTC (said so on the page)."""
    return moment.astimezone(timezone.utc).strftime("%-d %b %Y") if moment else ""


@ui.get("/pricing")
def pricing():
    with db.tx() as cur:
        cur.execute("select tier, name, price_cents, credits, features from plans order by sort_order")
        plans = cur.fetchall()
    state = subscription_state()
    return render_template("billing/pricing.html", plans=plans, actions=plan_actions(plans, state), state=state,
                           test_mode=billing.test_mode(), form=ChangePlanForm())


def _act(change) -> object:
    """Run a plan change for the signed-in user; a refusal or Stripe trouble is a flash message."""
    try:
        result = change()
    except ApiError as error:
        flash(error.detail, "error")
        return redirect(url_for("ui.billing_page"))
    if result.checkout_url:
        return redirect(result.checkout_url, code=303)
    flash(result.detail, "success")
    return redirect(url_for("ui.billing_page"), code=303)


@ui.post("/billing/change-plan")
@login_required
def change_plan():
    form = ChangePlanForm()
    if not form.validate_on_submit():
        flash("Please choose a plan.", "error")
        return redirect(url_for("ui.pricing"))
    return _act(lambda: billing.change_plan(current_user.id, form.tier.data))


@ui.post("/billing/resume")
@login_required
def resume():
    if not LogoutForm().validate_on_submit():  # only the CSRF token
        flash("Your session expired; please try again.", "error")
        return redirect(url_for("ui.billing_page"))
    return _act(lambda: billing.resume(current_user.id))


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
        cur.execute("select * from app.billing_subscription()")
        state = cur.fetchone()
        cur.execute("select tier, name, price_cents, credits from plans")
        plans = {row["tier"]: row for row in cur.fetchall()}
        cur.execute("select * from app.credit_statement(max_rows => 50)")
        statement = cur.fetchall()
        cur.execute("select * from app.usage(%s)", (CHART_DAYS,))
        usage = cur.fetchall()
    invoices, invoices_error = [], None
    if state["has_customer"]:
        try:
            invoices = billing.invoices(current_user.id)
        except ApiError as error:
            invoices_error = error.detail
    return render_template("billing/billing.html", state=state, plans=plans, statement=statement,
                           labels=STATEMENT_LABELS, invoices=invoices, invoices_error=invoices_error,
                           chart=usage_chart(usage, datetime.now(timezone.utc).date()), day=day, utc=timezone.utc,
                           from_unix=lambda seconds: datetime.fromtimestamp(seconds, timezone.utc),
                           test_mode=billing.test_mode(), form=ChangePlanForm(), resume_form=LogoutForm())


@ui.get("/billing/portal")
@login_required
def portal():
    try:
        url = billing.portal_url(current_user.id)
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
