"""gunicorn settings, from the environment (Procfile: gunicorn -c web/gunicorn_conf.py)."""
import multiprocessing
import os


def _count(name: str, default: int) -> int:
    """A positive integer setting, or a start-up error that names it."""
    value = os.environ.get(name, str(default)).strip()
    if not value.isdigit() or int(value) < 1:
        raise SystemExit(f"{name} must be a whole number of at least 1, not {value!r}")
    return int(value)


# Loopback unless told otherwise: BIND=0.0.0.0:$PORT (the Procfile) to serve the network.
# Exposing it directly is safe because of the worker class below, which reads whole
# requests before any thread is involved; no buffering proxy is needed in front.
bind = os.environ.get("BIND") or f"127.0.0.1:{_count('PORT', 8000)}"
workers = _count("WEB_CONCURRENCY", 2)
# Each process runs waitress (web/buffering.py): its event loop reads every request whole
# (headers and body, with time limits) and only then hands it to one of `threads`
# threads. gunicorn's gthread worker gave a thread to a connection as soon as its first
# bytes arrived, so 8 slow clients held all 2 x 4 threads (issue 16). Threads overlap
# requests' waits on Postgres; each process has its own pool (DB_POOL_MAX >= WEB_THREADS).
worker_class = "web.buffering.BufferingWorker"
threads = _count("WEB_THREADS", 4)
# open connections per process (slow ones included); beyond it, new ones wait in the backlog
worker_connections = _count("WEB_CONNECTIONS", 1000)
# seconds an idle keep-alive connection stays open
keepalive = 30
# a request's headers must arrive within WEB_HEADER_TIMEOUT seconds and the whole request
# within WEB_REQUEST_TIMEOUT, or it gets a 408; larger bodies than WEB_MAX_REQUEST_BYTES
# are refused before they are read (checked here so a bad value stops start-up)
for _name, _default in (("WEB_HEADER_TIMEOUT", 10), ("WEB_REQUEST_TIMEOUT", 30),
                        ("WEB_MAX_REQUEST_BYTES", 16 * 1024 * 1024)):
    _count(_name, _default)
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
