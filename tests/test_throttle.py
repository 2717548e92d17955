"""Throttles that stop abuse without locking the owner out (issue 16, item 2): the OWASP
device-cookie pattern for sign-in, signups limited per client network, an unconfirmed
address spends one credit, and verification and reset mails are limited per address."""
from __future__ import annotations

import re

import psycopg
import pytest

from .conftest import (STRONG_PASSWORD, PASSWORD_HASH, api_signup, bearer, client_with_own_ip, unique_email,
                       unique_ip, verify)
from .test_auth_ui import csrf_token, log_in, submit


def wrong(client, email: str, **extra) -> int:
    return client.post("/v1/auth/login", json={"email": email, "password": "wrong-password-1", **extra}).status_code


def right(client, email: str, **extra):
    return client.post("/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD, **extra})


# -- sign-in: the owner is never locked out by strangers ------------------------------------

def test_strangers_failures_do_not_lock_out_the_owners_device(app):
    """12 wrong passwords from anywhere used to make the right one 429 from every address."""
    owner = client_with_own_ip(app)
    email = unique_email("owner")
    api_signup(owner, email=email)
    device_token = right(owner, email).get_json()["device_token"]
    attackers = [client_with_own_ip(app) for _ in range(3)]
    assert [wrong(attackers[n % 3], email) for n in range(12)][:10] == [401] * 10
    assert wrong(attackers[0], email) == 429
    # the owner, from an address of their own or even the attacker's, with the device token
    assert right(owner, email, device_token=device_token).status_code == 200
    assert right(attackers[1], email, device_token=device_token).status_code == 200


def test_clients_without_a_device_token_are_still_limited_per_email(app):
    email = unique_email("untrusted")
    api_signup(client_with_own_ip(app), email=email)
    for n in range(10):
        assert wrong(client_with_own_ip(app), email) == 401
    response = right(client_with_own_ip(app), email)
    assert response.status_code == 429 and 1 <= int(response.headers["Retry-After"]) <= 900


def test_a_device_has_its_own_failure_limit(app):
    """A stolen device token buys 10 guesses per 15 minutes, not unlimited ones."""
    client = client_with_own_ip(app)
    email = unique_email("device")
    api_signup(client, email=email)
    device_token = right(client, email).get_json()["device_token"]
    assert [wrong(client, email, device_token=device_token) for _ in range(10)] == [401] * 10
    assert right(client, email, device_token=device_token).status_code == 429
    # which leaves other clients' counters alone
    assert right(client_with_own_ip(app), email).status_code == 200


def test_a_device_token_only_vouches_for_its_own_account(app):
    client = client_with_own_ip(app)
    mine, theirs = unique_email("mine"), unique_email("theirs")
    api_signup(client, email=mine)
    api_signup(client_with_own_ip(app), email=theirs)
    my_device = right(client, mine).get_json()["device_token"]
    for _ in range(10):
        wrong(client_with_own_ip(app), theirs)
    assert right(client, theirs, device_token=my_device).status_code == 429


@pytest.mark.parametrize("device_token", ["", "x" * 201, 7])
def test_a_malformed_device_token_is_422(api, device_token):
    response = api.post("/v1/auth/login", json={"email": unique_email(), "password": "whatever-1",
                                                "device_token": device_token})
    assert response.status_code == 422 and response.get_json()["detail"].startswith("device_token:")


def test_the_login_page_remembers_the_device_in_a_cookie(app):
    email = unique_email("page")
    api_signup(client_with_own_ip(app), email=email)
    browser = client_with_own_ip(app)
    assert log_in(browser, email).status_code == 302
    cookie = browser.get_cookie("sg_device")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax"
    browser.post("/logout", data={"csrf_token": csrf_token(browser.get("/logout").get_data(as_text=True))})
    for _ in range(10):
        wrong(client_with_own_ip(app), email)
    assert log_in(client_with_own_ip(app), email).status_code == 429
    assert log_in(browser, email).status_code == 302  # the cookie vouches for the device


def test_login_succeeded_refuses_a_hash_that_is_not_argon2id(connect, make_user):
    """As sg_app, the second half of a login must not store arbitrary text as a hash."""
    admin, web = connect("postgres"), connect("sg_app")
    email = unique_email("hash")
    user = make_user(email=email)
    with web.transaction():
        attempt = web.execute("select * from app.login_attempt(%s, null)", (email,)).fetchone()
    with pytest.raises(psycopg.Error) as refused:
        with web.transaction():
            web.execute("select app.login_succeeded(%s, %s, %s, 'plaintext')",
                        (attempt["attempt_id"], user, attempt["session_version"]))
    assert refused.value.sqlstate == "P0422"
    assert admin.execute("select password_hash from users where id = %s", (user,)).fetchone()["password_hash"] \
        == PASSWORD_HASH


def test_login_succeeded_needs_an_attempt_made_for_that_user(connect, make_user):
    """An attempt recorded before the account existed (so no password of it was checked)
    cannot finish a sign-in into it."""
    web = connect("sg_app")
    email = unique_email("later")
    with web.transaction():
        attempt = web.execute("select * from app.login_attempt(%s, null)", (email,)).fetchone()
    assert attempt["user_id"] is None
    user = make_user(email=email)
    with pytest.raises(psycopg.Error) as refused:
        with web.transaction():
            web.execute("select app.login_succeeded(%s, %s, 0)", (attempt["attempt_id"], user))
    assert refused.value.sqlstate == "P0401"


# -- signup: limited per client network -----------------------------------------------------

def signup_status(client):
    return client.post("/v1/auth/signup", json={"email": unique_email("farm"), "password": STRONG_PASSWORD})


def test_signups_are_limited_per_client_address(app, connect):
    """40 signups in a second from one address used to all succeed."""
    ip = unique_ip()
    farm = client_with_own_ip(app, ip)
    before = connect("postgres").execute("select count(*) as n from users").fetchone()["n"]
    statuses = [signup_status(farm) for _ in range(8)]
    assert [r.status_code for r in statuses] == [201] * 5 + [429] * 3
    assert 1 <= int(statuses[-1].headers["Retry-After"]) <= 3600
    assert "detail" in statuses[-1].get_json()
    assert connect("postgres").execute("select count(*) as n from users").fetchone()["n"] == before + 5
    assert signup_status(client_with_own_ip(app)).status_code == 201  # another address is not affected


def test_ipv6_signups_are_limited_per_64_network(app):
    import secrets

    group, subnet = secrets.randbelow(0x10000), secrets.randbelow(0xf000)
    network = f"2001:db8:{group:x}:{subnet:x}"
    statuses = [signup_status(client_with_own_ip(app, f"{network}:{n + 1:x}::{n + 1:x}")).status_code
                for n in range(6)]
    assert statuses == [201] * 5 + [429]
    next_network = f"2001:db8:{group:x}:{subnet + 1:x}"
    assert signup_status(client_with_own_ip(app, f"{next_network}::1")).status_code == 201


def test_the_signup_page_shows_the_limit(app):
    browser = client_with_own_ip(app)
    for _ in range(5):
        assert signup_status(browser).status_code == 201
    response = submit(client_with_own_ip(app, browser.environ_base["REMOTE_ADDR"]), "/signup",
                      {"email": unique_email(), "password": STRONG_PASSWORD, "full_name": ""})
    assert response.status_code == 429 and "Too many new accounts" in response.get_data(as_text=True)
    assert int(response.headers["Retry-After"]) >= 1


# -- an unconfirmed address spends one credit -----------------------------------------------

def generate(client, auth) -> object:
    return client.post("/v1/shorts/generate", json={"platform": "tiktok", "topic": "a farmed video"}, headers=auth)


def test_an_unverified_account_spends_one_of_its_credits(api, connect):
    tokens = api_signup(api)
    auth = bearer(tokens["access_token"])
    assert tokens["user"]["credits_remaining"] == 5
    assert generate(api, auth).status_code == 202
    refused = generate(api, auth)
    assert refused.status_code == 403
    assert refused.get_json()["detail"] == "Confirm your email address to use the rest of your credits."
    assert api.get("/v1/user/credits", headers=auth).get_json()["credits_remaining"] == 4
    verify(connect("postgres"), tokens["user"]["id"])
    assert [generate(api, auth).status_code for _ in range(4)] == [202] * 4


def test_a_refunded_first_video_can_be_made_again(api, connect):
    """The one credit is one video made, not one attempt: a failed (refunded) render does not use it up."""
    tokens = api_signup(api)
    auth = bearer(tokens["access_token"])
    job_id = generate(api, auth).get_json()["job_id"]
    admin = connect("postgres")
    admin.execute("update jobs set status = 'failed' where id = %s", (job_id,))
    admin.execute("select app.refund_job(%s)", (job_id,))
    assert generate(api, auth).status_code == 202
    assert generate(api, auth).status_code == 403


def test_concurrent_first_spends_of_an_unverified_account_take_one_credit(make_user, new_connection, connect):
    """Two generates at once from an unconfirmed account: the balance row serialises them."""
    import threading

    admin = connect("postgres")
    user = make_user()
    admin.execute("update users set is_verified = false where id = %s", (user,))
    barrier = threading.Barrier(4)
    outcomes = []

    def spend():
        conn = new_connection("sg_app")
        barrier.wait()
        try:
            with conn.transaction():
                conn.execute("select set_config('app.user_id', %s, true)", (str(user),))
                conn.execute("select * from app.spend_credit_and_create_job('tiktok', 'race')")
            outcomes.append("ok")
        except psycopg.Error as error:
            outcomes.append(error.sqlstate)

    threads = [threading.Thread(target=spend) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["P0403"] * 3 + ["ok"]


def test_the_dashboard_explains_and_offers_the_resend_link(app):
    browser = client_with_own_ip(app)
    submit(browser, "/signup", {"email": unique_email("dash"), "password": STRONG_PASSWORD, "full_name": ""})
    for expected in (302, 403):
        page = browser.get("/dashboard").get_data(as_text=True)
        response = browser.post("/dashboard/generate", data={"csrf_token": csrf_token(page), "platform": "tiktok",
                                                             "topic": "my first video", "duration_seconds": 20})
        assert response.status_code == expected
    html = response.get_data(as_text=True)
    assert "Confirm your email address to use the rest of your credits." in html
    assert re.search(r'<form[^>]+action="/verify/resend"[^>]*id="resend-to-unlock"', html)


# -- mails limited per address per day ------------------------------------------------------

def test_verification_mails_are_limited_per_address_per_day(api, connect):
    tokens = api_signup(api)
    auth = bearer(tokens["access_token"])
    admin = connect("postgres")
    statuses = []
    for _ in range(6):
        statuses.append(api.post("/v1/auth/verify/resend", headers=auth).status_code)
        # the hourly limit is not what this test is about: move the mails out of the hour
        admin.execute("update email_outbox set created_at = created_at - interval '61 minutes' "
                      "where user_id = %s", (tokens["user"]["id"],))
    assert statuses == [202] * 4 + [429] * 2  # the signup mail and four more in a day
    queued = admin.execute("select count(*) as n from email_outbox where user_id = %s and kind = 'verify'",
                           (tokens["user"]["id"],)).fetchone()["n"]
    assert queued == 5


def test_reset_mails_are_limited_per_address_per_day(app, connect):
    email = unique_email("resets")
    api_signup(client_with_own_ip(app), email=email)
    admin = connect("postgres")
    statuses = []
    for _ in range(7):
        statuses.append(client_with_own_ip(app).post("/v1/auth/password/forgot", json={"email": email}).status_code)
        admin.execute("update login_attempts set attempted_at = attempted_at - interval '61 minutes' "
                      "where email = %s and kind = 'reset'", (email,))
    assert statuses == [202] * 5 + [429] * 2
