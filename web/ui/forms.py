"""flask-wtf forms (each carries a CSRF token)."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, IntegerField, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, EqualTo, Length, NumberRange, Optional, ValidationError

from ..accounts import name_problem

from ..jobs import PLATFORM_NAMES


def one_printable_line(form, field) -> None:
    """A name goes into mail headers: one line of printable text."""
    problem = name_problem(field.data or "")
    if problem:
        raise ValidationError(problem[0].upper() + problem[1:] + ".")


class SignupForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(min=8, max=128)])
    full_name = StringField("Name (optional)", validators=[Optional(), Length(max=200), one_printable_line])


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


class ChangePasswordForm(FlaskForm):
    current_password = PasswordField("Current password", validators=[DataRequired(), Length(max=1024)])
    new_password = PasswordField("New password", validators=[DataRequired(), Length(min=8, max=128)])
    confirm = PasswordField("Repeat new password",
                            validators=[DataRequired(), EqualTo("new_password", "The passwords do not match.")])


class TwoFactorCodeForm(FlaskForm):
    code = StringField("Code from your authenticator app (or a recovery code)",
                       validators=[DataRequired(), Length(max=50)],
                       render_kw={"inputmode": "numeric", "autocomplete": "one-time-code"})


class TwoFactorConfirmForm(FlaskForm):
    """Turning two-factor sign-in on or off: the password and a code."""
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    code = StringField("Code from your authenticator app", validators=[DataRequired(), Length(max=50)],
                       render_kw={"inputmode": "numeric", "autocomplete": "one-time-code"})


class LogoutForm(FlaskForm):
    """Only the CSRF token: logging out is a POST."""


class GenerateForm(FlaskForm):
    platform = SelectField("Platform", choices=[SelectChoice(value, label) for value, label in PLATFORM_NAMES.items()])
    topic = StringField("Topic", validators=[DataRequired(), Length(min=3, max=200)],
                        render_kw={"placeholder": "e.g. the history of coffee", "maxlength": 200})
    duration_seconds = IntegerField("Length (seconds)", default=20,
                                    validators=[DataRequired(), NumberRange(min=15, max=60)],
                                    render_kw={"min": 15, "max": 60, "step": 1})


class ChangePlanForm(FlaskForm):
    """Move to a plan: Checkout from Free, otherwise a change of the live subscription
    (Free = cancel at the period's end)."""

    tier = SelectField("Plan", choices=[SelectChoice("free", "Free"), SelectChoice("starter", "Starter"),
                                        SelectChoice("pro", "Pro"), SelectChoice("agency", "Agency")])


class ForgotPasswordForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])


class ResetPasswordForm(FlaskForm):
    new_password = PasswordField("New password", validators=[DataRequired(), Length(min=8, max=128)])
    confirm = PasswordField("Repeat new password",
                            validators=[DataRequired(), EqualTo("new_password", "The passwords do not match.")])
