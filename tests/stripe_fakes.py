"""Stripe stand-ins for tests: localstripe (a stateful fake Stripe API in the 2017 shape)
started on loopback, and a small recording proxy in front of it that answers the routes
localstripe lacks (Checkout sessions, billing portal sessions) and records what the stripe
library sent. (Today's shapes are served by web/stripe_simulator.)"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def start_localstripe() -> tuple[subprocess.Popen, str]:
    """localstripe's aiohttp app bound to loopback only (its CLI binds every interface),
    with an empty store (its CLI would reload the last pickle)."""
    port = free_port()
    code = ("import aiohttp.web, localstripe.server as s; "
            f"aiohttp.web.run_app(s.app, host='127.0.0.1', port={port}, print=None)")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    return process, f"http://127.0.0.1:{port}"


@dataclass
class Recorded:
    method: str
    path: str
    form: dict
    headers: dict


@dataclass
class RecordingProxy:
    """Answers /v1/checkout/sessions and /v1/billing_portal/sessions itself, forwards the rest."""

    upstream: str
    requests: list[Recorded] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "RecordingProxy":
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                if path == "/v1/checkout/sessions" and self.command == "GET":
                    return self._reply(200, json.dumps({"object": "list", "data": [], "has_more": False,
                                                        "url": path}).encode())
                if path.startswith(("/v1/checkout/sessions", "/v1/billing_portal/sessions")) and self.command == "POST":
                    form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                    proxy.requests.append(Recorded(self.command, path, form, dict(self.headers)))
                    if path.startswith("/v1/checkout"):
                        reply = {"id": f"cs_test_{len(proxy.requests)}", "object": "checkout.session",
                                 "mode": form.get("mode"), "customer": form.get("customer"),
                                 "url": f"https://checkout.stripe.test/c/pay/cs_test_{len(proxy.requests)}"}
                    else:
                        reply = {"id": f"bps_test_{len(proxy.requests)}", "object": "billing_portal.session",
                                 "customer": form.get("customer"), "return_url": form.get("return_url"),
                                 "url": f"https://billing.stripe.test/p/session/{len(proxy.requests)}"}
                    return self._reply(200, json.dumps(reply).encode())
                request = urllib.request.Request(proxy.upstream + self.path, data=body or None, method=self.command,
                                                 headers={k: v for k, v in self.headers.items()
                                                          if k.lower() not in ("host", "content-length")})
                try:
                    with urllib.request.urlopen(request) as response:
                        self._reply(response.status, response.read())
                except urllib.error.HTTPError as error:
                    self._reply(error.code, error.read())

            def _reply(self, status: int, data: bytes):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()


class LiveServer:
    """The Flask app on a real loopback HTTP port (werkzeug, threaded), for senders
    outside the process such as localstripe's webhook delivery."""

    def __init__(self, app):
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
