"""The landing page for visitors, the dashboard (generate + job list) for signed-in users, the favicon."""
from __future__ import annotations

import io
from functools import lru_cache

from pathlib import Path

from flask import Response, current_app, flash, jsonify, redirect, render_template, url_for
from flask_login import current_user, login_required

from worker.sample import sample_ready

from .. import db, jobs
from ..errors import ApiError
from . import ui
from .forms import GenerateForm

DASHBOARD_JOBS = 20


@ui.app_context_processor
def page_links():
    """has_page('/keys'): whether a page is served, so the navigation links pages that
    other parts of the app add without knowing their endpoint names."""
    def has_page(path: str) -> bool:
        return any(rule.rule == path and "GET" in rule.methods for rule in current_app.url_map.iter_rules())

    return {"has_page": has_page}


@ui.get("/")
def index():
    """Visitors get the landing page; signed-in users their dashboard."""
    if current_user.is_authenticated:
        return redirect(url_for("ui.dashboard"))
    with db.tx() as cur:
        cur.execute("select tier, name, price_cents, credits, features from plans order by sort_order")
        plans = cur.fetchall()
    return render_template("landing.html", plans=plans, sample=sample_ready(Path(current_app.config["MEDIA_ROOT"])))


def _dashboard(form: GenerateForm, status: int = 200):
    with db.tx(current_user.id) as cur:
        rows = jobs.list_jobs(cur, DASHBOARD_JOBS)
    return render_template("app/dashboard.html", form=form, jobs=[jobs.job_json(r) for r in rows],
                           platform_names=jobs.PLATFORM_NAMES), status


@ui.get("/dashboard")
@login_required
def dashboard():
    return _dashboard(GenerateForm())


@ui.post("/dashboard/generate")
@login_required
def generate():
    form = GenerateForm()
    if not form.validate_on_submit():
        return _dashboard(form, 422)
    topic = jobs.clean_topic(form.topic.data)
    try:
        jobs.generate(form.platform.data, topic, form.duration_seconds.data, user_id=current_user.id)
    except ApiError as error:
        form.form_errors.append(error.detail)
        return _dashboard(form, error.status)
    flash(f"Your video about “{topic}” is on its way. It takes a few seconds.", "success")
    return redirect(url_for("ui.dashboard"))


@ui.get("/dashboard/jobs.json")
@login_required
def dashboard_jobs():
    """What the dashboard polls: the newest jobs and the balance."""
    with db.tx(current_user.id) as cur:
        rows = jobs.list_jobs(cur, DASHBOARD_JOBS)
        cur.execute("select credits_remaining from app.credit_balance()")
        credits = cur.fetchone()["credits_remaining"]
    return jsonify(jobs=[jobs.job_json(r) for r in rows], credits_remaining=credits)


@lru_cache(maxsize=1)
def _favicon_ico() -> bytes:
    """The brand mark (web/static/favicon.svg: a white play sign on a violet rounded
    square) as an ICO for browsers and bots that ask for /favicon.ico, drawn once."""
    from PIL import Image, ImageDraw

    size = 256
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((0, 0, size - 1, size - 1), radius=56, fill="#6d3df5")
    draw.polygon([(96, 64), (96, 192), (200, 128)], fill="#ffffff")
    out = io.BytesIO()
    image.save(out, format="ICO", sizes=[(16, 16), (32, 32), (48, 48)])
    return out.getvalue()


@ui.get("/favicon.ico")
def favicon():
    response = Response(_favicon_ico(), mimetype="image/vnd.microsoft.icon")
    response.headers["Cache-Control"] = "public, max-age=604800"
    return response
