"""Generate throughput with credit buckets (issue 19) against the single-counter spend it
replaced: app.spend_credit_and_create_job called the way the web process calls it (the
user set transaction-locally, then the one function, as sg_app), from CLIENTS threads,
each account with 1 or with 50 live buckets, and the same calls to a copy of the
pre-bucket function (one UPDATE of the cached balance; installed only in the benchmark's
throwaway database). The three sides alternate, BENCH_ROUNDS rounds of BENCH_SECONDS
each; the medians and their ratios are printed (goal: buckets ≥ 0.8× the single counter).

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
PASSWORD_HASH = PasswordHasher(memory_cost=19456, time_cost=2, parallelism=1).hash("bench-credits-password")

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


def _throughput(app_dsn: str, users: list[str], function: str, seconds: float) -> float:
    """Spends per second from CLIENTS threads, each spending as its own account."""
    stop = threading.Event()
    counts = [0] * len(users)
    errors: list[BaseException] = []
    start_line = threading.Barrier(len(users) + 1)

    def client(i: int) -> None:
        try:
            with psycopg.connect(app_dsn, autocommit=True) as conn:
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
    started = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return sum(counts) / elapsed


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
        for _ in range(ROUNDS):
            for name, (function, users) in sides.items():
                measured[name].append(_throughput(app_dsn, users, function, SECONDS))
        with psycopg.connect(dsn, autocommit=True) as admin:
            broken = admin.execute("""select count(*) from subscriptions s where s.credits_remaining <>
                                        (select coalesce(sum(b.remaining), 0) from credit_buckets b
                                          where b.user_id = s.user_id)
                                        and s.user_id = any(%s::uuid[])""",
                                   ([u for name, (_, users) in sides.items() if not name.startswith("single") for u in users],)
                                   ).fetchone()[0]
        assert broken == 0, "a bucketed account's balance drifted from its buckets"
    baseline = statistics.median(measured["single counter (before buckets)"])
    rows = []
    for name, values in measured.items():
        median = statistics.median(values)
        rows.append({"spend": name, "clients": CLIENTS, "rounds": ROUNDS, "median spends/s": f"{median:.0f}",
                     "runs": " ".join(f"{v:.0f}" for v in values), "ratio": f"{median / baseline:.2f}x",
                     "goal": "" if name.startswith("single") else f">= {GOAL}x",
                     "met?": "" if name.startswith("single") else ("yes" if median / baseline >= GOAL else "NO")})
    return rows


if __name__ == "__main__":
    print(table(run()))
