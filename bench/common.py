"""Shared plumbing for the benchmarks: a throwaway migrated database and a live gunicorn."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from web.migrate import migrate

ROOT = Path(__file__).resolve().parent.parent
ADMIN_DSN = os.environ.get("BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def bench_database(prefix: str = "sg_bench"):
    """A freshly migrated database (admin DSN), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'create database "{name}"')
    dsn = make_conninfo(**{**conninfo_to_dict(ADMIN_DSN), "dbname": name})
    try:
        migrate(dsn, environ={})
        yield dsn
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(dsn: str, workers: int = 2, extra_env: dict | None = None, worker_class: str | None = None):
    """gunicorn serving the app (plus /_bench/select1) on a loopback port; yields its base URL.
    `worker_class` overrides web/gunicorn_conf.py's (to compare servers in one run)."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": dsn, "SECRET_KEY": "bench-" + uuid.uuid4().hex,
           "BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": str(workers), "DB_POOL_MAX": "4",
           "MEDIA_ROOT": str(ROOT / ".data" / "bench-media"),
           # throughput figures with a few users would measure 429s (bench/api_bench.py
           # measures the limits' own cost)
           "RATE_LIMITS": "off", **(extra_env or {})}
    # the server's log goes to a file: an unread pipe would fill up and stall every worker
    log = tempfile.NamedTemporaryFile(prefix="sg-bench-gunicorn-", suffix=".log", delete=False)
    override = ["--worker-class", worker_class] if worker_class else []
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "web/gunicorn_conf.py", *override,
                                "bench.app:create_bench_app()"],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("gunicorn did not start: " + Path(log.name).read_text()[-2000:])
        yield base
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()
        os.unlink(log.name)


def table(rows: list[dict]) -> str:
    """A plain-text table of dict rows (keys of the first row are the columns)."""
    columns = list(rows[0])
    widths = [max(len(str(c)), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    line = " | ".join(str(c).ljust(w) for c, w in zip(columns, widths))
    rule = "-+-".join("-" * w for w in widths)
    body = [" | ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join([line, rule, *body])


# -- load generation: Debian's wrk, driven by small Lua scripts ------------------------------

WRK_THREADS = 2


def wrk(url: str, script: Path | None, connections: int, seconds: int, processes: list | None = None) -> dict:
    """One wrk run: req/s, p50/p99 in ms, and (given the server's processes) server CPU ms per
    request, a figure that swings less than req/s on a shared machine. Any non-2xx answer
    fails the run: a benchmark of errors measures nothing."""
    import re

    before = _cpu_seconds(processes) if processes else 0.0
    args = ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script:
        args[1:1] = ["-s", str(script)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{errors.group(1)} failed requests from {url} ({script}):\n{out}")

    def latency(label):
        value, unit = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    requests = int(re.search(r"(\d+) requests in", out).group(1))
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "requests": requests,
              "p50": latency("50"), "p99": latency("99")}
    if processes:
        result["cpu_ms"] = (_cpu_seconds(processes) - before) * 1000 / max(requests, 1)
    return result


def server_cpu(base: str) -> list:
    """The gunicorn master and workers listening on the base URL's port."""
    import psutil

    port = int(base.rsplit(":", 1)[1])
    # every process shares the listening socket, and psutil names one of them its owner
    owner = next(psutil.Process(c.pid) for c in psutil.net_connections(kind="tcp")
                 if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid)
    master = owner if owner.children() else owner.parent()
    return [master, *master.children()]


def _cpu_seconds(processes: list) -> float:
    total = 0.0
    for process in processes:
        times = process.cpu_times()
        total += times.user + times.system
    return total


def _lua(value) -> str:
    import json

    return json.dumps(value)


def lua_tokens(tokens: list[str]) -> str:
    """A Lua table of bearer tokens that `lua_cycle(..., bearer=True)` takes in turn."""
    return "tokens = {" + ",".join(_lua(t) for t in tokens) + "}\n"


def lua_cycle(requests: list[tuple[str, str, dict]], bearer: bool = False) -> str:
    """A wrk script sending each prepared (path, body, headers) POST in turn (with the next
    of `tokens` as the bearer token when `bearer`). Each wrk thread runs its own Lua state,
    so thread k sends entries k, k + threads, …: the threads never repeat each other's."""
    entries = ",\n".join("{" + _lua(path) + "," + _lua(body) + ",{" +
                         ",".join(f"[{_lua(k)}]={_lua(v)}" for k, v in headers.items()) + "}}"
                         for path, body, headers in requests)
    token = ("    h['Authorization'] = 'Bearer ' .. tokens[(i % #tokens) + 1]\n" if bearer else "")
    return ("local reqs = {\n" + entries + "\n}\nlocal n = 0\nlocal started = 0\n"
            "function setup(thread)\n  thread:set('offset', started)\n  started = started + 1\nend\n"
            "request = function()\n"
            f"  local i = n * {WRK_THREADS} + offset\n"
            "  local r = reqs[(i % #reqs) + 1]\n  local h = {}\n"
            "  for k, v in pairs(r[3]) do h[k] = v end\n" + token +
            "  n = n + 1\n  return wrk.format('POST', r[1], h, r[2])\nend\n")
