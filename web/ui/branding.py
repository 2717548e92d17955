"""The Branding page (Pro and Agency): upload a logo, pick two colours, see them.

Same rules as /v1/branding (web/api/branding.py): the plan is asked first, the logo is
cleaned before it is stored, a refused upload is a form error (422) that changes nothing.
Plans without branding see what it is and where to get it instead of the form.
"""
from __future__ import annotations

from flask import Response, abort, flash, g, redirect, render_template, url_for
from flask_login import current_user, login_required
from flask_wtf.file import FileField
from wtforms import BooleanField, StringField
from wtforms.validators import Length, Optional

from .. import db
from ..api.branding import COLOUR_FIELDS, read_brand, save_brand
from ..errors import ApiError
from . import ui
from .forms import Form

DEFAULT_PRIMARY = "#4c1d95"
DEFAULT_ACCENT = "#ffd60a"


class BrandingForm(Form):
    logo = FileField("Logo (PNG, JPEG or WebP, up to 1 MB)",
                     render_kw={"accept": "image/png,image/jpeg,image/webp"})
    primary_colour = StringField("Background colour", validators=[Optional(), Length(max=7)],
                                 render_kw={"type": "color"})
    accent_colour = StringField("Highlight colour", validators=[Optional(), Length(max=7)],
                                render_kw={"type": "color"})
    remove_logo = BooleanField("Remove the logo")


class RemoveBrandingForm(Form):
    """Only the CSRF token: removing the branding is a POST."""


def _user_tx():
    return db.tx(current_user.id)


@ui.app_context_processor
def plan_features():
    """`plan_sells('branding')` for templates (the nav shows Branding to plans that sell
    it): asked of the plans table once per request, only when a template asks."""

    def plan_sells(feature: str) -> bool:
        if not current_user.is_authenticated:
            return False
        cache = g.setdefault("plan_features", {})
        if feature not in cache:
            with db.tx(current_user.id) as cur:
                cur.execute("select app.plan_has_feature(%s) as sells", (feature,))
                cache[feature] = cur.fetchone()["sells"]
        return cache[feature]

    return {"plan_sells": plan_sells}


def _page(form: BrandingForm, status: int = 200):
    with _user_tx() as cur:
        brand = read_brand(cur)
    if not form.is_submitted():
        form.primary_colour.data = brand["primary_colour"] or DEFAULT_PRIMARY
        form.accent_colour.data = brand["accent_colour"] or DEFAULT_ACCENT
    return render_template("app/branding.html", form=form, brand=brand, remove_form=RemoveBrandingForm()), status


@ui.get("/branding")
@login_required
def branding():
    return _page(BrandingForm())


@ui.post("/branding")
@login_required
def save_branding():
    form = BrandingForm()
    if not form.validate_on_submit():
        return _page(form, 422)
    upload = form.logo.data
    data = upload.read() if upload else None
    if data == b"" and not upload.filename:
        data = None
    try:
        save_brand(_user_tx, data, upload.mimetype if data is not None else None,
                   {name: getattr(form, name).data for name in COLOUR_FIELDS},
                   bool(form.remove_logo.data) and data is None)
    except ApiError as error:
        field = getattr(form, error.extra.get("field") or "", None)
        if field is not None:
            field.errors = [*field.errors, error.detail]
        else:
            form.form_errors.append(error.detail)
        return _page(form, error.status)
    flash("Your branding is saved: every video you make from now on carries it.", "success")
    return redirect(url_for("ui.branding"))


@ui.post("/branding/remove")
@login_required
def remove_branding():
    form = RemoveBrandingForm()
    if not form.validate_on_submit():
        abort(400)
    with _user_tx() as cur:
        cur.execute("select app.delete_brand()")
    flash("Your branding is removed.", "success")
    return redirect(url_for("ui.branding"))


@ui.get("/branding/logo.png")
@login_required
def branding_logo():
    with _user_tx() as cur:
        cur.execute("select logo_png from brands where logo_png is not null")
        row = cur.fetchone()
    if row is None:
        abort(404)
    return Response(bytes(row["logo_png"]), mimetype="image/png", headers={"Cache-Control": "private, no-cache"})
