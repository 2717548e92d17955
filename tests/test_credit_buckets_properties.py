"""Property test (hypothesis) of the credit buckets: any sequence of grants, spends,
refunds, expiries (read time and the job), paid renewals with rollover and clawbacks keeps
balance = Σ ledger = Σ bucket remainders >= 0, never spends an expired credit, always draws
the soonest-expiring bucket first, and matches a small model of the rules."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import PASSWORD_HASH, acting_as
from .test_credit_buckets import assert_invariants

DAY = timedelta(days=1)
PERIOD = timedelta(days=30)
STARTER = 20

operations = st.lists(st.one_of(
    st.tuples(st.just("grant"), st.integers(1, 8), st.sampled_from([None, 1, 2, 2, 5, 45, 75]), st.booleans()),
    st.tuples(st.just("spend")),
    st.tuples(st.just("spend")),
    st.tuples(st.just("fail"), st.integers(0, 30)),
    st.tuples(st.just("age"), st.integers(0, 30)),
    st.tuples(st.just("sweep")),
    st.tuples(st.just("renew")),
    st.tuples(st.just("claw"), st.integers(0, 30), st.integers(1, 10)),
), min_size=1, max_size=25)


@dataclass
class Bucket:
    id: uuid.UUID
    remaining: int
    expires: datetime | None
    rollable: bool
    step: int          # the operation that opened it: one transaction, one created_at
    expired: int = 0
    clawed: bool = False
    closed: bool = False   # its expiry has been recorded (by the job or a renewal)

    def live(self, now: datetime) -> bool:
        return self.remaining > 0 and (self.expires is None or self.expires > now)

    def rank(self):
        return (self.expires or datetime.max.replace(tzinfo=timezone.utc), self.step)


def new_buckets(admin, uid, known: dict) -> list[dict]:
    rows = admin.execute("select id, source, amount, expires_at, plan_tier from credit_buckets where user_id = %s "
                         "order by created_at, id", (uid,)).fetchall()
    return [r for r in rows if r["id"] not in known]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_any_sequence_keeps_the_bucket_invariants(connect, ops):
    admin = connect("postgres")
    uid = admin.execute("select id from app.signup(%s, %s, null)",
                        (f"bprop-{uuid.uuid4().hex[:12]}@example.com", PASSWORD_HASH)).fetchone()["id"]
    admin.execute("update users set is_verified = true where id = %s", (uid,))
    base = admin.execute("select now() as t").fetchone()["t"]
    model: dict[uuid.UUID, Bucket] = {}
    for row in new_buckets(admin, uid, model):
        model[row["id"]] = Bucket(row["id"], row["amount"], row["expires_at"], False, 0)
    jobs: list[tuple[uuid.UUID, uuid.UUID]] = []   # (job, bucket it drew from)
    failed: set[uuid.UUID] = set()
    boundary = base + PERIOD                       # the next paid renewal's period start
    # the plan period running now: its credits roll at `boundary`
    admin.execute("select * from app.grant_credits(%s, %s, 'plan_grant', %s, expires_at => %s, plan_tier => 'starter')",
                  (uid, STARTER, f"plan:{uid}:initial", boundary))
    [row] = new_buckets(admin, uid, model)
    model[row["id"]] = Bucket(row["id"], STARTER, boundary, True, 0)

    for step, op in enumerate(ops, start=1):
        now = admin.execute("select now() as t").fetchone()["t"]
        if op[0] == "grant":
            _, amount, days, is_plan = op
            expires = None if days is None else base + days * DAY
            if is_plan:
                expires = boundary  # an upgrade's difference expires with the current period
                admin.execute("select * from app.grant_credits(%s, %s, 'upgrade_grant', %s, expires_at => %s, "
                              "plan_tier => 'pro')", (uid, amount, f"up:{uuid.uuid4()}", expires))
            else:
                admin.execute("select * from app.grant_credits(%s, %s, 'admin_grant', %s, expires_at => %s)",
                              (uid, amount, f"g:{uuid.uuid4()}", expires))
            [row] = new_buckets(admin, uid, model)
            assert (row["amount"], row["expires_at"]) == (amount, expires)
            model[row["id"]] = Bucket(row["id"], amount, expires, is_plan, step)
        elif op[0] == "spend":
            live = [b for b in model.values() if b.live(now)]
            try:
                with acting_as(admin, uid):
                    job = admin.execute("select * from app.spend_credit_and_create_job('tiktok', 'prop')").fetchone()
            except psycopg.Error as error:
                assert error.sqlstate == "P0402" and not live, (op, error)
                continue
            drawn = admin.execute("select bucket_id from credit_ledger where idempotency_key = %s",
                                  (f"render:{job['job_id']}",)).fetchone()["bucket_id"]
            assert live, "spent with no live credit"
            soonest = min(b.rank() for b in live)
            assert model[drawn].live(now) and model[drawn].rank() == soonest, (op, model[drawn], soonest)
            model[drawn].remaining -= 1
            jobs.append((job["job_id"], drawn))
            assert job["credits_remaining"] == sum(b.remaining for b in model.values() if b.live(now))
        elif op[0] == "fail" and jobs:
            job, drawn = jobs[op[1] % len(jobs)]
            claim = admin.execute("select attempts from app.claim_job(%s)", (job,)).fetchone()
            refunded = bool(claim) and admin.execute("select app.fail_job(%s, %s, 'prop') as f",
                                                     (job, claim["attempts"])).fetchone()["f"]
            assert refunded == (job not in failed)
            if refunded:
                failed.add(job)
                bucket = model[drawn]
                if bucket.closed or (bucket.expires is not None and bucket.expires <= now):
                    bucket.expired += 1     # back into its bucket, which has expired: gone at once
                elif bucket.clawed:
                    pass                    # its purchase was taken back: so is the refunded credit
                else:
                    bucket.remaining += 1
        elif op[0] == "age":
            # time passes for one bucket: its expiry comes now
            candidates = sorted((b for b in model.values() if b.expires is not None and b.expires > now),
                                key=lambda b: b.id)
            if candidates:
                bucket = candidates[op[1] % len(candidates)]
                bucket.expires = admin.execute("update credit_buckets set expires_at = now() - interval '1 second' "
                                               "where id = %s returning expires_at", (bucket.id,)).fetchone()["expires_at"]
        elif op[0] == "sweep":
            connect("sg_worker").execute("select app.expire_credit_buckets()")
            for bucket in model.values():
                if bucket.expires is not None and bucket.expires <= now and bucket.remaining:
                    bucket.expired += bucket.remaining
                    bucket.remaining = 0
                    bucket.closed = True
        elif op[0] == "renew":
            assert admin.execute("select app.renew_credits(%s, %s, 'renewal', %s, %s, %s, move_period => false, "
                                 "plan_tier => 'starter') as r",
                                 (uid, STARTER, f"plan:{uid}:{boundary.timestamp()}", boundary, boundary + PERIOD)
                                 ).fetchone()["r"]
            for bucket in model.values():
                if bucket.expires is not None and bucket.expires <= boundary and not bucket.closed:
                    bucket.expired += bucket.remaining
                    bucket.remaining = 0
                    bucket.closed = True
            unused = sum(b.expired for b in model.values()
                         if b.rollable and boundary - DAY <= b.expires <= boundary)
            rows = new_buckets(admin, uid, model)
            expected = [("renewal", STARTER)] + ([("rollover", min(unused, STARTER))] if unused else [])
            assert sorted((r["source"], r["amount"]) for r in rows) == sorted(expected), (rows, unused)
            for row in rows:
                model[row["id"]] = Bucket(row["id"], row["amount"], boundary + PERIOD, row["source"] == "renewal", step)
            boundary += PERIOD
        elif op[0] == "claw":
            candidates = sorted(model.values(), key=lambda b: b.id)
            bucket = candidates[op[1] % len(candidates)]
            key = f"claw:{uuid.uuid4()}"
            taken = admin.execute("select app._claw_back(%s, %s, %s) as n", (bucket.id, op[2], key)).fetchone()["n"]
            live_part = bucket.remaining if bucket.live(now) and not bucket.closed else 0
            assert taken == min(op[2], live_part)
            assert admin.execute("select app._claw_back(%s, %s, %s) as n", (bucket.id, op[2], key)).fetchone()["n"] == 0
            bucket.remaining -= taken
            bucket.clawed = bucket.clawed or taken > 0
        assert_invariants(admin, uid)
        with acting_as(admin, uid):
            spendable = admin.execute("select credits_remaining from app.credit_balance()").fetchone()["credits_remaining"]
        assert spendable == sum(b.remaining for b in model.values() if b.live(now)) >= 0
        cached = admin.execute("select credits_remaining from subscriptions where user_id = %s", (uid,)).fetchone()
        assert cached["credits_remaining"] == sum(b.remaining for b in model.values())
