"""Settings, read from the environment once at start-up."""
from __future__ import annotations

import os

from psycopg.conninfo import conninfo_to_dict, make_conninfo


def role_dsn(admin_dsn: str, role: str, password: str | None = None) -> str:
    """The admin DSN with its user swapped for one of our runtime roles.

    The runtime roles (sg_app, sg_worker) are created by the migrate step; with
    trust auth they need no password, in production their password comes from
    SG_APP_PASSWORD / SG_WORKER_PASSWORD.
    """
    params = conninfo_to_dict(admin_dsn)
    params["user"] = role
    params.pop("password", None)
    if password:
        params["password"] = password
    return make_conninfo(**params)


def from_env(environ: dict[str, str] | None = None) -> dict:
    """Flask config from environment variables (see .env.example)."""
    env = os.environ if environ is None else environ
    database_url = env.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/storygenius")
    return {
        "DATABASE_URL": database_url,
        "APP_DATABASE_URL": env.get("APP_DATABASE_URL")
        or role_dsn(database_url, "sg_app", env.get("SG_APP_PASSWORD")),
        "WORKER_DATABASE_URL": env.get("WORKER_DATABASE_URL")
        or role_dsn(database_url, "sg_worker", env.get("SG_WORKER_PASSWORD")),
        "DB_POOL_MAX": int(env.get("DB_POOL_MAX", "10")),
        "SECRET_KEY": env.get("SECRET_KEY") or None,
        "ACCESS_TOKEN_TTL": 24 * 3600,
        "REFRESH_TOKEN_TTL": 30 * 24 * 3600,
        "BROWSER_SESSION_TTL": 14 * 24 * 3600,
        # requests larger than this are refused with 413
        "MAX_CONTENT_LENGTH": 1024 * 1024,
        # Stripe: without a secret key, billing runs in local test mode (simulated checkout)
        "STRIPE_SECRET_KEY": env.get("STRIPE_SECRET_KEY") or None,
        "STRIPE_PUBLISHABLE_KEY": env.get("STRIPE_PUBLISHABLE_KEY") or None,
        "STRIPE_WEBHOOK_SECRET": env.get("STRIPE_WEBHOOK_SECRET") or None,
        "STRIPE_API_BASE": env.get("STRIPE_API_BASE") or None,
        # where Stripe sends the browser back to (the SPA's origin; default: this app)
        "FRONTEND_URL": env.get("FRONTEND_URL") or None,
        # origins allowed to call /v1 from a browser (comma-separated; default FRONTEND_URL)
        "CORS_ORIGINS": [o.strip() for o in (env.get("CORS_ORIGINS") or env.get("FRONTEND_URL") or "").split(",")
                         if o.strip()],
        # how many proxies in front of us set X-Forwarded-For (0: use the socket address)
        "TRUSTED_PROXY_COUNT": int(env.get("TRUSTED_PROXY_COUNT", "0")),
        "MEDIA_ROOT": env.get("MEDIA_ROOT", os.path.abspath(".data/media")),
    }
