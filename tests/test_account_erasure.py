"""Account deletion and export (GDPR Art. 17 and 20) over real HTTP, against the Stripe
simulator: the subscription is canceled at Stripe, the videos go, no column of any table
still holds the person's email address or name, every credential stops at once, and the
ledger is untouched, under the same (now pseudonymous) id, so the books still add up."""
from __future__ import annotations

import json
import re
import shutil
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from web.openapi import DOCUMENT

from .billing_env import session_of, settle, simulated_billing
from .stripe_payloads import signed
from .conftest import STRONG_PASSWORD, api_signup, bearer, client_with_own_ip, unique_email, verify
from .test_auth_ui import csrf_token, log_in
from .test_credits import invariant_violations
from .test_fuzz_forms import post_form
from .test_two_factor import enrol


@pytest.fixture(scope="module")
def env(database_dsn, media_root, connect, webhook_secret):
    with simulated_billing(database_dsn, media_root, connect("postgres"), webhook_secret) as env:
        yield env


def distinctive_person() -> tuple[str, str]:
    """An address and a name that appear nowhere else in the database."""
    tag = uuid.uuid4().hex[:10]
    return f"Erasable.{tag}@Example.com", f"Quokkafeather {tag}"


def new_user(env, *, tier: str | None = None):
    """A signed-up, confirmed user (API tokens, a browser session, a device token), on a
    paid plan bought through Checkout when `tier` is given."""
    email, name = distinctive_person()
    client = client_with_own_ip(env.app)
    tokens = api_signup(client, email=email, full_name=name)
    user = SimpleNamespace(id=tokens["user"]["id"], email=tokens["user"]["email"], name=name, tokens=tokens,
                           auth=bearer(tokens["access_token"]), client=client)
    verify(env.admin, user.id)
    if tier:
        response = client.post("/v1/billing/create-checkout-session", json={"tier": tier}, headers=user.auth)
        assert response.status_code == 200, response.get_json()
        env.sim.complete_checkout(session_of(response.get_json()["checkout_url"]), "paid")
        settle(env)
        assert env.admin.execute("select tier from subscriptions where user_id = %s", (user.id,)).fetchone()["tier"] \
            == tier
    return user


def make_video(env, user, media_root, topic: str) -> str:
    """A finished video of the user's: a job paid for through the API, its files in
    MEDIA_ROOT where the worker writes them, and the job completed the way the worker does."""
    response = user.client.post("/v1/shorts/generate", json={"platform": "tiktok", "topic": topic}, headers=user.auth)
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["job_id"]
    (media_root / f"{job_id}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + topic.encode())
    (media_root / f"{job_id}.jpg").write_bytes(b"\xff\xd8\xff\xe0" + topic.encode())
    attempt = env.worker.execute("select attempts from app.claim_job(%s)", (job_id,)).fetchone()[0]
    assert env.worker.execute("select app.complete_job(%s, %s, %s)",
                              (job_id, attempt, f"/media/{job_id}.mp4")).fetchone()[0]
    return job_id


def places_holding(admin: psycopg.Connection, *needles: str) -> list[str]:
    """Every table.column (all schemas but the catalogs) whose value contains one of the
    needles, case-insensitively; bytea is read as text too (queue payloads are bytea)."""
    columns = admin.execute("""
        select c.table_schema, c.table_name, c.column_name, c.data_type
          from information_schema.columns c
          join information_schema.tables t using (table_schema, table_name)
         where t.table_type = 'BASE TABLE' and c.table_schema not in ('pg_catalog', 'information_schema')
    """).fetchall()
    found = []
    for column in columns:
        value = psycopg.sql.SQL("encode({}, 'escape')" if column["data_type"] == "bytea" else "{}::text").format(
            psycopg.sql.Identifier(column["column_name"]))
        for needle in needles:
            hit = admin.execute(psycopg.sql.SQL("select exists (select from {}.{} where strpos(lower({}), %s) > 0) as hit")
                                .format(psycopg.sql.Identifier(column["table_schema"]),
                                        psycopg.sql.Identifier(column["table_name"]), value),
                                (needle.lower(),)).fetchone()["hit"]
            if hit:
                found.append(f"{column['table_schema']}.{column['table_name']}.{column['column_name']}")
    return sorted(set(found))


def account_rows(admin: psycopg.Connection, user_id) -> dict:
    """Every row that belongs to the user, table by table (as the superuser sees them)."""
    tables = ["users", "subscriptions", "api_keys", "refresh_tokens", "refresh_families", "browser_sessions",
              "jobs", "credit_ledger", "usage_logs", "email_tokens", "email_outbox", "trusted_devices",
              "two_factor", "recovery_codes", "login_challenges"]
    rows = {}
    for table in tables:
        column = "id" if table == "users" else "user_id"
        rows[table] = admin.execute(psycopg.sql.SQL("select * from {} where {} = %s order by 1").format(
            psycopg.sql.Identifier(table), psycopg.sql.Identifier(column)), (user_id,)).fetchall()
    return rows


def ledger(admin: psycopg.Connection, user_id) -> list[dict]:
    return admin.execute("select * from credit_ledger where user_id = %s order by created_at, id", (user_id,)).fetchall()


def delete(user, password: str = STRONG_PASSWORD, **extra):
    return user.client.delete("/v1/account", json={"password": password, **extra}, headers=user.auth)


# -- deletion -------------------------------------------------------------------------------

def test_deleting_a_paying_account_erases_the_person_and_keeps_the_books(env, media_root):
    admin = env.admin
    user = new_user(env, tier="pro")
    videos = [make_video(env, user, media_root, f"the life of {user.name}") for _ in range(2)]
    # a request made safe to repeat: its answer is stored under the caller's key
    repeated = user.client.post("/v1/shorts/generate", json={"platform": "tiktok", "topic": f"{user.name} again"},
                                headers={**user.auth, "Idempotency-Key": f"retry-{uuid.uuid4()}"})
    assert repeated.status_code == 202, repeated.get_json()
    assert admin.execute("select count(*) as n from idempotency_keys where user_id = %s", (user.id,)).fetchone()["n"] == 1
    key = user.client.post("/v1/keys", json={"name": f"{user.name}'s laptop"}, headers=user.auth)
    assert key.status_code == 201, key.get_json()
    api_key = key.get_json()["key"]
    browser = client_with_own_ip(env.app)
    assert log_in(browser, user.email).status_code == 302
    # a title on a video, and a brand, both naming them
    admin.execute("update jobs set title = %s where id = %s", (f"{user.name}'s story", videos[0]))
    admin.execute("insert into brands (user_id, primary_colour) values (%s, '#112233')", (user.id,))
    # their referral link (fetched from their address) and a card fingerprint Stripe reported
    admin.execute("insert into referral_codes (user_id, code, last_seen_ip) values (%s, %s, '203.0.113.9')",
                  (user.id, uuid.uuid4().hex[:10]))
    admin.execute("insert into payment_fingerprints (user_id, fingerprint) values (%s, 'fp_erasable')", (user.id,))
    # auto top-up on, with a purchase waiting for the worker
    pack = admin.execute("select pack from credit_packs order by sort_order limit 1").fetchone()["pack"]
    admin.execute("insert into auto_top_up (user_id, enabled, pack, threshold) values (%s, true, %s, 5)", (user.id, pack))
    waiting = admin.execute("insert into auto_top_up_attempts (user_id, pack) values (%s, %s) returning id",
                            (user.id, pack)).fetchone()["id"]
    # a webhook endpoint of theirs (its address names them), subscribed to plan changes
    admin.execute("insert into webhook_endpoints (user_id, url, event_types, secret) values "
                  "(%s, %s, '{subscription.updated,render.completed}', 'whsec_customer')",
                  (user.id, f"https://hooks.example.org/{user.name.replace(' ', '-')}"))
    subscription_id = admin.execute("select stripe_subscription_id from subscriptions where user_id = %s",
                                    (user.id,)).fetchone()["stripe_subscription_id"]
    customer_id = admin.execute("select stripe_customer_id from subscriptions where user_id = %s",
                                (user.id,)).fetchone()["stripe_customer_id"]
    books = ledger(admin, user.id)
    usage = admin.execute("select * from usage_logs where user_id = %s order by id", (user.id,)).fetchall()
    assert sum(row["delta"] for row in books) == 5 + 100 - 3
    # the scan finds the person before: stored Stripe events, mails, sign-in attempts, …
    before = places_holding(admin, user.email, user.name)
    assert {"public.users.email", "public.users.full_name", "public.stripe_events.payload"} <= set(before)

    calls = len(env.sim.requests)
    response = delete(user)
    assert response.status_code == 204, response.get_json()
    settle(env)  # Stripe's webhooks about the cancellation arrive and are applied

    # Stripe: the subscription was canceled at once, and the customer no longer names anyone
    cancels = [r for r in env.sim.requests[calls:] if r["method"] == "DELETE"]
    assert [r["path"] for r in cancels] == [f"/v1/subscriptions/{subscription_id}"]
    assert env.stripe.v1.subscriptions.retrieve(subscription_id).status == "canceled"
    customer = env.stripe.v1.customers.retrieve(customer_id)
    assert (customer.email, customer.name) == (None, None)

    # nothing anywhere holds the address or the name
    assert places_holding(admin, user.email, user.name) == []
    # the books: the same ledger rows, under the same id, still equal to the balance
    assert ledger(admin, user.id) == books
    assert admin.execute("select * from usage_logs where user_id = %s order by id", (user.id,)).fetchall() == usage
    assert invariant_violations(admin) == []
    tombstone = admin.execute("select * from users where id = %s", (user.id,)).fetchone()
    assert tombstone["email"] == f"erased:{user.id}" and tombstone["full_name"] is None
    assert tombstone["deleted_at"] is not None and not tombstone["is_active"]
    assert not tombstone["password_hash"].startswith("$argon2")
    # Stripe's later events for the customer were stored, scrubbed and applied, not failed
    events = admin.execute("select type, processed_at, error from stripe_events "
                           "where app.stripe_event_customer(payload) = %s", (customer_id,)).fetchall()
    assert {e["type"] for e in events} >= {"customer.subscription.deleted", "customer.updated"}
    assert [e for e in events if e["processed_at"] is None or e["error"]] == []
    assert admin.execute("select status from subscriptions where user_id = %s", (user.id,)).fetchone()["status"] \
        == "canceled"
    # nothing charges the card again
    assert admin.execute("select count(*) as n from auto_top_up where user_id = %s", (user.id,)).fetchone()["n"] == 0
    assert env.worker.execute("select * from app.auto_top_up_job(%s)", (waiting,)).fetchall() == []
    # the endpoint and its events went, and the cancellation sent the ex-customer nothing
    for table in ("webhook_endpoints", "webhook_events", "webhook_deliveries", "webhook_attempts", "brands",
                  "referral_codes", "payment_fingerprints", "idempotency_keys"):
        assert admin.execute(f"select count(*) as n from {table} where user_id = %s", (user.id,)).fetchone()["n"] == 0

    # the videos and posters are gone, and the jobs no longer say what they were about
    assert [p.name for p in media_root.iterdir() if p.stem in videos] == []
    assert {j["topic"] for j in admin.execute("select topic from jobs where user_id = %s", (user.id,))} == {"[erased]"}

    # every credential stops at once
    assert user.client.get("/v1/auth/me", headers=user.auth).status_code == 401
    assert user.client.get("/v1/auth/me", headers=bearer(api_key)).status_code == 401
    assert user.client.post("/v1/auth/refresh", json={"refresh_token": user.tokens["refresh_token"]}).status_code == 401
    page = browser.get("/account")
    assert page.status_code == 302 and "/login" in page.headers["Location"]
    assert user.client.post("/v1/auth/login", json={"email": user.email, "password": STRONG_PASSWORD}).status_code \
        == 401

    # the address may sign up again: a new account with the usual signup grant
    again = api_signup(client_with_own_ip(env.app), email=user.email, full_name=user.name)
    assert again["user"]["id"] != user.id and again["user"]["credits_remaining"] == 5


def test_deleting_an_account_erases_what_the_other_features_keep(env):
    """The logo and colours, webhook endpoints and their deliveries, kept API answers, the
    referral link, card fingerprints and the auto top-up setting all go with the person."""
    from .test_branding import logo_png, put_branding

    admin = env.admin
    user = new_user(env, tier="agency")
    assert put_branding(user.client, user.auth, logo=(logo_png(), "logo.png", "image/png"),
                        primary_colour="#10785a").status_code == 200
    assert user.client.get("/v1/referrals", headers=user.auth).status_code == 200
    assert user.client.post("/v1/shorts/generate", json={"platform": "tiktok", "topic": "kept answers"},
                            headers={**user.auth, "Idempotency-Key": f"erase-{user.id}"}).status_code == 202
    endpoint = admin.execute("insert into webhook_endpoints (user_id, url, event_types, secret) values "
                             "(%s, 'https://hooks.example.org/erasable', array['render.completed'], 'whsec_x') "
                             "returning id", (user.id,)).fetchone()["id"]
    admin.execute("insert into payment_fingerprints (user_id, fingerprint) values (%s, %s)", (user.id, f"fp_{user.id}"))
    admin.execute("insert into auto_top_up (user_id, enabled, pack, threshold) values (%s, true, 'pack_10', 5)",
                  (user.id,))
    tables = ("brands", "webhook_endpoints", "webhook_events", "webhook_deliveries", "webhook_attempts",
              "idempotency_keys", "referral_codes", "payment_fingerprints", "auto_top_up")
    before = {t: admin.execute(f"select count(*) as n from {t} where user_id = %s", (user.id,)).fetchone()["n"]
              for t in tables}
    assert all(before[t] for t in ("brands", "webhook_endpoints", "idempotency_keys", "referral_codes",
                                   "payment_fingerprints", "auto_top_up")), before

    assert delete(user).status_code == 204
    after = {t: admin.execute(f"select count(*) as n from {t} where user_id = %s", (user.id,)).fetchone()["n"]
             for t in tables}
    assert after == dict.fromkeys(tables, 0)
    assert admin.execute("select count(*) as n from webhook_endpoints where id = %s", (endpoint,)).fetchone()["n"] == 0
    assert invariant_violations(admin) == []


def test_a_wrong_password_is_403_and_changes_nothing(env, media_root):
    user = new_user(env)
    video = make_video(env, user, media_root, "a quiet morning")
    before = account_rows(env.admin, user.id)
    calls = len(env.sim.requests)
    response = delete(user, password="not-the-password-at-all")
    assert response.status_code == 403 and response.get_json()["field"] == "password"
    assert account_rows(env.admin, user.id) == before
    assert (media_root / f"{video}.mp4").exists() and len(env.sim.requests) == calls
    assert user.client.get("/v1/auth/me", headers=user.auth).status_code == 200


def test_two_factor_accounts_need_a_code(env):
    user = new_user(env)
    _, recovery = enrol(user.client, user.tokens)
    before = account_rows(env.admin, user.id)
    missing = delete(user)
    assert missing.status_code == 422 and missing.get_json()["field"] == "code"
    wrong = delete(user, code="0000-0000-0000-0000")
    assert wrong.status_code == 403 and wrong.get_json()["field"] == "code"
    assert delete(user, code="123456").status_code == 403
    assert account_rows(env.admin, user.id) == before
    assert delete(user, code=recovery[0]).status_code == 204
    assert env.admin.execute("select count(*) as n from two_factor where user_id = %s", (user.id,)).fetchone()["n"] == 0
    assert env.admin.execute("select count(*) as n from recovery_codes where user_id = %s",
                             (user.id,)).fetchone()["n"] == 0


@pytest.mark.parametrize("body", [
    None, "not json", [], {}, {"password": None}, {"password": 12}, {"password": ["x"]}, {"password": "a" * 1025},
    {"password": "pass\u0000word"}, {"password": "\ud800"}, {"password": STRONG_PASSWORD, "code": 123456},
    {"password": STRONG_PASSWORD, "code": ""}, {"password": STRONG_PASSWORD, "code": "1" * 51},
])
def test_bad_input_is_a_clear_4xx_and_changes_nothing(env, body):
    user = new_user(env)
    before = account_rows(env.admin, user.id)
    if isinstance(body, str):
        response = user.client.delete("/v1/account", data=body, headers={**user.auth, "Content-Type": "application/json"})
    else:
        response = user.client.delete("/v1/account", json=body, headers=user.auth)
    assert response.status_code in (403, 422), response.get_data(as_text=True)
    assert "detail" in response.get_json()
    assert account_rows(env.admin, user.id) == before


def test_deletion_and_export_need_a_signed_in_caller(env):
    client = client_with_own_ip(env.app)
    assert client.delete("/v1/account", json={"password": STRONG_PASSWORD}).status_code == 401
    assert client.get("/v1/account/export").status_code == 401
    assert client.get("/v1/account/export", headers=bearer("sk_" + "x" * 40)).status_code == 401


def test_a_late_signed_event_for_an_erased_customer_is_stored_scrubbed(env, webhook_secret):
    """A webhook about the customer that arrives after the erasure (a retry, a dispute)
    brings no personal data back and does not fail."""
    user = new_user(env, tier="starter")
    customer_id = env.admin.execute("select stripe_customer_id from subscriptions where user_id = %s",
                                    (user.id,)).fetchone()["stripe_customer_id"]
    assert delete(user).status_code == 204
    settle(env)
    event_id = "evt_late_" + uuid.uuid4().hex
    late = {"id": event_id, "object": "event", "type": "customer.updated", "created": int(time.time()),
            "api_version": "2026-10-28.endive", "livemode": False,
            "data": {"object": {"id": customer_id, "object": "customer", "email": user.email, "name": user.name,
                                "address": {"line1": "1 Main St"}, "metadata": {"user_id": user.id}},
                     "previous_attributes": {"email": "older@example.com"}}}
    body, headers = signed(late, webhook_secret)
    response = client_with_own_ip(env.app).post("/v1/billing/webhook", data=body, headers=headers)
    assert response.status_code == 200, response.get_json()
    stored = env.admin.execute("select payload, error from stripe_events where id = %s", (event_id,)).fetchone()
    assert stored["error"] is None
    assert stored["payload"]["data"]["object"]["email"] is None and stored["payload"]["data"]["object"]["name"] is None
    assert places_holding(env.admin, user.email, user.name) == []


# -- export ---------------------------------------------------------------------------------

def test_export_has_everything_and_no_secrets(env, media_root):
    admin = env.admin
    user = new_user(env, tier="pro")
    video = make_video(env, user, media_root, "autumn leaves")
    key = user.client.post("/v1/keys", json={"name": "build server"}, headers=user.auth).get_json()
    secret, recovery = enrol(user.client, user.tokens)
    browser = client_with_own_ip(env.app)
    login = log_in(browser, user.email)
    assert login.status_code == 302  # two-factor: on to the code page; no session yet

    response = user.client.get("/v1/account/export", headers=user.auth)
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    data = response.get_json()
    assert data["profile"]["email"] == user.email and data["profile"]["full_name"] == user.name
    assert data["subscription"]["tier"] == "pro" and data["subscription"]["stripe_customer_id"]
    assert [(row["reason"], row["delta"]) for row in data["credit_ledger"]] == \
        [(row["reason"], row["delta"]) for row in ledger(admin, user.id)]
    assert sum(row["delta"] for row in data["credit_ledger"]) == data["subscription"]["credits_remaining"]
    assert [row["job_id"] for row in data["usage"]] == [video]
    assert [(job["id"], job["topic"], job["status"]) for job in data["jobs"]] == [(video, "autumn leaves", "completed")]
    assert [(k["name"], k["prefix"]) for k in data["api_keys"]] == [("build server", key["key"][:10])]
    assert len(data["sessions"]) >= 1 and all(s["kind"] in ("api", "browser") for s in data["sessions"])
    assert data["two_factor"]["enabled"] and data["two_factor"]["recovery_codes_left"] == 10
    assert data["sign_in_attempts"] and data["emails"]
    assert data["webhook_endpoints"] == [] and data["webhook_events"] == []

    # no secret and no hash of one, in any encoding the database holds it
    text = response.get_data(as_text=True)
    hashes = admin.execute("""
        select u.password_hash as value from users u where u.id = %(u)s
        union all select encode(k.key_hash, 'hex') from api_keys k where k.user_id = %(u)s
        union all select encode(t.token_hash, 'hex') from refresh_tokens t where t.user_id = %(u)s
        union all select encode(d.token_hash, 'hex') from trusted_devices d where d.user_id = %(u)s
        union all select encode(r.code_hash, 'hex') from recovery_codes r where r.user_id = %(u)s
        union all select encode(e.token_hash, 'hex') from email_tokens e where e.user_id = %(u)s
        union all select f.secret from two_factor f where f.user_id = %(u)s
    """, {"u": user.id}).fetchall()
    assert len(hashes) >= 5
    for value in [h["value"] for h in hashes] + [key["key"], secret, *recovery, user.tokens["refresh_token"]]:
        assert value not in text
    assert not re.search(r"hash|secret|token_hash|\$argon2", text)


def test_export_is_only_the_callers_data(env):
    one, other = new_user(env), new_user(env)
    data = one.client.get("/v1/account/export", headers=one.auth).get_json()
    assert data["profile"]["id"] == one.id
    assert other.email not in json.dumps(data)


# -- pages ----------------------------------------------------------------------------------

def test_the_account_page_downloads_the_data_and_deletes_the_account(env, media_root):
    user = new_user(env)
    video = make_video(env, user, media_root, "a page-made video")
    browser = client_with_own_ip(env.app)
    assert log_in(browser, user.email).status_code == 302
    download = browser.get("/account/export")
    assert download.status_code == 200 and "attachment" in download.headers["Content-Disposition"]
    assert download.get_json()["profile"]["email"] == user.email

    page = browser.get("/account").get_data(as_text=True)
    assert "Delete my account" in page and "Download my data" in page
    unticked = browser.post("/account/delete", data={"csrf_token": csrf_token(page), "password": STRONG_PASSWORD})
    assert unticked.status_code == 422 and "Tick the box to confirm." in unticked.get_data(as_text=True)
    wrong = browser.post("/account/delete", data={"csrf_token": csrf_token(page), "password": "wrong-password-1",
                                                  "confirm": "y"})
    assert wrong.status_code == 403 and "password is not correct." in wrong.get_data(as_text=True)
    no_csrf = browser.post("/account/delete", data={"password": STRONG_PASSWORD, "confirm": "y"})
    assert no_csrf.status_code in (400, 422)
    assert env.admin.execute("select deleted_at from users where id = %s", (user.id,)).fetchone()["deleted_at"] is None

    done = browser.post("/account/delete", data={"csrf_token": csrf_token(page), "password": STRONG_PASSWORD,
                                                 "confirm": "y"})
    assert done.status_code == 302 and done.headers["Location"].endswith("/signup")
    assert "Your account has been deleted" in browser.get("/signup").get_data(as_text=True)
    assert browser.get("/account").status_code == 302
    assert not (media_root / f"{video}.mp4").exists()
    assert places_holding(env.admin, user.email, user.name) == []


def test_the_api_contract_documents_deletion_and_export():
    assert set(DOCUMENT["paths"]["/v1/account"]) == {"delete"}
    operation = DOCUMENT["paths"]["/v1/account"]["delete"]
    assert {"204", "401", "403", "422"} <= set(operation["responses"])
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("AccountDelete")
    assert "200" in DOCUMENT["paths"]["/v1/account/export"]["get"]["responses"]


# -- in a real browser ----------------------------------------------------------------------

CHROMIUM = "/usr/lib/chromium/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def in_chromium(steps) -> None:
    """steps(page) in Debian's Chromium, driven by Playwright in a thread of its own: the
    event loop sync Playwright keeps must not be left running in the tests' thread, where
    later tests call asyncio.run()."""
    from playwright.sync_api import sync_playwright

    failure: list[BaseException] = []

    def run():
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"])
                try:
                    steps(browser.new_page(viewport={"width": 390, "height": 844}))
                finally:
                    browser.close()
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            failure.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(120)
    if failure:
        raise failure[0]


@pytest.mark.skipif(not Path(CHROMIUM).exists() and not shutil.which("chromium"),
                    reason="Debian's chromium is not installed (make test installs it)")
def test_deleting_the_account_in_a_browser(env, media_root):
    user = new_user(env)
    video = make_video(env, user, media_root, "a browser-made video")
    ARTIFACTS.mkdir(exist_ok=True)

    def steps(page):
        page.goto(f"{env.live.url}/login")
        page.fill("#email", user.email)
        page.fill("#password", STRONG_PASSWORD)
        page.click("button[type=submit]")
        page.goto(f"{env.live.url}/account#delete-account")
        page.locator("#delete-account").screenshot(path=str(ARTIFACTS / "account-delete.png"))
        page.fill("#delete-account #password", "not-my-password")
        page.check("#delete-account #confirm")
        page.click("#delete-account button[type=submit]")
        assert "password is not correct." in page.locator("#delete-account").inner_text()
        page.fill("#delete-account #password", STRONG_PASSWORD)
        page.check("#delete-account #confirm")
        page.click("#delete-account button[type=submit]")
        page.wait_for_url("**/signup")
        assert "Your account has been deleted" in page.content()
        page.screenshot(path=str(ARTIFACTS / "account-deleted.png"), full_page=True)

    in_chromium(steps)
    assert not (media_root / f"{video}.mp4").exists()
    assert places_holding(env.admin, user.email, user.name) == []


def test_an_unfinished_video_ends_with_the_account_and_no_worker_picks_it_up(env):
    user = new_user(env)
    queued = user.client.post("/v1/shorts/generate", json={"platform": "tiktok", "topic": "never rendered"},
                              headers=user.auth).get_json()["job_id"]
    books = ledger(env.admin, user.id)
    assert delete(user).status_code == 204
    job = env.admin.execute("select status, error_message from jobs where id = %s", (queued,)).fetchone()
    assert (job["status"], job["error_message"]) == ("failed", "Account deleted.")
    assert env.worker.execute("select * from app.claim_job(%s)", (queued,)).fetchall() == []
    assert ledger(env.admin, user.id) == books  # no refund to an account that is gone


# -- hostile text ---------------------------------------------------------------------------

hostile_text = st.text(st.one_of(st.characters(categories=["Cc", "Cs", "Zl", "Zp", "Cf"]), st.characters(),
                                 st.sampled_from(["\x00", "\ud800", "\udfff", "\x1b", "\r"])), max_size=40)


@pytest.fixture(scope="module")
def target(env):
    """One account that hostile deletion attempts must leave exactly as it is."""
    user = new_user(env)
    browser = client_with_own_ip(env.app)
    assert log_in(browser, user.email).status_code == 302
    return SimpleNamespace(user=user, browser=browser, rows=account_rows(env.admin, user.id))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(password=hostile_text, code=hostile_text)
def test_hostile_text_in_the_deletion_form_and_body_is_refused_clearly(env, target, password, code):
    unsafe = any(c == "\x00" or "\ud800" <= c <= "\udfff" for c in password + code)
    api = target.user.client.delete("/v1/account", json={"password": password, "code": code},
                                    headers=target.user.auth)
    assert api.status_code in (403, 422) and "detail" in api.get_json()
    if unsafe:
        assert api.status_code == 422
    page = target.browser.get("/account").get_data(as_text=True)
    # encoded as a browser would (a lone surrogate as the bytes it would have had)
    form = post_form(target.browser, "/account/delete", {"csrf_token": csrf_token(page), "password": password,
                                                         "code": code, "confirm": "y"})
    assert form.status_code in (403, 422), form.status_code
    assert account_rows(env.admin, target.user.id) == target.rows


# -- an erasure and a webhook at the same moment ----------------------------------------------

def customer_event(customer_id: str, email: str, name: str) -> dict:
    return {"id": "evt_race_" + uuid.uuid4().hex, "object": "event", "type": "customer.updated",
            "created": int(time.time()), "api_version": "2026-10-28.endive", "livemode": False,
            "data": {"object": {"id": customer_id, "object": "customer", "email": email, "name": name,
                                "metadata": {}}}}


@pytest.mark.parametrize("first", ["erasure", "webhook"])
def test_an_event_stored_while_the_account_is_being_erased_is_scrubbed_too(
        make_user, connect, new_connection, webhook_secret, first):
    """Whichever transaction starts first, the other waits for it (the users row: FOR UPDATE
    by the erasure, FOR SHARE by the event's trigger), so the event is scrubbed either by
    the erasure's pass or by the trigger: there is no moment in which neither sees it."""
    admin = connect("postgres")
    email, name = distinctive_person()
    user = make_user(email=email.lower())
    admin.execute("update users set full_name = %s where id = %s", (name, user))
    customer_id = "cus_race_" + uuid.uuid4().hex[:12]
    admin.execute("update subscriptions set stripe_customer_id = %s where user_id = %s", (customer_id, user))
    body, headers = signed(customer_event(customer_id, email, name), webhook_secret)
    eraser, receiver = new_connection("sg_app"), new_connection("sg_app")
    started = threading.Event()
    waited = {}

    def erase():
        with eraser.transaction():
            eraser.execute("select set_config('app.user_id', %s, true)", (str(user),))
            began = time.monotonic()
            eraser.execute("select * from app.erase_my_account()").fetchall()
            waited["erasure"] = time.monotonic() - began
            if first == "erasure":
                started.set()
                time.sleep(0.5)

    def receive():
        with receiver.transaction():
            began = time.monotonic()
            receiver.execute("select app.receive_stripe_event(%s, %s)", (body.decode(), headers["Stripe-Signature"]))
            waited["webhook"] = time.monotonic() - began
            if first == "webhook":
                started.set()
                time.sleep(0.5)

    leader, follower = (erase, receive) if first == "erasure" else (receive, erase)
    leading = threading.Thread(target=leader)
    leading.start()
    assert started.wait(10)
    follower()
    leading.join(10)
    second = "webhook" if first == "erasure" else "erasure"
    assert waited[second] >= 0.3, waited  # it really ran into the other transaction
    assert places_holding(admin, email, name) == []


def test_a_render_that_finishes_after_the_deletion_leaves_no_video(env, media_root):
    """A render running while the account is deleted writes its video afterwards; its
    completion is refused, and the `erase_media` entry the deletion queued (due once such
    renders are over) has a real worker delete the files."""
    import asyncio
    from datetime import timedelta

    import pgqueuer
    from pgqueuer.types import QueueExecutionMode

    from web.config import role_dsn
    from worker.main import WorkerSettings, create_pgqueuer

    user = new_user(env)
    job_id = user.client.post("/v1/shorts/generate", json={"platform": "tiktok", "topic": "rendering right now"},
                              headers=user.auth).get_json()["job_id"]
    attempt = env.worker.execute("select attempts from app.claim_job(%s)", (job_id,)).fetchone()[0]
    assert delete(user).status_code == 204
    entry = env.admin.execute("select execute_after - now() as due_in, payload from pgqueuer "
                              "where entrypoint = 'erase_media' and dedupe_key = %s", (f"erase_media:{user.id}",)
                              ).fetchone()
    assert timedelta(minutes=29) < entry["due_in"] <= timedelta(minutes=30)
    assert json.loads(bytes(entry["payload"])) == {"job_ids": [job_id]}

    # the render finishes: its files land, its completion is refused
    (media_root / f"{job_id}.mp4").write_bytes(b"late video")
    (media_root / f"{job_id}.jpg").write_bytes(b"late poster")
    assert env.worker.execute("select app.complete_job(%s, %s, '/media/x.mp4')", (job_id, attempt)).fetchone()[0] \
        is False

    # half an hour later, a render lane of the worker runs the entry
    env.admin.execute("update pgqueuer set execute_after = now() where dedupe_key = %s", (f"erase_media:{user.id}",))
    # only this entry: renders other tests left queued are not this worker's business
    env.admin.execute("delete from pgqueuer where dedupe_key is distinct from %s", (f"erase_media:{user.id}",))
    settings = WorkerSettings(dsn=role_dsn(env.config["DATABASE_URL"], "sg_worker"), media_root=media_root)

    async def drain():
        await asyncio.wait_for(pgqueuer.run(lambda: create_pgqueuer(settings, lane="render"),
                                            mode=QueueExecutionMode.drain, batch_size=1, max_concurrent_tasks=2,
                                            dequeue_timeout=timedelta(seconds=1), shutdown=asyncio.Event()),
                               timeout=60)

    worker = threading.Thread(target=lambda: asyncio.run(drain()))
    worker.start()
    worker.join(90)
    assert not (media_root / f"{job_id}.mp4").exists() and not (media_root / f"{job_id}.jpg").exists()
    assert env.admin.execute("select count(*) as n from pgqueuer where dedupe_key = %s",
                             (f"erase_media:{user.id}",)).fetchone()["n"] == 0
