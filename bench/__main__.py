"""`python -m bench [part ...]`: run the benchmarks, print one summary table (figure, ours,
peer/limit, ratio, goal, met?) and write it, with the machine it ran on, to
bench/RESULTS.md. `make bench` installs what they need first.

Parts: render, peers, scale, queue (the default: all four), servers (the buffering web
server against gunicorn's gthread worker, issue 16's comparison) and api (what rate limits
and Idempotency-Key cost per request); the last two are asked for by name.
Needs a Postgres it may administer (BENCH_ADMIN_DSN, default the local cluster), Debian's
wrk and pgbench. BENCH_ROUNDS, BENCH_SECONDS and BENCH_SCALE make a run shorter.
"""
from __future__ import annotations

import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg

from . import api_bench, http_bench, peers, queue_bench, render_bench, scale
from .common import ADMIN_DSN, table

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
COLUMNS = ("figure", "ours", "peer/limit", "ratio", "goal", "met?")


def _render_rows() -> list[dict]:
    rows = []
    for row in render_bench.run():
        ratio, goal = float(row["warm ratio"].rstrip("x")), float(row["goal"].split()[-1].rstrip("x"))
        rows.append({"figure": f"warm render of a narrated 20 s short, {row['tier']} ({row['size']}), x real time",
                     "ours": f"{row['warm s']} s wall, {row['warm CPU s']} s CPU", "peer/limit": "",
                     "ratio": row["warm ratio"], "goal": row["goal"], "met?": "yes" if ratio <= goal else "NO"})
    return rows


def _queue_rows() -> list[dict]:
    return [{"figure": f"pgqueuer no-op jobs through the worker's setup, {row['setup']}", "ours": f"{row['jobs/s']}/s",
             "peer/limit": "", "ratio": "", "goal": "(for reading)", "met?": ""} for row in queue_bench.run()]


def _server_rows() -> list[dict]:
    rows = []
    for row in http_bench.run(2):
        if row.get("server"):  # one server's figures
            rows.append({"figure": f"{row['endpoint']}, {row['server']} server",
                         "ours": f"{row['req/s']}/s (p99 {row['p99 ms']} ms, {row['server CPU ms/req']} CPU ms/req)"})
        else:  # a ratio between the two servers, or to the bare endpoint
            rows.append({"figure": row["endpoint"], "ratio": row.get("req/s", ""),
                         "goal": row.get("p99 ms", ""), "ours": row.get("checks", "")})
    return rows


def _api_rows() -> list[dict]:
    rows = []
    for row in api_bench.run():
        if "p50 ms" in row:  # one variant's figures
            rows.append({"figure": row["variant"],
                         "ours": f"{row['req/s']}/s (p50 {row['p50 ms']} ms, {row['server CPU ms/req']} CPU ms/req)",
                         "goal": "(for reading)"})
        elif "req/s" in row:  # a with/without ratio
            rows.append({"figure": row["variant"], "ratio": f"{row['req/s']} req/s, {row['server CPU ms/req']} CPU",
                         "goal": "(for reading)"})
        else:
            rows.append({"figure": row["variant"]})
    return rows


PARTS = {"render": _render_rows, "peers": peers.run, "scale": scale.run, "queue": _queue_rows,
         "servers": _server_rows, "api": _api_rows}
DEFAULT = ("render", "peers", "scale", "queue")


def _machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    with psycopg.connect(ADMIN_DSN) as admin:
        server = admin.execute("select current_setting('server_version')").fetchone()[0]
    return {"cores": os.cpu_count(), "cpu": model, "postgres": server, "python": platform.python_version()}


def _markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")).replace("|", "/") for c in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parts = argv or list(DEFAULT)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise SystemExit(f"unknown part {unknown[0]!r}; parts: {', '.join(PARTS)}")
    machine = _machine()
    started, load_before = datetime.now(timezone.utc), os.getloadavg()[0]
    clock = time.perf_counter()
    rows = []
    for part in parts:
        print(f"== {part}", file=sys.stderr, flush=True)
        rows.extend(PARTS[part]())
    minutes = (time.perf_counter() - clock) / 60
    print(table([{c: row.get(c, "") for c in COLUMNS} for row in rows]))
    settings = ", ".join(f"{k}={os.environ[k]}" for k in ("BENCH_ROUNDS", "BENCH_SECONDS", "BENCH_SCALE") if k in os.environ)
    RESULTS.write_text(
        "# Benchmark results\n\n"
        "Written by `make bench` (`python -m bench`); every ratio compares figures measured in "
        "alternating rounds on one server and one database, and reports the median.\n\n"
        f"- run: {started:%Y-%m-%d %H:%M} UTC, {minutes:.0f} min, parts: {', '.join(parts)}"
        f"{'; ' + settings if settings else ''}\n"
        f"- machine: {machine['cores']} cores ({machine['cpu']}), PostgreSQL {machine['postgres']}, "
        f"Python {machine['python']}; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after\n\n"
        + _markdown(rows) + "\n")
    print(f"\nwritten to {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
