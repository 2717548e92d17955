"""Batch generation (sql/43_batches.sql): up to 50 videos, all or nothing, in one
transaction; followed with GET /v1/batches/{id}."""
from __future__ import annotations

import threading
import uuid

import pytest

from .conftest import acting_as, api_signup, balance, bearer, ledger_sum, set_balance, verify

GOOD = {"platform": "tiktok", "topic": "the history of coffee"}


@pytest.fixture
def user(api, connect):
    tokens = api_signup(api)
    verify(connect("postgres"), tokens["user"]["id"])
    return {"id": tokens["user"]["id"], "auth": bearer(tokens["access_token"])}


def items(n: int) -> list[dict]:
    return [{"platform": "youtube_shorts", "topic": f"fact number {i} about octopuses", "duration_seconds": 15 + i % 46}
            for i in range(n)]


def footprint(admin, user_id) -> dict:
    """Everything a spend writes, counted."""
    return admin.execute(
        "select (select count(*) from jobs where user_id = %(u)s) as jobs, "
        "(select count(*) from credit_ledger where user_id = %(u)s) as ledger, "
        "(select count(*) from usage_logs where user_id = %(u)s) as usage, "
        "(select count(*) from batches where user_id = %(u)s) as batches, "
        "(select count(*) from pgqueuer q join jobs j on q.dedupe_key = 'render:' || j.id "
        "  where j.user_id = %(u)s) as queued", {"u": user_id}).fetchone()


def test_a_batch_the_balance_cannot_cover_is_402_and_spends_nothing(api, user, connect):
    admin = connect("postgres")
    set_balance(admin, user["id"], 49)
    before = footprint(admin, user["id"])
    response = api.post("/v1/shorts/batch", json={"items": items(50)}, headers=user["auth"])
    assert response.status_code == 402
    body = response.get_json()
    assert "needs 50 credits and you have 49" in body["detail"] and body["upgrade_url"] == "/pricing"
    assert footprint(admin, user["id"]) == before
    assert balance(admin, user["id"]) == 49 == ledger_sum(admin, user["id"])


def test_a_batch_of_fifty_is_bought_and_queued_in_one_transaction(api, user, connect):
    admin = connect("postgres")
    set_balance(admin, user["id"], 50)
    before = footprint(admin, user["id"])
    asked = items(50)
    response = api.post("/v1/shorts/batch", json={"items": asked}, headers=user["auth"])
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["status"] == "queued" and body["credits_remaining"] == 0 and len(set(body["job_ids"])) == 50
    assert response.headers["Location"] == f"/v1/batches/{body['batch_id']}"
    after = footprint(admin, user["id"])
    assert {k: after[k] - before[k] for k in after} == {"jobs": 50, "ledger": 50, "usage": 50, "batches": 1,
                                                         "queued": 50}
    assert balance(admin, user["id"]) == 0 == ledger_sum(admin, user["id"])
    rows = admin.execute("select id, topic, options, batch_position, created_at, xmin::text as tx from jobs "
                         "where batch_id = %s order by batch_position", (body["batch_id"],)).fetchall()
    # one transaction: one transaction id and one clock reading for every job
    assert len({r["tx"] for r in rows}) == 1 and len({r["created_at"] for r in rows}) == 1
    assert [str(r["id"]) for r in rows] == body["job_ids"]
    assert [r["topic"] for r in rows] == [item["topic"] for item in asked]
    assert [r["options"]["duration_seconds"] for r in rows] == [item["duration_seconds"] for item in asked]


def test_a_batch_retried_with_its_key_is_the_same_batch(api, user, connect):
    headers = {**user["auth"], "Idempotency-Key": str(uuid.uuid4())}
    first = api.post("/v1/shorts/batch", json={"items": items(3)}, headers=headers)
    again = api.post("/v1/shorts/batch", json={"items": items(3)}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.get_json() == first.get_json() and again.headers["Idempotent-Replayed"] == "true"
    assert footprint(connect("postgres"), user["id"])["batches"] == 1
    assert balance(connect("postgres"), user["id"]) == 2


def _worker(connect):
    return connect("sg_worker")


def test_a_batch_shows_each_video_and_the_progress_of_the_whole(api, user, connect):
    body = api.post("/v1/shorts/batch", json={"items": items(4)}, headers=user["auth"]).get_json()
    url, jobs = f"/v1/batches/{body['batch_id']}", body["job_ids"]
    state = api.get(url, headers=user["auth"]).get_json()
    assert state["status"] == "queued" and state["progress"] == 0 and state["total"] == 4
    assert state["counts"] == {"queued": 4, "processing": 0, "completed": 0, "failed": 0}
    assert [item["job_id"] for item in state["items"]] == jobs

    worker = _worker(connect)
    attempts = {job: worker.execute("select attempts from app.claim_job(%s)", (job,)).fetchone()["attempts"]
                for job in jobs[:3]}
    worker.execute("select app.set_job_progress(%s, %s, 50)", (jobs[0], attempts[jobs[0]]))
    worker.execute("select app.complete_job(%s, %s, %s)", (jobs[1], attempts[jobs[1]], f"/media/{jobs[1]}.mp4"))
    worker.execute("select app.fail_job(%s, %s, null)", (jobs[2], attempts[jobs[2]]))
    state = api.get(url, headers=user["auth"]).get_json()
    assert state["status"] == "processing"
    assert state["counts"] == {"queued": 1, "processing": 1, "completed": 1, "failed": 1}
    assert state["progress"] == (50 + 100 + 100 + 0) // 4
    assert [item["status"] for item in state["items"]] == ["processing", "completed", "failed", "queued"]
    assert state["items"][1]["video_url"] == f"/media/{jobs[1]}.mp4"

    worker.execute("select app.complete_job(%s, %s, 'x')", (jobs[0], attempts[jobs[0]]))
    last = worker.execute("select attempts from app.claim_job(%s)", (jobs[3],)).fetchone()["attempts"]
    worker.execute("select app.complete_job(%s, %s, 'y')", (jobs[3], last))
    state = api.get(url, headers=user["auth"]).get_json()
    assert state["status"] == "partially_failed" and state["progress"] == 100
    # the failed one was refunded: 4 bought, 1 back
    assert balance(connect("postgres"), user["id"]) == 2


@pytest.mark.parametrize("payload, field", [
    ({}, "items"),
    ({"items": []}, "items"),
    ({"items": "tiktok"}, "items"),
    ({"items": [GOOD] * 51}, "items"),
    ({"items": [GOOD, "not an object"]}, "items[1]"),
    ({"items": [GOOD, GOOD, {"platform": "tiktok", "topic": "ab"}]}, "items[2].topic"),
    ({"items": [{"topic": "a fine topic"}]}, "items[0].platform"),
    ({"items": [{**GOOD, "duration_seconds": 61}]}, "items[0].duration_seconds"),
    ({"items": [{**GOOD, "voice": "nobody"}]}, "items[0].voice"),
])
def test_a_malformed_batch_is_422_naming_the_item_and_spends_nothing(api, user, connect, payload, field):
    before = footprint(connect("postgres"), user["id"])
    response = api.post("/v1/shorts/batch", json=payload, headers=user["auth"])
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["field"] == field
    assert footprint(connect("postgres"), user["id"]) == before


def test_a_refusal_of_any_item_refuses_the_whole_batch(api, connect):
    """An unconfirmed address may make one video: a batch of two is refused whole."""
    tokens = api_signup(api)
    admin = connect("postgres")
    before = footprint(admin, tokens["user"]["id"])
    response = api.post("/v1/shorts/batch", json={"items": items(2)}, headers=bearer(tokens["access_token"]))
    assert response.status_code == 403
    assert footprint(admin, tokens["user"]["id"]) == before and balance(admin, tokens["user"]["id"]) == 5


def test_someone_elses_batch_is_404(api, user):
    batch = api.post("/v1/shorts/batch", json={"items": items(1)}, headers=user["auth"]).get_json()["batch_id"]
    other = bearer(api_signup(api)["access_token"])
    assert api.get(f"/v1/batches/{batch}", headers=other).status_code == 404
    for bad in ("nope", str(uuid.uuid4())):
        assert api.get(f"/v1/batches/{bad}", headers=user["auth"]).status_code == 404


def test_a_batch_needs_authentication(api):
    assert api.post("/v1/shorts/batch", json={"items": [GOOD]}).status_code == 401


# -- the dashboard's batch form -----------------------------------------------------------

def _browser(app, connect=None):
    """A signed-in browser; with `connect`, also its user's id, the address confirmed."""
    from .conftest import client_with_own_ip, unique_email
    from .test_auth_ui import sign_up

    browser = client_with_own_ip(app)
    email = unique_email("batch")
    sign_up(browser, email)
    if connect is None:
        return browser
    admin = connect("postgres")
    user_id = admin.execute("select id from users where email = %s", (email,)).fetchone()["id"]
    verify(admin, user_id)
    return browser, user_id


def _post_batch(browser, topics: str, platform: str = "tiktok", duration: str = "20"):
    from .test_auth_ui import csrf_token

    page = browser.get("/dashboard").get_data(as_text=True)
    return browser.post("/dashboard/batch", data={"batch-csrf_token": csrf_token(page), "batch-topics": topics,
                                                  "batch-platform": platform, "batch-duration_seconds": duration})


def test_the_dashboard_shows_the_batch_form_with_its_cost(app, connect):
    browser = _browser(app)
    page = browser.get("/dashboard").get_data(as_text=True)
    assert 'id="batch"' in page and 'name="batch-topics"' in page
    assert "0 videos × 1 credit = <strong>0 credits</strong>" in " ".join(page.split()) and "you have 5." in page
    # the single-video form keeps its own field ids
    assert page.count('id="platform"') == 1 and page.count('id="batch-platform"') == 1


def test_a_list_of_topics_becomes_a_batch(app, connect):
    browser, user_id = _browser(app, connect)
    response = _post_batch(browser, "the history of coffee\n\n  why   cats purr \nhow bees dance\n")
    assert response.status_code == 302
    page = browser.get("/dashboard").get_data(as_text=True)
    assert "Your 3 videos are on their way" in page and "2 credits" in page
    topics = [r["topic"] for r in connect("postgres").execute(
        "select topic from jobs where user_id = %s order by batch_position", (user_id,)).fetchall()]
    assert topics == ["the history of coffee", "why cats purr", "how bees dance"]


def test_a_batch_form_the_credits_cannot_cover_spends_nothing_and_keeps_the_list(app, connect):
    browser, user_id = _browser(app, connect)
    topics = "\n".join(f"topic number {i}" for i in range(6))
    response = _post_batch(browser, topics)
    assert response.status_code == 402
    page = response.get_data(as_text=True)
    assert "needs 6 credits and you have 5" in page and "topic number 5" in page
    assert balance(connect("postgres"), user_id) == 5


@pytest.mark.parametrize("topics, duration", [("", "20"), ("ab", "20"), ("\n".join(["fine topic"] * 51), "20"),
                                              ("fine topic", "90"), ("fine topic", "soon")])
def test_a_bad_batch_form_is_422_and_spends_nothing(app, connect, topics, duration):
    browser = _browser(app)
    response = _post_batch(browser, topics, duration=duration)
    assert response.status_code == 422
    assert 'class="field-error"' in response.get_data(as_text=True)
    assert browser.get("/dashboard/jobs.json").get_json()["credits_remaining"] == 5


# -- batch.completed to the owner's webhooks ---------------------------------------------------

def _listen(admin, user_id) -> None:
    """An endpoint of the user's that takes batch.completed (written as the API would)."""
    with acting_as(admin, user_id):
        admin.execute("insert into webhook_endpoints (user_id, url, event_types, secret) "
                      "values (%s, 'https://hooks.example.org/sg', array['batch.completed'], 'whsec_test')", (user_id,))


def _batch_events(admin, user_id) -> list[dict]:
    with acting_as(admin, user_id):
        return admin.execute("select dedupe_key, body from webhook_events where user_id = %s and type = "
                             "'batch.completed'", (user_id,)).fetchall()


def test_the_last_video_of_a_batch_emits_batch_completed_once(api, user, connect):
    admin, worker = connect("postgres"), connect("sg_worker")
    _listen(admin, user["id"])
    body = api.post("/v1/shorts/batch", json={"items": items(3)}, headers=user["auth"]).get_json()
    claims = {job: worker.execute("select attempts from app.claim_job(%s)", (job,)).fetchone()["attempts"]
              for job in body["job_ids"]}
    worker.execute("select app.complete_job(%s, %s, 'a')", (body["job_ids"][0], claims[body["job_ids"][0]]))
    worker.execute("select app.fail_job(%s, %s, null)", (body["job_ids"][1], claims[body["job_ids"][1]]))
    assert _batch_events(admin, user["id"]) == []
    worker.execute("select app.complete_job(%s, %s, 'c')", (body["job_ids"][2], claims[body["job_ids"][2]]))
    [event] = _batch_events(admin, user["id"])
    assert event["dedupe_key"] == f"batch.completed:{body['batch_id']}"
    assert event["body"]["type"] == "batch.completed"
    assert event["body"]["data"]["object"] == {"batch_id": body["batch_id"], "status": "partially_failed",
                                               "total": 3, "counts": {"completed": 2, "failed": 1},
                                               "job_ids": body["job_ids"]}


def test_when_the_last_two_videos_finish_at_once_one_event_is_sent(api, user, connect, new_connection):
    admin, worker = connect("postgres"), connect("sg_worker")
    _listen(admin, user["id"])
    jobs = api.post("/v1/shorts/batch", json={"items": items(2)}, headers=user["auth"]).get_json()["job_ids"]
    claims = [worker.execute("select attempts from app.claim_job(%s)", (job,)).fetchone()["attempts"] for job in jobs]
    first, second = new_connection("sg_worker"), new_connection("sg_worker")
    first.execute("begin")
    second.execute("begin")
    first.execute("select app.complete_job(%s, %s, 'a')", (jobs[0], claims[0]))
    second.execute("select app.complete_job(%s, %s, 'b')", (jobs[1], claims[1]))
    # each ran its deferred trigger at commit, each saw the other's job as unfinished until
    # the batch lock made the second wait for the first
    finished = threading.Thread(target=lambda: second.execute("commit"))
    finished.start()
    first.execute("commit")
    finished.join(10)
    assert len(_batch_events(admin, user["id"])) == 1
