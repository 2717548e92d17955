"""Builds the worker's PgQueuer and registers its entrypoints.

The entrypoint names are the contract with the SQL that enqueues:
app.spend_credit_and_create_job inserts `render` entries into pgqueuer.
Delivery is at least once, so the handler is safe to run twice for one job: claiming
a finished job returns nothing, and completing or failing twice changes nothing.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import AsyncIterator, Callable

import asyncpg
from pgqueuer import PgQueuer
from pgqueuer.errors import RetryRequested
from pgqueuer.models import Job
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from web.config import from_env

from . import render
from .jobs import BadPayload, ClaimedJob, JobControl, job_id_from_payload
from .mail import MailSettings, compose, deliver
from .render import RenderSpec, render_short
from .script import writer_from_env

log = logging.getLogger("worker")

# A render is tried this many times in all before the job fails and is refunded.
MAX_ATTEMPTS = 3
# The resolutions the plans sell; their skip templates are built at start-up.
PLAN_SIZES = [(720, 1280), (1080, 1920), (2160, 3840)]


@dataclass
class WorkerSettings:
    dsn: str
    media_root: Path
    # seconds before retry n (n = 1, 2): base, base × 4
    retry_base_seconds: float = 2.0
    renderer: Callable = field(default=render_short)

    @classmethod
    def from_env(cls) -> "WorkerSettings":
        config = from_env()
        return cls(dsn=config["WORKER_DATABASE_URL"], media_root=Path(config["MEDIA_ROOT"]),
                   retry_base_seconds=float(os.environ.get("WORKER_RETRY_BASE_SECONDS", "2")))


def _readable(error: Exception) -> str:
    """What the user sees for a failed render: the error without a traceback."""
    text = str(error).strip() or type(error).__name__
    return f"Render failed: {text}"[:500]


def output_path(media_root: Path, job_id) -> Path:
    return media_root / f"{job_id}.mp4"


async def render_job(control: JobControl, settings: WorkerSettings, job: ClaimedJob) -> str:
    """Render a claimed job in a thread (the event loop keeps heartbeating), reporting
    progress as it goes; returns the video's URL path."""
    loop = asyncio.get_running_loop()

    def progress(percent: int) -> None:
        asyncio.run_coroutine_threadsafe(control.progress(job.id, percent), loop).result(timeout=30)

    options = job.options or {}
    duration = int(options.get("duration_seconds", 20))
    spec = RenderSpec(job.width, job.height, job.watermark)
    rendered = await asyncio.to_thread(settings.renderer, job.topic, job.platform, duration, spec,
                                       output_path(settings.media_root, job.id), progress,
                                       settings.media_root / ".cache", seed=job.id.int, voice=options.get("voice"),
                                       script=options.get("script"), writer=writer_from_env())
    notes = getattr(rendered, "notes", None)
    if notes:
        async with control.pool.connection() as conn:
            await conn.execute("select app.note_job(%s, %s)", (job.id, " ".join(notes)))
    return f"/media/{job.id}.mp4"


def register_entrypoints(pgq: PgQueuer, control: JobControl, settings: WorkerSettings) -> None:
    """Attach the handlers."""

    @pgq.entrypoint("render")
    async def render(queued: Job) -> None:
        try:
            job_id = job_id_from_payload(queued.payload)
        except BadPayload:
            log.error("dropping queue entry %s: %r", queued.id, queued.payload)
            return
        job = await control.claim(job_id)
        if job is None:
            log.info("job %s already finished; nothing to do", job_id)
            return
        log.info("job %s: rendering %dx%d (attempt %d)", job_id, job.width, job.height, job.attempts)
        try:
            url = await render_job(control, settings, job)
        except Exception as error:  # noqa: BLE001 - every failure is retried or reported
            message = _readable(error)
            # a permanent failure (a script writer that refuses the topic) is not retried
            if job.attempts < MAX_ATTEMPTS and not getattr(error, "permanent", False):
                delay = timedelta(seconds=settings.retry_base_seconds * 4 ** (job.attempts - 1))
                log.warning("job %s attempt %d failed (%s); retrying in %s", job_id, job.attempts, message, delay)
                await control.retry(job_id, message)
                raise RetryRequested(delay=delay, reason=message) from error
            log.error("job %s failed for good after %d attempts: %s", job_id, job.attempts, message)
            await control.fail(job_id, message)
            return
        if await control.complete(job_id, url):
            log.info("job %s completed", job_id)


# A mail that fails to send is retried this many times in all, backing off.
MAIL_ATTEMPTS = 5


def register_mail(pgq: PgQueuer, pool: AsyncConnectionPool, settings: MailSettings) -> None:
    """`send_email`: one outbox row per entry; sending twice is prevented by the row's
    sent_at (the SQL that queued it already made the row unique per event)."""

    @pgq.entrypoint("send_email")
    async def send_email(queued: Job) -> None:
        try:
            email_id = json.loads(queued.payload or b"")["email_id"]
        except (ValueError, KeyError, TypeError):
            log.error("dropping mail entry %s: %r", queued.id, queued.payload)
            return
        async with pool.connection() as conn:
            cur = await conn.cursor(row_factory=dict_row).execute("select * from app.claim_email(%s)", (email_id,))
            row = await cur.fetchone()
        if row is None:
            return  # sent already
        try:
            message = compose(settings, row["kind"], row["address"], row["full_name"], row["data"], row["token"])
            await asyncio.to_thread(deliver, settings, message)
        except Exception as error:  # noqa: BLE001 - recorded, then retried
            async with pool.connection() as conn:
                await conn.execute("select app.finish_email(%s, %s)", (email_id, str(error)[:500]))
            if queued.attempts + 1 < MAIL_ATTEMPTS:
                raise RetryRequested(delay=timedelta(seconds=5 * 3 ** queued.attempts), reason=str(error)) from error
            log.error("giving up on mail %s: %s", email_id, error)
            return
        async with pool.connection() as conn:
            await conn.execute("select app.finish_email(%s)", (email_id,))
        log.info("mail %s (%s) sent", email_id, row["kind"])


# Daily, in the small hours: free subscriptions whose month ended get their credits back.
FREE_RENEWAL_CRON = "15 3 * * *"
# Daily, just after a UTC day is over (and its ten-minute grace): sum it for the analysts.
REPORTING_ROLLUP_CRON = "20 0 * * *"
# Hourly: the login throttle's table keeps a day of attempts, not every one ever made.
LOGIN_ATTEMPT_PURGE_CRON = "40 * * * *"


def register_schedules(pgq: PgQueuer, pool: AsyncConnectionPool) -> None:
    """Periodic jobs. pgqueuer runs each schedule once per tick across all workers, and the
    SQL is once-per-period anyway, so a tick that fires twice changes nothing."""

    async def call(function: str):
        async with pool.connection() as conn:
            cur = await conn.execute(f"select app.{function}()")
            return (await cur.fetchone())[0]

    @pgq.schedule("renew_free_subscriptions", FREE_RENEWAL_CRON)
    async def renew_free(schedule) -> None:
        log.info("free renewal: %d subscription(s) renewed", await call("renew_free_subscriptions"))

    @pgq.schedule("roll_up_reporting", REPORTING_ROLLUP_CRON)
    async def roll_up_reporting(schedule) -> None:
        log.info("reporting roll-up: finished days before %s summed", await call("roll_up_reporting"))

    @pgq.schedule("purge_login_attempts", LOGIN_ATTEMPT_PURGE_CRON)
    async def purge_login_attempts(schedule) -> None:
        log.info("login attempts: %d older than a day forgotten", await call("purge_login_attempts"))


def _warm_templates(cache_dir: Path) -> None:
    """Build each plan size's skip frame and load the narration voice in the background,
    so no user waits for them."""
    try:
        render.warm_up([size for size in PLAN_SIZES], cache_dir)
    except Exception:  # noqa: BLE001 - a render builds what it needs on demand anyway
        log.exception("could not warm up the renderer")


def _asyncpg_params(dsn: str) -> dict:
    """asyncpg.connect keyword arguments for a libpq DSN (URL or key=value)."""
    params = conninfo_to_dict(dsn)
    names = {"host": "host", "port": "port", "user": "user", "password": "password", "dbname": "database"}
    return {names[key]: value for key, value in params.items() if key in names}


@asynccontextmanager
async def create_pgqueuer(settings: WorkerSettings | None = None) -> AsyncIterator[PgQueuer]:
    """Factory for pgqueuer.run: an asyncpg connection for the queue and a small psycopg
    pool for the job-control calls."""
    settings = settings or WorkerSettings.from_env()
    settings.media_root.mkdir(parents=True, exist_ok=True)
    threading.Thread(target=_warm_templates, args=(settings.media_root / ".cache",), daemon=True).start()
    queue_conn = await asyncpg.connect(**_asyncpg_params(settings.dsn))
    pool = AsyncConnectionPool(settings.dsn, min_size=1, max_size=int(os.environ.get("WORKER_POOL_MAX", "4")),
                               kwargs={"autocommit": True}, open=False)
    await pool.open()
    try:
        pgq = PgQueuer.from_asyncpg_connection(queue_conn)
        register_entrypoints(pgq, JobControl(pool), settings)
        register_schedules(pgq, pool)
        register_mail(pgq, pool, MailSettings.from_env())
        yield pgq
    finally:
        await pool.close()
        await queue_conn.close()
