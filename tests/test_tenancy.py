"""Row-level security, by persona: owner, other user, anonymous, analyst, worker.

Connected as sg_app (the web role), a user sees only their own rows however the
query is written; denials are asserted the way they really happen: a missing grant
raises 42501, a row hidden by a policy makes UPDATE touch nothing.
"""
from __future__ import annotations

import psycopg
import pytest

from .conftest import acting_as

TENANT_TABLES = ["subscriptions", "jobs", "credit_ledger", "usage_logs", "api_keys", "refresh_tokens",
                 "refresh_families"]
# columns sg_app may read on the tables with secret columns
READABLE = {"api_keys": "id, user_id, name, prefix", "refresh_tokens": "id, user_id, family_id"}


@pytest.fixture
def two_users_with_everything(make_user, connect):
    """Users A and B, each with a job, ledger and usage rows, an API key and a refresh token."""
    admin = connect("postgres")
    users = []
    for _ in range(2):
        uid = make_user()
        with acting_as(admin, uid):
            admin.execute("select * from app.spend_credit_and_create_job('tiktok', 'tenancy topic')")
        admin.execute("insert into api_keys (user_id, name, prefix, key_hash) values (%s, 'k', 'sk_x', %s)",
                      (uid, uid.bytes))
        with acting_as(admin, uid):
            admin.execute("select app.issue_refresh_token(gen_random_uuid(), %s, now() + interval '1 day')",
                          (uid.bytes,))
        users.append(uid)
    return users


def columns(table: str) -> str:
    return READABLE.get(table, "*")


def test_owner_sees_own_rows_only(connect, two_users_with_everything):
    a, b = two_users_with_everything
    conn = connect("sg_app")
    with acting_as(conn, a):
        me = conn.execute("select id, email from users").fetchall()
        assert [r["id"] for r in me] == [a]
        for table in TENANT_TABLES:
            rows = conn.execute(f"select {columns(table)} from {table}").fetchall()
            assert rows and {r["user_id"] for r in rows} == {a}, table


def test_other_user_cannot_see_update_or_delete(connect, two_users_with_everything):
    a, b = two_users_with_everything
    conn = connect("sg_app")
    with acting_as(conn, b):
        # hand-written queries naming A's rows find nothing
        assert conn.execute("select * from jobs where user_id = %s", (a,)).fetchall() == []
        assert conn.execute("select id from users where id = %s", (a,)).fetchall() == []
        for table in TENANT_TABLES:
            assert conn.execute(f"select {columns(table)} from {table} where user_id = %s", (a,)).fetchall() == []
        # the one granted write (profile name) cannot reach A's row: the policy hides it
        cur = conn.execute("update users set full_name = 'pwned' where id = %s", (a,))
        assert cur.rowcount == 0
    admin = connect("postgres")
    assert admin.execute("select full_name from users where id = %s", (a,)).fetchone()["full_name"] == "Test User"


@pytest.mark.parametrize("statement", [
    "update jobs set status = 'completed'",
    "delete from jobs",
    "update subscriptions set credits_remaining = 1000",
    "delete from subscriptions",
    "insert into credit_ledger (user_id, delta, reason, idempotency_key) select user_id, 100, 'admin_grant', 'x' from subscriptions",
    "delete from usage_logs",
    "delete from api_keys",
    "update refresh_tokens set revoked_at = null",
    "delete from users",
    "insert into pgqueuer (priority, entrypoint, payload, status) values (0, 'render', null, 'queued')",
    "select * from stripe_events",
    "select * from login_attempts",
    "select password_hash from users",
    "select key_hash from api_keys",
    "select token_hash from refresh_tokens",
])
def test_web_role_has_no_direct_write_or_secret_read(connect, two_users_with_everything, statement):
    a, _ = two_users_with_everything
    conn = connect("sg_app")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        with acting_as(conn, a):
            conn.execute(statement)


def test_anonymous_sees_no_tenant_rows(connect, two_users_with_everything):
    conn = connect("sg_app")
    for user_id in (None, ""):
        with acting_as(conn, user_id):
            assert conn.execute("select id from users").fetchall() == []
            for table in TENANT_TABLES:
                assert conn.execute(f"select {columns(table)} from {table}").fetchall() == [], table
    # a bare statement outside any transaction-local setting sees nothing either
    assert conn.execute("select count(*) as n from jobs").fetchone()["n"] == 0


def test_identity_does_not_leak_between_transactions(connect, two_users_with_everything):
    a, _ = two_users_with_everything
    conn = connect("sg_app")
    with acting_as(conn, a):
        assert conn.execute("select count(*) as n from jobs").fetchone()["n"] >= 1
    assert conn.execute("select app.current_user_id() as uid").fetchone()["uid"] is None
    assert conn.execute("select count(*) as n from jobs").fetchone()["n"] == 0


def test_owner_role_is_filtered_too(connect, two_users_with_everything):
    """FORCE ROW LEVEL SECURITY: even a mistaken connection as the tables' owner is filtered."""
    a, _ = two_users_with_everything
    admin = connect("postgres")
    with admin.transaction():
        admin.execute("set local role sg_owner")
        assert admin.execute("select count(*) as n from jobs").fetchone()["n"] == 0
        admin.execute("select set_config('app.user_id', %s, true)", (str(a),))
        assert {r["user_id"] for r in admin.execute("select user_id from jobs")} == {a}


@pytest.mark.parametrize("table", ["users", "api_keys", "subscriptions", "jobs", "credit_ledger",
                                   "usage_logs", "refresh_tokens", "stripe_events", "login_attempts", "pgqueuer"])
def test_analyst_cannot_read_base_tables(connect, table):
    conn = connect("sg_analyst")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(f"select * from {table} limit 1")


@pytest.mark.parametrize("column", ["users.password_hash", "api_keys.key_hash", "refresh_tokens.token_hash"])
def test_analyst_cannot_read_secrets(connect, column):
    table, name = column.split(".")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        connect("sg_analyst").execute(f"select {name} from {table} limit 1")


def test_worker_reaches_jobs_only_through_functions(connect, two_users_with_everything):
    conn = connect("sg_worker")
    for statement in ("select * from jobs", "update jobs set status = 'failed'", "select * from subscriptions",
                      "select * from users"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("select * from app.spend_credit_and_create_job('tiktok', 'not for the worker')")


def test_web_role_cannot_call_worker_or_grant_functions(connect, two_users_with_everything):
    a, _ = two_users_with_everything
    conn = connect("sg_app")
    for call in ("select app.grant_credits(%s, 100, 'admin_grant', 'mint')",
                 "select app.claim_job(%s)", "select app.fail_job(%s, 1, 'x')", "select app.refund_job(%s)"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with acting_as(conn, a):
                conn.execute(call, (a,))


@pytest.mark.parametrize("role", ["sg_app", "sg_worker", "sg_analyst", "sg_owner", "sg_service", "sg_reporting"])
def test_runtime_roles_are_neither_superuser_nor_bypassrls(connect, role):
    row = connect("postgres").execute(
        "select rolsuper, rolbypassrls, rolcreaterole, rolcreatedb from pg_roles where rolname = %s",
        (role,)).fetchone()
    assert row == {"rolsuper": False, "rolbypassrls": False, "rolcreaterole": False, "rolcreatedb": False}


def test_web_role_owns_nothing(connect):
    row = connect("postgres").execute(
        "select count(*) as n from pg_class where relowner = 'sg_app'::regrole").fetchone()
    assert row["n"] == 0
    row = connect("postgres").execute(
        "select count(*) as n from pg_proc where proowner = 'sg_app'::regrole").fetchone()
    assert row["n"] == 0
