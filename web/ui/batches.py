"""The dashboard's batch form: a list of topics, one per line, bought as one batch (the
same all-or-nothing SQL as POST /v1/shorts/batch), its total cost shown before submitting."""
from __future__ import annotations

from flask import flash, g, redirect, url_for
from flask_login import current_user, login_required
from psycopg.types.json import Jsonb
from wtforms import IntegerField, SelectField, TextAreaField, ValidationError
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, NumberRange

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
        return _dashboard(GenerateForm(formdata=None), 422)
    items = [{"platform": form.platform.data, "topic": topic,
              "options": {"duration_seconds": form.duration_seconds.data}} for topic in topics_of(form.topics.data)]
    try:
        db.call("select * from app.create_batch(%s)", (Jsonb(items),), user_id=current_user.id)
    except ApiError as error:
        form.form_errors.append(error.detail)
        return _dashboard(GenerateForm(formdata=None), error.status)
    flash(f"Your {len(items)} videos are on their way. Each appears below as it renders.", "success")
    return redirect(url_for("ui.dashboard"))
