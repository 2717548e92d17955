"""The Python client (clients/python) against a live gunicorn, configured as deployed
(rate limits on): typed answers, errors by meaning, retries that never spend twice, and
the webhook signature helper."""
from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from .conftest import STRONG_PASSWORD, balance, ledger_sum, set_tier, unique_email, verify
from .test_slow_clients import served

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "clients" / "python"))

import storygenius  # noqa: E402
from storygenius import (AuthenticationError, Batch, Client, GenerateAccepted, InsufficientCredits,  # noqa: E402
                         InvalidRequest, Job, NotFound, PermissionDenied, RateLimited, WebhookSignatureError,
                         sign_webhook, verify_webhook)


@pytest.fixture(scope="module")
def server(database_dsn, media_root):
    with served(database_dsn, media_root) as base:
        yield base


def _signup(server: str) -> dict:
    response = httpx.post(f"{server}/v1/auth/signup", json={"email": unique_email("sdk"), "password": STRONG_PASSWORD})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def pro(server, connect):
    """A Pro customer with 20 credits, its access token and an SDK client on a new key."""
    tokens = _signup(server)
    admin = connect("postgres")
    user_id = tokens["user"]["id"]
    set_tier(admin, user_id, "pro")
    admin.execute("select app.grant_credits(%s, 15, 'admin_grant', %s)", (user_id, f"test:{uuid.uuid4()}"))
    with Client(access_token=tokens["access_token"], base_url=server) as account:
        key = account.create_key("sdk tests")
    assert key.key.startswith("sk_") and key.scopes == ["videos:write", "videos:read", "credits:read",
                                                         "webhooks:manage"]
    client = Client(key.key, base_url=server, backoff=0.05)
    yield {"id": user_id, "client": client, "token": tokens["access_token"], "key": key}
    client.close()


def test_generate_follow_and_list_with_typed_answers(pro, connect):
    sg: Client = pro["client"]
    accepted = sg.generate("tiktok", "the history of coffee", duration_seconds=15)
    assert isinstance(accepted, GenerateAccepted) and accepted.credits_remaining == 19
    job = sg.get_job(accepted.job_id)
    assert isinstance(job, Job) and job.status == "queued" and job.duration_seconds == 15 and not job.finished
    page, next_before = sg.list_jobs(limit=10)
    assert [j.job_id for j in page] == [accepted.job_id] and next_before is None
    assert [j.job_id for j in sg.iter_jobs(page_size=1)] == [accepted.job_id]
    credits = sg.credits()
    assert credits.tier == "pro" and credits.credits_remaining == 19
    assert [u.action for u in sg.usage()] == ["video_generation"]
    # the plan's limit, counted for this key, as the server's headers said
    assert sg.rate_limit.limit == 60 and 0 < sg.rate_limit.remaining < 60 and 1 <= sg.rate_limit.reset <= 60


def test_a_batch_through_the_client(pro):
    sg: Client = pro["client"]
    made = sg.create_batch([{"platform": "tiktok", "topic": f"owl fact {i}"} for i in range(3)])
    batch = sg.get_batch(made.batch_id)
    assert isinstance(batch, Batch) and batch.total == 3 and batch.status == "queued"
    assert [item.job_id for item in batch.items] == made.job_ids and all(isinstance(i, Job) for i in batch.items)
    with pytest.raises(InsufficientCredits) as short:
        sg.create_batch([{"platform": "tiktok", "topic": f"bee fact {i}"} for i in range(50)])
    assert "needs 50 credits and you have 17" in short.value.detail


class DropsFirstAnswer(httpx.HTTPTransport):
    """Delivers each request but loses the answer of the first POST, as a network that
    fails after the server has done the work would: the client must retry."""

    def __init__(self):
        super().__init__()
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        response = super().handle_request(request)
        if request.method == "POST" and len([r for r in self.sent if r.method == "POST"]) == 1:
            response.read()
            response.close()
            raise httpx.ReadError("connection reset after the request was sent", request=request)
        return response


def test_a_retry_after_a_lost_answer_spends_no_second_credit(server, pro, connect):
    transport = DropsFirstAnswer()
    with Client(pro["key"].key, base_url=server, transport=transport, backoff=0.01) as sg:
        accepted = sg.generate("youtube_shorts", "why cats purr")
    posts = [r for r in transport.sent if r.method == "POST"]
    assert len(posts) == 2
    assert posts[0].headers["Idempotency-Key"] == posts[1].headers["Idempotency-Key"]
    uuid.UUID(posts[0].headers["Idempotency-Key"])  # a fresh UUID by default
    admin = connect("postgres")
    assert admin.execute("select count(*) as n from jobs where user_id = %s", (pro["id"],)).fetchone()["n"] == 1
    assert accepted.credits_remaining == 19 == balance(admin, pro["id"]) == ledger_sum(admin, pro["id"])


def test_a_callers_own_idempotency_key_makes_a_repeat_the_same_video(pro):
    sg: Client = pro["client"]
    first = sg.generate("tiktok", "how bees dance", idempotency_key="order-1234")
    again = sg.generate("tiktok", "how bees dance", idempotency_key="order-1234")
    assert again == first
    with pytest.raises(InvalidRequest) as reused:
        sg.generate("tiktok", "something else", idempotency_key="order-1234")
    assert "different request" in reused.value.detail


def test_refusals_are_typed_errors(server, pro):
    sg: Client = pro["client"]
    with pytest.raises(InvalidRequest) as invalid:
        sg.generate("myspace", "a fine topic")  # type: ignore[arg-type]
    assert invalid.value.status == 422 and invalid.value.field == "platform"
    with pytest.raises(NotFound):
        sg.get_job(str(uuid.uuid4()))
    with pytest.raises(AuthenticationError):
        Client("sk_" + "x" * 43, base_url=server).credits()
    with Client(access_token=pro["token"], base_url=server) as account:
        reader = account.create_key("reader", scopes=["videos:read"])
    with Client(reader.key, base_url=server) as sg_reader, pytest.raises(PermissionDenied) as denied:
        sg_reader.generate("tiktok", "a fine topic")
    assert denied.value.detail == "This API key lacks the videos:write scope."


def test_past_the_rate_limit_the_client_says_how_long_to_wait(server, connect):
    tokens = _signup(server)
    verify(connect("postgres"), tokens["user"]["id"])
    with Client(access_token=tokens["access_token"], base_url=server, max_retries=0) as sg:
        for _ in range(20):  # Free: 20 a minute
            sg.credits()
        assert sg.rate_limit.remaining == 0
        with pytest.raises(RateLimited) as limited:
            sg.credits()
    assert 1 <= limited.value.retry_after <= 60


def test_webhook_signatures_verify_and_forgeries_do_not():
    secret = "whsec_" + "s" * 32
    body = json.dumps({"type": "render.completed", "data": {"job_id": "j1"}}).encode()
    header = sign_webhook(body, secret)
    assert verify_webhook(body, header, secret) == {"type": "render.completed", "data": {"job_id": "j1"}}
    # Stripe's convention, written out: v1 is hex HMAC-SHA256 of "t.body" keyed with the secret
    timestamp = header.split(",")[0][2:]
    import hashlib
    import hmac

    assert header == f"t={timestamp},v1=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body,
                                                      hashlib.sha256).hexdigest()
    # during a secret roll a delivery carries one signature per secret: either verifies
    rolled = header + ",v1=" + "0" * 64
    assert verify_webhook(body, rolled, secret)["type"] == "render.completed"
    for bad_body, bad_header, bad_secret in (
            (body + b" ", header, secret),                       # body changed
            (body, header, "whsec_other"),                       # another endpoint's secret
            (body, header.replace("v1=", "v0="), secret),        # no v1 signature
            (body, "", secret), (body, None, secret),            # no header
            (body, sign_webhook(body, secret, int(time.time()) - 301), secret)):  # replayed too late
        with pytest.raises(WebhookSignatureError):
            verify_webhook(bad_body, bad_header, bad_secret)


def test_a_delivery_signed_by_the_worker_verifies_with_the_client():
    """The worker's signer (worker/webhooks.py) and the client's checker agree."""
    from worker.webhooks import delivery_headers

    secret = "whsec_" + uuid.uuid4().hex
    body = json.dumps({"id": "evt_1", "type": "batch.completed", "data": {"object": {"batch_id": "b1"}}}).encode()
    headers = delivery_headers(secret, body, "evt_1", "batch.completed")
    assert verify_webhook(body, headers[storygenius.SIGNATURE_HEADER], secret)["type"] == "batch.completed"
    with pytest.raises(WebhookSignatureError):
        verify_webhook(body, headers[storygenius.SIGNATURE_HEADER], "whsec_wrong")


def test_the_client_is_typed_and_versioned():
    assert (Path(storygenius.__file__).parent / "py.typed").exists()
    assert storygenius.__version__ == "0.1.0"
