"""Test fixtures: one throwaway database per test session, migrated for real.

Roles (sg_owner, sg_app, …) are cluster-wide and shared by every database on the
server; the session's database is created, migrated and dropped here.
"""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager

import psycopg
import pytest
from argon2 import PasswordHasher
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from web import create_app
from web.config import role_dsn
from web.migrate import migrate

ADMIN_DSN = os.environ.get("TEST_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def dsn_for(database: str, admin_dsn: str = ADMIN_DSN) -> str:
    return make_conninfo(**{**conninfo_to_dict(admin_dsn), "dbname": database})


@contextmanager
def throwaway_database(prefix: str = "sg_test"):
    """Create an empty database, yield its admin DSN, drop it (with any connections)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'create database "{name}"')
    try:
        yield dsn_for(name)
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="session")
def database_dsn():
    """Admin DSN of this session's migrated database."""
    with throwaway_database() as dsn:
        migrate(dsn, environ={})
        yield dsn


# Stripe signs webhooks with this in the tests; the database checks it (sql/51_stripe_events.sql)
WEBHOOK_SECRET = "whsec_tests_" + "w" * 24


@pytest.fixture(scope="session")
def webhook_secret(database_dsn):
    """The webhook signing secret, stored where `flask migrate` puts STRIPE_WEBHOOK_SECRET."""
    with psycopg.connect(database_dsn, autocommit=True) as admin:
        admin.execute("insert into stripe_webhook_secrets (secret) values (%s) on conflict do nothing",
                      (WEBHOOK_SECRET,))
    return WEBHOOK_SECRET


@contextmanager
def stripe_prices(admin: psycopg.Connection, prices: dict[str, str]):
    """plans.stripe_price_id set to `prices` ({tier: price id}) for the block, then unset again."""
    for tier, price in prices.items():
        admin.execute("update plans set stripe_price_id = %s where tier = %s", (price, tier))
    try:
        yield prices
    finally:
        for tier in prices:
            admin.execute("update plans set stripe_price_id = null where tier = %s", (tier,))


@pytest.fixture(scope="session")
def media_root(tmp_path_factory):
    """Where this session's workers write videos (shared with the app that serves them)."""
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def app(database_dsn, media_root):
    app = create_app({"TESTING": True, "DATABASE_URL": database_dsn,
                      "APP_DATABASE_URL": role_dsn(database_dsn, "sg_app"),
                      "WORKER_DATABASE_URL": role_dsn(database_dsn, "sg_worker"),
                      "MEDIA_ROOT": str(media_root)})
    yield app
    app.extensions["sg_pool"].close()


@pytest.fixture
def client(app):
    return app.test_client()


def _open(database_dsn: str, role: str) -> psycopg.Connection:
    dsn = database_dsn if role == "postgres" else role_dsn(database_dsn, role)
    return psycopg.connect(dsn, autocommit=True, row_factory=dict_row)


@pytest.fixture(scope="session")
def connect(database_dsn):
    """connect(role) -> the session's shared autocommit connection to the test database
    as that role ("postgres" is the superuser)."""
    shared: dict[str, psycopg.Connection] = {}

    def _connect(role: str = "sg_app") -> psycopg.Connection:
        if role not in shared or shared[role].closed:
            shared[role] = _open(database_dsn, role)
        return shared[role]

    yield _connect
    for conn in shared.values():
        conn.close()


@pytest.fixture
def new_connection(database_dsn):
    """new_connection(role) -> a connection of its own, closed when the test ends
    (for tests that need many concurrent sessions)."""
    opened: list[psycopg.Connection] = []

    def _new(role: str = "sg_app") -> psycopg.Connection:
        opened.append(_open(database_dsn, role))
        return opened[-1]

    yield _new
    for conn in opened:
        conn.close()


@contextmanager
def acting_as(conn: psycopg.Connection, user_id):
    """A transaction on `conn` acting for `user_id`, the way web/db.py's tx() does."""
    with conn.transaction():
        conn.execute("select set_config('app.user_id', %s, true)", (str(user_id) if user_id else "",))
        yield conn


# One real argon2id hash, reused: hashing per user would dominate the test time.
PASSWORD = "correct horse battery staple"
PASSWORD_HASH = PasswordHasher(memory_cost=19456, time_cost=2, parallelism=1).hash(PASSWORD)


@pytest.fixture
def make_user(connect):
    """make_user(credits=None) -> user id of a fresh signed-up user with a confirmed
    address (5 credits unless `credits` is given, which is reached by spending or granting
    through the SQL API)."""
    app_conn = connect("sg_app")
    service = connect("postgres")

    def _make_user(credits: int | None = None, email: str | None = None) -> uuid.UUID:
        email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
        with app_conn.transaction():
            user = app_conn.execute("select * from app.signup(%s, %s, %s)",
                                    (email, PASSWORD_HASH, "Test User")).fetchone()
        verify(service, user["id"])  # an unconfirmed address spends one credit (tests/test_throttle.py)
        if credits is not None and credits != user["credits_remaining"]:
            set_balance(service, user["id"], credits)
        return user["id"]

    return _make_user


def set_balance(admin: psycopg.Connection, user_id, credits: int) -> None:
    """Move a user's balance to `credits` with ledger movements (admin grant or renders)."""
    current = balance(admin, user_id)
    if credits > current:
        admin.execute("select * from app.grant_credits(%s, %s, 'admin_grant', %s)",
                      (user_id, credits - current, f"test:{uuid.uuid4()}"))
    for _ in range(current - credits):
        with acting_as(admin, user_id):
            admin.execute("select * from app.spend_credit_and_create_job('tiktok', 'balance setup')")


def balance(conn: psycopg.Connection, user_id) -> int:
    with acting_as(conn, user_id):
        row = conn.execute("select credits_remaining from subscriptions where user_id = %s",
                           (user_id,)).fetchone()
    return row["credits_remaining"]


def ledger_sum(conn: psycopg.Connection, user_id) -> int:
    with acting_as(conn, user_id):
        return conn.execute("select coalesce(sum(delta), 0)::int as s from credit_ledger where user_id = %s",
                            (user_id,)).fetchone()["s"]


# -- HTTP helpers ------------------------------------------------------------------------

STRONG_PASSWORD = "velvet-otter-canyon-42"


def unique_email(label: str = "user") -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}@example.com"


def unique_ip() -> str:
    """A client address of its own per test (198.18.0.0/15 is reserved for testing), so
    the per-IP login throttle of one test never reaches another."""
    n = uuid.uuid4().int
    return f"198.{18 + (n & 1)}.{(n >> 1) & 255}.{(n >> 9) & 255}"


def client_with_own_ip(app, ip: str | None = None, **kwargs):
    """A test client whose requests come from an address of their own."""
    client = app.test_client(**kwargs)
    client.environ_base["REMOTE_ADDR"] = ip or unique_ip()
    return client


@pytest.fixture
def api(app):
    """A test client for the JSON API with a client address of its own."""
    return client_with_own_ip(app)


def api_signup(client, email: str | None = None, password: str = STRONG_PASSWORD, **extra) -> dict:
    """POST /v1/auth/signup; returns the JSON (asserting 201)."""
    response = client.post("/v1/auth/signup", json={"email": email or unique_email(), "password": password, **extra})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def set_tier(admin: psycopg.Connection, user_id, tier: str) -> None:
    """Put a user on a plan (as a purchase would, which needs a verified address)."""
    admin.execute("update subscriptions set tier = %s where user_id = %s", (tier, user_id))
    verify(admin, user_id)


def verify(admin: psycopg.Connection, user_id) -> None:
    """Mark the user's address verified (the tests of the emailed link are in test_email.py)."""
    admin.execute("update users set is_verified = true where id = %s", (user_id,))


@pytest.fixture
def empty_queue(connect):
    """Drop render entries other tests left queued, so a worker started by this test
    works only on this test's jobs; and end the jobs they belonged to, which the worker's
    sweeper would otherwise find stranded and put back in this test's queue."""
    admin = connect("postgres")
    admin.execute("delete from pgqueuer")
    admin.execute("update jobs set status = 'failed', error_message = 'Left unfinished by an earlier test.', "
                  "finished_at = coalesce(finished_at, now()) where status in ('queued', 'processing')")


def wait_for(predicate, timeout: float, interval: float = 0.2):
    """Poll predicate() until it returns something truthy or the timeout passes."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()
