"""Story Genius web process: a thin HTTP layer over the SQL functions in sql/."""
from __future__ import annotations

import logging
import os
import secrets

from flask import Flask, jsonify
from flask.sessions import SecureCookieSessionInterface
from flask_cors import CORS
from flask_wtf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from . import assets, cli, config, db, errors, headers, logs, migrate

log = logging.getLogger(__name__)
csrf = CSRFProtect()
cors = CORS()


def _secure_defaults(app: Flask) -> None:
    """SECRET_KEY and cookie settings that depend on development vs production."""
    development = app.debug or app.testing
    # `flask migrate` and the other admin commands sign nothing, so they need no key
    command_line = os.environ.get("FLASK_RUN_FROM_CLI") == "true"
    if not app.config.get("SECRET_KEY"):
        if not (development or command_line):
            raise RuntimeError("SECRET_KEY is not set. Set it in the environment (see .env.example); "
                               "production refuses to start without one.")
        app.config["SECRET_KEY"] = secrets.token_urlsafe(48)
        log.warning("SECRET_KEY not set: generated a random one for this development process; "
                    "sessions and tokens end when it stops.")
    secure = not development
    app.config.update(
        SESSION_COOKIE_SECURE=secure,
        # __Host- cookies must be Secure, host-only and Path=/, so a sibling subdomain cannot plant one
        SESSION_COOKIE_NAME="__Host-sg_session" if secure else "sg_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=secure,
        REMEMBER_COOKIE_HTTPONLY=True,
    )


def _billing_mode(app: Flask) -> None:
    """BILLING_MODE: `test` (the local Stripe simulator) by default only when no Stripe key
    is set and the app is in development; production refuses to start in test mode, so a
    deployment that lost its keys cannot hand out plans for simulated payments."""
    development = app.debug or app.testing
    mode = app.config.get("BILLING_MODE") or ("test" if development and not app.config.get("STRIPE_SECRET_KEY")
                                              else "stripe")
    if mode == "test" and not development:
        raise RuntimeError("BILLING_MODE=test is for development only: production needs Stripe keys "
                           "(STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET) and BILLING_MODE=stripe.")
    app.config["BILLING_MODE"] = mode


class _BrowserSessions(SecureCookieSessionInterface):
    """Cookie sessions for the browser pages only: the /v1 API authenticates with bearer
    tokens, so its requests neither read the session cookie nor pay to decode one, and
    static files are the same for every visitor."""

    def open_session(self, app: Flask, request):
        # static files too: they are the same for everyone, so no `Vary: Cookie` on them
        if request.path.startswith(("/v1/", "/static/")) or request.path == "/favicon.ico":
            return self.null_session_class()
        return super().open_session(app, request)


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app from the environment, with `test_config` overriding it."""
    app = Flask(__name__, template_folder="../templates")
    app.config.update(config.from_env())
    if test_config:
        app.config.update(test_config)
        # a DATABASE_URL given here (not in the environment) also moves the derived role DSNs
        if "DATABASE_URL" in test_config:
            for key, role in (("APP_DATABASE_URL", "sg_app"), ("WORKER_DATABASE_URL", "sg_worker")):
                if key not in test_config:
                    app.config[key] = config.role_dsn(test_config["DATABASE_URL"], role)
    _secure_defaults(app)
    _billing_mode(app)
    app.session_interface = _BrowserSessions()
    if app.config["TRUSTED_PROXY_COUNT"]:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["TRUSTED_PROXY_COUNT"],
                                x_proto=app.config["TRUSTED_PROXY_COUNT"])

    db.init_app(app)
    logs.init_app(app)
    errors.init_app(app)
    headers.init_app(app)
    assets.init_app(app)
    migrate.init_app(app)
    cli.init_app(app)
    csrf.init_app(app)

    from .api import api, register as register_api
    from .media import media
    from .openapi import docs
    from .ui import register as register_ui

    csrf.exempt(api)  # bearer-token API: no cookies, so no cross-site request forgery
    register_api(app)
    register_ui(app)
    app.register_blueprint(media)
    app.register_blueprint(docs)
    cors.init_app(app, resources={r"/v1/*": {"origins": app.config["CORS_ORIGINS"]}},
                  allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
                  expose_headers=["Retry-After", "Location", "Idempotent-Replayed", "RateLimit-Limit",
                                  "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy"],
                  methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"], max_age=600)

    @app.get("/healthz")
    def healthz():
        """Database reachability and render-queue depth, for load balancers and monitoring."""
        with db.tx() as cur:
            cur.execute("select * from app.queue_depth()")
            depth = cur.fetchone()
        return jsonify(status="ok", database="ok", queue={"queued": depth["queued"], "rendering": depth["picked"]})

    return app
