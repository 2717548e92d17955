"""Idempotency-Key on the API's POSTs (sql/42_idempotency.sql, web/api/__init__.py):
Stripe's semantics, with the key, the spend and the job committed in one transaction."""
from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid

import pytest

from web import create_app
from web.config import role_dsn

from .conftest import acting_as, api_signup, balance, bearer, client_with_own_ip, ledger_sum, set_tier, verify

GOOD = {"platform": "tiktok", "topic": "the history of coffee"}


@pytest.fixture(scope="module")
def wide_app(database_dsn, media_root):
    """An app whose pool holds a connection for each of 60 concurrent requests, and whose
    retries wait only 1 s for a request still running with their key."""
    app = create_app({"TESTING": True, "DATABASE_URL": database_dsn, "APP_DATABASE_URL": role_dsn(database_dsn, "sg_app"),
                      "MEDIA_ROOT": str(media_root), "DB_POOL_MAX": 60, "IDEMPOTENCY_WAIT_SECONDS": 1})
    yield app
    app.extensions["sg_pool"].close()


@pytest.fixture
def user(wide_app, connect):
    client = client_with_own_ip(wide_app)
    tokens = api_signup(client)
    verify(connect("postgres"), tokens["user"]["id"])
    return {"id": tokens["user"]["id"], "auth": bearer(tokens["access_token"]), "client": client, "tokens": tokens}


def keyed(auth: dict, key: str) -> dict:
    return {**auth, "Idempotency-Key": key}


def jobs_of(admin, user_id) -> int:
    return admin.execute("select count(*) as n from jobs where user_id = %s", (user_id,)).fetchone()["n"]


def test_fifty_concurrent_retries_make_one_video_and_spend_one_credit(wide_app, user, connect):
    admin = connect("postgres")
    headers = keyed(user["auth"], str(uuid.uuid4()))
    start = threading.Barrier(50)
    answers: list = [None] * 50

    def send(index: int) -> None:
        client = client_with_own_ip(wide_app)
        start.wait()
        response = client.post("/v1/shorts/generate", json=GOOD, headers=headers)
        answers[index] = (response.status_code, response.get_data(as_text=True),
                          response.headers.get("Idempotent-Replayed"), response.headers.get("Location"))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert {status for status, *_ in answers} == {202}, answers
    assert len({body for _, body, *_ in answers}) == 1, "every retry gets the first answer, byte for byte"
    assert len({location for *_, location in answers}) == 1
    assert sorted(replayed or "" for _, _, replayed, _ in answers) == [""] + ["true"] * 49
    body = json.loads(answers[0][1])
    assert body["credits_remaining"] == 4
    assert jobs_of(admin, user["id"]) == 1
    assert balance(admin, user["id"]) == 4 == ledger_sum(admin, user["id"])
    queued = admin.execute("select count(*) as n from pgqueuer where dedupe_key = %s",
                           (f"render:{body['job_id']}",)).fetchone()["n"]
    assert queued == 1


def test_a_retry_gets_the_kept_answer_and_changes_nothing(user, connect):
    client, admin = user["client"], connect("postgres")
    headers = keyed(user["auth"], "retry-me")
    first = client.post("/v1/shorts/generate", json=GOOD, headers=headers)
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    # the same request, its JSON spelt differently: same meaning, same request
    again = client.post("/v1/shorts/generate", data='{ "topic": "the history of coffee",   "platform": "tiktok" }',
                        content_type="application/json", headers=headers)
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json() and again.headers["Location"] == first.headers["Location"]
    assert jobs_of(admin, user["id"]) == 1 and balance(admin, user["id"]) == 4


def test_the_same_key_with_another_body_is_422_and_changes_nothing(user, connect):
    client, admin = user["client"], connect("postgres")
    headers = keyed(user["auth"], "one-purpose")
    assert client.post("/v1/shorts/generate", json=GOOD, headers=headers).status_code == 202
    other = client.post("/v1/shorts/generate", json={**GOOD, "topic": "something else"}, headers=headers)
    assert other.status_code == 422
    assert "different request" in other.get_json()["detail"]
    elsewhere = client.post("/v1/shorts/batch", json={"items": [GOOD]}, headers=headers)
    assert elsewhere.status_code == 422
    assert jobs_of(admin, user["id"]) == 1 and balance(admin, user["id"]) == 4


def _fingerprint(path: str, body: dict) -> bytes:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(b"\0".join([b"POST", path.encode(), canonical])).digest()


def test_a_retry_while_the_first_runs_is_409_and_goes_through_once_it_rolled_back(user, new_connection, connect):
    """The first request is played by a transaction that has begun the key and not
    committed: a retry waits (1 s here), then 409; once the first rolls back (it failed,
    so nothing is kept) the retry is carried out."""
    holder = new_connection("sg_app")
    holder.execute("begin")
    holder.execute("select set_config('app.user_id', %s, true)", (str(user["id"]),))
    holder.execute("select * from app.begin_idempotent_request('busy', 'POST', '/v1/shorts/generate', %s)",
                   (_fingerprint("/v1/shorts/generate", GOOD),))
    started = time.monotonic()
    busy = user["client"].post("/v1/shorts/generate", json=GOOD, headers=keyed(user["auth"], "busy"))
    assert busy.status_code == 409, busy.get_json()
    assert "still being processed" in busy.get_json()["detail"] and busy.headers["Retry-After"] == "1"
    assert 0.9 <= time.monotonic() - started < 5
    holder.execute("rollback")
    assert jobs_of(connect("postgres"), user["id"]) == 0
    done = user["client"].post("/v1/shorts/generate", json=GOOD, headers=keyed(user["auth"], "busy"))
    assert done.status_code == 202 and "Idempotent-Replayed" not in done.headers


def test_a_refused_request_keeps_nothing_so_its_retry_asks_again(user, connect):
    client, admin = user["client"], connect("postgres")
    for _ in range(5):
        assert client.post("/v1/shorts/generate", json=GOOD, headers=user["auth"]).status_code == 202
    headers = keyed(user["auth"], "when-broke")
    assert client.post("/v1/shorts/generate", json=GOOD, headers=headers).status_code == 402
    admin.execute("select app.grant_credits(%s, 1, 'admin_grant', %s)", (user["id"], f"test:{uuid.uuid4()}"))
    retried = client.post("/v1/shorts/generate", json=GOOD, headers=headers)
    assert retried.status_code == 202 and "Idempotent-Replayed" not in retried.headers
    assert client.post("/v1/shorts/generate", json=GOOD, headers=headers).headers["Idempotent-Replayed"] == "true"
    assert jobs_of(admin, user["id"]) == 6 and balance(admin, user["id"]) == 0 == ledger_sum(admin, user["id"])


def test_keys_belong_to_their_user(wide_app, user, connect):
    other_client = client_with_own_ip(wide_app)
    other = api_signup(other_client)
    verify(connect("postgres"), other["user"]["id"])
    mine = user["client"].post("/v1/shorts/generate", json=GOOD, headers=keyed(user["auth"], "shared-name"))
    theirs = other_client.post("/v1/shorts/generate", json=GOOD,
                               headers=keyed(bearer(other["access_token"]), "shared-name"))
    assert mine.status_code == theirs.status_code == 202
    assert mine.get_json()["job_id"] != theirs.get_json()["job_id"]
    assert "Idempotent-Replayed" not in theirs.headers


def test_a_kept_answer_expires_after_24_hours(user, connect):
    admin = connect("postgres")
    headers = keyed(user["auth"], "yesterday")
    first = user["client"].post("/v1/shorts/generate", json=GOOD, headers=headers).get_json()
    kept = admin.execute("select expires_at - created_at as ttl from idempotency_keys where user_id = %s",
                         (user["id"],)).fetchone()
    assert kept["ttl"].total_seconds() == 24 * 3600
    admin.execute("update idempotency_keys set expires_at = now() - interval '1 second' where user_id = %s",
                  (user["id"],))
    second = user["client"].post("/v1/shorts/generate", json=GOOD, headers=headers)
    assert second.status_code == 202 and second.get_json()["job_id"] != first["job_id"]
    admin.execute("update idempotency_keys set expires_at = now() - interval '1 second' where user_id = %s",
                  (user["id"],))
    worker = connect("sg_worker")
    assert worker.execute("select app.purge_idempotency_keys() as n").fetchone()["n"] >= 1
    assert admin.execute("select count(*) as n from idempotency_keys where user_id = %s",
                         (user["id"],)).fetchone()["n"] == 0


def test_an_answer_holding_a_secret_is_never_stored_or_replayed(user, connect):
    admin = connect("postgres")
    set_tier(admin, user["id"], "pro")
    headers = keyed(user["auth"], "new-key")
    created = user["client"].post("/v1/keys", json={"name": "ci"}, headers=headers)
    assert created.status_code == 201 and created.get_json()["key"].startswith("sk_")
    again = user["client"].post("/v1/keys", json={"name": "ci"}, headers=headers)
    assert again.status_code == 409 and "shown only once" in again.get_json()["detail"]
    assert len(user["client"].get("/v1/keys", headers=user["auth"]).get_json()["keys"]) == 1
    stored = admin.execute("select response_body from idempotency_keys where user_id = %s and key = 'new-key'",
                           (user["id"],)).fetchone()
    assert stored["response_body"] is None


def test_operations_outside_one_transaction_hold_the_key_until_they_finish(wide_app, connect):
    """Resending the verification mail is carried out in transactions of its own (its
    throttle must count even when it refuses): the key is held first, so a retry meanwhile
    is 409, and its answer is kept when it succeeds."""
    client = client_with_own_ip(wide_app)
    tokens = api_signup(client)  # unconfirmed: it may ask for the mail again
    user_id, auth = tokens["user"]["id"], bearer(tokens["access_token"])
    admin = connect("postgres")
    with acting_as(admin, user_id):
        admin.execute("insert into idempotency_keys (user_id, key, method, path, request_hash) "
                      "values (%s, 'held-elsewhere', 'POST', '/v1/auth/verify/resend', %s)",
                      (user_id, hashlib.sha256(b"POST\0/v1/auth/verify/resend\0").digest()))
    held = client.post("/v1/auth/verify/resend", headers=keyed(auth, "held-elsewhere"))
    assert held.status_code == 409 and "still being processed" in held.get_json()["detail"]
    # an in-flight mark left by a process that died stops blocking after 10 minutes
    admin.execute("update idempotency_keys set created_at = now() - interval '11 minutes' "
                  "where key = 'held-elsewhere' and user_id = %s", (user_id,))
    mails = "select count(*) as n from email_outbox where user_id = %s"
    before = admin.execute(mails, (user_id,)).fetchone()["n"]
    first = client.post("/v1/auth/verify/resend", headers=keyed(auth, "held-elsewhere"))
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    replay = client.post("/v1/auth/verify/resend", headers=keyed(auth, "held-elsewhere"))
    assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json() == first.get_json()
    assert admin.execute(mails, (user_id,)).fetchone()["n"] == before + 1


def test_a_failed_held_request_gives_its_key_back(user, connect):
    headers = keyed(user["auth"], "wrong-code")
    body = {"password": "not the password", "code": "000000"}
    assert user["client"].post("/v1/auth/2fa/disable", json=body, headers=headers).status_code in (401, 403, 409)
    assert connect("postgres").execute("select count(*) as n from idempotency_keys where key = 'wrong-code' "
                                       "and user_id = %s", (user["id"],)).fetchone()["n"] == 0


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "caf\u00e9"])
def test_a_malformed_key_is_422(user, key, connect):
    response = user["client"].post("/v1/shorts/generate", json=GOOD,
                                   headers={**user["auth"], "Idempotency-Key": key.encode("utf-8").decode("latin-1")})
    assert response.status_code == 422 and response.get_json()["field"] == "Idempotency-Key"
    assert jobs_of(connect("postgres"), user["id"]) == 0


def test_sg_app_cannot_read_or_forge_kept_answers(user, connect):
    app_conn = connect("sg_app")
    with acting_as(app_conn, user["id"]):
        with pytest.raises(Exception) as denied:
            app_conn.execute("select * from idempotency_keys")
    assert getattr(denied.value, "sqlstate", None) == "42501"
