"""The published contract: every /v1 route documented in /openapi.json (and nothing
documented that does not exist), CORS for the SPA's origin only, and the /docs page."""
from __future__ import annotations

import re

import pytest
from openapi_spec_validator import validate

from web import create_app
from web.config import role_dsn


def routes(app) -> set[tuple[str, str]]:
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/v1/"):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            found |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    return found


def test_every_v1_route_is_documented_and_nothing_else(app, client):
    spec = client.get("/openapi.json").get_json()
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert routes(app) == documented


def test_the_document_is_valid_openapi_3_1(client):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_every_operation_documents_its_errors(client):
    spec = client.get("/openapi.json").get_json()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            statuses = set(op["responses"])
            if op["security"]:
                assert {"401", "403"} <= statuses, (path, method)
            if "requestBody" in op and path != "/v1/billing/webhook":
                assert {"413", "422"} <= statuses, (path, method)
            for status, response in op["responses"].items():
                if status >= "400":
                    assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_docs_page_lists_every_operation(client):
    page = client.get("/docs").get_data(as_text=True)
    for path in client.get("/openapi.json").get_json()["paths"]:
        assert f"<code>{path}</code>" in page


@pytest.fixture
def spa_app(database_dsn):
    app = create_app({"TESTING": True, "DATABASE_URL": database_dsn, "APP_DATABASE_URL": role_dsn(database_dsn, "sg_app"),
                      "CORS_ORIGINS": ["https://spa.storygenius.test"]})
    yield app
    app.extensions["sg_pool"].close()


def test_cors_preflight_from_the_spa_origin(spa_app):
    response = spa_app.test_client().options("/v1/shorts/generate", headers={
        "Origin": "https://spa.storygenius.test", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://spa.storygenius.test"
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_cors_refuses_a_foreign_origin(spa_app):
    client = spa_app.test_client()
    preflight = client.options("/v1/shorts/generate", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in preflight.headers
    actual = client.get("/v1/billing/plans", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in actual.headers
    allowed = client.get("/v1/billing/plans", headers={"Origin": "https://spa.storygenius.test"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://spa.storygenius.test"


def test_pages_are_not_cors_enabled(spa_app):
    response = spa_app.test_client().get("/login", headers={"Origin": "https://spa.storygenius.test"})
    assert "Access-Control-Allow-Origin" not in response.headers
