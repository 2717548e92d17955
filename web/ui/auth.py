"""Sign-up, sign-in, sign-out and password pages."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from flask import current_app, flash, jsonify, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from .. import accounts, db, erasure, identity, two_factor
from ..accounts import Account
from ..errors import ApiError
from . import SessionUser, is_safe_next, ui
from .forms import (ChangePasswordForm, DeleteAccountForm, LoginForm, LogoutForm, SignupForm, TwoFactorCodeForm,
                    TwoFactorConfirmForm)
from .referrals import record_referral, referral_code_presented

# How long a browser stays a known device of the accounts that signed in on it.
DEVICE_COOKIE_SECONDS = 365 * 24 * 3600


def _device_cookie_name() -> str:
    # __Host- cookies must be Secure, host-only and Path=/ (as the session cookie)
    return "__Host-sg_device" if current_app.config["SESSION_COOKIE_SECURE"] else "sg_device"


def _device_tokens() -> list[str]:
    """The device tokens this browser holds (one per account that signed in on it)."""
    value = request.cookies.get(_device_cookie_name(), "")
    return [token for token in value.split(".") if 0 < len(token) <= 200][:accounts.MAX_DEVICE_TOKENS]


def _remember_device(response, token: str) -> None:
    """Keep `token` first in the browser's device cookie (OWASP's device cookie)."""
    tokens = [token] + [t for t in _device_tokens() if t != token]
    response.set_cookie(_device_cookie_name(), ".".join(tokens[:accounts.MAX_DEVICE_TOKENS]),
                        max_age=DEVICE_COOKIE_SECONDS, path="/", httponly=True, samesite="Lax",
                        secure=current_app.config["SESSION_COOKIE_SECURE"])


def _start_session(cur, account: Account) -> None:
    """A fresh server-side session for the current user of `cur`'s transaction; the old
    cookie's contents are dropped first, so the session id changes at every sign-in."""
    token, token_hash = identity.new_browser_session_token()
    lifetime = timedelta(seconds=current_app.config["BROWSER_SESSION_TTL"])
    cur.execute("select app.start_browser_session(%s, %s)", (token_hash, datetime.now(timezone.utc) + lifetime))
    session.clear()
    login_user(SessionUser(token, account))


def _field_error(form, error: ApiError) -> None:
    """Show an account-layer error beside its field (or above the form)."""
    field = getattr(form, error.extra.get("field") or "", None)
    message = error.detail.split(": ", 1)[-1] if field is not None else error.detail
    if field is not None:
        field.errors = [*field.errors, message]
    else:
        form.form_errors.append(message)


@ui.route("/signup", methods=["GET", "POST"])
def signup():
    if current_user.is_authenticated:
        return redirect(url_for("ui.dashboard"))
    form = SignupForm()
    status, headers = 200, {}
    referral_code = referral_code_presented()
    if form.validate_on_submit():
        try:
            with db.tx() as cur:
                account = accounts.signup(cur, form.email.data, form.password.data, form.full_name.data or None,
                                          accounts.client_ip(request))
                record_referral(cur, referral_code, accounts.client_ip(request), _device_tokens())
                _start_session(cur, account)
        except ApiError as error:
            _field_error(form, error)
            status, headers = error.status, error.headers
        else:
            flash(f"Account created! You have {account.credits_remaining} free credits.", "success")
            return redirect(url_for("ui.dashboard"))
    elif form.is_submitted():
        status = 422
    return render_template("auth/signup.html", form=form, referred=bool(referral_code)), status, headers


@ui.route("/login", methods=["GET", "POST"])
def login():
    next_url = request.args.get("next")
    destination = next_url if is_safe_next(next_url) else url_for("ui.dashboard")
    if current_user.is_authenticated:
        return redirect(destination)
    form = LoginForm()
    status = 200
    headers = {}
    if form.validate_on_submit():
        try:
            verified = accounts.login(form.email.data, form.password.data, accounts.client_ip(request),
                                      _device_tokens())
            if verified.two_factor:
                challenge, _ = two_factor.start_login(verified)
                session["two_factor"] = {"challenge": challenge, "next": destination}
                response = redirect(url_for("ui.login_second_factor"))
                _remember_device(response, verified.device_token)  # known once the code checks out
                return response
            with db.tx() as cur:
                account = accounts.finish_login(cur, verified)
                _start_session(cur, account)
        except ApiError as error:
            _field_error(form, error)
            status, headers = error.status, error.headers
        else:
            flash("Welcome back!", "success")
            response = redirect(destination)
            _remember_device(response, verified.device_token)
            return response
    elif form.is_submitted():
        status = 422
    return render_template("auth/login.html", form=form, next=next_url if is_safe_next(next_url) else None), \
        status, headers


@ui.route("/login/2fa", methods=["GET", "POST"])
def login_second_factor():
    """Second step of a sign-in with two-factor on: the code (the challenge is in the session)."""
    pending = session.get("two_factor")
    if current_user.is_authenticated or not isinstance(pending, dict):
        return redirect(url_for("ui.login"))
    form = TwoFactorCodeForm()
    status = 200
    if form.validate_on_submit():
        try:
            with db.tx() as cur:
                account = two_factor.finish_login(cur, str(pending.get("challenge", "")), form.code.data)
                if account is not None:
                    _start_session(cur, account)
        except ApiError as error:  # the challenge expired or was used up
            session.pop("two_factor", None)
            flash(error.detail, "error")
            return redirect(url_for("ui.login"))
        if account is None:
            form.code.errors = [*form.code.errors, two_factor.WRONG_CODE]
            status = 401
        else:
            flash("Welcome back!", "success")
            next_url = pending.get("next")
            return redirect(next_url if is_safe_next(next_url) else url_for("ui.dashboard"))
    elif form.is_submitted():
        status = 422
    return render_template("auth/login_2fa.html", form=form), status


@ui.route("/logout", methods=["GET", "POST"])
def logout():
    form = LogoutForm()
    if request.method == "GET":
        if not current_user.is_authenticated:
            return redirect(url_for("ui.login"))
        return render_template("auth/logout.html", form=form)
    if form.validate_on_submit() and current_user.is_authenticated:
        with db.tx() as cur:
            cur.execute("select app.end_browser_session(%s)", (identity.sha256(current_user.session_token),))
        logout_user()
        session.clear()
        flash("You have been logged out.", "info")
    return redirect(url_for("ui.login"))


def _account_page(form: ChangePasswordForm, status: int = 200, two_factor_form: TwoFactorConfirmForm | None = None,
                  delete_form: DeleteAccountForm | None = None):
    with db.tx(current_user.id) as cur:
        state = two_factor.pending(cur, current_user.account.email)
    return render_template("auth/account.html", form=form, two_factor=state,
                           two_factor_form=two_factor_form or TwoFactorConfirmForm(formdata=None),
                           delete_form=delete_form or DeleteAccountForm(formdata=None),
                           start_form=LogoutForm()), status


@ui.route("/account", methods=["GET", "POST"])
@login_required
def account():
    form = ChangePasswordForm()
    status = 200
    if form.validate_on_submit():
        try:
            with db.tx(current_user.id) as cur:
                version = accounts.change_password(cur, form.current_password.data, form.new_password.data,
                                                   current_user.account.email)
                # every other session ended; this browser continues in a new one
                _start_session(cur, replace(current_user.account, session_version=version))
        except ApiError as error:
            _field_error(form, error)
            status = error.status
        else:
            flash("Password changed. Every other session has been signed out.", "success")
            return redirect(url_for("ui.account"))
    elif form.is_submitted():
        status = 422
    return _account_page(form, status)


@ui.post("/account/2fa/setup")
@login_required
def two_factor_setup():
    """Start enrolment: the account page then shows the QR code and the secret."""
    if LogoutForm().validate_on_submit():  # only the CSRF token
        try:
            with db.tx(current_user.id) as cur:
                two_factor.begin(cur, current_user.account.email)
        except ApiError as error:
            flash(error.detail, "error")
    return redirect(url_for("ui.account") + "#two-factor")


@ui.post("/account/2fa/enable")
@login_required
def two_factor_enable():
    form = TwoFactorConfirmForm()
    if form.validate_on_submit():
        try:
            with db.tx(current_user.id) as cur:
                codes = two_factor.enable(cur, form.password.data, form.code.data)
        except ApiError as error:
            _field_error(form, error)
            return _account_page(ChangePasswordForm(formdata=None), error.status, form)
        return render_template("auth/recovery_codes.html", codes=codes)
    return _account_page(ChangePasswordForm(formdata=None), 422, form)


@ui.post("/account/2fa/disable")
@login_required
def two_factor_disable():
    form = TwoFactorConfirmForm()
    if form.validate_on_submit():
        try:
            with db.tx(current_user.id) as cur:
                two_factor.disable(cur, form.password.data, form.code.data)
        except ApiError as error:
            _field_error(form, error)
            return _account_page(ChangePasswordForm(formdata=None), error.status, form)
        flash("Two-factor sign-in is off.", "info")
        return redirect(url_for("ui.account"))
    return _account_page(ChangePasswordForm(formdata=None), 422, form)


@ui.get("/account/export")
@login_required
def account_export():
    """The signed-in user's data as a JSON download."""
    user_id = current_user.id
    response = jsonify(erasure.export_account(lambda: db.tx(user_id)))
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Disposition"] = 'attachment; filename="story-genius-export.json"'
    return response


@ui.post("/account/delete")
@login_required
def account_delete():
    """Delete the account (password, and a code when two-factor sign-in is on), then sign out."""
    form = DeleteAccountForm()
    if not form.validate_on_submit():
        return _account_page(ChangePasswordForm(formdata=None), 422, delete_form=form)
    user_id = current_user.id
    try:
        erasure.delete_account(lambda: db.tx(user_id), form.password.data, form.code.data or None)
    except ApiError as error:
        _field_error(form, error)
        return _account_page(ChangePasswordForm(formdata=None), error.status, delete_form=form)
    logout_user()
    session.clear()
    flash("Your account has been deleted, with your videos and personal data. Thank you for trying Story Genius.",
          "info")
    return redirect(url_for("ui.signup"))
