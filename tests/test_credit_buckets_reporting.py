"""The accountant's credit views (issue 19), read as sg_analyst from a database of their own:
reporting.credit_liability (unexpired credits by source and month, deferred revenue of
packs) and reporting.credit_breakage (expired, rolled over, breakage, pack breakage)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.rows import dict_row

from web.config import role_dsn
from web.migrate import migrate

from .conftest import PASSWORD_HASH, acting_as, throwaway_database


@pytest.fixture(scope="module")
def books():
    """One account's year in miniature: a plan period partly used and renewed (its unused
    credits rolled over), a pack left to expire unused, another pack untouched."""
    with throwaway_database("sg_credit_books") as dsn:
        migrate(dsn, environ={})
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as admin:
            uid = admin.execute("select id from app.signup('books@example.com', %s, null)",
                                (PASSWORD_HASH,)).fetchone()["id"]
            admin.execute("update users set is_verified = true where id = %s", (uid,))
            boundary = datetime.now(timezone.utc) + timedelta(hours=1)
            admin.execute("select * from app.grant_credits(%s, 20, 'plan_grant', 'plan:books:initial', "
                          "expires_at => %s, plan_tier => 'starter')", (uid, boundary))
            admin.execute("select app._grant_pack(%s, 'pack_10', 500, 'usd', 'cs_books_1', 'cs_books_1', "
                          "'pi_books_1', null)", (uid,))
            for _ in range(4):  # the plan's credits expire first
                with acting_as(admin, uid):
                    admin.execute("select * from app.spend_credit_and_create_job('tiktok', 'books')")
            admin.execute("select app.renew_credits(%s, 20, 'renewal', 'plan:books:1', %s, %s, move_period => false, "
                          "plan_tier => 'starter')", (uid, boundary, boundary + timedelta(days=30)))
            # the first pack's year is over, unused
            admin.execute("update credit_buckets set expires_at = now() - interval '1 second' "
                          "where user_id = %s and source = 'pack'", (uid,))
            admin.execute("select app.expire_credit_buckets()")
            admin.execute("select app._grant_pack(%s, 'pack_50', 2000, 'usd', 'cs_books_2', 'cs_books_2', "
                          "'pi_books_2', null)", (uid,))
        with psycopg.connect(role_dsn(dsn, "sg_analyst"), autocommit=True, row_factory=dict_row) as analyst:
            yield analyst, dsn, uid


def test_liability_lists_what_is_still_owed_by_source(books):
    analyst, _, _ = books
    rows = analyst.execute("select source, sum(credits_outstanding)::int as left, "
                           "sum(deferred_revenue_cents)::int as deferred from reporting.credit_liability "
                           "group by source order by source").fetchall()
    assert [(r["source"], r["left"], r["deferred"]) for r in rows] == [
        ("pack", 50, 2000), ("renewal", 20, None), ("rollover", 16, None), ("signup", 5, None)]


def test_breakage_is_what_expired_less_what_rolled_over(books):
    analyst, _, _ = books
    total = analyst.execute("""select sum(credits_expired)::int as expired, sum(credits_rolled_over)::int as rolled,
                                      sum(pack_credits_expired)::int as pack, sum(pack_breakage_cents)::int as cents,
                                      sum(credits_clawed_back)::int as clawed
                                 from reporting.credit_breakage""").fetchone()
    # 16 plan credits expired at the renewal and were carried over; the unused pack lapsed
    assert total == {"expired": 26, "rolled": 16, "pack": 10, "cents": 500, "clawed": 0}


def test_the_views_hold_no_personal_data_and_the_analyst_no_tables(books):
    analyst, _, _ = books
    columns = {r["column_name"] for r in analyst.execute(
        "select column_name from information_schema.columns where table_schema = 'reporting' "
        "and table_name in ('credit_liability', 'credit_breakage')").fetchall()}
    assert not columns & {"user_id", "email", "full_name"}
    for table in ("credit_buckets", "pack_purchases", "auto_top_up"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            analyst.execute(f"select 1 from public.{table} limit 1")


def test_the_books_balance(books):
    _, dsn, uid = books
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as admin:
        state = admin.execute("select credits_remaining, (select sum(delta) from credit_ledger where user_id = %s) "
                              "as ledger, (select sum(remaining) from credit_buckets where user_id = %s) as buckets "
                              "from subscriptions where user_id = %s", (uid, uid, uid)).fetchone()
    assert state == {"credits_remaining": 91, "ledger": 91, "buckets": 91}
