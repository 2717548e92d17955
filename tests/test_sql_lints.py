"""Established Postgres linters over the whole database layer, so a new function, table or
migration cannot bring back what they catch:

- plpgsql_check (Debian postgresql-15-plpgsql-check): every PL/pgSQL function compiled and
  checked without running it — errors, security and extra warnings;
- squawk (PyPI squawk-cli): every migration checked for locks and rewrites that would stall
  the service; migrations already released keep the findings they shipped with (they are
  forever), new ones must have none;
- catalog lints adapted from Supabase's splinter to our roles: unindexed foreign keys,
  tables reachable by a runtime role without forced row-level security, SECURITY DEFINER
  without a pinned search_path, functions executable by PUBLIC, policies that re-evaluate
  the user per row, views that bypass RLS, duplicate indexes.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from web.migrate import MIGRATIONS_DIR

ROOT = Path(__file__).resolve().parent.parent

# -- plpgsql_check --------------------------------------------------------------------------

CHECK_EVERY_FUNCTION = """
select p.oid::regprocedure::text as function, t.lineno, t.statement, t.sqlstate, t.message, t.level
  from pg_proc p
  join pg_namespace n on n.oid = p.pronamespace
  join pg_language l on l.oid = p.prolang and l.lanname = 'plpgsql'
  cross join lateral plpgsql_check_function_tb(
      p.oid, coalesce((select tg.tgrelid from pg_trigger tg where tg.tgfoid = p.oid limit 1), 0),
      security_warnings => true, extra_warnings => true) t
 where n.nspname in ('app', 'public', 'reporting')
   -- a trigger function is checked against the table it is attached to
   and (p.prorettype <> 'trigger'::regtype or exists (select 1 from pg_trigger tg where tg.tgfoid = p.oid))
   -- dynamic SQL matters where a runtime role can reach it: the release helpers
   -- (app._ensure_policy, app._ensure_trigger) run DDL text from the sql/ files, as the owner only
   and not (t.level = 'security' and not exists (
         select 1 from unnest(array['sg_app', 'sg_worker', 'sg_service', 'sg_analyst', 'sg_reporting']) r
          where has_function_privilege(r, p.oid, 'execute')))
"""


def test_plpgsql_check_finds_nothing_in_any_function(database_dsn):
    with psycopg.connect(database_dsn, autocommit=True) as admin:
        if not admin.execute("select 1 from pg_available_extensions where name = 'plpgsql_check'").fetchone():
            pytest.skip("plpgsql_check is not installed (apt-get install postgresql-15-plpgsql-check; .ci/run does)")
        admin.execute("create extension if not exists plpgsql_check")
        try:
            # the checker plans each query, and planning may evaluate app.require_user_id(),
            # which refuses to run without a user: give the session one
            admin.execute("select set_config('app.user_id', gen_random_uuid()::text, false)")
            findings = admin.execute(CHECK_EVERY_FUNCTION).fetchall()
            checked = admin.execute("select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace "
                                    "join pg_language l on l.oid = p.prolang where l.lanname = 'plpgsql' "
                                    "and n.nspname in ('app', 'public', 'reporting')").fetchone()[0]
        finally:
            admin.execute("drop extension plpgsql_check")
    assert checked > 50
    assert findings == []


# -- squawk ---------------------------------------------------------------------------------

# Released migrations are forever: what squawk finds in them is recorded here, each with why
# it is harmless, and only new findings fail. (Most are on tables the same migration creates,
# which squawk cannot tell from existing ones.)
RELEASED = {
    "0010.login_attempt_indexes": {"require-concurrent-index-creation", "require-concurrent-index-deletion"},
    "0011.reporting_rollups": {"require-concurrent-index-creation"},
    "0012.login_attempts_hold_failures": {"require-concurrent-index-creation", "require-concurrent-index-deletion",
                                          "ban-drop-column"},
    "0013.billing_lifecycle": {"constraint-missing-not-valid", "ban-drop-constraint", "adding-foreign-key-constraint",
                               "require-concurrent-index-creation"},
    "0021.refresh_families": {"adding-foreign-key-constraint", "constraint-missing-not-valid"},
    "0022.sign_in_throttle": {"require-concurrent-index-creation", "adding-foreign-key-constraint",
                              "constraint-missing-not-valid", "ban-drop-constraint"},
    "0023.safe_mail": {"constraint-missing-not-valid"},
    "0030.ledger_note": {"constraint-missing-not-valid"},
}
# `flask migrate` sets lock_timeout and statement_timeout itself (web/migrate.py), and a
# 32-bit counter column is a choice, not a hazard
EXCLUDED = "require-lock-timeout,require-statement-timeout,prefer-bigint-over-int"


def _squawk() -> str:
    found = shutil.which("squawk") or str(Path(sys.executable).parent / "squawk")
    if not Path(found).exists():
        pytest.skip("squawk is not installed (pip install squawk-cli; make test does)")
    return found


def _squawk_rules(squawk: str, migration: Path) -> set[str]:
    text = migration.read_text()
    args = [squawk, "--pg-version=15", f"--exclude={EXCLUDED}", "--reporter=gitlab"]
    # a yoyo migration runs in one transaction unless it says otherwise
    if "-- transactional: false" not in text:
        args.append("--assume-in-transaction")
    result = subprocess.run([*args, str(migration)], capture_output=True, text=True)
    return set(re.findall(r'"check_name":\s*"([a-z-]+)"', result.stdout))


@pytest.mark.parametrize("migration", sorted(p for p in MIGRATIONS_DIR.glob("*.sql") if ".rollback." not in p.name),
                         ids=lambda p: p.stem)
def test_squawk_finds_nothing_new_in_a_migration(migration):
    found = _squawk_rules(_squawk(), migration)
    assert found <= RELEASED.get(migration.stem, set()), f"{migration.name}: {sorted(found)}"


def test_squawk_still_reports_what_it_reports():
    """The linter runs and is read right: a blocking index build is a finding."""
    bad = ROOT / "tests" / "artifacts" / "9999.squawk_probe.sql"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text("create index jobs_topic_idx on jobs (topic);\n")
    try:
        assert "require-concurrent-index-creation" in _squawk_rules(_squawk(), bad)
    finally:
        bad.unlink()


# -- catalog lints (after Supabase splinter) --------------------------------------------------

LINTS = {
    "unindexed foreign key": """
        select c.conrelid::regclass::text || ' ' || c.conname
          from pg_constraint c join pg_class t on t.oid = c.conrelid join pg_namespace n on n.oid = t.relnamespace
         where c.contype = 'f' and n.nspname in ('public', 'app', 'reporting')
           -- the plan list is a handful of rows that are never deleted
           and c.confrelid <> 'public.plans'::regclass
           and not exists (select 1 from pg_index i where i.indrelid = c.conrelid
                             and (i.indkey::int2[])[0:cardinality(c.conkey) - 1] @> c.conkey::int2[]
                             and c.conkey::int2[] @> (i.indkey::int2[])[0:cardinality(c.conkey) - 1])""",
    "table a runtime role reaches without forced row-level security": """
        select c.oid::regclass::text
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = 'public' and c.relkind in ('r', 'p')
           and (not c.relrowsecurity or not c.relforcerowsecurity)
           and exists (select 1 from unnest(array['sg_app', 'sg_worker', 'sg_analyst']) r
                        where has_table_privilege(r, c.oid, 'select, insert, update, delete')
                          -- pgqueuer's tables are the worker's own queue, across every tenant
                          -- by design; the web role enqueues only inside SECURITY DEFINER functions
                          and not (r = 'sg_worker' and c.relname like 'pgqueuer%'))
           -- the public price list: read-only to every role, no tenant in it
           and c.oid <> 'public.plans'::regclass""",
    "security definer function without a pinned search_path": """
        select p.oid::regprocedure::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where n.nspname in ('app', 'public', 'reporting') and p.prosecdef
           and not exists (select 1 from unnest(p.proconfig) s where s like 'search_path=%')""",
    "function executable by PUBLIC": """
        select p.oid::regprocedure::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where n.nspname in ('app', 'reporting') and has_function_privilege('public', p.oid, 'execute')""",
    "policy that evaluates the user per row (wrap it in a sub-select)": """
        select tablename || ' ' || policyname from pg_policies
         where schemaname = 'public'
           and (coalesce(qual, '') || coalesce(with_check, '')) ~ 'current_setting|current_user_id\\(\\)'
           and (coalesce(qual, '') || coalesce(with_check, '')) !~* '\\(\\s*select\\s+app\\.current_user_id\\(\\)'""",
    "view a runtime role reads with its owner's rights": """
        select c.oid::regclass::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where c.relkind in ('v', 'm') and n.nspname in ('public', 'app')
           and not coalesce(c.reloptions @> array['security_invoker=true'], false)
           and exists (select 1 from unnest(array['sg_app', 'sg_worker']) r where has_table_privilege(r, c.oid, 'select'))""",
    "duplicate index": """
        select string_agg(i.indexrelid::regclass::text, ' = ')
          from pg_index i join pg_class t on t.oid = i.indrelid join pg_namespace n on n.oid = t.relnamespace
         where n.nspname in ('public', 'app', 'reporting')
         group by i.indrelid, i.indkey::text, i.indclass::text, coalesce(pg_get_expr(i.indexprs, i.indrelid), ''),
                  coalesce(pg_get_expr(i.indpred, i.indrelid), '')
        having count(*) > 1""",
}


@pytest.mark.parametrize("lint", LINTS)
def test_catalog_lint(connect, lint):
    found = [row[next(iter(row))] for row in connect("postgres").execute(LINTS[lint]).fetchall()]
    assert found == [], f"{lint}: {found}"
