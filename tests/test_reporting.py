"""The analysts' reporting views, as sg_analyst, against a hand-built fixture in a
database of their own (3 signups, 1 conversion to Starter, a few renders)."""
from __future__ import annotations

import json
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import psycopg
import pytest
from psycopg.rows import dict_row

from web.config import role_dsn
from web.migrate import migrate

from .conftest import PASSWORD_HASH, acting_as, throwaway_database, unique_email

VIEWS = ["daily_signups", "paid_conversions", "mrr", "revenue", "credit_flow", "job_outcomes", "user_summary"]
BASE_TABLES = ["users", "subscriptions", "api_keys", "usage_logs", "credit_ledger", "jobs", "stripe_events",
               "refresh_tokens", "login_attempts", "browser_sessions", "plans", "pgqueuer", "credit_flow_days",
               "reporting_rollups"]


@pytest.fixture(scope="module")
def reporting_db():
    with throwaway_database("sg_report") as dsn:
        migrate(dsn, environ={"STRIPE_PRICE_STARTER": "price_starter_report"})
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as admin:
            users = [admin.execute("select id from app.signup(%s, %s, null)",
                                   (f"analyst-fixture-{n}@example.com", PASSWORD_HASH)).fetchone()["id"]
                     for n in range(3)]
            # confirmed addresses: an unconfirmed one spends only one credit
            admin.execute("update users set is_verified = true where id = any(%s)", (users,))
            # user 0 buys Starter through a (stored, applied) Stripe checkout + first invoice
            now = int(time.time())
            admin.execute("update subscriptions set stripe_customer_id = 'cus_report' where user_id = %s", (users[0],))
            events = [
                {"id": "evt_report_checkout", "type": "checkout.session.completed", "created": now,
                 "data": {"object": {"customer": "cus_report", "subscription": "sub_report",
                                     "metadata": {"user_id": str(users[0]), "tier": "starter"}}}},
                {"id": "evt_report_invoice", "type": "invoice.paid", "created": now,
                 "data": {"object": {"id": "in_report", "customer": "cus_report", "subscription": "sub_report",
                                     "billing_reason": "subscription_create", "amount_paid": 900, "status": "paid",
                                     "lines": {"data": [{"price": {"id": "price_starter_report"},
                                                         "period": {"start": now, "end": now + 2592000}}]}}}},
                # Stripe's second event for the same invoice: revenue counts it once
                {"id": "evt_report_invoice_again", "type": "invoice.payment_succeeded", "created": now,
                 "data": {"object": {"id": "in_report", "customer": "cus_report", "subscription": "sub_report",
                                     "billing_reason": "subscription_create", "amount_paid": 900, "status": "paid",
                                     "lines": {"data": [{"price": {"id": "price_starter_report"},
                                                         "period": {"start": now, "end": now + 2592000}}]}}}},
            ]
            for event in events:
                admin.execute("select app.record_stripe_event(%s, %s, %s)", (event["id"], event["type"], json.dumps(event)))
                assert admin.execute("select app.apply_stripe_event(%s) as o", (event["id"],)).fetchone()["o"] == "applied"
            # the worker's re-read of the subscription from Stripe sets the plan
            admin.execute("select app.apply_stripe_subscription(%s, now())", (json.dumps(
                {"id": "sub_report", "object": "subscription", "customer": "cus_report", "status": "active",
                 "items": {"data": [{"price": {"id": "price_starter_report"}, "current_period_start": now,
                                     "current_period_end": now + 2592000}]}}),))
            # user 1 makes two videos: one completes in 2 s, one fails (and is refunded)
            jobs = []
            for topic in ("finished topic", "failed topic"):
                with acting_as(admin, users[1]):
                    jobs.append(admin.execute("select job_id from app.spend_credit_and_create_job('tiktok', %s)",
                                              (topic,)).fetchone()["job_id"])
            for job in jobs:
                admin.execute("select * from app.claim_job(%s)", (job,))
            admin.execute("update jobs set started_at = now() - interval '2 seconds' where id = %s", (jobs[0],))
            assert admin.execute("select app.complete_job(%s, 1, '/media/x.mp4') as done", (jobs[0],)).fetchone()["done"]
            assert admin.execute("select app.fail_job(%s, 1, 'broken') as done", (jobs[1],)).fetchone()["done"]
        yield dsn, users


@pytest.fixture(scope="module")
def analyst(reporting_db):
    dsn, _ = reporting_db
    with psycopg.connect(role_dsn(dsn, "sg_analyst"), autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.mark.parametrize("view", VIEWS)
def test_every_view_is_readable_by_the_analyst(analyst, view):
    analyst.execute(f"select * from reporting.{view}").fetchall()


@pytest.mark.parametrize("table", BASE_TABLES)
def test_no_base_table_is(analyst, table):
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        analyst.execute(f"select 1 from public.{table} limit 1")


def test_analyst_cannot_write_or_create(analyst):
    for statement in ("create table reporting.mine (x int)", "create view reporting.mine as select 1",
                      "create table public.mine (x int)"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            analyst.execute(statement)


def test_views_expose_no_secrets_or_contact_details(analyst):
    columns = {r["column_name"] for r in analyst.execute(
        "select column_name from information_schema.columns where table_schema = 'reporting'")}
    assert not columns & {"email", "password_hash", "key_hash", "token_hash", "payload"}
    text = json.dumps(analyst.execute("select * from reporting.user_summary").fetchall(), default=str)
    assert "@example.com" not in text


def test_figures_match_the_fixture(analyst, reporting_db):
    _, users = reporting_db
    today = date.today()
    q = lambda sql: analyst.execute(sql).fetchall()  # noqa: E731
    assert q("select day, signups from reporting.daily_signups") == [{"day": today, "signups": 3}]
    assert q("select day, tier, conversions from reporting.paid_conversions") == [
        {"day": today, "tier": "starter", "conversions": 1}]
    assert q("select tier, subscribers, mrr_cents from reporting.mrr") == [
        {"tier": "starter", "subscribers": 1, "mrr_cents": 900}]
    assert q("select month, revenue_cents from reporting.revenue") == [
        {"month": today.replace(day=1), "revenue_cents": 900}]
    flow = {r["reason"]: r["credits"] for r in q("select reason, credits from reporting.credit_flow")}
    assert flow == {"signup_grant": 15, "plan_grant": 20, "render": -2, "refund": 1}
    outcomes = q("select platform, completed, failed, avg_render_seconds from reporting.job_outcomes")
    assert len(outcomes) == 1 and outcomes[0]["platform"] == "tiktok"
    assert (outcomes[0]["completed"], outcomes[0]["failed"]) == (1, 1)
    assert 1.5 <= float(outcomes[0]["avg_render_seconds"]) <= 3
    summary = {r["user_id"]: r for r in q("select * from reporting.user_summary")}
    assert summary[users[0]]["tier"] == "starter" and summary[users[0]]["credits_remaining"] == 25
    assert summary[users[1]]["videos_made"] == 1 and summary[users[1]]["credits_remaining"] == 4
    assert summary[users[2]]["last_active"] is None
    # the weekly report's "average credits per user"
    assert q("select round(avg(credits_remaining), 2) as avg from reporting.user_summary")[0]["avg"] == \
        Decimal("11.33")  # (25 + 4 + 5) / 3


def test_last_active_is_the_newest_job_or_login(analyst, reporting_db):
    dsn, users = reporting_db
    with psycopg.connect(dsn) as admin:
        newest_job = admin.execute("select max(created_at) from jobs where user_id = %s", (users[1],)).fetchone()[0]
    top = analyst.execute("select user_id, last_active, videos_made from reporting.user_summary "
                          "order by last_active desc nulls last limit 2").fetchall()
    assert top[0] == {"user_id": users[1], "last_active": newest_job, "videos_made": 1}


def test_daily_roll_up_keeps_credit_flow_exact():
    """The worker's daily roll-up moves finished days out of the live aggregate; the
    view's figures stay the same, and a second run changes nothing."""
    with throwaway_database("sg_rollup") as dsn:
        migrate(dsn, environ={})
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as admin, \
                psycopg.connect(role_dsn(dsn, "sg_worker"), autocommit=True) as worker, \
                psycopg.connect(role_dsn(dsn, "sg_analyst"), autocommit=True, row_factory=dict_row) as analyst:
            user = admin.execute("select id from app.signup('rollup@example.com', %s, null)",
                                 (PASSWORD_HASH,)).fetchone()["id"]
            # history on earlier days (the ledger refuses changes, not inserts of the past)
            for n, (days_ago, reason, delta) in enumerate([(3, "admin_grant", 7), (3, "render", -1),
                                                            (1, "render", -2), (0, "render", -1)]):
                admin.execute("insert into credit_ledger (user_id, delta, reason, idempotency_key, created_at) "
                              "values (%s, %s, %s, %s, now() - %s * interval '1 day')",
                              (user, delta, reason, f"rollup:{n}", days_ago))
            flow = "select day, reason, credits from reporting.credit_flow order by day, reason"
            before = analyst.execute(flow).fetchall()
            assert len(before) == 5  # 3 days ago: grant + render; yesterday: render; today: signup + render

            watermark = worker.execute("select app.roll_up_reporting()").fetchone()[0]
            assert analyst.execute(flow).fetchall() == before
            rolled = admin.execute("select day, reason, credits from credit_flow_days order by day, reason").fetchall()
            expected = [row for row in before if row["day"] < watermark.astimezone(timezone.utc).date()]
            assert rolled == expected and len(rolled) >= 2

            assert worker.execute("select app.roll_up_reporting()").fetchone()[0] == watermark
            assert admin.execute("select count(*) as n from credit_flow_days").fetchone()["n"] == len(rolled)
            assert analyst.execute(flow).fetchall() == before


def test_signing_in_counts_as_activity(new_connection, connect):
    """last_active is the later of the last sign-in and the last video request."""
    admin = connect("postgres")
    email = unique_email("active")
    user = admin.execute("select id from app.signup(%s, %s, null)", (email, PASSWORD_HASH)).fetchone()["id"]
    web = new_connection("sg_app")
    with web.transaction():
        attempt = web.execute("select * from app.login_attempt(%s, null)", (email,)).fetchone()
        web.execute("select app.login_succeeded(%s, %s, %s)", (attempt["attempt_id"], user, attempt["session_version"]))
    last_login, last_active = admin.execute(
        "select u.last_login, s.last_active_at from users u join subscriptions s on s.user_id = u.id "
        "where u.id = %s", (user,)).fetchone().values()
    assert last_active is not None and last_active == last_login


GROUND_TRUTH = """select (created_at at time zone 'UTC')::date as day, reason, sum(delta)::bigint as credits
                    from credit_ledger group by 1, 2 order by 1, 2"""
FLOW = "select day, reason, credits from reporting.credit_flow order by day, reason"


def test_a_transaction_that_commits_after_its_day_was_rolled_up_is_still_counted():
    """The ledger stamps a row with its transaction's start, so a transaction open across
    midnight commits rows into a day the roll-up may already have summed. The view counts
    them at once (it reads the last two finished days from the ledger), and the next run
    re-sums those days into the rolled-up table."""
    with throwaway_database("sg_late") as dsn:
        migrate(dsn, environ={})
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as admin, \
                psycopg.connect(role_dsn(dsn, "sg_worker"), autocommit=True) as worker, \
                psycopg.connect(role_dsn(dsn, "sg_analyst"), autocommit=True, row_factory=dict_row) as analyst:
            user = admin.execute("select id from app.signup('late@example.com', %s, null)",
                                 (PASSWORD_HASH,)).fetchone()["id"]
            for n, days_ago in enumerate([6, 4, 3, 2, 1]):
                admin.execute("insert into credit_ledger (user_id, delta, reason, idempotency_key, created_at) "
                              "values (%s, -1, 'render', %s, now() - %s * interval '1 day')", (user, f"late:{n}", days_ago))
            # yesterday's run, as the worker's schedule made it
            yesterday = worker.execute("select app.roll_up_reporting(now() - interval '1 day')").fetchone()[0]
            assert analyst.execute(FLOW).fetchall() == admin.execute(GROUND_TRUTH).fetchall()

            # a transaction that began a minute before that run's watermark commits only now
            admin.execute("insert into credit_ledger (user_id, delta, reason, idempotency_key, created_at) "
                          "values (%s, 7, 'admin_grant', 'late:open-across-midnight', %s - interval '1 minute')",
                          (user, yesterday))
            late_day = (yesterday - timedelta(minutes=1)).astimezone(timezone.utc).date()
            truth = admin.execute(GROUND_TRUTH).fetchall()
            assert {"day": late_day, "reason": "admin_grant", "credits": 7} in truth
            assert analyst.execute(FLOW).fetchall() == truth

            # today's run re-sums that day into the table, and the view still adds up
            today = worker.execute("select app.roll_up_reporting()").fetchone()[0]
            assert today > yesterday
            rolled = admin.execute("select credits from credit_flow_days where day = %s and reason = 'admin_grant'",
                                   (late_day,)).fetchone()
            assert rolled == {"credits": 7}
            assert analyst.execute(FLOW).fetchall() == truth
            # the rolled-up table itself equals the ledger for every finished day
            finished = [r for r in truth if r["day"] < today.astimezone(timezone.utc).date()]
            assert admin.execute("select day, reason, credits from credit_flow_days order by day, reason"
                                 ).fetchall() == finished
            # a run "in the future" is a run now: the watermark cannot pass today
            assert worker.execute("select app.roll_up_reporting(now() + interval '5 days')").fetchone()[0] == today


def test_conversions_count_each_users_first_paid_subscription_once():
    """One conversion per user ever: the earliest applied checkout, on its day, for the plan
    it bought. Re-subscribing later, a second checkout the same day, an upgrade (no
    checkout) and a checkout that failed to apply are not conversions."""
    with throwaway_database("sg_conv") as dsn:
        migrate(dsn, environ={})
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as admin, \
                psycopg.connect(role_dsn(dsn, "sg_analyst"), autocommit=True, row_factory=dict_row) as analyst:
            users = [str(admin.execute("select id from app.signup(%s, %s, null)",
                                       (f"conv-{n}@example.com", PASSWORD_HASH)).fetchone()["id"]) for n in range(4)]
            day = 86400
            start = int(time.time()) // day * day - 10 * day + 3600  # 01:00 UTC ten days ago

            def event(n: int, kind: str, user: str, tier: str, at: int, processed: bool = True) -> None:
                payload = {"id": f"evt_conv_{n}", "type": kind, "created": at,
                           "data": {"object": {"id": f"obj_{n}", "metadata": {"user_id": user, "tier": tier}}}}
                admin.execute("insert into stripe_events (id, type, payload, processed_at) values (%s, %s, %s, %s)",
                              (payload["id"], kind, json.dumps(payload), "now()" if processed else None))

            event(1, "checkout.session.completed", users[0], "starter", start)               # converts on day 0
            event(2, "checkout.session.completed", users[0], "pro", start + 5 * day)         # re-subscribes: no
            event(3, "checkout.session.completed", users[1], "pro", start + 2 * day)         # converts on day 2
            event(4, "checkout.session.completed", users[1], "pro", start + 2 * day + 60)    # same day again: no
            event(5, "customer.subscription.updated", users[1], "agency", start + 3 * day)   # upgrade: no
            event(6, "checkout.session.completed", users[2], "starter", start + 2 * day, processed=False)
            event(7, "checkout.session.completed", users[3], "starter", start + 2 * day + 120)  # converts on day 2
            rows = analyst.execute("select day, tier, conversions from reporting.paid_conversions "
                                   "order by day, tier").fetchall()
    first_day = datetime.fromtimestamp(start, timezone.utc).date()
    assert rows == [{"day": first_day, "tier": "starter", "conversions": 1},
                    {"day": first_day + timedelta(days=2), "tier": "pro", "conversions": 1},
                    {"day": first_day + timedelta(days=2), "tier": "starter", "conversions": 1}]


SECRET_COLUMNS = ["users.email", "users.password_hash", "users.full_name", "api_keys.key_hash",
                  "refresh_tokens.token_hash", "stripe_events.payload", "browser_sessions.token_hash",
                  "email_tokens.token_hash", "credit_ledger.stripe_event_id"]


@pytest.mark.parametrize("column", SECRET_COLUMNS)
def test_the_reporting_owner_cannot_read_secrets_or_payloads(connect, column):
    """sg_reporting (which the views run as) has SELECT on the columns they use only."""
    table, name = column.split(".")
    admin = connect("postgres")
    with pytest.raises(psycopg.Error) as raised:
        with admin.transaction():
            admin.execute("set local role sg_reporting")
            admin.execute(f"select {name} from public.{table} limit 1")
    assert raised.value.sqlstate == "42501"


def test_the_reporting_owner_reads_what_the_views_use(connect):
    admin = connect("postgres")
    with admin.transaction():
        admin.execute("set local role sg_reporting")
        admin.execute("select id, created_at from public.users limit 1")
        admin.execute("select event_id, created, amount_paid, user_ref, tier from app.stripe_event_facts limit 1")
        for view in VIEWS:
            admin.execute(f"select * from reporting.{view} limit 1")
    for role in ("sg_app", "sg_worker", "sg_analyst"):
        with pytest.raises(psycopg.Error) as raised:
            connect(role).execute("select * from app.stripe_event_facts limit 1")
        assert raised.value.sqlstate == "42501"
