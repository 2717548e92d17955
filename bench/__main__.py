"""`python -m bench`: run every benchmark and print one table each.

Needs the Postgres the tests use (BENCH_ADMIN_DSN, default postgresql://postgres@127.0.0.1:5432/postgres)
and Debian's wrk for the HTTP figures.
"""
from __future__ import annotations

from . import api_bench, http_bench, queue_bench, render_bench, reporting_bench, system_bench
from .common import table


def main() -> None:
    print("== Render time, 20 s short (ratio to real time; lower is better)")
    print(table(render_bench.run()))
    print()
    print("== HTTP throughput, wrk, 32 connections, 6 s runs")
    print(table(http_bench.run(2) + http_bench.run(4)))
    print()
    print("== Login, webhooks, double-spend through HTTP (gunicorn: 2 workers x 4 threads)")
    print(table(system_bench.run()))
    print()
    print("== pgqueuer no-op jobs through the worker's queue setup")
    print(table(queue_bench.run()))
    print()
    print("== Reporting views as sg_analyst (median of 3)")
    print(table(reporting_bench.run()))
    print()
    print("== Developer API: rate limits and Idempotency-Key per request (wrk, 32 connections)")
    print(table(api_bench.run()))


if __name__ == "__main__":
    main()
