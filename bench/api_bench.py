"""What the developer API's guarantees cost per request, through gunicorn and wrk:

  rate limits      the same endpoints on two servers at once, RATE_LIMITS=plan and off
                   (plans' limits raised out of reach in the bench database, so every
                   request is counted and none refused): the price of one upsert
  Idempotency-Key  POST /v1/shorts/generate with a new key per request against none:
                   the key row written in the spend's transaction (insert + update)

Servers and variants alternate within each round; medians of BENCH_ROUNDS rounds. Any
non-2xx answer fails the run (bench/common.py wrk).
"""
from __future__ import annotations

import contextlib
import statistics
import tempfile
import uuid
from pathlib import Path

import psycopg

from .common import bench_database, live_server, server_cpu
from .http_bench import ROUNDS, _measured, _tokens

GENERATE = ("local tokens = {TOKENS}\n"
            "local n = 0\n"
            "local run = '{RUN}'\n"
            'local body = \'{"platform": "tiktok", "topic": "the history of coffee"}\'\n'
            "request = function()\n"
            "  n = n + 1\n"
            "  local headers = {['Content-Type'] = 'application/json',\n"
            "                   ['Authorization'] = 'Bearer ' .. tokens[(n % #tokens) + 1]}\n"
            "  if run ~= '' then headers['Idempotency-Key'] = run .. '-' .. id .. '-' .. n end\n"
            "  return wrk.format('POST', '/v1/shorts/generate', headers, body)\n"
            "end\n"
            "setup = function(thread) thread:set('id', tostring(math.random(1, 1e9))) end\n")
CREDITS = ("local tokens = {TOKENS}\n"
           "local n = 0\n"
           "request = function()\n"
           "  n = n + 1\n"
           "  return wrk.format('GET', '/v1/user/credits', {['Authorization'] = 'Bearer ' .. tokens[(n % #tokens) + 1]})\n"
           "end\n")


def _script(tmp: Path, name: str, template: str, tokens: list[str], run: str = "") -> Path:
    path = tmp / f"{name}.lua"
    path.write_text(template.replace("{TOKENS}", "{" + ",".join(f'"{t}"' for t in tokens) + "}")
                    .replace("{RUN}", run))
    return path


def run() -> list[dict]:
    rows = []
    with bench_database("sg_api_bench") as dsn, contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("update plans set features = features || '{\"rate_limit_per_minute\": 1000000000}'")
        secret = {"SECRET_KEY": "bench-" + uuid.uuid4().hex}
        servers = {mode: stack.enter_context(live_server(dsn, extra_env={**secret, "RATE_LIMITS": mode}))
                   for mode in ("plan", "off")}
        tokens = _tokens(servers["off"], dsn)
        processes = {mode: server_cpu(base) for mode, base in servers.items()}
        credits = _script(tmp, "credits", CREDITS, tokens)
        plain = _script(tmp, "plain", GENERATE, tokens)
        measured: dict[str, list[dict]] = {}
        for round_number in range(ROUNDS):
            keyed = _script(tmp, f"keyed{round_number}", GENERATE, tokens, run=uuid.uuid4().hex[:8])
            for label, mode, script in (("GET /v1/user/credits, limits on", "plan", credits),
                                        ("GET /v1/user/credits, limits off", "off", credits),
                                        ("POST generate, limits on", "plan", plain),
                                        ("POST generate, limits off", "off", plain),
                                        ("POST generate + Idempotency-Key, limits off", "off", keyed)):
                measured.setdefault(label, []).append(_measured(servers[mode], processes[mode], "/", script))
        for label, results in measured.items():
            rows.append({"variant": label, "req/s": f"{statistics.median(r['rps'] for r in results):.0f}",
                         "p50 ms": f"{statistics.median(r['p50'] for r in results):.2f}",
                         "server CPU ms/req": f"{statistics.median(r['cpu_ms'] for r in results):.3f}"})

        def ratio(a: str, b: str, key: str) -> float:
            return statistics.median(x[key] / y[key] for x, y in zip(measured[a], measured[b]))

        for a, b, what in (("GET /v1/user/credits, limits on", "GET /v1/user/credits, limits off", "rate limits, read"),
                           ("POST generate, limits on", "POST generate, limits off", "rate limits, generate"),
                           ("POST generate + Idempotency-Key, limits off", "POST generate, limits off",
                            "Idempotency-Key, generate")):
            rows.append({"variant": f"{what}: with / without (median of {ROUNDS} alternating rounds)",
                         "req/s": f"{ratio(a, b, 'rps'):.2f}x", "server CPU ms/req": f"{ratio(a, b, 'cpu_ms'):.2f}x"})
        with psycopg.connect(dsn) as admin:
            violations = admin.execute(
                "select count(*) from subscriptions s where credits_remaining <> "
                "(select sum(delta) from credit_ledger l where l.user_id = s.user_id)").fetchone()[0]
            kept = admin.execute("select count(*) from idempotency_keys").fetchone()[0]
        rows.append({"variant": f"ledger invariant violations: {violations}; idempotency answers kept: {kept}"})
    return rows


if __name__ == "__main__":
    from .common import table

    print(table(run()))
