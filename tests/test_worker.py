"""The pgqueuer worker, started for real as `python -m worker`, completes queued jobs."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from .conftest import acting_as

ROOT = Path(__file__).resolve().parent.parent


def start_worker(database_dsn: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": database_dsn}
    return subprocess.Popen([sys.executable, "-m", "worker", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(predicate, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def test_worker_picks_a_queued_job_and_completes_it(make_user, connect, database_dsn):
    uid = make_user()
    conn = connect("sg_app")
    with acting_as(conn, uid):
        job_id = conn.execute("select job_id from app.spend_credit_and_create_job('tiktok', 'worker test')"
                              ).fetchone()["job_id"]
    worker = start_worker(database_dsn)
    try:
        def status():
            with acting_as(conn, uid):
                row = conn.execute("select status, progress_percent, attempts, started_at, finished_at "
                                   "from jobs where id = %s", (job_id,)).fetchone()
            return row if row["status"] == "completed" else None

        row = wait_for(status, timeout=60)
        assert row, "the worker did not complete the job within 60 s"
        assert row["progress_percent"] == 100 and row["attempts"] == 1
        assert row["started_at"] <= row["finished_at"]
    finally:
        worker.terminate()
        output = worker.communicate(timeout=30)[0]
    assert worker.returncode is not None
    assert f"job {job_id} completed" in output
    # the queue entry is gone: it was consumed, not left behind
    admin = connect("postgres")
    left = admin.execute("select count(*) as n from pgqueuer where dedupe_key = %s", (f"render:{job_id}",)).fetchone()
    assert left["n"] == 0
