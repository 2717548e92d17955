"""/v1/shorts/generate, /v1/jobs, /v1/user: spending credits on videos over HTTP."""
from __future__ import annotations

import pytest

from .conftest import api_signup, bearer, set_tier, unique_email, verify

GOOD = {"platform": "tiktok", "topic": "the history of coffee"}


@pytest.fixture
def user(api, connect):
    tokens = api_signup(api)
    verify(connect("postgres"), tokens["user"]["id"])  # an unconfirmed address spends only one credit
    return {"tokens": tokens, "auth": bearer(tokens["access_token"]), "id": tokens["user"]["id"]}


def credits(api, auth) -> int:
    return api.get("/v1/user/credits", headers=auth).get_json()["credits_remaining"]


def test_walkthrough_five_credits_generate_four_left(api):
    email = unique_email()
    api_signup(api, email=email, password="securepass123")
    token = api.post("/v1/auth/login", json={"email": email, "password": "securepass123"}).get_json()["access_token"]
    auth = bearer(token)
    assert credits(api, auth) == 5
    response = api.post("/v1/shorts/generate", json={"platform": "youtube_shorts", "topic": "Octopus intelligence"},
                        headers=auth)
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "queued" and body["credits_remaining"] == 4
    assert response.headers["Location"] == f"/v1/jobs/{body['job_id']}"
    assert credits(api, auth) == 4
    job = api.get(f"/v1/jobs/{body['job_id']}", headers=auth).get_json()
    assert job["status"] == "queued" and job["progress"] == 0 and job["video_url"] is None
    assert job["topic"] == "Octopus intelligence" and job["duration_seconds"] == 20


def test_credits_shape(api, user):
    body = api.get("/v1/user/credits", headers=user["auth"]).get_json()
    assert body["tier"] == "free" and body["credits_total"] == 5 and body["credits_used"] == 0
    assert body["credits_remaining"] == 5 and body["renews_at"]


def test_out_of_credits_is_402_and_changes_nothing(api, user, connect):
    for _ in range(5):
        assert api.post("/v1/shorts/generate", json=GOOD, headers=user["auth"]).status_code == 202
    admin = connect("postgres")
    count = "select (select count(*) from jobs where user_id = %(u)s) + (select count(*) from credit_ledger " \
            "where user_id = %(u)s) as n"
    before = admin.execute(count, {"u": user["id"]}).fetchone()["n"]
    response = api.post("/v1/shorts/generate", json=GOOD, headers=user["auth"])
    assert response.status_code == 402
    assert response.get_json() == {"detail": "Insufficient credits. Please upgrade your plan.", "upgrade_url": "/pricing"}
    assert admin.execute(count, {"u": user["id"]}).fetchone()["n"] == before
    assert credits(api, user["auth"]) == 0


@pytest.mark.parametrize("payload, field", [
    ({"topic": "a fine topic"}, "platform"),
    ({"platform": "myspace", "topic": "a fine topic"}, "platform"),
    ({"platform": 3, "topic": "a fine topic"}, "platform"),
    ({"platform": "tiktok"}, "topic"),
    ({"platform": "tiktok", "topic": "ab"}, "topic"),
    ({"platform": "tiktok", "topic": "   \n\t  "}, "topic"),
    ({"platform": "tiktok", "topic": "x" * 201}, "topic"),
    ({"platform": "tiktok", "topic": ["a list"]}, "topic"),
    ({"platform": "tiktok", "topic": "nul\x00byte"}, "topic"),
    ({**GOOD, "duration_seconds": 14}, "duration_seconds"),
    ({**GOOD, "duration_seconds": 61}, "duration_seconds"),
    ({**GOOD, "duration_seconds": "20"}, "duration_seconds"),
    ({**GOOD, "duration_seconds": 20.5}, "duration_seconds"),
    ({**GOOD, "duration_seconds": True}, "duration_seconds"),
    ({**GOOD, "duration_seconds": None}, "duration_seconds"),
])
def test_bad_generate_input_is_422_and_takes_no_credit(api, user, payload, field):
    response = api.post("/v1/shorts/generate", json=payload, headers=user["auth"])
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["detail"].startswith(f"{field}:")
    assert credits(api, user["auth"]) == 5


@pytest.mark.parametrize("raw", [b"", b"not json", b"[]", b'"string"', b"\xff\xfe"])
def test_malformed_generate_body_is_422(api, user, raw):
    response = api.post("/v1/shorts/generate", data=raw, content_type="application/json", headers=user["auth"])
    assert response.status_code == 422
    assert credits(api, user["auth"]) == 5


def test_generate_needs_authentication(api):
    assert api.post("/v1/shorts/generate", json=GOOD).status_code == 401


def test_whitespace_in_topics_is_folded(api, user):
    job_id = api.post("/v1/shorts/generate", json={"platform": "tiktok", "topic": "  two\n\nlines   here "},
                      headers=user["auth"]).get_json()["job_id"]
    assert api.get(f"/v1/jobs/{job_id}", headers=user["auth"]).get_json()["topic"] == "two lines here"


def test_other_users_jobs_are_404(api, user):
    job_id = api.post("/v1/shorts/generate", json=GOOD, headers=user["auth"]).get_json()["job_id"]
    other = bearer(api_signup(api)["access_token"])
    assert api.get(f"/v1/jobs/{job_id}", headers=other).status_code == 404
    assert api.get(f"/media/{job_id}.mp4", headers=other).status_code == 404
    assert job_id not in str(api.get("/v1/jobs", headers=other).get_json())


@pytest.mark.parametrize("job_id", ["nope", "00000000-0000-0000-0000-000000000000", "1%27%20or%201=1"])
def test_malformed_or_unknown_job_ids_are_404(api, user, job_id):
    assert api.get(f"/v1/jobs/{job_id}", headers=user["auth"]).status_code == 404


def test_api_key_can_generate(api, connect, user):
    set_tier(connect("postgres"), user["id"], "pro")
    key = api.post("/v1/keys", json={"name": "bot"}, headers=user["auth"]).get_json()["key"]
    response = api.post("/v1/shorts/generate", json=GOOD, headers=bearer(key))
    assert response.status_code == 202 and response.get_json()["credits_remaining"] == 4
    job_id = response.get_json()["job_id"]
    assert api.get(f"/v1/jobs/{job_id}", headers=bearer(key)).status_code == 200


def test_jobs_are_listed_newest_first_with_keyset_pages(api, user, connect):
    set_tier(connect("postgres"), user["id"], "starter")
    made = [api.post("/v1/shorts/generate", json={**GOOD, "topic": f"topic number {n}"}, headers=user["auth"]
                     ).get_json()["job_id"] for n in range(5)]
    seen, before = [], None
    while True:
        query = "/v1/jobs?limit=2" + (f"&before={before}" if before else "")
        page = api.get(query, headers=user["auth"]).get_json()
        seen += [job["job_id"] for job in page["jobs"]]
        before = page["next_before"]
        if before is None:
            break
    assert seen == list(reversed(made))


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=abc", "limit=-1", "limit=1e3", "limit=" + "9" * 5000,
                                   "before=nope", "before=00000000-0000-0000-0000-000000000000"])
def test_bad_list_parameters_are_422(api, user, query):
    response = api.get(f"/v1/jobs?{query}", headers=user["auth"])
    assert response.status_code == 422 and "detail" in response.get_json()


def test_usage_lists_generations(api, user):
    api.post("/v1/shorts/generate", json=GOOD, headers=user["auth"])
    usage = api.get("/v1/user/usage?days=30", headers=user["auth"]).get_json()["usage"]
    assert [(u["action"], u["credits"]) for u in usage] == [("video_generation", 1)]
    assert api.get("/v1/user/usage", headers=user["auth"]).status_code == 200


@pytest.mark.parametrize("days", ["0", "366", "abc", "30;drop table users", "-5", "3.5", "", "٣"])
def test_usage_days_is_validated_not_formatted_into_sql(api, user, days):
    response = api.get(f"/v1/user/usage?days={days}", headers=user["auth"])
    assert response.status_code == 422
    assert response.get_json()["detail"].startswith("days:")



def test_an_ended_session_cannot_generate_and_spends_nothing(api, user, connect):
    """The identity check and the spend travel together (web/db.py `call`): a refused
    check rolls the spend back with it."""
    admin = connect("postgres")
    api.post("/v1/shorts/generate", json=GOOD, headers=user["auth"])
    admin.execute("update users set session_version = session_version + 1 where id = %s", (user["id"],))
    response = api.post("/v1/shorts/generate", json=GOOD, headers=user["auth"])
    assert response.status_code == 401 and response.get_json() == {"detail": "Session expired. Please sign in again."}
    assert admin.execute("select credits_remaining from subscriptions where user_id = %s",
                         (user["id"],)).fetchone()["credits_remaining"] == 4
    assert admin.execute("select count(*) as n from jobs where user_id = %s", (user["id"],)).fetchone()["n"] == 1


def test_enqueueing_sends_no_notify(api, user, new_connection):
    """Workers poll (migrations/0008): a NOTIFY per enqueue would serialise every
    generate request's commit behind every other one's."""
    listener = new_connection("postgres")
    listener.autocommit = True
    listener.execute("listen ch_pgqueuer")
    assert api.post("/v1/shorts/generate", json=GOOD, headers=user["auth"]).status_code == 202
    assert list(listener.notifies(timeout=0.5)) == []
