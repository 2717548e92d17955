"""One structured (JSON) log line per request: method, path, status, duration, user id.

Never a password, token or key: bodies and headers are not logged, and the one path
that carries a secret (the test-mode checkout token) is redacted.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time

from flask import Flask, g, request

access_log = logging.getLogger("storygenius.access")
_SECRET_PATHS = re.compile(r"^(/billing/simulate/)[^/]+")


def init_app(app: Flask) -> None:
    if not access_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
        access_log.propagate = False

    @app.before_request
    def _start_clock():
        g.request_started = time.perf_counter()

    @app.after_request
    def _log_request(response):
        started = g.get("request_started")
        access_log.info(json.dumps({
            "method": request.method,
            "path": _SECRET_PATHS.sub(r"\1[redacted]", request.path),
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
            "user_id": g.get("user_id"),
            "ip": request.remote_addr,
        }))
        return response
