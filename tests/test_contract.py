"""The published contract: every /v1 route documented in /openapi.json (and nothing
documented that does not exist), CORS for the SPA's origin only, and the /docs page."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

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


# --- what generators and linters need (issue 20 item 8) ---------------------------------

CONTRACT_TOOLS = Path(__file__).parent / "contract"
# operationIds are the method names of every generated client: an id once published stays
PUBLISHED_OPERATION_IDS = {
    "signup", "login", "loginSecondFactor", "startTwoFactorSetup", "enableTwoFactor", "disableTwoFactor",
    "refreshTokens", "logout", "getMe", "changePassword", "verifyEmail", "resendVerification",
    "forgotPassword", "resetPassword", "createApiKey", "listApiKeys", "revokeApiKey", "generateShort",
    "listJobs", "getJob", "getCredits", "listUsage", "listPlans", "createCheckoutSession", "openBillingPortal",
    "getSubscription", "changePlan", "cancelSubscription", "resumeSubscription", "listInvoices",
    "receiveStripeEvent", "createWebhookEndpoint", "listWebhookEndpoints", "deleteWebhookEndpoint",
    "enableWebhookEndpoint", "disableWebhookEndpoint", "sendTestWebhook", "listWebhookDeliveries",
    "getWebhookDelivery", "resendWebhookDelivery", "getReferrals", "deleteAccount", "exportAccount",
}


def operations(spec: dict):
    """Every operation: the routes we serve, then the webhooks we send."""
    for section in ("paths", "webhooks"):
        for path, ops in spec.get(section, {}).items():
            for method, op in ops.items():
                yield path, method, op


def test_operation_ids_are_published_unique_and_stable(client):
    spec = client.get("/openapi.json").get_json()
    ids = [op.get("operationId") for _, _, op in operations(spec)]
    assert all(isinstance(i, str) and re.fullmatch(r"[a-z][A-Za-z0-9]*", i) for i in ids), ids
    assert len(ids) == len(set(ids))
    assert PUBLISHED_OPERATION_IDS <= set(ids), PUBLISHED_OPERATION_IDS - set(ids)


def test_every_operation_has_a_description_a_declared_tag_and_examples(client):
    spec = client.get("/openapi.json").get_json()
    declared = {tag["name"] for tag in spec["tags"]}
    assert all(tag.get("description") for tag in spec["tags"])
    for path, method, op in operations(spec):
        assert op["description"].strip() and op["summary"].strip(), (path, method)
        assert op["tags"] and set(op["tags"]) <= declared, (path, method)
        body = op.get("requestBody", {}).get("content", {}).get("application/json")
        assert body is None or "example" in body, (path, method)
        for status, response in op["responses"].items():
            content = response.get("content", {}).get("application/json")
            assert content is None or "example" in content, (path, method, status)
        for parameter in op.get("parameters", []):
            assert parameter.get("description") and "example" in parameter, (path, method, parameter["name"])


def test_every_schema_has_a_description_and_an_example_that_validates(client):
    from jsonschema import Draft202012Validator

    spec = client.get("/openapi.json").get_json()
    for name, schema in spec["components"]["schemas"].items():
        assert schema.get("description"), name
        assert schema.get("examples"), name
        validator = Draft202012Validator({**spec, "$ref": f"#/components/schemas/{name}"})
        for example in schema["examples"]:
            assert not list(validator.iter_errors(example)), (name, example)
    # the media-type examples too: what a client sees for each answer and body
    for path, method, op in operations(spec):
        media = list(op["requestBody"]["content"].values()) if "requestBody" in op else []
        media += [r["content"]["application/json"] for r in op["responses"].values()
                  if "application/json" in r.get("content", {})]
        for item in media:
            validator = Draft202012Validator({**spec, **item["schema"]})
            assert not list(validator.iter_errors(item["example"])), (path, method, item["example"])


def test_plan_features_have_their_real_shape(client):
    spec = client.get("/openapi.json").get_json()
    features = spec["components"]["schemas"]["PlanFeatures"]
    assert spec["components"]["schemas"]["Plan"]["properties"]["features"] == {
        "$ref": "#/components/schemas/PlanFeatures"}
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator({**spec, "$ref": "#/components/schemas/Plans"})
    served = client.get("/v1/billing/plans").get_json()
    assert not list(validator.iter_errors(served))
    for plan in served["plans"]:
        assert set(plan["features"]) == set(features["required"]), plan["tier"]


def test_every_event_we_send_is_documented_as_a_webhook(client):
    from web.api.webhooks import EVENT_TYPES

    spec = client.get("/openapi.json").get_json()
    assert set(spec["webhooks"]) == {*EVENT_TYPES, "webhook.test"}
    for event_type, ops in spec["webhooks"].items():
        op = ops["post"]
        schema = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        assert spec["components"]["schemas"][schema]["allOf"][1]["properties"]["type"] == {"const": event_type}
        assert op["parameters"][0]["name"] == "Story-Genius-Signature"


def test_throttle_and_rate_limit_headers_are_declared(client):
    spec = client.get("/openapi.json").get_json()
    headers = spec["components"]["headers"]
    assert {"Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} <= set(headers)
    for path, method, op in operations(spec):
        for status in ("429", "503"):
            if status in op["responses"]:
                assert op["responses"][status]["headers"]["Retry-After"] == {
                    "$ref": "#/components/headers/Retry-After"}, (path, method, status)
        if op["security"] and path.startswith("/v1/"):
            ok = next(r for s, r in op["responses"].items() if s.startswith("2"))
            assert {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} <= set(ok["headers"]), (path, method)


def test_a_throttled_answer_says_when_to_come_back(client):
    """Every 429 carries Retry-After, also when the refusing function gave no seconds
    (the verification-mail limit)."""
    from .conftest import api_signup, client_with_own_ip

    client = client_with_own_ip(client.application)
    token = api_signup(client)["access_token"]
    answers = [client.post("/v1/auth/verify/resend", headers={"Authorization": f"Bearer {token}"})
               for _ in range(4)]
    assert [a.status_code for a in answers] == [202, 202, 202, 429]
    assert answers[-1].headers["Retry-After"].isdigit()


def run_tool(*argv: str, cwd: Path = CONTRACT_TOOLS) -> subprocess.CompletedProcess:
    binary = CONTRACT_TOOLS / "node_modules" / ".bin" / argv[0]
    assert binary.exists(), f"{binary} is missing: `make test` installs it (npm ci in tests/contract)"
    return subprocess.run([str(binary), *argv[1:]], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def served_document(client, tmp_path) -> Path:
    """/openapi.json as a production deployment serves it (its own https address as the server)."""
    answer = client.get("/openapi.json", base_url="https://api.storygenius.app")
    path = tmp_path / "openapi.json"
    path.write_bytes(answer.get_data())
    return path


def test_redocly_recommended_finds_nothing(served_document):
    result = run_tool("redocly", "lint", "--config", "redocly.yaml", "--format", "json", str(served_document))
    report = json.loads(result.stdout)
    assert report["totals"] == {"errors": 0, "warnings": 0, "ignored": 0}, report["problems"]
    assert result.returncode == 0, result.stderr


def test_spectral_oas_finds_nothing(served_document):
    result = run_tool("spectral", "lint", "--ruleset", ".spectral.yaml", "--format", "json", "--quiet",
                      str(served_document))
    assert json.loads(result.stdout or "[]") == [], result.stdout
    assert result.returncode == 0, result.stderr


def test_a_typescript_consumer_of_the_generated_types_compiles_strictly(served_document):
    generated = CONTRACT_TOOLS / "generated" / "api.d.ts"
    result = run_tool("openapi-typescript", str(served_document), "--output", str(generated))
    assert result.returncode == 0, result.stderr
    text = generated.read_text()
    assert "operations = Record<string, never>" not in text
    compiled = run_tool("tsc", "--project", "tsconfig.json")
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
