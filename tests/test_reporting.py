"""The analysts' reporting views, as sg_analyst, against a hand-built fixture in a
database of their own (3 signups, 1 conversion to Starter, a few renders)."""
from __future__ import annotations

import json
import time
from datetime import date, timezone
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
            admin.execute("select * from app.claim_job(%s)", (jobs[0],))
            admin.execute("update jobs set started_at = now() - interval '2 seconds' where id = %s", (jobs[0],))
            admin.execute("select app.complete_job(%s, '/media/x.mp4')", (jobs[0],))
            admin.execute("select app.fail_job(%s, 'broken')", (jobs[1],))
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
