"""Rate limits of the /v1 API (sql/47_rate_limits.sql): per API key (or per user for
access tokens), limits from plans.features, counted in Postgres so every web process
agrees; RateLimit-* headers on each answer, 429 + Retry-After past the limit."""
from __future__ import annotations

import threading
import uuid

import pytest

from web import create_app
from web.config import role_dsn

from .conftest import api_signup, bearer, client_with_own_ip, set_tier


SECRET = uuid.uuid4().hex


def limited_app(database_dsn, media_root):
    return create_app({"TESTING": True, "DATABASE_URL": database_dsn, "SECRET_KEY": SECRET,
                       "APP_DATABASE_URL": role_dsn(database_dsn, "sg_app"), "MEDIA_ROOT": str(media_root),
                       "RATE_LIMITS": "plan", "DB_POOL_MAX": 40})


@pytest.fixture(scope="module")
def apps(database_dsn, media_root):
    """Two web processes' worth of app (each its own pool, one secret), limits on as in production."""
    built = [limited_app(database_dsn, media_root) for _ in range(2)]
    yield built
    for app in built:
        app.extensions["sg_pool"].close()


@pytest.fixture
def signed_up(apps, connect):
    def _signed_up(tier: str = "free") -> dict:
        client = client_with_own_ip(apps[0])
        tokens = api_signup(client)
        set_tier(connect("postgres"), tokens["user"]["id"], tier)
        return {"id": tokens["user"]["id"], "auth": bearer(tokens["access_token"]), "client": client}

    return _signed_up


def counted(response) -> tuple[int, int, int]:
    return (int(response.headers["RateLimit-Limit"]), int(response.headers["RateLimit-Remaining"]),
            int(response.headers["RateLimit-Reset"]))


def test_the_headers_count_down_then_429_with_retry_after(signed_up):
    user = signed_up("free")
    for expected in range(19, -1, -1):
        response = user["client"].get("/v1/user/credits", headers=user["auth"])
        assert response.status_code == 200
        limit, remaining, reset = counted(response)
        assert (limit, remaining) == (20, expected) and 1 <= reset <= 60
        assert response.headers["RateLimit-Policy"] == "20;w=60"
    refused = user["client"].get("/v1/user/credits", headers=user["auth"])
    assert refused.status_code == 429
    assert counted(refused)[:2] == (20, 0)
    assert refused.headers["Retry-After"] == refused.headers["RateLimit-Reset"]
    assert "20 requests a minute" in refused.get_json()["detail"]
    # a POST past the limit is refused before it does anything
    spend = user["client"].post("/v1/shorts/generate", json={"platform": "tiktok", "topic": "coffee"},
                                headers=user["auth"])
    assert spend.status_code == 429
    assert user["client"].get("/v1/jobs", headers=user["auth"]).status_code == 429


def test_the_count_starts_again_with_the_next_minute(signed_up, connect):
    user = signed_up("free")
    for _ in range(21):
        last = user["client"].get("/v1/user/credits", headers=user["auth"])
    assert last.status_code == 429
    # the clock moves on a minute: the window that was counted is the previous one now
    connect("postgres").execute("update rate_limit_windows set window_start = window_start - interval '1 minute' "
                                "where subject = %s", (f"user:{user['id']}",))
    response = user["client"].get("/v1/user/credits", headers=user["auth"])
    assert response.status_code == 200 and counted(response)[:2] == (20, 19)
    assert connect("sg_worker").execute("select app.purge_rate_limit_windows() as n").fetchone()["n"] >= 0


@pytest.mark.parametrize("tier, limit", [("starter", 30), ("pro", 60), ("agency", 300)])
def test_each_plan_has_its_limit(signed_up, tier, limit):
    user = signed_up(tier)
    assert counted(user["client"].get("/v1/auth/me", headers=user["auth"]))[:2] == (limit, limit - 1)


def test_every_web_process_counts_against_the_same_number(apps, signed_up):
    user = signed_up("free")
    other_process = client_with_own_ip(apps[1])
    remaining = []
    for i in range(10):
        client = user["client"] if i % 2 else other_process
        remaining.append(counted(client.get("/v1/jobs", headers=user["auth"]))[1])
    assert remaining == list(range(19, 9, -1))


def test_each_key_has_its_own_count_and_tokens_count_per_user(signed_up):
    user = signed_up("pro")
    client = user["client"]
    keys = [bearer(client.post("/v1/keys", json={"name": f"k{i}"}, headers=user["auth"]).get_json()["key"])
            for i in range(2)]
    for _ in range(3):
        client.get("/v1/jobs", headers=keys[0])
    assert counted(client.get("/v1/jobs", headers=keys[0]))[1] == 60 - 4
    assert counted(client.get("/v1/jobs", headers=keys[1]))[1] == 60 - 1
    # the token's count is the user's: the two key creations and the reads above were
    # made with it (2), this is the third
    assert counted(client.get("/v1/jobs", headers=user["auth"]))[1] == 60 - 3


def test_a_burst_of_concurrent_requests_gets_exactly_the_limit(apps, signed_up):
    user = signed_up("pro")
    key = bearer(user["client"].post("/v1/keys", json={"name": "burst"}, headers=user["auth"]).get_json()["key"])
    start = threading.Barrier(80)
    statuses: list = [None] * 80

    def send(index: int) -> None:
        client = client_with_own_ip(apps[index % 2])
        start.wait()
        statuses[index] = client.get("/v1/jobs", headers=key).status_code

    threads = [threading.Thread(target=send, args=(i,)) for i in range(80)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses.count(200) == 60 and statuses.count(429) == 20, statuses


def test_unknown_credentials_are_401_and_not_counted(apps, connect):
    client = client_with_own_ip(apps[0])
    before = connect("postgres").execute("select count(*) as n from rate_limit_windows").fetchone()["n"]
    response = client.get("/v1/jobs", headers=bearer("sk_" + "x" * 43))
    assert response.status_code == 401 and "RateLimit-Limit" not in response.headers
    assert connect("postgres").execute("select count(*) as n from rate_limit_windows").fetchone()["n"] == before


def test_apps_built_for_tests_have_limits_off_unless_asked(api):
    tokens = api_signup(api)
    response = api.get("/v1/user/credits", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200 and "RateLimit-Limit" not in response.headers


def test_production_settings_have_limits_on(database_dsn):
    app = create_app({"DATABASE_URL": database_dsn, "SECRET_KEY": uuid.uuid4().hex, "BILLING_MODE": "stripe",
                      "STRIPE_SECRET_KEY": "sk_test_x", "STRIPE_WEBHOOK_SECRET": "whsec_x"})
    with app.test_request_context("/v1/jobs"):
        from web.api import rate_limits_on

        assert rate_limits_on()
