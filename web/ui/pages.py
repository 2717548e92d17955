"""Signed-in pages."""
from __future__ import annotations

from flask import redirect, render_template, url_for
from flask_login import current_user, login_required

from . import ui


@ui.get("/")
def index():
    return redirect(url_for("ui.dashboard" if current_user.is_authenticated else "ui.login"))


@ui.get("/dashboard")
@login_required
def dashboard():
    return render_template("app/dashboard.html")
