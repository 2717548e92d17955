"""/keys: the API keys page. Create a key (name, scopes, optional monthly budget) and see
it once, list the live ones, revoke; plans without API access see what to upgrade to."""
from __future__ import annotations

from uuid import UUID

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from wtforms import IntegerField, SelectMultipleField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from .. import db
from ..api import keys as api_keys
from ..errors import ApiError
from . import ui
from .forms import Form

SCOPE_LABELS = {
    "videos:write": "Make videos (videos:write)",
    "videos:read": "Read videos and batches (videos:read)",
    "credits:read": "Read credits and usage (credits:read)",
    "webhooks:manage": "Manage webhooks (webhooks:manage)",
}


class KeyForm(Form):
    name = StringField("Name", validators=[DataRequired(), Length(max=100)],
                       description="To tell your keys apart, e.g. “CI server”.")
    scopes = SelectMultipleField("What it may do",
                                 choices=[SelectChoice(value, label) for value, label in SCOPE_LABELS.items()],
                                 default=list(SCOPE_LABELS), option_widget=CheckboxInput(),
                                 widget=ListWidget(prefix_label=False),
                                 validators=[DataRequired("Choose at least one thing the key may do.")])
    monthly_budget = IntegerField("Monthly credit budget (optional)",
                                  validators=[Optional(), NumberRange(min=1, max=api_keys.MAX_BUDGET)],
                                  description="Credits this key may spend each calendar month. Empty: no limit "
                                              "but your balance.")


def _page(form: KeyForm, created: dict | None = None, status: int = 200):
    with db.tx(current_user.id) as cur:
        cur.execute("select coalesce((p.features ->> 'api_keys')::boolean, false) as allowed, p.name "
                    "from app.credit_balance() b join plans p on p.tier = b.tier")
        plan = cur.fetchone()
        cur.execute("select * from app.list_api_keys()")
        keys = [api_keys.key_json(row) for row in cur.fetchall()]
    response = render_template("keys/index.html", form=form, keys=keys, created=created, plan=plan,
                               scope_labels=SCOPE_LABELS, api_base=request.host_url.rstrip("/"))
    # a page that shows a new key must not be kept by the browser or a proxy
    return response, status, {"Cache-Control": "no-store"}


@ui.get("/keys")
@login_required
def keys_page():
    return _page(KeyForm())


@ui.post("/keys")
@login_required
def create_key():
    form = KeyForm()
    if not form.validate_on_submit():
        return _page(form, status=422)
    try:
        with db.tx(current_user.id) as cur:
            created = api_keys.create(cur, form.name.data.strip(), form.scopes.data, form.monthly_budget.data)
    except ApiError as error:
        form.form_errors.append(error.detail)
        return _page(form, status=error.status)
    return _page(KeyForm(formdata=None), created=created, status=201)


@ui.post("/keys/<key_id>/revoke")
@login_required
def revoke_key(key_id: str):
    form = Form()
    if not form.validate_on_submit():
        flash("The form expired; please try again.", "error")
        return redirect(url_for("ui.keys_page"))
    try:
        with db.tx(current_user.id) as cur:
            cur.execute("select app.revoke_api_key(%s)", (UUID(key_id),))
    except (ValueError, ApiError):
        flash("That key does not exist or was already revoked.", "error")
        return redirect(url_for("ui.keys_page"))
    flash("Key revoked: requests that use it are refused from now on.", "success")
    return redirect(url_for("ui.keys_page"))
