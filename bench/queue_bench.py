"""pgqueuer no-op jobs per second through our worker's setup (asyncpg queue connection,
batch of 1, two at a time, as `python -m worker` runs), on a fresh migrated database.
pgqueuer's own benchmark tool lives in its repository, not in the wheel we install, so
there is nothing of its to run beside it here."""
from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from datetime import timedelta

import pgqueuer
import psycopg
from pgqueuer import PgQueuer
from pgqueuer.types import QueueExecutionMode

from web.config import role_dsn
from worker.main import _asyncpg_params

from .common import bench_database

JOBS = 3000


async def _drain(dsn: str, batch_size: int, concurrency: int) -> float:
    import asyncpg

    done = 0

    @asynccontextmanager
    async def factory():
        conn = await asyncpg.connect(**_asyncpg_params(dsn))
        pgq = PgQueuer.from_asyncpg_connection(conn)

        @pgq.entrypoint("noop")
        async def noop(job) -> None:
            nonlocal done
            done += 1

        try:
            yield pgq
        finally:
            await conn.close()

    started = time.perf_counter()
    await pgqueuer.run(factory, mode=QueueExecutionMode.drain, batch_size=batch_size,
                       max_concurrent_tasks=concurrency, dequeue_timeout=timedelta(seconds=1),
                       shutdown=asyncio.Event())
    elapsed = time.perf_counter() - started
    assert done == JOBS, done
    return elapsed


def run() -> list[dict]:
    rows = []
    with bench_database("sg_queue_bench") as dsn:
        for batch_size, concurrency in ((1, 2), (10, 20)):
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute("insert into pgqueuer (priority, entrypoint, payload, status) "
                              "select 0, 'noop', null, 'queued' from generate_series(1, %s)", (JOBS,))
            elapsed = asyncio.run(_drain(role_dsn(dsn, "sg_worker"), batch_size, concurrency))
            rows.append({"setup": f"batch {batch_size}, {concurrency} in flight", "jobs": JOBS,
                         "seconds": f"{elapsed:.2f}", "jobs/s": f"{JOBS / elapsed:.0f}"})
    return rows


if __name__ == "__main__":
    from .common import table

    print(table(run()))
