"""The dashboard's batch form: a list of topics, one per line, bought as one batch (the
same all-or-nothing SQL as POST /v1/shorts/batch), its total cost shown before submitting.

Each rendering of the form carries a request id, used as the batch's idempotency key (in
the batch's own transaction, sql/42_idempotency.sql), so a double click, a resubmitted
page or the back button buys the batch once."""
from __future__ import annotations

import hashlib
import json
import uuid

import psycopg
from flask import flash, g, redirect, url_for
from flask_login import current_user, login_required
from psycopg.types.json import Jsonb
from wtforms import HiddenField, IntegerField, SelectField, TextAreaField, ValidationError
from wtforms.fields.choices import SelectChoice
from wtforms.validators import UUID, DataRequired, NumberRange

from .. import db, jobs
from ..api.shorts import MAX_BATCH
from ..errors import ApiError
from . import ui
from .forms import Form, GenerateForm


def topics_of(text: str | None) -> list[str]:
    """The topics a textarea holds: one per non-blank line, white space folded."""
    return [jobs.clean_topic(line) for line in (text or "").splitlines() if line.strip()]


def each_line_a_topic(form, field) -> None:
    topics = topics_of(field.data)
    if not 1 <= len(topics) <= MAX_BATCH:
        raise ValidationError(f"Write 1 to {MAX_BATCH} topics, one per line (you wrote {len(topics)}).")
    for number, topic in enumerate(topics, 1):
        if not 3 <= len(topic) <= 200:
            raise ValidationError(f"Topic {number} (“{topic[:40]}”) must be 3 to 200 characters.")


# field names and ids start with it, so they never clash with the single-video form's
PREFIX = "batch"


class BatchForm(Form):
    topics = TextAreaField("Topics, one per line", validators=[DataRequired(), each_line_a_topic],
                           render_kw={"rows": 6, "placeholder": "the history of coffee\nwhy cats purr\n…"})
    platform = SelectField("Platform", choices=[SelectChoice(value, label)
                                                for value, label in jobs.PLATFORM_NAMES.items()])
    # what makes a resubmission of this rendering of the form the same request
    request_id = HiddenField(default=lambda: str(uuid.uuid4()), validators=[DataRequired(), UUID()])
    duration_seconds = IntegerField("Length of each (seconds)", default=jobs.DEFAULT_DURATION,
                                    validators=[DataRequired(), NumberRange(min=jobs.MIN_DURATION,
                                                                            max=jobs.MAX_DURATION)],
                                    render_kw={"min": jobs.MIN_DURATION, "max": jobs.MAX_DURATION, "step": 1})


@ui.context_processor
def batch_form_in_templates():
    """`batch_form()` for templates/app/_batch.html: the form being re-shown with its
    errors, or a fresh one."""
    return {"batch_form": lambda: g.get("batch_form") or BatchForm(formdata=None, prefix=PREFIX), "max_batch": MAX_BATCH,
            "topics_of": topics_of}


@ui.post("/dashboard/batch")
@login_required
def generate_batch():
    from .pages import _dashboard

    form = BatchForm(prefix=PREFIX)
    g.batch_form = form
    if not form.validate_on_submit():
        if form.request_id.errors:  # a hidden field: only a tampered or truncated post gets here
            form.request_id.data = str(uuid.uuid4())
            form.form_errors.append("The form was incomplete; please submit it again.")
        return _dashboard(GenerateForm(formdata=None), 422)
    items = [{"platform": form.platform.data, "topic": topic,
              "options": {"duration_seconds": form.duration_seconds.data}} for topic in topics_of(form.topics.data)]
    key = f"dashboard-batch:{form.request_id.data}"
    fingerprint = hashlib.sha256(json.dumps(items, sort_keys=True).encode()).digest()
    try:
        with db.tx(current_user.id) as cur:
            cur.execute("select * from app.begin_idempotent_request(%s, 'POST', '/dashboard/batch', %s)",
                        (key, fingerprint))
            if cur.fetchone()["replay"]:
                flash(f"Those {len(items)} videos are already on their way; nothing was bought twice.", "success")
                return redirect(url_for("ui.dashboard"))
            cur.execute("select batch_id from app.create_batch(%s)", (Jsonb(items),))
            batch_id = cur.fetchone()["batch_id"]
            cur.execute("select app.finish_idempotent_request(%s, 202, %s)", (key, json.dumps({"batch_id": str(batch_id)})))
    except psycopg.errors.LockNotAvailable:
        flash("That list is still being bought; it appears below in a moment.", "success")
        return redirect(url_for("ui.dashboard"))
    except ApiError as error:
        if error.status == 422 and "Idempotency-Key" in error.detail:
            # this rendering of the form bought another list already (the back button, then
            # an edit): a new id makes the next submit a new request
            form.request_id.data = str(uuid.uuid4())
            form.form_errors.append("This form was already used to buy another list. Check the list and "
                                    "submit again to buy it.")
        else:
            form.form_errors.append(error.detail)
        return _dashboard(GenerateForm(formdata=None), error.status)
    flash(f"Your {len(items)} videos are on their way. Each appears below as it renders.", "success")
    return redirect(url_for("ui.dashboard"))
