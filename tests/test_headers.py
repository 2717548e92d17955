"""Security headers on every response (issue 16 item 7): every GET route of the app, as a
visitor and signed in, plus static files, media, API errors and error pages; no page
carries inline script or inline event handlers, which the policy would block anyway."""
from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from web import create_app
from web.config import role_dsn

from .test_auth_ui import sign_up

REQUIRED = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
# routes that need an argument or another party's state; each is requested below with one
NEEDS_ARGUMENTS = re.compile(r"<")


def get_routes(app) -> list[str]:
    """Every GET route without URL arguments (the ones with are covered explicitly)."""
    return sorted({rule.rule for rule in app.url_map.iter_rules()
                   if "GET" in rule.methods and not NEEDS_ARGUMENTS.search(rule.rule)
                   and not rule.rule.startswith("/static")})


def assert_secure(response, where: str) -> None:
    for name, value in REQUIRED.items():
        assert response.headers.get(name) == value, (where, name, response.headers.get(name))
    csp = response.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["frame-ancestors"] == "'none'", where
    assert directives["script-src"] == "'self'", where  # no 'unsafe-inline', no 'unsafe-eval'
    assert "unsafe" not in csp, where
    assert directives["object-src"] == "'none'", where
    permissions = response.headers["Permissions-Policy"]
    assert "camera=()" in permissions and "microphone=()" in permissions and "geolocation=()" in permissions
    assert response.status_code < 500, (where, response.status_code)


class InlineCode(HTMLParser):
    """Collects what a strict CSP would refuse: inline <script> and <style>, on* handlers, style=."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("inline <style>")
        self.found += [f"{tag} {name}=" for name in names if name.startswith("on") or name == "style"]
        for name, value in attrs:
            if name in ("href", "src", "action") and (value or "").strip().lower().startswith("javascript:"):
                self.found.append(f"{tag} {name}=javascript:")


def assert_no_inline_code(response, where: str) -> None:
    if response.mimetype != "text/html":
        return
    parser = InlineCode()
    parser.feed(response.get_data(as_text=True))
    assert parser.found == [], (where, parser.found)


def test_every_get_route_as_a_visitor(app):
    client = app.test_client()
    routes = get_routes(app)
    assert {"/", "/login", "/signup", "/pricing", "/docs", "/openapi.json", "/healthz", "/favicon.ico"} <= set(routes)
    for path in routes:
        response = client.get(path)
        assert_secure(response, path)
        assert_no_inline_code(response, path)


def test_every_get_route_signed_in(app):
    client = app.test_client()
    sign_up(client)
    for path in get_routes(app):
        response = client.get(path)
        assert_secure(response, path)
        assert_no_inline_code(response, path)


@pytest.mark.parametrize("path", ["/static/app.css", "/static/dashboard.js", "/static/favicon.svg",
                                  "/no-such-page", "/v1/auth/me", "/v1/jobs/not-a-uuid",
                                  "/media/00000000-0000-0000-0000-000000000000.mp4", "/openapi.json"])
def test_static_files_errors_and_api(app, path):
    response = app.test_client().get(path)
    assert_secure(response, path)


def test_errors_from_a_post_carry_them_too(app):
    client = app.test_client()
    assert_secure(client.post("/v1/shorts/generate", json={}), "401 API")
    assert_secure(client.post("/dashboard/generate", data={}), "form without CSRF")
    assert_secure(client.delete("/login"), "405")


def test_favicon_is_an_icon(app):
    response = app.test_client().get("/favicon.ico")
    assert response.status_code == 200
    assert response.mimetype == "image/vnd.microsoft.icon"
    assert response.data[:4] == b"\x00\x00\x01\x00"  # the ICO signature
    svg = app.test_client().get("/static/favicon.svg")
    assert svg.status_code == 200 and svg.mimetype == "image/svg+xml"


def test_pages_name_the_icons(app):
    html = app.test_client().get("/login").get_data(as_text=True)
    assert 'rel="icon"' in html and re.search(r'/static/favicon\.[0-9a-f]{12}\.svg', html)


def test_hsts_only_outside_development(app, database_dsn):
    assert "Strict-Transport-Security" not in app.test_client().get("/login").headers
    prod = create_app({"TESTING": False, "DEBUG": False, "SECRET_KEY": "s" * 64, "DATABASE_URL": database_dsn,
                       "APP_DATABASE_URL": role_dsn(database_dsn, "sg_app")})
    try:
        response = prod.test_client().get("/login", base_url="https://localhost")
        assert response.headers["Strict-Transport-Security"] == "max-age=63072000; includeSubDomains"
        assert_secure(response, "production /login")
    finally:
        prod.extensions["sg_pool"].close()


def test_the_dashboard_script_is_a_static_file(app):
    client = app.test_client()
    sign_up(client)
    html = client.get("/dashboard").get_data(as_text=True)
    assert re.search(r'<script src="/static/dashboard\.[0-9a-f]{12}\.js" defer></script>', html)


def test_a_failed_render_tells_the_user_without_server_detail(app, connect):
    """The worker writes 'Render failed — we refunded your credit.' (the detail goes to its
    log); the page shows exactly that, once, and the credit is back."""
    from .test_dashboard import generate_from_page

    client = app.test_client()
    sign_up(client)
    assert generate_from_page(client).status_code == 302
    job_id = client.get("/dashboard/jobs.json").get_json()["jobs"][0]["job_id"]
    connect("postgres").execute("select app.fail_and_refund(%s, null)", (job_id,))
    html = client.get("/dashboard").get_data(as_text=True)
    assert html.count("Render failed — we refunded your credit.") == 1
    assert "refunded" not in html.replace("Render failed — we refunded your credit.", "")
    assert client.get("/dashboard/jobs.json").get_json()["credits_remaining"] == 5
