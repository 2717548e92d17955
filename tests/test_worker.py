"""The pgqueuer worker: started for real (as `python -m worker`, or in-process with a
faulty renderer), it renders queued jobs, retries failures, refunds once, and survives
a SIGKILLed peer."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pgqueuer
import pytest
from pgqueuer.types import QueueExecutionMode

from web.config import role_dsn
from worker.main import WorkerSettings, create_pgqueuer
from worker.render import RenderSpec, render_short, watermark_box

from .conftest import acting_as, api_signup, balance, bearer, ledger_sum, set_tier, wait_for
from .media import frame_rgb, probe, region_contrast

ROOT = Path(__file__).resolve().parent.parent


def start_worker(database_dsn: str, media_root: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": database_dsn, "MEDIA_ROOT": str(media_root)}
    return subprocess.Popen([sys.executable, "-m", "worker", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop(worker: subprocess.Popen) -> str:
    if worker.poll() is None:
        worker.terminate()
    return worker.communicate(timeout=60)[0]


def job_row(conn, user_id, job_id) -> dict:
    with acting_as(conn, user_id):
        return conn.execute("select * from jobs where id = %s", (job_id,)).fetchone()


def run_in_process(database_dsn: str, media_root: Path, renderer) -> None:
    """Run the worker in this process until the queue (retries included) is drained."""
    settings = WorkerSettings(dsn=role_dsn(database_dsn, "sg_worker"), media_root=media_root,
                              retry_base_seconds=0.05, renderer=renderer)

    async def main():
        await asyncio.wait_for(pgqueuer.run(lambda: create_pgqueuer(settings), mode=QueueExecutionMode.drain,
                                            batch_size=1, max_concurrent_tasks=2,
                                            dequeue_timeout=timedelta(seconds=1), shutdown=asyncio.Event()),
                               timeout=120)

    # in a thread of its own: the browser tests' Playwright keeps an event loop running in this one
    outcome: list[BaseException] = []

    def target():
        try:
            asyncio.run(main())
        except BaseException as error:  # noqa: BLE001 - re-raised below, in the test's thread
            outcome.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if outcome:
        raise outcome[0]


def generate(api, auth, **payload) -> str:
    response = api.post("/v1/shorts/generate", json={"platform": "tiktok", "topic": "the history of coffee",
                                                     **payload}, headers=auth)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["job_id"]


def test_worker_renders_jobs_for_each_tier_and_serves_them_to_their_owner(
        api, connect, database_dsn, media_root, empty_queue):
    admin = connect("postgres")
    free = api_signup(api)
    starter = api_signup(api)
    set_tier(admin, starter["user"]["id"], "starter")
    jobs = {"free": (free, generate(api, bearer(free["access_token"]))),
            "starter": (starter, generate(api, bearer(starter["access_token"]), duration_seconds=15))}
    worker = start_worker(database_dsn, media_root)
    try:
        for tier, (user, job_id) in jobs.items():
            auth = bearer(user["access_token"])
            done = wait_for(lambda: api.get(f"/v1/jobs/{job_id}", headers=auth).get_json()["status"] == "completed",
                            timeout=90)
            assert done, api.get(f"/v1/jobs/{job_id}", headers=auth).get_json()
    finally:
        output = stop(worker)
    specs = {"free": (RenderSpec(720, 1280, True), 20), "starter": (RenderSpec(1080, 1920, False), 15)}
    for tier, (user, job_id) in jobs.items():
        auth = bearer(user["access_token"])
        job = api.get(f"/v1/jobs/{job_id}", headers=auth).get_json()
        assert job["progress"] == 100 and job["video_url"] == f"/media/{job_id}.mp4" and job["finished_at"]
        video = api.get(job["video_url"], headers=auth)
        assert video.status_code == 200 and video.mimetype == "video/mp4"
        partial = api.get(job["video_url"], headers={**auth, "Range": "bytes=0-99"})
        assert partial.status_code == 206 and len(partial.data) == 100
        path = media_root / f"{job_id}.mp4"
        spec, duration = specs[tier]
        info = probe(path)
        assert (info.width, info.height) == (spec.width, spec.height) and abs(info.duration - duration) <= 0.5
        white, dark = region_contrast(frame_rgb(path, 2, spec.width, spec.height), spec.width,
                                      watermark_box(spec, "tiktok"))
        assert (white > 0.03) is spec.watermark, (tier, white, dark)
        # nobody else gets the file, signed in or not
        assert api.get(job["video_url"]).status_code == 401
        stranger = bearer(api_signup(api)["access_token"])
        assert api.get(job["video_url"], headers=stranger).status_code == 404
    assert "completed" in output
    # no partial files left behind
    assert not list(media_root.glob("render-*/")) and not list(media_root.glob("*.part"))


def test_a_render_that_fails_three_times_fails_the_job_and_refunds_once(
        api, connect, database_dsn, media_root, empty_queue):
    user = api_signup(api)
    auth = bearer(user["access_token"])
    job_id = generate(api, auth)
    calls = []

    def broken_renderer(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("the GPU caught fire")

    run_in_process(database_dsn, media_root, broken_renderer)
    assert len(calls) == 3
    job = api.get(f"/v1/jobs/{job_id}", headers=auth).get_json()
    # the user sees that the credit came back, never the exception (it can name server paths)
    assert job["status"] == "failed" and job["error"] == "Render failed — we refunded your credit."
    admin = connect("postgres")
    uid = user["user"]["id"]
    assert job_row(admin, uid, job_id)["attempts"] == 3
    assert balance(admin, uid) == 5 == ledger_sum(admin, uid)
    refunds = admin.execute("select count(*) as n from credit_ledger where job_id = %s and reason = 'refund'",
                            (job_id,)).fetchone()["n"]
    assert refunds == 1


def test_a_render_that_fails_once_is_retried_and_completes(api, connect, database_dsn, media_root, empty_queue):
    user = api_signup(api)
    auth = bearer(user["access_token"])
    job_id = generate(api, auth, duration_seconds=15)
    calls = []

    def flaky_renderer(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("disk hiccup")
        return render_short(*args, **kwargs)

    run_in_process(database_dsn, media_root, flaky_renderer)
    job = api.get(f"/v1/jobs/{job_id}", headers=auth).get_json()
    assert job["status"] == "completed" and len(calls) == 2
    admin = connect("postgres")
    assert balance(admin, user["user"]["id"]) == 4
    assert admin.execute("select count(*) as n from credit_ledger where job_id = %s and reason = 'refund'",
                         (job_id,)).fetchone()["n"] == 0


def test_redelivering_a_finished_job_changes_nothing(api, connect, database_dsn, media_root, empty_queue):
    user = api_signup(api)
    auth = bearer(user["access_token"])
    job_id = generate(api, auth, duration_seconds=15)
    run_in_process(database_dsn, media_root, render_short)
    admin = connect("postgres")
    before = job_row(admin, user["user"]["id"], job_id)
    assert before["status"] == "completed"
    admin.execute("insert into pgqueuer (priority, entrypoint, payload, status) values "
                  "(0, 'render', convert_to(json_build_object('job_id', %s::text)::text, 'UTF8'), 'queued')",
                  (job_id,))
    run_in_process(database_dsn, media_root, lambda *a, **k: pytest.fail("a finished job was rendered again"))
    assert job_row(admin, user["user"]["id"], job_id) == before


@pytest.mark.slow
def test_a_sigkilled_worker_leaves_the_job_to_another(api, connect, database_dsn, tmp_path, empty_queue):
    """Worker 1 dies mid-render (SIGKILL: no cleanup at all); worker 2 re-picks the job
    after the heartbeat timeout and finishes it; the credit is taken once, never refunded."""
    admin = connect("postgres")
    user = api_signup(api)
    uid = user["user"]["id"]
    set_tier(admin, uid, "starter")
    auth = bearer(user["access_token"])
    # a narrated 1080p render takes seconds: long enough to be interrupted
    job_id = generate(api, auth, duration_seconds=20)
    first = start_worker(database_dsn, tmp_path)
    try:
        assert wait_for(lambda: job_row(admin, uid, job_id)["status"] == "processing", timeout=60, interval=0.05)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        stop(first)
    assert job_row(admin, uid, job_id)["status"] == "processing"
    second = start_worker(database_dsn, tmp_path, "--heartbeat-timeout", "2")
    try:
        assert wait_for(lambda: job_row(admin, uid, job_id)["status"] == "completed", timeout=180), \
            job_row(admin, uid, job_id)
    finally:
        output = stop(second)
    row = job_row(admin, uid, job_id)
    assert row["attempts"] == 2, output
    assert probe(tmp_path / f"{job_id}.mp4").height == 1920
    assert balance(admin, uid) == 4 == ledger_sum(admin, uid)
    movements = admin.execute("select reason from credit_ledger where job_id = %s", (job_id,)).fetchall()
    assert [m["reason"] for m in movements] == ["render"]


def test_the_worker_schedules_renewals_roll_ups_and_purges(database_dsn, media_root):
    settings = WorkerSettings(dsn=role_dsn(database_dsn, "sg_worker"), media_root=media_root)

    async def scheduled() -> set[str]:
        async with create_pgqueuer(settings) as pgq:
            return {key.entrypoint for key in pgq.sm.registry}

    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(asyncio.run(scheduled())))
    thread.start()
    thread.join()
    assert outcome == [{"renew_free_subscriptions", "roll_up_reporting", "purge_login_attempts",
                        "sweep_stranded_jobs", "reconcile_stripe", "emit_credits_expiring",
                        "purge_api_bookkeeping"}]


def test_renders_never_hold_the_slots_a_payments_reread_needs(database_dsn, media_root, connect, make_user,
                                                              empty_queue):
    """Renders and the light work (mail, Stripe re-reads, schedules) run in separate lanes
    of one worker process: with every render slot busy, queued mail still goes out at once
    (in one lane, a burst of renders made a paying customer wait minutes for their plan)."""
    from worker.__main__ import run_lanes

    admin = connect("postgres")
    release = threading.Event()
    started = []

    def slow_renderer(*args, **kwargs):
        started.append(time.monotonic())
        release.wait(60)
        raise RuntimeError("stopped by the test")

    users = [make_user() for _ in range(3)]
    for uid in users:
        with acting_as(admin, uid):
            admin.execute("select * from app.spend_credit_and_create_job('tiktok', 'a render that takes long')")
    settings = WorkerSettings(dsn=role_dsn(database_dsn, "sg_worker"), media_root=media_root,
                              retry_base_seconds=60, renderer=slow_renderer)
    shutdown = asyncio.Event()
    loop_holder = []

    async def main():
        loop_holder.append(asyncio.get_running_loop())
        await run_lanes(shutdown, concurrency=2, poll_interval=timedelta(seconds=0.2), settings=settings)

    thread = threading.Thread(target=lambda: asyncio.run(main()))
    thread.start()
    try:
        assert wait_for(lambda: len(started) >= 2, timeout=60), "the render lane did not start"
        # queued once every render slot is busy (queued before, its higher priority would win a slot)
        admin.execute("select app._queue_email(%s::uuid, 'receipt', %s, %s::jsonb)",
                      (users[0], f"lane-test:{users[0]}", '{"plan": "Starter", "credits": 20}'))
        sent = wait_for(lambda: admin.execute(
            "select sent_at is not null or last_error is not null as done from email_outbox where dedupe_key = %s",
            (f"lane-test:{users[0]}",)).fetchone()["done"], timeout=15)
        assert sent, "mail waited behind the renders"
        assert len(started) == 2  # both render slots still busy meanwhile
    finally:
        release.set()
        loop_holder[0].call_soon_threadsafe(shutdown.set)
        thread.join(timeout=120)
