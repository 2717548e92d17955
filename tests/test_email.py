"""Email as users meet it, through a real SMTP server on loopback (aiosmtpd) and the real
worker: verify the address, reset a forgotten password, receipts and payment notices."""
from __future__ import annotations

import re
import time
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller


from .conftest import STRONG_PASSWORD, api_signup, bearer, client_with_own_ip, stripe_prices, unique_email
from .stripe_fakes import free_port
from .stripe_payloads import invoice_paid, payment_failed, signed
from .test_auth_ui import csrf_token, log_in
from .test_worker import run_in_process
from worker.render import render_short


class Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"

    def to(self, address: str, subject_part: str = "") -> list:
        return [m for m in self.messages if address in m["To"] and subject_part in m["Subject"]]


@pytest.fixture(scope="module")
def smtp():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, inbox
    controller.stop()


@pytest.fixture
def deliver(smtp, database_dsn, media_root, monkeypatch, empty_queue):
    """deliver() runs the real worker until the queue is empty, mailing through the SMTP server."""
    controller, inbox = smtp
    monkeypatch.setenv("SMTP_URL", f"smtp://127.0.0.1:{controller.port}")
    monkeypatch.setenv("APP_URL", "http://localhost")
    monkeypatch.setenv("MAIL_FROM", "Story Genius <hello@storygenius.test>")
    return lambda: run_in_process(database_dsn, media_root, render_short)


def link_in(message, path: str) -> str:
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    token = re.search(rf"http://localhost{path}\?token=([0-9a-f]+)", text).group(1)
    assert token in html and "<img" not in html  # the same link in both parts; no tracking pixels
    return token


def test_signup_verification_link_works_once(app, smtp, deliver, connect):
    _, inbox = smtp
    client = client_with_own_ip(app)
    email = unique_email("verify")
    user = api_signup(client, email=email)
    deliver()
    mails = inbox.to(email, "Confirm your email")
    assert len(mails) == 1 and mails[0]["From"] == "Story Genius <hello@storygenius.test>"
    token = link_in(mails[0], "/verify")
    assert client.get(f"/verify?token={token}").status_code == 302
    assert client.get("/v1/auth/me", headers=bearer(user["access_token"])).get_json()["is_verified"] is True
    again = client.get(f"/verify?token={token}")
    assert again.status_code == 422 and "already been used" in again.get_data(as_text=True)
    tampered = client.get(f"/verify?token={token[:-2]}00")
    assert tampered.status_code == 422 and "not valid" in tampered.get_data(as_text=True)
    assert client.post("/v1/auth/verify", json={"token": token}).status_code == 422


def test_expired_verification_link(app, smtp, deliver, connect):
    _, inbox = smtp
    client = client_with_own_ip(app)
    email = unique_email("expired")
    api_signup(client, email=email)
    deliver()
    token = link_in(inbox.to(email, "Confirm")[0], "/verify")
    connect("postgres").execute("update email_tokens set expires_at = now() - interval '1 minute' "
                                "where token_hash = sha256(convert_to(%s, 'UTF8'))", (token,))
    response = client.post("/v1/auth/verify", json={"token": token})
    assert response.status_code == 422 and "expired" in response.get_json()["detail"]


def test_fourth_resend_in_an_hour_is_429(app, smtp, deliver):
    _, inbox = smtp
    client = client_with_own_ip(app)
    email = unique_email("resend")
    auth = bearer(api_signup(client, email=email)["access_token"])
    assert [client.post("/v1/auth/verify/resend", headers=auth).status_code for _ in range(4)] == [202, 202, 202, 429]
    deliver()
    assert len(inbox.to(email, "Confirm")) == 4  # signup + 3 resends


def test_unverified_users_make_videos_but_cannot_buy_or_make_keys(app, connect):
    client = client_with_own_ip(app)
    tokens = api_signup(client)
    auth = bearer(tokens["access_token"])
    connect("postgres").execute("update subscriptions set tier = 'pro' where user_id = %s", (tokens["user"]["id"],))
    assert client.post("/v1/shorts/generate", json={"platform": "tiktok", "topic": "still allowed"},
                       headers=auth).status_code == 202
    keys = client.post("/v1/keys", json={"name": "nope"}, headers=auth)
    assert keys.status_code == 403 and "Verify your email" in keys.get_json()["detail"]
    checkout = client.post("/v1/billing/create-checkout-session", json={"tier": "agency"}, headers=auth)
    assert checkout.status_code == 403 and "Verify your email" in checkout.get_json()["detail"]


def test_verification_banner_and_resend_button(app):
    browser = app.test_client()
    page = browser.get("/signup").get_data(as_text=True)
    browser.post("/signup", data={"csrf_token": csrf_token(page), "email": unique_email("banner"),
                                  "password": STRONG_PASSWORD})
    page = browser.get("/dashboard").get_data(as_text=True)
    assert 'id="verify-banner"' in page
    response = browser.post("/verify/resend", data={"csrf_token": csrf_token(page)})
    assert response.status_code == 302
    assert "We sent a new link" in browser.get("/dashboard").get_data(as_text=True)


def test_password_reset_walkthrough(app, smtp, deliver):
    _, inbox = smtp
    client = client_with_own_ip(app)
    email = unique_email("reset")
    old = api_signup(client, email=email)
    browser = client_with_own_ip(app)
    assert log_in(browser, email).status_code == 302
    known = client.post("/v1/auth/password/forgot", json={"email": email})
    unknown = client.post("/v1/auth/password/forgot", json={"email": unique_email("nobody")})
    assert known.status_code == unknown.status_code == 202
    assert known.get_json() == unknown.get_json()
    deliver()
    mails = inbox.to(email, "Reset your")
    assert len(mails) == 1
    token = link_in(mails[0], "/reset")
    # the page behind the link: a CSRF-protected form
    page = browser.get(f"/reset?token={token}").get_data(as_text=True)
    assert 'name="new_password"' in page
    weak = client.post("/v1/auth/password/reset", json={"token": token, "new_password": "password"})
    assert weak.status_code == 422
    done = client.post("/v1/auth/password/reset", json={"token": token, "new_password": "a-brand-new-phrase-77"})
    assert done.status_code == 200
    again = client.post("/v1/auth/password/reset", json={"token": token, "new_password": "another-new-phrase-88"})
    assert again.status_code == 422 and "already been used" in again.get_json()["detail"]
    # everything issued before the reset is dead; only the new password opens the account
    assert client.get("/v1/auth/me", headers=bearer(old["access_token"])).status_code == 401
    assert client.post("/v1/auth/refresh", json={"refresh_token": old["refresh_token"]}).status_code == 401
    assert browser.get("/dashboard").status_code == 302
    assert client.post("/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD}).status_code == 401
    assert client.post("/v1/auth/login", json={"email": email, "password": "a-brand-new-phrase-77"}).status_code == 200


def test_reset_form_page(app, smtp, deliver):
    _, inbox = smtp
    client = client_with_own_ip(app)
    email = unique_email("resetpage")
    api_signup(client, email=email)
    page = client.get("/forgot").get_data(as_text=True)
    response = client.post("/forgot", data={"csrf_token": csrf_token(page), "email": email})
    assert response.status_code == 302
    assert "If an account exists" in client.get("/login").get_data(as_text=True)
    deliver()
    token = link_in(inbox.to(email, "Reset your")[0], "/reset")
    page = client.get(f"/reset?token={token}").get_data(as_text=True)
    mismatch = client.post(f"/reset?token={token}", data={"csrf_token": csrf_token(page), "new_password": "x-new-phrase-9a",
                                                            "confirm": "different"})
    assert mismatch.status_code == 422
    done = client.post(f"/reset?token={token}", data={"csrf_token": csrf_token(page), "new_password": "x-new-phrase-9a",
                                                       "confirm": "x-new-phrase-9a"})
    assert done.status_code == 302
    assert log_in(client_with_own_ip(app), email, "x-new-phrase-9a").status_code == 302
    bad = client.get("/reset?token=deadbeef")
    assert bad.status_code == 200  # the form shows; submitting it says the link is not valid
    page = bad.get_data(as_text=True)
    refused = client.post("/reset?token=deadbeef", data={"csrf_token": csrf_token(page),
                                                         "new_password": "x-new-phrase-9b", "confirm": "x-new-phrase-9b"})
    assert refused.status_code == 422 and "not valid" in refused.get_data(as_text=True)


@pytest.mark.parametrize("email", ["\t" + "*" * 254, " " * 255])
def test_forgot_refuses_an_email_outside_the_documented_length(app, connect, email):
    """maxLength 254 holds for the address as sent, surrounding whitespace included (found
    by schemathesis); nothing is recorded for the throttle."""
    client = client_with_own_ip(app)
    before = connect("postgres").execute("select count(*) from login_attempts where kind = 'reset'").fetchone()
    response = client.post("/v1/auth/password/forgot", json={"email": email})
    assert response.status_code == 422 and response.get_json()["detail"].startswith("email:")
    assert connect("postgres").execute("select count(*) from login_attempts where kind = 'reset'").fetchone() == before


def test_forgot_is_throttled_per_email(app):
    client = client_with_own_ip(app)
    email = unique_email("throttle")
    statuses = [client.post("/v1/auth/password/forgot", json={"email": email}).status_code for _ in range(4)]
    assert statuses == [202, 202, 202, 429]


def test_one_receipt_however_often_stripe_delivers(app, smtp, deliver, connect, webhook_secret):
    _, inbox = smtp
    client = client_with_own_ip(app)
    email = unique_email("receipt")
    user = api_signup(client, email=email)
    admin = connect("postgres")
    admin.execute("update subscriptions set stripe_customer_id = 'cus_receipt_' || left(user_id::text, 8) "
                  "where user_id = %s", (user["user"]["id"],))
    customer = f"cus_receipt_{user['user']['id'][:8]}"
    subscription = f"sub_r_{user['user']['id'][:8]}"
    now = int(time.time())
    with stripe_prices(admin, {"starter": "price_receipt_starter"}):
        paid = invoice_paid(customer, subscription, "price_receipt_starter", now, invoice_id=f"in_receipt_{now}")
        again = {**paid, "id": f"evt_again_{now}", "type": "invoice.payment_succeeded"}
        for payload in (paid, paid, paid, again):
            body, headers = signed(payload, webhook_secret)
            assert client.post("/v1/billing/webhook", data=body, headers=headers).status_code == 200
        body, headers = signed(payment_failed(customer, subscription, "price_receipt_starter"), webhook_secret)
        client.post("/v1/billing/webhook", data=body, headers=headers)
    deliver()
    receipts = inbox.to(email, "receipt")
    assert len(receipts) == 1
    text = receipts[0].get_body(preferencelist=("plain",)).get_content()
    assert "Starter" in text and "$9.00" in text and "Credits granted: 20" in text
    notices = inbox.to(email, "payment failed")
    assert len(notices) == 1 and "http://localhost/billing/portal" in notices[0].get_body(
        preferencelist=("plain",)).get_content()


# -- reset links end with the password they were sent for (issue 15, item 2) -------------

def reset_links(connect, user_id) -> list[str]:
    """Sends the user's queued reset mails the way the worker does (app.claim_email as
    sg_worker) and returns their link tokens, oldest first."""
    admin, worker = connect("postgres"), connect("sg_worker")
    queued = admin.execute("select id from email_outbox where user_id = %s and kind = 'reset' and sent_at is null "
                           "order by created_at", (user_id,)).fetchall()
    tokens = []
    for row in queued:
        claimed = worker.execute("select * from app.claim_email(%s)", (row["id"],)).fetchone()
        if claimed is not None:
            worker.execute("select app.finish_email(%s)", (row["id"],))
            tokens.append(claimed["token"])
    return tokens


def test_a_reset_ends_every_other_reset_link(app, connect):
    """An older link used to reset the password again after the owner had reset it."""
    client = client_with_own_ip(app)
    email = unique_email("twolinks")
    user_id = api_signup(client, email=email)["user"]["id"]
    for _ in range(2):
        assert client.post("/v1/auth/password/forgot", json={"email": email}).status_code == 202
    first, second = reset_links(connect, user_id)
    assert client.post("/v1/auth/password/reset",
                       json={"token": second, "new_password": "owner-picked-this-1"}).status_code == 200
    stale = client.post("/v1/auth/password/reset", json={"token": first, "new_password": "thief-picked-this-2"})
    assert stale.status_code == 422 and "no longer valid" in stale.get_json()["detail"]
    assert client.post("/v1/auth/login", json={"email": email, "password": "owner-picked-this-1"}).status_code == 200


def test_a_password_change_ends_outstanding_reset_links(app, connect):
    client = client_with_own_ip(app)
    email = unique_email("changed")
    tokens = api_signup(client, email=email)
    assert client.post("/v1/auth/password/forgot", json={"email": email}).status_code == 202
    [link] = reset_links(connect, tokens["user"]["id"])
    assert client.post("/v1/auth/password", headers=bearer(tokens["access_token"]),
                       json={"current_password": STRONG_PASSWORD,
                             "new_password": "owner-changed-it-3"}).status_code == 200
    stale = client.post("/v1/auth/password/reset", json={"token": link, "new_password": "thief-picked-this-4"})
    assert stale.status_code == 422 and "no longer valid" in stale.get_json()["detail"]


def test_a_reset_mail_still_queued_at_the_reset_is_never_sent(app, connect):
    """A request made before the reset would otherwise mint a live link afterwards."""
    client = client_with_own_ip(app)
    email = unique_email("queued")
    user_id = api_signup(client, email=email)["user"]["id"]
    assert client.post("/v1/auth/password/forgot", json={"email": email}).status_code == 202
    [link] = reset_links(connect, user_id)
    assert client.post("/v1/auth/password/forgot", json={"email": email}).status_code == 202
    assert client.post("/v1/auth/password/reset",
                       json={"token": link, "new_password": "owner-picked-this-5"}).status_code == 200
    assert reset_links(connect, user_id) == []
    row = connect("postgres").execute("select sent_at, canceled_at from email_outbox where user_id = %s "
                                      "and kind = 'reset' order by created_at desc limit 1", (user_id,)).fetchone()
    assert row["sent_at"] is None and row["canceled_at"] is not None


# -- mails are safe (issue 16, item 6) ------------------------------------------------------

PHISHING_NAME = "Your account is locked! Re-enter your card at http://evil.example/login now"


@pytest.mark.parametrize("name", ["Eve\r\nBcc: everyone@example.com", "Eve\nSmith", "Eve\x1b[31m", "Eve\u2028Smith",
                                  "Eve\u202egnp.exe", "Eve\x85Smith", "Eve\ud800"])
def test_a_name_must_be_one_line_of_printable_text(app, connect, name):
    client = client_with_own_ip(app)
    before = connect("postgres").execute("select count(*) as n from users").fetchone()["n"]
    response = client.post("/v1/auth/signup", json={"email": unique_email("name"), "password": STRONG_PASSWORD,
                                                    "full_name": name})
    assert response.status_code == 422 and response.get_json()["detail"].startswith("full_name:")
    assert connect("postgres").execute("select count(*) as n from users").fetchone()["n"] == before


def test_the_signup_page_refuses_a_multi_line_name(app):
    browser = client_with_own_ip(app)
    page = browser.get("/signup").get_data(as_text=True)
    response = browser.post("/signup", data={"csrf_token": csrf_token(page), "email": unique_email("pagename"),
                                             "password": STRONG_PASSWORD, "full_name": "Eve\r\nBcc: x@example.com"})
    assert response.status_code == 422 and 'class="field-error"' in response.get_data(as_text=True)


def test_the_database_refuses_a_multi_line_name_from_the_web_role(connect, make_user):
    """As sg_app: neither signup nor the one granted write (the profile name) stores one."""
    import psycopg

    from .conftest import PASSWORD_HASH, acting_as

    web = connect("sg_app")
    with pytest.raises(psycopg.Error) as refused:
        with web.transaction():
            web.execute("select app.signup(%s, %s, %s)", (unique_email("sqlname"), PASSWORD_HASH, "Eve\r\nBcc: x"))
    assert refused.value.sqlstate == "P0422"
    user = make_user()
    with pytest.raises(psycopg.errors.CheckViolation):
        with acting_as(web, user):
            web.execute("update users set full_name = %s where id = %s", ("Eve\nBcc: x", user))


def test_mails_do_not_echo_an_unconfirmed_name(app, smtp, deliver):
    """Anyone can sign up with someone else's address and a 'name' written as a message."""
    _, inbox = smtp
    client = client_with_own_ip(app)
    email = unique_email("victim")
    api_signup(client, email=email, full_name=PHISHING_NAME)
    deliver()
    [mail] = inbox.to(email, "Confirm your email")
    text = mail.get_body(preferencelist=("plain",)).get_content()
    html = mail.get_body(preferencelist=("html",)).get_content()
    assert "evil.example" not in text and "evil.example" not in html and "evil.example" not in str(mail["To"])
    assert mail["To"].addresses[0].addr_spec == email and mail["To"].addresses[0].display_name == ""


def test_a_confirmed_name_is_an_encoded_display_name_and_not_a_greeting(app, smtp, deliver, connect):
    _, inbox = smtp
    client = client_with_own_ip(app)
    email = unique_email("zoe")
    name = 'Zoë "Z" O\'Brien, Jr. <boss@example.com>'
    user = api_signup(client, email=email, full_name=name)
    connect("postgres").execute("update users set is_verified = true where id = %s", (user["user"]["id"],))
    assert client.post("/v1/auth/password/forgot", json={"email": email}).status_code == 202
    deliver()
    [mail] = inbox.to(email, "Reset your")
    [address] = mail["To"].addresses
    assert (address.display_name, address.addr_spec) == (name, email)
    assert "Zo" not in mail.get_body(preferencelist=("plain",)).get_content()


def test_a_mail_that_cannot_be_built_fails_once_and_loudly(app, deliver, connect, caplog):
    """It used to be retried for ever (each attempt failing the same way)."""
    admin = connect("postgres")
    user_id = api_signup(client_with_own_ip(app))["user"]["id"]
    key = f"unbuildable:{user_id}"
    # a kind no template exists for stands in for any mail that cannot be composed
    assert admin.execute("select app._queue_email(%s, 'no_such_kind', %s) as q", (user_id, key)).fetchone()["q"]
    started = time.monotonic()
    with caplog.at_level("ERROR", logger="worker"):
        deliver()
    assert time.monotonic() - started < 60
    row = admin.execute("select attempts, sent_at, failed_at, last_error from email_outbox where dedupe_key = %s",
                        (key,)).fetchone()
    assert row["attempts"] == 1 and row["sent_at"] is None and row["failed_at"] is not None
    assert "no_such_kind" in row["last_error"]
    assert any("cannot be built" in record.getMessage() for record in caplog.records)
    assert admin.execute("select count(*) as n from pgqueuer where entrypoint = 'send_email'").fetchone()["n"] == 0


@pytest.mark.parametrize("kind, says", [("two_factor_enabled", "is now on"), ("two_factor_disabled", "is now off"),
                                        ("password_changed", "has just been changed")])
def test_security_notices_are_composed_from_their_templates(kind, says):
    from worker.mail import MailSettings, compose

    settings = MailSettings(smtp_url=None, mail_from="Story Genius <hello@storygenius.test>",
                            app_url="http://localhost", outbox=None)
    message = compose(settings, kind, "erin@bücher.de", "Erin", {}, None)
    assert message["To"].addresses[0].addr_spec == "erin@xn--bcher-kva.de"
    for part in ("plain", "html"):
        body = message.get_body(preferencelist=(part,)).get_content()
        assert says in body and "http://localhost/forgot" in body and "Erin" not in body
