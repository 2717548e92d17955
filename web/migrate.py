"""Schema management: roles, yoyo migrations, then the sql/ business layer.

`flask --app web migrate` (also the Procfile's release step) runs `migrate()`;
running it twice changes nothing.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote, urlencode

import click
import psycopg
from flask import Flask, current_app
from flask.cli import with_appcontext
from psycopg.conninfo import conninfo_to_dict
from yoyo import get_backend, read_migrations

ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = ROOT / "sql"
MIGRATIONS_DIR = ROOT / "migrations"
ROLES_FILE = SQL_DIR / "00_roles.sql"
# Serialises concurrent migrate runs against one database (two release processes).
_MIGRATE_LOCK_KEY = 0x5347_4D49  # "SGMI"


def _yoyo_url(dsn: str, **extra_params: str) -> str:
    """yoyo wants a URL; DATABASE_URL may be a URL or a key=value string."""
    params = {**conninfo_to_dict(dsn), **extra_params}
    user = params.pop("user", "")
    password = params.pop("password", None)
    host = params.pop("host", "")
    port = params.pop("port", None)
    dbname = params.pop("dbname", "")
    auth = user + (f":{password}" if password else "")
    netloc = f"{auth}@" if auth else ""
    # a socket directory goes in the query string; yoyo passes extra args to psycopg.connect
    if host.startswith("/"):
        params["host"] = host
        host = ""
    netloc += host + (f":{port}" if port else "")
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql+psycopg://{quote(netloc, safe='@:')}/{quote(dbname)}{query}"


def _owner_backend(dsn: str):
    """A yoyo backend whose session runs as sg_owner from its first statement, so the
    migrated objects and yoyo's own bookkeeping tables all belong to sg_owner."""
    return get_backend(_yoyo_url(dsn, options="-c role=sg_owner"))


def _run_sql_file(conn: psycopg.Connection, path: Path) -> None:
    with conn.transaction():
        conn.execute(path.read_text())


def business_sql_files() -> list[Path]:
    """sql/ files after the roles file, in name order (each begins with `set local role`)."""
    return sorted(p for p in SQL_DIR.glob("*.sql") if p != ROLES_FILE)


def _sync_stripe_prices(conn: psycopg.Connection, environ) -> None:
    """plans.stripe_price_id comes from STRIPE_PRICE_<TIER> when set, credit_packs' from
    STRIPE_PRICE_<PACK>."""
    with conn.transaction():
        conn.execute("set local role sg_owner")
        for tier in ("starter", "pro", "agency"):
            price = environ.get(f"STRIPE_PRICE_{tier.upper()}")
            if price:
                conn.execute("update plans set stripe_price_id = %s where tier = %s", (price, tier))
        # top-up packs: STRIPE_PRICE_PACK_10 and so on (one-time prices)
        for (pack,) in conn.execute("select pack from credit_packs").fetchall():
            price = environ.get(f"STRIPE_PRICE_{pack.upper()}")
            if price:
                conn.execute("update credit_packs set stripe_price_id = %s where pack = %s", (price, pack))


def webhook_secrets(environ) -> list[str]:
    """STRIPE_WEBHOOK_SECRET: one `whsec_…` secret, or several separated by commas while
    one is being rotated (Stripe signs with each of an endpoint's live secrets)."""
    return [part.strip() for part in (environ.get("STRIPE_WEBHOOK_SECRET") or "").split(",") if part.strip()]


def _sync_webhook_secrets(conn: psycopg.Connection, environ) -> None:
    """The webhook's signing secrets live in the database, where the signature is checked
    (sql/51_stripe_events.sql): the web process never needs them. Set from
    STRIPE_WEBHOOK_SECRET when it is given; left as they are when it is not."""
    secrets = webhook_secrets(environ)
    if not secrets:
        return
    with conn.transaction():
        conn.execute("set local role sg_owner")
        conn.execute("alter table stripe_webhook_secrets no force row level security")
        conn.execute("delete from stripe_webhook_secrets where not (secret = any(%s))", (secrets,))
        for secret in secrets:
            conn.execute("insert into stripe_webhook_secrets (secret) values (%s) on conflict do nothing", (secret,))
        conn.execute("alter table stripe_webhook_secrets force row level security")


def migrate(dsn: str, environ=None) -> None:
    """Bring the database at `dsn` (an administrator's DSN) fully up to date."""
    environ = os.environ if environ is None else environ
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (_MIGRATE_LOCK_KEY,))
        try:
            _run_sql_file(conn, ROLES_FILE)
            backend = _owner_backend(dsn)
            try:
                with backend.lock():
                    backend.apply_migrations(backend.to_apply(read_migrations(str(MIGRATIONS_DIR))))
            finally:
                backend.connection.close()
            # One transaction for the whole business layer: app is rebuilt from scratch
            # (10_app.sql drops it), so either every file applies or nothing changes.
            with conn.transaction():
                for path in business_sql_files():
                    conn.execute(path.read_text())
                conn.execute("reset role")
            _sync_stripe_prices(conn, environ)
            _sync_webhook_secrets(conn, environ)
            _set_role_passwords(conn, environ)
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (_MIGRATE_LOCK_KEY,))


def _set_role_passwords(conn: psycopg.Connection, environ) -> None:
    """SG_APP_PASSWORD / SG_WORKER_PASSWORD, when set, become the runtime roles' passwords."""
    from psycopg import sql

    for role, variable in (("sg_app", "SG_APP_PASSWORD"), ("sg_worker", "SG_WORKER_PASSWORD")):
        if environ.get(variable):
            conn.execute(sql.SQL("alter role {} password {}").format(sql.Identifier(role),
                                                                    sql.Literal(environ[variable])))


def rollback_all(dsn: str) -> None:
    """Remove the business layer and roll every migration back (roles stay: they are
    cluster-wide and other databases may use them)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (_MIGRATE_LOCK_KEY,))
        try:
            with conn.transaction():
                conn.execute("set local role sg_owner")
                conn.execute("drop schema if exists reporting cascade")
                conn.execute("drop schema if exists app cascade")
            backend = _owner_backend(dsn)
            try:
                with backend.lock():
                    backend.rollback_migrations(backend.to_rollback(read_migrations(str(MIGRATIONS_DIR))))
            finally:
                backend.connection.close()
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (_MIGRATE_LOCK_KEY,))


@click.command("migrate")
@with_appcontext
@click.option("--rollback", is_flag=True, help="Roll everything back instead (drops all data).")
def migrate_command(rollback: bool) -> None:
    """Apply migrations and the sql/ layer to DATABASE_URL (idempotent)."""
    dsn = current_app.config["DATABASE_URL"]
    if rollback:
        rollback_all(dsn)
        click.echo("Rolled back every migration.")
    else:
        migrate(dsn)
        click.echo("Database is up to date.")


def init_app(app: Flask) -> None:
    app.cli.add_command(migrate_command)
