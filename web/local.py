"""`python -m web.local` (what `make run` starts): the whole service on one machine.

Uses DATABASE_URL when set. Otherwise uses the Postgres on 127.0.0.1:5432 if one
answers, or starts an embedded one (the pgserver wheel) under ./.data/pg. Without Stripe
keys it starts the Stripe simulator (web/stripe_simulator, state in ./.data) and bills in
test mode against it. Then it migrates, and runs gunicorn on :8000 and the worker until Ctrl-C.
"""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .migrate import migrate

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data"
DATABASE = "storygenius"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _ensure_database(server_dsn: str, name: str) -> str:
    """Create database `name` on the server if missing; its DSN."""
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            conn.execute(f'create database "{name}"')
    return make_conninfo(**{**conninfo_to_dict(server_dsn), "dbname": name})


def database_url() -> tuple[str, object]:
    """The admin DSN to use, and the embedded server handle to keep alive (or None)."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"], None
    if _port_open("127.0.0.1", 5432):
        print("Using the Postgres on 127.0.0.1:5432 (set DATABASE_URL to choose another).")
        return _ensure_database("postgresql://postgres@127.0.0.1:5432/postgres", DATABASE), None
    import pgserver

    print(f"No DATABASE_URL and nothing on 127.0.0.1:5432: starting an embedded Postgres in {DATA / 'pg'}")
    DATA.mkdir(exist_ok=True)
    server = pgserver.get_server(DATA / "pg", cleanup_mode="stop")
    return _ensure_database(server.get_uri(), DATABASE), server


def secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept in ./.data, so
    sessions survive restarts and every gunicorn worker signs with the same key."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    return _kept_secret("secret_key", lambda: secrets.token_urlsafe(48))


# The local test mode's prices, created at the simulator and configured in `plans`
SIMULATED_PRICES = {"starter": 900, "pro": 2900, "agency": 9900}


def _kept_secret(name: str, make) -> str:
    """A value generated once and kept in ./.data (so restarts keep sessions and state)."""
    path = DATA / name
    if not path.exists():
        DATA.mkdir(exist_ok=True)
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


def stripe_simulator(bind: str) -> tuple[dict[str, str], subprocess.Popen | None]:
    """Without STRIPE_SECRET_KEY: start the Stripe simulator on loopback (its state kept in
    ./.data), and return the settings that make web, worker and migrate bill against it."""
    if os.environ.get("STRIPE_SECRET_KEY"):
        return {}, None
    webhook_secret = _kept_secret("stripe_webhook_secret", lambda: "whsec_local_" + secrets.token_hex(24))
    host, _, port = bind.rpartition(":")
    prices = {tier: f"price_local_{tier}" for tier in SIMULATED_PRICES}
    command = [sys.executable, "-m", "web.stripe_simulator", "--port", "0",
               "--state-file", str(DATA / "stripe-simulator.json"),
               "--webhook", f"http://{host or '127.0.0.1'}:{port}/v1/billing/webhook={webhook_secret}"]
    command += [arg for tier, amount in SIMULATED_PRICES.items()
                for arg in ("--price", f"{prices[tier]}:{amount}:{tier.title()}")]
    simulator = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    base_url = simulator.stdout.readline().strip()
    if not base_url.startswith("http://"):
        raise SystemExit("The Stripe simulator did not start (see above).")
    print(f"No Stripe keys: billing runs in test mode against the Stripe simulator at {base_url}")
    settings = {"BILLING_MODE": "test", "STRIPE_SECRET_KEY": "sk_test_simulator", "STRIPE_API_BASE": base_url,
                "STRIPE_WEBHOOK_SECRET": webhook_secret}
    settings.update({f"STRIPE_PRICE_{tier.upper()}": price for tier, price in prices.items()})
    return settings, simulator


def main() -> None:
    dsn, server = database_url()
    bind = os.environ.get("BIND", "127.0.0.1:8000")
    billing, simulator = stripe_simulator(bind)
    migrate(dsn, {**os.environ, **billing})
    print("Database migrated.")
    env = {**os.environ, **billing, "DATABASE_URL": dsn, "SECRET_KEY": secret_key(), "BIND": bind,
           "FLASK_DEBUG": os.environ.get("FLASK_DEBUG", "1")}
    children = [
        subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "web/gunicorn_conf.py", "web:create_app()"],
                         cwd=ROOT, env=env),
        subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env),
    ] + ([simulator] if simulator else [])
    print(f"Story Genius is running on http://{env['BIND']}  (Ctrl-C stops web, worker and database)")
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.5)
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
        del server  # stops the embedded Postgres, if we started one


if __name__ == "__main__":
    main()
