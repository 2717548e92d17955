"""Generate throughput with credit buckets (issue 19) against the single-counter spend it
replaced, two ways:

- the spend alone: app.spend_credit_and_create_job called as the web process calls it (the
  user set transaction-locally, then the one function, as sg_app) from CLIENTS threads,
  each account with 1 or with 50 live buckets, beside the same calls to a copy of the
  pre-bucket function (installed only in the benchmark's throwaway database); database
  CPU per spend beside spends/s;
- POST /v1/shorts/generate over HTTP (gunicorn, wrk), the single-counter side being the
  pre-bucket function put in place under the same name between rounds.

The sides alternate, BENCH_ROUNDS rounds of BENCH_SECONDS each; medians and their ratios
are printed (goal: buckets >= 0.8x the single counter).

    .venv/bin/python -m bench.credits_bench
"""
from __future__ import annotations

import os
import statistics
import threading
import time
import uuid

import psycopg
from argon2 import PasswordHasher

from web.config import role_dsn

from .common import bench_database, table

CLIENTS = int(os.environ.get("BENCH_CLIENTS", "4"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
BUCKETS = (1, 50)
GOAL = 0.8
PASSWORD = "bench-credits-password"
PASSWORD_HASH = PasswordHasher(memory_cost=19456, time_cost=2, parallelism=1).hash(PASSWORD)

# The spend as it was before buckets (sql/30_credits.sql at f17a35d), job/ledger/usage/queue
# rows included, so the comparison is the bucket draw and nothing else.
SINGLE_COUNTER = """
create schema if not exists bench_single authorization sg_owner;
grant usage on schema bench_single to sg_app;
set role sg_owner;
create or replace function bench_single.spend_credit_and_create_job(platform text, topic text, options jsonb default '{}')
returns table (job_id uuid, credits_remaining integer)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  uid uuid := app.require_user_id();
  paid_tier text;
  left_after integer;
  new_job uuid;
  priority integer;
begin
  if platform is null or platform not in ('youtube_shorts', 'tiktok', 'instagram_reels') then
    raise exception 'platform must be one of youtube_shorts, tiktok, instagram_reels' using errcode = 'P0422';
  end if;
  if topic is null or length(btrim(topic)) not between 3 and 200 then
    raise exception 'topic must be 3 to 200 characters' using errcode = 'P0422';
  end if;
  update public.subscriptions s
     set credits_remaining = s.credits_remaining - 1, updated_at = now(), last_active_at = now()
   where s.user_id = uid and s.credits_remaining >= 1
  returning s.credits_remaining, s.tier into left_after, paid_tier;
  if not found then
    raise exception 'Insufficient credits. Please upgrade your plan.' using errcode = 'P0402';
  end if;
  if not (select u.is_verified from public.users u where u.id = uid) then
    if exists (select 1 from public.credit_ledger l
                where l.user_id = uid and l.reason = 'render'
                  and not exists (select 1 from public.credit_ledger r where r.idempotency_key = 'refund:' || l.job_id))
    then
      raise exception 'Confirm your email address to use the rest of your credits.' using errcode = 'P0403';
    end if;
  end if;
  insert into public.jobs (user_id, platform, topic, options, tier_at_creation)
  values (uid, platform, btrim(topic), options, paid_tier)
  returning id into new_job;
  insert into public.credit_ledger (user_id, delta, reason, idempotency_key, job_id)
  values (uid, -1, 'render', 'render:' || new_job, new_job);
  insert into public.usage_logs (user_id, action, credits_used, job_id)
  values (uid, 'video_generation', 1, new_job);
  select coalesce((p.features ->> 'queue_priority')::integer, 0) into priority
    from public.plans p where p.tier = paid_tier;
  insert into public.pgqueuer (priority, entrypoint, payload, status, dedupe_key)
  values (priority, 'render', convert_to(json_build_object('job_id', new_job)::text, 'UTF8'),
          'queued', 'render:' || new_job);
  return query select new_job, left_after;
end
$$;
grant execute on function bench_single.spend_credit_and_create_job(text, text, jsonb) to sg_app;
reset role;
"""


def _accounts(admin: psycopg.Connection, buckets: int) -> list[str]:
    """CLIENTS confirmed accounts, each with `buckets` live buckets of plenty of credits."""
    users = []
    for n in range(CLIENTS):
        uid = admin.execute("select id from app.signup(%s, %s, null)",
                            (f"bench-{buckets}-{n}-{uuid.uuid4().hex[:6]}@example.com", PASSWORD_HASH)).fetchone()[0]
        admin.execute("update users set is_verified = true where id = %s", (uid,))
        # the signup credits go (a balance of plenty, in `buckets` buckets expiring on
        # different days, so the spend has a real order to find; one never-expiring if 1)
        admin.execute("update credit_buckets set expires_at = now() - interval '1 second' where user_id = %s", (uid,))
        admin.execute("select app.expire_credit_buckets()")
        for b in range(buckets):
            admin.execute("select * from app.grant_credits(%s, %s, 'admin_grant', %s, expires_at => now() + %s::interval)",
                          (uid, 1000000 // buckets, f"bench:{uid}:{b}",
                           None if buckets == 1 else f"{40 + b} days"))
        live = admin.execute("select count(*) from credit_buckets where user_id = %s and remaining > 0 "
                             "and (expires_at is null or expires_at > now())", (uid,)).fetchone()[0]
        assert live == buckets, (live, buckets)
        users.append(str(uid))
    return users


def _throughput(app_dsn: str, users: list[str], function: str, seconds: float) -> tuple[float, float]:
    """Spends per second from CLIENTS threads, each spending as its own account, and the
    database's CPU milliseconds per spend (its backends' user + system time, which a shared
    machine disturbs far less than wall-clock throughput)."""
    import psutil

    stop = threading.Event()
    counts = [0] * len(users)
    backends: list = [None] * len(users)
    errors: list[BaseException] = []
    start_line = threading.Barrier(len(users) + 1)

    def client(i: int) -> None:
        try:
            with psycopg.connect(app_dsn, autocommit=True) as conn:
                backends[i] = psutil.Process(conn.execute("select pg_backend_pid()").fetchone()[0])
                start_line.wait()
                while not stop.is_set():
                    with conn.transaction():
                        conn.execute("select set_config('app.user_id', %s, true)", (users[i],))
                        conn.execute(f"select * from {function}('tiktok', 'benchmark video')")
                    counts[i] += 1
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
            if not start_line.broken:
                start_line.abort()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(users))]
    for thread in threads:
        thread.start()
    start_line.wait()
    cpu_before = sum(sum(b.cpu_times()[:2]) for b in backends)
    started = time.perf_counter()
    time.sleep(seconds)
    cpu_after = sum(sum(b.cpu_times()[:2]) for b in backends)
    spent = sum(counts)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return sum(counts) / elapsed, 1000 * (cpu_after - cpu_before) / max(spent, 1)


def run() -> list[dict]:
    with bench_database("sg_credits_bench") as dsn:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(SINGLE_COUNTER)
            sides = {"single counter (before buckets)": ("bench_single.spend_credit_and_create_job",
                                                         _accounts(admin, 1))}
            for n in BUCKETS:
                sides[f"{n} live bucket{'s' if n > 1 else ''} per account"] = (
                    "app.spend_credit_and_create_job", _accounts(admin, n))
        app_dsn = role_dsn(dsn, "sg_app")
        measured: dict[str, list[float]] = {name: [] for name in sides}
        cpu: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(ROUNDS):
            for name, (function, users) in sides.items():
                rate, cpu_ms = _throughput(app_dsn, users, function, SECONDS)
                measured[name].append(rate)
                cpu[name].append(cpu_ms)
        with psycopg.connect(dsn, autocommit=True) as admin:
            broken = admin.execute("""select count(*) from subscriptions s where s.credits_remaining <>
                                        (select coalesce(sum(b.remaining), 0) from credit_buckets b
                                          where b.user_id = s.user_id)
                                        and s.user_id = any(%s::uuid[])""",
                                   ([u for name, (_, users) in sides.items() if not name.startswith("single") for u in users],)
                                   ).fetchone()[0]
        assert broken == 0, "a bucketed account's balance drifted from its buckets"
    single = "single counter (before buckets)"
    baseline = statistics.median(measured[single])
    baseline_cpu = statistics.median(cpu[single])
    rows = []
    for name, values in measured.items():
        median = statistics.median(values)
        cpu_ms = statistics.median(cpu[name])
        # the CPU ratio is throughput-equivalent: single counter's CPU per spend / this side's
        cpu_ratio = baseline_cpu / cpu_ms
        rows.append({"spend": name, "clients": CLIENTS, "rounds": ROUNDS, "median spends/s": f"{median:.0f}",
                     "runs": " ".join(f"{v:.0f}" for v in values), "ratio": f"{median / baseline:.2f}x",
                     "DB CPU ms/spend": f"{cpu_ms:.3f}", "CPU ratio": f"{cpu_ratio:.2f}x",
                     "goal": "" if name == single else f">= {GOAL}x",
                     "met?": "" if name == single else ("yes" if min(median / baseline, cpu_ratio) >= GOAL
                                                        else "yes (CPU)" if cpu_ratio >= GOAL else "NO")})
    return rows


def _swap_in_single_counter(admin: psycopg.Connection) -> str:
    """Put the pre-bucket spend in place under the real name; returns the bucketed one's
    definition, to put back."""
    current = admin.execute("select pg_get_functiondef('app.spend_credit_and_create_job(text, text, jsonb)'"
                            "::regprocedure)").fetchone()[0]
    old = admin.execute("select pg_get_functiondef('bench_single.spend_credit_and_create_job(text, text, jsonb)'"
                        "::regprocedure)").fetchone()[0]
    with admin.transaction():
        admin.execute("set local role sg_owner")
        admin.execute(old.replace("bench_single.spend_credit_and_create_job", "app.spend_credit_and_create_job"))
    return current


def _put_back(admin: psycopg.Connection, definition: str) -> None:
    with admin.transaction():
        admin.execute("set local role sg_owner")
        admin.execute(definition)


def run_http(connections: int = 16) -> list[dict]:
    """POST /v1/shorts/generate through gunicorn with wrk: 1 and 50 buckets per account
    against the single-counter function under the same name."""
    import json
    import shutil
    import tempfile
    import urllib.request
    from pathlib import Path

    from .common import live_server, server_cpu, wrk

    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    with bench_database("sg_credits_http") as dsn, tempfile.TemporaryDirectory() as tmp, live_server(dsn) as base:
        processes = server_cpu(base)
        scripts = {}
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(SINGLE_COUNTER)
            for buckets in BUCKETS:
                tokens = []
                for user in _accounts(admin, buckets):
                    # a token for each account, from a sign-in as the web process signs in
                    email = admin.execute("select email from users where id = %s", (user,)).fetchone()[0]
                    request = urllib.request.Request(
                        base + "/v1/auth/login", data=json.dumps({"email": email, "password": PASSWORD}).encode(),
                        headers={"Content-Type": "application/json"})
                    tokens.append(json.load(urllib.request.urlopen(request))["access_token"])
                script = Path(tmp) / f"generate_{buckets}.lua"
                script.write_text(
                    "local tokens = {" + ",".join(f'"{t}"' for t in tokens) + "}\n"
                    "local n = 0\n"
                    'local body = \'{"platform": "tiktok", "topic": "the history of coffee"}\'\n'
                    "request = function()\n"
                    "  n = n + 1\n"
                    "  return wrk.format('POST', '/v1/shorts/generate', {['Content-Type'] = 'application/json',\n"
                    "    ['Authorization'] = 'Bearer ' .. tokens[(n % #tokens) + 1]}, body)\n"
                    "end\n")
                scripts[buckets] = script
            wrk(base + "/healthz", None, connections, 2)  # warm-up
            single = "single counter (before buckets)"
            sides = {single: 1, **{f"{n} live bucket{'s' if n > 1 else ''} per account": n for n in BUCKETS}}
            measured: dict[str, list[dict]] = {name: [] for name in sides}
            for _ in range(ROUNDS):
                for name, buckets in sides.items():
                    if name == single:
                        bucketed = _swap_in_single_counter(admin)
                        try:
                            measured[name].append(wrk(base + "/", scripts[buckets], connections, int(SECONDS), processes))
                        finally:
                            _put_back(admin, bucketed)
                    else:
                        measured[name].append(wrk(base + "/", scripts[buckets], connections, int(SECONDS), processes))
    baseline = statistics.median(r["rps"] for r in measured[single])
    baseline_cpu = statistics.median(r["cpu_ms"] for r in measured[single])
    rows = []
    for name, results in measured.items():
        rps = statistics.median(r["rps"] for r in results)
        cpu_ms = statistics.median(r["cpu_ms"] for r in results)
        rows.append({"POST /v1/shorts/generate": name, "connections": connections, "rounds": ROUNDS,
                     "median req/s": f"{rps:.0f}", "runs": " ".join(f"{r['rps']:.0f}" for r in results),
                     "ratio": f"{rps / baseline:.2f}x", "web CPU ms/req": f"{cpu_ms:.2f}",
                     "goal": "" if name == single else f">= {GOAL}x",
                     "met?": "" if name == single else ("yes" if rps / baseline >= GOAL else "NO")})
    return rows


if __name__ == "__main__":
    import sys

    parts = sys.argv[1:] or ["spend", "http"]
    if "spend" in parts:
        print(table(run()))
    if "http" in parts:
        print(table(run_http()))
