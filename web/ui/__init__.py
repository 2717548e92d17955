"""The web pages: Jinja templates, flask-wtf forms, flask-login sessions.

A browser session is a row in browser_sessions; the (signed) cookie carries only a
random token, so logout or a password change ends it even if someone kept a copy.
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Blueprint, redirect, request, url_for
from flask_login import LoginManager

from .. import db, identity
from ..accounts import Account

ui = Blueprint("ui", __name__)
login_manager = LoginManager()


@dataclass(frozen=True)
class SessionUser:
    """The signed-in browser user, as flask-login sees it."""

    session_token: str
    account: Account
    is_authenticated: bool = True
    is_active: bool = True
    is_anonymous: bool = False

    def get_id(self) -> str:
        return self.session_token

    @property
    def id(self):
        return self.account.id


@login_manager.user_loader
def load_user(session_token: str) -> SessionUser | None:
    """The session's user, or None when the session was ended, expired or the user disabled."""
    if not isinstance(session_token, str) or len(session_token) > 200:
        return None
    with db.tx() as cur:
        cur.execute("select * from app.authenticate_browser_session(%s)", (identity.sha256(session_token),))
        row = cur.fetchone()
    return SessionUser(session_token, Account.from_row(row)) if row else None


def is_safe_next(target: str | None) -> bool:
    """Only a path on this site: no scheme, no host, no protocol-relative or backslash tricks."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return False
    if any(ord(ch) < 32 for ch in target) or "\\" in target:
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc


@login_manager.unauthorized_handler
def to_login():
    """Protected page without a session: to /login?next=<this path>."""
    return redirect(url_for("ui.login", next=request.full_path.rstrip("?")))


def register(app) -> None:
    from . import auth, billing, branding, email_links, pages  # noqa: F401 - route modules attach to `ui`
    from . import referrals, webhooks  # noqa: F401 - issue 20: referrals, webhooks to customers
    from . import batches, keys  # noqa: F401 - issue 20: batch form, API keys page

    login_manager.init_app(app)
    # the session is checked against the database on every request; a stolen cookie
    # is ended server-side, so flask-login's IP/agent heuristics would only add noise
    login_manager.session_protection = None
    app.register_blueprint(ui)
