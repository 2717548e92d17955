"""flask-wtf forms (each carries a CSRF token)."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, IntegerField, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, EqualTo, Length, NumberRange, Optional, ValidationError

from ..accounts import name_problem

from ..api.validation import UNSAFE_TEXT, is_safe_text
from ..jobs import PLATFORM_NAMES


def refuse_unsafe_text(value):
    """Field filter: a ValueError here becomes an error on the field (wtforms' process
    errors), so text Postgres cannot store never gets past validation."""
    if isinstance(value, str) and not is_safe_text(value):
        raise ValueError(f"This field {UNSAFE_TEXT}.")
    return value


class Form(FlaskForm):
    """Every page form: besides its CSRF token, each field refuses NUL characters and
    unpaired surrogates with a form error (a 422 page), whatever the field's validators."""

    class Meta:
        def bind_field(self, form, unbound_field, options):
            filters = [refuse_unsafe_text, *unbound_field.kwargs.get("filters", ())]
            return unbound_field.bind(form=form, **{**options, "filters": filters})


def one_printable_line(form, field) -> None:
    """A name goes into mail headers: one line of printable text."""
    problem = name_problem(field.data or "")
    if problem:
        raise ValidationError(problem[0].upper() + problem[1:] + ".")


class SignupForm(Form):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(min=8, max=128)])
    full_name = StringField("Name (optional)", validators=[Optional(), Length(max=200), one_printable_line])


class LoginForm(Form):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


class ChangePasswordForm(Form):
    current_password = PasswordField("Current password", validators=[DataRequired(), Length(max=1024)])
    new_password = PasswordField("New password", validators=[DataRequired(), Length(min=8, max=128)])
    confirm = PasswordField("Repeat new password",
                            validators=[DataRequired(), EqualTo("new_password", "The passwords do not match.")])


class TwoFactorCodeForm(Form):
    code = StringField("Code from your authenticator app (or a recovery code)",
                       validators=[DataRequired(), Length(max=50)],
                       render_kw={"inputmode": "numeric", "autocomplete": "one-time-code"})


class TwoFactorConfirmForm(Form):
    """Turning two-factor sign-in on or off: the password and a code."""
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    code = StringField("Code from your authenticator app", validators=[DataRequired(), Length(max=50)],
                       render_kw={"inputmode": "numeric", "autocomplete": "one-time-code"})


class LogoutForm(Form):
    """Only the CSRF token: logging out is a POST."""


class GenerateForm(Form):
    platform = SelectField("Platform", choices=[SelectChoice(value, label) for value, label in PLATFORM_NAMES.items()])
    topic = StringField("Topic", validators=[DataRequired(), Length(min=3, max=200)],
                        render_kw={"placeholder": "e.g. the history of coffee", "maxlength": 200})
    duration_seconds = IntegerField("Length (seconds)", default=20,
                                    validators=[DataRequired(), NumberRange(min=15, max=60)],
                                    render_kw={"min": 15, "max": 60, "step": 1})


class ChangePlanForm(Form):
    """Move to a plan: Checkout from Free, otherwise a change of the live subscription
    (Free = cancel at the period's end)."""

    tier = SelectField("Plan", choices=[SelectChoice("free", "Free"), SelectChoice("starter", "Starter"),
                                        SelectChoice("pro", "Pro"), SelectChoice("agency", "Agency")])


class ForgotPasswordForm(Form):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])


class ResetPasswordForm(Form):
    new_password = PasswordField("New password", validators=[DataRequired(), Length(min=8, max=128)])
    confirm = PasswordField("Repeat new password",
                            validators=[DataRequired(), EqualTo("new_password", "The passwords do not match.")])


class DeleteAccountForm(Form):
    """Deleting the account: the password, a code when two-factor sign-in is on, and a tick."""
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    code = StringField("Code from your authenticator app (if two-factor sign-in is on)",
                       validators=[Optional(), Length(max=50)],
                       render_kw={"inputmode": "numeric", "autocomplete": "one-time-code"})
    confirm = BooleanField("I understand that my videos, credits and account are gone for good",
                           validators=[DataRequired("Tick the box to confirm.")])
