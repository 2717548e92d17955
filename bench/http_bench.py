"""Generate-endpoint throughput against a bare database endpoint, and the request-buffering
worker (web/buffering.py, the default) against gunicorn's gthread worker it replaced:
both servers run at once on one database, and every round measures each in turn.

wrk (Debian's) drives 32 concurrent connections at each endpoint for a fixed time:
  /_bench/select1            the floor: one pooled SELECT 1
  /healthz                   one transaction: BEGIN + set_config + SELECT 1 + COMMIT
  POST /v1/shorts/generate   the JWT checked in the database and app.spend_credit_and_create_job
                             in one round trip
                             (credit, job, ledger, usage row and pgqueuer entry), as 64
                             different users so rows are not all contended on one account
"""
from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import tempfile
import urllib.request
import uuid
from pathlib import Path

import psycopg

from .common import bench_database, live_server, server_cpu, wrk

CONNECTIONS = 32
SECONDS = 6
ROUNDS = int(__import__("os").environ.get("BENCH_ROUNDS", "3"))
THREADS = 4  # web/gunicorn_conf.py's default
USERS = 64
SERVERS = {"buffering (waitress)": "web.buffering.BufferingWorker", "gthread (before)": "gthread"}


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def _measured(base: str, processes: list, path: str, script: Path | None = None) -> dict:
    return wrk(base + path, script, CONNECTIONS, SECONDS, processes)


def _median_result(results: list[dict]) -> dict:
    """Per-figure medians of several wrk runs (each run already refused any non-2xx)."""
    return {"rps": statistics.median(r["rps"] for r in results), "p50": statistics.median(r["p50"] for r in results),
            "p99": statistics.median(r["p99"] for r in results),
            "cpu_ms": statistics.median(r["cpu_ms"] for r in results)}


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
    """Figures for one gunicorn worker count, each server side by side."""
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    rows = []
    with bench_database() as dsn, contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        # one signing key, so tokens issued by one server are good on the other
        secret = {"SECRET_KEY": "bench-" + uuid.uuid4().hex}
        bases = {name: stack.enter_context(live_server(dsn, workers=workers, worker_class=worker_class,
                                                       extra_env=secret))
                 for name, worker_class in SERVERS.items()}
        tokens = _tokens(next(iter(bases.values())), dsn)
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
        processes = {name: server_cpu(base) for name, base in bases.items()}
        for base in bases.values():
            wrk(base + "/_bench/select1", None, CONNECTIONS, 2)  # warm-up: pools filled, statements prepared
        # this machine's speed drifts by tens of percent within a minute: the servers and
        # endpoints alternate, each ratio compares neighbours, and the medians are reported
        measured = {name: {"select1": [], "healthz": [], "generate": []} for name in bases}
        for _ in range(ROUNDS):
            for endpoint, path, lua in (("select1", "/_bench/select1", None), ("healthz", "/healthz", None),
                                        ("generate", "/", script)):
                for name, base in bases.items():
                    measured[name][endpoint].append(_measured(base, processes[name], path, lua))
        with psycopg.connect(dsn) as admin:
            violations = admin.execute(
                "select count(*) from subscriptions s where credits_remaining <> "
                "(select sum(delta) from credit_ledger l where l.user_id = s.user_id)").fetchone()[0]
            jobs, queued = admin.execute("select (select count(*) from jobs), (select count(*) from pgqueuer)").fetchone()
        for name in bases:
            for endpoint, label in (("select1", "GET /_bench/select1 (bare SELECT 1)"),
                                    ("healthz", "GET /healthz (SELECT 1 in a tx)"),
                                    ("generate", "POST /v1/shorts/generate")):
                result = _median_result(measured[name][endpoint])
                rows.append({"endpoint": label, "server": name, "gunicorn": f"{workers} workers x {THREADS} threads",
                             "clients": CONNECTIONS, "req/s": f"{result['rps']:.0f}", "p50 ms": f"{result['p50']:.2f}",
                             "p99 ms": f"{result['p99']:.2f}", "server CPU ms/req": f"{result['cpu_ms']:.3f}"})
        new, old = list(bases)
        for endpoint in ("select1", "healthz", "generate"):
            pairs = list(zip(measured[new][endpoint], measured[old][endpoint]))
            ratio = statistics.median(n["rps"] / o["rps"] for n, o in pairs)
            cpu = statistics.median(n["cpu_ms"] / o["cpu_ms"] for n, o in pairs)
            rows.append({"endpoint": f"{endpoint}: {new} / {old} (median of {ROUNDS} alternating rounds)",
                         "req/s": f"{ratio:.2f}x (goal >= 0.90x)", "server CPU ms/req": f"{cpu:.2f}x"})
        ratio = statistics.median(g["rps"] / b["rps"] for b, g in zip(measured[new]["select1"], measured[new]["generate"]))
        rows.append({"endpoint": f"generate / bare, {new}", "req/s": f"{ratio:.2f}x (goal >= 0.5x)",
                     "p99 ms": "goal < 50", "checks": f"jobs={jobs} queue={queued} ledger violations={violations}"})
    return rows


if __name__ == "__main__":
    from .common import table

    print(table(run(2)))
