"""Property test: any sequence of spends, failures (refunds), grants and renewals keeps balance = sum(ledger) >= 0, and matches a simple model of the rules."""
from __future__ import annotations

import uuid

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import PASSWORD_HASH, acting_as

operations = st.lists(st.one_of(
    st.tuples(st.just("spend")),
    st.tuples(st.just("fail"), st.integers(min_value=0, max_value=20)),
    st.tuples(st.just("grant"), st.integers(min_value=1, max_value=50), st.sampled_from(["k1", "k2", "k3", "fresh"])),
    st.tuples(st.just("renew"), st.sampled_from([5, 20, 100]), st.sampled_from(["p1", "p2", "fresh"])),
), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_any_sequence_keeps_the_ledger_invariant(connect, ops):
    admin = connect("postgres")
    user = admin.execute("select id from app.signup(%s, %s, null)",
                         (f"prop-{uuid.uuid4().hex[:12]}@example.com", PASSWORD_HASH)).fetchone()["id"]
    admin.execute("update users set is_verified = true where id = %s", (user,))  # may spend every credit
    model_balance, jobs, used_keys = 5, [], set()
    for op in ops:
        if op[0] == "spend":
            try:
                with acting_as(admin, user):
                    jobs.append(admin.execute("select job_id from app.spend_credit_and_create_job('tiktok', 'prop')"
                                              ).fetchone()["job_id"])
                model_balance -= 1
            except psycopg.Error as error:
                assert error.sqlstate == "P0402" and model_balance == 0
        elif op[0] == "fail" and jobs:
            job = jobs[op[1] % len(jobs)]
            claim = admin.execute("select attempts from app.claim_job(%s)", (job,)).fetchone()
            failed = bool(claim) and admin.execute("select app.fail_job(%s, %s, 'prop') as f",
                                                   (job, claim["attempts"])).fetchone()["f"]
            model_balance += 1 if failed else 0
        elif op[0] == "grant":
            key = f"{user}:{op[2] if op[2] != 'fresh' else uuid.uuid4()}"
            granted = admin.execute("select granted from app.grant_credits(%s, %s, 'admin_grant', %s)",
                                    (user, op[1], key)).fetchone()["granted"]
            assert granted == (key not in used_keys)
            used_keys.add(key)
            model_balance += op[1] if granted else 0
        elif op[0] == "renew":
            key = f"renew:{user}:{op[2] if op[2] != 'fresh' else uuid.uuid4()}"
            reset = admin.execute("select app.renew_credits(%s, %s, 'renewal', %s, now(), now() + interval '1 month')"
                                  " as r", (user, op[1], key)).fetchone()["r"]
            assert reset == (key not in used_keys)
            used_keys.add(key)
            # nothing is due to expire at now(): a renewal adds its bucket (tests/test_credit_buckets_properties.py
            # models expiry and rollover)
            model_balance += op[1] if reset else 0
        state = admin.execute(
            "select s.credits_remaining, (select coalesce(sum(delta), 0) from credit_ledger l where l.user_id = s.user_id)"
            " as ledger from subscriptions s where s.user_id = %s", (user,)).fetchone()
        assert state["credits_remaining"] == state["ledger"] == model_balance >= 0, (op, state, model_balance)
