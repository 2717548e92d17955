"""Builds the worker's PgQueuer and registers its entrypoints.

The entrypoint names are the contract with the SQL that enqueues:
app.spend_credit_and_create_job inserts `render` entries into pgqueuer.
Delivery is at least once, so the handler is safe to run twice for one job: claiming
a finished job returns nothing, and every later call is fenced by the claim's token
(worker/jobs.py), so a worker that lost its job to another stops instead of finishing,
requeueing or refunding it. Whatever goes wrong in a render lands in the job's own
retry/fail path; the sweeper (app.sweep_stranded_jobs, every five minutes) catches a
job whose handler died between its calls.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import AsyncIterator, Callable
from uuid import UUID

import asyncpg
from pgqueuer import PgQueuer
from pgqueuer.errors import RetryRequested
from pgqueuer.models import Job
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from web.config import from_env

from . import render
from .billing import register_billing
from .branding import Brand, parse_colour
from .jobs import BadPayload, ClaimedJob, JobControl, LostClaim, job_id_from_payload
from .mail import MailSettings, compose, deliver
from .render import RenderSpec, render_short
from .sample import ensure_sample
from .script import writer_from_env
from .referrals import register_referrals
from .webhooks import register_webhooks

log = logging.getLogger("worker")

# A render is tried this many times in all before the job fails and is refunded.
MAX_ATTEMPTS = 3
# The resolutions the plans sell; their skip templates are built at start-up.
PLAN_SIZES = [(720, 1280), (1080, 1920), (2160, 3840)]
# What users see (the API's `error`, the dashboard). Never an exception's text: that can
# name server paths and internals, and goes to the log instead.
RETRYING_MESSAGE = "Render failed; retrying."
FAILED_MESSAGE = "Render failed — we refunded your credit."
# A worker that lost its job leaves the shared queue entry due again this much later.
LOST_CLAIM_RECHECK = timedelta(minutes=10)
# A render's scratch directory (worker/render.py makes them in MEDIA_ROOT) untouched this
# long belongs to no running render: a render that was SIGKILLed left it behind.
STALE_SCRATCH_SECONDS = 3600


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


def output_path(media_root: Path, job_id) -> Path:
    return media_root / f"{job_id}.mp4"


def render_spec(job: ClaimedJob) -> RenderSpec:
    """What the job's plan buys, as the renderer takes it."""
    brand = None
    if job.logo_png or job.primary_colour or job.accent_colour:
        brand = Brand(logo_png=job.logo_png and bytes(job.logo_png), primary=parse_colour(job.primary_colour),
                      accent=parse_colour(job.accent_colour))
    return RenderSpec(job.width, job.height, job.watermark, closing_card=job.closing_card, brand=brand,
                      white_label=job.white_label)


async def render_job(control: JobControl, settings: WorkerSettings, job: ClaimedJob) -> str:
    """Render a claimed job in a thread (the event loop keeps heartbeating), reporting
    progress as it goes; returns the video's URL path."""
    loop = asyncio.get_running_loop()

    def progress(percent: int) -> None:
        asyncio.run_coroutine_threadsafe(control.progress(job.id, percent), loop).result(timeout=30)

    options = job.options or {}
    duration = int(options.get("duration_seconds", 20))
    spec = render_spec(job)
    rendered = await asyncio.to_thread(settings.renderer, job.topic, job.platform, duration, spec,
                                       output_path(settings.media_root, job.id), progress,
                                       settings.media_root / ".cache", seed=job.id.int, voice=options.get("voice"),
                                       script=options.get("script"), writer=writer_from_env())
    notes = getattr(rendered, "notes", None)
    if notes:
        await control.note(job.id, " ".join(notes))
    return f"/media/{job.id}.mp4"


def _retry_delay(settings: WorkerSettings, attempt: int) -> timedelta:
    return timedelta(seconds=settings.retry_base_seconds * 4 ** max(attempt - 1, 0))


async def _after_failure(control: JobControl, settings: WorkerSettings, job: ClaimedJob, error: Exception) -> None:
    """The job's own retry/fail path for any exception of an attempt: retried (pgqueuer
    re-delivers after a back-off) below MAX_ATTEMPTS, failed and refunded at it. When the
    database cannot even record that, the entry is re-delivered anyway and the next
    claim supersedes this one; it never falls through to pgqueuer's delete."""
    log.warning("job %s attempt %d failed: %s: %s", job.id, job.attempts, type(error).__name__, error,
                exc_info=error)
    delay = _retry_delay(settings, job.attempts)
    try:
        # a permanent failure (a script writer that refuses the topic) is not retried
        if job.attempts < MAX_ATTEMPTS and not getattr(error, "permanent", False):
            await control.retry(job, RETRYING_MESSAGE)
            log.info("job %s: retrying in %s", job.id, delay)
        else:
            # a permanent failure's own message is written for the user (no server detail)
            message = f"{error} We refunded your credit." if getattr(error, "permanent", False) else FAILED_MESSAGE
            await control.fail(job, message)
            log.error("job %s failed for good after %d attempts; credit refunded", job.id, job.attempts)
            return
    except LostClaim as lost:
        _stand_down(lost)
    except Exception as second:  # noqa: BLE001 - the entry is re-delivered instead
        log.warning("job %s: could not record the failure (%s); re-delivering", job.id, second)
    raise RetryRequested(delay=delay, reason=f"{type(error).__name__}: {error}"[:500]) from error


def _stand_down(lost: LostClaim) -> None:
    """Stop working on a job another worker now holds. That worker was handed this same
    queue entry, and returning would delete it from under it (pgqueuer logs the entry
    done); so it is put back with a long delay instead, a safety net that the holder's
    completion removes and that, if the holder dies too, re-delivers the job."""
    log.warning("%s; another worker owns it now, stopping", lost)
    raise RetryRequested(delay=LOST_CLAIM_RECHECK, reason=str(lost))


def register_entrypoints(pgq: PgQueuer, control: JobControl, settings: WorkerSettings) -> None:
    """Attach the handlers. `hold` keeps an entry whose handler raised anyway (it should
    not: every path above ends in the job's retry or fail) instead of deleting it."""

    @pgq.entrypoint("render", on_failure="hold")
    async def render(queued: Job) -> None:
        try:
            job_id = job_id_from_payload(queued.payload)
        except BadPayload:
            log.error("dropping queue entry %s: %r", queued.id, queued.payload)
            return
        try:
            job = await control.claim(job_id)
        except Exception as error:  # noqa: BLE001 - nothing changed; try the claim again later
            log.warning("job %s: claim failed (%s); re-delivering", job_id, error)
            raise RetryRequested(delay=_retry_delay(settings, queued.attempts + 1), reason=str(error)[:500]) from error
        if job is None:
            log.info("job %s already finished; nothing to do", job_id)
            return
        try:
            if job.attempts > MAX_ATTEMPTS:
                # claimed again and again by workers that died mid-render (a poison job)
                await control.fail(job, FAILED_MESSAGE)
                log.error("job %s: claim %d is past the attempt limit; failed and refunded", job_id, job.attempts)
                return
            log.info("job %s: rendering %dx%d (attempt %d)", job_id, job.width, job.height, job.attempts)
            url = await render_job(control.bound(job), settings, job)
            await control.complete(job, url)
        except LostClaim as lost:
            _stand_down(lost)
        except Exception as error:  # noqa: BLE001 - every failure is retried or reported
            await _after_failure(control, settings, job, error)
            return
        log.info("job %s completed", job_id)


def register_media_erasure(pgq: PgQueuer, settings: WorkerSettings) -> None:
    """`erase_media`: an account's deletion (sql/55_account_erasure.sql) queues one, due
    when the renders that were running then are over, so a video such a render wrote after
    the deletion (its completion refused) is deleted too. Runs in a render lane, which sees
    MEDIA_ROOT."""
    from web.erasure import remove_job_media

    @pgq.entrypoint("erase_media")
    async def erase_media(queued: Job) -> None:
        try:
            job_ids = [UUID(str(job_id)) for job_id in json.loads(queued.payload or b"")["job_ids"]]
        except (ValueError, KeyError, TypeError):
            log.error("dropping erase_media entry %s: %r", queued.id, queued.payload)
            return
        removed = await asyncio.to_thread(remove_job_media, settings.media_root, job_ids)
        log.info("erase_media: %d file(s) of %d job(s) of a deleted account removed", removed, len(job_ids))


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
        except Exception as error:  # noqa: BLE001 - it would fail the same way every time
            log.exception("mail %s (%s) cannot be built; recorded as failed, not retried", email_id, row["kind"])
            async with pool.connection() as conn:
                await conn.execute("select app.fail_email(%s, %s)", (email_id, f"cannot be built: {error!r}"[:500]))
            return
        try:
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


# Hourly: free subscriptions whose month ended get their credits back (an ended paid plan's
# leftover credits expire within the hour of its period's end).
FREE_RENEWAL_CRON = "15 * * * *"
# Daily, just after a UTC day is over (and its ten-minute grace): sum it for the analysts.
REPORTING_ROLLUP_CRON = "20 0 * * *"
# Hourly: the login throttle's table keeps a day of attempts, not every one ever made.
LOGIN_ATTEMPT_PURGE_CRON = "40 * * * *"
# Every five minutes: unfinished jobs that lost their queue entry go back to the queue.
SWEEP_CRON = "*/5 * * * *"
# kept Idempotency-Key answers past their 24 hours, and finished rate-limit windows
API_BOOKKEEPING_PURGE_CRON = "*/10 * * * *"
# A job is stranded when no worker has touched it for this long (renders report progress
# several times a minute) and it has no queue entry.
SWEEP_STALE_AFTER = timedelta(minutes=10)


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

    @pgq.schedule("purge_api_bookkeeping", API_BOOKKEEPING_PURGE_CRON)
    async def purge_api_bookkeeping(schedule) -> None:
        log.info("API bookkeeping: %d expired idempotency answers and %d rate-limit windows forgotten",
                 await call("purge_idempotency_keys"), await call("purge_rate_limit_windows"))

    @pgq.schedule("sweep_stranded_jobs", SWEEP_CRON)
    async def sweep_stranded_jobs(schedule) -> None:
        for job_id, outcome in await sweep(pool):
            log.warning("sweeper: stranded job %s %s", job_id, outcome)


async def sweep(pool: AsyncConnectionPool, stale_after: timedelta = SWEEP_STALE_AFTER) -> list[tuple]:
    """One sweep for stranded jobs: (job id, 'requeued' | 'failed') for each acted on."""
    async with pool.connection() as conn:
        cur = await conn.execute("select * from app.sweep_stranded_jobs(%s, %s)", (stale_after, MAX_ATTEMPTS))
        return await cur.fetchall()


def remove_stale_scratch(media_root: Path, older_than: float = STALE_SCRATCH_SECONDS) -> list[Path]:
    """Delete render scratch directories (`render-*`) and half-written cache files
    (`.cache/*.part`) that nothing has touched for `older_than` seconds: what renders
    killed mid-way left behind. Younger ones may belong to a render running in another
    worker on this machine and are left alone. Returns what was removed."""
    cutoff = time.time() - older_than
    removed = []
    for path in [*media_root.glob("render-*"), *(media_root / ".cache").glob("*.part")]:
        try:
            if _newest_mtime(path) >= cutoff:
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError as error:  # another worker removed it first, or it is not ours to remove
            log.warning("could not remove stale render scratch %s: %s", path, error)
    return removed


def _newest_mtime(path: Path) -> float:
    """The latest modification time of a path and, for a directory, anything in it."""
    newest = path.stat().st_mtime
    if path.is_dir():
        for child in path.rglob("*"):
            newest = max(newest, child.stat().st_mtime)
    return newest


def _warm_templates(cache_dir: Path, sample_media_root: Path | None = None) -> None:
    """Build each plan size's skip frame and load the narration voice in the background,
    so no user waits for them; then the landing page's sample video if it is missing."""
    try:
        render.warm_up([size for size in PLAN_SIZES], cache_dir)
    except Exception:  # noqa: BLE001 - a render builds what it needs on demand anyway
        log.exception("could not warm up the renderer")
    if sample_media_root is not None:
        try:
            ensure_sample(sample_media_root, cache_dir)
        except Exception:  # noqa: BLE001 - the landing page shows its poster-less version meanwhile
            log.exception("could not render the landing page's sample video")


def _asyncpg_params(dsn: str) -> dict:
    """asyncpg.connect keyword arguments for a libpq DSN (URL or key=value)."""
    params = conninfo_to_dict(dsn)
    names = {"host": "host", "port": "port", "user": "user", "password": "password", "dbname": "database"}
    return {names[key]: value for key, value in params.items() if key in names}


# What each lane of a worker process runs. Renders take seconds to minutes each; mail,
# Stripe re-reads and the schedules take milliseconds. In one lane a burst of renders
# held every slot and a customer who had just paid waited minutes for their plan: so
# `python -m worker` runs the two as separate lanes, each with its own slots.
LANES = ("render", "light", "all")


@asynccontextmanager
async def create_pgqueuer(settings: WorkerSettings | None = None, lane: str = "all") -> AsyncIterator[PgQueuer]:
    """Factory for pgqueuer.run: an asyncpg connection for the queue and a small psycopg
    pool for the job-control calls, with the entrypoints of `lane` (render: renders only;
    light: mail, billing and the schedules; all: both)."""
    if lane not in LANES:
        raise ValueError(f"lane must be one of {', '.join(LANES)}")
    settings = settings or WorkerSettings.from_env()
    settings.media_root.mkdir(parents=True, exist_ok=True)
    if lane != "light":
        for path in remove_stale_scratch(settings.media_root):
            log.info("removed stale render scratch %s", path)
        # the sample comes from the real renderer only (tests that stub it render none)
        sample_root = settings.media_root if settings.renderer is render_short else None
        threading.Thread(target=_warm_templates, args=(settings.media_root / ".cache", sample_root),
                         daemon=True).start()
    queue_conn = await asyncpg.connect(**_asyncpg_params(settings.dsn))
    pool = AsyncConnectionPool(settings.dsn, min_size=1, max_size=int(os.environ.get("WORKER_POOL_MAX", "4")),
                               kwargs={"autocommit": True}, open=False)
    await pool.open()
    try:
        pgq = PgQueuer.from_asyncpg_connection(queue_conn)
        if lane != "light":
            register_entrypoints(pgq, JobControl(pool), settings)
            register_media_erasure(pgq, settings)
        if lane != "render":
            register_schedules(pgq, pool)
            register_mail(pgq, pool, MailSettings.from_env())
            register_billing(pgq, settings.dsn)
            register_webhooks(pgq, pool)
            register_referrals(pgq, pool)
        yield pgq
    finally:
        await pool.close()
        await queue_conn.close()
