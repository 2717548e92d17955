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
