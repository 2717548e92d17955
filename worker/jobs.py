"""The worker's side of the job lifecycle: thin calls into the sg_worker SQL functions.

Each call is its own short transaction. Every call after the claim carries the claim's
token (the job's attempt number, sql/40_jobs.sql): when another worker has claimed the
job since, the database refuses and the call raises LostClaim, so a worker that was
stopped or cut off past the heartbeat timeout can never finish, requeue or refund a job
that someone else now owns.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("worker")


class BadPayload(ValueError):
    """A queue entry whose payload does not name a job."""


class LostClaim(Exception):
    """The database refused a call made under a claim that is no longer the job's current
    one (another worker claimed it since, or it is finished): stop working on the job."""

    def __init__(self, job_id: UUID, attempt: int, action: str):
        super().__init__(f"job {job_id}: claim {attempt} no longer holds the job ({action} refused)")
        self.job_id = job_id
        self.attempt = attempt
        self.action = action


def job_id_from_payload(payload: bytes | None) -> UUID:
    """The job id in a `render` queue entry ({"job_id": "<uuid>"}, as sql/30_credits.sql writes it)."""
    try:
        return UUID(json.loads(payload or b"")["job_id"])
    except (ValueError, KeyError, TypeError) as error:
        raise BadPayload(f"render payload without a job id: {payload!r}") from error


@dataclass(frozen=True)
class ClaimedJob:
    id: UUID
    user_id: UUID
    platform: str
    topic: str
    options: dict
    tier: str
    # the claim's token: this claim's attempt number
    attempts: int
    width: int
    height: int
    watermark: bool
    # what else the plan at the job's creation buys (app.claim_render): the free plan's
    # closing card, white-label, and the customer's branding (when the plan sells it)
    closing_card: bool | None = None
    white_label: bool = False
    logo_png: bytes | None = None
    primary_colour: str | None = None
    accent_colour: str | None = None


class JobControl:
    """Claim, report progress, finish or fail jobs through SECURITY DEFINER functions."""

    def __init__(self, pool: AsyncConnectionPool):
        self.pool = pool

    async def _call(self, sql: str, params: tuple):
        async with self.pool.connection() as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(sql, params)
            return await cur.fetchone()

    async def _fenced(self, job: ClaimedJob, action: str, sql: str, *params) -> None:
        row = await self._call(sql, (job.id, job.attempts, *params))
        if not row["done"]:
            raise LostClaim(job.id, job.attempts, action)

    async def claim(self, job_id: UUID) -> ClaimedJob | None:
        """A new claim on the job (superseding any earlier one); None when it is unknown
        or already finished."""
        row = await self._call("select * from app.claim_render(%s)", (job_id,))
        return ClaimedJob(**row) if row else None

    async def progress(self, job: ClaimedJob, percent: int) -> None:
        """Report progress; LostClaim when the job is no longer ours. A database error
        is only logged: a progress bar is not worth failing a render for."""
        try:
            await self._fenced(job, "progress", "select app.set_job_progress(%s, %s, %s) as done", percent)
        except psycopg.Error as error:
            log.warning("job %s: progress %d%% not recorded: %s", job.id, percent, error)

    async def complete(self, job: ClaimedJob, output_url: str | None) -> None:
        """Finish the job with its video; LostClaim when it is no longer ours."""
        await self._fenced(job, "complete", "select app.complete_job(%s, %s, %s) as done", output_url)

    async def retry(self, job: ClaimedJob, message: str) -> None:
        """Back to the queue after a failed attempt that will be retried; LostClaim when
        the job is no longer ours."""
        await self._fenced(job, "retry", "select app.retry_job(%s, %s, %s) as done", message)

    async def fail(self, job: ClaimedJob, message: str) -> None:
        """Fail for good and refund the credit (once); LostClaim when the job is no
        longer ours."""
        await self._fenced(job, "fail", "select app.fail_job(%s, %s, %s) as done", message)

    async def note(self, job: ClaimedJob, text: str) -> None:
        """Tell the user what the render could not do (e.g. no voice for the language)."""
        await self._call("select app.note_job(%s, %s) as done", (job.id, text))

    def bound(self, job: ClaimedJob) -> "ClaimControl":
        """This control as seen by the renderer of one claim."""
        return ClaimControl(self, job)


class ClaimControl:
    """What render_job gets: progress reports under one claim, addressed by job id as the
    renderer knows it. A refused report raises LostClaim inside the render, which stops it."""

    def __init__(self, control: JobControl, job: ClaimedJob):
        self._control = control
        self._job = job

    async def progress(self, job_id: UUID, percent: int) -> None:
        if job_id != self._job.id:
            raise ValueError(f"this control reports for job {self._job.id}, not {job_id}")
        await self._control.progress(self._job, percent)

    async def note(self, job_id: UUID, text: str) -> None:
        if job_id != self._job.id:
            raise ValueError(f"this control reports for job {self._job.id}, not {job_id}")
        await self._control.note(self._job, text)
