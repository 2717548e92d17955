"""Builds the worker's PgQueuer and registers its entrypoints.

The entrypoint names are the contract with the SQL that enqueues:
app.spend_credit_and_create_job inserts `render` entries into pgqueuer.
"""
from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from typing import AsyncIterator

import asyncpg
from psycopg.conninfo import conninfo_to_dict
from pgqueuer import PgQueuer
from pgqueuer.models import Job
from psycopg_pool import AsyncConnectionPool

from web.config import from_env

from .jobs import BadPayload, JobControl, job_id_from_payload

log = logging.getLogger("worker")


def worker_dsn() -> str:
    """The sg_worker DSN (WORKER_DATABASE_URL, or DATABASE_URL with the user swapped)."""
    return from_env()["WORKER_DATABASE_URL"]


def register_entrypoints(pgq: PgQueuer, control: JobControl) -> None:
    """Attach the handlers; each is safe to run twice for one job."""

    @pgq.entrypoint("render")
    async def render(job: Job) -> None:
        try:
            job_id = job_id_from_payload(job.payload)
        except BadPayload:
            log.error("dropping queue entry %s: %r", job.id, job.payload)
            return
        claimed = await control.claim(job_id)
        if claimed is None:
            log.info("job %s already finished; nothing to do", job_id)
            return
        await control.complete(job_id, None)
        log.info("job %s completed", job_id)


def _asyncpg_params(dsn: str) -> dict:
    """asyncpg.connect keyword arguments for a libpq DSN (URL or key=value)."""
    params = conninfo_to_dict(dsn)
    names = {"host": "host", "port": "port", "user": "user", "password": "password", "dbname": "database"}
    return {names[key]: value for key, value in params.items() if key in names}


@asynccontextmanager
async def create_pgqueuer(dsn: str | None = None) -> AsyncIterator[PgQueuer]:
    """Factory for pgqueuer.run: one autocommit connection for the queue (pgqueuer's
    requirement) and a small pool for the job-control calls handlers make."""
    dsn = dsn or worker_dsn()
    queue_conn = await asyncpg.connect(**_asyncpg_params(dsn))
    pool = AsyncConnectionPool(dsn, min_size=1, max_size=int(os.environ.get("WORKER_POOL_MAX", "4")),
                               kwargs={"autocommit": True}, open=False)
    await pool.open()
    try:
        pgq = PgQueuer.from_asyncpg_connection(queue_conn)
        register_entrypoints(pgq, JobControl(pool))
        yield pgq
    finally:
        await pool.close()
        await queue_conn.close()
