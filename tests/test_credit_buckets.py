"""Credit buckets (issue 19): spend order, expiry at read time and by the job, refunds into
their bucket, capped rollover, balances at past moments, 200 concurrent spends across
buckets, and the migration that turns existing balances into buckets."""
from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.rows import dict_row
from yoyo import read_migrations

from web.migrate import MIGRATIONS_DIR, ROLES_FILE, _owner_backend, _run_sql_file, migrate

from .conftest import PASSWORD_HASH, acting_as, balance, ledger_sum, throwaway_database
from .test_credits import CONCURRENT_CALLS, run_concurrently

DAY = timedelta(days=1)
PERIOD = timedelta(days=30)


# -- helpers ---------------------------------------------------------------------------------

def grant(admin, uid, amount: int, expires_in: timedelta | None, reason: str = "admin_grant") -> uuid.UUID:
    """An operator-style grant expiring `expires_in` from now (None: never); returns its bucket."""
    expires_at = None if expires_in is None else datetime.now(timezone.utc) + expires_in
    key = f"test:{uuid.uuid4()}"
    admin.execute("select * from app.grant_credits(%s, %s, %s, %s, expires_at => %s)",
                  (uid, amount, reason, key, expires_at))
    return admin.execute("select bucket_id from credit_ledger where idempotency_key = %s", (key,)).fetchone()["bucket_id"]


def spend(admin, uid) -> dict:
    with acting_as(admin, uid):
        return admin.execute("select * from app.spend_credit_and_create_job('tiktok', 'bucket test')").fetchone()


def drawn_from(admin, job_id) -> uuid.UUID:
    return admin.execute("select bucket_id from credit_ledger where idempotency_key = %s",
                         (f"render:{job_id}",)).fetchone()["bucket_id"]


def buckets(admin, uid) -> dict[uuid.UUID, dict]:
    rows = admin.execute("select * from credit_buckets where user_id = %s", (uid,)).fetchall()
    return {r["id"]: r for r in rows}


def spendable(admin, uid) -> int:
    with acting_as(admin, uid):
        return admin.execute("select credits_remaining from app.credit_balance()").fetchone()["credits_remaining"]


def pass_time(admin, bucket: uuid.UUID, ago: timedelta = timedelta(seconds=1)) -> None:
    """The bucket's expiry comes (it is moved into the past; nothing else changes)."""
    admin.execute("update credit_buckets set expires_at = now() - %s where id = %s", (ago, bucket))


def fail(admin, job_id) -> bool:
    claim = admin.execute("select attempts from app.claim_job(%s)", (job_id,)).fetchone()
    return admin.execute("select app.fail_job(%s, %s, 'test failure') as f", (job_id, claim["attempts"])).fetchone()["f"]


def assert_invariants(admin, uid) -> None:
    """cached balance = Σ ledger = Σ bucket remainders, each bucket = Σ of its rows, none negative."""
    state = admin.execute("""
        select s.credits_remaining,
               (select coalesce(sum(l.delta), 0) from credit_ledger l where l.user_id = s.user_id) as ledger,
               (select coalesce(sum(b.remaining), 0) from credit_buckets b where b.user_id = s.user_id) as buckets,
               (select count(*) from credit_buckets b where b.user_id = s.user_id and b.remaining <>
                  (select coalesce(sum(l.delta), 0) from credit_ledger l where l.bucket_id = b.id)) as off
          from subscriptions s where s.user_id = %s""", (uid,)).fetchone()
    assert state["credits_remaining"] == state["ledger"] == state["buckets"] >= 0, state
    assert state["off"] == 0, state


@pytest.fixture
def admin(connect):
    return connect("postgres")


@pytest.fixture
def empty_user(make_user, admin):
    """A confirmed user whose signup bucket is used up, so tests place every bucket themselves."""
    uid = make_user()
    for _ in range(5):
        spend(admin, uid)
    return uid


# -- grants and the spend order --------------------------------------------------------------

def test_every_grant_is_a_bucket_with_its_source_and_expiry(make_user, admin):
    uid = make_user()
    period_end = admin.execute("select current_period_end from subscriptions where user_id = %s", (uid,)).fetchone()[
        "current_period_end"]
    [signup] = buckets(admin, uid).values()
    assert (signup["source"], signup["amount"], signup["remaining"], signup["expires_at"]) == \
        ("signup", 5, 5, period_end)
    operator = grant(admin, uid, 7, None)
    referral = grant(admin, uid, 3, 30 * DAY, reason="referral_grant")
    found = buckets(admin, uid)
    assert (found[operator]["source"], found[operator]["expires_at"]) == ("operator", None)
    assert found[referral]["source"] == "referral"
    assert_invariants(admin, uid)


def test_spends_take_the_soonest_expiring_bucket_first_then_the_oldest(empty_user, admin):
    never = grant(admin, empty_user, 2, None)
    later = grant(admin, empty_user, 2, 20 * DAY)
    soon_old = grant(admin, empty_user, 1, 3 * DAY)
    soon_new = grant(admin, empty_user, 1, 3 * DAY)
    soonest = grant(admin, empty_user, 1, 2 * DAY)
    order = [drawn_from(admin, spend(admin, empty_user)["job_id"]) for _ in range(7)]
    assert order == [soonest, soon_old, soon_new, later, later, never, never]
    with pytest.raises(psycopg.Error) as refused:
        spend(admin, empty_user)
    assert refused.value.sqlstate == "P0402"
    assert_invariants(admin, empty_user)


# -- expiry ----------------------------------------------------------------------------------

def test_an_expired_bucket_is_never_spent_nor_counted_before_the_job_runs(empty_user, admin, connect):
    expiring = grant(admin, empty_user, 4, DAY)
    kept = grant(admin, empty_user, 2, None)
    spend(admin, empty_user)
    pass_time(admin, expiring)
    # before the job: the cached balance still holds 3 expired credits; no read shows them
    assert balance(admin, empty_user) == 5 and spendable(admin, empty_user) == 2
    first = spend(admin, empty_user)
    assert drawn_from(admin, first["job_id"]) == kept and first["credits_remaining"] == 1
    spend(admin, empty_user)
    with pytest.raises(psycopg.Error) as refused:
        spend(admin, empty_user)
    assert refused.value.sqlstate == "P0402"
    # the job records the expiry once, dated at the boundary, however often it runs
    worker = connect("sg_worker")
    assert worker.execute("select app.expire_credit_buckets() as n").fetchone()["n"] >= 1
    worker.execute("select app.expire_credit_buckets()")
    expiries = admin.execute("select delta, created_at, idempotency_key from credit_ledger where bucket_id = %s "
                             "and reason = 'expiry'", (expiring,)).fetchall()
    expires_at = buckets(admin, empty_user)[expiring]["expires_at"]
    assert [(e["delta"], e["created_at"], e["idempotency_key"]) for e in expiries] == \
        [(-3, expires_at, f"expiry:{expiring}")]
    assert balance(admin, empty_user) == 0 == spendable(admin, empty_user)
    assert_invariants(admin, empty_user)


def test_the_expiry_job_may_run_concurrently_and_expires_each_bucket_once(make_user, admin, new_connection):
    users = [make_user() for _ in range(5)]
    for uid in users:
        for bucket in buckets(admin, uid):
            pass_time(admin, bucket)
    workers = [new_connection("sg_worker") for _ in range(8)]
    results = run_concurrently(8, lambda i: workers[i].execute("select app.expire_credit_buckets() as n").fetchone()["n"])
    assert all(isinstance(r, int) for r in results), results
    for uid in users:
        assert admin.execute("select count(*) as n from credit_ledger where user_id = %s and reason = 'expiry'",
                             (uid,)).fetchone()["n"] == 1
        assert balance(admin, uid) == 0
        assert_invariants(admin, uid)


# -- refunds ---------------------------------------------------------------------------------

def test_a_refund_goes_back_into_the_bucket_it_came_from_once(empty_user, admin):
    first = grant(admin, empty_user, 1, 2 * DAY)
    second = grant(admin, empty_user, 1, 9 * DAY)
    job = spend(admin, empty_user)["job_id"]
    spend(admin, empty_user)
    assert fail(admin, job)
    admin.execute("select app.refund_job(%s)", (job,))
    found = buckets(admin, empty_user)
    assert (found[first]["remaining"], found[second]["remaining"]) == (1, 0)
    assert admin.execute("select bucket_id from credit_ledger where idempotency_key = %s",
                         (f"refund:{job}",)).fetchone()["bucket_id"] == first
    assert_invariants(admin, empty_user)


def test_a_refund_into_a_bucket_that_expired_meanwhile_expires_at_once(empty_user, admin, connect):
    bucket = grant(admin, empty_user, 2, DAY)
    job = spend(admin, empty_user)["job_id"]
    pass_time(admin, bucket)
    connect("sg_worker").execute("select app.expire_credit_buckets()")
    assert fail(admin, job)
    rows = admin.execute("select reason, delta from credit_ledger where bucket_id = %s order by created_at, delta",
                         (bucket,)).fetchall()
    # (sorted: this test moved the expiry to before the grant, which real time never does)
    assert sorted((r["reason"], r["delta"]) for r in rows) == [("admin_grant", 2), ("expiry", -1), ("expiry", -1),
                                                                ("refund", 1), ("render", -1)]
    assert balance(admin, empty_user) == 0 == spendable(admin, empty_user)
    assert buckets(admin, empty_user)[bucket]["expired"] == 2
    assert_invariants(admin, empty_user)


# -- renewals and rollover -------------------------------------------------------------------

def renew(admin, uid, tier: str, start: datetime, key: str | None = None) -> bool:
    credits = admin.execute("select credits from plans where tier = %s", (tier,)).fetchone()["credits"]
    return admin.execute(
        "select app.renew_credits(%s, %s, 'renewal', %s, %s, %s, move_period => false, plan_tier => %s) as r",
        (uid, credits, key or f"plan:test:{uid}:{start.timestamp()}", start, start + 30 * DAY, tier)).fetchone()["r"]


def plan_grant(admin, uid, tier: str, period_end: datetime) -> uuid.UUID:
    credits = admin.execute("select credits from plans where tier = %s", (tier,)).fetchone()["credits"]
    key = f"plan:test:{uuid.uuid4()}:initial"
    admin.execute("select * from app.grant_credits(%s, %s, 'plan_grant', %s, expires_at => %s, plan_tier => %s)",
                  (uid, credits, key, period_end, tier))
    return admin.execute("select bucket_id from credit_ledger where idempotency_key = %s", (key,)).fetchone()["bucket_id"]


def test_rollover_is_capped_at_one_allowance_and_happens_once(empty_user, admin):
    boundary = datetime.now(timezone.utc) + 30 * DAY  # Stripe's test clocks run ahead like this
    plan_grant(admin, empty_user, "starter", boundary)
    grant(admin, empty_user, 10, 40 * DAY)
    # an upgrade's difference in the same period: 20 + 80 unused, Starter's cap is 20
    admin.execute("select * from app.grant_credits(%s, 80, 'upgrade_grant', %s, expires_at => %s, plan_tier => 'pro')",
                  (empty_user, f"upgrade:{uuid.uuid4()}", boundary))
    spend(admin, empty_user)  # takes a plan credit (soonest expiry)
    assert renew(admin, empty_user, "starter", boundary)
    assert not renew(admin, empty_user, "starter", boundary)
    rows = admin.execute("select reason, delta, note from credit_ledger where user_id = %s and reason in "
                         "('rollover', 'expiry', 'renewal') order by delta", (empty_user,)).fetchall()
    assert [(r["reason"], r["delta"]) for r in rows] == [("expiry", -80), ("expiry", -19), ("renewal", 20),
                                                          ("rollover", 20)]
    assert "carried 20 of 99" in [r["note"] for r in rows if r["reason"] == "rollover"][0]
    # the operator's 10 are untouched; renewal 20 + rollover 20
    assert balance(admin, empty_user) == 50
    # the rolled credits never roll again: the next renewal carries only the renewal's unused 20
    assert renew(admin, empty_user, "starter", boundary + 30 * DAY)
    rolled = admin.execute("select delta from credit_ledger where user_id = %s and reason = 'rollover' "
                           "order by created_at", (empty_user,)).fetchall()
    assert [r["delta"] for r in rolled] == [20, 20]
    assert_invariants(admin, empty_user)


def test_free_credits_do_not_roll_over(make_user, admin, connect):
    uid = make_user()
    admin.execute("update subscriptions set current_period_end = now() - interval '1 minute' where user_id = %s",
                  (uid,))
    for bucket in buckets(admin, uid):
        pass_time(admin, bucket, timedelta(minutes=1))
    assert connect("sg_worker").execute("select app.renew_free_subscriptions() as n").fetchone()["n"] >= 1
    reasons = admin.execute("select reason, delta from credit_ledger where user_id = %s order by created_at, delta",
                            (uid,)).fetchall()
    assert sorted((r["reason"], r["delta"]) for r in reasons) == [("expiry", -5), ("renewal", 5), ("signup_grant", 5)]
    assert balance(admin, uid) == 5
    assert_invariants(admin, uid)


def test_a_downgrade_keeps_the_granted_buckets_until_they_expire(empty_user, admin):
    period_end = datetime.now(timezone.utc) + 20 * DAY
    plan_grant(admin, empty_user, "pro", period_end)
    pack_like = grant(admin, empty_user, 10, 300 * DAY)
    # the plan becomes Free (cancelled at once): nothing is taken away
    admin.execute("update subscriptions set tier = 'free', subscribed_tier = 'pro', status = 'canceled' "
                  "where user_id = %s", (empty_user,))
    assert spendable(admin, empty_user) == 110
    spend(admin, empty_user)
    with acting_as(admin, empty_user):
        live = admin.execute("select source, remaining, expires_at from app.credit_buckets()").fetchall()
    assert [(b["source"], b["remaining"]) for b in live] == [("plan", 99), ("operator", 10)]
    assert buckets(admin, empty_user)[pack_like]["remaining"] == 10


def test_a_late_renewal_changes_the_same_as_in_order(make_user, admin):
    """Stripe's events arrive in any order: renewals of periods 1 and 2 delivered 2 first end
    with the same balance as in order."""
    start = datetime.now(timezone.utc) + 5 * DAY
    outcomes = []
    for order in ((0, 1), (1, 0)):
        uid = make_user()
        plan_grant(admin, uid, "pro", start)
        for n in order:
            assert renew(admin, uid, "starter" if n == 0 else "pro", start + n * 30 * DAY)
        assert_invariants(admin, uid)
        outcomes.append((balance(admin, uid), spendable(admin, uid)))
    assert outcomes[0] == outcomes[1]


# -- balance at a past moment ----------------------------------------------------------------

def test_balance_at_twenty_past_moments_equals_a_replay_of_the_ledger(empty_user, admin, connect):
    moments = []

    def mark():
        time.sleep(0.02)
        moments.append(admin.execute("select clock_timestamp() as t").fetchone()["t"])
        time.sleep(0.02)

    short = grant(admin, empty_user, 3, DAY)
    mark()
    grant(admin, empty_user, 4, None)
    mark()
    jobs = []
    for _ in range(4):
        jobs.append(spend(admin, empty_user)["job_id"])
        mark()
    fail(admin, jobs[0])
    mark()
    fail(admin, jobs[3])
    mark()
    pass_time(admin, short, timedelta(0))
    mark()  # expired, the job has not run: the balance at this moment already leaves it out
    connect("sg_worker").execute("select app.expire_credit_buckets()")
    mark()
    for _ in range(2):
        grant(admin, empty_user, 2, 5 * DAY)
        mark()
        spend(admin, empty_user)
        mark()
    while len(moments) < 20:
        spend(admin, empty_user) if spendable(admin, empty_user) else grant(admin, empty_user, 1, None)
        mark()
    rows = admin.execute("select delta, created_at from credit_ledger where user_id = %s", (empty_user,)).fetchall()
    with acting_as(admin, empty_user):
        for at in moments:
            replay = sum(r["delta"] for r in rows if r["created_at"] <= at)
            assert admin.execute("select app.credit_balance_at(%s) as b", (at,)).fetchone()["b"] == replay, at
    assert len(moments) == 20


def test_balance_at_needs_a_moment(make_user, admin):
    uid = make_user()
    with pytest.raises(psycopg.Error) as refused:
        with acting_as(admin, uid):
            admin.execute("select app.credit_balance_at('infinity')")
    assert refused.value.sqlstate == "P0422"


# -- concurrency -----------------------------------------------------------------------------

def race(new_connection, uid, calls: int = CONCURRENT_CALLS) -> list:
    conns = [new_connection("sg_app") for _ in range(calls)]

    def one(i):
        with acting_as(conns[i], uid):
            return conns[i].execute("select * from app.spend_credit_and_create_job('tiktok', %s)",
                                    (f"race {i}",)).fetchone()

    return run_concurrently(calls, one)


def test_200_concurrent_spends_take_exactly_the_balance_across_buckets(empty_user, admin, new_connection):
    for amount, expires in ((40, 2 * DAY), (60, 10 * DAY), (80, None)):
        grant(admin, empty_user, amount, expires)
    stale = grant(admin, empty_user, 30, DAY)
    pass_time(admin, stale)  # expired, not yet swept: must never be spent
    results = race(new_connection, empty_user)
    successes = [r for r in results if isinstance(r, dict)]
    refusals = [r for r in results if isinstance(r, psycopg.Error) and r.sqlstate == "P0402"]
    assert len(successes) == 180 and len(refusals) == 20, [r for r in results if r not in successes][:3]
    assert sorted(r["credits_remaining"] for r in successes) == list(range(180))
    assert {b["remaining"] for b in buckets(admin, empty_user).values() if b["id"] != stale} == {0}
    assert buckets(admin, empty_user)[stale]["remaining"] == 30
    assert spendable(admin, empty_user) == 0
    assert_invariants(admin, empty_user)


def test_200_concurrent_spends_draw_in_expiry_order(empty_user, admin, new_connection):
    soon = grant(admin, empty_user, 40, 2 * DAY)
    later = grant(admin, empty_user, 60, 10 * DAY)
    never = grant(admin, empty_user, 300, None)
    results = race(new_connection, empty_user)
    assert all(isinstance(r, dict) for r in results), [r for r in results if not isinstance(r, dict)][:3]
    found = buckets(admin, empty_user)
    assert (found[soon]["remaining"], found[later]["remaining"], found[never]["remaining"]) == (0, 0, 200)
    drawn = admin.execute("select bucket_id, count(*) as n from credit_ledger where user_id = %s and reason = 'render' "
                          "and bucket_id is not null group by bucket_id", (empty_user,)).fetchall()
    assert {r["bucket_id"]: r["n"] for r in drawn if r["bucket_id"] in (soon, later, never)} == \
        {soon: 40, later: 60, never: 100}
    assert_invariants(admin, empty_user)


def test_the_spend_is_still_one_round_trip_with_an_index_pick(empty_user, admin):
    """The bucket pick reads the spend-order index, not every bucket of the account."""
    for n in range(50):
        grant(admin, empty_user, 1, (n + 1) * DAY)
    plan = admin.execute("""explain (format text)
        select c.id from credit_buckets c
         where c.user_id = %s and c.expired_at is null and c.remaining > 0
           and (c.expires_at > now() or c.expires_at is null)
         order by c.expires_at, c.created_at, c.id limit 1""", (empty_user,)).fetchall()
    assert "credit_buckets_open_idx" in "\n".join(r["QUERY PLAN"] for r in plan)


# -- the migration ---------------------------------------------------------------------------

FIRST_OF_OURS = "0070"


def _apply(dsn: str, *, before: str | None) -> None:
    backend = _owner_backend(dsn)
    try:
        with backend.lock():
            pending = backend.to_apply(read_migrations(str(MIGRATIONS_DIR)))
            backend.apply_migrations(pending.filter(lambda m: before is None or m.id < before))
    finally:
        backend.connection.close()


def _roll_back_ours(dsn: str) -> None:
    """Roll back 0070 and later; the business layer goes first (migrate rebuilds it), as
    web.migrate.rollback_all does, since its functions use the tables' row types."""
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("set local role sg_owner")
        conn.execute("drop schema if exists reporting cascade")
        conn.execute("drop schema if exists app cascade")
    backend = _owner_backend(dsn)
    try:
        with backend.lock():
            done = backend.to_rollback(read_migrations(str(MIGRATIONS_DIR)))
            backend.rollback_migrations(done.filter(lambda m: m.id >= FIRST_OF_OURS))
    finally:
        backend.connection.close()


SUMS = """select s.user_id, s.credits_remaining, (select coalesce(sum(l.delta), 0)::int from credit_ledger l
                                                where l.user_id = s.user_id) as ledger
            from subscriptions s order by s.user_id"""


def test_existing_balances_become_buckets_and_every_sum_is_unchanged():
    with throwaway_database("sg_bucketmig") as dsn:
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as admin:
            _run_sql_file(admin, ROLES_FILE)
            _apply(dsn, before=FIRST_OF_OURS)
            period_end = datetime(2027, 1, 5, tzinfo=timezone.utc)
            users = {}
            for label, tier, history in (("free", "free", [5, -2]), ("paid", "starter", [5, 20, -4, 3]),
                                         ("empty", "free", [5, -5])):
                uid = admin.execute("insert into users (email, password_hash) values (%s, %s) returning id",
                                    (f"{label}@example.com", PASSWORD_HASH)).fetchone()["id"]
                admin.execute("insert into subscriptions (user_id, tier, credits_total, credits_remaining, "
                              "current_period_end) values (%s, %s, %s, %s, %s)",
                              (uid, tier, sum(d for d in history if d > 0), sum(history), period_end))
                for n, delta in enumerate(history):
                    admin.execute("insert into credit_ledger (user_id, delta, reason, idempotency_key) "
                                  "values (%s, %s, %s, %s)",
                                  (uid, delta, "admin_grant" if delta > 0 else "render", f"old:{uid}:{n}"))
                users[label] = uid
            before = admin.execute(SUMS).fetchall()

            migrate(dsn, environ={})
            assert admin.execute(SUMS).fetchall() == before
            found = admin.execute("select user_id, source, amount, remaining, expires_at, plan_tier "
                                  "from credit_buckets").fetchall()
            assert sorted((r["user_id"], r["amount"], r["plan_tier"]) for r in found) == sorted(
                [(users["free"], 3, None), (users["paid"], 24, "starter")])
            assert {(r["source"], r["expires_at"]) for r in found} == {("opening", period_end)}
            # bucket-less history sums to zero per account, so Σ ledger = Σ buckets from here on
            assert admin.execute("select count(*) as n from (select user_id from credit_ledger where bucket_id is null "
                                 "group by user_id having sum(delta) <> 0) x").fetchone()["n"] == 0
            for uid in users.values():
                admin.execute("update users set is_verified = true where id = %s", (uid,))
                assert_invariants(admin, uid)
            # the opening bucket is spent like any other
            with acting_as(admin, users["paid"]):
                job = admin.execute("select job_id from app.spend_credit_and_create_job('tiktok', 'after')"
                                    ).fetchone()["job_id"]
            assert drawn_from(admin, job) is not None
            assert_invariants(admin, users["paid"])
            after_spend = admin.execute(SUMS).fetchall()

            # rolled back, every balance is what it was; applied again, it is bucketed again
            _roll_back_ours(dsn)
            assert admin.execute(SUMS).fetchall() == after_spend
            assert admin.execute("select to_regclass('credit_buckets') as t").fetchone()["t"] is None
            migrate(dsn, environ={})
            assert admin.execute(SUMS).fetchall() == after_spend
            for uid in users.values():
                assert_invariants(admin, uid)


# -- the closing note's statement ----------------------------------------------------------------

def test_one_accounts_statement_over_two_periods(make_user, admin, connect, capsys):
    """Grant, spends, a pack, a failed video refunded, the renewal's rollover and expiry, and
    the pack's credits outliving the period: every movement on the statement, each with its
    bucket and the running balance (printed for the issue's closing note: pytest -s)."""
    uid = make_user()
    start = datetime.now(timezone.utc)
    first_end = start + timedelta(hours=2)  # the periods are short so the test can see them end
    plan_grant(admin, uid, "starter", first_end)
    admin.execute("select app._grant_pack(%s, 'pack_10', 500, 'usd', 'cs_statement', 'cs_statement', "
                  "'pi_statement', null)", (uid,))
    jobs = [spend(admin, uid)["job_id"] for _ in range(8)]  # the plan's credits expire first
    assert fail(admin, jobs[-1])                              # a render fails: back into its bucket
    assert renew(admin, uid, "starter", first_end, key=f"plan:statement:{uid}:2")
    for _ in range(3):  # the rolled-over credits are as old as the plan's: spent first
        spend(admin, uid)
    # the second renewal: what rolled over once does not roll again
    assert renew(admin, uid, "starter", first_end + PERIOD, key=f"plan:statement:{uid}:3")
    with acting_as(admin, uid):
        rows = admin.execute("select * from app.credit_movements()").fetchall()
    from web.credits import describe

    lines = [f"{r['created_at']:%H:%M:%S} {r['reason']:<13} {r['delta']:>+4} = {r['balance_after']:>3}  "
             f"{(r['bucket_source'] or ''):<8} {describe(r)}" for r in rows]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    # (one transaction's movements share a moment; the statement lists them debits first)
    moved = sorted(((r["created_at"], r["delta"], r["reason"]) for r in rows if r["reason"] != "render"))
    assert [(reason, delta) for _, delta, reason in moved] == [
        ("signup_grant", 5), ("plan_grant", 20), ("pack_grant", 10), ("refund", 1),
        ("expiry", -13), ("rollover", 13), ("renewal", 20),
        ("expiry", -20), ("expiry", -10), ("renewal", 20), ("rollover", 20)]
    # the welcome credits (a month) and the pack (a year) outlive both plan periods
    assert rows[-1]["balance_after"] == 5 + 10 + 20 + 20
    assert_invariants(admin, uid)
