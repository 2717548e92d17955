"""API key scopes and monthly credit budgets (sql/36_api_keys.sql): a key does only what
its scopes allow (403 naming the missing one), and its budget holds under concurrency,
enforced in the spend's own transaction."""
from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from psycopg.rows import dict_row

from web import create_app
from web.config import role_dsn
from web.migrate import ROLES_FILE, _run_sql_file, migrate, rollback_all

from .conftest import (PASSWORD_HASH, api_signup, balance, bearer, client_with_own_ip, ledger_sum, set_tier,
                       throwaway_database)
from .test_identity_migrations import _apply

GOOD = {"platform": "tiktok", "topic": "the history of coffee"}


@pytest.fixture(scope="module")
def wide_app(database_dsn, media_root):
    """An app with a connection for each of 30 concurrent requests."""
    app = create_app({"TESTING": True, "DATABASE_URL": database_dsn, "APP_DATABASE_URL": role_dsn(database_dsn, "sg_app"),
                      "MEDIA_ROOT": str(media_root), "DB_POOL_MAX": 40})
    yield app
    app.extensions["sg_pool"].close()


@pytest.fixture
def pro(wide_app, connect):
    """A Pro user with 100 credits and a client of their own."""
    client = client_with_own_ip(wide_app)
    tokens = api_signup(client)
    admin = connect("postgres")
    set_tier(admin, tokens["user"]["id"], "pro")
    admin.execute("select app.grant_credits(%s, 95, 'admin_grant', %s)", (tokens["user"]["id"], f"test:{uuid.uuid4()}"))
    return {"id": tokens["user"]["id"], "auth": bearer(tokens["access_token"]), "client": client}


def new_key(pro, **fields) -> dict:
    response = pro["client"].post("/v1/keys", json={"name": "bot", **fields}, headers=pro["auth"])
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_a_new_key_has_every_scope_and_no_budget_unless_asked(pro):
    key = new_key(pro)
    assert key["scopes"] == ["videos:write", "videos:read", "credits:read", "webhooks:manage"]
    assert key["monthly_budget"] is None and key["budget_used"] == 0
    scoped = new_key(pro, scopes=["credits:read", "videos:read"], monthly_budget=7)
    # kept in the canonical order whatever order they were asked in
    assert scoped["scopes"] == ["videos:read", "credits:read"] and scoped["monthly_budget"] == 7
    listed = {k["id"]: k for k in pro["client"].get("/v1/keys", headers=pro["auth"]).get_json()["keys"]}
    assert listed[scoped["id"]]["scopes"] == ["videos:read", "credits:read"]
    assert "key" not in listed[scoped["id"]]


def test_a_read_only_key_cannot_generate_and_the_403_names_the_scope(pro, connect):
    key = bearer(new_key(pro, scopes=["videos:read"])["key"])
    client = pro["client"]
    refused = client.post("/v1/shorts/generate", json=GOOD, headers=key)
    assert refused.status_code == 403
    assert refused.get_json()["detail"] == "This API key lacks the videos:write scope."
    assert client.post("/v1/shorts/batch", json={"items": [GOOD]}, headers=key).status_code == 403
    assert balance(connect("postgres"), pro["id"]) == 100
    assert client.get("/v1/jobs", headers=key).status_code == 200
    credits = client.get("/v1/user/credits", headers=key)
    assert credits.status_code == 403 and "credits:read" in credits.get_json()["detail"]
    assert client.get("/v1/auth/me", headers=key).status_code == 200


def test_a_write_only_key_cannot_read(pro):
    key = bearer(new_key(pro, scopes=["videos:write"])["key"])
    made = pro["client"].post("/v1/shorts/generate", json=GOOD, headers=key)
    assert made.status_code == 202
    read = pro["client"].get(f"/v1/jobs/{made.get_json()['job_id']}", headers=key)
    assert read.status_code == 403 and "videos:read" in read.get_json()["detail"]


@pytest.mark.parametrize("method, path, body", [
    ("post", "/v1/keys", {"name": "escalate"}),
    ("get", "/v1/keys", None),
    ("get", "/v1/billing/subscription", None),
    ("post", "/v1/billing/cancel", None),
    ("post", "/v1/auth/password", {"current_password": "x", "new_password": "y" * 12}),
])
def test_no_key_manages_keys_billing_or_the_account(pro, method, path, body):
    key = bearer(new_key(pro)["key"])
    response = getattr(pro["client"], method)(path, json=body, headers=key)
    assert response.status_code == 403
    assert "sign in" in response.get_json()["detail"]


@pytest.mark.parametrize("fields, field", [
    ({"scopes": []}, "scopes"),
    ({"scopes": ["videos:delete"]}, "scopes"),
    ({"scopes": ["videos:read", "videos:read"]}, "scopes"),
    ({"scopes": "videos:read"}, "scopes"),
    ({"scopes": [1]}, "scopes"),
    ({"monthly_budget": 0}, "monthly_budget"),
    ({"monthly_budget": -3}, "monthly_budget"),
    ({"monthly_budget": 1_000_001}, "monthly_budget"),
    ({"monthly_budget": 2.5}, "monthly_budget"),
    ({"monthly_budget": True}, "monthly_budget"),
    ({"monthly_budget": "5"}, "monthly_budget"),
])
def test_bad_scopes_or_budgets_are_422_and_make_no_key(pro, fields, field):
    response = pro["client"].post("/v1/keys", json={"name": "bad", **fields}, headers=pro["auth"])
    assert response.status_code == 422 and response.get_json()["field"] == field
    assert pro["client"].get("/v1/keys", headers=pro["auth"]).get_json()["keys"] == []


def test_the_database_refuses_bad_scopes_whatever_the_web_layer_sends(pro, connect):
    app_conn = connect("sg_app")
    for scopes, budget in ((["admin"], None), ([], None), (["videos:read", "videos:read"], None),
                           (["videos:read"], 0)):
        with pytest.raises(psycopg.Error) as refused, app_conn.transaction():
            app_conn.execute("select set_config('app.user_id', %s, true)", (str(pro["id"]),))
            app_conn.execute("select * from app.create_api_key('k', 'sk_abcdefg', %s, %s, %s)",
                             (uuid.uuid4().bytes, scopes, budget))
        assert refused.value.sqlstate == "P0422"


def test_thirty_concurrent_generates_through_a_key_with_a_budget_of_five_make_exactly_five(wide_app, pro, connect):
    key = new_key(pro, scopes=["videos:write"], monthly_budget=5)
    headers = bearer(key["key"])
    start = threading.Barrier(30)
    statuses: list = [None] * 30
    details: set = set()

    def send(index: int) -> None:
        client = client_with_own_ip(wide_app)
        start.wait()
        response = client.post("/v1/shorts/generate", json=GOOD, headers=headers)
        statuses[index] = response.status_code
        if response.status_code != 202:
            details.add(response.get_json()["detail"])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert statuses.count(202) == 5 and statuses.count(403) == 25, statuses
    assert len(details) == 1 and "monthly budget of 5 credits is used up" in details.pop()
    admin = connect("postgres")
    made = admin.execute("select count(*) as n from jobs where api_key_id = %s", (key["id"],)).fetchone()["n"]
    assert made == 5
    assert balance(admin, pro["id"]) == 95 == ledger_sum(admin, pro["id"])
    listed = pro["client"].get("/v1/keys", headers=pro["auth"]).get_json()["keys"]
    assert [k["budget_used"] for k in listed if k["id"] == key["id"]] == [5]
    # the budget is the key's, not the account's
    assert pro["client"].post("/v1/shorts/generate", json=GOOD, headers=pro["auth"]).status_code == 202


def test_a_refunded_video_gives_its_budget_back_and_a_batch_counts_each_item(pro, connect):
    key = new_key(pro, monthly_budget=3)
    headers = bearer(key["key"])
    client, admin = pro["client"], connect("postgres")
    job = client.post("/v1/shorts/generate", json=GOOD, headers=headers).get_json()["job_id"]
    over = client.post("/v1/shorts/batch", json={"items": [GOOD] * 3}, headers=headers)
    assert over.status_code == 403 and "budget" in over.get_json()["detail"]
    assert admin.execute("select app.fail_and_refund(%s, null) as refunded", (job,)).fetchone()["refunded"]
    assert client.post("/v1/shorts/batch", json={"items": [GOOD] * 3}, headers=headers).status_code == 202
    assert client.post("/v1/shorts/generate", json=GOOD, headers=headers).status_code == 403
    assert balance(admin, pro["id"]) == 97 == ledger_sum(admin, pro["id"])


def test_last_month_does_not_count(pro, connect):
    key = new_key(pro, monthly_budget=1)
    headers = bearer(key["key"])
    admin = connect("postgres")
    assert pro["client"].post("/v1/shorts/generate", json=GOOD, headers=headers).status_code == 202
    admin.execute("update jobs set created_at = app.budget_month_start() - interval '1 second' "
                  "where api_key_id = %s", (key["id"],))
    assert pro["client"].post("/v1/shorts/generate", json=GOOD, headers=headers).status_code == 202


def test_jobs_made_with_an_access_token_belong_to_no_key(pro, connect):
    job = pro["client"].post("/v1/shorts/generate", json=GOOD, headers=pro["auth"]).get_json()["job_id"]
    row = connect("postgres").execute("select api_key_id from jobs where id = %s", (job,)).fetchone()
    assert row["api_key_id"] is None


def test_keys_made_before_scopes_keep_every_scope_and_the_api_migrations_roll_back():
    """0080-0083 on a database that already has a key and jobs: the key keeps working
    with every scope and no budget; the plans get their rate limits; all of it rolls
    back and applies again."""
    with throwaway_database("sg_keymig") as dsn:
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as admin:
            _run_sql_file(admin, ROLES_FILE)
            _apply(dsn, before="0080")
            user = admin.execute("insert into users (email, password_hash) values ('old@example.com', %s) "
                                 "returning id", (PASSWORD_HASH,)).fetchone()["id"]
            admin.execute("insert into subscriptions (user_id, tier) values (%s, 'pro')", (user,))
            key = admin.execute("insert into api_keys (user_id, name, prefix, key_hash) values "
                                "(%s, 'old', 'sk_old1234', '\\x01') returning id", (user,)).fetchone()["id"]
            job = admin.execute("insert into jobs (user_id, platform, topic, tier_at_creation) values "
                                "(%s, 'tiktok', 'an old job', 'pro') returning id", (user,)).fetchone()["id"]

            migrate(dsn, environ={})
            row = admin.execute("select scopes, monthly_budget from api_keys where id = %s", (key,)).fetchone()
            assert row == {"scopes": ["videos:write", "videos:read", "credits:read", "webhooks:manage"],
                           "monthly_budget": None}
            assert admin.execute("select api_key_id, batch_id from jobs where id = %s", (job,)).fetchone() == {
                "api_key_id": None, "batch_id": None}
            limits = {r["tier"]: r["n"] for r in admin.execute(
                "select tier, (features ->> 'rate_limit_per_minute')::int as n from plans")}
            assert limits == {"free": 20, "starter": 30, "pro": 60, "agency": 300}

            rollback_all(dsn)
            assert not admin.execute("select 1 from pg_tables where tablename in "
                                     "('idempotency_keys', 'batches', 'rate_limit_windows')").fetchall()
            migrate(dsn, environ={})


# -- the keys page ------------------------------------------------------------------------

def _signed_in_browser(app, connect, tier: str):
    from .test_auth_ui import sign_up

    browser = client_with_own_ip(app)
    email = f"keys-{uuid.uuid4().hex[:10]}@example.com"
    sign_up(browser, email)
    admin = connect("postgres")
    user_id = admin.execute("select id from users where email = %s", (email,)).fetchone()["id"]
    set_tier(admin, user_id, tier)
    return browser, user_id


def _key_form(page: str, **fields) -> dict:
    from .test_auth_ui import csrf_token

    return {"csrf_token": csrf_token(page), "name": "CI server", "scopes": ["videos:write", "videos:read"],
            "monthly_budget": "", **fields}


def test_the_keys_page_offers_an_upgrade_to_plans_without_api_access(app, connect):
    browser, _ = _signed_in_browser(app, connect, "starter")
    page = browser.get("/keys").get_data(as_text=True)
    assert 'id="keys-upgrade"' in page and "Upgrade to Pro" in page and 'action="/keys"' not in page


def test_a_key_made_on_the_page_is_shown_once_and_works(app, connect):
    browser, user_id = _signed_in_browser(app, connect, "pro")
    page = browser.get("/keys").get_data(as_text=True)
    assert 'id="no-keys"' in page and 'id="curl-example"' in page
    created = browser.post("/keys", data=_key_form(page, monthly_budget="3"))
    assert created.status_code == 201 and created.headers["Cache-Control"] == "no-store"
    html = created.get_data(as_text=True)
    key = __import__("re").search(r'id="new-key" class="secret" value="(sk_[^"]+)"', html).group(1)
    assert 'data-copy="#new-key"' in html and f"Bearer {key}" in html
    assert "0 / 3" in html and "videos:write, videos:read" in html and key[:10] + "…" in html

    again = browser.get("/keys").get_data(as_text=True)
    assert key not in again and key[:10] in again  # shown once; the prefix stays
    api = client_with_own_ip(app)
    made = api.post("/v1/shorts/generate", json=GOOD, headers=bearer(key))
    assert made.status_code == 202
    assert api.get("/v1/user/credits", headers=bearer(key)).status_code == 403  # not a scope it was given
    assert "1 / 3" in browser.get("/keys").get_data(as_text=True)


def test_bad_key_forms_are_422_and_make_nothing(app, connect):
    browser, _ = _signed_in_browser(app, connect, "agency")
    page = browser.get("/keys").get_data(as_text=True)
    for fields in ({"scopes": []}, {"scopes": ["videos:delete"]}, {"name": ""}, {"monthly_budget": "0"},
                   {"monthly_budget": "lots"}):
        response = browser.post("/keys", data=_key_form(page, **fields))
        assert response.status_code == 422, fields
        assert 'class="field-error"' in response.get_data(as_text=True)
    assert 'id="no-keys"' in browser.get("/keys").get_data(as_text=True)


def test_revoking_on_the_page_stops_the_key(app, connect):
    from .test_auth_ui import csrf_token

    browser, _ = _signed_in_browser(app, connect, "pro")
    page = browser.get("/keys").get_data(as_text=True)
    html = browser.post("/keys", data=_key_form(page)).get_data(as_text=True)
    key = __import__("re").search(r'value="(sk_[^"]+)"', html).group(1)
    key_id = __import__("re").search(r'data-key-id="([^"]+)"', html).group(1)
    revoked = browser.post(f"/keys/{key_id}/revoke", data={"csrf_token": csrf_token(html)})
    assert revoked.status_code == 302
    assert "Key revoked" in browser.get("/keys").get_data(as_text=True)
    assert client_with_own_ip(app).get("/v1/jobs", headers=bearer(key)).status_code == 401
    assert browser.post(f"/keys/{key_id}/revoke", data={"csrf_token": csrf_token(html)}).status_code == 302
    assert browser.post("/keys/not-a-key/revoke", data={"csrf_token": csrf_token(html)}).status_code == 302
    assert browser.post(f"/keys/{key_id}/revoke", data={}).status_code == 400  # no CSRF token: refused


def test_the_keys_page_needs_a_session(app):
    response = app.test_client().get("/keys")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


# -- in a real browser --------------------------------------------------------------------

CHROMIUM = "/usr/lib/chromium/chromium"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    import shutil
    from pathlib import Path

    return {**browser_type_launch_args,
            "executable_path": CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", "--disable-quic"]}


@pytest.fixture(scope="module")
def live(app):
    """The app served over real HTTP on loopback (pages and API), for the browser."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_a_pro_customer_makes_a_key_in_the_browser_copies_it_and_uses_it(live, page, connect):
    """Sign up, become Pro, create a scoped key with a budget on /keys, copy it with the
    button, use it over HTTP; the batch form shows its cost as topics are typed."""
    import httpx
    from pathlib import Path

    from .test_browser import axe_violations, watch_console

    artifacts = Path(__file__).resolve().parent / "artifacts"
    console = watch_console(page)
    artifacts.mkdir(exist_ok=True)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live)
    page.set_viewport_size({"width": 1280, "height": 900})
    email = f"browser-keys-{uuid.uuid4().hex[:8]}@example.com"
    page.goto(f"{live}/signup")
    page.fill("#email", email)
    page.fill("#password", "velvet-otter-canyon-42")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live}/dashboard")

    page.fill("#batch-topics", "the history of coffee\nwhy cats purr\nhow bees dance")
    cost = page.locator("#batch-cost")
    assert " ".join(cost.inner_text().split()) == "3 videos × 1 credit = 3 credits; you have 5."
    assert page.locator("#batch-submit").inner_text() == "Generate 3 videos"
    page.locator("#batch").screenshot(path=str(artifacts / "batch-form.png"))
    assert axe_violations(page) == []
    page.fill("#batch-topics", "\n".join(f"topic {i}" for i in range(6)))
    assert "1 credit short" in cost.inner_text() and page.locator("#batch-submit").is_disabled()

    page.goto(f"{live}/keys")
    assert page.locator("#keys-upgrade").is_visible()
    assert axe_violations(page) == []
    admin = connect("postgres")
    user_id = admin.execute("select id from users where email = %s", (email,)).fetchone()["id"]
    set_tier(admin, user_id, "pro")
    page.goto(f"{live}/keys")
    page.fill("#name", "Render bot")
    page.uncheck("input[value='webhooks:manage']")
    page.uncheck("input[value='credits:read']")
    page.fill("#monthly_budget", "2")
    page.click("form.key-form button[type=submit]")
    page.locator("#key-created").wait_for()
    page.click("#copy-key")
    page.locator("[data-copied]").filter(has_text="Copied.").wait_for()
    key = page.evaluate("() => navigator.clipboard.readText()")
    assert key.startswith("sk_") and key == page.input_value("#new-key")
    page.screenshot(path=str(artifacts / "keys-created.png"), full_page=True)
    assert axe_violations(page) == []

    with httpx.Client(base_url=live, headers={"Authorization": f"Bearer {key}"}) as http:
        made = [http.post("/v1/shorts/generate", json=GOOD).status_code for _ in range(3)]
        assert made == [202, 202, 403]  # a budget of 2
        assert http.get("/v1/user/credits").status_code == 403  # no credits:read

    page.goto(f"{live}/keys")
    row = page.locator("#keys tbody tr")
    assert row.count() == 1 and "2 / 2" in row.inner_text() and key not in page.content()
    page.screenshot(path=str(artifacts / "keys-list.png"), full_page=True)
    assert axe_violations(page) == []
    page.set_viewport_size({"width": 360, "height": 800})
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")  # no sideways scroll
    page.screenshot(path=str(artifacts / "keys-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#keys button.danger")
    page.wait_for_selector("#no-keys")
    with httpx.Client(base_url=live) as http:
        assert http.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert console == []  # no script refused by the CSP, no error


def test_webhook_endpoints_need_the_webhooks_manage_scope(pro):
    client = pro["client"]
    videos_only = bearer(new_key(pro, scopes=["videos:write", "videos:read"])["key"])
    hooks = bearer(new_key(pro, scopes=["webhooks:manage"])["key"])
    refused = client.get("/v1/webhooks/endpoints", headers=videos_only)
    assert refused.status_code == 403 and "webhooks:manage" in refused.get_json()["detail"]
    assert client.get("/v1/webhooks/deliveries", headers=videos_only).status_code == 403
    assert client.get("/v1/webhooks/endpoints", headers=hooks).status_code == 200
    assert client.get("/v1/jobs", headers=hooks).status_code == 403
