"""Schema management: roles, yoyo migrations, then the sql/ business layer.

`flask --app web migrate` (also the Procfile's release step) runs `migrate()`; running it
twice changes nothing, and a second run takes no lock on any table. A release must not
stop the service, so:

- pending migrations and the changed sql/ files apply in **one transaction**: new tables
  never meet old functions, and a failure leaves the previous release whole;
- the sql/ layer is re-applied only from the first file whose text changed (each file's
  SHA-256 is kept in `sql_layer_files`); functions are replaced in place (CREATE OR
  REPLACE; the `app` schema is never dropped, which would drop every policy and lock every
  tenant table), and the functions and views a changed file no longer defines are dropped,
  with the functions' grants reset first so a file's grants are exactly what it says;
  policies, row-security flags, triggers and views change only where they differ
  (sql/10_app.sql);
- every lock is asked for with `lock_timeout` (MIGRATE_LOCK_TIMEOUT, 2 s): a long query
  holding a table makes the release's transaction give up and retry with backoff (for up
  to MIGRATE_MAX_WAIT, 600 s) instead of queueing every request behind it; and no statement
  of the transaction runs longer than MIGRATE_STATEMENT_TIMEOUT (300 s) while it holds
  what it locked;
- a migration marked `-- transactional: false` (CREATE INDEX CONCURRENTLY, which cannot
  run in a transaction; or changes each committed on its own so no lock is held for long)
  runs one statement at a time with the same lock_timeout and retries: where it stands
  among the pending migrations, or, when it only builds indexes and comes last, after the
  release's transaction has committed (`_release_plan`). An index migration starts with
  `drop index concurrently if exists`, so a retry after a failed build (which leaves an
  invalid index) starts clean.
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import quote, urlencode

import click
import psycopg
import sqlparse
from flask import Flask, current_app
from flask.cli import with_appcontext
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from yoyo import get_backend, read_migrations

log = logging.getLogger("migrate")

ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = ROOT / "sql"
MIGRATIONS_DIR = ROOT / "migrations"
ROLES_FILE = SQL_DIR / "00_roles.sql"
# Serialises concurrent migrate runs against one database (two release processes).
_MIGRATE_LOCK_KEY = 0x5347_4D49  # "SGMI"
DEFAULT_LOCK_TIMEOUT = 2.0
DEFAULT_MAX_WAIT = 600.0
DEFAULT_STATEMENT_TIMEOUT = 300.0
T = TypeVar("T")


def _yoyo_url(dsn: str, **extra_params: str) -> str:
    """yoyo wants a URL; DATABASE_URL may be a URL or a key=value string."""
    params = {**conninfo_to_dict(dsn), **extra_params}
    user = params.pop("user", "")
    password = params.pop("password", None)
    host = params.pop("host", "")
    port = params.pop("port", None)
    dbname = params.pop("dbname", "")
    auth = user + (f":{password}" if password else "")
    netloc = f"{auth}@" if auth else ""
    # a socket directory goes in the query string; yoyo passes extra args to psycopg.connect
    if host.startswith("/"):
        params["host"] = host
        host = ""
    netloc += host + (f":{port}" if port else "")
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql+psycopg://{quote(netloc, safe='@:')}/{quote(dbname)}{query}"


def _owner_backend(dsn: str):
    """A yoyo backend whose session runs as sg_owner from its first statement, so the
    migrated objects and yoyo's own bookkeeping tables all belong to sg_owner."""
    return get_backend(_yoyo_url(dsn, options="-c role=sg_owner"))


def _run_sql_file(conn: psycopg.Connection, path: Path) -> None:
    with conn.transaction():
        conn.execute(path.read_text())


def business_sql_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    """sql/ files after the roles file, in name order (each begins with `set local role`)."""
    return sorted(p for p in sql_dir.glob("*.sql") if p.name != ROLES_FILE.name)


@dataclass
class Release:
    """What one migrate run applied."""
    migrations: list[str] = field(default_factory=list)
    sql_files: list[str] = field(default_factory=list)
    outside_transaction: list[str] = field(default_factory=list)
    lock_waits: int = 0

    def summary(self) -> str:
        if not (self.migrations or self.sql_files or self.outside_transaction):
            return "Database is up to date (nothing changed, no lock taken)."
        parts = []
        if self.migrations or self.outside_transaction:
            parts.append(f"migrations: {', '.join(self.migrations + self.outside_transaction)}")
        if self.sql_files:
            parts.append(f"sql/: {', '.join(self.sql_files)}")
        waits = f" after {self.lock_waits} lock timeout(s)" if self.lock_waits else ""
        return f"Database is up to date{waits}; applied {'; '.join(parts)}."


def _with_lock_retries(attempt: Callable[[], T], release: Release, max_wait: float, what: str) -> T:
    """attempt(), again with backoff while it fails on lock_timeout (or is the victim of a
    deadlock with a request), for up to `max_wait` s."""
    deadline = time.monotonic() + max_wait
    pause = 0.25
    while True:
        try:
            return attempt()
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as error:
            release.lock_waits += 1
            if time.monotonic() + pause > deadline:
                raise click.ClickException(f"{what}: a lock stayed taken for {max_wait:.0f} s ({error}); "
                                           "nothing was changed") from error
            log.warning("%s: lock not available (%s); retrying in %.1f s", what,
                        (error.diag.message_primary or "").strip(), pause)
            time.sleep(pause + random.uniform(0, pause / 4))
            pause = min(pause * 2, 5.0)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _app_functions(conn: psycopg.Connection) -> dict[int, tuple[str, str]]:
    """{oid: (signature, row version)} of every function in schema app. CREATE OR REPLACE
    writes a new row version (a new ctid, even within one transaction) for an identical
    definition too, so comparing versions before and after a file tells which functions
    the file defined."""
    rows = conn.execute("""
        select p.oid, format('%I.%I(%s)', n.nspname, p.proname, oidvectortypes(p.proargtypes)),
               p.ctid::text
          from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where n.nspname = 'app'""").fetchall()
    return {oid: (signature, version) for oid, signature, version in rows}


def _as_owner(conn: psycopg.Connection, signature: str, statement: sql.Composable) -> None:
    """Run `statement` about function `signature` as the function's owner (only an owner
    may drop it or revoke what it granted), if the function exists."""
    row = conn.execute("select proowner::regrole::text from pg_proc where oid = to_regprocedure(%s)",
                       (signature,)).fetchone()
    if row is None:
        return
    conn.execute(sql.SQL("set local role {}").format(sql.Identifier(row[0])))
    conn.execute(statement)
    conn.execute("reset role")


def _reset_grants(conn: psycopg.Connection, signatures: list[str]) -> None:
    """Revoke every grant on these functions (the file about to be re-applied grants what
    it means to), so a grant a file no longer makes does not outlive it."""
    for signature in signatures:
        grantees = [row[0] for row in conn.execute("""
            select distinct case when a.grantee = 0 then 'public' else a.grantee::regrole::text end
              from pg_proc p, aclexplode(p.proacl) a
             where p.oid = to_regprocedure(%s) and a.grantee <> p.proowner""", (signature,))]
        if grantees:
            roles = sql.SQL(", ").join(sql.SQL("public") if g == "public" else sql.Identifier(g) for g in grantees)
            _as_owner(conn, signature, sql.SQL("revoke all on function {} from {}").format(sql.SQL(signature), roles))


def _drop_functions(conn: psycopg.Connection, signatures) -> None:
    """Drop functions no file defines any more (no CASCADE: a dependent object is an error
    to look at, not something to lose quietly)."""
    for signature in sorted(signatures):
        log.info("dropping %s: no sql/ file defines it any more", signature)
        _as_owner(conn, signature, sql.SQL("drop function {}").format(sql.SQL(signature)))


def _drop_views(conn: psycopg.Connection, names) -> None:
    """Drop views no file defines any more, as their owner (no CASCADE, as for functions)."""
    for name in sorted(names):
        row = conn.execute("select relowner::regrole::text from pg_class where oid = to_regclass(%s)",
                           (name,)).fetchone()
        if row is None:
            continue
        log.info("dropping view %s: no sql/ file defines it any more", name)
        conn.execute(sql.SQL("set local role {}").format(sql.Identifier(row[0])))
        conn.execute(sql.SQL("drop view {}").format(sql.SQL(name)))
        conn.execute("reset role")


def _apply_sql_layer(conn: psycopg.Connection, sql_dir: Path, reapply: bool) -> list[str]:
    """Apply the sql/ files from the first one whose text changed (all of them with
    `reapply`) in the caller's transaction; the names applied."""
    files = business_sql_files(sql_dir)
    texts = {path.name: path.read_text() for path in files}
    stored = {name: (digest, list(functions), list(views)) for name, digest, functions, views
              in conn.execute("select name, sha256, functions, views from sql_layer_files")}
    first = next((i for i, path in enumerate(files)
                  if reapply or stored.get(path.name, (None,))[0] != _sha256(texts[path.name])), len(files))
    removed = sorted(set(stored) - set(texts))
    for name in removed:
        _drop_views(conn, stored[name][2])
        _reset_grants(conn, stored[name][1])
        _drop_functions(conn, stored[name][1])
        conn.execute("delete from sql_layer_files where name = %s", (name,))
    applied = []
    for path in files[first:]:
        _, previous, previous_views = stored.get(path.name, (None, [], []))
        _reset_grants(conn, previous)
        before = _app_functions(conn)
        conn.execute("select set_config('sg.views_defined', '', true)")
        conn.execute(texts[path.name])
        conn.execute("reset role")
        defined = sorted(signature for oid, (signature, version) in _app_functions(conn).items()
                         if before.get(oid, (None, None))[1] != version)
        views = sorted(set(filter(None, (conn.execute("select current_setting('sg.views_defined', true)")
                                         .fetchone()[0] or "").split(","))))
        _drop_views(conn, set(previous_views) - set(views))
        _drop_functions(conn, set(previous) - set(defined))
        conn.execute("""insert into sql_layer_files (name, sha256, functions, views) values (%s, %s, %s, %s)
                        on conflict (name) do update set sha256 = excluded.sha256, functions = excluded.functions,
                                                         views = excluded.views, applied_at = now()""",
                     (path.name, _sha256(texts[path.name]), defined, views))
        applied.append(path.name)
    return applied


def _sync_stripe_prices(conn: psycopg.Connection, environ) -> None:
    """plans.stripe_price_id comes from STRIPE_PRICE_<TIER> when set, credit_packs' from
    STRIPE_PRICE_<PACK> (e.g. STRIPE_PRICE_PACK_10), rows written only when different."""
    for tier in ("starter", "pro", "agency"):
        price = environ.get(f"STRIPE_PRICE_{tier.upper()}")
        if price:
            conn.execute("update plans set stripe_price_id = %s where tier = %s and stripe_price_id is distinct from %s",
                         (price, tier, price))
    for (pack,) in conn.execute("select pack from credit_packs").fetchall():
        price = environ.get(f"STRIPE_PRICE_{pack.upper()}")
        if price:
            conn.execute("update credit_packs set stripe_price_id = %s where pack = %s "
                         "and stripe_price_id is distinct from %s", (price, pack, price))


def webhook_secrets(environ) -> list[str]:
    """STRIPE_WEBHOOK_SECRET: one `whsec_…` secret, or several separated by commas while
    one is being rotated (Stripe signs with each of an endpoint's live secrets)."""
    return [part.strip() for part in (environ.get("STRIPE_WEBHOOK_SECRET") or "").split(",") if part.strip()]


def _sync_webhook_secrets(conn: psycopg.Connection, environ) -> None:
    """The webhook's signing secrets live in the database, where the signature is checked
    (sql/51_stripe_events.sql): the web process never needs them. Set from
    STRIPE_WEBHOOK_SECRET when it is given and differs from what is stored (the table is
    altered to write it, so only then); left as they are when it is not given."""
    secrets = webhook_secrets(environ)
    if not secrets:
        return
    conn.execute("set local role sg_service")  # the one role that may read them
    stored = {row[0] for row in conn.execute("select secret from stripe_webhook_secrets")}
    conn.execute("reset role")
    if stored == set(secrets):
        return
    conn.execute("alter table stripe_webhook_secrets no force row level security")
    conn.execute("delete from stripe_webhook_secrets where not (secret = any(%s))", (secrets,))
    for secret in secrets:
        conn.execute("insert into stripe_webhook_secrets (secret) values (%s) on conflict do nothing", (secret,))
    conn.execute("alter table stripe_webhook_secrets force row level security")


def _apply_release(backend, migrations, environ, sql_dir: Path, reapply: bool, lock_timeout: float,
                   statement_timeout: float, release: Release, with_sql_layer: bool = True) -> None:
    """Transactional migrations, then (`with_sql_layer`) the changed sql/ files and the
    settings from the environment, in one transaction on the owner's connection. A
    statement may run for `statement_timeout` at most: whatever it has locked is locked for
    everyone meanwhile."""
    conn: psycopg.Connection = backend.connection
    backend.begin()
    try:
        conn.execute(sql.SQL("set local lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout * 1000)}ms")))
        conn.execute(sql.SQL("set local statement_timeout = {}").format(
            sql.Literal(f"{int(statement_timeout * 1000)}ms")))
        for migration in migrations:
            migration.process_steps(backend, "apply")  # a savepoint inside our transaction
            backend.log_migration(migration, "apply")
            backend.mark_one(migration, log=False)
        sql_files = []
        if with_sql_layer:
            sql_files = _apply_sql_layer(conn, sql_dir, reapply)
            _sync_stripe_prices(conn, environ)
            _sync_webhook_secrets(conn, environ)
        backend.commit()
    except BaseException:
        backend.rollback()
        raise
    release.migrations += [m.id for m in migrations]
    release.sql_files += sql_files


def _apply_outside_transaction(backend, migration, lock_timeout: float) -> None:
    """A `-- transactional: false` migration: each statement on its own (autocommit)."""
    conn: psycopg.Connection = backend.connection
    conn.execute(sql.SQL("set lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout * 1000)}ms")))
    try:
        migration.process_steps(backend, "apply")
    finally:
        conn.execute("reset lock_timeout")
    with backend.transaction():
        backend.log_migration(migration, "apply")
        backend.mark_one(migration, log=False)


_INDEX_STATEMENT = re.compile(r"^\s*(create\s+(unique\s+)?index|drop\s+index)\b", re.IGNORECASE)


def _builds_indexes_only(migration) -> bool:
    """Whether every statement of a migration creates or drops an index (nothing the sql/
    layer could depend on)."""
    path = Path(migration.path)
    if path.suffix != ".sql":
        return False
    statements = [sqlparse.format(statement, strip_comments=True).strip()
                  for statement in sqlparse.split(path.read_text())]
    statements = [statement for statement in statements if statement]
    return bool(statements) and all(_INDEX_STATEMENT.match(statement) for statement in statements)


def _release_plan(pending: list) -> tuple[list[tuple[str, list]], list]:
    """The order to apply pending migrations in: ([(kind, migrations)], run after).

    Consecutive transactional migrations share a transaction; a `transactional: false` one
    runs on its own where it stands (later migrations may need what it adds). The sql/ layer
    joins the last transaction ("release") when it is the last pending step, so the common
    release (transactional migrations, then functions that use them) is one transaction;
    index-only `transactional: false` migrations at the end run after it commits (the sql/
    layer never needs an index to exist); otherwise the sql/ layer comes last, on its own."""
    after: list = []
    rest = list(pending)
    while rest and not rest[-1].use_transactions and _builds_indexes_only(rest[-1]):
        after.insert(0, rest.pop())
    steps: list[tuple[str, list]] = []
    for migration in rest:
        if not migration.use_transactions:
            steps.append(("outside", [migration]))
        elif steps and steps[-1][0] == "transaction":
            steps[-1][1].append(migration)
        else:
            steps.append(("transaction", [migration]))
    if steps and steps[-1][0] == "transaction":
        steps[-1] = ("release", steps[-1][1])
    else:
        steps.append(("release", []))
    return steps, after


def _setting(environ, name: str, default: float) -> float:
    value = environ.get(name)
    try:
        number = float(value) if value else default
    except ValueError:
        raise click.ClickException(f"{name} must be a number of seconds, not {value!r}") from None
    if number <= 0:
        raise click.ClickException(f"{name} must be more than 0 seconds")
    return number


def migrate(dsn: str, environ=None, *, reapply_sql: bool = False, migrations_dir: Path = MIGRATIONS_DIR,
            sql_dir: Path = SQL_DIR) -> Release:
    """Bring the database at `dsn` (an administrator's DSN) fully up to date; what it applied."""
    environ = os.environ if environ is None else environ
    lock_timeout = _setting(environ, "MIGRATE_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT)
    max_wait = _setting(environ, "MIGRATE_MAX_WAIT", DEFAULT_MAX_WAIT)
    statement_timeout = _setting(environ, "MIGRATE_STATEMENT_TIMEOUT", DEFAULT_STATEMENT_TIMEOUT)
    release = Release()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (_MIGRATE_LOCK_KEY,))
        try:
            # roles are cluster-wide (not in any database's transaction); no table is locked
            _run_sql_file(conn, sql_dir / ROLES_FILE.name)
            backend = _owner_backend(dsn)
            try:
                backend.ensure_internal_schema_updated()
                pending = list(backend.to_apply(read_migrations(str(migrations_dir))))
                for migration in pending:
                    migration.load()
                steps, after = _release_plan(pending)
                for kind, migrations in steps:
                    if kind == "outside":
                        _with_lock_retries(lambda m=migrations[0]: _apply_outside_transaction(backend, m, lock_timeout),
                                           release, max_wait, migrations[0].id)
                        release.outside_transaction.append(migrations[0].id)
                    else:
                        _with_lock_retries(lambda ms=migrations, last=kind == "release": _apply_release(
                            backend, ms, environ, sql_dir, reapply_sql, lock_timeout, statement_timeout, release,
                            with_sql_layer=last), release, max_wait, "release")
                for migration in after:
                    _with_lock_retries(lambda m=migration: _apply_outside_transaction(backend, m, lock_timeout),
                                       release, max_wait, migration.id)
                    release.outside_transaction.append(migration.id)
            finally:
                backend.connection.close()
            _set_role_passwords(conn, environ)
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (_MIGRATE_LOCK_KEY,))
    return release


def _set_role_passwords(conn: psycopg.Connection, environ) -> None:
    """SG_APP_PASSWORD / SG_WORKER_PASSWORD, when set, become the runtime roles' passwords."""
    for role, variable in (("sg_app", "SG_APP_PASSWORD"), ("sg_worker", "SG_WORKER_PASSWORD")):
        if environ.get(variable):
            conn.execute(sql.SQL("alter role {} password {}").format(sql.Identifier(role),
                                                                    sql.Literal(environ[variable])))


def rollback_all(dsn: str) -> None:
    """Remove the business layer and roll every migration back (roles stay: they are
    cluster-wide and other databases may use them)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (_MIGRATE_LOCK_KEY,))
        try:
            with conn.transaction():
                conn.execute("set local role sg_owner")
                conn.execute("drop schema if exists reporting cascade")
                conn.execute("drop schema if exists app cascade")
            backend = _owner_backend(dsn)
            try:
                with backend.lock():
                    backend.rollback_migrations(backend.to_rollback(read_migrations(str(MIGRATIONS_DIR))))
            finally:
                backend.connection.close()
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (_MIGRATE_LOCK_KEY,))


@click.command("migrate")
@with_appcontext
@click.option("--rollback", is_flag=True, help="Roll everything back instead (drops all data).")
@click.option("--reapply-sql", is_flag=True, help="Re-apply every sql/ file, changed or not.")
def migrate_command(rollback: bool, reapply_sql: bool) -> None:
    """Apply migrations and the sql/ layer to DATABASE_URL (idempotent; retries while a
    table it must change is locked: MIGRATE_LOCK_TIMEOUT, MIGRATE_MAX_WAIT)."""
    dsn = current_app.config["DATABASE_URL"]
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("migrate: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    if rollback:
        rollback_all(dsn)
        click.echo("Rolled back every migration.")
    else:
        click.echo(migrate(dsn, reapply_sql=reapply_sql).summary())


def init_app(app: Flask) -> None:
    app.cli.add_command(migrate_command)
