"""/referrals: the referral link and what it has earned; /r/<code>: where a link lands
(remembered for the signup in a cookie, so a visitor may look around first)."""
from __future__ import annotations

from flask import current_app, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from .. import db
from ..api.referrals import MAX_CODE, record_referral, summary  # noqa: F401 - record_referral: signup views
from ..errors import ApiError
from . import ui

REFERRAL_COOKIE = "sg_ref"
# How long a link stays remembered in the visitor's browser before they sign up.
REFERRAL_COOKIE_SECONDS = 30 * 24 * 3600


def plausible_code(code: str | None) -> bool:
    """A code as links carry them; anything else is no code at all (never an error)."""
    return bool(code) and len(code) <= MAX_CODE and code.isascii() and code.isalnum()


def referral_code_presented() -> str | None:
    """The referral code a signup came with: the link's `?ref=`, else the cookie /r/<code> set."""
    code = request.args.get("ref") or request.cookies.get(REFERRAL_COOKIE)
    return code if plausible_code(code) else None


@ui.get("/r/<code>")
def referral_landing(code: str):
    if not plausible_code(code):
        return redirect(url_for("ui.signup"))
    response = redirect(url_for("ui.signup", ref=code.lower()))
    response.set_cookie(REFERRAL_COOKIE, code.lower(), max_age=REFERRAL_COOKIE_SECONDS, path="/", httponly=True,
                        samesite="Lax", secure=current_app.config["SESSION_COOKIE_SECURE"])
    return response


@ui.get("/referrals")
@login_required
def referrals_page():
    try:
        with db.tx(current_user.id) as cur:
            programme = summary(cur)
    except ApiError as error:
        if error.status != 403:
            raise
        return render_template("referrals/referrals.html", programme=None, refusal=error.detail), 200
    return render_template("referrals/referrals.html", programme=programme, refusal=None)
