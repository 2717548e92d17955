"""Login vs raw argon2, webhook events per second, and double-spend through HTTP,
against one live gunicorn (2 workers) on a fresh database."""
from __future__ import annotations

import json
import re
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

from web.passwords import hasher

from .common import bench_database, live_server

LOGIN_ROUNDS = 5
WRK_THREADS = 2
WEBHOOK_SECRET = "whsec_bench_" + "w" * 24


def _wrk(url: str, script: Path, connections: int, seconds: int = 8) -> float:
    out = subprocess.run(["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{errors.group(1)} failed requests:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def _lua_cycle(requests: list[tuple[str, str, dict]], threads: int = WRK_THREADS) -> str:
    """A wrk script sending each prepared (path, body, headers) once, in turn. Each wrk
    thread runs its own Lua state, so thread k sends entries k, k + threads, ...: the
    threads never repeat each other's requests."""
    entries = ",\n".join("{" + json.dumps(path) + "," + json.dumps(body) + ",{" +
                         ",".join(f"[{json.dumps(k)}]={json.dumps(v)}" for k, v in headers.items()) + "}}"
                         for path, body, headers in requests)
    return ("local reqs = {\n" + entries + "\n}\nlocal n = 0\nlocal started = 0\n"
            "function setup(thread)\n  thread:set('offset', started)\n  started = started + 1\nend\n"
            f"request = function()\n  local r = reqs[((n * {threads} + offset) % #reqs) + 1]\n  n = n + 1\n"
            "  return wrk.format('POST', r[1], r[3], r[2])\nend\n")


def argon2_verifies_per_second(threads: int = 2, seconds: float = 4) -> float:
    stored = hasher.hash("velvet-otter-canyon-42")
    count, stop = [0], time.perf_counter() + seconds

    def work():
        while time.perf_counter() < stop:
            hasher.verify(stored, "velvet-otter-canyon-42")
            count[0] += 1

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return count[0] / seconds


def run() -> list[dict]:
    import stripe

    rows = []
    with bench_database("sg_system_bench") as dsn, \
            live_server(dsn, workers=2, extra_env={"STRIPE_SECRET_KEY": "sk_test_bench",
                                                   "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}) as base, \
            tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # -- login vs argon2
        emails = [f"login-{n}@example.com" for n in range(16)]
        for email in emails:
            body = json.dumps({"email": email, "password": "velvet-otter-canyon-42"}).encode()
            urllib.request.urlopen(urllib.request.Request(base + "/v1/auth/signup", body,
                                                          {"Content-Type": "application/json"}))
        script = tmp / "login.lua"
        script.write_text(_lua_cycle([("/v1/auth/login", json.dumps({"email": e, "password": "velvet-otter-canyon-42"}),
                                       {"Content-Type": "application/json"}) for e in emails]))
        # this machine's speed drifts by tens of percent within a minute, so the two are
        # measured in alternation and each ratio compares neighbours
        rounds = [(argon2_verifies_per_second(seconds=3), _wrk(base, script, connections=8, seconds=5))
                  for _ in range(LOGIN_ROUNDS)]
        raw = statistics.median(r for r, _ in rounds)
        logins = statistics.median(n for _, n in rounds)
        ratio = statistics.median(r / n for r, n in rounds)
        rows.append({"benchmark": "POST /v1/auth/login (gunicorn: 2 workers x 4 threads)", "figure": f"{logins:.0f} logins/s"})
        rows.append({"benchmark": "raw argon2id verify (2 threads, same parameters)", "figure": f"{raw:.0f} verifies/s"})
        rows.append({"benchmark": f"login overhead (raw / login, median of {LOGIN_ROUNDS} alternating rounds)",
                     "figure": f"{ratio:.2f}x (goal <= 1.2x)"})

        # -- webhook events per second: unique, signed, stored and applied
        with psycopg.connect(dsn, autocommit=True) as admin:
            customers = []
            for n in range(50):
                uid = admin.execute("select id from app.signup(%s, '$argon2id$bench', null)",
                                    (f"hook-{n}@example.com",)).fetchone()[0]
                admin.execute("update subscriptions set stripe_customer_id = %s where user_id = %s", (f"cus_b{n}", uid))
                customers.append(f"cus_b{n}")
        now = int(time.time())
        events = []
        for n in range(12000):
            payload = json.dumps({"id": f"evt_bench_{uuid.uuid4().hex}", "type": "customer.subscription.updated",
                                  "created": now + n, "data": {"object": {
                                      "id": f"sub_b{n % 50}", "customer": customers[n % 50], "status": "active",
                                      "items": {"data": [{"price": {"id": "price_unknown"},
                                                          "current_period_start": now,
                                                          "current_period_end": now + 2592000}]}}}})
            header = stripe.WebhookSignature.generate_signature_header(payload, WEBHOOK_SECRET)
            events.append(("/v1/billing/webhook", payload, {"Content-Type": "application/json",
                                                            "Stripe-Signature": header}))
        script = tmp / "webhook.lua"
        script.write_text(_lua_cycle(events))
        hooks = _wrk(base, script, connections=16, seconds=5)
        with psycopg.connect(dsn) as admin:
            applied = admin.execute("select count(*) from stripe_events where processed_at is not null").fetchone()[0]
        rows.append({"benchmark": "POST /v1/billing/webhook (unique signed events, stored + applied)",
                     "figure": f"{hooks:.0f} events/s (goal >= 500/s); {applied} applied"})

        # -- double spend through HTTP
        body = json.dumps({"email": "spender@example.com", "password": "velvet-otter-canyon-42"}).encode()
        with urllib.request.urlopen(urllib.request.Request(base + "/v1/auth/signup", body,
                                                           {"Content-Type": "application/json"})) as response:
            token = json.load(response)["access_token"]
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("select app.grant_credits(id, 2, 'admin_grant', 'bench-spender') from users "
                          "where email = 'spender@example.com'")
            # a confirmed address: an unconfirmed one spends only one credit
            admin.execute("update users set is_verified = true where email = 'spender@example.com'")
        barrier = threading.Barrier(200)

        def spend(_):
            request = urllib.request.Request(base + "/v1/shorts/generate", json.dumps(
                {"platform": "tiktok", "topic": "double spend"}).encode(),
                {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
            barrier.wait()
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return response.status
            except urllib.error.HTTPError as error:
                return error.code

        with ThreadPoolExecutor(200) as pool:
            statuses = list(pool.map(spend, range(200)))
        rows.append({"benchmark": "200 concurrent generates on 7 credits (HTTP)",
                     "figure": f"{statuses.count(202)} x 202, {statuses.count(402)} x 402, "
                               f"other {len(statuses) - statuses.count(202) - statuses.count(402)}"})
    return rows


if __name__ == "__main__":
    from .common import table

    print(table(run()))
