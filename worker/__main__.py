"""`python -m worker`: run the worker until SIGTERM/SIGINT (or, with --drain, until the
queue is empty), as two lanes sharing one process: renders, and the light work (mail,
Stripe re-reads and retries, schedules), so renders never hold the slots a payment's
re-read needs (worker/main.py, LANES).

pgqueuer 1.6.0's `pgq run` CLI crashes at start-up, so this calls pgqueuer.run itself.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import signal
from datetime import timedelta

import pgqueuer
from pgqueuer.types import QueueExecutionMode

from .main import create_pgqueuer

# slots of the light lane: its jobs take milliseconds, a few at once keep it moving
LIGHT_SLOTS = 4


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
    parser.add_argument("--drain", action="store_true", help="exit once the queue is empty")
    parser.add_argument("--heartbeat-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="re-deliver a job whose worker has been silent this long (default 30)")
    parser.add_argument("--poll-interval", type=float, default=0.5, metavar="SECONDS",
                        help="how often an idle worker looks for queued jobs (default 0.5); "
                             "enqueueing sends no NOTIFY (migrations/0008)")
    parser.add_argument("--concurrency", type=int, default=2, metavar="N",
                        help="jobs handled at once by this process, at least 2 (default 2)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    shutdown = asyncio.Event()

    async def until_signalled() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, shutdown.set)
        await run_lanes(shutdown, drain=args.drain, concurrency=args.concurrency,
                        heartbeat_timeout=timedelta(seconds=args.heartbeat_timeout),
                        poll_interval=timedelta(seconds=args.poll_interval))

    asyncio.run(until_signalled())


async def run_lanes(shutdown: asyncio.Event, *, drain: bool = False, concurrency: int = 2,
                    heartbeat_timeout: timedelta = timedelta(seconds=30),
                    poll_interval: timedelta = timedelta(seconds=0.5), settings=None) -> None:
    """Both lanes until `shutdown` is set (or, draining, until each has nothing left)."""
    common = {"mode": QueueExecutionMode.drain if drain else QueueExecutionMode.continuous,
              "heartbeat_timeout": heartbeat_timeout, "dequeue_timeout": poll_interval, "shutdown": shutdown}
    await asyncio.gather(
        # pgqueuer wants max_concurrent_tasks >= 2 x batch_size; renders are heavy,
        # so fetch one at a time and let --concurrency bound the total.
        pgqueuer.run(functools.partial(create_pgqueuer, settings, lane="render"), batch_size=1,
                     max_concurrent_tasks=max(concurrency, 2), **common),
        pgqueuer.run(functools.partial(create_pgqueuer, settings, lane="light"), batch_size=LIGHT_SLOTS // 2,
                     max_concurrent_tasks=LIGHT_SLOTS, **common),
    )


if __name__ == "__main__":
    main()
