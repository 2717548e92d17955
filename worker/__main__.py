"""`python -m worker`: run the render worker until SIGTERM/SIGINT (or, with --drain,
until the queue is empty).

pgqueuer 1.6.0's `pgq run` CLI crashes at start-up, so this calls pgqueuer.run itself.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
from datetime import timedelta

import pgqueuer
from pgqueuer.types import QueueExecutionMode

from .main import create_pgqueuer


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
    asyncio.run(
        pgqueuer.run(
            create_pgqueuer,
            mode=QueueExecutionMode.drain if args.drain else QueueExecutionMode.continuous,
            heartbeat_timeout=timedelta(seconds=args.heartbeat_timeout),
            # pgqueuer wants max_concurrent_tasks >= 2 x batch_size; renders are heavy,
            # so fetch one at a time and let --concurrency bound the total.
            batch_size=1,
            max_concurrent_tasks=max(args.concurrency, 2),
            dequeue_timeout=timedelta(seconds=args.poll_interval),
        )
    )


if __name__ == "__main__":
    main()
