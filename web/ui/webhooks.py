"""/webhooks: the customer's webhook endpoints, the delivery log, "send test event" and
"resend" (the same SQL functions as /v1/webhooks; web/api/webhooks.py)."""
from __future__ import annotations

from uuid import UUID

from flask import abort, flash, redirect, render_template, url_for
from flask_login import current_user, login_required
from wtforms import SelectMultipleField, StringField, widgets
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

from .. import db
from ..api.webhooks import EVENT_TYPES, MAX_URL, create_endpoint, list_deliveries, list_endpoints
from ..errors import ApiError
from . import ui
from .forms import Form, LogoutForm

DELIVERIES_SHOWN = 50
EVENT_DESCRIPTIONS = {
    "render.completed": "a video is ready",
    "render.failed": "a video failed for good (its credit refunded)",
    "batch.completed": "every video of a batch finished",
    "credits.low": "your balance fell to 20% of this period's credits",
    "credits.expiring": "unused credits end within three days",
    "subscription.updated": "your plan, its status or a scheduled change",
    "payment.failed": "Stripe could not take a payment",
}


class EndpointForm(Form):
    url = StringField("Endpoint URL", validators=[DataRequired(), Length(min=8, max=MAX_URL)],
                      render_kw={"placeholder": "https://hooks.example.org/storygenius", "inputmode": "url"})
    description = StringField("Description (optional)", validators=[Optional(), Length(max=200)])
    event_types = SelectMultipleField(
        "Events to send", choices=[SelectChoice(t, f"{t} — {EVENT_DESCRIPTIONS[t]}") for t in EVENT_TYPES],
        default=EVENT_TYPES, validators=[DataRequired(message="Choose at least one event.")],
        widget=widgets.ListWidget(prefix_label=False), option_widget=widgets.CheckboxInput())


def _page(form: EndpointForm, status: int = 200, created: dict | None = None):
    with db.tx(current_user.id) as cur:
        endpoints = list_endpoints(cur)
        deliveries = list_deliveries(cur, DELIVERIES_SHOWN)
    return render_template("webhooks/webhooks.html", form=form, endpoints=endpoints, deliveries=deliveries,
                           created=created, action_form=LogoutForm()), status


@ui.get("/webhooks")
@login_required
def webhooks_page():
    return _page(EndpointForm(formdata=None))


@ui.post("/webhooks")
@login_required
def webhooks_create():
    form = EndpointForm()
    if not form.validate_on_submit():
        return _page(form, 422)
    try:
        with db.tx(current_user.id) as cur:
            row = create_endpoint(cur, form.url.data.strip(), sorted(set(form.event_types.data)),
                                  (form.description.data or "").strip() or None)
    except ApiError as error:
        field = getattr(form, error.extra.get("field") or "", None)
        message = error.detail.split(": ", 1)[-1] if field is not None else error.detail
        (field.errors.append if field is not None else form.form_errors.append)(message)
        return _page(form, error.status)
    # the secret is shown on this answer only: never put in a flash, which lives in the cookie
    return _page(EndpointForm(formdata=None), 201, created={"url": row["url"], "secret": row["secret"]})


def _endpoint_action(endpoint_id: str, sql: str, done: str):
    if not LogoutForm().validate_on_submit():  # only the CSRF token
        abort(400)
    try:
        target = UUID(endpoint_id)
    except ValueError:
        abort(404)
    try:
        with db.tx(current_user.id) as cur:
            cur.execute(sql, (target,))
    except ApiError as error:
        if error.status == 404:
            abort(404)
        flash(error.detail, "error")
    else:
        flash(done, "success")
    return redirect(url_for("ui.webhooks_page"))


@ui.post("/webhooks/<endpoint_id>/test")
@login_required
def webhooks_test(endpoint_id: str):
    return _endpoint_action(endpoint_id, "select app.send_test_webhook(%s)",
                            "Test event queued: its delivery appears below in a few seconds.")


@ui.post("/webhooks/<endpoint_id>/enable")
@login_required
def webhooks_enable(endpoint_id: str):
    return _endpoint_action(endpoint_id, "select app.set_webhook_endpoint_enabled(%s, true)", "Endpoint turned on.")


@ui.post("/webhooks/<endpoint_id>/disable")
@login_required
def webhooks_disable(endpoint_id: str):
    return _endpoint_action(endpoint_id, "select app.set_webhook_endpoint_enabled(%s, false)",
                            "Endpoint turned off: nothing is sent to it until you turn it on.")


@ui.post("/webhooks/<endpoint_id>/delete")
@login_required
def webhooks_delete(endpoint_id: str):
    return _endpoint_action(endpoint_id, "select app.delete_webhook_endpoint(%s)", "Endpoint deleted.")


@ui.post("/webhooks/deliveries/<delivery_id>/resend")
@login_required
def webhooks_resend(delivery_id: str):
    return _endpoint_action(delivery_id, "select app.resend_webhook_delivery(%s)",
                            "Sending it again now.")
