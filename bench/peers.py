"""Our endpoints beside the obvious way to build them and beside what the server allows,
on one gunicorn (the production configuration), one database, the same users, in
alternating rounds; medians are reported (bench/app.py has the peer endpoints):

  generate  POST /v1/shorts/generate      (one SQL function: credit, job, ledger, usage, queue)
            vs the seed's generate         (read, check, write: separate autocommit statements)
            vs the limit for a write       (same authentication, one durable INSERT)
  login     POST /v1/auth/login            vs a bare JSON + argon2id verify endpoint
  webhook   POST /v1/billing/webhook       (signature checked in Postgres, event stored and applied)
            vs a bare endpoint that only checks the signature
  money     200 concurrent generates on N credits, ours and the seed's: videos handed out
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import stripe

from web.passwords import hasher

from .app import BENCH_PASSWORD, PEER_SCHEMA
from .common import bench_database, live_server, lua_cycle, lua_tokens, server_cpu, wrk

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
USERS = 64
LOGIN_USERS = 16
SPEND_CREDITS = 50
SPENDERS = 200
WEBHOOK_SECRET = "whsec_bench_" + "w" * 24
GENERATE_BODY = '{"platform": "tiktok", "topic": "the history of coffee"}'


def _post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, {}


def _users(base: str, dsn: str, count: int, credits: int, prefix: str) -> list[tuple[str, str]]:
    """Signed-up, confirmed users with `credits` in our ledger and in the seed's table;
    (user id, access token) each."""
    users = []
    with psycopg.connect(dsn, autocommit=True) as admin:
        for n in range(count):
            status, body = _post(base + "/v1/auth/signup", {"email": f"{prefix}-{n}@example.com",
                                                             "password": BENCH_PASSWORD})
            assert status == 201, status
            uid = body["user"]["id"]
            # a confirmed address: an unconfirmed one spends only one credit
            admin.execute("update users set is_verified = true where id = %s", (uid,))
            # the signup's 5 are spent first so both sides start from exactly `credits`
            admin.execute("select app.grant_credits(%s, %s, 'admin_grant', %s)", (uid, credits - 5, f"bench:{prefix}:{n}"))
            admin.execute("insert into seed_peer.subscriptions values (%s, %s)", (uid, credits))
            users.append((uid, body["access_token"]))
    return users


def _signed_events(customers: list[str], count: int) -> list[tuple[str, str, dict]]:
    """Unique, freshly signed subscription events of known customers."""
    now = int(time.time())
    events = []
    for n in range(count):
        payload = json.dumps({"id": f"evt_bench_{uuid.uuid4().hex}", "object": "event",
                              "api_version": "2026-10-28.endive", "type": "customer.subscription.updated",
                              "created": now, "data": {"object": {
                                  "id": f"sub_bench_{n % len(customers)}", "object": "subscription",
                                  "customer": customers[n % len(customers)], "status": "active"}}})
        header = stripe.WebhookSignature.generate_signature_header(payload, WEBHOOK_SECRET)
        events.append(("", payload, {"Content-Type": "application/json", "Stripe-Signature": header}))
    return events


def argon2_verifies_per_second(threads: int = 2, seconds: float = 2) -> float:
    """The hardware's own limit for logins: argon2id verifies with the service's parameters,
    in this process, on as many threads as the server has cores."""
    stored = hasher.hash(BENCH_PASSWORD)
    count, stop = [0], time.perf_counter() + seconds

    def work():
        while time.perf_counter() < stop:
            hasher.verify(stored, BENCH_PASSWORD)
            count[0] += 1

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return count[0] / seconds


def _double_spend(base: str, path: str, token: str) -> list[int]:
    barrier = threading.Barrier(SPENDERS)

    def spend(_):
        request = urllib.request.Request(base + path, GENERATE_BODY.encode(),
                                         {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        barrier.wait()
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    with ThreadPoolExecutor(SPENDERS) as pool:
        return list(pool.map(spend, range(SPENDERS)))


def _median(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def run() -> list[dict]:
    """Summary rows: figure, ours, peer/limit, ratio, goal, met?"""
    with bench_database("sg_peer_bench") as dsn, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(PEER_SCHEMA)
            admin.execute("insert into stripe_webhook_secrets (secret) values (%s)", (WEBHOOK_SECRET,))
        env = {"BENCH_PEER_DSN": dsn, "BENCH_WEBHOOK_SECRET": WEBHOOK_SECRET}
        with live_server(dsn, workers=2, extra_env=env) as base:
            processes = server_cpu(base)
            users = _users(base, dsn, USERS, 1_000_000, "gen")
            tokens = lua_tokens([token for _, token in users])
            scripts = {}
            for name, path in (("ours", "/v1/shorts/generate"), ("seed", "/_bench/seed/generate"),
                               ("limit", "/_bench/limit/write")):
                scripts[name] = tmp / f"{name}.lua"
                scripts[name].write_text(tokens + lua_cycle([(path, GENERATE_BODY, {"Content-Type": "application/json"})],
                                                            bearer=True))
            login_users = [f"gen-{n}@example.com" for n in range(LOGIN_USERS)]
            for name, path in (("login", "/v1/auth/login"), ("bare_login", "/_bench/bare/login")):
                scripts[name] = tmp / f"{name}.lua"
                scripts[name].write_text(lua_cycle([(path, json.dumps({"email": e, "password": BENCH_PASSWORD}),
                                                     {"Content-Type": "application/json"}) for e in login_users]))
            with psycopg.connect(dsn, autocommit=True) as admin:
                customers = []
                for n, (uid, _) in enumerate(users[:50]):
                    admin.execute("update subscriptions set stripe_customer_id = %s where user_id = %s",
                                  (f"cus_bench_{n}", uid))
                    customers.append(f"cus_bench_{n}")
            wrk(base + "/_bench/select1", None, 32, 2)  # warm-up: pools filled, statements prepared
            measured: dict[str, list[dict]] = {k: [] for k in
                                               ("ours", "seed", "limit", "login", "bare_login", "webhook", "bare_webhook",
                                                "argon2")}
            for _ in range(ROUNDS):
                for name in ("ours", "seed", "limit"):
                    measured[name].append(wrk(base, scripts[name], 32, SECONDS, processes))
                for name in ("login", "bare_login"):
                    measured[name].append(wrk(base, scripts[name], 8, SECONDS, processes))
                measured["argon2"].append({"rps": argon2_verifies_per_second(seconds=2)})
                # freshly signed each round: a signature is good for 300 s
                events = _signed_events(customers, 8000)
                for name, path in (("webhook", "/v1/billing/webhook"), ("bare_webhook", "/_bench/bare/webhook")):
                    script = tmp / f"{name}.lua"
                    script.write_text(lua_cycle([(path, body, headers) for _, body, headers in events]))
                    measured[name].append(wrk(base, script, 16, SECONDS, processes))
            with psycopg.connect(dsn) as admin:
                applied = admin.execute("select count(*) from stripe_events where processed_at is not null").fetchone()[0]
                ledger_ok = admin.execute(
                    "select count(*) = 0 from subscriptions s where credits_remaining <> "
                    "(select coalesce(sum(delta), 0) from credit_ledger l where l.user_id = s.user_id)").fetchone()[0]
            # -- money: N credits, 200 concurrent requests, on both sides
            [(_, ours_token)] = _users(base, dsn, 1, SPEND_CREDITS, "ours-spender")
            [(seed_uid, seed_token)] = _users(base, dsn, 1, SPEND_CREDITS, "seed-spender")
            ours_statuses = _double_spend(base, "/v1/shorts/generate", ours_token)
            seed_statuses = _double_spend(base, "/_bench/seed/generate", seed_token)
            with psycopg.connect(dsn) as admin:
                seed_jobs, seed_balance = admin.execute(
                    "select (select count(*) from seed_peer.jobs where user_id = %s), "
                    "(select credits_remaining from seed_peer.subscriptions where user_id = %s)",
                    (seed_uid, seed_uid)).fetchone()

    def ratio(a: str, b: str) -> float:
        """Median over rounds of a/b, each round's pair measured next to each other."""
        return statistics.median(x["rps"] / y["rps"] for x, y in zip(measured[a], measured[b]))

    def rps(name: str) -> str:
        results = measured[name]
        text = f"{_median(results, 'rps'):.0f}/s"
        if "p50" in results[0]:
            text += f" (p50 {_median(results, 'p50'):.1f} ms, p99 {_median(results, 'p99'):.1f} ms)"
        return text

    generate_vs_limit = ratio("ours", "limit")
    login_cost = ratio("bare_login", "login")
    rows = [
        {"figure": "generate vs the limit for a write (req/s)", "ours": rps("ours"), "peer/limit": rps("limit"),
         "ratio": f"{generate_vs_limit:.2f}x", "goal": ">= 0.80x", "met?": _met(generate_vs_limit >= 0.8)},
        {"figure": "generate vs the seed's generate (req/s)", "ours": rps("ours"), "peer/limit": rps("seed"),
         "ratio": f"{ratio('ours', 'seed'):.2f}x", "goal": "(for reading)", "met?": ""},
        {"figure": f"videos handed out for {SPEND_CREDITS} credits, {SPENDERS} concurrent generates",
         "ours": f"{ours_statuses.count(202)} (402 x {ours_statuses.count(402)})",
         "peer/limit": f"seed: {seed_statuses.count(202)} ({seed_jobs} jobs, balance left {seed_balance})",
         "ratio": "", "goal": f"= {SPEND_CREDITS}",
         "met?": _met(ours_statuses.count(202) == SPEND_CREDITS and len(ours_statuses) == ours_statuses.count(202)
                      + ours_statuses.count(402))},
        {"figure": "login time vs a bare argon2id endpoint (bare/login req/s)", "ours": rps("login"),
         "peer/limit": rps("bare_login"), "ratio": f"{login_cost:.2f}x", "goal": "<= 1.10x",
         "met?": _met(login_cost <= 1.10)},
        {"figure": "raw argon2id verifies in one process (2 threads)", "ours": "", "peer/limit": rps("argon2"),
         "ratio": f"login = {ratio('login', 'argon2'):.2f}x of raw", "goal": "(for reading)", "met?": ""},
        {"figure": "webhook events (signed, checked in Postgres, stored, applied) vs signature only",
         "ours": rps("webhook"), "peer/limit": rps("bare_webhook"), "ratio": f"{ratio('webhook', 'bare_webhook'):.2f}x",
         "goal": "(for reading)", "met?": ""},
        {"figure": "ledger invariant after the run (balance = sum of ledger, every account)",
         "ours": f"{applied} webhook events applied", "peer/limit": "", "ratio": "", "goal": "holds",
         "met?": _met(ledger_ok)},
    ]
    return rows


def _met(ok: bool) -> str:
    return "yes" if ok else "NO"


if __name__ == "__main__":
    from .common import table

    print(table(run()))
