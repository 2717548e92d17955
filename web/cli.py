"""Operator commands (`flask --app web <command> --help`): thin calls into the same SQL
functions the app uses, over the administrator's DATABASE_URL."""
from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime

import click
import psycopg
import stripe
from flask import Flask, current_app
from flask.cli import with_appcontext
from psycopg.rows import dict_row

from . import accounts
from .errors import ApiError


@contextmanager
def service_tx():
    """A transaction as sg_service, the role that may act across tenants."""
    with psycopg.connect(current_app.config["DATABASE_URL"], row_factory=dict_row) as conn:
        with conn.transaction():
            conn.execute("set local role sg_service")
            yield conn


def _user_id(conn, email: str):
    row = conn.execute("select id from users where lower(email) = lower(%s)", (email.strip(),)).fetchone()
    if row is None:
        raise click.ClickException(f"No user with email {email}")
    return row["id"]


@click.command("replay-stripe-events")
@with_appcontext
@click.option("--since", type=click.DateTime(), help="Only events received at or after this time (UTC).")
def replay_stripe_events(since: datetime | None) -> None:
    """Re-apply stored Stripe events in the order Stripe created them (idempotent)."""
    with service_tx() as conn:
        rows = conn.execute("select * from app.replay_stripe_events(%s)", (since,)).fetchall()
    for row in rows:
        click.echo(f"{row['event_id']}: {row['outcome']}")
    click.echo(f"{len(rows)} event(s) replayed.")


@click.command("create-user")
@with_appcontext
@click.argument("email")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--name", default=None, help="Full name.")
def create_user(email: str, password: str, name: str | None) -> None:
    """Create an account (free plan, 5 credits), as signup does."""
    try:
        with service_tx() as conn, conn.cursor() as cur:
            account = accounts.signup(cur, email, password, name)
    except ApiError as error:
        raise click.ClickException(error.detail) from None
    except psycopg.Error as error:
        raise click.ClickException(error.diag.message_primary or str(error)) from None
    click.echo(f"Created {account.email} ({account.id}) with {account.credits_remaining} credits.")


@click.command("grant-credits")
@with_appcontext
@click.argument("email")
@click.argument("amount", type=click.IntRange(1, 1_000_000))
@click.option("--reason", required=True, help="Why (kept in the idempotency key for the audit trail).")
@click.option("--key", default=None, help="Idempotency key; repeat it to make a retry a no-op.")
def grant_credits(email: str, amount: int, reason: str, key: str | None) -> None:
    """Add AMOUNT credits to a user (ledger reason admin_grant)."""
    import uuid

    with service_tx() as conn:
        user_id = _user_id(conn, email)
        row = conn.execute("select * from app.grant_credits(%s, %s, 'admin_grant', %s)",
                           (user_id, amount, f"admin:{key or uuid.uuid4()}:{reason}"[:200])).fetchone()
    state = "Granted" if row["granted"] else "Already granted (same key)"
    click.echo(f"{state}: {email} now has {row['credits_remaining']} credits.")


@click.command("disable-user")
@with_appcontext
@click.argument("email")
@click.option("--enable", is_flag=True, help="Re-enable instead.")
def disable_user(email: str, enable: bool) -> None:
    """Disable an account: its sessions, tokens and API keys stop working at once."""
    with service_tx() as conn:
        try:
            conn.execute("select app.set_user_active(%s, %s)", (email, enable))
        except psycopg.Error as error:
            raise click.ClickException(error.diag.message_primary or str(error)) from None
    click.echo(f"{'Enabled' if enable else 'Disabled'} {email}.")


@click.command("sync-stripe")
@with_appcontext
@click.option("--customer", default=None, help="Only this Stripe customer (cus_…).")
def sync_stripe(customer: str | None) -> None:
    """Re-read every customer's subscriptions from Stripe and repair our copy (what changed
    is recorded in reporting.stripe_drift). The worker runs this nightly; idempotent."""
    from .config import role_dsn
    from .stripe_sync import client, reconcile

    stripe_client = client(current_app.config)
    if stripe_client is None:
        raise click.ClickException("Billing has no Stripe key (STRIPE_SECRET_KEY): nothing to compare with.")
    # as the worker role, whose functions these are
    dsn = current_app.config.get("WORKER_DATABASE_URL") or role_dsn(current_app.config["DATABASE_URL"], "sg_worker")
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            report = reconcile(conn, stripe_client, customer)
    except stripe.StripeError as error:
        raise click.ClickException(f"Stripe: {error}") from None
    for line in report:
        extra = f" (also live: {', '.join(line.extra)})" if line.extra else ""
        click.echo(f"{line.customer}: {line.subscription or '-'}: {line.outcome}{extra}")
    click.echo(f"{len(report)} customer(s) compared.")


def init_app(app: Flask) -> None:
    for command in (replay_stripe_events, create_user, grant_credits, disable_user, sync_stripe):
        app.cli.add_command(command)
