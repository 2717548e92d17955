"""Generate-endpoint throughput against a bare database endpoint, same gunicorn, same run.

wrk (Debian's) drives 32 concurrent connections at each endpoint for a fixed time:
  /_bench/select1            the floor: one pooled SELECT 1
  /healthz                   one transaction: BEGIN + set_config + SELECT 1 + COMMIT
  POST /v1/shorts/generate   the JWT checked in the database and app.spend_credit_and_create_job
                             in one round trip
                             (credit, job, ledger, usage row and pgqueuer entry), as 64
                             different users so rows are not all contended on one account
"""
from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import psycopg

from .common import bench_database, live_server

CONNECTIONS = 32
SECONDS = 6
ROUNDS = 3
THREADS = 4  # web/gunicorn_conf.py's default
USERS = 64


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def _wrk(url: str, script: Path | None = None) -> dict:
    args = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency", url]
    if script:
        args[1:1] = ["-s", str(script)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    def latency(label):
        value, unit = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": latency("50"), "p99": latency("99"), "non2xx": int(errors.group(1)) if errors else 0}


def _median_result(results: list[dict]) -> dict:
    """Per-figure medians of several wrk runs (non-2xx summed)."""
    return {"rps": statistics.median(r["rps"] for r in results), "p50": statistics.median(r["p50"] for r in results),
            "p99": statistics.median(r["p99"] for r in results), "non2xx": sum(r["non2xx"] for r in results)}


def _tokens(base: str, dsn: str) -> list[str]:
    tokens = []
    with psycopg.connect(dsn, autocommit=True) as admin:
        for n in range(USERS):
            body = _post(base + "/v1/auth/signup", {"email": f"bench-{n}@example.com", "password": "velvet-otter-42"})
            admin.execute("select app.grant_credits(%s, 1000000, 'admin_grant', %s)", (body["user"]["id"], f"bench:{n}"))
            # a confirmed address: an unconfirmed one spends only one credit
            admin.execute("update users set is_verified = true where id = %s", (body["user"]["id"],))
            tokens.append(body["access_token"])
    return tokens


def run(workers: int = 2) -> list[dict]:
    """Figures for one gunicorn worker count."""
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    rows = []
    with bench_database() as dsn, live_server(dsn, workers=workers) as base, \
            tempfile.TemporaryDirectory() as tmp:
        tokens = _tokens(base, dsn)
        script = Path(tmp) / "generate.lua"
        script.write_text(
            "local tokens = {" + ",".join(f'"{t}"' for t in tokens) + "}\n"
            "local n = 0\n"
            'local body = \'{"platform": "tiktok", "topic": "the history of coffee"}\'\n'
            "request = function()\n"
            "  n = n + 1\n"
            "  return wrk.format('POST', '/v1/shorts/generate', {['Content-Type'] = 'application/json',\n"
            "    ['Authorization'] = 'Bearer ' .. tokens[(n % #tokens) + 1]}, body)\n"
            "end\n")
        _wrk(base + "/_bench/select1")  # warm-up: pools filled, statements prepared
        healthz = _wrk(base + "/healthz")
        # this machine's speed drifts by tens of percent within a minute: bare and generate
        # alternate, each ratio compares neighbours, and the medians are reported
        rounds = [(_wrk(base + "/_bench/select1"), _wrk(base + "/", script)) for _ in range(ROUNDS)]
        bare = _median_result([b for b, _ in rounds])
        generate = _median_result([g for _, g in rounds])
        ratio = statistics.median(g["rps"] / b["rps"] for b, g in rounds)
        with psycopg.connect(dsn) as admin:
            violations = admin.execute(
                "select count(*) from subscriptions s where credits_remaining <> "
                "(select sum(delta) from credit_ledger l where l.user_id = s.user_id)").fetchone()[0]
            jobs, queued = admin.execute("select (select count(*) from jobs), (select count(*) from pgqueuer)").fetchone()
        for name, result in (("GET /_bench/select1 (bare SELECT 1)", bare), ("GET /healthz (SELECT 1 in a tx)", healthz),
                             ("POST /v1/shorts/generate", generate)):
            rows.append({"endpoint": name, "gunicorn": f"{workers} workers x {THREADS} threads", "clients": CONNECTIONS,
                         "req/s": f"{result['rps']:.0f}", "p50 ms": f"{result['p50']:.2f}",
                         "p99 ms": f"{result['p99']:.2f}", "non-2xx": result["non2xx"]})
        rows.append({"endpoint": f"generate / bare (median of {ROUNDS} alternating rounds)",
                     "req/s": f"{ratio:.2f}x (goal >= 0.5x)", "p99 ms": "goal < 50",
                     "non-2xx": f"jobs={jobs} queue={queued} ledger violations={violations}"})
    return rows


if __name__ == "__main__":
    from .common import table

    print(table(run(2) + run(4)))
