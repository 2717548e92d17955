"""The landing page for visitors, the dashboard (generate + job list) for signed-in users, the favicon."""
from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path
from uuid import UUID

from flask import Response, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from wtforms import HiddenField, StringField
from wtforms.validators import DataRequired, Length

from worker.sample import sample_ready

from .. import db, jobs
from ..errors import ApiError
from . import ui
from .forms import Form, GenerateForm

# videos per page of the dashboard's list
DASHBOARD_PAGE = 12


@ui.app_context_processor
def page_links():
    """has_page('/keys'): whether a page is served, so the navigation links pages that
    other parts of the app add without knowing their endpoint names."""
    def has_page(path: str) -> bool:
        pages = current_app.extensions.get("sg_get_rules")
        if pages is None:  # the routes are fixed once the app serves: collect them once
            pages = current_app.extensions["sg_get_rules"] = frozenset(
                rule.rule for rule in current_app.url_map.iter_rules() if "GET" in rule.methods)
        return path in pages

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


class RenameForm(Form):
    title = StringField("New title", validators=[DataRequired(), Length(max=200)],
                        render_kw={"maxlength": 200, "autocomplete": "off"})
    page = HiddenField()


class DeleteForm(Form):
    page = HiddenField()


def _page_cursor(text: str | None) -> UUID | None:
    """The `before` of a dashboard page: the id of the last video of the page before it."""
    try:
        return UUID(text) if text else None
    except ValueError:
        return None


def _videos_page(cur, before: UUID | None) -> tuple[list[dict], str | None]:
    """One page of the caller's videos, newest first, and the cursor of the next page (one
    row more than a page is read, so a full last page has no empty page after it)."""
    try:
        rows = jobs.list_jobs(cur, DASHBOARD_PAGE + 1, before)
    except ApiError:  # a cursor that is not one of the caller's videos: start at the newest
        rows = jobs.list_jobs(cur, DASHBOARD_PAGE + 1)
    more = len(rows) > DASHBOARD_PAGE
    rows = rows[:DASHBOARD_PAGE]
    return [jobs.job_json(r) for r in rows], str(rows[-1]["id"]) if more else None


def _dashboard(form: GenerateForm, status: int = 200):
    before = _page_cursor(request.args.get("before"))
    with db.tx(current_user.id) as cur:
        videos, next_before = _videos_page(cur, before)
    return render_template("app/dashboard.html", form=form, jobs=videos, platform_names=jobs.PLATFORM_NAMES,
                           before=str(before) if before else "", next_before=next_before), status


@ui.get("/dashboard")
@login_required
def dashboard():
    return _dashboard(GenerateForm())


def _back_to_page(form) -> object:
    page = _page_cursor(form.page.data)
    return redirect(url_for("ui.dashboard", before=str(page)) if page else url_for("ui.dashboard"), code=303)


@ui.post("/dashboard/videos/<job_id>/rename")
@login_required
def rename_video(job_id: str):
    form = RenameForm()
    if not form.validate_on_submit():
        flash("Give the video a title of 1 to 200 characters.", "error")
        return _back_to_page(form)
    try:
        jobs.rename(jobs.parse_job_id(job_id), form.title.data, user_id=current_user.id)
    except ApiError as error:
        flash(error.detail.removeprefix("title: ").capitalize(), "error")
        return _back_to_page(form)
    flash(f"Renamed to “{' '.join(form.title.data.split())}”.", "success")
    return _back_to_page(form)


@ui.post("/dashboard/videos/<job_id>/delete")
@login_required
def delete_video(job_id: str):
    form = DeleteForm()
    if not form.validate_on_submit():
        flash("That request expired; please try again.", "error")
        return _back_to_page(form)
    try:
        jobs.delete(jobs.parse_job_id(job_id), Path(current_app.config["MEDIA_ROOT"]), user_id=current_user.id)
    except ApiError as error:
        flash(error.detail, "error")
        return _back_to_page(form)
    flash("Video deleted. The credit it cost stays spent.", "success")
    return _back_to_page(form)


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
    """What the dashboard polls: the page's jobs (`before` as on the page) and the balance."""
    with db.tx(current_user.id) as cur:
        videos, next_before = _videos_page(cur, _page_cursor(request.args.get("before")))
        cur.execute("select credits_remaining from app.credit_balance()")
        credits = cur.fetchone()["credits_remaining"]
    response = jsonify(jobs=videos, next_before=next_before, credits_remaining=credits)
    response.headers["Cache-Control"] = "no-store"
    return response


@ui.get("/dashboard/credits.json")
@login_required
def credits_json():
    """The balance, for the badge every open tab keeps current (web/static/app.js)."""
    with db.tx(current_user.id) as cur:
        cur.execute("select credits_remaining from app.credit_balance()")
        credits = cur.fetchone()["credits_remaining"]
    response = jsonify(credits_remaining=credits)
    response.headers["Cache-Control"] = "no-store"
    return response


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
