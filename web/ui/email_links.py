"""Pages behind the emailed links: confirm an address, forgot/reset a password, and
the resend-verification button of the banner."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from .. import accounts, db, identity
from ..api.auth import FORGOT_ANSWER
from ..errors import ApiError
from . import ui
from .auth import _field_error
from .forms import ForgotPasswordForm, LogoutForm, ResetPasswordForm


@ui.get("/verify")
def verify_email():
    token = request.args.get("token", "")
    try:
        if not 1 <= len(token) <= 200:
            raise ApiError(422, "This link is not valid. Check that you copied all of it.")
        with db.tx() as cur:
            cur.execute("select app.verify_email(%s)", (identity.sha256(token),))
    except ApiError as error:
        return render_template("auth/link_error.html", detail=error.detail), 422
    flash("Your email address is confirmed. Thank you!", "success")
    return redirect(url_for("ui.dashboard" if current_user.is_authenticated else "ui.login"))


@ui.post("/verify/resend")
@login_required
def resend_verification():
    if LogoutForm().validate_on_submit():  # only the CSRF token
        try:
            with db.tx(current_user.id) as cur:
                cur.execute("select app.resend_verification()")
        except ApiError as error:
            flash(error.detail, "error")
        else:
            flash(f"We sent a new link to {current_user.account.email}.", "success")
    return redirect(request.referrer if request.referrer and request.referrer.startswith(request.host_url)
                    else url_for("ui.dashboard"))


@ui.route("/forgot", methods=["GET", "POST"])
def forgot_password():
    form = ForgotPasswordForm()
    if form.validate_on_submit():
        try:
            accounts.request_password_reset(form.email.data, accounts.client_ip(request))
        except ApiError as error:
            _field_error(form, error)
            return render_template("auth/forgot.html", form=form), error.status, error.headers
        flash(FORGOT_ANSWER, "info")
        return redirect(url_for("ui.login"))
    return render_template("auth/forgot.html", form=form), 422 if form.is_submitted() else 200


@ui.route("/reset", methods=["GET", "POST"])
def reset_password():
    token = request.args.get("token", "")
    form = ResetPasswordForm()
    status = 200
    if form.validate_on_submit():
        try:
            accounts.reset_password(token, form.new_password.data)
        except ApiError as error:
            if error.extra.get("field") == "new_password":
                form.new_password.errors = [*form.new_password.errors, error.detail.split(": ", 1)[-1]]
            else:
                form.form_errors.append(error.detail)
            status = error.status
        else:
            flash("Your password is changed. Sign in with the new one.", "success")
            return redirect(url_for("ui.login"))
    elif form.is_submitted():
        status = 422
    return render_template("auth/reset.html", form=form, token=token), status
