"""schemathesis against /openapi.json, in-process: every /v1 operation, valid and invalid
inputs, authenticated as a real user. Zero 5xx, zero undocumented statuses, zero responses
that break their schema, and every schema-violating request refused."""
from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from .conftest import api_signup, client_with_own_ip, set_tier

# up to 60 per operation; hypothesis stops early where an operation has fewer distinct inputs
EXAMPLES_PER_OPERATION = int(__import__("os").environ.get("FUZZ_EXAMPLES", "60"))


import pytest


_token: dict[str, str] = {}
_cases: list[str] = []
MINIMUM_CASES = int(__import__("os").environ.get("FUZZ_MINIMUM_CASES", "1000"))


@pytest.fixture(scope="module", autouse=True)
def count_cases():
    """The claim is 'over at least 1,000 generated cases': count them, don't assume."""
    yield
    print(f"\nschemathesis: {len(_cases)} generated cases over {len(set(_cases))} operations")
    assert len(_cases) >= MINIMUM_CASES, len(_cases)


@pytest.fixture(scope="module")
def app(database_dsn, media_root, connect, webhook_secret):
    """The app in local test mode, billing against a Stripe simulator (as `make run` does),
    so the billing operations answer as they would for a real customer."""
    from .billing_env import simulated_billing

    with simulated_billing(database_dsn, media_root, connect("postgres"), webhook_secret,
                           BILLING_MODE="test", STRIPE_SECRET_KEY="sk_test_simulator") as env:
        yield env.app


@pytest.fixture(scope="module", autouse=True)
def fuzz_user(app, connect):
    """An Agency user with plenty of credits: every operation is open to it."""
    tokens = api_signup(client_with_own_ip(app))
    admin = connect("postgres")
    set_tier(admin, tokens["user"]["id"], "agency")
    admin.execute("select app.grant_credits(%s, 100000, 'admin_grant', %s)",
                  (tokens["user"]["id"], f"fuzz:{tokens['user']['id']}"))
    _token["access"] = tokens["access_token"]
    return tokens


@schemathesis.auth()
class BearerToken:
    """Authenticates generated requests the way clients do; schemathesis still sends
    requests without it on purpose to check they are refused."""

    def get(self, case, context):
        return _token["access"]

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture(scope="module")
def api_schema(app):
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_api_conforms_to_its_contract(case):
    # Every other built-in check runs (no 5xx, documented statuses, response schemas,
    # headers, invalid input refused). "Valid-looking input accepted" is left out: a
    # well-formed body can still be refused for business reasons no schema can state:
    # a common password, an undeliverable address, a bad signature, an unknown token.
    # The WSGI transport hands the body over as sent, without undoing the brotli/gzip the
    # app applies to larger answers, so ask for them uncompressed (compression has its own
    # tests in test_pages_http.py).
    _cases.append(case.operation.label)
    case.call_and_validate(headers={"Accept-Encoding": "identity"}, excluded_checks=[positive_data_acceptance])
