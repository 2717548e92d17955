"""Two-factor sign-in (issue 16, item 9): optional TOTP with ten single-use recovery codes,
enforced on the login page and the API (a challenge token, then POST /v1/auth/login/2fa),
throttled like passwords, enrolled and turned off on the account page and over the API,
with a mail when it is turned on or off and when the password changes."""
from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlsplit

import psycopg
import pyotp
import pytest

from .conftest import STRONG_PASSWORD, api_signup, bearer, client_with_own_ip, unique_email
from .test_auth_ui import csrf_token, log_in, submit


def code_for(secret: str, steps_ago: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() - 30 * steps_ago)


def enrol(client, tokens: dict) -> tuple[str, list[str]]:
    """Turn two-factor sign-in on over the API; (secret, recovery codes). It confirms with
    the previous 30-second step's code (accepted for clock drift), so the current code is
    still unused for the test's sign-in: each code works once."""
    auth = bearer(tokens["access_token"])
    setup = client.post("/v1/auth/2fa/setup", headers=auth)
    assert setup.status_code == 200, setup.get_json()
    secret = setup.get_json()["secret"]
    enabled = client.post("/v1/auth/2fa/enable", headers=auth,
                          json={"password": STRONG_PASSWORD, "code": code_for(secret, steps_ago=1)})
    assert enabled.status_code == 200, enabled.get_json()
    return secret, enabled.get_json()["recovery_codes"]


def password_step(client, email: str, password: str = STRONG_PASSWORD):
    return client.post("/v1/auth/login", json={"email": email, "password": password})


def second_step(client, challenge: str, code: str):
    return client.post("/v1/auth/login/2fa", json={"challenge_token": challenge, "code": code})


@pytest.fixture
def enrolled(app):
    client = client_with_own_ip(app)
    email = unique_email("totp")
    tokens = api_signup(client, email=email)
    secret, recovery = enrol(client, tokens)
    return {"client": client, "email": email, "tokens": tokens, "secret": secret, "recovery": recovery}


# -- enrolment ------------------------------------------------------------------------------

def test_setup_gives_a_secret_and_an_authenticator_uri(api):
    tokens = api_signup(api)
    body = api.post("/v1/auth/2fa/setup", headers=bearer(tokens["access_token"])).get_json()
    uri = urlsplit(body["otpauth_uri"])
    assert uri.scheme == "otpauth" and uri.netloc == "totp"
    assert parse_qs(uri.query)["secret"] == [body["secret"]] and parse_qs(uri.query)["issuer"] == ["Story Genius"]
    assert re.fullmatch(r"[A-Z2-7]{32}", body["secret"])


def test_enabling_needs_the_password_and_a_current_code(api):
    tokens = api_signup(api)
    auth = bearer(tokens["access_token"])
    secret = api.post("/v1/auth/2fa/setup", headers=auth).get_json()["secret"]
    wrong_code = api.post("/v1/auth/2fa/enable", headers=auth, json={"password": STRONG_PASSWORD, "code": "000000"})
    assert wrong_code.status_code == 422 and wrong_code.get_json()["detail"].startswith("code:")
    wrong_password = api.post("/v1/auth/2fa/enable", headers=auth,
                              json={"password": "not-my-password-1", "code": code_for(secret)})
    assert wrong_password.status_code == 403
    done = api.post("/v1/auth/2fa/enable", headers=auth, json={"password": STRONG_PASSWORD, "code": code_for(secret)})
    assert done.status_code == 200
    codes = done.get_json()["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    assert api.post("/v1/auth/2fa/setup", headers=auth).status_code == 409  # already on


def test_the_web_role_cannot_read_secrets_or_recovery_codes(enrolled, connect):
    web = connect("sg_app")
    for statement in ("select secret from two_factor", "select code_hash from recovery_codes",
                      "select token_hash from login_challenges"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            web.execute(statement)
    hashes = connect("postgres").execute("select code_hash from recovery_codes r join users u on u.id = r.user_id "
                                         "where u.email = %s", (enrolled["email"],)).fetchall()
    assert len(hashes) == 10
    assert not any(code.encode() in bytes(row["code_hash"]) for row in hashes for code in enrolled["recovery"])


# -- API sign-in ----------------------------------------------------------------------------

def test_api_login_asks_for_the_second_factor(enrolled):
    client = client_with_own_ip(enrolled["client"].application)
    first = password_step(client, enrolled["email"])
    assert first.status_code == 202
    body = first.get_json()
    assert body["two_factor_required"] is True and body["expires_in"] == 300 and "access_token" not in body
    assert second_step(client, body["challenge_token"], "123456").status_code == 401
    done = second_step(client, body["challenge_token"], code_for(enrolled["secret"]))
    assert done.status_code == 200, done.get_json()
    assert client.get("/v1/auth/me", headers=bearer(done.get_json()["access_token"])).status_code == 200
    # the challenge worked once
    assert second_step(client, body["challenge_token"], code_for(enrolled["secret"])).status_code == 401


def test_a_code_works_once(enrolled):
    client = enrolled["client"]
    code = code_for(enrolled["secret"])
    first = second_step(client, password_step(client, enrolled["email"]).get_json()["challenge_token"], code)
    assert first.status_code == 200
    replay = second_step(client, password_step(client, enrolled["email"]).get_json()["challenge_token"], code)
    assert replay.status_code == 401


def test_recovery_codes_work_once_each(enrolled):
    client = enrolled["client"]
    code = enrolled["recovery"][0]
    challenge = password_step(client, enrolled["email"]).get_json()["challenge_token"]
    assert second_step(client, challenge, code.upper()).status_code == 200
    challenge = password_step(client, enrolled["email"]).get_json()["challenge_token"]
    assert second_step(client, challenge, code).status_code == 401
    assert second_step(client, challenge, enrolled["recovery"][1]).status_code == 200


def test_wrong_codes_end_the_challenge_and_count_like_wrong_passwords(enrolled, app):
    client = client_with_own_ip(app)
    challenge = password_step(client, enrolled["email"]).get_json()["challenge_token"]
    assert [second_step(client, challenge, f"{n:06d}").status_code for n in range(5)] == [401] * 5
    assert second_step(client, challenge, code_for(enrolled["secret"])).status_code == 401  # the challenge is dead
    # each wrong code was a failed sign-in for the account's throttle: 10 in all lock strangers out
    challenge = password_step(client, enrolled["email"]).get_json()["challenge_token"]
    for n in range(4):
        second_step(client, challenge, f"{n + 10:06d}")
    assert password_step(client_with_own_ip(app), enrolled["email"]).status_code == 429


@pytest.mark.parametrize("payload", [{}, {"challenge_token": "x"}, {"challenge_token": "x", "code": 123456},
                                     {"challenge_token": "x", "code": "1" * 51}, {"code": "123456"}])
def test_the_second_step_validates_its_body(api, payload):
    response = api.post("/v1/auth/login/2fa", json=payload)
    assert response.status_code == 422


def test_login_succeeded_refuses_a_user_with_two_factor(enrolled, connect):
    """As sg_app: skipping the second step by calling the one-factor finish is refused."""
    web = connect("sg_app")
    with web.transaction():
        attempt = web.execute("select * from app.login_attempt(%s, null)", (enrolled["email"],)).fetchone()
    assert attempt["two_factor"] is True
    with pytest.raises(psycopg.Error) as refused:
        with web.transaction():
            web.execute("select app.login_succeeded(%s, %s, %s)",
                        (attempt["attempt_id"], attempt["user_id"], attempt["session_version"]))
    assert refused.value.sqlstate == "P0401"


def test_disabling_needs_the_password_and_a_code(enrolled):
    client, auth = enrolled["client"], bearer(enrolled["tokens"]["access_token"])
    assert client.post("/v1/auth/2fa/disable", headers=auth,
                       json={"password": STRONG_PASSWORD, "code": "000000"}).status_code == 422
    assert client.post("/v1/auth/2fa/disable", headers=auth,
                       json={"password": "wrong-password-9", "code": code_for(enrolled["secret"])}).status_code == 403
    assert client.post("/v1/auth/2fa/disable", headers=auth,
                       json={"password": STRONG_PASSWORD, "code": enrolled["recovery"][5]}).status_code == 200
    assert password_step(client, enrolled["email"]).status_code == 200


# -- pages ----------------------------------------------------------------------------------

def test_the_login_page_asks_for_the_code(enrolled, app):
    browser = client_with_own_ip(app)
    response = log_in(browser, enrolled["email"], next_url="/account")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login/2fa")
    assert browser.get("/dashboard").status_code == 302  # not signed in yet
    wrong = submit(browser, "/login/2fa", {"code": "000000"})
    assert wrong.status_code == 401 and "not correct" in wrong.get_data(as_text=True)
    done = submit(browser, "/login/2fa", {"code": code_for(enrolled["secret"])})
    assert done.status_code == 302 and done.headers["Location"] == "/account"
    assert browser.get("/dashboard").status_code == 200


def test_the_account_page_turns_two_factor_on_and_off(app):
    browser = client_with_own_ip(app)
    email = unique_email("page2fa")
    submit(browser, "/signup", {"email": email, "password": STRONG_PASSWORD, "full_name": ""})
    page = browser.get("/account").get_data(as_text=True)
    assert "Turn on two-factor sign-in" in page
    started = browser.post("/account/2fa/setup", data={"csrf_token": csrf_token(page)})
    assert started.status_code == 302
    page = browser.get("/account").get_data(as_text=True)
    assert "<svg" in page and "<script" not in page.split("<svg", 1)[1].split("</svg>", 1)[0]
    secret = re.search(r'id="totp-secret">([A-Z2-7]{32})<', page).group(1)
    enabled = browser.post("/account/2fa/enable", data={"csrf_token": csrf_token(page), "password": STRONG_PASSWORD,
                                                        "code": code_for(secret)})
    assert enabled.status_code == 200
    codes = re.findall(r'<li class="recovery-code"><code>([0-9a-f-]+)</code></li>', enabled.get_data(as_text=True))
    assert len(codes) == 10
    page = browser.get("/account").get_data(as_text=True)
    assert "Two-factor sign-in is on" in page
    off = browser.post("/account/2fa/disable", data={"csrf_token": csrf_token(page), "password": STRONG_PASSWORD,
                                                     "code": codes[0]})
    assert off.status_code == 302
    assert "Turn on two-factor sign-in" in browser.get("/account").get_data(as_text=True)


# -- mails ----------------------------------------------------------------------------------

def test_mails_when_two_factor_goes_on_or_off_and_when_the_password_changes(app, connect):
    client = client_with_own_ip(app)
    tokens = api_signup(client)
    secret, recovery = enrol(client, tokens)
    auth = bearer(tokens["access_token"])
    assert client.post("/v1/auth/2fa/disable", headers=auth,
                       json={"password": STRONG_PASSWORD, "code": recovery[0]}).status_code == 200
    assert client.post("/v1/auth/password", headers=auth, json={"current_password": STRONG_PASSWORD,
                                                                "new_password": "a-brand-new-phrase-77"}).status_code == 200
    kinds = [row["kind"] for row in connect("postgres").execute(
        "select kind from email_outbox where user_id = %s and kind <> 'verify' order by created_at",
        (tokens["user"]["id"],))]
    assert kinds == ["two_factor_enabled", "two_factor_disabled", "password_changed"]
