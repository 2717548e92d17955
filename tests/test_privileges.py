"""Who may call what (issue 16, item 3), asserted in SQL as each runtime role: the
functions that move credits without a signed Stripe event or an operator are closed to
the web and worker roles (the worker refunds through fail_job, the billing functions
call grant/renew internally as sg_service)."""
from __future__ import annotations

import psycopg
import pytest

from .conftest import acting_as, balance

CREDIT_FUNCTIONS = [
    "select app.grant_credits(%(user)s, 100, 'admin_grant', 'mint:' || gen_random_uuid())",
    "select app.grant_credits(%(user)s, 100, 'admin_grant', 'mint:' || gen_random_uuid(), null, null, 'note')",
    "select app.renew_credits(%(user)s, 1000, 'renewal', 'mint:' || gen_random_uuid(), now(), now() + interval '1 month')",
    "select app.refund_job(%(job)s)",
    "select app.operator_grant(%(user)s, 100, 'mint-' || gen_random_uuid(), 'because')",
    "select app._settle_rollover(%(user)s, gen_random_uuid())",
    "select app._open_bucket(%(user)s, 100, 'admin_grant', 'mint:' || gen_random_uuid(), 'operator', null)",
    "select app.fail_and_refund(%(job)s, 'x')",
]


@pytest.fixture
def failed_job(make_user, connect):
    """A user with a job that failed without its refund yet (the state refund_job acts on)."""
    uid = make_user()
    admin = connect("postgres")
    with acting_as(admin, uid):
        job = admin.execute("select job_id from app.spend_credit_and_create_job('tiktok', 'refund me')").fetchone()
    admin.execute("update jobs set status = 'failed' where id = %s", (job["job_id"],))
    return {"user": uid, "job": job["job_id"]}


@pytest.mark.parametrize("role", ["sg_app", "sg_worker", "sg_analyst"])
@pytest.mark.parametrize("call", CREDIT_FUNCTIONS)
def test_no_runtime_role_may_move_credits_directly(connect, failed_job, role, call):
    conn = connect(role)
    with pytest.raises(psycopg.Error) as raised:
        with acting_as(conn, failed_job["user"]):
            conn.execute(call, failed_job)
    assert raised.value.sqlstate == "42501"
    assert balance(connect("postgres"), failed_job["user"]) == 4


def test_the_owner_paths_still_work(connect, failed_job):
    """sg_service (what the billing, renewal and job functions run as) keeps them."""
    admin = connect("postgres")
    with admin.transaction():
        admin.execute("set local role sg_service")
        assert admin.execute("select app.refund_job(%(job)s) as r", failed_job).fetchone()["r"] is True
        admin.execute("select app.grant_credits(%(user)s, 2, 'admin_grant', 'owner:' || gen_random_uuid())",
                      failed_job)
    assert balance(admin, failed_job["user"]) == 7
