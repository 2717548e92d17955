"""Reporting views at scale: 100k users, 1M usage rows, 1M ledger rows (generated in SQL),
each view queried as sg_analyst. Prints the median of 3 timings per query."""
from __future__ import annotations

import statistics
import time

import psycopg

from web.config import role_dsn

from .common import bench_database

USERS = 100_000
PER_USER = 10  # usage and ledger rows per user: 1M each
QUERIES = {
    "daily_signups": "select * from reporting.daily_signups",
    "paid_conversions": "select * from reporting.paid_conversions",
    "mrr": "select * from reporting.mrr",
    "revenue": "select * from reporting.revenue",
    "credit_flow": "select * from reporting.credit_flow",
    "job_outcomes": "select * from reporting.job_outcomes",
    "user_summary (one user)": "select * from reporting.user_summary where user_id = %(uid)s",
    "user_summary (top 100 active)": "select * from reporting.user_summary order by last_active desc nulls last limit 100",
    "user_summary (avg credits, all)": "select tier, count(*), avg(credits_remaining) from reporting.user_summary group by tier",
}

FILL = f"""
set session_replication_role = replica;  -- bulk load: skip FK triggers (the ledger's guard only refuses updates)
insert into users (id, email, password_hash, created_at, last_login)
  select gen_random_uuid(), 'bench' || n || '@example.com', '$argon2id$bench', now() - (n % 365) * interval '1 day',
         now() - (n % 30) * interval '1 day'
    from generate_series(1, {USERS}) n;
insert into subscriptions (user_id, tier, status, credits_total, credits_remaining)
  select id, (array['free','free','free','starter','pro','agency'])[1 + (abs(hashtext(id::text)) % 6)], 'active', 5, 5
    from users;
insert into jobs (user_id, platform, topic, status, tier_at_creation, created_at, started_at, finished_at)
  select u.id, (array['tiktok','youtube_shorts','instagram_reels'])[1 + g % 3], 'bench topic',
         (array['completed','completed','completed','failed'])[1 + g % 4], 'free',
         now() - (g % 365) * interval '1 day', now() - (g % 365) * interval '1 day',
         now() - (g % 365) * interval '1 day' + interval '3 seconds'
    from users u, generate_series(1, 2) g;
-- what app.login_succeeded and app.spend_credit_and_create_job keep beside the balance
update subscriptions s set last_active_at = greatest(u.last_login, newest.created_at)
  from users u, (select user_id, max(created_at) as created_at from jobs group by user_id) newest
 where u.id = s.user_id and newest.user_id = s.user_id;
-- the ledger is append-only and stamped at insert, so it lies on disk in time order
insert into credit_ledger (user_id, delta, reason, idempotency_key, created_at)
  select u.id, case when g = 1 then 5 else -1 end, case when g = 1 then 'signup_grant' else 'render' end,
         'bench:' || u.id || ':' || g, now() - (g * 7 % 365) * interval '1 day'
    from users u, generate_series(1, {PER_USER}) g
   order by 5;
insert into usage_logs (user_id, action, credits_used, created_at)
  select u.id, 'video_generation', 1, now() - (g * 7 % 365) * interval '1 day'
    from users u, generate_series(1, {PER_USER}) g;
insert into stripe_events (id, type, payload, processed_at)
  select 'evt_bench_' || n || '_' || t, t,
         jsonb_build_object('id', 'evt_bench_' || n || '_' || t, 'type', t,
                            'created', extract(epoch from now() - (n % 365) * interval '1 day')::bigint,
                            'data', jsonb_build_object('object', jsonb_build_object(
                              'id', 'in_' || n, 'amount_paid', 900,
                              'metadata', jsonb_build_object('user_id', n::text, 'tier', 'starter')))),
         now()
    from generate_series(1, 20000) n, unnest(array['checkout.session.completed', 'invoice.paid']) t;
set session_replication_role = origin;
analyze;
"""


def _median_ms(conn: psycopg.Connection, sql: str, params: dict) -> tuple[float, int]:
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        result = conn.execute(sql, params).fetchall()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings), len(result)


def run() -> list[dict]:
    rows = []
    with bench_database("sg_report_bench") as dsn:
        started = time.perf_counter()
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(FILL)
            uid = admin.execute("select id from users limit 1").fetchone()[0]
            counts = admin.execute("select (select count(*) from usage_logs), (select count(*) from credit_ledger), "
                                   "(select count(*) from jobs)").fetchone()
            # autovacuum's work after a bulk load (visibility map, BRIN summaries), done now
            admin.execute("vacuum analyze")
        fill = time.perf_counter() - started
        with psycopg.connect(role_dsn(dsn, "sg_analyst")) as analyst:
            unrolled_ms, _ = _median_ms(analyst, QUERIES["credit_flow"], {})
        # what the worker's daily schedule does (worker/main.py)
        with psycopg.connect(role_dsn(dsn, "sg_worker"), autocommit=True) as worker:
            started = time.perf_counter()
            worker.execute("select app.roll_up_reporting()")
            rollup = time.perf_counter() - started
        with psycopg.connect(role_dsn(dsn, "sg_analyst")) as analyst:
            for name, sql in QUERIES.items():
                ms, count = _median_ms(analyst, sql, {"uid": uid})
                rows.append({"view": name, "rows": count, "median ms": f"{ms:.1f}", "goal": "< 200 ms"})
    rows.append({"view": "credit_flow before the first daily roll-up (whole ledger)", "median ms": f"{unrolled_ms:.1f}"})
    rows.append({"view": f"(data: {USERS} users, {counts[0]} usage, {counts[1]} ledger, {counts[2]} jobs; "
                         f"generated in {fill:.1f} s; daily roll-up took {rollup:.1f} s)"})
    return rows


if __name__ == "__main__":
    from .common import table

    print(table(run()))
