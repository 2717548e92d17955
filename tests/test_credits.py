"""The credit ledger: atomic spending under concurrency, exactly-once refunds and grants,
append-only history, and balance = sum(ledger) for every user."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from .conftest import acting_as, balance, ledger_sum

CONCURRENT_CALLS = 200


def run_concurrently(count: int, work):
    """Run work(i) on `count` threads released together by a barrier; returns results
    (or the exceptions raised) in order."""
    barrier = threading.Barrier(count)

    def task(i):
        barrier.wait()
        try:
            return work(i)
        except Exception as error:  # noqa: BLE001 - collected for the assertions
            return error

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(task, range(count)))


def invariant_violations(admin: psycopg.Connection) -> list[dict]:
    return admin.execute("""
        select s.user_id, s.credits_remaining, coalesce(sum(l.delta), 0) as ledger
          from subscriptions s left join credit_ledger l on l.user_id = s.user_id
         group by s.user_id, s.credits_remaining
        having s.credits_remaining <> coalesce(sum(l.delta), 0)""").fetchall()


def test_signup_grants_five_credits(make_user, connect):
    uid = make_user()
    admin = connect("postgres")
    assert balance(admin, uid) == 5 == ledger_sum(admin, uid)
    reasons = admin.execute("select reason, delta from credit_ledger where user_id = %s", (uid,)).fetchall()
    assert reasons == [{"reason": "signup_grant", "delta": 5}]


def test_double_spend_200_concurrent_calls_on_7_credits(make_user, connect, new_connection):
    admin = connect("postgres")
    max_connections = int(admin.execute("show max_connections").fetchone()["max_connections"])
    assert max_connections >= CONCURRENT_CALLS + 20, (
        f"this test opens {CONCURRENT_CALLS} connections at once; max_connections is {max_connections}. "
        "Run scripts/prepare-test-postgres (make test does) to raise it.")
    uid = make_user(credits=7)
    jobs_before = admin.execute("select count(*) as n from jobs where user_id = %s", (uid,)).fetchone()["n"]
    # one connection per caller, all opened before the race starts
    conns = [new_connection("sg_app") for _ in range(CONCURRENT_CALLS)]

    def spend(i):
        with acting_as(conns[i], uid):
            return conns[i].execute(
                "select * from app.spend_credit_and_create_job('youtube_shorts', %s)", (f"race {i}",)).fetchone()

    results = run_concurrently(CONCURRENT_CALLS, spend)

    successes = [r for r in results if isinstance(r, dict)]
    refusals = [r for r in results if isinstance(r, psycopg.Error) and r.sqlstate == "P0402"]
    others = [r for r in results if r not in successes and r not in refusals]
    assert others == []
    assert len(successes) == 7 and len(refusals) == 193
    assert sorted(r["credits_remaining"] for r in successes) == [0, 1, 2, 3, 4, 5, 6]
    assert balance(admin, uid) == 0 == ledger_sum(admin, uid)
    new_jobs = admin.execute("select id from jobs where user_id = %s", (uid,)).fetchall()
    assert len(new_jobs) - jobs_before == 7
    queued = admin.execute(
        "select count(*) as n from pgqueuer where entrypoint = 'render' "
        "and convert_from(payload, 'UTF8')::jsonb ->> 'job_id' = any(%s)",
        ([str(r["job_id"]) for r in successes],)).fetchone()["n"]
    assert queued == 7
    usage = admin.execute("select count(*) as n from usage_logs where user_id = %s and action = 'video_generation'",
                          (uid,)).fetchone()["n"]
    assert usage - jobs_before == 7
    assert invariant_violations(admin) == []


def test_out_of_credits_changes_nothing(make_user, connect):
    uid = make_user(credits=0)
    admin = connect("postgres")
    counts = "select (select count(*) from jobs) as jobs, (select count(*) from credit_ledger) as ledger, " \
             "(select count(*) from pgqueuer) as queue, (select count(*) from usage_logs) as usage"
    before = admin.execute(counts).fetchone()
    conn = connect("sg_app")
    with pytest.raises(psycopg.Error) as raised:
        with acting_as(conn, uid):
            conn.execute("select * from app.spend_credit_and_create_job('tiktok', 'no money')")
    assert raised.value.sqlstate == "P0402"
    assert admin.execute(counts).fetchone() == before


@pytest.mark.parametrize("platform, topic, options", [
    ("myspace", "a fine topic", "{}"),
    (None, "a fine topic", "{}"),
    ("tiktok", "ab", "{}"),
    ("tiktok", "x" * 201, "{}"),
    ("tiktok", "   ", "{}"),
    ("tiktok", "a fine topic", "[]"),
])
def test_bad_job_input_is_refused_without_taking_a_credit(make_user, connect, platform, topic, options):
    uid = make_user()
    conn = connect("sg_app")
    with pytest.raises(psycopg.Error) as raised:
        with acting_as(conn, uid):
            conn.execute("select * from app.spend_credit_and_create_job(%s, %s, %s::jsonb)", (platform, topic, options))
    assert raised.value.sqlstate == "P0422"
    assert balance(connect("postgres"), uid) == 5


def test_spending_needs_a_user(connect):
    conn = connect("sg_app")
    with pytest.raises(psycopg.Error) as raised:
        with acting_as(conn, None):
            conn.execute("select * from app.spend_credit_and_create_job('tiktok', 'anonymous')")
    assert raised.value.sqlstate == "P0401"


def test_refund_called_5_times_concurrently_credits_once(make_user, connect, new_connection):
    uid = make_user()
    admin = connect("postgres")
    with acting_as(admin, uid):
        job = admin.execute("select * from app.spend_credit_and_create_job('tiktok', 'doomed')").fetchone()
    admin.execute("update jobs set status = 'failed' where id = %s", (job["job_id"],))
    assert balance(admin, uid) == 4
    # fail_job's own caller (sg_service) refunds; no runtime role may call refund_job
    workers = [new_connection("postgres") for _ in range(5)]
    results = run_concurrently(5, lambda i: workers[i].execute("select app.refund_job(%s) as refunded",
                                                               (job["job_id"],)).fetchone()["refunded"])
    assert sorted(results) == [False, False, False, False, True]
    assert balance(admin, uid) == 5 == ledger_sum(admin, uid)
    refunds = admin.execute("select count(*) as n from credit_ledger where reason = 'refund' and job_id = %s",
                            (job["job_id"],)).fetchone()["n"]
    assert refunds == 1


def test_refund_refuses_unfinished_and_unknown_jobs(make_user, connect):
    uid = make_user()
    admin = connect("postgres")
    with acting_as(admin, uid):
        job = admin.execute("select * from app.spend_credit_and_create_job('tiktok', 'still queued')").fetchone()
    worker = connect("postgres")
    with pytest.raises(psycopg.Error) as raised:
        worker.execute("select app.refund_job(%s)", (job["job_id"],))
    assert raised.value.sqlstate == "P0409"
    with pytest.raises(psycopg.Error) as raised:
        worker.execute("select app.refund_job(gen_random_uuid())")
    assert raised.value.sqlstate == "P0404"
    assert balance(admin, uid) == 4


def test_fail_job_refunds_exactly_once_however_often_called(make_user, connect, new_connection):
    uid = make_user()
    admin = connect("postgres")
    with acting_as(admin, uid):
        job = admin.execute("select * from app.spend_credit_and_create_job('tiktok', 'fails')").fetchone()
    attempt = connect("sg_worker").execute("select attempts from app.claim_job(%s)", (job["job_id"],)).fetchone()["attempts"]
    workers = [new_connection("sg_worker") for _ in range(5)]
    results = run_concurrently(5, lambda i: workers[i].execute("select app.fail_job(%s, %s, 'boom') as failed",
                                                               (job["job_id"], attempt)).fetchone()["failed"])
    assert sorted(results) == [False, False, False, False, True]
    assert balance(admin, uid) == 5 == ledger_sum(admin, uid)


def test_grant_is_idempotent_per_key(make_user, connect):
    uid = make_user()
    admin = connect("postgres")
    first = admin.execute("select * from app.grant_credits(%s, 20, 'plan_grant', 'period:abc')", (uid,)).fetchone()
    again = admin.execute("select * from app.grant_credits(%s, 20, 'plan_grant', 'period:abc')", (uid,)).fetchone()
    assert first == {"granted": True, "credits_remaining": 25}
    assert again == {"granted": False, "credits_remaining": 25}
    assert ledger_sum(admin, uid) == 25


def test_concurrent_grants_with_one_key_grant_once(make_user, connect, new_connection):
    uid = make_user()
    # as its callers run it (the billing functions own it as sg_service): no runtime role may
    workers = [new_connection("postgres") for _ in range(10)]
    results = run_concurrently(10, lambda i: workers[i].execute(
        "select granted from app.grant_credits(%s, 100, 'renewal', 'renewal:race')", (uid,)).fetchone()["granted"])
    assert results.count(True) == 1
    admin = connect("postgres")
    assert balance(admin, uid) == 105 == ledger_sum(admin, uid)


@pytest.mark.parametrize("amount, reason, key", [
    (0, "admin_grant", "k0"), (-5, "admin_grant", "k1"), (5, "render", "k2"), (5, "refund", "k3"),
    (5, "bogus", "k4"), (5, "admin_grant", ""), (5, "admin_grant", None), (None, "admin_grant", "k5"),
])
def test_grant_rejects_bad_input(make_user, connect, amount, reason, key):
    uid = make_user()
    admin = connect("postgres")
    with pytest.raises(psycopg.Error) as raised:
        admin.execute("select * from app.grant_credits(%s, %s, %s, %s)", (uid, amount, reason, key))
    assert raised.value.sqlstate == "P0422"
    assert balance(admin, uid) == 5


@pytest.mark.parametrize("role", ["postgres", "sg_owner", "sg_service", "sg_app", "sg_worker", "sg_analyst"])
@pytest.mark.parametrize("statement", ["update credit_ledger set delta = 1000", "delete from credit_ledger",
                                       "truncate credit_ledger"])
def test_ledger_is_append_only_for_every_role(make_user, connect, role, statement):
    uid = make_user()
    admin = connect("postgres")
    before = admin.execute("select count(*) as n, sum(delta) as s from credit_ledger").fetchone()
    with pytest.raises(psycopg.Error) as raised:
        # acting for a user with ledger rows, so row-level security leaves rows to refuse
        with acting_as(admin, uid):
            if role != "postgres":
                admin.execute(f"set local role {role}")
            admin.execute(statement)
    # the trigger refuses (P0403) where privileges would allow it; elsewhere the grant is missing (42501)
    assert raised.value.sqlstate in ("P0403", "42501")
    if role in ("postgres", "sg_owner"):
        assert raised.value.sqlstate == "P0403"
    assert admin.execute("select count(*) as n, sum(delta) as s from credit_ledger").fetchone() == before


@pytest.mark.parametrize("days", [0, -1, 366, None])
def test_usage_days_must_be_1_to_365(make_user, connect, days):
    uid = make_user()
    conn = connect("sg_app")
    with pytest.raises(psycopg.Error) as raised:
        with acting_as(conn, uid):
            conn.execute("select * from app.usage(%s)", (days,))
    assert raised.value.sqlstate == "P0422"


def test_usage_and_balance_for_the_current_user(make_user, connect):
    uid = make_user()
    other = make_user()
    conn = connect("sg_app")
    with acting_as(conn, uid):
        conn.execute("select * from app.spend_credit_and_create_job('tiktok', 'used once')")
        usage = conn.execute("select action, credits from app.usage(30)").fetchall()
        credits = conn.execute("select * from app.credit_balance()").fetchone()
    assert usage == [{"action": "video_generation", "credits": 1}]
    assert credits["tier"] == "free" and credits["credits_remaining"] == 4
    assert credits["credits_total"] == 5 and credits["credits_used"] == 1
    with acting_as(conn, other):
        assert conn.execute("select * from app.usage(365)").fetchall() == []


def test_duplicate_email_any_case_is_a_conflict(make_user, connect):
    make_user(email="Case.Test@Example.com")
    conn = connect("sg_app")
    with pytest.raises(psycopg.Error) as raised:
        with conn.transaction():
            conn.execute("select * from app.signup('case.test@example.COM', '$argon2id$v=19$x', null)")
    assert raised.value.sqlstate == "P0409"


def test_balance_equals_ledger_for_every_user(connect):
    """Runs after the others in this module (file order): the invariant holds everywhere."""
    assert invariant_violations(connect("postgres")) == []
