"""Fuzzing the page forms and the JSON fields with hostile text (issue 16, item 5): control
characters, NUL and unpaired surrogates in every field of every form and JSON body. No
input gets a 500; NUL or a lone surrogate gets a 422 that names the field (JSON) or a
form error beside it (pages), and changes nothing."""
from __future__ import annotations

import json
import re
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from web.api.validation import UNSAFE_TEXT

from .conftest import STRONG_PASSWORD, api_signup, bearer, client_with_own_ip, set_tier, unique_email

EXAMPLES = int(__import__("os").environ.get("FUZZ_FORM_EXAMPLES", "40"))

# every kind of character, with the troublesome ones made likely: C0/C1 controls, NUL,
# both halves of a surrogate pair on their own, line and paragraph separators
hostile_text = st.text(
    st.one_of(st.characters(categories=["Cc", "Cs", "Zl", "Zp", "Cf"]), st.characters(),
              st.sampled_from(["\x00", "\ud800", "\udfff", "\x1b", "\x7f", "\r", "\n"])),
    max_size=30)
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def unsafe(value: str) -> bool:
    return "\x00" in value or any("\ud800" <= ch <= "\udfff" for ch in value)


def csrf_token(client, page: str) -> str:
    html = client.get(page).get_data(as_text=True)
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)


def post_form(client, path: str, fields: dict[str, str]):
    """POST a form the way a browser encodes it: UTF-8, with a lone surrogate written as
    the bytes it would have had (a browser cannot send one; a hand-made request can)."""
    body = "&".join(f"{urllib.parse.quote(name)}={urllib.parse.quote(value.encode('utf-8', 'surrogatepass'))}"
                    for name, value in fields.items())
    return client.post(path, data=body, content_type="application/x-www-form-urlencoded")


# not text: refused as not a number first (or, being required, as missing)
NUMBER_FIELDS = {"duration_seconds", "batch-duration_seconds", "monthly_budget"}


def check(response, fields: dict[str, str], path: str = "") -> None:
    assert response.status_code < 500, (response.status_code, fields)
    page = response.get_data(as_text=True)
    with_nul = [name for name, value in fields.items() if "\x00" in value]
    if with_nul:
        if path == "/billing/change-plan":
            # a one-button form (the plan is a hidden choice): refused back to the pricing page
            assert response.status_code == 302 and response.headers["Location"].endswith("/pricing")
            return
        assert response.status_code == 422, (response.status_code, fields)
        for name in with_nul:
            # the field is marked invalid, with its error beside it
            assert re.search(rf'<(input|select|textarea)[^>]*(aria-invalid="true"[^>]*id="{name}"|id="{name}"[^>]*'
                             rf'aria-invalid="true")', page), name
            if name not in NUMBER_FIELDS:
                assert f"This field {UNSAFE_TEXT}." in page, name


ANONYMOUS_FORMS = {
    "/signup": ("email", "password", "full_name"),
    "/login": ("email", "password"),
    "/forgot": ("email",),
    "/reset?token=not-a-real-token": ("new_password", "confirm"),
}


@pytest.mark.parametrize("path", list(ANONYMOUS_FORMS))
def test_anonymous_forms_survive_hostile_text(app, path):
    names = ANONYMOUS_FORMS[path]

    @FUZZ
    @given(values=st.lists(hostile_text, min_size=len(names), max_size=len(names)))
    def run(values):
        client = client_with_own_ip(app)
        fields = dict(zip(names, values), csrf_token=csrf_token(client, "/login"))
        check(post_form(client, path, fields), fields)

    run()


@pytest.fixture(scope="module")
def signed_in(app, connect):
    """A signed-in browser (Pro, plenty of credits) and its CSRF token."""
    client = client_with_own_ip(app)
    email = unique_email("formfuzz")
    token = csrf_token(client, "/signup")
    response = post_form(client, "/signup", {"email": email, "password": STRONG_PASSWORD, "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)
    admin = connect("postgres")
    uid = admin.execute("select id from users where email = %s", (email,)).fetchone()["id"]
    set_tier(admin, uid, "pro")
    admin.execute("select app.grant_credits(%s, 10000, 'admin_grant', %s)", (uid, f"formfuzz:{uid}"))
    return client, csrf_token(client, "/dashboard")


SIGNED_IN_FORMS = {
    "/account": ("current_password", "new_password", "confirm"),
    "/dashboard/generate": ("platform", "topic", "duration_seconds"),
    "/billing/change-plan": ("tier",),
    "/webhooks": ("url", "description"),
    "/keys": ("name", "monthly_budget"),
    "/dashboard/batch": ("batch-topics", "batch-platform", "batch-duration_seconds"),
}


@pytest.mark.parametrize("path", list(SIGNED_IN_FORMS))
def test_signed_in_forms_survive_hostile_text(signed_in, path):
    client, token = signed_in
    names = SIGNED_IN_FORMS[path]

    @FUZZ
    @given(values=st.lists(hostile_text, min_size=len(names), max_size=len(names)))
    def run(values):
        fields = dict(zip(names, values), csrf_token=token)
        check(post_form(client, path, fields), fields, path)

    run()
    # still signed in: nothing above ended the session or changed the password
    assert client.get("/dashboard").status_code == 200


def test_a_nul_in_a_valid_looking_form_is_refused_beside_its_field(app, connect):
    """The exact 500s from the issue: a NUL in the login, forgot, signup name and topic fields."""
    client = client_with_own_ip(app)
    token = csrf_token(client, "/login")
    for path, fields, field in [
        ("/login", {"email": "a\x00@example.com", "password": STRONG_PASSWORD}, "email"),
        ("/forgot", {"email": "nul\x00@example.com"}, "email"),
        ("/signup", {"email": unique_email("nulname"), "password": STRONG_PASSWORD, "full_name": "Ada\x00"},
         "full_name"),
    ]:
        response = post_form(client, path, {**fields, "csrf_token": token})
        assert response.status_code == 422, (path, response.status_code)
        assert f"This field {UNSAFE_TEXT}." in response.get_data(as_text=True)
    assert connect("postgres").execute("select count(*) as n from users where full_name like 'Ada%%'"
                                       ).fetchone()["n"] == 0


# -- JSON fields ------------------------------------------------------------------------------

JSON_ROUTES = {
    "/v1/auth/signup": {"email": "x@example.com", "password": STRONG_PASSWORD, "full_name": "X",
                        "referral_code": "nosuchcode"},
    "/v1/auth/login": {"email": "x@example.com", "password": STRONG_PASSWORD},
    "/v1/auth/password/forgot": {"email": "x@example.com"},
    "/v1/auth/password/reset": {"token": "t" * 20, "new_password": STRONG_PASSWORD},
    "/v1/auth/verify": {"token": "t" * 20},
    "/v1/auth/refresh": {"refresh_token": "r" * 40},
    "/v1/auth/logout": {"refresh_token": "r" * 40},
    "/v1/auth/password": {"current_password": STRONG_PASSWORD, "new_password": STRONG_PASSWORD + "!"},
    "/v1/keys": {"name": "fuzzed key"},
    "/v1/shorts/generate": {"platform": "tiktok", "topic": "the history of coffee", "duration_seconds": 15},
    "/v1/shorts/batch": {"items": [{"platform": "tiktok", "topic": "the history of coffee"}]},
    "/v1/billing/create-checkout-session": {"tier": "starter"},
    "/v1/webhooks/endpoints": {"url": "https://hooks.example.org/in", "description": "fuzzed endpoint",
                               "event_types": ["render.completed"]},
}


@pytest.fixture(scope="module")
def api_user(app, connect):
    tokens = api_signup(client_with_own_ip(app))
    admin = connect("postgres")
    set_tier(admin, tokens["user"]["id"], "pro")
    admin.execute("select app.grant_credits(%s, 10000, 'admin_grant', %s)",
                  (tokens["user"]["id"], f"jsonfuzz:{tokens['user']['id']}"))
    return bearer(tokens["access_token"])


@pytest.mark.parametrize("route", list(JSON_ROUTES))
def test_json_fields_with_hostile_text_get_a_422_naming_the_field(app, api_user, route):
    valid = JSON_ROUTES[route]

    @FUZZ
    @given(field=st.sampled_from(sorted(valid)), value=hostile_text, nested=st.booleans())
    def run(field, value, nested):
        body = {**valid, **({"email": unique_email("jsonfuzz")} if "email" in valid else {}),
                field: {"deep": [value]} if nested else value}
        raw = json.dumps(body)  # ensure_ascii: a lone surrogate travels as its "\ud800" escape
        response = client_with_own_ip(app).post(route, data=raw, content_type="application/json", headers=api_user)
        assert response.status_code < 500, (response.status_code, body)
        if response.status_code >= 400:
            assert "detail" in response.get_json()
        if unsafe(value):
            assert response.status_code == 422
            assert response.get_json() == {"detail": f"{field}: {UNSAFE_TEXT}", "field": field}

    run()
