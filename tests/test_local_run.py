"""`make run` (web/local.py): with no DATABASE_URL and nothing on :5432 an embedded
Postgres starts, migrates, and serves the app as sg_app; PORT is honoured, the address is
announced only once the site answers there, a taken or bad port is a non-zero exit, what
the machine lacks is printed with its fix, and only runtime dependencies are installed."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from web import create_app, local
from web.migrate import migrate

from .conftest import throwaway_database


def test_embedded_postgres_when_nothing_answers(monkeypatch, tmp_path):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setattr(local, "_port_open", lambda host, port: False)
    monkeypatch.setattr(local, "DATA", tmp_path)
    dsn, server = local.database_url()
    try:
        assert server is not None and str(tmp_path) in dsn
        migrate(dsn, environ={})
        app = create_app({"TESTING": True, "DATABASE_URL": dsn})
        response = app.test_client().get("/healthz")
        app.extensions["sg_pool"].close()
        assert response.status_code == 200
    finally:
        server.cleanup()


# -- make run as a newcomer runs it ---------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local(database_dsn: str, tmp_path, **env: str) -> subprocess.Popen:
    environ = {**os.environ, "DATABASE_URL": database_dsn, "MEDIA_ROOT": str(tmp_path / "media"), **env}
    environ.pop("BIND", None)
    return subprocess.Popen([sys.executable, "-m", "web.local"], cwd=ROOT, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_make_run_honours_port_and_announces_only_once_it_answers(tmp_path):
    port = free_port()
    with throwaway_database("sg_localrun") as dsn:
        local = start_local(dsn, tmp_path, PORT=str(port))
        lines: list[str] = []
        answered_when_announced: list[bool] = []

        def read():
            for line in local.stdout:
                if "is running on" in line and not answered_when_announced:
                    try:  # at the moment it says so, the site must answer at once
                        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
                        answered_when_announced.append(True)
                    except OSError:
                        answered_when_announced.append(False)
                lines.append(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + 120
            while not answered_when_announced and time.monotonic() < deadline and local.poll() is None:
                time.sleep(0.2)
            assert answered_when_announced == [True], "".join(lines)
            assert f"running on http://127.0.0.1:{port} " in "".join(lines)
            assert "8000" not in "".join(lines)
        finally:
            local.send_signal(signal.SIGINT)
            local.wait(timeout=60)
            reader.join(timeout=10)
        assert local.returncode == 0, "".join(lines)


def test_make_run_exits_non_zero_when_the_port_is_taken(database_dsn, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        local = start_local(database_dsn, tmp_path, PORT=str(port))
        output = local.communicate(timeout=60)[0]
    assert local.returncode != 0
    assert f"Port {port} on 127.0.0.1 is already in use" in output and f"PORT={port + 1} make run" in output
    assert "is running on" not in output and "Traceback" not in output


@pytest.mark.parametrize("value", ["eighty", "0", "70000"])
def test_make_run_names_a_bad_port(database_dsn, tmp_path, value):
    local = start_local(database_dsn, tmp_path, PORT=value)
    output = local.communicate(timeout=60)[0]
    assert local.returncode != 0 and f"PORT='{value}' is not a port number" in output


def test_missing_requirements_are_printed_with_their_fix(monkeypatch, capsys):
    monkeypatch.setattr(local, "REQUIREMENTS", list(local.REQUIREMENTS))

    @local.requirement
    def fonts():
        return local.Missing("fonts for non-Latin scripts", "sudo apt-get install fonts-noto-core")

    @local.requirement
    def crashes():
        raise RuntimeError("no idea")

    found = local.missing_requirements()
    assert [m.what for m in found][:1] == ["fonts for non-Latin scripts"] and len(found) == 2
    assert local.report_missing(found) is True  # neither is fatal: the service starts
    err = capsys.readouterr().err
    assert "Missing (the service runs without it): fonts for non-Latin scripts" in err
    assert "to fix: sudo apt-get install fonts-noto-core" in err and "crashes could not be checked" in err
    assert local.report_missing([local.Missing("ffmpeg", "pip install imageio-ffmpeg", fatal=True)]) is False


def test_this_machine_has_what_the_service_needs():
    assert local.missing_requirements() == []


def test_make_run_installs_only_the_runtime_dependencies(tmp_path):
    """Dry runs on a fresh virtualenv path: run installs the package alone, test adds the
    test extra."""
    def planned(target: str) -> str:
        return subprocess.run(["make", "-n", target, f"VENV={tmp_path / 'venv'}"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout

    run = planned("run")
    assert "pip install --quiet -e ." in run and "[test]" not in run
    assert "pip install --quiet -e '.[test]'" in planned("test")
