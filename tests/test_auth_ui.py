"""Sign-up, sign-in, sign-out and password pages, as a browser would use them (real
forms with their CSRF tokens, real cookies), and the session's server-side revocation."""
from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest

from web import create_app
from web.config import role_dsn

from .conftest import STRONG_PASSWORD, api_signup, client_with_own_ip, unique_email

CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"')


def csrf_token(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1) or match.group(2)


@pytest.fixture
def browser(app):
    return client_with_own_ip(app)


def submit(client, path: str, data: dict, **kwargs):
    """GET the form page, then POST it with its CSRF token, like a browser."""
    page = client.get(path, **kwargs)
    return client.post(path, data={**data, "csrf_token": csrf_token(page.get_data(as_text=True))}, **kwargs)


def sign_up(client, email: str | None = None, password: str = STRONG_PASSWORD):
    return submit(client, "/signup", {"email": email or unique_email(), "password": password, "full_name": ""})


def log_in(client, email: str, password: str = STRONG_PASSWORD, next_url: str | None = None):
    path = "/login" + (f"?next={next_url}" if next_url else "")
    return submit(client, path, {"email": email, "password": password})


def test_signup_page_creates_account_and_signs_in(browser):
    email = unique_email()
    response = sign_up(browser, email)
    assert response.status_code == 302 and response.headers["Location"].endswith("/dashboard")
    page = browser.get("/dashboard").get_data(as_text=True)
    assert "Account created! You have 5 free credits." in page
    assert "5 credits" in page and email in page and "Logout" in page


def test_signup_errors_are_shown_on_the_page(browser, connect):
    before = connect("postgres").execute("select count(*) as n from users").fetchone()["n"]
    response = sign_up(browser, password="password")
    assert response.status_code == 422
    assert "too common" in response.get_data(as_text=True)
    response = sign_up(browser, email="nobody-at-all")
    assert response.status_code == 422
    assert 'class="field-error"' in response.get_data(as_text=True)
    assert connect("postgres").execute("select count(*) as n from users").fetchone()["n"] == before


def test_signup_duplicate_email_is_explained(app, browser):
    email = unique_email()
    api_signup(client_with_own_ip(app), email=email)
    response = sign_up(browser, email)
    assert response.status_code == 409
    assert "already exists" in response.get_data(as_text=True)


def test_login_page_welcomes_back(app, browser):
    email = unique_email()
    api_signup(client_with_own_ip(app), email=email)
    wrong = log_in(browser, email, "wrong-password-1")
    assert wrong.status_code == 401 and "Invalid email or password." in wrong.get_data(as_text=True)
    response = log_in(browser, email)
    assert response.status_code == 302
    assert "Welcome back!" in browser.get("/dashboard").get_data(as_text=True)


@pytest.mark.parametrize("path, data", [
    ("/login", {"email": "a@example.com", "password": STRONG_PASSWORD}),
    ("/signup", {"email": "csrf-victim@example.com", "password": STRONG_PASSWORD}),
])
def test_form_post_without_csrf_token_is_rejected(browser, connect, path, data):
    before = connect("postgres").execute("select count(*) as n from users").fetchone()["n"]
    response = browser.post(path, data=data, headers={"Accept": "text/html"})
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)
    assert connect("postgres").execute("select count(*) as n from users").fetchone()["n"] == before


def test_logout_without_csrf_token_does_not_log_out(browser):
    sign_up(browser)
    assert browser.post("/logout").status_code in (302, 400)
    assert browser.get("/dashboard").status_code == 200


def test_protected_page_redirects_to_login_with_next(app, browser):
    response = browser.get("/dashboard?tab=jobs")
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/login" and parse_qs(location.query) == {"next": ["/dashboard?tab=jobs"]}
    email = unique_email()
    api_signup(client_with_own_ip(app), email=email)
    assert log_in(browser, email, next_url="/account").headers["Location"] == "/account"


@pytest.mark.parametrize("evil", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "http:/evil",
                                  "javascript:alert(1)", "/%0d%0aLocation:%20http://evil.example"])
def test_off_site_next_is_ignored(app, browser, evil):
    email = unique_email()
    api_signup(client_with_own_ip(app), email=email)
    location = log_in(browser, email, next_url=evil).headers["Location"]
    assert location == "/dashboard"


def test_cookie_copied_before_logout_no_longer_works(browser, app):
    sign_up(browser)
    cookie = browser.get_cookie("sg_session")
    assert cookie is not None
    thief = client_with_own_ip(app)
    thief.set_cookie(cookie.key, cookie.value)
    assert thief.get("/dashboard").status_code == 200
    page = browser.get("/logout").get_data(as_text=True)
    assert browser.post("/logout", data={"csrf_token": csrf_token(page)}).status_code == 302
    assert browser.get("/dashboard").status_code == 302
    assert thief.get("/dashboard").status_code == 302  # the copy is dead server-side


def test_cookie_copied_before_password_change_no_longer_works(browser, app):
    email = unique_email()
    sign_up(browser, email)
    elsewhere = client_with_own_ip(app)
    log_in(elsewhere, email)
    thief = client_with_own_ip(app)
    thief.set_cookie("sg_session", browser.get_cookie("sg_session").value)
    response = submit(browser, "/account", {"current_password": STRONG_PASSWORD,
                                            "new_password": "fresh-meadow-lantern-8",
                                            "confirm": "fresh-meadow-lantern-8"})
    assert response.status_code == 302
    assert "Password changed" in browser.get("/account").get_data(as_text=True)
    assert browser.get("/dashboard").status_code == 200  # this browser carries on
    assert elsewhere.get("/dashboard").status_code == 302
    assert thief.get("/dashboard").status_code == 302


def test_password_change_form_errors(browser):
    sign_up(browser)
    wrong = submit(browser, "/account", {"current_password": "nope-nope-nope", "new_password": "fresh-meadow-lantern-8",
                                         "confirm": "fresh-meadow-lantern-8"})
    assert wrong.status_code == 403 and "not correct" in wrong.get_data(as_text=True)
    mismatch = submit(browser, "/account", {"current_password": STRONG_PASSWORD, "new_password": "fresh-meadow-lantern-8",
                                            "confirm": "something-else-entirely"})
    assert mismatch.status_code == 422 and "do not match" in mismatch.get_data(as_text=True)
    weak = submit(browser, "/account", {"current_password": STRONG_PASSWORD, "new_password": "password",
                                        "confirm": "password"})
    assert weak.status_code == 422 and "too common" in weak.get_data(as_text=True)


def test_session_id_changes_at_login(app, browser):
    email = unique_email()
    api_signup(client_with_own_ip(app), email=email)
    browser.get("/login")
    before = browser.get_cookie("sg_session").value
    log_in(browser, email)
    assert browser.get_cookie("sg_session").value != before


def test_pages_are_phone_ready(browser):
    html = browser.get("/login").get_data(as_text=True)
    assert 'name="viewport" content="width=device-width, initial-scale=1"' in html


def test_production_cookie_is_host_prefixed_secure_httponly_lax(database_dsn):
    prod = create_app({"TESTING": False, "DEBUG": False, "SECRET_KEY": "s" * 64, "DATABASE_URL": database_dsn,
                       "APP_DATABASE_URL": role_dsn(database_dsn, "sg_app")})
    try:
        client = prod.test_client()
        response = client.get("/login", base_url="https://localhost")
        header = response.headers["Set-Cookie"]
        assert header.startswith("__Host-sg_session=")
        assert "Secure" in header and "HttpOnly" in header and "SameSite=Lax" in header and "Path=/" in header
        assert "Domain" not in header
    finally:
        prod.extensions["sg_pool"].close()


def test_production_refuses_to_start_without_secret_key(database_dsn):
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app({"TESTING": False, "DEBUG": False, "SECRET_KEY": None, "DATABASE_URL": database_dsn})


def test_login_page_takes_any_form_of_the_registered_address(app, browser):
    """The page signs in through the same normalisation as signup (issue 15, item 6)."""
    import uuid

    local = f"erin-{uuid.uuid4().hex[:8]}"
    api_signup(client_with_own_ip(app), email=f"{local}@bücher.de")
    assert log_in(browser, f"{local}@XN--BCHER-KVA.DE").status_code == 302
    refused = log_in(client_with_own_ip(app), "not an address")
    assert refused.status_code == 422 and 'class="field-error"' in refused.get_data(as_text=True)
