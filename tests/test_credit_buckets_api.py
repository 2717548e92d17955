"""The credit interfaces (issue 19): /v1/user/credits with buckets and expiring_soon,
/v1/credits/statement and /v1/credits/balance?at=, and the billing page's balance, next
expiry, buckets and statement (filter, CSV) — over real HTTP through the Flask client."""
from __future__ import annotations

import csv
import io
import re
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from .conftest import api_signup, bearer, unique_email
from .test_auth_ui import sign_up

DAY = timedelta(days=1)


@pytest.fixture
def admin(connect):
    return connect("postgres")


def grant(admin, uid, amount: int, expires_in: timedelta | None, note: str | None = None) -> None:
    expires_at = None if expires_in is None else datetime.now(timezone.utc) + expires_in
    admin.execute("select * from app.grant_credits(%s, %s, 'admin_grant', %s, note => %s, expires_at => %s)",
                  (uid, amount, f"api:{uuid.uuid4()}", note, expires_at))


@pytest.fixture
def account(api, admin):
    """A confirmed API user with its signup 5 plus 3 expiring in 2 days and 10 that never do."""
    signed = api_signup(api)
    uid = signed["user"]["id"]
    admin.execute("update users set is_verified = true where id = %s", (uid,))
    grant(admin, uid, 3, 2 * DAY)
    grant(admin, uid, 10, None, note="support ticket 7")
    return {"id": uid, "auth": bearer(signed["access_token"])}


def test_user_credits_lists_buckets_in_spend_order_and_what_expires_soon(api, account):
    body = api.get("/v1/user/credits", headers=account["auth"]).get_json()
    assert body["credits_remaining"] == 18
    assert [(b["source"], b["remaining"]) for b in body["buckets"]] == [("operator", 3), ("signup", 5),
                                                                        ("operator", 10)]
    assert body["buckets"][-1]["expires_at"] is None
    assert body["expiring_soon"]["credits"] == 3 and body["expiring_soon"]["within_days"] == 7
    assert body["expiring_soon"]["first_expires_at"] == body["buckets"][0]["expires_at"]


def test_statement_lists_every_movement_with_its_bucket_and_running_balance(api, account):
    generated = api.post("/v1/shorts/generate", json={"platform": "tiktok", "topic": "statement video"},
                         headers=account["auth"])
    assert generated.status_code == 202
    body = api.get("/v1/credits/statement", headers=account["auth"]).get_json()
    moves = body["movements"]
    assert [(m["reason"], m["delta"], m["balance_after"]) for m in moves] == [
        ("signup_grant", 5, 5), ("admin_grant", 3, 8), ("admin_grant", 10, 18), ("render", -1, 17)]
    assert moves[-1]["bucket"]["source"] == "operator" and moves[-1]["bucket"]["expires_at"] is not None
    assert moves[-1]["description"] == "Video: “statement video”"
    assert moves[2]["description"] == "Credits from support (support ticket 7)"
    assert moves[-1]["job_id"] == generated.get_json()["job_id"] and body["truncated"] is False
    # a window keeps the true running balance; `kind` filters
    since = moves[2]["at"]
    window = api.get("/v1/credits/statement", query_string={"from": since}, headers=account["auth"]).get_json()
    assert [(m["reason"], m["balance_after"]) for m in window["movements"]] == [("admin_grant", 18), ("render", 17)]
    spent = api.get("/v1/credits/statement", query_string={"kind": "spent"}, headers=account["auth"]).get_json()
    assert [m["reason"] for m in spent["movements"]] == ["render"]
    before = api.get("/v1/credits/statement", query_string={"to": since}, headers=account["auth"]).get_json()
    assert len(before["movements"]) == 2


@pytest.mark.parametrize("query", [{"from": "yesterday"}, {"to": "2026-13-01"}, {"kind": "stolen"},
                                   {"from": "2026-12-02", "to": "2026-12-01"}, {"from": "1999-01-01"},
                                   {"from": "x" * 500}, {"since": "2026-01-01"}])
def test_statement_refuses_bad_filters_with_a_422(api, account, query):
    response = api.get("/v1/credits/statement", query_string=query, headers=account["auth"])
    assert response.status_code == 422 and response.get_json()["detail"]


def test_balance_at_past_moments(api, account, admin):
    auth = account["auth"]
    moments = []
    for _ in range(3):
        time.sleep(0.01)
        moments.append(datetime.now(timezone.utc))
        time.sleep(0.01)
        assert api.post("/v1/shorts/generate", json={"platform": "tiktok", "topic": "balance at"},
                        headers=auth).status_code == 202
    answers = [api.get("/v1/credits/balance", query_string={"at": m.isoformat()}, headers=auth).get_json()
               for m in moments]
    assert [a["credits_remaining"] for a in answers] == [18, 17, 16]
    assert api.get("/v1/credits/balance", query_string={"at": "2011-01-01"}, headers=auth).get_json() == \
        {"at": "2011-01-01T00:00:00+00:00", "credits_remaining": 0}
    for bad in ({}, {"at": "soon"}, {"at": (datetime.now(timezone.utc) + DAY).isoformat()}):
        response = api.get("/v1/credits/balance", query_string=bad, headers=auth)
        assert response.status_code == 422, bad


def test_another_users_statement_is_never_shown(api, account):
    other = api_signup(api, unique_email("other"))
    body = api.get("/v1/credits/statement", headers=bearer(other["access_token"])).get_json()
    assert [m["reason"] for m in body["movements"]] == ["signup_grant"]


def test_credit_routes_need_a_signed_in_user(api):
    for path in ("/v1/credits/statement", "/v1/credits/balance?at=2026-01-01"):
        assert api.get(path).status_code == 401


# -- the billing page ----------------------------------------------------------------------------

@pytest.fixture
def member(app, admin):
    browser = app.test_client()
    sign_up(browser)
    email = re.search(r'class="email" href="/account">([^<]+)<', browser.get("/dashboard").get_data(as_text=True))[1]
    uid = admin.execute("update users set is_verified = true where email = %s returning id", (email,)).fetchone()["id"]
    grant(admin, uid, 12, 3 * DAY)
    grant(admin, uid, 4, None, note="goodwill")
    browser.uid = uid
    return browser


def test_billing_page_shows_the_next_expiry_the_buckets_and_the_statement(member):
    page = member.get("/billing").get_data(as_text=True)
    assert "21 credits left" in page
    expires = (datetime.now(timezone.utc) + 3 * DAY).strftime("%-d %b %Y")
    assert re.search(rf'id="next-expiry">12 credits expire on {expires}<', page), page
    buckets = re.search(r'id="buckets">(.*?)</table>', page, re.S)[1]
    assert [s for s in re.findall(r'data-source="(\w+)"', buckets)] == ["operator", "signup", "operator"]
    assert "Never" in buckets
    statement = re.search(r'id="statement">(.*?)</table>', page, re.S)[1]
    assert statement.index("+4") < statement.index("+12") < statement.index("Welcome credits")  # newest first


def test_billing_statement_filter_and_csv(member):
    page = member.get("/billing", query_string={"kind": "granted"}).get_data(as_text=True)
    assert page.count("data-reason=") == 3
    none = member.get("/billing", query_string={"from": "2011-01-01", "to": "2011-01-02"}).get_data(as_text=True)
    assert "No credit movements match this filter." in none
    bad = member.get("/billing", query_string={"from": "someday"}).get_data(as_text=True)
    assert 'id="filter-error"' in bad and "ISO 8601" in bad
    response = member.get("/billing/statement.csv", query_string={"kind": "granted"})
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [(r["reason"], r["credits"], r["balance_after"]) for r in rows] == [
        ("signup_grant", "5", "5"), ("admin_grant", "12", "17"), ("admin_grant", "4", "21")]
    assert rows[1]["bucket_expires_at_utc"] and rows[2]["bucket_expires_at_utc"] == ""
    assert rows[2]["description"] == "Credits from support (goodwill)"
    assert member.get("/billing/statement.csv", query_string={"to": "x"}).status_code == 302


def test_the_statement_csv_needs_a_signed_in_user(app):
    response = app.test_client().get("/billing/statement.csv")
    assert response.status_code in (302, 401)
