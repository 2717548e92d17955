"""Slow clients cannot starve the service (issue 16, item 1): the real server (gunicorn with
web/gunicorn_conf.py, as the Procfile starts it) on loopback, with 200 sockets held open
from this test that send a request's headers and then dribble or stall its body."""
from __future__ import annotations

import json
import os
import runpy
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from .conftest import STRONG_PASSWORD, unique_email

ROOT = Path(__file__).resolve().parent.parent
SLOW_SOCKETS = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(database_dsn: str, media_root, **env: str):
    """gunicorn as deployed (2 processes x 4 threads), on a loopback port; yields its base URL."""
    port = free_port()
    environ = {**os.environ, "DATABASE_URL": database_dsn, "SECRET_KEY": "slow-" + uuid.uuid4().hex,
               "PORT": str(port), "MEDIA_ROOT": str(media_root), "DB_POOL_MAX": "4", **env}
    for name in ("BIND", "GUNICORN_CMD_ARGS"):
        environ.pop(name, None)
    log = tempfile.NamedTemporaryFile(prefix="sg-slow-gunicorn-", suffix=".log", delete=False)
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "web/gunicorn_conf.py", "web:create_app()"],
                               cwd=ROOT, env=environ, stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("gunicorn did not start: " + Path(log.name).read_text()[-2000:])
        yield base
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()
        os.unlink(log.name)


def timed(request: urllib.request.Request | str) -> tuple[int, float]:
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
        return response.status, time.monotonic() - started


def login_request(base: str, email: str) -> urllib.request.Request:
    return urllib.request.Request(base + "/v1/auth/login", json.dumps({"email": email, "password": STRONG_PASSWORD}).encode(),
                                  {"Content-Type": "application/json"})


def open_slow_sockets(port: int, count: int) -> list[socket.socket]:
    """Sockets that each send a login's headers announcing 100 bytes, then only `{`."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"POST /v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{")
        sockets.append(sock)
    return sockets


def test_200_slow_clients_do_not_delay_healthz_or_a_login(database_dsn, media_root):
    with served(database_dsn, media_root) as base:
        email = unique_email("slow")
        signup = urllib.request.Request(base + "/v1/auth/signup",
                                        json.dumps({"email": email, "password": STRONG_PASSWORD}).encode(),
                                        {"Content-Type": "application/json"})
        assert timed(signup)[0] == 201
        slow = open_slow_sockets(int(base.rsplit(":", 1)[1]), SLOW_SOCKETS)
        try:
            time.sleep(0.5)  # every slow request is in; with gthread, all 8 threads would be stuck now
            for _ in range(3):
                status, seconds = timed(base + "/healthz")
                assert status == 200 and seconds < 1, seconds
                status, seconds = timed(login_request(base, email))
                assert status == 200 and seconds < 1, seconds
            # the slow clients are still connected, none was answered or dropped
            for sock in slow:
                sock.setblocking(False)
                with pytest.raises(BlockingIOError):
                    sock.recv(1)
        finally:
            for sock in slow:
                sock.close()


def read_all(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_a_request_that_takes_too_long_to_arrive_gets_408_and_is_closed(database_dsn, media_root):
    with served(database_dsn, media_root, WEB_HEADER_TIMEOUT="1", WEB_REQUEST_TIMEOUT="3") as base:
        port = int(base.rsplit(":", 1)[1])
        headers = socket.create_connection(("127.0.0.1", port))
        headers.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")   # headers never finish
        body = open_slow_sockets(port, 1)[0]                                # body never finishes
        dribble = socket.create_connection(("127.0.0.1", port))
        dribble.sendall(b"POST /v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Length: 40\r\n\r\n")
        started = time.monotonic()
        try:
            for _ in range(8):  # a byte every half second: never idle, never complete in time
                time.sleep(0.5)
                try:
                    dribble.sendall(b" ")
                except BrokenPipeError:  # already timed out and closed: only after its 3 s
                    assert time.monotonic() - started >= 3
                    break
            for sock, limit in ((headers, 1), (body, 3), (dribble, 3)):
                answer = read_all(sock, timeout=10)
                assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert time.monotonic() - started < 10
            # a client that sends its request in time is served as usual
            assert timed(base + "/healthz")[0] == 200
        finally:
            for sock in (headers, body, dribble):
                sock.close()


def test_a_body_over_the_limit_is_refused_before_it_is_read(database_dsn, media_root):
    with served(database_dsn, media_root, WEB_MAX_REQUEST_BYTES="2048") as base:
        sock = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])))
        try:
            sock.sendall(b"POST /v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100000000\r\n\r\n{")
            answer = read_all(sock, timeout=10)
        finally:
            sock.close()
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]


@pytest.mark.parametrize("env, bind", [({"PORT": "8123"}, "127.0.0.1:8123"), ({}, "127.0.0.1:8000"),
                                       ({"BIND": "0.0.0.0:5000", "PORT": "8123"}, "0.0.0.0:5000")])
def test_gunicorn_binds_loopback_unless_told_otherwise(monkeypatch, env, bind):
    for name in ("PORT", "BIND"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    conf = runpy.run_path(str(ROOT / "web" / "gunicorn_conf.py"))
    assert conf["bind"] == bind and conf["worker_class"] == "web.buffering.BufferingWorker"


@pytest.mark.parametrize("name", ["PORT", "WEB_HEADER_TIMEOUT", "WEB_REQUEST_TIMEOUT", "WEB_MAX_REQUEST_BYTES",
                                  "WEB_CONNECTIONS"])
def test_bad_server_settings_are_named(monkeypatch, name):
    monkeypatch.setenv(name, "soon")
    with pytest.raises(SystemExit, match=name):
        runpy.run_path(str(ROOT / "web" / "gunicorn_conf.py"))
