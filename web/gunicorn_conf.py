"""gunicorn settings, from the environment (Procfile: gunicorn -c web/gunicorn_conf.py)."""
import multiprocessing
import os


def _count(name: str, default: int) -> int:
    """A positive integer setting, or a start-up error that names it."""
    value = os.environ.get(name, str(default)).strip()
    if not value.isdigit() or int(value) < 1:
        raise SystemExit(f"{name} must be a whole number of at least 1, not {value!r}")
    return int(value)


bind = os.environ.get("BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
workers = _count("WEB_CONCURRENCY", 2)
# threads: a request spends much of its time waiting on Postgres (its commit's WAL flush
# above all), and a threaded worker serves others meanwhile and keeps connections alive;
# measured here, +30 % webhooks/s and +20 % generates/s over sync workers. Each process
# has its own pool (DB_POOL_MAX, default 10 >= WEB_THREADS).
worker_class = "gthread"
threads = _count("WEB_THREADS", 4)
timeout = 30
# SIGTERM: stop accepting, let in-flight requests finish for up to this long
graceful_timeout = 20
# the app writes one JSON line per request (web/logs.py, with the user id); gunicorn's own
# access log would only repeat it
accesslog = None
errorlog = "-"


# argon2 hashes wait for one of a core's worth of slots (web/passwords.py). Made here, in
# the master, so that every worker forked from it shares the same ones: per-worker slots
# would leave a core idle whenever the client connections bunch up on one worker. As many
# as web/passwords.py's CORES (not imported from there: the master loads none of the app).
_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_hashing_slots = multiprocessing.get_context("fork").BoundedSemaphore(_cores)


def post_fork(server, worker):
    from web import passwords

    passwords.share_hashing_slots(_hashing_slots)
