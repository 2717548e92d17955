"""The worker's side of the job lifecycle: thin calls into the sg_worker SQL functions.

Each call is its own short transaction, and each SQL function is a no-op when
repeated, because pgqueuer delivers a job at least once.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from uuid import UUID

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool


class BadPayload(ValueError):
    """A queue entry whose payload does not name a job."""


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
    attempts: int
    width: int
    height: int
    watermark: bool


class JobControl:
    """Claim, report progress, finish or fail jobs through SECURITY DEFINER functions."""

    def __init__(self, pool: AsyncConnectionPool):
        self.pool = pool

    async def _call(self, sql: str, params: tuple):
        async with self.pool.connection() as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(sql, params)
            return await cur.fetchone()

    async def claim(self, job_id: UUID) -> ClaimedJob | None:
        """Mark the job processing; None when it is unknown or already finished."""
        row = await self._call("select * from app.claim_job(%s)", (job_id,))
        return ClaimedJob(**row) if row else None

    async def progress(self, job_id: UUID, percent: int) -> None:
        await self._call("select app.set_job_progress(%s, %s)", (job_id, percent))

    async def complete(self, job_id: UUID, output_url: str | None) -> bool:
        row = await self._call("select app.complete_job(%s, %s) as done", (job_id, output_url))
        return row["done"]

    async def retry(self, job_id: UUID, error_message: str) -> bool:
        """Back to the queue after a failed attempt that will be retried."""
        row = await self._call("select app.retry_job(%s, %s) as done", (job_id, error_message))
        return row["done"]

    async def fail(self, job_id: UUID, error_message: str) -> bool:
        """Fail for good and refund the credit (once)."""
        row = await self._call("select app.fail_job(%s, %s) as done", (job_id, error_message))
        return row["done"]
