"""gunicorn settings, from the environment (Procfile: gunicorn -c web/gunicorn_conf.py)."""
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
# has its own pool (DB_POOL_MAX, default 10 >= WEB_THREADS); argon2 runs one at a time per
# process (web/passwords.py).
worker_class = "gthread"
threads = _count("WEB_THREADS", 4)
timeout = 30
# SIGTERM: stop accepting, let in-flight requests finish for up to this long
graceful_timeout = 20
# the app writes one JSON line per request (web/logs.py, with the user id); gunicorn's own
# access log would only repeat it
accesslog = None
errorlog = "-"
