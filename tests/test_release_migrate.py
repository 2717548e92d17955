"""Zero-downtime releases: `flask migrate` (a real subprocess, on a copy of this repository
that plays the next release) while an analyst's long read holds a lock on credit_ledger
and while users generate videos from threads. Nothing waits longer than lock_timeout or
fails; the release retries until the read is done, then applies its migration and changed
sql/ files in one transaction. A run with nothing changed takes no lock at all."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import click
import psycopg
import pytest
from psycopg.rows import dict_row

from web import create_app
from web.config import role_dsn
from web.migrate import MIGRATIONS_DIR, SQL_DIR, migrate

from .conftest import bearer, throwaway_database

ROOT = Path(__file__).resolve().parent.parent
LOCK_TIMEOUT = 1.0  # seconds: MIGRATE_LOCK_TIMEOUT of the release under test
# seconds the analyst's read goes on holding credit_ledger after the release first gave up on it
HOLD_AFTER_FIRST_WAIT = 4.0
# what a request may take beyond waiting for a lock on this shared 2-core machine
SLACK = 0.75


@pytest.fixture(scope="module")
def database():
    with throwaway_database("sg_release") as dsn:
        migrate(dsn, environ={})
        yield dsn


@pytest.fixture(scope="module")
def app(database, tmp_path_factory):
    app = create_app({"TESTING": True, "DATABASE_URL": database, "APP_DATABASE_URL": role_dsn(database, "sg_app"),
                      "SECRET_KEY": "release-tests-" + "r" * 40, "MEDIA_ROOT": str(tmp_path_factory.mktemp("media"))})
    yield app
    app.extensions["sg_pool"].close()


def next_release(tmp_path: Path) -> Path:
    """A copy of this repository with one more migration (a column on credit_ledger, which
    needs an ACCESS EXCLUSIVE lock) and one changed sql/ file (a new function)."""
    release = tmp_path / "release"
    release.mkdir()
    for name in ("web", "sql", "migrations"):
        shutil.copytree(ROOT / name, release / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("worker", "templates"):  # imported or rendered, not changed
        (release / name).symlink_to(ROOT / name)
    latest = max(p.stem for p in MIGRATIONS_DIR.glob("*.sql") if not p.stem.endswith(".rollback"))
    (release / "migrations" / "9001.release_rehearsal.sql").write_text(
        f"-- depends: {latest}\nalter table credit_ledger add column release_rehearsal text;\n")
    (release / "migrations" / "9001.release_rehearsal.rollback.sql").write_text(
        "alter table credit_ledger drop column release_rehearsal;\n")
    with (release / "sql" / "55_account_erasure.sql").open("a") as sql_file:
        sql_file.write("\nset local role sg_owner;\ncreate or replace function app.release_rehearsal() returns integer\n"
                       "language sql stable as $$ select 1 $$;\ngrant execute on function app.release_rehearsal() "
                       "to sg_app;\n")
    return release


def flask_migrate(release: Path, dsn: str) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": dsn, "PYTHONPATH": str(release), "SECRET_KEY": "release-" + "m" * 40,
           "MIGRATE_LOCK_TIMEOUT": str(LOCK_TIMEOUT), "MIGRATE_MAX_WAIT": "60"}
    return subprocess.Popen([sys.executable, "-m", "flask", "--app", "web", "migrate"], cwd=release, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class LongRead(threading.Thread):
    """An analyst's transaction that locks credit_ledger (ACCESS SHARE), reads it, and keeps
    the lock until `done` is set."""

    def __init__(self, dsn: str):
        super().__init__(daemon=True)
        self.dsn = dsn
        self.locked, self.done = threading.Event(), threading.Event()

    def run(self):
        with psycopg.connect(self.dsn) as conn:
            conn.execute("lock table credit_ledger in access share mode")
            conn.execute("select count(*), sum(delta) from credit_ledger").fetchone()
            self.locked.set()
            self.done.wait(120)
            conn.rollback()


class Generates(threading.Thread):
    """A user generating videos over HTTP, one after another, until told to stop; the
    status and duration of each request."""

    def __init__(self, app, token: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.client, self.auth, self.stop = app.test_client(), bearer(token), stop
        self.results: list[tuple[int, float]] = []

    def run(self):
        while not self.stop.is_set():
            started = time.monotonic()
            response = self.client.post("/v1/shorts/generate", json={"platform": "tiktok", "topic": "release day"},
                                        headers=self.auth)
            self.results.append((response.status_code, time.monotonic() - started))
            time.sleep(0.02)


def users_with_credits(app, admin: psycopg.Connection, count: int) -> list[str]:
    """Access tokens of `count` confirmed users with plenty of credits."""
    client = app.test_client()
    tokens = []
    for _ in range(count):
        email = f"release-{uuid.uuid4().hex[:10]}@example.com"
        signed_up = client.post("/v1/auth/signup", json={"email": email, "password": "velvet-otter-canyon-42"})
        assert signed_up.status_code == 201, signed_up.get_json()
        user_id = signed_up.get_json()["user"]["id"]
        admin.execute("update users set is_verified = true where id = %s", (user_id,))
        admin.execute("select app.grant_credits(%s, 1000, 'admin_grant', %s)", (user_id, f"release:{user_id}"))
        tokens.append(signed_up.get_json()["access_token"])
    return tokens


def run_release_under_load(app, dsn: str, release: Path, hold_after_first_wait: float | None):
    """flask migrate for `release` while four users generate and a long read holds
    credit_ledger: until `hold_after_first_wait` seconds after the release first reports a
    lock timeout (or, with None, until the release has finished). Returns the migrate result,
    its seconds, and every generate's (status, s)."""
    admin = psycopg.connect(dsn, autocommit=True, row_factory=dict_row)
    stop = threading.Event()
    workers = [Generates(app, token, stop) for token in users_with_credits(app, admin, 4)]
    reader = LongRead(dsn)
    reader.start()
    assert reader.locked.wait(10)
    for worker in workers:
        worker.start()
    time.sleep(0.3)
    started = time.monotonic()
    process = flask_migrate(release, dsn)
    stderr_lines: list[str] = []

    def read_stderr():
        for line in process.stderr:
            stderr_lines.append(line)
            if hold_after_first_wait is not None and "lock not available" in line \
                    and sum("lock not available" in seen for seen in stderr_lines) == 1:
                threading.Timer(hold_after_first_wait, reader.done.set).start()

    reading = threading.Thread(target=read_stderr, daemon=True)
    reading.start()
    stdout = process.stdout.read()
    process.wait(120)
    reading.join(10)
    elapsed = time.monotonic() - started
    reader.done.set()
    time.sleep(0.3)
    stop.set()
    for worker in workers:
        worker.join(30)
    reader.join(30)
    admin.close()
    return (subprocess.CompletedProcess(process.args, process.returncode, stdout, "".join(stderr_lines)), elapsed,
            [result for worker in workers for result in worker.results])


def test_a_release_waits_for_a_long_read_without_holding_up_anyone(app, database, tmp_path):
    release = next_release(tmp_path)
    result, elapsed, generates = run_release_under_load(app, database, release, HOLD_AFTER_FIRST_WAIT)

    assert result.returncode == 0, result.stderr
    # it gave up on the lock again and again (each time within lock_timeout), then got it
    retries = re.findall(r"lock not available", result.stderr)
    assert len(retries) >= 2, result.stderr
    assert elapsed >= HOLD_AFTER_FIRST_WAIT + LOCK_TIMEOUT
    assert "9001.release_rehearsal" in result.stdout and "55_account_erasure.sql" in result.stdout
    # no generate failed, none waited longer than lock_timeout (plus request overhead)
    assert len(generates) >= 20
    assert {status for status, _ in generates} == {202}, generates
    slowest = max(seconds for _, seconds in generates)
    assert slowest < LOCK_TIMEOUT + SLACK, f"a generate took {slowest:.2f} s"
    print(f"\nrelease: {elapsed:.1f} s, {len(retries)} lock timeouts; {len(generates)} generates, "
          f"slowest {slowest:.2f} s, median {sorted(s for _, s in generates)[len(generates) // 2] * 1000:.0f} ms")

    with psycopg.connect(database, autocommit=True) as admin:
        assert admin.execute("select count(*) from information_schema.columns where table_name = 'credit_ledger' "
                             "and column_name = 'release_rehearsal'").fetchone()[0] == 1
        assert admin.execute("select app.release_rehearsal()").fetchone()[0] == 1
        # one transaction: the migration and the sql/ file it shipped with are recorded together
        assert admin.execute("select count(*) from sql_layer_files where name = '55_account_erasure.sql' and "
                             "'app.release_rehearsal()' = any(functions)").fetchone()[0] == 1

    # the same release again changes nothing and takes no lock, even with the read still there
    result, _, generates = run_release_under_load(app, database, release, None)
    assert result.returncode == 0, result.stderr
    assert "nothing changed, no lock taken" in result.stdout and "lock not available" not in result.stderr
    assert {status for status, _ in generates} == {202}
    assert max(seconds for _, seconds in generates) < LOCK_TIMEOUT + SLACK


def test_a_release_that_cannot_get_its_lock_in_time_changes_nothing(tmp_path):
    release = next_release(tmp_path)
    with throwaway_database("sg_release_wait") as dsn:
        migrate(dsn, environ={})
        with psycopg.connect(dsn) as reader:
            reader.execute("lock table credit_ledger in access share mode")
            started = time.monotonic()
            with pytest.raises(click.ClickException, match="lock stayed taken"):
                migrate(dsn, environ={"MIGRATE_LOCK_TIMEOUT": "0.2", "MIGRATE_MAX_WAIT": "1.5"},
                        migrations_dir=release / "migrations", sql_dir=release / "sql")
            assert time.monotonic() - started < 4
            reader.rollback()
        with psycopg.connect(dsn, autocommit=True) as admin:
            # neither the migration nor the sql/ change landed: one transaction, rolled back
            assert admin.execute("select to_regprocedure('app.release_rehearsal()')").fetchone()[0] is None
            assert admin.execute("select count(*) from _yoyo_migration where migration_id = '9001.release_rehearsal'"
                                 ).fetchone()[0] == 0
            assert admin.execute("select count(*) from information_schema.columns where column_name = "
                                 "'release_rehearsal'").fetchone()[0] == 0
        # once the read is over, the same release goes through
        assert migrate(dsn, environ={}, migrations_dir=release / "migrations",
                       sql_dir=release / "sql").migrations == ["9001.release_rehearsal"]


def test_a_changed_file_drops_what_it_no_longer_defines_and_the_grants_it_no_longer_makes(tmp_path):
    with throwaway_database("sg_release_sql") as dsn:
        sql_dir = tmp_path / "sql"
        shutil.copytree(SQL_DIR, sql_dir)
        extra = sql_dir / "56_release_rehearsal.sql"
        extra.write_text("set local role sg_owner;\n"
                         "create or replace function app.rehearsal_old(n integer) returns integer language sql "
                         "as $$ select n $$;\ngrant execute on function app.rehearsal_old(integer) to sg_app, sg_worker;\n")
        migrate(dsn, environ={}, sql_dir=sql_dir)
        # the next release renames the function, and grants the new one to the web role only
        extra.write_text("set local role sg_owner;\n"
                         "create or replace function app.rehearsal_new(n integer) returns integer language sql "
                         "as $$ select n $$;\ngrant execute on function app.rehearsal_new(integer) to sg_app;\n")
        release = migrate(dsn, environ={}, sql_dir=sql_dir)
        # the changed file and every file after it, since a later file may build on it
        assert release.sql_files == sorted(p.name for p in sql_dir.glob("*.sql")
                                           if p.name >= "56_release_rehearsal.sql")
        with psycopg.connect(dsn, autocommit=True) as admin:
            assert admin.execute("select to_regprocedure('app.rehearsal_old(integer)')").fetchone()[0] is None
            assert admin.execute("select has_function_privilege('sg_worker', 'app.rehearsal_new(integer)', "
                                 "'execute')").fetchone()[0] is False
        # a grant that a file stops making goes too
        extra.write_text(extra.read_text().replace("to sg_app;", "to sg_worker;"))
        migrate(dsn, environ={}, sql_dir=sql_dir)
        with psycopg.connect(dsn, autocommit=True) as admin:
            assert admin.execute("select has_function_privilege('sg_app', 'app.rehearsal_new(integer)', 'execute'), "
                                 "has_function_privilege('sg_worker', 'app.rehearsal_new(integer)', 'execute')"
                                 ).fetchone() == (False, True)
        # and a file that is removed takes its functions with it
        extra.unlink()
        migrate(dsn, environ={}, sql_dir=sql_dir)
        with psycopg.connect(dsn, autocommit=True) as admin:
            assert admin.execute("select to_regprocedure('app.rehearsal_new(integer)')").fetchone()[0] is None
            assert admin.execute("select count(*) from sql_layer_files where name = '56_release_rehearsal.sql'"
                                 ).fetchone()[0] == 0


def test_an_unchanged_sql_layer_is_not_applied_again(database):
    migrate(database, environ={})  # back to this checkout's sql/ (another test rehearsed a release here)
    with psycopg.connect(database, autocommit=True) as admin:
        before = admin.execute("select name, applied_at from sql_layer_files order by name").fetchall()
        policies = admin.execute("select count(*) from pg_policy").fetchone()[0]
    release = migrate(database, environ={})
    assert (release.migrations, release.sql_files) == ([], [])
    with psycopg.connect(database, autocommit=True) as admin:
        assert admin.execute("select name, applied_at from sql_layer_files order by name").fetchall() == before
        assert admin.execute("select count(*) from pg_policy").fetchone()[0] == policies


def test_every_sql_file_applies_again_without_waiting_for_any_table(database):
    """Re-applying the whole sql/ layer (what a release that changes 10_app.sql does) while
    every table has an open reader and an open writer: no statement of it needs a lock that
    conflicts with them, so it neither waits nor fails (lock_timeout 0.2 s, no retry)."""
    migrate(database, environ={})
    with psycopg.connect(database, autocommit=True) as admin:
        tables = [row[0] for row in admin.execute(
            "select format('%I.%I', schemaname, tablename) from pg_tables where schemaname = 'public'")]
    with psycopg.connect(database) as reader, psycopg.connect(database) as writer:
        for table in tables:
            reader.execute(f"lock table {table} in access share mode")
            writer.execute(f"lock table {table} in row exclusive mode")
        started = time.monotonic()
        release = migrate(database, environ={"MIGRATE_LOCK_TIMEOUT": "0.2", "MIGRATE_MAX_WAIT": "0.1"},
                          reapply_sql=True)
        assert release.lock_waits == 0 and len(release.sql_files) == len(list(SQL_DIR.glob("*.sql"))) - 1
        print(f"\nfull sql/ re-apply under load: {time.monotonic() - started:.2f} s")
        reader.rollback()
        writer.rollback()


# -- the convention for new index migrations ------------------------------------------------

# Migrations from before the convention (several build indexes under a lock; they have run).
CONVENTION_FROM = "0041"
CREATE_INDEX = re.compile(r"create\s+(?:unique\s+)?index\s+(concurrently\s+)?(?:if\s+not\s+exists\s+)?"
                          r"(?:\w+\s+)?on\s+(?:only\s+)?([\w.]+)", re.IGNORECASE)


def test_new_index_migrations_build_concurrently_outside_a_transaction():
    """An index on an existing table is built CONCURRENTLY (no write lock while it builds),
    which cannot run in a transaction: the migration says `-- transactional: false`. An
    index on a table the same migration creates needs neither."""
    problems = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if path.name < CONVENTION_FROM or path.name.endswith(".rollback.sql"):
            continue
        text = path.read_text()
        created = {m.lower() for m in re.findall(r"create\s+(?:unlogged\s+)?table\s+(?:if\s+not\s+exists\s+)?([\w.]+)", text, re.I)}
        for concurrently, table in CREATE_INDEX.findall(text):
            if table.lower() in created:
                continue
            if not concurrently:
                problems.append(f"{path.name}: index on {table} without CONCURRENTLY")
            elif not re.search(r"^--\s*transactional:\s*false", text, re.I | re.M):
                problems.append(f"{path.name}: CONCURRENTLY needs `-- transactional: false`")
    assert problems == []


def test_this_release_upgrades_a_populated_database_and_rolls_back():
    """0060 (users.deleted_at) and 0061 (sql_layer_files) on a database that has users,
    ledger rows and the sql/ layer of the release before (applied without file hashes):
    rows are kept, the whole layer is applied once and recorded, and both roll back."""
    from yoyo import read_migrations

    from web.migrate import ROLES_FILE, _owner_backend, _run_sql_file, rollback_all

    from .conftest import PASSWORD_HASH

    with throwaway_database("sg_release_upgrade") as dsn:
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as admin:
            _run_sql_file(admin, ROLES_FILE)
            backend = _owner_backend(dsn)
            try:
                with backend.lock():
                    pending = backend.to_apply(read_migrations(str(MIGRATIONS_DIR)))
                    backend.apply_migrations(pending.filter(lambda m: m.id < "0060"))
            finally:
                backend.connection.close()
            user = admin.execute("insert into users (email, password_hash, full_name) values "
                                 "('kept@example.com', %s, 'Kept') returning id", (PASSWORD_HASH,)).fetchone()["id"]
            admin.execute("insert into subscriptions (user_id, tier, credits_remaining) values (%s, 'free', 5)", (user,))
            admin.execute("insert into credit_ledger (user_id, delta, reason, idempotency_key) "
                          "values (%s, 5, 'signup_grant', 'signup:' || %s)", (user, user))

            release = migrate(dsn, environ={})
            assert {"0060.account_erasure", "0061.sql_layer_files"} <= set(release.migrations)
            assert release.sql_files == [p.name for p in sorted(SQL_DIR.glob("*.sql")) if p.name != "00_roles.sql"]
            row = admin.execute("select email, full_name, deleted_at from users where id = %s", (user,)).fetchone()
            assert row == {"email": "kept@example.com", "full_name": "Kept", "deleted_at": None}
            assert admin.execute("select count(*) as n from sql_layer_files").fetchone()["n"] == len(release.sql_files)
            assert migrate(dsn, environ={}).sql_files == []

            rollback_all(dsn)
            assert admin.execute("select to_regclass('public.sql_layer_files') as t").fetchone()["t"] is None
            assert admin.execute("select count(*) as n from information_schema.columns "
                                 "where table_name = 'users' and column_name = 'deleted_at'").fetchone()["n"] == 0
            migrate(dsn, environ={})


def test_a_concurrent_index_migration_runs_after_the_release_transaction(tmp_path):
    """The convention's shape: `-- transactional: false`, a drop of a half-built index, then
    CREATE INDEX CONCURRENTLY. It runs on its own once the release's transaction committed;
    it never stops writers (CONCURRENTLY waits for them instead), and a retry after a
    timed-out build starts clean."""
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    latest = max(p.stem for p in MIGRATIONS_DIR.glob("*.sql") if not p.stem.endswith(".rollback"))
    (migrations / "9002.ledger_reason_index.sql").write_text(
        f"-- transactional: false\n-- depends: {latest}\n"
        "drop index concurrently if exists credit_ledger_rehearsal_idx;\n"
        "create index concurrently credit_ledger_rehearsal_idx on credit_ledger (reason, created_at);\n")
    (migrations / "9002.ledger_reason_index.rollback.sql").write_text(
        "-- transactional: false\ndrop index concurrently if exists credit_ledger_rehearsal_idx;\n")
    with throwaway_database("sg_release_index") as dsn:
        migrate(dsn, environ={})
        with psycopg.connect(dsn) as writer:
            writer.execute("lock table credit_ledger in row exclusive mode")  # a writer in the middle of its work
            threading.Timer(1.0, writer.rollback).start()
            release = migrate(dsn, environ={"MIGRATE_LOCK_TIMEOUT": "0.5"}, migrations_dir=migrations)
        assert release.migrations == [] and release.outside_transaction == ["9002.ledger_reason_index"]
        # it met the writer (CONCURRENTLY waits for transactions that could write the table),
        # gave up at lock_timeout leaving an invalid index, and the retry dropped and rebuilt it
        assert release.lock_waits >= 1
        with psycopg.connect(dsn, autocommit=True) as admin:
            assert admin.execute("select i.indisvalid from pg_index i where i.indexrelid = "
                                 "'credit_ledger_rehearsal_idx'::regclass").fetchone()[0] is True
            assert migrate(dsn, environ={}, migrations_dir=migrations).outside_transaction == []


def test_a_statement_that_runs_too_long_fails_the_release_and_changes_nothing(tmp_path):
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    latest = max(p.stem for p in MIGRATIONS_DIR.glob("*.sql") if not p.stem.endswith(".rollback"))
    (migrations / "9003.slow_backfill.sql").write_text(
        f"-- depends: {latest}\nalter table credit_ledger add column slow text;\nselect pg_sleep(5);\n")
    (migrations / "9003.slow_backfill.rollback.sql").write_text("alter table credit_ledger drop column slow;\n")
    with throwaway_database("sg_release_slow") as dsn:
        migrate(dsn, environ={})
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            migrate(dsn, environ={"MIGRATE_STATEMENT_TIMEOUT": "0.5"}, migrations_dir=migrations)
        assert time.monotonic() - started < 4
        with psycopg.connect(dsn, autocommit=True) as admin:
            assert admin.execute("select count(*) from information_schema.columns where column_name = 'slow'"
                                 ).fetchone()[0] == 0


def test_a_release_does_not_wait_for_an_analyst_reading_a_view_and_drops_views_no_file_defines(tmp_path):
    """A change early in sql/ re-applies the reporting files too; their views are made again
    only when their text changed, so an analyst's open query on one holds nothing up. A view
    a file stops defining is dropped."""
    from web.config import role_dsn

    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql_dir)
    with throwaway_database("sg_release_views") as dsn:
        migrate(dsn, environ={}, sql_dir=sql_dir)
        with (sql_dir / "55_account_erasure.sql").open("a") as changed:
            changed.write("\nset local role sg_owner;\ncreate or replace function app.release_rehearsal() "
                          "returns integer language sql stable as $$ select 1 $$;\n")
        with psycopg.connect(role_dsn(dsn, "sg_analyst")) as analyst:
            analyst.execute("select * from reporting.user_summary").fetchall()  # the transaction stays open
            analyst.execute("select * from reporting.stripe_event_failures").fetchall()
            release = migrate(dsn, environ={"MIGRATE_LOCK_TIMEOUT": "0.2", "MIGRATE_MAX_WAIT": "0.1"}, sql_dir=sql_dir)
            assert release.lock_waits == 0
            assert {"55_account_erasure.sql", "90_reporting.sql", "91_reporting_billing.sql"} <= set(release.sql_files)
            analyst.rollback()
        billing = sql_dir / "91_reporting_billing.sql"
        text = billing.read_text()
        start = text.index("/**\n * Stripe events not applied")
        end = text.index("grant select on reporting.stripe_drift")
        billing.write_text(text[:start] + text[end:].replace(", reporting.stripe_event_failures", ""))
        migrate(dsn, environ={}, sql_dir=sql_dir)
        with psycopg.connect(dsn, autocommit=True) as admin:
            assert admin.execute("select to_regclass('reporting.stripe_event_failures')").fetchone()[0] is None
            assert admin.execute("select to_regclass('reporting.stripe_drift')").fetchone()[0] is not None
