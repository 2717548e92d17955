"""Referrals (issue 20 item 6): a verified user's link; the referee's +5 when they confirm
their address, the referrer's +10 when the referee's first invoice is paid (a signed
Stripe event, through the real webhook), once per referee; each self-referral case
refused (address alias, device cookie, network, card fingerprint); the monthly cap, also
under concurrent invoices; the page and the landing link."""
from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from .conftest import (PASSWORD_HASH, STRONG_PASSWORD, api_signup, balance, bearer, client_with_own_ip, ledger_sum,
                       unique_email, unique_ip, verify)
from .stripe_payloads import event, invoice_paid, signed
from .test_auth_ui import csrf_token, log_in

SECRET = "whsec_referrals_" + "r" * 24
PRICES = {"starter": "price_ref_starter", "pro": "price_ref_pro", "agency": "price_ref_agency"}


@pytest.fixture(scope="module")
def admin(connect):
    admin = connect("postgres")
    admin.execute("insert into stripe_webhook_secrets (secret) values (%s) on conflict do nothing", (SECRET,))
    for tier, price in PRICES.items():
        admin.execute("update plans set stripe_price_id = %s where tier = %s", (price, tier))
    yield admin
    for tier in PRICES:
        admin.execute("update plans set stripe_price_id = null where tier = %s", (tier,))


def new_account(app, email: str | None = None, ip: str | None = None, **body) -> dict:
    client = client_with_own_ip(app, ip)
    tokens = api_signup(client, email or unique_email(), **body)
    return {"client": client, "headers": bearer(tokens["access_token"]), "id": tokens["user"]["id"],
            "email": tokens["user"]["email"]}


def referrer(app, admin, email: str | None = None, ip: str | None = None) -> dict:
    """A confirmed user and their referral code."""
    account = new_account(app, email, ip)
    verify(admin, account["id"])
    answer = account["client"].get("/v1/referrals", headers=account["headers"])
    assert answer.status_code == 200, answer.get_json()
    return {**account, "code": answer.get_json()["code"]}


def referral(admin, referee_id) -> dict | None:
    return admin.execute("select * from referrals where referee_id = %s", (referee_id,)).fetchone()


def referral_ledger(admin, user_id) -> list[tuple[str, int]]:
    rows = admin.execute("select idempotency_key, delta from credit_ledger where user_id = %s "
                         "and reason = 'referral_grant' order by created_at", (user_id,)).fetchall()
    return [(r["idempotency_key"], r["delta"]) for r in rows]


def post_event(app, payload) -> dict:
    body, headers = signed(payload, SECRET)
    answer = app.test_client().post("/v1/billing/webhook", data=body, headers=headers)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def charge_succeeded(customer: str, fingerprint: str) -> dict:
    return event("charge.succeeded", {
        "id": f"ch_{uuid.uuid4().hex[:16]}", "object": "charge", "amount": 900, "currency": "usd",
        "customer": customer, "status": "succeeded", "paid": True,
        "payment_method_details": {"type": "card", "card": {"brand": "visa", "last4": "4242",
                                                             "fingerprint": fingerprint}}})


def customer_of(admin, user_id) -> str:
    """The user's Stripe customer (made once, as checkout does)."""
    existing = admin.execute("select stripe_customer_id from subscriptions where user_id = %s",
                             (user_id,)).fetchone()["stripe_customer_id"]
    if existing:
        return existing
    customer = f"cus_ref_{uuid.uuid4().hex[:12]}"
    admin.execute("update subscriptions set stripe_customer_id = %s where user_id = %s", (customer, user_id))
    return customer


def pay_first_invoice(app, admin, user_id, fingerprint: str | None = None, subscription: str | None = None) -> dict:
    """Stripe's events for a first payment: the card's charge (when given), then the paid invoice."""
    customer = customer_of(admin, user_id)
    if fingerprint:
        post_event(app, charge_succeeded(customer, fingerprint))
    payload = invoice_paid(customer, subscription or f"sub_ref_{uuid.uuid4().hex[:12]}", PRICES["starter"],
                           int(time.time()))
    post_event(app, payload)
    return payload


def settle(connect, admin, referee_id) -> str:
    """The hour passes, and the worker decides the referrer's reward (its `referral_reward` entry)."""
    admin.execute("update referrals set reward_due_at = now() where referee_id = %s and reward_due_at > now()",
                  (referee_id,))
    return connect("sg_worker").execute("select app.settle_referral_reward(%s) as o", (referee_id,)).fetchone()["o"]


# --- the link -----------------------------------------------------------------------------


def test_a_link_needs_a_confirmed_address_and_stays_the_same(app, admin):
    account = new_account(app)
    refused = account["client"].get("/v1/referrals", headers=account["headers"])
    assert refused.status_code == 403 and "Confirm your email" in refused.get_json()["detail"]
    verify(admin, account["id"])
    first = account["client"].get("/v1/referrals", headers=account["headers"]).get_json()
    again = account["client"].get("/v1/referrals", headers=account["headers"]).get_json()
    assert first["code"] == again["code"] and len(first["code"]) == 10
    assert first["link"].endswith(f"/r/{first['code']}")
    assert (first["referee_credits"], first["referrer_credits"], first["monthly_cap"]) == (5, 10, 20)
    assert first["referrals"] == [] and first["credits_earned"] == 0


# --- the rewards --------------------------------------------------------------------------


def test_the_referee_gets_5_on_confirmation_and_the_referrer_10_on_the_first_paid_invoice_once(app, admin, connect):
    ref = referrer(app, admin)
    friend = new_account(app, referral_code=ref["code"])
    assert referral(admin, friend["id"])["status"] == "pending"
    assert balance(admin, friend["id"]) == 5

    verify(admin, friend["id"])
    assert referral_ledger(admin, friend["id"]) == [(f"referral:referee:{friend['id']}", 5)]
    assert balance(admin, friend["id"]) == 10 == ledger_sum(admin, friend["id"])
    # confirming again (an address changed and confirmed anew) grants nothing more
    admin.execute("update users set is_verified = false where id = %s", (friend["id"],))
    verify(admin, friend["id"])
    assert balance(admin, friend["id"]) == 10

    before = balance(admin, ref["id"])
    first = pay_first_invoice(app, admin, friend["id"])
    # decided an hour later by the worker, once Stripe's other events about the payment are in
    row = referral(admin, friend["id"])
    assert row["status"] == "pending" and row["rewarded_invoice"] == first["data"]["object"]["id"]
    entry = admin.execute("select execute_after from pgqueuer where entrypoint = 'referral_reward' "
                          "and dedupe_key = %s", (f"referral_reward:{friend['id']}",)).fetchone()
    assert abs((entry["execute_after"] - row["reward_due_at"]).total_seconds()) < 1
    assert 3590 < (row["reward_due_at"] - row["created_at"]).total_seconds() < 3700
    worker = connect("sg_worker")
    assert worker.execute("select app.settle_referral_reward(%s) as o", (friend["id"],)).fetchone()["o"] \
        .startswith("not due until")
    assert settle(connect, admin, friend["id"]) == "referrer rewarded"
    assert referral_ledger(admin, ref["id"]) == [(f"referral:referrer:{friend['id']}", 10)]
    assert balance(admin, ref["id"]) == before + 10 == ledger_sum(admin, ref["id"])
    # Stripe repeats the event, and the next invoices are paid: nothing more
    post_event(app, first)
    sub = first["data"]["object"]["parent"]["subscription_details"]["subscription"]
    post_event(app, invoice_paid(customer_of(admin, friend["id"]), sub, PRICES["starter"],
                                 int(time.time()) + 30 * 86400, reason="subscription_cycle"))
    assert settle(connect, admin, friend["id"]) == "no reward to decide"
    assert balance(admin, ref["id"]) == before + 10
    assert referral(admin, friend["id"])["status"] == "rewarded"

    summary = ref["client"].get("/v1/referrals", headers=ref["headers"]).get_json()
    [row] = summary["referrals"]
    assert row["status"] == "rewarded" and row["credits_earned"] == 10 and row["detail"] == "earned"
    assert row["referee"].startswith(friend["email"][0]) and friend["email"] not in str(summary)
    assert summary["credits_earned"] == 10 and summary["rewards_this_month"] == 1


def test_a_code_is_used_once_per_referee_and_only_at_signup(app, admin, connect):
    ref = referrer(app, admin)
    friend = new_account(app, referral_code=ref["code"])
    other = referrer(app, admin)
    app_role = connect("sg_app")
    with app_role.transaction():
        app_role.execute("select set_config('app.user_id', %s, true)", (friend["id"],))
        assert app_role.execute("select app.record_referral(%s, '203.0.113.9') as o",
                                (other["code"],)).fetchone()["o"] == "ignored: already referred"
    # an account that has been around (or is confirmed) cannot be referred after the fact
    old = new_account(app)
    admin.execute("update users set created_at = now() - interval '2 hours' where id = %s", (old["id"],))
    with app_role.transaction():
        app_role.execute("select set_config('app.user_id', %s, true)", (old["id"],))
        assert app_role.execute("select app.record_referral(%s, '203.0.113.9') as o", (ref["code"],)
                                ).fetchone()["o"].startswith("ignored: only a new account")
    assert referral(admin, old["id"]) is None


def test_an_unknown_code_changes_nothing_about_the_signup(app, admin):
    account = new_account(app, referral_code="nosuchcode")
    assert referral(admin, account["id"]) is None and balance(admin, account["id"]) == 5
    answer = client_with_own_ip(app).post("/v1/auth/signup", json={"email": unique_email(), "password": STRONG_PASSWORD,
                                                                   "referral_code": 42})
    assert answer.status_code == 422 and answer.get_json()["field"] == "referral_code"


# --- the same person is never rewarded -----------------------------------------------------


@pytest.mark.parametrize("referrer_email, referee_email", [
    ("ann{t}@example.org", "ann{t}+2@example.org"),
    ("Ann{t}+shop@Example.org", "ann{t}@example.org"),
    ("a.n.n{t}@gmail.com", "ann{t}+x@googlemail.com"),
])
def test_self_referral_by_an_address_alias_is_refused(app, admin, connect, referrer_email, referee_email):
    tag = uuid.uuid4().hex[:6]
    ref = referrer(app, admin, referrer_email.format(t=tag))
    friend = new_account(app, referee_email.format(t=tag), referral_code=ref["code"])
    row = referral(admin, friend["id"])
    assert (row["status"], row["refused_reason"]) == ("refused", "same_email"), (ref["email"], friend["email"])
    verify(admin, friend["id"])
    pay_first_invoice(app, admin, friend["id"])
    assert settle(connect, admin, friend["id"]) == "no reward to decide"
    assert referral_ledger(admin, friend["id"]) == [] and referral_ledger(admin, ref["id"]) == []


def test_a_different_mailbox_at_the_same_domain_is_recorded(app, admin):
    tag = uuid.uuid4().hex[:6]
    ref = referrer(app, admin, f"ann{tag}@example.org")
    friend = new_account(app, f"anna{tag}@example.org", referral_code=ref["code"])
    assert referral(admin, friend["id"])["status"] == "pending"


def test_a_signup_from_the_referrers_own_browser_is_refused(app, admin):
    """The referrer signed in on this browser (it holds their device cookie), signed out,
    and signed up a second account through their own link."""
    ref = referrer(app, admin)
    browser = client_with_own_ip(app)
    log_in(browser, ref["email"], STRONG_PASSWORD)
    browser.post("/logout", data={"csrf_token": csrf_token(browser.get("/dashboard").get_data(as_text=True))})
    browser.environ_base["REMOTE_ADDR"] = unique_ip()  # another network: only the device gives it away
    landing = browser.get(f"/r/{ref['code']}")
    assert landing.status_code == 302 and f"ref={ref['code']}" in landing.headers["Location"]
    page = browser.get(landing.headers["Location"])
    assert 'id="referred"' in page.get_data(as_text=True)
    email = unique_email()
    signed_up = browser.post("/signup", data={"email": email, "password": STRONG_PASSWORD, "full_name": "",
                                              "csrf_token": csrf_token(page.get_data(as_text=True))})
    assert signed_up.status_code == 302
    friend_id = admin.execute("select id from users where email = %s", (email,)).fetchone()["id"]
    row = referral(admin, friend_id)
    assert (row["status"], row["refused_reason"]) == ("refused", "same_device")


def test_a_different_browser_through_the_landing_link_is_recorded(app, admin):
    ref = referrer(app, admin)
    browser = client_with_own_ip(app)
    browser.get(f"/r/{ref['code']}")
    page = browser.get("/signup")  # the cookie remembers the link
    assert 'id="referred"' in page.get_data(as_text=True)
    email = unique_email()
    browser.post("/signup", data={"email": email, "password": STRONG_PASSWORD, "full_name": "",
                                  "csrf_token": csrf_token(page.get_data(as_text=True))})
    friend_id = admin.execute("select id from users where email = %s", (email,)).fetchone()["id"]
    assert referral(admin, friend_id)["status"] == "pending"


@pytest.mark.parametrize("referrer_ip, referee_ip, refused", [
    ("198.51.100.23", "198.51.100.23", True),
    ("2001:db8:7:8::5", "2001:db8:7:8:ffff::99", True),   # one /64
    ("198.51.100.24", "198.51.100.25", False),
    ("2001:db8:7:9::5", "2001:db8:7:a::5", False),
])
def test_a_signup_from_the_referrers_network_within_a_day_is_refused(app, admin, referrer_ip, referee_ip, refused):
    admin.execute("delete from login_attempts where kind = 'signup' and client_ip <<= %s::inet or client_ip >>= %s::inet",
                  (referee_ip, referee_ip))
    ref = referrer(app, admin, ip=referrer_ip)  # signed up and fetched the link from there
    friend = new_account(app, ip=referee_ip, referral_code=ref["code"])
    row = referral(admin, friend["id"])
    assert (row["status"], row["refused_reason"]) == (("refused", "same_network") if refused else ("pending", None))


def test_the_network_rule_forgets_after_a_day(app, admin):
    ip = "198.51.100.77"
    admin.execute("delete from login_attempts where kind = 'signup' and client_ip = %s", (ip,))
    ref = referrer(app, admin, ip=ip)
    admin.execute("update referral_codes set last_seen_at = now() - interval '25 hours' where user_id = %s",
                  (ref["id"],))
    admin.execute("update login_attempts set attempted_at = now() - interval '25 hours' "
                  "where kind = 'signup' and client_ip = %s", (ip,))
    friend = new_account(app, ip=ip, referral_code=ref["code"])
    assert referral(admin, friend["id"])["status"] == "pending"


@pytest.mark.parametrize("charge_after_invoice", [False, True], ids=["charge-first", "invoice-first"])
def test_a_referee_paying_with_the_referrers_card_earns_the_referrer_nothing(app, admin, connect, charge_after_invoice):
    """Whatever order Stripe sends the charge and the invoice in (the reward waits an hour)."""
    ref = referrer(app, admin)
    card = f"fp_shared_{uuid.uuid4().hex[:8]}"
    post_event(app, charge_succeeded(customer_of(admin, ref["id"]), card))
    friend = new_account(app, referral_code=ref["code"])
    verify(admin, friend["id"])
    before = balance(admin, ref["id"])
    if charge_after_invoice:
        pay_first_invoice(app, admin, friend["id"])
        post_event(app, charge_succeeded(customer_of(admin, friend["id"]), card))
    else:
        pay_first_invoice(app, admin, friend["id"], fingerprint=card)
    assert settle(connect, admin, friend["id"]) == "no reward to decide"
    row = referral(admin, friend["id"])
    assert (row["status"], row["refused_reason"]) == ("refused", "same_payment_method")
    assert balance(admin, ref["id"]) == before and referral_ledger(admin, ref["id"]) == []
    # (the referee's own +5 for confirming was already theirs)
    assert referral_ledger(admin, friend["id"]) == [(f"referral:referee:{friend['id']}", 5)]


def test_a_different_card_pays_the_referrer(app, admin, connect):
    ref = referrer(app, admin)
    post_event(app, charge_succeeded(customer_of(admin, ref["id"]), "fp_referrer_own"))
    friend = new_account(app, referral_code=ref["code"])
    verify(admin, friend["id"])
    pay_first_invoice(app, admin, friend["id"], fingerprint="fp_friend_own")
    assert settle(connect, admin, friend["id"]) == "referrer rewarded"
    assert referral(admin, friend["id"])["status"] == "rewarded"
    assert referral_ledger(admin, ref["id"]) == [(f"referral:referrer:{friend['id']}", 10)]


# --- at most 20 rewards a month --------------------------------------------------------------


def referees_of(admin, referrer_id, count: int, rewarded: bool) -> list:
    """Accounts already referred by `referrer_id` (rewarded this month, or waiting)."""
    made = []
    for _ in range(count):
        uid = admin.execute("insert into users (email, password_hash, is_verified) values (%s, %s, true) "
                            "returning id", (unique_email(), PASSWORD_HASH)).fetchone()["id"]
        admin.execute("insert into subscriptions (user_id, tier) values (%s, 'free')", (uid,))
        admin.execute("insert into referrals (referrer_id, referee_id, status, referrer_rewarded_at) "
                      "values (%s, %s, %s, %s)", (referrer_id, uid, "rewarded" if rewarded else "pending",
                                                  "now" if rewarded else None))
        made.append(uid)
    return made


def test_the_cap_is_20_rewards_a_month_even_for_concurrent_decisions(app, admin, connect, database_dsn):
    from web.config import role_dsn

    ref = referrer(app, admin)
    referees_of(admin, ref["id"], 18, rewarded=True)
    waiting = referees_of(admin, ref["id"], 6, rewarded=False)
    before = balance(admin, ref["id"])
    payloads = [invoice_paid(customer_of(admin, uid), f"sub_cap_{uuid.uuid4().hex[:10]}", PRICES["starter"],
                             int(time.time())) for uid in waiting]
    with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
        list(pool.map(lambda p: post_event(app, p), payloads))
    admin.execute("update referrals set reward_due_at = now() where referrer_id = %s and reward_due_at is not null",
                  (ref["id"],))

    def decide(uid):  # six workers at once, each with its own connection
        with psycopg.connect(role_dsn(database_dsn, "sg_worker"), autocommit=True) as worker:
            return worker.execute("select app.settle_referral_reward(%s)", (uid,)).fetchone()[0]

    with ThreadPoolExecutor(max_workers=len(waiting)) as pool:
        outcomes = sorted(pool.map(decide, waiting))
    assert outcomes == ["referrer at the monthly cap: nothing granted"] * 4 + ["referrer rewarded"] * 2
    statuses = sorted(referral(admin, uid)["status"] for uid in waiting)
    assert statuses == ["capped"] * 4 + ["rewarded"] * 2
    assert balance(admin, ref["id"]) == before + 20 == ledger_sum(admin, ref["id"])
    summary = ref["client"].get("/v1/referrals", headers=ref["headers"]).get_json()
    assert summary["rewards_this_month"] == 20
    # last month's rewards do not count against this one
    admin.execute("update referrals set referrer_rewarded_at = now() - interval '40 days' "
                  "where referrer_id = %s and status = 'rewarded'", (ref["id"],))
    [late] = referees_of(admin, ref["id"], 1, rewarded=False)
    pay_first_invoice(app, admin, late)
    assert settle(connect, admin, late) == "referrer rewarded"


# --- who may do what, and the page ------------------------------------------------------------


def test_the_web_role_cannot_read_or_pay_referrals_directly(app, admin, connect):
    ref = referrer(app, admin)
    app_role = connect("sg_app")
    for statement in ("select * from referrals", "select * from referral_codes", "select * from payment_fingerprints",
                      f"select app._reward_referrer('{ref['id']}', 'in_x', 900)",
                      f"select app.settle_referral_reward('{ref['id']}')",
                      "select app._note_payment_fingerprint('{}')"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with app_role.transaction():
                app_role.execute("select set_config('app.user_id', %s, true)", (ref["id"],))
                app_role.execute(statement)


def test_the_referrals_page_shows_the_link_and_each_friend(app, admin, connect):
    ref = referrer(app, admin)
    friend = new_account(app, referral_code=ref["code"])
    verify(admin, friend["id"])
    pay_first_invoice(app, admin, friend["id"])
    browser = client_with_own_ip(app)
    log_in(browser, ref["email"], STRONG_PASSWORD)
    assert "paid: your credits arrive within the hour" in browser.get("/referrals").get_data(as_text=True)
    settle(connect, admin, friend["id"])
    unconfirmed = new_account(app, referral_code=ref["code"])
    page = browser.get("/referrals")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert f"/r/{ref['code']}" in html and 'id="credits-earned">10<' in html
    assert 'data-status="rewarded"' in html and "waiting for them to confirm their email" in html
    assert friend["email"] not in html and unconfirmed["email"] not in html

    newcomer = new_account(app)
    browser2 = client_with_own_ip(app)
    log_in(browser2, newcomer["email"], STRONG_PASSWORD)
    assert "Confirm your email address to get a referral link." in browser2.get("/referrals").get_data(as_text=True)
