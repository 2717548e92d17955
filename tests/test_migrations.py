"""Migrations and the sql/ layer: apply to an empty database, roll back fully, re-apply,
and re-running migrate changes nothing."""
from __future__ import annotations

import psycopg

from web.migrate import migrate, rollback_all

from .conftest import throwaway_database

CATALOG_SNAPSHOT = """
select 'table ' || c.relname || ' ' || c.relkind::text || ' owner=' || pg_get_userbyid(c.relowner)
       || ' rls=' || c.relrowsecurity || ' force=' || c.relforcerowsecurity || ' acl=' || coalesce(c.relacl::text, '')
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where n.nspname in ('public', 'app', 'reporting') and c.relkind in ('r', 'v', 'S', 'i')
union all
select 'function ' || p.oid::regprocedure || ' owner=' || pg_get_userbyid(p.proowner)
       || ' definer=' || p.prosecdef || ' acl=' || coalesce(p.proacl::text, '') || ' src=' || md5(p.prosrc)
  from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'app'
union all
select 'policy ' || tablename || ' ' || policyname || ' ' || cmd || ' ' || roles::text || ' ' || coalesce(qual, '')
  from pg_policies where schemaname = 'public'
union all
select 'plan ' || p::text from plans p
union all
select 'trigger ' || tgname || ' on ' || tgrelid::regclass from pg_trigger where not tgisinternal
order by 1
"""


def snapshot(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [row[0] for row in conn.execute(CATALOG_SNAPSHOT)]


def user_tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("select tablename from pg_tables where schemaname = 'public'").fetchall()
    return {name for (name,) in rows}


def schemas(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("select nspname from pg_namespace where nspname in ('app', 'reporting')").fetchall()
    return {name for (name,) in rows}


def test_apply_rollback_reapply_on_an_empty_database():
    with throwaway_database("sg_migr") as dsn:
        migrate(dsn, environ={})
        first = snapshot(dsn)
        assert {"users", "subscriptions", "api_keys", "usage_logs", "jobs", "credit_ledger", "plans",
                "stripe_events", "refresh_tokens", "login_attempts", "pgqueuer"} <= user_tables(dsn)
        assert schemas(dsn) == {"app", "reporting"}

        rollback_all(dsn)
        # only yoyo's own bookkeeping tables remain
        assert {t for t in user_tables(dsn) if not t.startswith(("_yoyo", "yoyo"))} == set()
        assert schemas(dsn) == set()

        migrate(dsn, environ={})
        assert snapshot(dsn) == first


def test_migrate_twice_changes_nothing(database_dsn):
    before = snapshot(database_dsn)
    migrate(database_dsn, environ={})
    assert snapshot(database_dsn) == before


def test_plans_are_seeded(connect):
    rows = connect("sg_app").execute("select tier, credits, price_cents from plans order by sort_order").fetchall()
    assert [(r["tier"], r["credits"], r["price_cents"]) for r in rows] == [
        ("free", 5, 0), ("starter", 20, 900), ("pro", 100, 2900), ("agency", 500, 9900)]


def test_stripe_price_ids_come_from_the_environment():
    with throwaway_database("sg_migr") as dsn:
        migrate(dsn, environ={"STRIPE_PRICE_STARTER": "price_starter_123", "STRIPE_PRICE_PRO": "price_pro_456"})
        with psycopg.connect(dsn) as conn:
            prices = dict(conn.execute("select tier, stripe_price_id from plans").fetchall())
    assert prices == {"free": None, "starter": "price_starter_123", "pro": "price_pro_456", "agency": None}


def test_every_tenant_table_forces_row_level_security(connect):
    rows = connect("postgres").execute(
        "select relname, relrowsecurity, relforcerowsecurity from pg_class "
        "where relname in ('users', 'subscriptions', 'api_keys', 'usage_logs', 'credit_ledger', 'jobs', "
        "'refresh_tokens', 'stripe_events', 'login_attempts') and relkind = 'r'").fetchall()
    assert len(rows) == 9
    assert all(r["relrowsecurity"] and r["relforcerowsecurity"] for r in rows), rows


def test_security_definer_functions_pin_search_path_and_are_not_public(connect):
    rows = connect("postgres").execute(
        "select p.oid::regprocedure::text as name, p.proconfig, p.proacl::text as acl "
        "from pg_proc p join pg_namespace n on n.oid = p.pronamespace "
        "where n.nspname = 'app' and p.prosecdef").fetchall()
    assert rows, "expected SECURITY DEFINER functions in app"
    for row in rows:
        assert any(c.startswith("search_path=") for c in row["proconfig"] or []), row
        # an ACL entry for PUBLIC looks like "=X/owner"
        assert "{=" not in row["acl"] and ",=" not in row["acl"], row
