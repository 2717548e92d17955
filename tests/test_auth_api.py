"""/v1/auth and /v1/keys over real HTTP requests (Flask test client) and a real database."""
from __future__ import annotations

import base64
import json
import statistics
import time
import uuid

import jwt
import psycopg
import pytest
from argon2 import PasswordHasher

from web import create_app
from web.config import role_dsn

from .conftest import STRONG_PASSWORD, api_signup, bearer, client_with_own_ip, set_tier, unique_email, unique_ip


# -- signup --------------------------------------------------------------------------------

def test_signup_returns_tokens_and_a_free_account(api):
    email = unique_email("New.Person").replace("example.com", "Example.COM")
    body = api_signup(api, email=email, full_name="  New Person ")
    assert body["token_type"] == "bearer" and body["expires_in"] == 86400
    assert body["access_token"] and body["refresh_token"]
    user = body["user"]
    assert user["email"] == email.replace("Example.COM", "example.com")  # domain normalised
    assert user["full_name"] == "New Person"
    assert user["tier"] == "free" and user["credits_remaining"] == 5 and user["is_verified"] is False
    assert set(user) == {"id", "email", "full_name", "is_verified", "tier", "credits_remaining"}


def test_walkthrough_password_is_accepted(api):
    assert api_signup(api, password="securepass123")["user"]["credits_remaining"] == 5


@pytest.mark.parametrize("payload, field", [
    ({"password": STRONG_PASSWORD}, "email"),
    ({"email": "a@example.com"}, "password"),
    ({"email": 42, "password": STRONG_PASSWORD}, "email"),
    ({"email": "a@example.com", "password": ["x"]}, "password"),
    ({"email": "not-an-email", "password": STRONG_PASSWORD}, "email"),
    ({"email": "a@example.com", "password": "short1!"}, "password"),
    ({"email": "a@example.com", "password": "x" * 129}, "password"),
    ({"email": "a@example.com", "password": "password"}, "password"),
    ({"email": "a@example.com", "password": "iloveyou"}, "password"),
    ({"email": "a@example.com", "password": "elizabeth"}, "password"),
    ({"email": "a@example.com", "password": STRONG_PASSWORD, "full_name": 7}, "full_name"),
    ({"email": "a@example.com", "password": STRONG_PASSWORD, "full_name": "n" * 201}, "full_name"),
    ({"email": "a\x00b@example.com", "password": STRONG_PASSWORD}, "email"),
])
def test_signup_rejects_bad_fields_naming_them(api, connect, payload, field):
    before = connect("postgres").execute("select count(*) as n from users").fetchone()["n"]
    response = api.post("/v1/auth/signup", json=payload)
    assert response.status_code == 422, response.get_json()
    body = response.get_json()
    assert body["detail"].startswith(f"{field}:")
    assert connect("postgres").execute("select count(*) as n from users").fetchone()["n"] == before


def test_common_password_message_says_why(api):
    detail = api.post("/v1/auth/signup", json={"email": unique_email(), "password": "password"}).get_json()["detail"]
    assert "common" in detail


@pytest.mark.parametrize("raw, content_type", [
    (b"{not json", "application/json"),
    (b"[1, 2]", "application/json"),
    (b"", "application/json"),
    (b"\xff\xfe\xfd", "application/json"),
    (b"[" * 100_000 + b"]" * 100_000, "application/json"),
    (b"email=a@example.com", "application/x-www-form-urlencoded"),
])
def test_signup_rejects_malformed_bodies(api, raw, content_type):
    response = api.post("/v1/auth/signup", data=raw, content_type=content_type)
    assert response.status_code == 422
    assert "detail" in response.get_json()


def test_duplicate_email_in_any_case_is_409(api):
    email = unique_email("dup")
    api_signup(api, email=email)
    response = api.post("/v1/auth/signup", json={"email": email.upper().replace("EXAMPLE.COM", "example.com"),
                                                  "password": STRONG_PASSWORD})
    assert response.status_code == 409
    assert response.get_json() == {"detail": "An account with this email already exists."}


def test_oversized_body_is_413(api):
    response = api.post("/v1/auth/signup", data=b"{" + b" " * (1024 * 1024 + 10) + b"}",
                        content_type="application/json")
    assert response.status_code == 413


# -- login ---------------------------------------------------------------------------------

def test_login_returns_tokens_and_stamps_last_login(api, connect):
    email = unique_email()
    user_id = api_signup(api, email=email)["user"]["id"]
    response = api.post("/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD})
    assert response.status_code == 200
    body = response.get_json()
    assert body["user"]["id"] == user_id and body["access_token"]
    row = connect("postgres").execute("select last_login from users where id = %s", (user_id,)).fetchone()
    assert row["last_login"] is not None


def test_login_email_is_case_insensitive(api):
    email = unique_email("Mixed")
    api_signup(api, email=email)
    assert api.post("/v1/auth/login", json={"email": email.upper(), "password": STRONG_PASSWORD}).status_code == 200


def test_unknown_email_and_wrong_password_look_the_same(api):
    email = unique_email()
    api_signup(api, email=email)
    wrong_password = api.post("/v1/auth/login", json={"email": email, "password": "not-the-password-1"})
    unknown_email = api.post("/v1/auth/login", json={"email": unique_email(), "password": "not-the-password-1"})
    assert wrong_password.status_code == unknown_email.status_code == 401
    assert wrong_password.get_json() == unknown_email.get_json() == {"detail": "Invalid email or password."}


def test_unknown_email_spends_a_password_verification(app):
    """The unknown-email answer is not measurably faster than a wrong password: both
    run one argon2 verify (medians of 7, compared loosely to stay robust on a busy machine)."""
    client = client_with_own_ip(app)
    email = unique_email()
    api_signup(client, email=email)

    def median_seconds(login_email: str) -> float:
        times = []
        for _ in range(7):
            started = time.perf_counter()
            assert client.post("/v1/auth/login", json={"email": login_email, "password": "wrong-pass-9"}
                               ).status_code == 401
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    wrong = median_seconds(email)
    unknown = median_seconds(unique_email())
    assert unknown > 0.6 * wrong, (unknown, wrong)


def test_disabled_account_gets_403_and_its_tokens_stop(api, connect):
    email = unique_email()
    tokens = api_signup(api, email=email)
    connect("postgres").execute("select app.set_user_active(%s, false)", (email,))
    assert api.post("/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD}).status_code == 403
    assert api.get("/v1/auth/me", headers=bearer(tokens["access_token"])).status_code == 401
    assert api.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401


def test_login_rehashes_with_current_parameters(api, connect):
    email = unique_email()
    user_id = api_signup(api, email=email)["user"]["id"]
    admin = connect("postgres")
    weak = PasswordHasher(memory_cost=8192, time_cost=1, parallelism=1).hash(STRONG_PASSWORD)
    admin.execute("update users set password_hash = %s where id = %s", (weak, user_id))
    assert api.post("/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD}).status_code == 200
    stored = admin.execute("select password_hash from users where id = %s", (user_id,)).fetchone()["password_hash"]
    assert stored != weak and "m=19456,t=2,p=1" in stored


def test_password_changed_during_login_refuses_it(api, connect, monkeypatch):
    """The login whose password was verified before a password change (which moves the
    session version on) is refused: no tokens, no refresh token stored, and the attempt
    still counts as a failure."""
    from web import accounts

    email = unique_email()
    user_id = api_signup(api, email=email)["user"]["id"]
    admin = connect("postgres")

    def verify_while_the_password_changes(stored_hash, password):
        admin.execute("update users set session_version = session_version + 1 where id = %s", (user_id,))
        return True

    monkeypatch.setattr(accounts.passwords, "verify_password", verify_while_the_password_changes)
    response = api.post("/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD})
    assert response.status_code == 401 and "access_token" not in response.get_json()
    counts = admin.execute(
        "select (select count(*) from refresh_tokens where user_id = %s) as tokens, "
        "(select count(*) from login_attempts where kind = 'login' and lower(email) = lower(%s)) as failures",
        (user_id, email)).fetchone()
    assert counts == {"tokens": 1, "failures": 1}  # the one token is signup's


# -- one email normalisation for every input (issue 15, item 6) ----------------------------

def idn_address(local: str) -> tuple[str, str]:
    """The same address at an internationalised domain, as typed in ASCII (IDNA) and in Unicode."""
    local = f"{local}-{uuid.uuid4().hex[:8]}"
    return f"{local}@xn--bcher-kva.de", f"{local}@bücher.de"


@pytest.mark.parametrize("registered, signs_in_with", [
    pytest.param("ascii", "ascii", id="idn-as-registered"),
    pytest.param("ascii", "unicode", id="idn-registered-ascii-signs-in-unicode"),
    pytest.param("unicode", "ascii", id="idn-registered-unicode-signs-in-ascii"),
])
def test_login_with_an_internationalised_domain_in_either_form(api, registered, signs_in_with):
    forms = dict(zip(("ascii", "unicode"), idn_address("erin")))
    user = api_signup(api, email=forms[registered])["user"]
    assert user["email"] == forms["unicode"]  # stored in email_validator's normalised form
    response = api.post("/v1/auth/login", json={"email": forms[signs_in_with], "password": STRONG_PASSWORD})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["user"]["id"] == user["id"]


@pytest.mark.parametrize("registered, signs_in_with", [
    pytest.param("nfd", "nfd", id="nfd-as-registered"),
    pytest.param("nfd", "nfc", id="nfd-registered-nfc-signs-in"),
    pytest.param("nfc", "nfd", id="nfc-registered-nfd-signs-in"),
])
def test_login_with_composed_or_decomposed_accents(api, registered, signs_in_with):
    tag = uuid.uuid4().hex[:8]
    forms = {"nfd": f"fre\u0301d-{tag}@example.com", "nfc": f"fr\u00e9d-{tag}@example.com"}
    user = api_signup(api, email=forms[registered])["user"]
    assert user["email"] == forms["nfc"]
    response = api.post("/v1/auth/login", json={"email": forms[signs_in_with], "password": STRONG_PASSWORD})
    assert response.status_code == 200, response.get_json()


def test_forgot_password_finds_the_account_in_any_form_of_its_address(api, connect):
    ascii_form, unicode_form = idn_address("reset")
    user_id = api_signup(api, email=unicode_form)["user"]["id"]
    assert api.post("/v1/auth/password/forgot", json={"email": ascii_form.upper()}).status_code == 202
    queued = connect("postgres").execute("select count(*) as n from email_outbox where user_id = %s and kind = 'reset'",
                                         (user_id,)).fetchone()["n"]
    assert queued == 1


def test_the_throttle_counts_every_form_of_an_address_as_one(app):
    """Failures typed in the ASCII form count against the Unicode form too."""
    client = client_with_own_ip(app)
    ascii_form, unicode_form = idn_address("count")
    api_signup(client, email=unicode_form)
    assert [fail_login(client, form) for form in [ascii_form, unicode_form] * 5] == [401] * 10
    assert fail_login(client, unicode_form) == 429


@pytest.mark.parametrize("path", ["/v1/auth/login", "/v1/auth/password/forgot"])
def test_an_address_that_is_not_one_is_422_naming_the_field(api, path):
    response = api.post(path, json={"email": "nobody-at-all", "password": "whatever-it-is-1"})
    assert response.status_code == 422 and response.get_json()["detail"].startswith("email:")


# -- throttling ----------------------------------------------------------------------------

def fail_login(client, email: str) -> int:
    return client.post("/v1/auth/login", json={"email": email, "password": "wrong-password-1"}).status_code


def test_eleventh_failure_is_throttled_then_the_window_passes(app, connect):
    client = client_with_own_ip(app)
    email = unique_email()
    api_signup(client, email=email)
    assert [fail_login(client, email) for _ in range(10)] == [401] * 10
    throttled = client.post("/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD})
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["Retry-After"]) <= 900
    # the window passes (moved in the database rather than waited for)
    connect("postgres").execute("update login_attempts set attempted_at = attempted_at - interval '16 minutes' "
                                "where email = lower(%s)", (email,))
    assert client.post("/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD}).status_code == 200


def test_two_app_instances_share_the_throttle(app, database_dsn):
    other = create_app({"TESTING": True, "DATABASE_URL": database_dsn, "SECRET_KEY": app.config["SECRET_KEY"],
                        "APP_DATABASE_URL": role_dsn(database_dsn, "sg_app")})
    try:
        first = client_with_own_ip(app)
        second = client_with_own_ip(other)
        email = unique_email()
        api_signup(first, email=email)
        statuses = [fail_login(first if i % 2 else second, email) for i in range(10)]
        assert statuses == [401] * 10
        assert fail_login(second, email) == 429
        assert fail_login(first, email) == 429
    finally:
        other.extensions["sg_pool"].close()


def test_fifty_failures_from_one_ip_throttle_that_ip(app):
    ip = unique_ip()
    client = client_with_own_ip(app, ip)
    assert [fail_login(client, unique_email()) for _ in range(50)] == [401] * 50
    assert fail_login(client, unique_email()) == 429
    assert fail_login(client_with_own_ip(app), unique_email()) == 401


def test_a_success_resets_the_email_counter(api):
    email = unique_email()
    api_signup(api, email=email)
    for _ in range(9):
        fail_login(api, email)
    assert api.post("/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD}).status_code == 200
    assert [fail_login(api, email) for _ in range(9)] == [401] * 9


def test_attempts_older_than_a_day_are_purged(connect):
    """The worker's hourly purge forgets attempts after a day and keeps the throttle's."""
    admin, worker = connect("postgres"), connect("sg_worker")
    old, recent = unique_email("old"), unique_email("recent")
    admin.execute("insert into login_attempts (email, client_ip, kind, attempted_at) values "
                  "(%s, '203.0.113.9', 'login', now() - interval '25 hours'), "
                  "(%s, '203.0.113.9', 'reset', now() - interval '2 days'), "
                  "(%s, '203.0.113.9', 'login', now() - interval '23 hours')", (old, old, recent))
    assert worker.execute("select app.purge_login_attempts() as n").fetchone()["n"] >= 2
    remaining = admin.execute("select email from login_attempts where email in (%s, %s)", (old, recent)).fetchall()
    assert [r["email"] for r in remaining] == [recent]
    assert worker.execute("select app.purge_login_attempts() as n").fetchone()["n"] == 0
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        connect("sg_app").execute("select app.purge_login_attempts()")


# -- tokens --------------------------------------------------------------------------------

def test_me_returns_the_account(api):
    tokens = api_signup(api)
    response = api.get("/v1/auth/me", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200
    assert response.get_json() == tokens["user"]


def forged(app, claims: dict, secret: str | None = None, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret or app.config["SECRET_KEY"], algorithm=algorithm)


def claims_for(user_id: str, token_type: str = "access", **overrides) -> dict:
    now = int(time.time())
    return {"sub": user_id, "type": token_type, "iat": now, "exp": now + 600, "jti": uuid.uuid4().hex,
            "ver": 0, **overrides}


def unsigned_token(claims: dict) -> str:
    def part(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@pytest.mark.parametrize("make_token", [
    pytest.param(lambda app, uid, tokens: forged(app, claims_for(uid, exp=int(time.time()) - 1)), id="expired"),
    pytest.param(lambda app, uid, tokens: tokens["access_token"][:-4] + "AAAA", id="tampered-signature"),
    pytest.param(lambda app, uid, tokens: ".".join([tokens["access_token"].split(".")[0],
                                                    base64.urlsafe_b64encode(json.dumps(
                                                        claims_for(str(uuid.uuid4()))).encode()).rstrip(b"=").decode(),
                                                    tokens["access_token"].split(".")[2]]), id="tampered-payload"),
    pytest.param(lambda app, uid, tokens: unsigned_token(claims_for(uid)), id="alg-none"),
    pytest.param(lambda app, uid, tokens: forged(app, claims_for(uid), secret="another-secret-" * 3),
                 id="other-secret"),
    pytest.param(lambda app, uid, tokens: forged(app, claims_for(uid), algorithm="HS512"), id="other-algorithm"),
    pytest.param(lambda app, uid, tokens: tokens["refresh_token"], id="refresh-as-access"),
    pytest.param(lambda app, uid, tokens: forged(app, {k: v for k, v in claims_for(uid).items() if k != "jti"}),
                 id="missing-claim"),
    pytest.param(lambda app, uid, tokens: forged(app, claims_for("not-a-uuid")), id="bad-subject"),
    pytest.param(lambda app, uid, tokens: forged(app, claims_for(uid, ver="0")), id="bad-version"),
    pytest.param(lambda app, uid, tokens: "garbage", id="garbage"),
])
def test_bad_access_tokens_are_401(app, api, make_token):
    tokens = api_signup(api)
    token = make_token(app, tokens["user"]["id"], tokens)
    response = api.get("/v1/auth/me", headers=bearer(token))
    assert response.status_code == 401
    assert response.get_json() == {"detail": "Invalid or expired token."}
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "Token abc"])
def test_missing_or_wrong_authorization_is_401(api, header):
    headers = {"Authorization": header} if header is not None else {}
    response = api.get("/v1/auth/me", headers=headers)
    assert response.status_code == 401
    assert "detail" in response.get_json()


def test_refresh_rotates_and_reuse_revokes_the_family(api, connect):
    first = api_signup(api)
    rotated = api.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert rotated.status_code == 200
    second = rotated.get_json()
    assert second["refresh_token"] != first["refresh_token"]
    assert api.get("/v1/auth/me", headers=bearer(second["access_token"])).status_code == 200
    # the used token comes back after the 10 s grace for concurrent requests (tests/test_sessions.py):
    # 401, and the whole family dies with it
    connect("postgres").execute("update refresh_tokens set revoked_at = revoked_at - interval '11 seconds' "
                                "where token_hash = sha256(convert_to(%s, 'UTF8'))", (first["refresh_token"],))
    replay = api.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401
    assert api.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}).status_code == 401


def test_access_token_is_not_a_refresh_token(api):
    tokens = api_signup(api)
    assert api.post("/v1/auth/refresh", json={"refresh_token": tokens["access_token"]}).status_code == 401


@pytest.mark.parametrize("payload", [{}, {"refresh_token": 5}, {"refresh_token": None}])
def test_refresh_validates_its_body(api, payload):
    assert api.post("/v1/auth/refresh", json=payload).status_code == 422


def test_refresh_of_an_expired_or_unknown_token_is_401(app, api):
    tokens = api_signup(api)
    uid = tokens["user"]["id"]
    expired = forged(app, claims_for(uid, "refresh", exp=int(time.time()) - 5))
    never_issued = forged(app, claims_for(uid, "refresh"))
    assert api.post("/v1/auth/refresh", json={"refresh_token": expired}).status_code == 401
    assert api.post("/v1/auth/refresh", json={"refresh_token": never_issued}).status_code == 401


def test_logout_revokes_the_refresh_token(api):
    tokens = api_signup(api)
    response = api.post("/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]},
                        headers=bearer(tokens["access_token"]))
    assert response.status_code == 204
    assert api.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401


def test_logout_cannot_touch_another_users_tokens(api):
    victim = api_signup(api)
    attacker = api_signup(api)
    api.post("/v1/auth/logout", json={"refresh_token": victim["refresh_token"]},
             headers=bearer(attacker["access_token"]))
    assert api.post("/v1/auth/refresh", json={"refresh_token": victim["refresh_token"]}).status_code == 200


def test_password_change_ends_every_other_session(api):
    email = unique_email()
    old = api_signup(api, email=email)
    other_device = api.post("/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD}).get_json()
    response = api.post("/v1/auth/password", headers=bearer(old["access_token"]),
                        json={"current_password": STRONG_PASSWORD, "new_password": "a-brand-new-phrase-77"})
    assert response.status_code == 200
    fresh = response.get_json()
    for stale in (old, other_device):
        assert api.get("/v1/auth/me", headers=bearer(stale["access_token"])).status_code == 401
        assert api.post("/v1/auth/refresh", json={"refresh_token": stale["refresh_token"]}).status_code == 401
    assert api.get("/v1/auth/me", headers=bearer(fresh["access_token"])).status_code == 200
    assert api.post("/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD}).status_code == 401
    assert api.post("/v1/auth/login", json={"email": email, "password": "a-brand-new-phrase-77"}).status_code == 200


@pytest.mark.parametrize("payload, status", [
    ({"current_password": "wrong-password-x", "new_password": "a-brand-new-phrase-77"}, 403),
    ({"current_password": STRONG_PASSWORD, "new_password": "password"}, 422),
    ({"current_password": STRONG_PASSWORD, "new_password": "short"}, 422),
    ({"current_password": STRONG_PASSWORD}, 422),
    ({"new_password": "a-brand-new-phrase-77"}, 422),
])
def test_password_change_refusals_change_nothing(api, payload, status):
    tokens = api_signup(api)
    response = api.post("/v1/auth/password", headers=bearer(tokens["access_token"]), json=payload)
    assert response.status_code == status
    assert api.get("/v1/auth/me", headers=bearer(tokens["access_token"])).status_code == 200


# -- API keys ------------------------------------------------------------------------------

def test_free_user_cannot_create_keys(api):
    tokens = api_signup(api)
    response = api.post("/v1/keys", json={"name": "ci"}, headers=bearer(tokens["access_token"]))
    assert response.status_code == 403
    assert "/pricing" in response.get_json()["detail"]


@pytest.fixture
def pro_user(api, connect):
    tokens = api_signup(api)
    set_tier(connect("postgres"), tokens["user"]["id"], "pro")
    return tokens


def test_api_key_lifecycle(api, connect, pro_user):
    auth = bearer(pro_user["access_token"])
    created = api.post("/v1/keys", json={"name": "  My server "}, headers=auth)
    assert created.status_code == 201
    key = created.get_json()
    assert key["key"].startswith("sk_") and key["prefix"] == key["key"][:10] and key["name"] == "My server"
    listed = api.get("/v1/keys", headers=auth).get_json()["keys"]
    assert [k["id"] for k in listed] == [key["id"]] and "key" not in listed[0] and listed[0]["last_used"] is None
    # the key stands in for a JWT, and marks itself used
    me = api.get("/v1/auth/me", headers=bearer(key["key"]))
    assert me.status_code == 200 and me.get_json()["id"] == pro_user["user"]["id"]
    assert api.get("/v1/keys", headers=auth).get_json()["keys"][0]["last_used"] is not None
    # only the hash is stored
    stored = connect("postgres").execute("select key_hash from api_keys where id = %s", (key["id"],)).fetchone()
    assert key["key"].encode() not in bytes(stored["key_hash"])
    assert api.delete(f"/v1/keys/{key['id']}", headers=auth).status_code == 204
    assert api.get("/v1/auth/me", headers=bearer(key["key"])).status_code == 401
    assert api.get("/v1/keys", headers=auth).get_json()["keys"] == []
    assert api.delete(f"/v1/keys/{key['id']}", headers=auth).status_code == 404


def test_unknown_api_key_is_401(api):
    assert api.get("/v1/auth/me", headers=bearer("sk_" + "x" * 43)).status_code == 401


def test_key_stops_working_after_downgrade(api, connect, pro_user):
    key = api.post("/v1/keys", json={"name": "k"}, headers=bearer(pro_user["access_token"])).get_json()["key"]
    set_tier(connect("postgres"), pro_user["user"]["id"], "free")
    assert api.get("/v1/auth/me", headers=bearer(key)).status_code == 403


@pytest.mark.parametrize("payload", [{}, {"name": ""}, {"name": "   "}, {"name": "n" * 101}, {"name": 3}])
def test_key_name_is_validated(api, pro_user, payload):
    response = api.post("/v1/keys", json=payload, headers=bearer(pro_user["access_token"]))
    assert response.status_code == 422 and response.get_json()["detail"].startswith("name:")


@pytest.mark.parametrize("key_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000", "1; drop table users"])
def test_revoking_an_unknown_key_is_404(api, pro_user, key_id):
    assert api.delete(f"/v1/keys/{key_id}", headers=bearer(pro_user["access_token"])).status_code == 404


# -- cross-tenant --------------------------------------------------------------------------

def test_user_b_never_sees_user_a(api, connect):
    admin = connect("postgres")
    a, b = api_signup(api), api_signup(api)
    for user in (a, b):
        set_tier(admin, user["user"]["id"], "agency")
    a_key = api.post("/v1/keys", json={"name": "a's key"}, headers=bearer(a["access_token"])).get_json()
    b_auth = bearer(b["access_token"])
    assert api.get("/v1/auth/me", headers=b_auth).get_json()["id"] == b["user"]["id"]
    assert api.get("/v1/keys", headers=b_auth).get_json()["keys"] == []
    assert api.delete(f"/v1/keys/{a_key['id']}", headers=b_auth).status_code == 404
    assert api.get("/v1/auth/me", headers=bearer(a_key["key"])).get_json()["id"] == a["user"]["id"]
