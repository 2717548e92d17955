"""Settings, read from the environment once at start-up and checked there: a missing or
malformed setting stops the process with a message naming it (see .env.example)."""
from __future__ import annotations

import os
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message names it."""


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


def _integer(env, name: str, default: int, minimum: int) -> int:
    text = env.get(name) or str(default)
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name}: must be a whole number, got {text!r}") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {value}")
    return value


def _url(env, name: str) -> str | None:
    value = env.get(name) or None
    if value is not None:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{name}: must be an http(s) URL, got {value!r}")
    return value


def _prefixed(env, name: str, *prefixes: str) -> str | None:
    value = env.get(name) or None
    if value is not None and not value.startswith(prefixes):
        raise ConfigError(f"{name}: must start with {' or '.join(prefixes)}")
    return value


def _dsn(name: str, value: str) -> str:
    try:
        conninfo_to_dict(value)
    except psycopg.ProgrammingError:
        raise ConfigError(f"{name}: not a PostgreSQL connection string or URL") from None
    return value


def _origins(env) -> list[str]:
    text = env.get("CORS_ORIGINS") or env.get("FRONTEND_URL") or ""
    origins = [origin.strip().rstrip("/") for origin in text.split(",") if origin.strip()]
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise ConfigError(f"CORS_ORIGINS: {origin!r} is not an origin like https://app.example.com")
    return origins


def from_env(environ: dict[str, str] | None = None) -> dict:
    """Flask config from environment variables (see .env.example); ConfigError names any bad one."""
    env = os.environ if environ is None else environ
    database_url = _dsn("DATABASE_URL", env.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/storygenius")
    stripe_key = _prefixed(env, "STRIPE_SECRET_KEY", "sk_", "rk_")
    webhook_secret = _prefixed(env, "STRIPE_WEBHOOK_SECRET", "whsec_")
    if stripe_key and not webhook_secret:
        raise ConfigError("STRIPE_WEBHOOK_SECRET: required when STRIPE_SECRET_KEY is set")
    for tier in ("STARTER", "PRO", "AGENCY"):
        _prefixed(env, f"STRIPE_PRICE_{tier}", "price_", "plan_")
    rate_limits = env.get("RATE_LIMITS") or None
    if rate_limits not in (None, "plan", "off"):
        raise ConfigError(f"RATE_LIMITS: must be plan or off, got {rate_limits!r}")
    billing_mode = env.get("BILLING_MODE") or None
    if billing_mode not in (None, "test", "stripe"):
        raise ConfigError(f"BILLING_MODE: must be test or stripe, got {billing_mode!r}")
    from worker.voices import VOICES

    if env.get("TTS_VOICE") and env["TTS_VOICE"] not in VOICES:
        raise ConfigError(f"TTS_VOICE: must be one of {', '.join(VOICES)}, got {env['TTS_VOICE']!r}")
    _url(env, "SCRIPT_API_URL")
    return {
        "DATABASE_URL": database_url,
        "APP_DATABASE_URL": _dsn("APP_DATABASE_URL", env.get("APP_DATABASE_URL")
                                 or role_dsn(database_url, "sg_app", env.get("SG_APP_PASSWORD"))),
        "WORKER_DATABASE_URL": _dsn("WORKER_DATABASE_URL", env.get("WORKER_DATABASE_URL")
                                    or role_dsn(database_url, "sg_worker", env.get("SG_WORKER_PASSWORD"))),
        "DB_POOL_MAX": _integer(env, "DB_POOL_MAX", 10, 1),
        "MEDIA_ROOT": env.get("MEDIA_ROOT") or os.path.abspath(".data/media"),
        "SECRET_KEY": env.get("SECRET_KEY") or None,
        "ACCESS_TOKEN_TTL": 24 * 3600,
        "REFRESH_TOKEN_TTL": 30 * 24 * 3600,
        "BROWSER_SESSION_TTL": 14 * 24 * 3600,
        # requests larger than this are refused with 413
        "MAX_CONTENT_LENGTH": 1024 * 1024,
        # test: against the local Stripe simulator (development only); stripe: Stripe's API.
        # Unset: test when no STRIPE_SECRET_KEY is given and the app is not in production
        # (web/__init__.py decides, since it knows whether it is).
        "BILLING_MODE": billing_mode,
        "STRIPE_SECRET_KEY": stripe_key,
        "STRIPE_PUBLISHABLE_KEY": _prefixed(env, "STRIPE_PUBLISHABLE_KEY", "pk_"),
        "STRIPE_WEBHOOK_SECRET": webhook_secret,
        "STRIPE_API_BASE": _url(env, "STRIPE_API_BASE"),
        # where Stripe sends the browser back to (the SPA's origin; default: this app)
        "FRONTEND_URL": _url(env, "FRONTEND_URL"),
        # origins allowed to call /v1 from a browser (comma-separated; default FRONTEND_URL)
        "CORS_ORIGINS": _origins(env),
        # how many proxies in front of us set X-Forwarded-For (0: use the socket address)
        "TRUSTED_PROXY_COUNT": _integer(env, "TRUSTED_PROXY_COUNT", 0, 0),
        # customers' webhook endpoints may be private addresses: local development and tests only
        "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": _webhook_local_mode(env),
        # /v1 requests a minute per API key or user: `plan` (plans.features) or `off`;
        # unset: plan, except in apps built for tests (web/api/__init__.py)
        "RATE_LIMITS": rate_limits,
    }


def _webhook_local_mode(env) -> bool:
    from worker.webhooks import allow_private_addresses

    try:
        return allow_private_addresses(env)
    except ValueError as error:
        raise ConfigError(str(error)) from None
