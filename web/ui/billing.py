"""Pricing, the billing page (plan, pending changes, statement, invoices), plan changes,
and Stripe's landing pages."""
from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta, timezone

from flask import Response, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from .. import billing, db
from .. import credits as credit_views
from ..errors import ApiError
from . import ui
from .forms import ChangePlanForm, LogoutForm

CHART_DAYS = 30
# What each ledger reason means on a statement (videos and refunds also name their topic)
STATEMENT_LABELS = credit_views.LABELS


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


@ui.post("/billing/buy-pack")
@login_required
def buy_pack():
    """A pack's Buy button: on to Stripe's Checkout, or back with the reason it cannot be sold."""
    if not LogoutForm().validate_on_submit():  # only the CSRF token
        flash("Your session expired; please try again.", "error")
        return redirect(url_for("ui.billing_page"))
    try:
        return redirect(billing.buy_pack_url(current_user.id, request.form.get("pack", "")[:50]), code=303)
    except ApiError as error:
        flash(error.detail, "error")
        return redirect(url_for("ui.billing_page"), code=303)


@ui.post("/billing/auto-top-up")
@login_required
def auto_top_up():
    """The auto top-up form: on or off, which pack, below how many credits, how often."""
    if not LogoutForm().validate_on_submit():  # only the CSRF token
        flash("Your session expired; please try again.", "error")
        return redirect(url_for("ui.billing_page"))
    form = request.form
    numbers = {}
    for name, low, high, default in (("threshold", 1, 1000, None), ("min_hours_between", 1, 720, 24),
                                     ("max_per_month", 1, 31, 3)):
        text = form.get(name, "").strip() or (str(default) if default else "")
        if not (text.isascii() and text.isdigit() and len(text) <= 4 and low <= int(text) <= high):
            flash(f"{name.replace('_', ' ').capitalize()} must be a whole number from {low} to {high}.", "error")
            return redirect(url_for("ui.billing_page"), code=303)
        numbers[name] = int(text)
    try:
        with db.tx(current_user.id) as cur:
            cur.execute("select app.set_auto_top_up(%s, %s, %s, %s, %s)",
                        (form.get("enabled") == "on", form.get("pack", "")[:50], numbers["threshold"],
                         numbers["min_hours_between"], numbers["max_per_month"]))
    except ApiError as error:
        flash(error.detail, "error")
        return redirect(url_for("ui.billing_page"), code=303)
    flash("Automatic top-up is " + ("on." if form.get("enabled") == "on" else "off."), "success")
    return redirect(url_for("ui.billing_page"), code=303)


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


def statement_filter() -> tuple[dict, str | None]:
    """The statement's filter from the query string (dates are whole UTC days, `to`
    included): {since, until, kind, and the form's values}, and an error to show instead
    of applying a malformed filter."""
    values = {name: request.args.get(name, "").strip()[:40] for name in ("from", "to", "kind")}
    try:
        since = credit_views.parse_moment(values["from"] or None, "from")
        until = credit_views.parse_moment(values["to"] or None, "to")
        if until is not None and len(values["to"]) == 10:  # a date: through the end of that day
            until += timedelta(days=1)
        kind = values["kind"] or None
        if kind is not None and kind not in credit_views.KINDS:
            raise ApiError(422, "kind: choose one of the listed kinds", field="kind")
        if since and until and since >= until:
            raise ApiError(422, "from must be before to", field="from")
    except ApiError as error:
        return {"since": None, "until": None, "kind": None, "values": values}, error.detail
    return {"since": since, "until": until, "kind": kind, "values": values}, None


@ui.get("/billing")
@login_required
def billing_page():
    chosen, filter_error = statement_filter()
    with db.tx(current_user.id) as cur:
        cur.execute("select * from app.billing_subscription()")
        state = cur.fetchone()
        cur.execute("select credits_remaining from app.credit_balance()")
        spendable = cur.fetchone()["credits_remaining"]
        live = credit_views.buckets(cur)
        cur.execute("select tier, name, price_cents, credits from plans")
        plans = {row["tier"]: row for row in cur.fetchall()}
        statement = credit_views.statement(cur, chosen["since"], chosen["until"], chosen["kind"])
        cur.execute("select * from app.usage(%s)", (CHART_DAYS,))
        usage = cur.fetchall()
        cur.execute("select * from app.credit_packs()")
        packs = [p for p in cur.fetchall() if p["on_sale"]]
        cur.execute("select * from app.auto_top_up()")
        top_up = cur.fetchone()
    invoices, invoices_error = [], None
    if state["has_customer"]:
        try:
            invoices = billing.invoices(current_user.id)
        except ApiError as error:
            invoices_error = error.detail
    # newest first on the page, at most 200 lines (the CSV has them all)
    return render_template("billing/billing.html", state=state, plans=plans, statement=statement[::-1][:200],
                           statement_total=len(statement), spendable=spendable, buckets=live,
                           next_expiry=credit_views.next_expiry(live), sources=credit_views.SOURCES,
                           statement_filter=chosen["values"], filter_error=filter_error, kinds=credit_views.KINDS,
                           filter_args={k: v for k, v in chosen["values"].items() if v},
                           describe=credit_views.describe, packs=packs, pack_form=LogoutForm(), top_up=top_up,
                           labels=STATEMENT_LABELS, invoices=invoices, invoices_error=invoices_error,
                           chart=usage_chart(usage, datetime.now(timezone.utc).date()), day=day, utc=timezone.utc,
                           from_unix=lambda seconds: datetime.fromtimestamp(seconds, timezone.utc),
                           test_mode=billing.test_mode(), form=ChangePlanForm(), resume_form=LogoutForm())


@ui.get("/billing/statement.csv")
@login_required
def statement_csv():
    chosen, filter_error = statement_filter()
    if filter_error:
        flash(filter_error, "error")
        return redirect(url_for("ui.billing_page"))
    with db.tx(current_user.id) as cur:
        rows = credit_views.statement(cur, chosen["since"], chosen["until"], chosen["kind"])
    name = "credit-statement-" + datetime.now(timezone.utc).strftime("%Y%m%d") + ".csv"
    return Response(credit_views.statement_csv(rows), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


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
