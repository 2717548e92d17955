"""Auto top-up (issue 19): a paid account's chosen pack bought off-session (a PaymentIntent
with the saved card, at the Stripe simulator) when a video leaves the balance below its
threshold, within the hour and month limits; a decline turns it off and mails. And the
low-balance and expiring-soon mails, once per event."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from web.config import role_dsn
from worker.billing import buy_top_up
from worker.mail import MailSettings, compose

from .billing_env import session_of, settle
from .conftest import acting_as
from .test_credit_buckets import assert_invariants
from .test_packs import balance, buyer, env  # noqa: F401 - fixtures

DAY = timedelta(days=1)


def subscribe(env, buyer, tier: str = "starter") -> None:
    response = buyer.client.post("/v1/billing/create-checkout-session", json={"tier": tier}, headers=buyer.auth)
    assert response.status_code == 200, response.get_json()
    env.sim.complete_checkout(session_of(response.get_json()["checkout_url"]), "paid")
    settle(env)


def set_top_up(buyer, **settings):
    body = {"enabled": True, "pack": "pack_10", "threshold": 22, **settings}
    return buyer.client.put("/v1/billing/auto-top-up", json=body, headers=buyer.auth)


def spend(buyer, n: int = 1) -> None:
    for _ in range(n):
        response = buyer.client.post("/v1/shorts/generate", json={"platform": "tiktok", "topic": "top-up video"},
                                     headers=buyer.auth)
        assert response.status_code == 202, response.get_json()


def queued_attempts(env) -> list[str]:
    rows = env.admin.execute("delete from pgqueuer where entrypoint = 'auto_top_up' returning payload").fetchall()
    return [json.loads(bytes(r["payload"]))["attempt_id"] for r in rows]


def run_attempt(env, attempt: str) -> str:
    """What the worker's `auto_top_up` handler does, then the webhooks it causes."""
    outcome = buy_top_up(role_dsn(env.config["DATABASE_URL"], "sg_worker"), env.config, attempt)
    assert env.sim.wait_for_deliveries(15)
    return outcome


def mails(env, uid, kind: str) -> list[dict]:
    return env.admin.execute("select dedupe_key, data from email_outbox where user_id = %s and kind = %s",
                             (uid, kind)).fetchall()


def test_a_spend_below_the_threshold_buys_the_pack_once_within_the_limits(env, buyer):
    subscribe(env, buyer)
    assert balance(env, buyer.id) == 25
    assert set_top_up(buyer).status_code == 200
    spend(buyer, 3)                   # 22 left: not below the threshold
    assert queued_attempts(env) == []
    spend(buyer)                      # 21: below
    [attempt] = queued_attempts(env)
    spend(buyer)                      # one waiting already: no second
    assert queued_attempts(env) == []
    run_attempt(env, attempt)  # Stripe charges; the credits come with its signed event
    assert balance(env, buyer.id) == 20 + 10
    state = buyer.client.get("/v1/billing/auto-top-up", headers=buyer.auth).get_json()
    assert (state["enabled"], state["bought_this_month"]) == (True, 1)
    status = env.admin.execute("select status, payment_intent_id from auto_top_up_attempts where id = %s",
                               (attempt,)).fetchone()
    assert status["status"] == "succeeded"
    intent = env.stripe.v1.payment_intents.retrieve(status["payment_intent_id"])
    assert (intent.amount, intent.status, intent.metadata["auto_top_up_attempt"]) == (500, "succeeded", attempt)
    # the attempt ran twice (a redelivered queue entry): the same PaymentIntent, nothing more
    assert run_attempt(env, attempt) == "already finished" and balance(env, buyer.id) == 30
    # within 24 hours, no other purchase however low the balance goes
    spend(buyer, 10)
    assert queued_attempts(env) == []
    # a day later: allowed again, until the month's cap
    env.admin.execute("update auto_top_up_attempts set created_at = created_at - interval '25 hours' "
                      "where user_id = %s", (buyer.id,))
    assert set_top_up(buyer, max_per_month=2).status_code == 200
    spend(buyer)
    [second] = queued_attempts(env)
    run_attempt(env, second)
    env.admin.execute("update auto_top_up_attempts set created_at = greatest(created_at - interval '25 hours', "
                      "date_trunc('month', now(), 'UTC')) where user_id = %s", (buyer.id,))
    spend(buyer)
    assert queued_attempts(env) == []  # two this month already
    assert env.admin.execute("select count(*) as n from credit_ledger where user_id = %s and reason = 'pack_grant'",
                             (buyer.id,)).fetchone()["n"] == 2
    assert_invariants(env.admin, buyer.id)


def test_a_declined_payment_turns_auto_top_up_off_and_mails_once(env, buyer):
    subscribe(env, buyer)
    set_top_up(buyer, threshold=25)
    customer = env.admin.execute("select stripe_customer_id from subscriptions where user_id = %s",
                                 (buyer.id,)).fetchone()["stripe_customer_id"]
    env.sim.set_payment_failure(customer, True)
    spend(buyer)
    [attempt] = queued_attempts(env)
    assert run_attempt(env, attempt) == "failed"
    assert run_attempt(env, attempt) == "already finished"
    state = buyer.client.get("/v1/billing/auto-top-up", headers=buyer.auth).get_json()
    assert state["enabled"] is False and "declined" in state["disabled_reason"]
    assert [m["dedupe_key"] for m in mails(env, buyer.id, "auto_top_up_failed")] == [f"auto_top_up_failed:{attempt}"]
    assert balance(env, buyer.id) == 24
    spend(buyer)
    assert queued_attempts(env) == []  # it is off
    assert_invariants(env.admin, buyer.id)


@pytest.mark.parametrize("body, status", [
    ({"enabled": True, "pack": "pack_10", "threshold": 0}, 422),
    ({"enabled": True, "pack": "pack_999", "threshold": 5}, 422),
    ({"enabled": "yes", "pack": "pack_10", "threshold": 5}, 422),
    ({"enabled": True, "pack": "pack_10", "threshold": 5, "max_per_month": 99}, 422),
    ({"enabled": True, "pack": "pack_10", "threshold": 5}, 403),   # a free plan
    ({"enabled": False, "pack": "pack_10", "threshold": 5}, 200),  # off is always allowed
])
def test_auto_top_up_settings_are_checked(env, buyer, body, status):
    assert buyer.client.put("/v1/billing/auto-top-up", json=body, headers=buyer.auth).status_code == status


def test_the_billing_page_sets_auto_top_up(env):
    import re

    from .test_auth_ui import csrf_token, sign_up

    browser = env.app.test_client()
    sign_up(browser)
    email = re.search(r'class="email" href="/account">([^<]+)<', browser.get("/dashboard").get_data(as_text=True))[1]
    uid = env.admin.execute("update users set is_verified = true where email = %s returning id", (email,)).fetchone()["id"]
    assert 'id="auto-top-up"' not in browser.get("/billing").get_data(as_text=True)  # free plan
    env.admin.execute("update subscriptions set tier = 'starter' where user_id = %s", (uid,))
    page = browser.get("/billing").get_data(as_text=True)
    assert 'id="auto-top-up"' in page
    response = browser.post("/billing/auto-top-up", data={"csrf_token": csrf_token(page), "enabled": "on",
                                                           "pack": "pack_50", "threshold": "7"})
    assert response.status_code == 303
    setting = env.admin.execute("select enabled, pack, threshold, min_hours_between from auto_top_up "
                                "where user_id = %s", (uid,)).fetchone()
    assert setting == {"enabled": True, "pack": "pack_50", "threshold": 7, "min_hours_between": 24}
    bad = browser.post("/billing/auto-top-up", data={"csrf_token": csrf_token(page), "enabled": "on",
                                                      "pack": "pack_50", "threshold": "-3"}, follow_redirects=True)
    assert "Threshold must be a whole number" in bad.get_data(as_text=True)


# -- notices -------------------------------------------------------------------------------------

def test_the_low_balance_mail_goes_once_per_period(make_user, connect):
    admin = connect("postgres")
    uid = make_user()
    jobs = []
    for _ in range(5):
        with acting_as(admin, uid):
            jobs.append(admin.execute("select job_id from app.spend_credit_and_create_job('tiktok', 'low')"
                                      ).fetchone()["job_id"])
    sent = admin.execute("select data from email_outbox where user_id = %s and kind = 'low_balance'", (uid,)).fetchall()
    assert [m["data"] for m in sent] == [{"credits_left": 0, "allowance": 5}]
    # a refund lifts it, the next video drops it again: the same event of this period, no new mail
    claim = admin.execute("select attempts from app.claim_job(%s)", (jobs[0],)).fetchone()
    admin.execute("select app.fail_job(%s, %s, 'x')", (jobs[0], claim["attempts"]))
    with acting_as(admin, uid):
        admin.execute("select app.spend_credit_and_create_job('tiktok', 'low again')")
    assert admin.execute("select count(*) as n from email_outbox where user_id = %s and kind = 'low_balance'",
                         (uid,)).fetchone()["n"] == 1


def test_the_expiring_soon_mail_goes_once_three_days_ahead_for_five_or_more(make_user, connect):
    admin, worker = connect("postgres"), connect("sg_worker")
    many, few = make_user(), make_user()
    soon = datetime.now(timezone.utc) + 2 * DAY
    for uid, amount in ((many, 6), (few, 3)):
        admin.execute("select * from app.grant_credits(%s, %s, 'admin_grant', %s, expires_at => %s)",
                      (uid, amount, f"soon:{uid}", soon))
    worker.execute("select app.notify_expiring_credits()")
    worker.execute("select app.notify_expiring_credits()")
    sent = admin.execute("select user_id, data from email_outbox where kind = 'credits_expiring' "
                         "and user_id in (%s, %s)", (many, few)).fetchall()
    assert [(m["user_id"], m["data"]["credits"]) for m in sent] == [(many, 6)]


@pytest.mark.parametrize("kind, data, words", [
    ("low_balance", {"credits_left": 3, "allowance": 20}, "3 credits left of this period's 20"),
    ("credits_expiring", {"credits": 12, "expires_at": "2026-12-31T10:00:00+00:00"}, "12 of your credits expire on 2026-12-31"),
    ("auto_top_up_failed", {"pack": "pack_10", "error": "declined"}, "turned automatic top-up off"),
])
def test_the_notice_mails_read_well(tmp_path, kind, data, words):
    settings = MailSettings(smtp_url=None, mail_from="Story Genius <no-reply@example.com>",
                            app_url="https://app.example", outbox=tmp_path)
    message = compose(settings, kind, "someone@example.com", None, data, None)
    text = message.get_body(("plain",)).get_content()
    assert words in text and "https://app.example/" in text
    assert message["Subject"].startswith("Your Story Genius") or message["Subject"].startswith("Some of your")
