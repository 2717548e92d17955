"""The design at 10x today's data:

  reporting   every reporting view as sg_analyst, after the daily roll-up, at 1M users and
              10M ledger rows (goal: each < 200 ms)
  spend       app.spend_credit_and_create_job under pgbench (sg_app, 10,000 accounts, 8
              clients) on a database that also holds 10M ledger rows, against the same
              run on an empty one (goal: within 10 %)
  hot         POST /v1/shorts/generate with every request on 1 account, against the same
              load spread over 10,000 accounts (API keys, one gunicorn)

BENCH_SCALE (default 1.0) shrinks the data for a quick look (0.01 = 10k users, 100k rows).
"""
from __future__ import annotations

import os
import re
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from web.config import role_dsn
from web.identity import sha256

from .common import bench_database, live_server, lua_cycle, lua_tokens, server_cpu, wrk

SCALE = float(os.environ.get("BENCH_SCALE", "1.0"))
USERS = max(1000, int(1_000_000 * SCALE))
PER_USER = 10  # ledger (and usage) rows per user: 10M at full scale
SPENDERS = 10_000
PGBENCH_CLIENTS = 8
PGBENCH_SECONDS = int(os.environ.get("BENCH_SECONDS", "5")) * 2
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))

QUERIES = {
    "daily_signups": "select * from reporting.daily_signups",
    "paid_conversions": "select * from reporting.paid_conversions",
    "mrr": "select * from reporting.mrr",
    "revenue": "select * from reporting.revenue",
    "credit_flow": "select * from reporting.credit_flow",
    "job_outcomes": "select * from reporting.job_outcomes",
    "user_summary (one user)": "select * from reporting.user_summary where user_id = %(uid)s",
    "user_summary (top 100 active)": "select * from reporting.user_summary order by last_active desc nulls last limit 100",
    "user_summary (avg credits by tier)": "select tier, count(*), avg(credits_remaining) from reporting.user_summary group by tier",
}

# 1M users with a year of history, written in bulk as the owner (the functions' checks are
# what the other benchmarks and the tests exercise; this is about volume)
FILL = """
set session_replication_role = replica;  -- bulk load: skip FK triggers (the ledger's guard only refuses updates)
insert into users (id, email, password_hash, created_at, last_login)
  select gen_random_uuid(), 'bulk' || n || '@example.com', '$argon2id$bench', now() - (n % 365) * interval '1 day',
         now() - (n % 30) * interval '1 day'
    from generate_series(1, {users}) n;
insert into subscriptions (user_id, tier, status, credits_total, credits_remaining)
  select id, (array['free','free','free','starter','pro','agency'])[1 + (abs(hashtext(id::text)) % 6)], 'active', 15,
         15 - ({per_user} - 1)
    from users where email like 'bulk%';
insert into jobs (user_id, platform, topic, status, tier_at_creation, created_at, started_at, finished_at)
  select u.id, (array['tiktok','youtube_shorts','instagram_reels'])[1 + g % 3], 'bench topic',
         (array['completed','completed','completed','failed'])[1 + g % 4], 'free',
         now() - (g % 365) * interval '1 day', now() - (g % 365) * interval '1 day',
         now() - (g % 365) * interval '1 day' + interval '3 seconds'
    from users u, generate_series(1, 2) g where u.email like 'bulk%';
update subscriptions s set last_active_at = greatest(u.last_login, newest.created_at)
  from users u, (select user_id, max(created_at) as created_at from jobs group by user_id) newest
 where u.id = s.user_id and newest.user_id = s.user_id;
-- the ledger is append-only and stamped at insert, so it lies on disk in time order
insert into credit_ledger (user_id, delta, reason, idempotency_key, created_at)
  select u.id, case when g = 1 then 15 else -1 end, case when g = 1 then 'signup_grant' else 'render' end,
         'bulk:' || u.id || ':' || g, now() - (365 - g * 30) * interval '1 day'
    from users u, generate_series(1, {per_user}) g where u.email like 'bulk%'
   order by 5;
insert into usage_logs (user_id, action, credits_used, created_at)
  select u.id, 'video_generation', 1, now() - (365 - g * 30) * interval '1 day'
    from users u, generate_series(1, {per_user}) g where u.email like 'bulk%';
insert into stripe_events (id, type, payload, processed_at)
  select 'evt_bulk_' || n || '_' || t, t,
         jsonb_build_object('id', 'evt_bulk_' || n || '_' || t, 'type', t,
                            'created', extract(epoch from now() - (n % 365) * interval '1 day')::bigint,
                            'data', jsonb_build_object('object', jsonb_build_object('id', 'in_' || n))),
         now()
    from generate_series(1, {users} / 50) n, unnest(array['checkout.session.completed', 'invoice.paid']) t;
set session_replication_role = origin;
"""

# the accounts the spend benchmarks use, made through the functions the service uses
SPENDERS_SQL = """
create table bench_spenders (n integer primary key, user_id uuid not null);
grant select on bench_spenders to sg_app;
insert into bench_spenders
  select n, (app.signup('spender' || n || '@example.com', '$argon2id$bench')).id from generate_series(1, {count}) n;
update users set is_verified = true where id in (select user_id from bench_spenders);
update subscriptions set tier = 'pro' where user_id in (select user_id from bench_spenders);
select app.grant_credits(user_id, 1000000, 'admin_grant', 'bench:spender:' || n) from bench_spenders;
"""

PGBENCH_SCRIPT = """\\set n random(1, {count})
begin;
select set_config('app.user_id', (select user_id::text from bench_spenders where n = :n), true);
select job_id from app.spend_credit_and_create_job('tiktok', 'the history of coffee', '{{"duration_seconds": 20}}');
commit;
"""


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def _fill(dsn: str) -> dict:
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(FILL.format(users=USERS, per_user=PER_USER))
        admin.execute("vacuum analyze")  # autovacuum's work after a bulk load, done now
        counts = admin.execute("select (select count(*) from users), (select count(*) from credit_ledger), "
                               "(select count(*) from usage_logs), (select count(*) from jobs)").fetchone()
    return {"users": counts[0], "ledger": counts[1], "usage": counts[2], "jobs": counts[3],
            "seconds": time.perf_counter() - started}


def _spenders(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(SPENDERS_SQL.format(count=SPENDERS))
        admin.execute("vacuum analyze")


def _pgbench(dsn: str, script: Path) -> float:
    """Transactions per second of the spend script as sg_app (prepared statements)."""
    out = subprocess.run(["pgbench", "-n", "-M", "prepared", "-c", str(PGBENCH_CLIENTS), "-j", "2",
                          "-T", str(PGBENCH_SECONDS), "-f", str(script), role_dsn(dsn, "sg_app")],
                         capture_output=True, text=True, check=True).stdout
    failed = re.search(r"number of failed transactions: (\d+)", out)
    if failed and int(failed.group(1)):
        raise RuntimeError(out)
    return float(re.search(r"tps = ([\d.]+)", out).group(1))


def _median_ms(conn: psycopg.Connection, sql: str, params: dict) -> float:
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        conn.execute(sql, params).fetchall()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def _api_keys(dsn: str, count: int) -> list[str]:
    """One API key for each of the first `count` spenders (stored as the service stores them)."""
    keys = []
    with psycopg.connect(dsn, autocommit=True) as admin:
        spenders = [row[0] for row in admin.execute("select user_id from bench_spenders order by n limit %s", (count,))]
        with admin.cursor() as cur:
            rows = []
            for uid in spenders:
                key = "sk_" + secrets.token_urlsafe(32)
                keys.append(key)
                rows.append((uid, key[:10], sha256(key)))
            cur.executemany("insert into api_keys (user_id, name, prefix, key_hash) values (%s, 'bench', %s, %s)", rows)
    return keys


def run() -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "spend.sql"
        script.write_text(PGBENCH_SCRIPT.format(count=SPENDERS))
        with bench_database("sg_scale_empty") as empty, bench_database("sg_scale_full") as full:
            data = _fill(full)
            for dsn in (empty, full):
                _spenders(dsn)
            # -- spend on an empty database and beside 10M ledger rows, alternating
            _pgbench(empty, script), _pgbench(full, script)  # warm-up
            pairs = [(_pgbench(empty, script), _pgbench(full, script)) for _ in range(ROUNDS)]
            empty_tps = statistics.median(e for e, _ in pairs)
            full_tps = statistics.median(f for _, f in pairs)
            spend_ratio = statistics.median(f / e for e, f in pairs)
            rows.append({"figure": f"spend function, pgbench {PGBENCH_CLIENTS} clients as sg_app, "
                                   f"{_count(data['ledger'])} ledger rows vs an empty database",
                         "ours": f"{full_tps:.0f} tx/s", "peer/limit": f"{empty_tps:.0f} tx/s (empty)",
                         "ratio": f"{spend_ratio:.2f}x", "goal": ">= 0.90x", "met?": "yes" if spend_ratio >= 0.9 else "NO"})

            # -- reporting views as the analyst after the daily roll-up
            with psycopg.connect(role_dsn(full, "sg_worker"), autocommit=True) as worker:
                started = time.perf_counter()
                worker.execute("select app.roll_up_reporting()")
                rollup = time.perf_counter() - started
            with psycopg.connect(full) as admin:
                uid = admin.execute("select id from users where email like 'bulk%' limit 1").fetchone()[0]
            with psycopg.connect(role_dsn(full, "sg_analyst")) as analyst:
                for name, sql in QUERIES.items():
                    ms = _median_ms(analyst, sql, {"uid": uid})
                    rows.append({"figure": f"reporting.{name} as sg_analyst ({_count(data['users'])} users, "
                                           f"{_count(data['ledger'])} ledger rows)",
                                 "ours": f"{ms:.1f} ms", "peer/limit": "", "ratio": "", "goal": "< 200 ms",
                                 "met?": "yes" if ms < 200 else "NO"})
            rows.append({"figure": f"(bulk data generated in {data['seconds']:.0f} s; daily roll-up took {rollup:.1f} s)",
                         "ours": "", "peer/limit": "", "ratio": "", "goal": "", "met?": ""})

            # -- one hot account against the same load spread over 10,000 accounts
            keys = _api_keys(empty, SPENDERS)
            with live_server(empty, workers=2) as base:
                processes = server_cpu(base)
                body = '{"platform": "tiktok", "topic": "the history of coffee"}'
                scripts = {}
                for name, subset in (("hot", keys[:1]), ("spread", keys)):
                    scripts[name] = Path(tmp) / f"{name}.lua"
                    scripts[name].write_text(lua_tokens(subset) + lua_cycle(
                        [("/v1/shorts/generate", body, {"Content-Type": "application/json"})], bearer=True))
                wrk(base + "/healthz", None, 32, 2)
                measured = {"hot": [], "spread": []}
                for _ in range(ROUNDS):
                    for name in ("hot", "spread"):
                        measured[name].append(wrk(base, scripts[name], 32, int(os.environ.get("BENCH_SECONDS", "5")),
                                                  processes))
            hot = statistics.median(r["rps"] for r in measured["hot"])
            spread = statistics.median(r["rps"] for r in measured["spread"])
            ratio = statistics.median(h["rps"] / s["rps"] for h, s in zip(measured["hot"], measured["spread"]))
            rows.append({"figure": "generate, every request on 1 account vs spread over 10,000 (API keys)",
                         "ours": f"{hot:.0f}/s (p99 {statistics.median(r['p99'] for r in measured['hot']):.0f} ms)",
                         "peer/limit": f"{spread:.0f}/s (p99 {statistics.median(r['p99'] for r in measured['spread']):.0f} ms)",
                         "ratio": f"{ratio:.2f}x", "goal": "(for reading)", "met?": ""})
    return rows


if __name__ == "__main__":
    from .common import table

    print(table(run()))
