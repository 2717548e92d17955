"""gunicorn settings, from the environment (Procfile: gunicorn -c web/gunicorn_conf.py)."""
import os

bind = os.environ.get("BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# sync workers: each request is one short transaction, the pool is per process
worker_class = "sync"
timeout = 30
# SIGTERM: stop accepting, let in-flight requests finish for up to this long
graceful_timeout = 20
# the app writes one JSON line per request (web/logs.py, with the user id); gunicorn's own
# access log would only repeat it
accesslog = None
errorlog = "-"
