"""`python -m web.local` (what `make run` starts): the whole service on one machine.

Uses DATABASE_URL when set. Otherwise uses the Postgres on 127.0.0.1:5432 if one
answers, or starts an embedded one (the pgserver wheel) under ./.data/pg. Without Stripe
keys it starts the Stripe simulator (web/stripe_simulator, state in ./.data) and bills in
test mode against it. Then it checks what the service needs (printing what is missing and
the command that fixes it), migrates, and runs gunicorn on 127.0.0.1:$PORT (default 8000; BIND overrides) and the
render worker until Ctrl-C. It says where the site is only once it answers there, and
exits non-zero when the port is taken or a process fails to start.
"""
from __future__ import annotations

import errno
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .migrate import migrate

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data"
DATABASE = "storygenius"
# how long gunicorn may take to answer /healthz before the start counts as failed
START_SECONDS = 60


# -- what the service needs ---------------------------------------------------------------

@dataclass(frozen=True)
class Missing:
    """Something the service needs that this machine lacks, and how to get it."""

    what: str
    fix: str
    # True: the service cannot run without it; False: it runs, with less
    fatal: bool = False


# Checks run before start-up; each returns Missing or None. Other parts of the service add
# theirs with @requirement (the renderer's fonts, for instance).
REQUIREMENTS: list[Callable[[], Missing | None]] = []


def requirement(check: Callable[[], Missing | None]) -> Callable[[], Missing | None]:
    """Register a start-up check (a function returning Missing or None)."""
    REQUIREMENTS.append(check)
    return check


@requirement
def _ffmpeg() -> Missing | None:
    """The renderer encodes with the ffmpeg that the imageio-ffmpeg wheel bundles."""
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # noqa: BLE001 - any failure means there is no usable ffmpeg
        return Missing("ffmpeg (videos cannot be rendered)",
                       f"{sys.executable} -m pip install --force-reinstall imageio-ffmpeg", fatal=True)
    return None


@requirement
def _data_directory() -> Missing | None:
    """Videos, the embedded database and the secret key live under ./.data."""
    try:
        DATA.mkdir(exist_ok=True)
        probe = DATA / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        return Missing(f"a writable {DATA} ({error.strerror})", f"chown -R $USER {DATA}", fatal=True)
    return None


def missing_requirements() -> list[Missing]:
    """What REQUIREMENTS finds missing (a check that crashes counts as missing)."""
    found = []
    for check in REQUIREMENTS:
        try:
            result = check()
        except Exception as error:  # noqa: BLE001 - reported, not raised
            result = Missing(f"{check.__name__.strip('_')} could not be checked ({error})",
                             "see the message above", fatal=False)
        if result is not None:
            found.append(result)
    return found


def report_missing(found: list[Missing]) -> bool:
    """Print each missing thing with its fix; True when the service can start anyway."""
    for item in found:
        label = "Missing" if item.fatal else "Missing (the service runs without it)"
        print(f"{label}: {item.what}\n    to fix: {item.fix}", file=sys.stderr)
    return not any(item.fatal for item in found)


# -- database, secret, address --------------------------------------------------------------

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


def _kept_secret(name: str, make) -> str:
    """A value generated once and kept in ./.data (so restarts keep sessions and state)."""
    path = DATA / name
    if not path.exists():
        DATA.mkdir(exist_ok=True)
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


def secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept in ./.data, so
    sessions survive restarts and every gunicorn worker signs with the same key."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    return _kept_secret("secret_key", lambda: secrets.token_urlsafe(48))


# The local test mode's prices, created at the simulator and configured in `plans`
SIMULATED_PRICES = {"starter": 900, "pro": 2900, "agency": 9900}
SIMULATED_PACKS = {"pack_10": (500, "10 credits"), "pack_50": (2000, "50 credits"), "pack_200": (7000, "200 credits")}


def stripe_simulator(bind: str) -> tuple[dict[str, str], subprocess.Popen | None]:
    """Without STRIPE_SECRET_KEY: start the Stripe simulator on loopback (its state kept in
    ./.data), and return the settings that make web, worker and migrate bill against it."""
    if os.environ.get("STRIPE_SECRET_KEY"):
        return {}, None
    webhook_secret = _kept_secret("stripe_webhook_secret", lambda: "whsec_local_" + secrets.token_hex(24))
    prices = {tier: f"price_local_{tier}" for tier in SIMULATED_PRICES}
    command = [sys.executable, "-m", "web.stripe_simulator", "--port", "0",
               "--state-file", str(DATA / "stripe-simulator.json"),
               "--webhook", f"http://{bind}/v1/billing/webhook={webhook_secret}"]
    command += [arg for tier, amount in SIMULATED_PRICES.items()
                for arg in ("--price", f"{prices[tier]}:{amount}:{tier.title()}")]
    # the top-up packs' one-time prices (migrations/0071)
    pack_prices = {pack: f"price_local_{pack}" for pack in SIMULATED_PACKS}
    command += [arg for pack, (amount, name) in SIMULATED_PACKS.items()
                for arg in ("--one-time-price", f"{pack_prices[pack]}:{amount}:{name}")]
    DATA.mkdir(exist_ok=True)
    simulator = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    base_url = simulator.stdout.readline().strip()
    if not base_url.startswith("http://"):
        raise StartError("the Stripe simulator did not start; its messages are above.")
    print(f"No Stripe keys: billing runs in test mode against the Stripe simulator at {base_url}")
    settings = {"BILLING_MODE": "test", "STRIPE_SECRET_KEY": "sk_test_simulator", "STRIPE_API_BASE": base_url,
                "STRIPE_WEBHOOK_SECRET": webhook_secret}
    settings.update({f"STRIPE_PRICE_{tier.upper()}": price for tier, price in prices.items()})
    settings.update({f"STRIPE_PRICE_{pack.upper()}": price for pack, price in pack_prices.items()})
    return settings, simulator


class StartError(Exception):
    """The service cannot start; the message says why and what to do."""


def bind_address(environ=os.environ) -> tuple[str, int]:
    """Where to serve: BIND (host:port) if set, else 127.0.0.1:$PORT (default 8000)."""
    if environ.get("BIND"):
        host, _, port = environ["BIND"].rpartition(":")
        name = "BIND"
    else:
        host, port, name = "127.0.0.1", environ.get("PORT", "8000").strip(), "PORT"
    if not port.isdigit() or not 1 <= int(port) <= 65535 or not host:
        raise StartError(f"{name}={environ.get(name)!r} is not a port number (1-65535)"
                         + (" with a host (host:port)" if name == "BIND" else ""))
    return host.strip("[]"), int(port)


def check_port_free(host: str, port: int) -> None:
    """StartError when nothing could listen on host:port (taken, or not ours to use)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise StartError(f"Port {port} on {host} is already in use (another `make run`?). "
                                 f"Stop that, or choose another port: PORT={port + 1} make run") from None
            raise StartError(f"Cannot listen on {host}:{port}: {error.strerror}. "
                             "Choose another address with PORT=… or BIND=host:port") from None


def wait_until_serving(url: str, children: dict[str, subprocess.Popen], seconds: float = START_SECONDS) -> None:
    """Return once `url` answers; StartError if a child exits first or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name, child in children.items():
            if child.poll() is not None:
                raise StartError(f"the {name} exited with status {child.returncode} before the site answered; "
                                 "its messages are above.")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise StartError(f"Nothing answered at {url} within {seconds:.0f} s.")


# -- run -------------------------------------------------------------------------------------

def main() -> int:
    """Run until Ctrl-C (0) or until something fails (non-zero, with the reason)."""
    try:
        host, port = bind_address()
        if not report_missing(missing_requirements()):
            return 1
        check_port_free(host, port)
    except StartError as error:
        print(f"Cannot start: {error}", file=sys.stderr)
        return 1
    dsn, server = database_url()
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        billing, simulator = stripe_simulator(bind)
    except StartError as error:
        print(f"Cannot start: {error}", file=sys.stderr)
        return 1
    migrate(dsn, {**os.environ, **billing})
    print("Database migrated.")
    env = {**os.environ, **billing, "DATABASE_URL": dsn, "SECRET_KEY": secret_key(), "BIND": bind,
           "FLASK_DEBUG": os.environ.get("FLASK_DEBUG", "1")}
    children = {
        "web server": subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "web/gunicorn_conf.py",
                                        "web:create_app()"], cwd=ROOT, env=env),
        "render worker": subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env),
    }
    if simulator is not None:
        children["Stripe simulator"] = simulator
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    status = 0
    try:
        wait_until_serving(f"http://{bind}/healthz", children)
        where = f"http://127.0.0.1:{port} (and every other address of this machine)" \
            if host in ("0.0.0.0", "::") else f"http://{bind}"
        print(f"Story Genius is running on {where}  (Ctrl-C stops web, worker and database)", flush=True)
        while not stopping and all(child.poll() is None for child in children.values()):
            time.sleep(0.5)
        if not stopping:
            name, failed = next((n, c) for n, c in children.items() if c.poll() is not None)
            print(f"Stopping: the {name} exited with status {failed.returncode}.", file=sys.stderr)
            status = 1
    except StartError as error:
        print(f"Cannot start: {error}", file=sys.stderr)
        status = 1
    finally:
        for child in children.values():
            if child.poll() is None:
                child.terminate()
        for child in children.values():
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
        del server  # stops the embedded Postgres, if we started one
    return status


if __name__ == "__main__":
    sys.exit(main())
