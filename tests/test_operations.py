"""What operators rely on: settings checked at start-up, one JSON log line per request,
the admin CLI, and a worker that stops cleanly on SIGTERM."""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import runpy
import signal
import threading
import time
from pathlib import Path

import pytest

from web.config import ConfigError, from_env
from web.passwords import CORES

from .conftest import acting_as, api_signup, balance, bearer, wait_for
from .test_worker import job_row, start_worker, stop

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("env, message", [
    ({"DB_POOL_MAX": "lots"}, "DB_POOL_MAX: must be a whole number"),
    ({"DB_POOL_MAX": "0"}, "DB_POOL_MAX: must be at least 1"),
    ({"TRUSTED_PROXY_COUNT": "-1"}, "TRUSTED_PROXY_COUNT: must be at least 0"),
    ({"STRIPE_SECRET_KEY": "pk_live_oops", "STRIPE_WEBHOOK_SECRET": "whsec_x"}, "STRIPE_SECRET_KEY: must start with sk_"),
    ({"STRIPE_SECRET_KEY": "sk_live_x"}, "STRIPE_WEBHOOK_SECRET: required when STRIPE_SECRET_KEY is set"),
    ({"STRIPE_PRICE_PRO": "prod_123"}, "STRIPE_PRICE_PRO: must start with price_"),
    ({"FRONTEND_URL": "app.example.com"}, "FRONTEND_URL: must be an http(s) URL"),
    ({"CORS_ORIGINS": "https://ok.example, https://bad.example/path"}, "CORS_ORIGINS: 'https://bad.example/path'"),
    ({"DATABASE_URL": "definitely not a dsn"}, "DATABASE_URL: not a PostgreSQL connection string"),
])
def test_bad_settings_are_named(env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_env(env)


@pytest.mark.parametrize("name, value", [("WEB_THREADS", "four"), ("WEB_CONCURRENCY", "0")])
def test_bad_gunicorn_settings_are_named(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit, match=name):
        runpy.run_path(str(ROOT / "web" / "gunicorn_conf.py"))


def test_gunicorn_workers_share_the_argon2_slots():
    """Three forked workers with four threads each, all hashing at once: no more hashes
    run together than there are cores, as gunicorn_conf's post_fork hands every worker
    the same slots (with slots of their own, each worker would run that many)."""
    conf = runpy.run_path(str(ROOT / "web" / "gunicorn_conf.py"))
    fork = multiprocessing.get_context("fork")
    running, peak = fork.Value("i", 0), fork.Value("i", 0)

    class OverlapRecordingHasher:
        def verify(self, stored_hash, password):
            with running.get_lock():
                running.value += 1
                peak.value = max(peak.value, running.value)
            time.sleep(0.05)
            with running.get_lock():
                running.value -= 1
            return True

    def gunicorn_worker():
        conf["post_fork"](None, None)
        from web import passwords
        passwords.hasher = OverlapRecordingHasher()
        threads = [threading.Thread(target=passwords.verify_password, args=("$argon2id$stored", "pw"))
                   for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    workers = [fork.Process(target=gunicorn_worker) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    assert peak.value == CORES


def test_a_lost_hashing_slot_delays_but_never_stalls_sign_ins(monkeypatch):
    """A worker killed mid-hash never returns its shared slot: with every slot lost, a
    hash still runs once it has waited its limit."""
    from web import passwords

    lost = threading.BoundedSemaphore(1)
    lost.acquire()
    monkeypatch.setattr(passwords, "_slots", lost)
    monkeypatch.setattr(passwords, "_SLOT_WAIT_SECONDS", 0.2)
    stored = passwords.hasher.hash("velvet-otter-canyon-42")
    started = time.perf_counter()
    assert passwords.verify_password(stored, "velvet-otter-canyon-42")
    assert 0.2 <= time.perf_counter() - started < 5


def test_good_settings_parse():
    config = from_env({"DATABASE_URL": "postgresql://u:p@db.example:5433/sg", "CORS_ORIGINS": "https://a.example/",
                       "STRIPE_SECRET_KEY": "sk_test_1", "STRIPE_WEBHOOK_SECRET": "whsec_1"})
    assert "user=sg_app" in config["APP_DATABASE_URL"] and "password" not in config["APP_DATABASE_URL"]
    assert config["CORS_ORIGINS"] == ["https://a.example"]


def test_one_json_line_per_request_with_user_and_no_secrets(app, api, caplog):
    tokens = api_signup(api)
    logger = logging.getLogger("storygenius.access")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="storygenius.access"):
            api.get("/v1/auth/me", headers=bearer(tokens["access_token"]))
            api.post("/v1/auth/login", json={"email": tokens["user"]["email"], "password": "wrong-password-22"})
    finally:
        logger.removeHandler(caplog.handler)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "storygenius.access"]
    me, login = lines[-2], lines[-1]
    assert me["method"] == "GET" and me["path"] == "/v1/auth/me" and me["status"] == 200
    assert me["user_id"] == tokens["user"]["id"] and me["duration_ms"] > 0
    assert login["status"] == 401 and login["user_id"] is None
    text = caplog.text
    assert tokens["access_token"] not in text and "wrong-password-22" not in text


def test_cli_create_grant_disable(app, connect):
    runner = app.test_cli_runner()
    email = f"cli-{os.urandom(4).hex()}@example.com"
    created = runner.invoke(args=["create-user", email, "--password", "velvet-otter-canyon-42", "--name", "Cli"])
    assert created.exit_code == 0, created.output
    assert "with 5 credits" in created.output
    granted = runner.invoke(args=["grant-credits", email, "7", "--reason", "support", "--key", "ticket-1"])
    assert granted.exit_code == 0 and "now has 12 credits" in granted.output
    again = runner.invoke(args=["grant-credits", email, "7", "--reason", "support", "--key", "ticket-1"])
    assert again.exit_code == 0 and "Already granted" in again.output and "has 12 credits" in again.output
    admin = connect("postgres")
    uid = admin.execute("select id from users where email = %s", (email,)).fetchone()["id"]
    assert balance(admin, uid) == 12
    disabled = runner.invoke(args=["disable-user", email])
    assert disabled.exit_code == 0
    assert admin.execute("select is_active from users where id = %s", (uid,)).fetchone()["is_active"] is False
    for bad in (["grant-credits", "nobody@example.com", "5", "--reason", "x"], ["grant-credits", email, "0", "--reason", "x"],
                ["create-user", email, "--password", "velvet-otter-canyon-42"], ["disable-user", "nobody@example.com"]):
        result = runner.invoke(args=bad)
        assert result.exit_code != 0 and "Traceback" not in result.output, (bad, result.output)


def test_operator_grants_are_keyed_by_the_key_alone(app, connect):
    """The same --key never grants twice, whatever the reason says; keys that used to meet
    once joined with the reason (or cut at 200 characters) are different grants; the
    reason is kept in the ledger's note column; an over-long key is refused, not cut."""
    runner = app.test_cli_runner()
    admin = connect("postgres")
    email = f"grant-{os.urandom(4).hex()}@example.com"
    assert runner.invoke(args=["create-user", email, "--password", "velvet-otter-canyon-42"]).exit_code == 0
    uid = admin.execute("select id from users where email = %s", (email,)).fetchone()["id"]
    tag = os.urandom(4).hex()

    def grant(amount: str, reason: str, key: str):
        return runner.invoke(args=["grant-credits", email, amount, "--reason", reason, "--key", key])

    first = grant("3", "support ticket 1", f"{tag}-t1")
    reworded = grant("3", "support ticket #1 (refund)", f"{tag}-t1")
    assert first.exit_code == 0 and reworded.exit_code == 0, reworded.output
    assert "Already granted" in reworded.output and "support ticket 1" in reworded.output
    assert balance(admin, uid) == 8
    # these two produced the same `admin:a:b:c` key before
    assert grant("2", "b:c", f"{tag}:a").exit_code == 0
    assert grant("2", "c", f"{tag}:a:b").exit_code == 0
    # and these two the same 200-character prefix
    long_prefix = f"{tag}-" + "k" * 180
    assert grant("1", "long one", long_prefix + "-1").exit_code == 0
    assert grant("1", "long two", long_prefix + "-2").exit_code == 0
    assert balance(admin, uid) == 8 + 2 + 2 + 1 + 1
    rows = admin.execute("select idempotency_key, delta, note from credit_ledger where user_id = %s "
                         "and reason = 'admin_grant' order by created_at, idempotency_key", (uid,)).fetchall()
    assert [(r["idempotency_key"], r["delta"], r["note"]) for r in rows] == [
        (f"admin:{tag}-t1", 3, "support ticket 1"), (f"admin:{tag}:a", 2, "b:c"), (f"admin:{tag}:a:b", 2, "c"),
        (f"admin:{long_prefix}-1", 1, "long one"), (f"admin:{long_prefix}-2", 1, "long two")]

    too_long = grant("5", "too long", "x" * 195)
    assert too_long.exit_code != 0 and "key must be 1 to 194 characters" in too_long.output
    assert grant("5", "just fits", f"{tag}" + "y" * (194 - len(tag))).exit_code == 0
    for bad in (grant("5", "   ", f"{tag}-blank"), grant("5", "empty key", "")):
        assert bad.exit_code != 0 and "Traceback" not in bad.output, bad.output
    assert balance(admin, uid) == 14 + 5

    other = f"grant-other-{os.urandom(4).hex()}@example.com"
    assert runner.invoke(args=["create-user", other, "--password", "velvet-otter-canyon-42"]).exit_code == 0
    reused = runner.invoke(args=["grant-credits", other, "3", "--reason", "copy-paste", "--key", f"{tag}-t1"])
    assert reused.exit_code != 0 and "another account" in reused.output
    other_id = admin.execute("select id from users where email = %s", (other,)).fetchone()["id"]
    assert balance(admin, other_id) == 5


@pytest.mark.parametrize("command", ["migrate", "replay-stripe-events", "create-user", "grant-credits", "disable-user"])
def test_every_command_has_help(app, command):
    result = app.test_cli_runner().invoke(args=[command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_sigterm_lets_the_worker_finish_its_job(api, connect, database_dsn, media_root, empty_queue):
    tokens = api_signup(api)
    uid = tokens["user"]["id"]
    admin = connect("postgres")
    with acting_as(admin, uid):
        job_id = admin.execute("select job_id from app.spend_credit_and_create_job('tiktok', 'graceful stop', "
                               "'{\"duration_seconds\": 60}')").fetchone()["job_id"]
    worker = start_worker(database_dsn, media_root)
    try:
        assert wait_for(lambda: job_row(admin, uid, job_id)["status"] == "processing", timeout=60, interval=0.05)
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=120)
    finally:
        output = stop(worker)
    assert worker.returncode == 0, output
    row = job_row(admin, uid, job_id)
    assert row["status"] == "completed", (row, output)
    assert admin.execute("select count(*) as n from pgqueuer where status = 'picked'").fetchone()["n"] == 0
