"""Who may call what (issue 16, item 3), asserted in SQL as each runtime role: the
functions that move credits without a signed Stripe event or an operator are closed to
the web and worker roles (the worker refunds through fail_job, the billing functions
call grant/reset internally as sg_service)."""
from __future__ import annotations

import time

import psycopg
import pytest

from .conftest import acting_as, balance

CREDIT_FUNCTIONS = [
    "select app.grant_credits(%(user)s, 100, 'admin_grant', 'mint:' || gen_random_uuid())",
    "select app.grant_credits(%(user)s, 100, 'admin_grant', 'mint:' || gen_random_uuid(), null, null, 'note')",
    "select app.reset_credits(%(user)s, 1000, 'renewal', 'mint:' || gen_random_uuid(), now(), now() + interval '1 month')",
    "select app.refund_job(%(job)s)",
    "select app.operator_grant(%(user)s, 100, 'mint-' || gen_random_uuid(), 'because')",
    "select app.fail_and_refund(%(job)s, 'x')",
]


@pytest.fixture
def failed_job(make_user, connect):
    """A user with a job that failed without its refund yet (the state refund_job acts on)."""
    uid = make_user()
    admin = connect("postgres")
    with acting_as(admin, uid):
        job = admin.execute("select job_id from app.spend_credit_and_create_job('tiktok', 'refund me')").fetchone()
    admin.execute("update jobs set status = 'failed' where id = %s", (job["job_id"],))
    return {"user": uid, "job": job["job_id"]}


@pytest.mark.parametrize("role", ["sg_app", "sg_worker", "sg_analyst"])
@pytest.mark.parametrize("call", CREDIT_FUNCTIONS)
def test_no_runtime_role_may_move_credits_directly(connect, failed_job, role, call):
    conn = connect(role)
    with pytest.raises(psycopg.Error) as raised:
        with acting_as(conn, failed_job["user"]):
            conn.execute(call, failed_job)
    assert raised.value.sqlstate == "42501"
    assert balance(connect("postgres"), failed_job["user"]) == 4


def test_the_owner_paths_still_work(connect, failed_job):
    """sg_service (what the billing, renewal and job functions run as) keeps them."""
    admin = connect("postgres")
    with admin.transaction():
        admin.execute("set local role sg_service")
        assert admin.execute("select app.refund_job(%(job)s) as r", failed_job).fetchone()["r"] is True
        admin.execute("select app.grant_credits(%(user)s, 2, 'admin_grant', 'owner:' || gen_random_uuid())",
                      failed_job)
    assert balance(admin, failed_job["user"]) == 7


# -- what a leaked sg_app (or sg_worker) password cannot do ----------------------------------
#
# README "Roles and tenancy" lists these; each is tried here as that role, in SQL, and must
# fail with a privilege error (42501) and change nothing.

def refused(conn: psycopg.Connection, statement: str, params=None, user=None) -> str:
    """The SQLSTATE `statement` fails with as `conn`'s role (acting for `user` when given);
    the transaction is rolled back whatever happens."""
    try:
        with conn.transaction():
            conn.execute("select set_config('app.user_id', %s, true)", (str(user) if user else "",))
            conn.execute(statement, params)
            raise AssertionError(f"allowed: {statement}")
    except psycopg.Error as error:
        return error.sqlstate


SECRET_READS = [
    "select password_hash from users",
    "select key_hash from api_keys",
    "select token_hash from refresh_tokens",
    "select token_hash from browser_sessions",
    "select token_hash from email_tokens",
    "select data from email_outbox",
    "select * from two_factor",
    "select * from recovery_codes",
    "select * from trusted_devices",
    "select * from login_challenges",
    "select * from login_attempts",
    "select * from stripe_events",
    "select * from stripe_webhook_secrets",
    "select * from sql_layer_files",
    "select * from reporting.user_summary",
]
WORKER_ALSO_CANNOT_READ = [
    "select id, email from users",
    "select * from subscriptions",
    "select * from credit_ledger",
    "select * from jobs",
    "select * from usage_logs",
    "select id, name from api_keys",
]


@pytest.mark.parametrize("role", ["sg_app", "sg_worker"])
@pytest.mark.parametrize("statement", SECRET_READS)
def test_no_runtime_role_reads_a_secret_a_hash_or_a_stripe_payload(connect, make_user, role, statement):
    assert refused(connect(role), statement, user=make_user()) == "42501"


@pytest.mark.parametrize("statement", WORKER_ALSO_CANNOT_READ)
def test_the_worker_reads_no_tenant_table(connect, make_user, statement):
    assert refused(connect("sg_worker"), statement, user=make_user()) == "42501"


WRITES = [
    "insert into credit_ledger (user_id, delta, reason, idempotency_key) values (%(user)s, 1000, 'admin_grant', 'x')",
    "update subscriptions set credits_remaining = 1000, tier = 'agency' where user_id = %(user)s",
    "update users set is_verified = true where id = %(user)s",
    "update users set email = 'attacker@example.com' where id = %(user)s",
    "update users set password_hash = '$argon2id$attacker' where id = %(user)s",
    "update users set is_active = true, session_version = 0 where id = %(user)s",
    "delete from users where id = %(user)s",
    "delete from credit_ledger where user_id = %(user)s",
    "truncate credit_ledger",
    "update plans set credits = 100000",
    "insert into jobs (user_id, platform, topic, tier_at_creation) values (%(user)s, 'tiktok', 'free video', 'agency')",
    "insert into stripe_events (id, type, payload) values ('evt_forged', 'invoice.paid', '{}')",
    "insert into stripe_webhook_secrets (secret) values ('whsec_attacker')",
    "insert into api_keys (user_id, name, prefix, key_hash) values (%(user)s, 'k', 'sk_x', 'x')",
    "insert into refresh_families (id, user_id) values (gen_random_uuid(), %(user)s)",
    "insert into two_factor (user_id, secret) values (%(user)s, 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA')",
]


@pytest.mark.parametrize("role", ["sg_app", "sg_worker"])
@pytest.mark.parametrize("statement", WRITES)
def test_no_runtime_role_writes_a_table_directly(connect, make_user, role, statement):
    user = make_user()
    assert refused(connect(role), statement, {"user": user}, user=user) == "42501"
    assert balance(connect("postgres"), user) == 5


APP_CANNOT_PUSH_THE_QUEUE = [
    "insert into pgqueuer (priority, entrypoint, payload, status) values (0, 'render', '\\x7b7d', 'queued')",
    "select * from pgqueuer",
]


@pytest.mark.parametrize("statement", APP_CANNOT_PUSH_THE_QUEUE)
def test_the_web_role_cannot_touch_the_queue(connect, statement):
    assert refused(connect("sg_app"), statement) == "42501"


ESCALATIONS = [
    "set role sg_owner",
    "set role sg_service",
    "set role sg_reporting",
    "set role postgres",
    "create table public.evil (x integer)",
    "create function app.evil() returns integer language sql as 'select 1'",
    "create schema evil",
    "create role evil",
    "alter role current_user bypassrls",
    "alter table users disable row level security",
    "alter table users no force row level security",
    "drop policy \"users reach only their own rows\" on users",
    "copy (select 1) to program 'id'",
    "select pg_read_file('/etc/passwd')",
    "create extension if not exists dblink",
]


@pytest.mark.parametrize("role", ["sg_app", "sg_worker"])
@pytest.mark.parametrize("statement", ESCALATIONS)
def test_no_runtime_role_escapes_its_grants(connect, role, statement):
    assert refused(connect(role), statement) == "42501"


WORKER_ONLY = [
    "select * from app.claim_job(gen_random_uuid())",
    "select app.complete_job(gen_random_uuid(), 1, 'x')",
    "select app.fail_job(gen_random_uuid(), 1, 'x')",
    "select app.apply_stripe_subscription('{}', now(), 'sync')",
    "select app.renew_free_subscriptions()",
    "select * from app.claim_email(gen_random_uuid())",
    "select app.roll_up_reporting(now())",
    "select app.retry_stripe_event('evt_x')",
    "select app.sweep_stranded_jobs()",
]
WEB_ONLY = [
    "select * from app.spend_credit_and_create_job('tiktok', 'a free video')",
    "select * from app.signup('worker@example.com', '$argon2id$x', null)",
    "select * from app.login_attempt('someone@example.com', null, null)",
    "select app.current_password_hash()",
    "select * from app.erase_my_account()",
    "select app.export_my_account()",
    "select app.create_api_key('k', 'sk_x', 'x')",
    "select app.receive_stripe_event('{}', 't=1,v1=00')",
    "select app.change_password('$argon2id$x')",
]


@pytest.mark.parametrize("statement", WORKER_ONLY)
def test_the_web_role_cannot_call_the_workers_functions(connect, make_user, statement):
    assert refused(connect("sg_app"), statement, user=make_user()) == "42501"


@pytest.mark.parametrize("statement", WEB_ONLY)
def test_the_worker_cannot_call_the_users_functions(connect, make_user, statement):
    assert refused(connect("sg_worker"), statement, user=make_user()) == "42501"


def test_the_web_role_sees_nobody_without_a_user_id(connect, make_user):
    make_user()
    app = connect("sg_app")
    for user_id in ("", "00000000-0000-0000-0000-000000000000"):
        with app.transaction():
            app.execute("select set_config('app.user_id', %s, true)", (user_id,))
            for table in ("users", "subscriptions", "credit_ledger", "jobs", "usage_logs", "api_keys"):
                column = "id" if table == "users" else "user_id"
                assert app.execute(f"select count({column}) as n from {table}").fetchone()["n"] == 0


def test_the_web_role_cannot_store_a_password_hash_that_is_not_argon2id(connect, make_user):
    user = make_user()
    for call in ("select app.change_password('plaintext-password')",
                 "select * from app.signup('plain@example.com', 'plaintext-password', null)"):
        assert refused(connect("sg_app"), call, user=user) == "P0422"


def test_the_web_role_cannot_mint_credits_with_an_unsigned_stripe_event(connect, make_user):
    user = make_user()
    forged = ('{"id": "evt_forged_by_sg_app", "type": "invoice.paid", "created": 1, "data": {"object": '
              '{"object": "invoice", "status": "paid", "metadata": {"user_id": "%s"}}}}' % user)
    for header in ("t=1,v1=" + "0" * 64, f"t={int(time.time())},v1=" + "0" * 64, f"t={int(time.time())}", ""):
        assert refused(connect("sg_app"), "select app.receive_stripe_event(%s, %s)", (forged, header)) == "P0400"
    admin = connect("postgres")
    assert admin.execute("select count(*) as n from stripe_events where id = 'evt_forged_by_sg_app'").fetchone()["n"] == 0
    assert balance(admin, user) == 5


def test_catalog_no_public_execute_pinned_search_paths_and_runtime_roles_own_nothing(connect):
    """Splinter-style checks over the whole catalog."""
    admin = connect("postgres")
    assert admin.execute("""select p.oid::regprocedure::text as f from pg_proc p
                             where p.pronamespace = 'app'::regnamespace
                               and has_function_privilege('public', p.oid, 'execute')""").fetchall() == []
    assert admin.execute("""select p.oid::regprocedure::text as f from pg_proc p
                             where p.pronamespace = 'app'::regnamespace and p.prosecdef
                               and not exists (select from unnest(p.proconfig) c where c like 'search_path=%%')
                          """).fetchall() == []
    assert admin.execute("""select rolname from pg_roles where rolname in ('sg_app', 'sg_worker', 'sg_analyst')
                               and (rolsuper or rolbypassrls or rolcreaterole or rolcreatedb or rolinherit)
                          """).fetchall() == []
    owned = admin.execute("""
        select c.relname as name from pg_class c where c.relowner in ('sg_app'::regrole, 'sg_worker'::regrole)
        union all select p.proname from pg_proc p where p.proowner in ('sg_app'::regrole, 'sg_worker'::regrole)
    """).fetchall()
    assert owned == []
