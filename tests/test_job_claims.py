"""Fenced job claims, the stranded-job sweeper and the render handler's failure paths
(issue 15, finding 1): a worker that lost its job to another is refused and stops, a
database error anywhere in a render ends in the job's own retry or refund, and a job
whose queue entry vanished is put back (or refunded) once."""
from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import asyncpg
import psycopg
import pytest
from pgqueuer.queries import Queries
from pgqueuer.ports.repository import EntrypointExecutionParameter
from pgqueuer.types import QueueEntrypoint
from psycopg_pool import AsyncConnectionPool

from web.config import role_dsn
from worker.jobs import JobControl, LostClaim
from worker.main import FAILED_MESSAGE, WorkerSettings, _asyncpg_params, create_pgqueuer, remove_stale_scratch
from worker.render import render_short

from .conftest import acting_as, api_signup, balance, bearer, ledger_sum, set_tier, wait_for
from .test_worker import generate, job_row, run_in_process, start_worker, stop


def run_async(coroutine_factory):
    """Run a coroutine in a thread of its own (the browser tests keep a loop in this one)."""
    outcome: list = []

    def target():
        try:
            outcome.append(("ok", asyncio.run(coroutine_factory())))
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            outcome.append(("error", error))

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    kind, value = outcome[0]
    if kind == "error":
        raise value
    return value


def movements(admin, job_id) -> list[str]:
    return [r["reason"] for r in admin.execute(
        "select reason from credit_ledger where job_id = %s order by created_at", (job_id,)).fetchall()]


# -- two workers, one queue entry -----------------------------------------------------------

def test_a_worker_whose_claim_was_superseded_is_refused(api, connect, database_dsn, empty_queue):
    """The issue's reproduction with pgqueuer's own dequeue and log (heartbeat timeout
    1 s): worker A claims, goes quiet, worker B is handed the same entry and claims.
    A's retry, progress, fail and complete are all refused; B's progress and complete
    go through; the job is completed once and paid once."""
    admin = connect("postgres")
    user = api_signup(api)
    uid = user["user"]["id"]
    job_id = uuid.UUID(generate(api, bearer(user["access_token"])))
    worker_dsn = role_dsn(database_dsn, "sg_worker")

    async def scenario():
        entrypoints = {QueueEntrypoint("render"): EntrypointExecutionParameter(concurrency_limit=0)}
        connections = [await asyncpg.connect(**_asyncpg_params(worker_dsn)) for _ in range(2)]
        pools = [AsyncConnectionPool(worker_dsn, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False)
                 for _ in range(2)]
        try:
            for pool in pools:
                await pool.open()
            (queue_a, queue_b), (control_a, control_b) = [Queries.from_asyncpg_connection(c) for c in connections], \
                [JobControl(p) for p in pools]

            async def dequeue(queue):
                return await queue.dequeue(batch_size=1, entrypoints=entrypoints, queue_manager_id=uuid.uuid4(),
                                           global_concurrency_limit=None, heartbeat_timeout=timedelta(seconds=1))

            [entry_a] = await dequeue(queue_a)
            claim_a = await control_a.claim(job_id)
            assert await dequeue(queue_b) == []  # A's heartbeat is still fresh
            await asyncio.sleep(1.5)             # ... and now it is not: A went quiet
            [entry_b] = await dequeue(queue_b)
            assert entry_b.id == entry_a.id
            claim_b = await control_b.claim(job_id)
            assert (claim_a.attempts, claim_b.attempts) == (1, 2)

            refused = []
            for call in (lambda: control_a.retry(claim_a, "retrying"), lambda: control_a.progress(claim_a, 50),
                         lambda: control_a.fail(claim_a, "failed"), lambda: control_a.complete(claim_a, "/media/a.mp4")):
                with pytest.raises(LostClaim) as lost:
                    await call()
                refused.append(lost.value.action)
            assert refused == ["retry", "progress", "fail", "complete"]
            with pytest.raises(ValueError):
                await control_a.bound(claim_a).progress(uuid.uuid4(), 10)

            await control_b.progress(claim_b, 60)
            await control_b.complete(claim_b, f"/media/{job_id}.mp4")
            await queue_b.log_jobs([(entry_b, "successful", None)])
        finally:
            for pool in pools:
                await pool.close()
            for conn in connections:
                await conn.close()

    run_async(scenario)
    row = job_row(admin, uid, job_id)
    assert (row["status"], row["attempts"], row["output_url"]) == ("completed", 2, f"/media/{job_id}.mp4")
    assert movements(admin, job_id) == ["render"]
    assert balance(admin, uid) == 4 == ledger_sum(admin, uid)
    assert admin.execute("select count(*) as n from pgqueuer where dedupe_key = %s",
                         (f"render:{job_id}",)).fetchone()["n"] == 0


def test_a_superseded_handler_stands_down_and_leaves_the_entry_as_a_safety_net(
        api, connect, database_dsn, media_root, empty_queue):
    """The render handler itself, when its claim is superseded mid-render: it stops without
    completing, and asks pgqueuer to put the shared entry back with a long delay rather
    than return (which would delete the entry the new holder is working from). Should the
    new holder die too, the entry re-delivers the job; when it completes, the entry goes."""
    admin = connect("postgres")
    user = api_signup(api)
    uid = user["user"]["id"]
    job_id = uuid.UUID(generate(api, bearer(user["access_token"])))
    worker_dsn = role_dsn(database_dsn, "sg_worker")

    async def scenario():
        from pgqueuer import PgQueuer
        from pgqueuer.errors import RetryRequested

        from worker.main import LOST_CLAIM_RECHECK, register_entrypoints

        entrypoints = {QueueEntrypoint("render"): EntrypointExecutionParameter(concurrency_limit=0)}
        connections = [await asyncpg.connect(**_asyncpg_params(worker_dsn)) for _ in range(2)]
        pool = AsyncConnectionPool(worker_dsn, min_size=1, max_size=3, kwargs={"autocommit": True}, open=False)
        await pool.open()
        try:
            queue_a, queue_b = [Queries.from_asyncpg_connection(c) for c in connections]
            rendering, superseded = asyncio.Event(), threading.Event()
            loop = asyncio.get_running_loop()

            def renderer(*args, **kwargs):
                loop.call_soon_threadsafe(rendering.set)
                assert superseded.wait(timeout=30)

            pgq = PgQueuer.from_asyncpg_connection(connections[0])
            control = JobControl(pool)
            register_entrypoints(pgq, control, WorkerSettings(dsn=worker_dsn, media_root=media_root,
                                                              renderer=renderer))
            handler = pgq.qm.entrypoint_registry["render"].parameters.func

            async def dequeue(queue):
                return await queue.dequeue(batch_size=1, entrypoints=entrypoints, queue_manager_id=uuid.uuid4(),
                                           global_concurrency_limit=None, heartbeat_timeout=timedelta(seconds=1))

            [entry] = await dequeue(queue_a)
            handled = asyncio.create_task(handler(entry))
            await asyncio.wait_for(rendering.wait(), 30)
            await asyncio.sleep(1.5)  # nothing heartbeats the entry: it goes stale
            [taken_over] = await dequeue(queue_b)
            claim_b = await control.claim(job_id)
            superseded.set()
            with pytest.raises(RetryRequested) as retry:
                await handled
            assert retry.value.delay == LOST_CLAIM_RECHECK
            await queue_a.retry_job(entry, retry.value.delay, None)  # what pgqueuer does with it
            state = admin.execute("select status::text, execute_after > now() + interval '9 minutes' as later "
                                  "from pgqueuer where id = %s", (entry.id,)).fetchone()
            assert state == {"status": "queued", "later": True}  # still there: B's safety net
            await control.complete(claim_b, f"/media/{job_id}.mp4")
            await queue_b.log_jobs([(taken_over, "successful", None)])
        finally:
            await pool.close()
            for conn in connections:
                await conn.close()

    run_async(scenario)
    row = job_row(admin, uid, job_id)
    assert (row["status"], row["attempts"]) == ("completed", 2)
    assert admin.execute("select count(*) as n from pgqueuer where dedupe_key = %s",
                         (f"render:{job_id}",)).fetchone()["n"] == 0
    assert movements(admin, job_id) == ["render"]


class LineReader:
    """Collects a worker process's output lines as they come, without blocking the test."""

    def __init__(self, process):
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self.thread.start()

    def _read(self, process):
        for line in process.stdout:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)


@pytest.mark.slow
def test_a_sigstopped_worker_that_wakes_after_its_job_was_reclaimed_stops(
        api, connect, database_dsn, tmp_path, empty_queue):
    """Worker A is frozen (SIGSTOP) mid-render; B takes the job over after the heartbeat
    timeout and finishes it. When A wakes, its next call is refused: it logs that another
    worker owns the job and carries on with other work, changing nothing."""
    admin = connect("postgres")
    user = api_signup(api)
    uid = user["user"]["id"]
    set_tier(admin, uid, "pro")
    # a fresh media root: the 4K template is not built yet, so the render is slow enough to freeze
    job_id = generate(api, bearer(user["access_token"]), duration_seconds=60)
    first = start_worker(database_dsn, tmp_path, "--heartbeat-timeout", "2")
    first_output = LineReader(first)
    second = None
    try:
        assert wait_for(lambda: job_row(admin, uid, job_id)["status"] == "processing", timeout=60, interval=0.05)
        os.kill(first.pid, signal.SIGSTOP)
        second = start_worker(database_dsn, tmp_path, "--heartbeat-timeout", "2")
        assert wait_for(lambda: job_row(admin, uid, job_id)["status"] == "completed", timeout=240), \
            job_row(admin, uid, job_id)
        finished = job_row(admin, uid, job_id)
        os.kill(first.pid, signal.SIGCONT)
        assert wait_for(lambda: "no longer holds the job" in first_output.text(), timeout=120), first_output.text()
        time.sleep(1)
        assert first.poll() is None, "the woken worker should keep running"
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
            first.terminate()
        first.wait(timeout=60)
        second_output = stop(second) if second else ""
    assert f"job {job_id}: claim 1 no longer holds the job" in first_output.text()
    assert "another worker owns it now, stopping" in first_output.text()
    assert job_row(admin, uid, job_id) == finished
    assert finished["attempts"] == 2, second_output
    assert movements(admin, job_id) == ["render"]
    assert balance(admin, uid) == 4 == ledger_sum(admin, uid)


# -- database errors inside the handler's calls ----------------------------------------------

class InjectedFault:
    """A trigger on jobs that raises a database error inside one job-control function for
    one job, the first `times` times that function's update runs (a sequence counts, since
    the raised error rolls back anything else the trigger could record)."""

    def __init__(self, admin, job_id: str, from_status: str, to_status: str, times: int):
        self.admin = admin
        self.name = f"test_fault_{uuid.uuid4().hex[:10]}"
        admin.execute(f"create sequence {self.name}")
        admin.execute(f"""
            create function {self.name}() returns trigger language plpgsql security definer
            set search_path = public, pg_temp as $$
            begin
              if new.id = '{job_id}' and old.status = '{from_status}' and new.status = '{to_status}'
                 and nextval('{self.name}') <= {times} then
                raise exception 'could not write /srv/storygenius/secret/{job_id}.mp4' using errcode = '58030';
              end if;
              return new;
            end $$""")
        admin.execute(f"create trigger {self.name} before update on jobs for each row execute function {self.name}()")

    def fired(self) -> int:
        row = self.admin.execute(f"select last_value, is_called from {self.name}").fetchone()
        return row["last_value"] if row["is_called"] else 0

    def remove(self) -> None:
        self.admin.execute(f"drop trigger {self.name} on jobs")
        self.admin.execute(f"drop function {self.name}()")
        self.admin.execute(f"drop sequence {self.name}")


def test_a_database_error_inside_complete_retries_the_render(api, connect, database_dsn, media_root, empty_queue):
    admin = connect("postgres")
    user = api_signup(api)
    uid = user["user"]["id"]
    job_id = generate(api, bearer(user["access_token"]), duration_seconds=15)
    fault = InjectedFault(admin, job_id, "processing", "completed", times=1)
    try:
        run_in_process(database_dsn, media_root, render_short)
        assert fault.fired() >= 1
    finally:
        fault.remove()
    row = job_row(admin, uid, job_id)
    assert (row["status"], row["attempts"], row["error_message"]) == ("completed", 2, None)
    assert movements(admin, job_id) == ["render"]
    assert balance(admin, uid) == 4 == ledger_sum(admin, uid)


def test_a_database_error_inside_complete_every_time_fails_and_refunds_once(
        api, connect, database_dsn, media_root, empty_queue):
    admin = connect("postgres")
    user = api_signup(api)
    uid = user["user"]["id"]
    auth = bearer(user["access_token"])
    job_id = generate(api, auth, duration_seconds=15)
    fault = InjectedFault(admin, job_id, "processing", "completed", times=1000)
    try:
        run_in_process(database_dsn, media_root, render_short)
    finally:
        fault.remove()
    row = job_row(admin, uid, job_id)
    assert (row["status"], row["attempts"]) == ("failed", 3)
    assert movements(admin, job_id) == ["render", "refund"]
    assert balance(admin, uid) == 5 == ledger_sum(admin, uid)
    # the user is told the credit came back; the server path stays in the log
    shown = api.get(f"/v1/jobs/{job_id}", headers=auth).get_json()
    assert shown["error"] == FAILED_MESSAGE and "/srv" not in str(shown)


def test_a_database_error_inside_claim_redelivers_the_entry(api, connect, database_dsn, media_root, empty_queue):
    admin = connect("postgres")
    user = api_signup(api)
    uid = user["user"]["id"]
    job_id = generate(api, bearer(user["access_token"]), duration_seconds=15)
    fault = InjectedFault(admin, job_id, "queued", "processing", times=1)
    try:
        run_in_process(database_dsn, media_root, render_short)
        assert fault.fired() >= 1
    finally:
        fault.remove()
    row = job_row(admin, uid, job_id)
    # the failed claim changed nothing; the re-delivered entry's claim is the first
    assert (row["status"], row["attempts"]) == ("completed", 1)
    assert movements(admin, job_id) == ["render"]


def test_a_job_claimed_past_the_attempt_limit_is_failed_and_refunded_without_rendering(
        api, connect, database_dsn, media_root, empty_queue):
    """Workers that keep dying mid-render (a poison job) do not loop for ever."""
    admin = connect("postgres")
    user = api_signup(api)
    uid = user["user"]["id"]
    job_id = generate(api, bearer(user["access_token"]))
    admin.execute("update jobs set attempts = 3, status = 'processing' where id = %s", (job_id,))
    run_in_process(database_dsn, media_root, lambda *a, **k: pytest.fail("a poison job was rendered again"))
    row = job_row(admin, uid, job_id)
    assert (row["status"], row["attempts"], row["error_message"]) == ("failed", 4, FAILED_MESSAGE)
    assert movements(admin, job_id) == ["render", "refund"]


# -- the sweeper ---------------------------------------------------------------------------

def stranded_job(api, admin, attempts: int = 0) -> tuple[str, str]:
    """A job whose queue entry is gone (as pgqueuer's delete-on-failure left them) and that
    nobody has touched for a day. Returns (user id, job id)."""
    user = api_signup(api)
    job_id = generate(api, bearer(user["access_token"]))
    admin.execute("delete from pgqueuer where dedupe_key = %s", (f"render:{job_id}",))
    admin.execute("update jobs set attempts = %s, status = case when %s > 0 then 'processing' else status end, "
                  "seen_at = now() - interval '1 day' where id = %s", (attempts, attempts, job_id))
    return user["user"]["id"], job_id


SWEEP = "select job_id::text, outcome from app.sweep_stranded_jobs('12 hours', 3)"


def swept(conn, job_ids) -> list[tuple]:
    """This sweep's actions on the given jobs (other tests' jobs are younger than 12 hours)."""
    return [(r["job_id"], r["outcome"]) for r in conn.execute(SWEEP).fetchall() if r["job_id"] in job_ids]


def entries(admin, job_id) -> list[str]:
    return [r["status"] for r in admin.execute("select status::text from pgqueuer where dedupe_key = %s",
                                               (f"render:{job_id}",)).fetchall()]


def test_the_sweeper_requeues_a_stranded_job_once_and_a_worker_finishes_it(
        api, connect, database_dsn, media_root, empty_queue):
    admin, worker = connect("postgres"), connect("sg_worker")
    uid, job_id = stranded_job(api, admin, attempts=1)
    # a job touched recently, or with a live entry, is not stranded
    _, recent = stranded_job(api, admin)
    admin.execute("update jobs set seen_at = now() where id = %s", (recent,))
    live_user = api_signup(api)
    live = generate(api, bearer(live_user["access_token"]))
    admin.execute("update jobs set seen_at = now() - interval '1 day' where id = %s", (live,))

    assert swept(worker, {job_id, recent, live}) == [(job_id, "requeued")]
    assert swept(worker, {job_id, recent, live}) == []
    assert entries(admin, job_id) == ["queued"] and entries(admin, live) == ["queued"] and entries(admin, recent) == []
    assert job_row(admin, uid, job_id)["status"] == "queued"

    admin.execute("delete from pgqueuer where dedupe_key in (%s, %s)", (f"render:{recent}", f"render:{live}"))
    admin.execute("update jobs set status = 'failed' where id in (%s, %s)", (recent, live))
    run_in_process(database_dsn, media_root, render_short)
    row = job_row(admin, uid, job_id)
    assert (row["status"], row["attempts"]) == ("completed", 2)
    assert movements(admin, job_id) == ["render"]


def test_the_sweeper_fails_and_refunds_a_stranded_job_at_the_attempt_limit(api, connect):
    admin, worker = connect("postgres"), connect("sg_worker")
    uid, job_id = stranded_job(api, admin, attempts=3)
    assert swept(worker, {job_id}) == [(job_id, "failed")]
    assert swept(worker, {job_id}) == []
    row = job_row(admin, uid, job_id)
    assert (row["status"], row["error_message"]) == ("failed", FAILED_MESSAGE)
    assert movements(admin, job_id) == ["render", "refund"]
    assert balance(admin, uid) == 5 == ledger_sum(admin, uid)
    assert entries(admin, job_id) == []


def test_concurrent_sweepers_act_on_a_stranded_job_once(api, connect, new_connection):
    admin = connect("postgres")
    _, requeue = stranded_job(api, admin, attempts=2)
    _, refund = stranded_job(api, admin, attempts=3)
    sweepers = [new_connection("sg_worker") for _ in range(6)]
    barrier = threading.Barrier(len(sweepers))
    results: list[tuple] = []
    lock = threading.Lock()

    def sweep(conn):
        barrier.wait()
        found = swept(conn, {requeue, refund})
        with lock:
            results.extend(found)

    threads = [threading.Thread(target=sweep, args=(conn,)) for conn in sweepers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == sorted([(requeue, "requeued"), (refund, "failed")])
    assert entries(admin, requeue) == ["queued"] and entries(admin, refund) == []
    assert movements(admin, refund) == ["render", "refund"]
    admin.execute("delete from pgqueuer where dedupe_key = %s", (f"render:{requeue}",))


def test_only_the_worker_may_sweep_and_arguments_are_checked(connect):
    for role in ("sg_app", "sg_analyst"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            connect(role).execute("select * from app.sweep_stranded_jobs()")
    for arguments in ("'-1 minute', 3", "'1 minute', 0", "null, 3"):
        with pytest.raises(psycopg.Error) as raised:
            connect("sg_worker").execute(f"select * from app.sweep_stranded_jobs({arguments})")
        assert raised.value.sqlstate == "P0422"


# -- stale scratch directories ---------------------------------------------------------------

def test_the_worker_removes_stale_render_scratch_at_start(database_dsn, tmp_path):
    """A SIGKILLed render leaves its `render-*` directory (and perhaps a half-built cache
    file); the next worker start removes those nobody has touched for an hour, and leaves
    younger ones, which may be another worker's render in progress, and the videos."""
    old = time.time() - 2 * 3600
    stale_dir, live_dir, cache = tmp_path / "render-dead", tmp_path / "render-live", tmp_path / ".cache"
    for directory in (stale_dir, live_dir, cache):
        directory.mkdir()
    (stale_dir / "video.h264").write_bytes(b"x")
    (live_dir / "video.h264").write_bytes(b"x")
    (cache / "old.part").write_bytes(b"x")
    (cache / "new.part").write_bytes(b"x")
    (cache / "template.h264").write_bytes(b"x")
    (tmp_path / "finished.mp4").write_bytes(b"x")
    for path in (stale_dir / "video.h264", stale_dir, cache / "old.part", cache / "template.h264",
                 tmp_path / "finished.mp4"):
        os.utime(path, (old, old))
    # a live render's directory is old but its newest file is not
    os.utime(live_dir, (old, old))

    async def start():
        async with create_pgqueuer(WorkerSettings(dsn=role_dsn(database_dsn, "sg_worker"), media_root=tmp_path)):
            pass

    run_async(start)
    assert not stale_dir.exists() and not (cache / "old.part").exists()
    assert (live_dir / "video.h264").exists() and (cache / "new.part").exists()
    assert (cache / "template.h264").exists() and (tmp_path / "finished.mp4").exists()
    assert remove_stale_scratch(tmp_path) == []
