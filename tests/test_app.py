"""The Flask layer's plumbing: health check, JSON errors, identity scoping in tx()."""
from __future__ import annotations

from flask import jsonify

from web import create_app, db
from web.config import role_dsn


def test_healthz_checks_the_database_and_reports_the_queue(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert set(body["queue"]) == {"queued", "rendering"} and body["queue"]["queued"] >= 0


def test_unknown_api_route_is_a_json_404(client):
    response = client.get("/v1/no/such/thing")
    assert response.status_code == 404
    assert set(response.get_json()) == {"detail"}


def test_unknown_page_is_an_html_404_for_browsers(client):
    response = client.get("/no/such/page", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert response.mimetype == "text/html" and b"404" in response.data


def test_database_refusals_map_to_http(database_dsn, make_user):
    uid = make_user(credits=0)
    app = create_app({"TESTING": True, "DATABASE_URL": database_dsn,
                      "APP_DATABASE_URL": role_dsn(database_dsn, "sg_app")})

    @app.get("/v1/_test/spend")
    def spend():
        with db.tx(uid) as cur:
            cur.execute("select * from app.spend_credit_and_create_job('tiktok', 'from flask')")
            return jsonify(cur.fetchone())

    response = app.test_client().get("/v1/_test/spend")
    app.extensions["sg_pool"].close()
    assert response.status_code == 402
    assert response.get_json() == {"detail": "Insufficient credits. Please upgrade your plan.",
                                   "upgrade_url": "/pricing"}


def test_tx_sets_the_user_for_that_transaction_only(app, make_user):
    uid = make_user()
    with app.app_context():
        with db.tx(uid) as cur:
            cur.execute("select app.current_user_id() as uid")
            assert cur.fetchone()["uid"] == uid
        with db.tx() as cur:
            cur.execute("select app.current_user_id() as uid, (select count(*) from users) as visible")
            assert cur.fetchone() == {"uid": None, "visible": 0}


def test_unreachable_database_is_a_503_with_retry_after(database_dsn):
    broken = create_app({"TESTING": True, "DATABASE_URL": database_dsn,
                         "APP_DATABASE_URL": "postgresql://sg_app@127.0.0.1:1/nowhere?connect_timeout=1"})
    broken.extensions["sg_pool"]._max_size = 1
    response = broken.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    assert "detail" in response.get_json()
    broken.extensions["sg_pool"].close()


def test_the_api_ignores_the_browser_session_cookie(app, client):
    """/v1 is bearer-authenticated: a signed-in browser's cookie neither authenticates a
    request there nor comes back refreshed."""
    client.get("/login")  # a page: the browser now holds a session cookie (CSRF token)
    assert client.get_cookie(app.config["SESSION_COOKIE_NAME"]) is not None
    response = client.get("/v1/user/credits")
    assert response.status_code == 401
    assert "Set-Cookie" not in response.headers and "Cookie" not in response.vary
