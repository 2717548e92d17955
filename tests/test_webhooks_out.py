"""Webhooks to customers (issue 20 item 3), delivered to a loopback receiver this test
starts: events written in the business change's own transaction, signed deliveries that
verify, retries with backoff after 5xx, giving up after three days (endpoint disabled,
owner mailed), the SSRF rules (outside local mode nothing private is ever connected to,
also through DNS rebinding and redirects), the delivery log, "send test event" and
"resend" on the API and the page, and tenancy."""
from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pgqueuer
import psycopg
import pytest
from pgqueuer.types import QueueExecutionMode
from psycopg_pool import AsyncConnectionPool

from web import create_app
from web.config import role_dsn
from worker import webhooks
from worker.main import WorkerSettings
from worker.webhooks import WebhookSettings, deliver_once, register_webhooks, verify_signature

from .conftest import api_signup, bearer, client_with_own_ip, set_tier
from .test_auth_ui import csrf_token, log_in

LOCAL = WebhookSettings(allow_private_addresses=True, retry_base=timedelta(milliseconds=10), timeout_seconds=5)
STRICT = WebhookSettings(allow_private_addresses=False, retry_base=timedelta(milliseconds=10), timeout_seconds=5)


class Receiver:
    """An HTTP server on 127.0.0.1 that logs every request and answers the statuses it is
    told to (the last one repeats)."""

    def __init__(self, statuses=(200,), headers: dict | None = None):
        self.requests: list[dict] = []
        self.statuses = list(statuses)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def start(statuses=(200,), headers=None):
        made.append(Receiver(statuses, headers))
        return made[-1]

    yield start
    for r in made:
        r.close()


@pytest.fixture(scope="module")
def hook_app(database_dsn, media_root):
    """The app in explicit local mode (private addresses allowed), as `make run` would be
    for a developer whose receiver runs on their machine."""
    app = create_app({"TESTING": True, "DATABASE_URL": database_dsn, "MEDIA_ROOT": str(media_root),
                      "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": True})
    yield app
    app.extensions["sg_pool"].close()


@pytest.fixture(scope="module")
def strict_app(database_dsn, media_root):
    """The app with the address rules on (any deployment that did not opt into local mode)."""
    app = create_app({"TESTING": True, "DATABASE_URL": database_dsn, "MEDIA_ROOT": str(media_root),
                      "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": False})
    yield app
    app.extensions["sg_pool"].close()


def pro_customer(app, connect, tier: str = "pro") -> dict:
    client = client_with_own_ip(app)
    tokens = api_signup(client)
    set_tier(connect("postgres"), tokens["user"]["id"], tier)
    return {"client": client, "headers": bearer(tokens["access_token"]), "id": tokens["user"]["id"],
            "email": tokens["user"]["email"]}


def add_endpoint(customer, url: str, types=None) -> dict:
    body = {"url": url, **({"event_types": types} if types else {})}
    answer = customer["client"].post("/v1/webhooks/endpoints", json=body, headers=customer["headers"])
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()


def run_async(coroutine):
    """Run a coroutine to its end on a thread of its own: once a browser test of the same
    session has started Playwright's sync API, an event loop runs on the main thread for
    good, and asyncio refuses to start another there."""
    result = {}

    def target():
        try:
            result["value"] = asyncio.run(coroutine)
        except BaseException as error:  # noqa: BLE001 - handed back to the caller below
            result["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


@pytest.fixture
def worker_pool(database_dsn):
    """The worker role's pool, as worker/main.py builds it, for calling deliver_once (on a
    loop running on its own thread, for the reason run_async gives)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def on_loop(coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    pool = AsyncConnectionPool(role_dsn(database_dsn, "sg_worker"), min_size=1, max_size=2,
                               kwargs={"autocommit": True}, open=False)
    on_loop(pool.open())

    def deliver(delivery_id, settings=LOCAL) -> str:
        return on_loop(deliver_once(pool, str(delivery_id), settings))

    yield deliver
    on_loop(pool.close())
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


def generate(customer) -> str:
    answer = customer["client"].post("/v1/shorts/generate", json={"platform": "tiktok", "topic": "Webhook topics"},
                                     headers=customer["headers"])
    assert answer.status_code == 202, answer.get_json()
    return answer.get_json()["job_id"]


def finish_job(connect, job_id: str, ok: bool = True) -> None:
    """What the render worker does at the end of a job, through its own functions."""
    worker = connect("sg_worker")
    attempt = worker.execute("select attempts from app.claim_job(%s)", (job_id,)).fetchone()["attempts"]
    if ok:
        assert worker.execute("select app.complete_job(%s, %s, %s) as ok",
                              (job_id, attempt, f"/media/{job_id}.mp4")).fetchone()["ok"]
    else:
        assert worker.execute("select app.fail_job(%s, %s, 'Render failed — we refunded your credit.') as ok",
                              (job_id, attempt)).fetchone()["ok"]


def deliveries(admin, user_id, event_type=None) -> list[dict]:
    return admin.execute(
        "select d.*, ev.type, ev.body from webhook_deliveries d join webhook_events ev on ev.id = d.event_id "
        "where d.user_id = %s and (%s::text is null or ev.type = %s) order by d.created_at, d.id",
        (user_id, event_type, event_type)).fetchall()


def drain_webhook_worker(database_dsn: str, settings: WebhookSettings) -> None:
    """pgqueuer with the webhook entrypoint, in this process, until nothing is due."""

    async def main():
        from contextlib import asynccontextmanager

        from worker.main import _asyncpg_params
        import asyncpg

        dsn = role_dsn(database_dsn, "sg_worker")

        @asynccontextmanager
        async def factory():
            queue_conn = await asyncpg.connect(**_asyncpg_params(dsn))
            pool = AsyncConnectionPool(dsn, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False)
            await pool.open()
            try:
                pgq = pgqueuer.PgQueuer.from_asyncpg_connection(queue_conn)
                register_webhooks(pgq, pool, settings)
                yield pgq
            finally:
                await pool.close()
                await queue_conn.close()

        await asyncio.wait_for(pgqueuer.run(factory, mode=QueueExecutionMode.drain, batch_size=1,
                                            max_concurrent_tasks=2, dequeue_timeout=timedelta(seconds=1),
                                            shutdown=asyncio.Event()), timeout=60)

    run_async(main())


# --- events, signatures, delivery through the queue ----------------------------------------


def test_render_completed_is_delivered_through_the_queue_and_its_signature_verifies(
        hook_app, connect, database_dsn, receiver):
    hook = receiver()
    customer = pro_customer(hook_app, connect)
    endpoint = add_endpoint(customer, hook.url, ["render.completed", "render.failed"])
    assert endpoint["secret"].startswith("whsec_") and len(endpoint["secret"]) > 60
    job_id = generate(customer)
    finish_job(connect, job_id)

    admin = connect("postgres")
    [queued] = deliveries(admin, customer["id"])
    assert queued["type"] == "render.completed" and queued["status"] == "pending"
    entry = admin.execute("select entrypoint from pgqueuer where dedupe_key = %s",
                          (f"webhook:{queued['id']}:1",)).fetchone()
    assert entry["entrypoint"] == "webhook_delivery"  # queued with the job's completion

    drain_webhook_worker(database_dsn, LOCAL)

    [request] = hook.requests
    assert request["path"] == "/hooks"
    body = json.loads(request["body"])
    assert body["type"] == "render.completed" and body["data"]["object"]["job_id"] == job_id
    assert body["data"]["object"]["video_url"] == f"/media/{job_id}.mp4"
    signature = request["headers"]["Story-Genius-Signature"]
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", signature)
    assert verify_signature(endpoint["secret"], signature, request["body"])
    assert not verify_signature(endpoint["secret"], signature, request["body"] + b" ")
    assert not verify_signature("whsec_other", signature, request["body"])
    assert request["headers"]["Story-Genius-Event-Id"] == body["id"]

    [done] = deliveries(admin, customer["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 1 and done["last_status_code"] == 200
    assert done["last_latency_ms"] is not None and done["finished_at"] is not None


def test_the_documented_verification_snippet_verifies_a_real_delivery(hook_app, connect, receiver, worker_pool):
    """The code on the webhooks page is the code a customer copies: run it on a delivery."""
    hook = receiver()
    customer = pro_customer(hook_app, connect)
    endpoint = add_endpoint(customer, hook.url)
    delivery = customer["client"].post(f"/v1/webhooks/endpoints/{endpoint['id']}/test", headers=customer["headers"])
    assert delivery.status_code == 202 and delivery.get_json()["event_type"] == "webhook.test"
    assert worker_pool(delivery.get_json()["id"]) == "succeeded"

    browser = client_with_own_ip(hook_app)
    log_in(browser, customer["email"])
    page = browser.get("/webhooks").get_data(as_text=True)
    snippet = re.search(r"<pre[^>]*><code>(.*?)</code></pre>", page, re.S).group(1)
    snippet = snippet.replace("&gt;", ">").replace("&lt;", "<").replace("&#34;", '"').replace("&amp;", "&")
    namespace: dict = {}
    exec(snippet, namespace)  # noqa: S102 - our own page's code
    [request] = hook.requests
    header = request["headers"]["Story-Genius-Signature"]
    assert namespace["verify"](endpoint["secret"], header, request["body"])
    assert not namespace["verify"](endpoint["secret"], header, request["body"].replace(b"test", b"tost"))


def test_render_failed_says_the_credit_was_refunded(hook_app, connect, receiver, worker_pool):
    hook = receiver()
    customer = pro_customer(hook_app, connect)
    add_endpoint(customer, hook.url, ["render.failed"])
    job_id = generate(customer)
    finish_job(connect, job_id, ok=False)
    [queued] = deliveries(connect("postgres"), customer["id"])
    assert worker_pool(queued["id"]) == "succeeded"
    body = json.loads(hook.requests[0]["body"])
    assert body["type"] == "render.failed"
    assert body["data"]["object"]["credits_refunded"] == 1 and body["data"]["object"]["status"] == "failed"


def test_an_event_exists_only_if_its_change_committed(hook_app, connect, receiver):
    customer = pro_customer(hook_app, connect)
    add_endpoint(customer, receiver().url, ["render.completed"])
    job_id = generate(customer)
    worker, admin = connect("sg_worker"), connect("postgres")
    queued_before = admin.execute("select count(*) as n from pgqueuer where entrypoint = 'webhook_delivery'"
                                  ).fetchone()["n"]
    attempt = worker.execute("select attempts from app.claim_job(%s)", (job_id,)).fetchone()["attempts"]
    with pytest.raises(psycopg.errors.RaiseException):
        with worker.transaction():
            worker.execute("select app.complete_job(%s, %s, '/media/x.mp4')", (job_id, attempt))
            worker.execute("do $$ begin raise exception 'the completion failed after all'; end $$")
    assert deliveries(admin, customer["id"]) == []
    assert admin.execute("select count(*) as n from webhook_events where user_id = %s",
                         (customer["id"],)).fetchone()["n"] == 0
    assert admin.execute("select count(*) as n from pgqueuer where entrypoint = 'webhook_delivery'"
                         ).fetchone()["n"] == queued_before
    # and once it commits, the event is there
    finish_job(connect, job_id)
    assert [d["type"] for d in deliveries(admin, customer["id"])] == ["render.completed"]


def test_only_subscribed_types_are_sent_and_unsubscribed_accounts_store_nothing(hook_app, connect, receiver):
    customer = pro_customer(hook_app, connect)
    add_endpoint(customer, receiver().url, ["render.failed"])
    finish_job(connect, generate(customer))  # completed: not subscribed
    admin = connect("postgres")
    assert deliveries(admin, customer["id"]) == []
    assert admin.execute("select count(*) as n from webhook_events where user_id = %s",
                         (customer["id"],)).fetchone()["n"] == 0


def test_balance_and_subscription_events(hook_app, connect, receiver):
    customer = pro_customer(hook_app, connect)  # 100 credits a month: low at 20
    add_endpoint(customer, receiver().url, ["credits.low", "credits.expiring", "subscription.updated"])
    admin = connect("postgres")
    admin.execute("update subscriptions set credits_remaining = 22, credits_total = 100 where user_id = %s",
                  (customer["id"],))
    admin.execute("insert into credit_ledger (user_id, delta, reason, idempotency_key) "
                  "select %s, 22 - coalesce(sum(delta), 0), 'admin_grant', 'webhook-test-balance:' || %s "
                  "from credit_ledger where user_id = %s", (customer["id"], customer["id"], customer["id"]))
    for _ in range(4):
        generate(customer)  # 22 -> 18: crosses 20 once
    low = deliveries(admin, customer["id"], "credits.low")
    assert len(low) == 1
    assert low[0]["body"]["data"]["object"]["credits_remaining"] == 20

    admin.execute("update subscriptions set tier = 'agency', cancel_at_period_end = true where user_id = %s",
                  (customer["id"],))
    [updated] = deliveries(admin, customer["id"], "subscription.updated")
    assert updated["body"]["data"]["object"]["tier"] == "agency"
    assert updated["body"]["data"]["object"]["cancel_at_period_end"] is True

    admin.execute("update subscriptions set current_period_end = now() + interval '1 day' where user_id = %s",
                  (customer["id"],))
    worker = connect("sg_worker")
    assert worker.execute("select app.emit_credits_expiring() as n").fetchone()["n"] >= 1
    worker.execute("select app.emit_credits_expiring()")  # the next day's run: once per period
    [expiring] = deliveries(admin, customer["id"], "credits.expiring")
    assert expiring["body"]["data"]["object"]["credits_remaining"] == 18


# --- retries, giving up, disabling -----------------------------------------------------------


def test_retries_after_500s_with_exponential_backoff_then_succeeds(hook_app, connect, receiver, worker_pool):
    hook = receiver(statuses=(500, 503, 200))
    customer = pro_customer(hook_app, connect)
    endpoint = add_endpoint(customer, hook.url)
    delivery_id = customer["client"].post(f"/v1/webhooks/endpoints/{endpoint['id']}/test",
                                          headers=customer["headers"]).get_json()["id"]
    admin = connect("postgres")
    waits = []
    for expected in ("retrying", "retrying", "succeeded"):
        assert worker_pool(delivery_id) == expected
        row = admin.execute("select d.*, (select max(attempted_at) from webhook_attempts a where a.delivery_id = d.id) "
                            "as recorded_at from webhook_deliveries d where id = %s", (delivery_id,)).fetchone()
        if expected == "retrying":
            waits.append((row["next_attempt_at"] - row["recorded_at"]).total_seconds())
            # the next attempt is queued in pgqueuer for then
            due = admin.execute("select execute_after from pgqueuer where dedupe_key = %s",
                                (f"webhook:{delivery_id}:{row['attempts'] + 1}",)).fetchone()["execute_after"]
            assert abs((due - row["next_attempt_at"]).total_seconds()) < 0.01
    assert waits == [0.01, 0.03]  # the base, then three times it
    detail = customer["client"].get(f"/v1/webhooks/deliveries/{delivery_id}", headers=customer["headers"]).get_json()
    assert [(a["attempt"], a["status_code"], a["succeeded"]) for a in detail["attempt_log"]] == [
        (1, 500, False), (2, 503, False), (3, 200, True)]
    assert detail["status"] == "succeeded" and detail["next_attempt_at"] is None
    assert len({r["headers"]["Story-Genius-Event-Id"] for r in hook.requests}) == 1  # one event, three tries
    listed = customer["client"].get("/v1/webhooks/endpoints", headers=customer["headers"]).get_json()["endpoints"]
    assert listed[0]["consecutive_failures"] == 0 and listed[0]["last_success_at"] is not None


def test_the_backoff_schedule_spans_three_days(hook_app, connect, receiver):
    """With the production base (1 minute): waits of 1, 3, 9 … minutes, at most 12 hours,
    until three days have passed; time is moved on by shifting the delivery's window back."""
    customer = pro_customer(hook_app, connect)
    endpoint = add_endpoint(customer, receiver().url)
    delivery_id = customer["client"].post(f"/v1/webhooks/endpoints/{endpoint['id']}/test",
                                          headers=customer["headers"]).get_json()["id"]
    worker, admin = connect("sg_worker"), connect("postgres")
    waits, outcome = [], "retrying"
    while outcome == "retrying":
        attempt = worker.execute("select attempt from app.claim_webhook_delivery(%s)", (delivery_id,)).fetchone()
        outcome = worker.execute("select app.record_webhook_attempt(%s, %s, 502, 40, 'HTTP 502') as o",
                                 (delivery_id, attempt["attempt"])).fetchone()["o"]
        if outcome == "retrying":
            wait = admin.execute("select next_attempt_at - now() as w from webhook_deliveries where id = %s",
                                 (delivery_id,)).fetchone()["w"]
            waits.append(round(wait.total_seconds()))
            # that much time passes
            admin.execute("update webhook_deliveries set created_at = created_at - %(w)s, "
                          "retry_until = retry_until - %(w)s where id = %(d)s", {"w": wait, "d": delivery_id})
    assert waits[:6] == [60, 180, 540, 1620, 4860, 14580] and max(waits) == 12 * 3600
    assert 2.5 * 86400 < sum(waits) <= 3 * 86400
    assert outcome == "disabled" and len(waits) + 1 == 12  # twelve attempts in all


def test_gives_up_after_three_days_disables_the_endpoint_and_mails_the_owner(hook_app, connect, receiver,
                                                                              worker_pool):
    hook = receiver(statuses=(500,))
    customer = pro_customer(hook_app, connect)
    endpoint = add_endpoint(customer, hook.url)
    client, headers = customer["client"], customer["headers"]
    delivery_id = client.post(f"/v1/webhooks/endpoints/{endpoint['id']}/test", headers=headers).get_json()["id"]
    admin = connect("postgres")
    assert worker_pool(delivery_id) == "retrying"
    assert worker_pool(delivery_id) == "retrying"
    # three days pass
    admin.execute("update webhook_deliveries set created_at = created_at - interval '3 days', "
                  "retry_until = now() where id = %s", (delivery_id,))
    assert worker_pool(delivery_id) == "disabled"
    assert len(hook.requests) == 3

    state = client.get("/v1/webhooks/endpoints", headers=headers).get_json()["endpoints"][0]
    assert state["enabled"] is False and "three days" in state["disabled_reason"]
    assert state["consecutive_failures"] == 3
    mail = admin.execute("select kind, data from email_outbox where user_id = %s and kind = 'webhook_disabled'",
                         (customer["id"],)).fetchone()
    assert mail["data"]["url"] == hook.url and mail["data"]["last_error"] == "HTTP 500"
    assert admin.execute("select count(*) as n from pgqueuer where entrypoint = 'send_email' and dedupe_key = "
                         "(select 'email:' || id from email_outbox where user_id = %s and kind = 'webhook_disabled')",
                         (customer["id"],)).fetchone()["n"] == 1

    # nothing more is sent while it is off: a queued attempt finds it disabled
    finish_job(connect, generate(customer))
    assert deliveries(admin, customer["id"], "render.completed") == []
    assert client.post(f"/v1/webhooks/endpoints/{endpoint['id']}/test", headers=headers).status_code == 409
    assert client.post(f"/v1/webhooks/deliveries/{delivery_id}/resend", headers=headers).status_code == 409

    # turned on again, the missed delivery can be resent: same event, three more days
    hook.statuses = [200]
    assert client.post(f"/v1/webhooks/endpoints/{endpoint['id']}/enable", headers=headers).status_code == 200
    resent = client.post(f"/v1/webhooks/deliveries/{delivery_id}/resend", headers=headers)
    assert resent.status_code == 202 and resent.get_json()["status"] == "pending"
    assert worker_pool(delivery_id) == "succeeded"
    assert hook.requests[-1]["headers"]["Story-Genius-Event-Id"] == hook.requests[0]["headers"]["Story-Genius-Event-Id"]


def test_an_attempt_overtaken_by_a_resend_is_not_recorded_twice(hook_app, connect, receiver):
    customer = pro_customer(hook_app, connect)
    endpoint = add_endpoint(customer, receiver().url)
    delivery_id = customer["client"].post(f"/v1/webhooks/endpoints/{endpoint['id']}/test",
                                          headers=customer["headers"]).get_json()["id"]
    worker = connect("sg_worker")
    first = worker.execute("select attempt from app.claim_webhook_delivery(%s)", (delivery_id,)).fetchone()
    second = worker.execute("select attempt from app.claim_webhook_delivery(%s)", (delivery_id,)).fetchone()
    assert worker.execute("select app.record_webhook_attempt(%s, %s, 500, 5, 'HTTP 500') as o",
                          (delivery_id, first["attempt"])).fetchone()["o"] == "superseded"
    assert worker.execute("select app.record_webhook_attempt(%s, %s, 200, 5, null) as o",
                          (delivery_id, second["attempt"])).fetchone()["o"] == "succeeded"
    assert worker.execute("select app.record_webhook_attempt(%s, %s, 200, 5, null) as o",
                          (delivery_id, second["attempt"])).fetchone()["o"] == "superseded"
    assert connect("postgres").execute("select count(*) as n from webhook_attempts where delivery_id = %s",
                                       (delivery_id,)).fetchone()["n"] == 1


# --- the sender cannot reach internal addresses ------------------------------------------------

INTERNAL_URLS = ["https://127.0.0.1/hooks", "https://10.0.0.1/hooks", "https://169.254.169.254/latest/meta-data",
                 "https://[::1]/hooks", "https://localhost/hooks", "https://0.0.0.0/", "https://[::ffff:127.0.0.1]/",
                 "https://100.64.0.1/", "https://192.168.1.1/", "https://[fd00:ec2::254]/", "https://[fe80::1]/",
                 "https://2130706433/"]


@pytest.mark.parametrize("url", INTERNAL_URLS)
def test_internal_addresses_are_refused_at_registration(strict_app, connect, url):
    customer = pro_customer(strict_app, connect)
    answer = customer["client"].post("/v1/webhooks/endpoints", json={"url": url}, headers=customer["headers"])
    assert answer.status_code == 422 and answer.get_json()["field"] == "url", answer.get_json()
    assert "non-public address" in answer.get_json()["detail"]
    assert connect("postgres").execute("select count(*) as n from webhook_endpoints where user_id = %s",
                                       (customer["id"],)).fetchone()["n"] == 0


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "fd00:ec2::254",
                                     "::ffff:10.0.0.1", "100.100.100.200", "224.0.0.1"])
def test_internal_addresses_are_refused_at_delivery_without_connecting(hook_app, connect, receiver, worker_pool,
                                                                       monkeypatch, address):
    """An endpoint whose name resolves to an internal address by the time of delivery (or
    one stored before the rules): nothing connects, the log says why."""
    hook = receiver()
    customer = pro_customer(hook_app, connect)
    monkeypatch.setattr(webhooks, "resolve", lambda host, port: [address])
    endpoint = add_endpoint(customer, "https://hooks.customer.test/in")  # local mode: accepted
    connected = []
    monkeypatch.setattr(webhooks, "open_socket", lambda *a, **k: connected.append(a) or (_ for _ in ()).throw(
        ConnectionRefusedError()))
    delivery_id = customer["client"].post(f"/v1/webhooks/endpoints/{endpoint['id']}/test",
                                          headers=customer["headers"]).get_json()["id"]
    assert worker_pool(delivery_id, STRICT) == "retrying"
    assert connected == [] and hook.requests == []
    row = connect("postgres").execute("select last_error, last_status_code from webhook_deliveries where id = %s",
                                      (delivery_id,)).fetchone()
    assert row["last_status_code"] is None and "non-public address" in row["last_error"]


def test_the_real_loopback_receiver_is_unreachable_outside_local_mode(hook_app, connect, receiver, worker_pool):
    hook = receiver()
    customer = pro_customer(hook_app, connect)
    endpoint = add_endpoint(customer, hook.url)  # registered in local mode
    delivery_id = customer["client"].post(f"/v1/webhooks/endpoints/{endpoint['id']}/test",
                                          headers=customer["headers"]).get_json()["id"]
    assert worker_pool(delivery_id, STRICT) == "retrying"
    assert hook.requests == []


def test_dns_rebinding_cannot_move_the_connection(monkeypatch):
    """The host is resolved once; the connection goes to the address that was checked,
    however the name resolves a moment later."""
    answers = iter([["93.184.215.14"], ["127.0.0.1"], ["127.0.0.1"]])
    resolved, connected = [], []
    monkeypatch.setattr(webhooks, "open_socket",
                        lambda address, timeout: connected.append(address) or (_ for _ in ()).throw(
                            ConnectionRefusedError(111, "Connection refused")))
    outcome = webhooks.post("https://rebind.attacker.test/x", b"{}", {}, STRICT,
                            resolver=lambda host, port: resolved.append(host) or next(answers))
    assert resolved == ["rebind.attacker.test"]
    assert connected == [("93.184.215.14", 443)]
    assert outcome.status_code is None and "Could not connect" in outcome.error
    # a name that answers with a public and a private address is refused outright
    mixed = webhooks.post("https://mixed.attacker.test/x", b"{}", {}, STRICT,
                          resolver=lambda host, port: ["93.184.215.14", "10.1.2.3"])
    assert "non-public address (10.1.2.3)" in mixed.error and len(connected) == 1


def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_deadline():
    """The socket timeout bounds each read; a byte every 0.2 s would dodge it for ever, so
    the whole exchange has a deadline too."""
    import socket as sockets

    server = sockets.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def trickle():
        conn, _ = server.accept()
        conn.recv(65536)
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 200:
            if stop.is_set():
                break
            try:
                conn.send(bytes([byte]))
            except OSError:
                break
            time.sleep(0.2)
        conn.close()

    threading.Thread(target=trickle, daemon=True).start()
    settings = WebhookSettings(allow_private_addresses=True, timeout_seconds=1)
    started = time.monotonic()
    outcome = webhooks.post(f"http://127.0.0.1:{server.getsockname()[1]}/", b"{}", {}, settings)
    stop.set()
    server.close()
    assert time.monotonic() - started < 2.5
    assert outcome.status_code is None and outcome.error == "No complete answer within 1 s."


def test_redirects_are_not_followed(hook_app, connect, receiver, worker_pool):
    inner = receiver()
    outer = receiver(statuses=(307,), headers={"Location": inner.url})
    customer = pro_customer(hook_app, connect)
    endpoint = add_endpoint(customer, outer.url)
    delivery_id = customer["client"].post(f"/v1/webhooks/endpoints/{endpoint['id']}/test",
                                          headers=customer["headers"]).get_json()["id"]
    assert worker_pool(delivery_id) == "retrying"
    assert len(outer.requests) == 1 and inner.requests == []
    row = connect("postgres").execute("select last_error from webhook_deliveries where id = %s",
                                      (delivery_id,)).fetchone()
    assert "redirects are not followed" in row["last_error"]


def test_plain_http_and_credentials_in_urls_are_refused_in_production(database_dsn, media_root, connect):
    app = create_app({"TESTING": False, "DEBUG": False, "SECRET_KEY": "x" * 40, "DATABASE_URL": database_dsn,
                      "MEDIA_ROOT": str(media_root), "BILLING_MODE": "stripe", "STRIPE_SECRET_KEY": "sk_test_x",
                      "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": False})
    try:
        customer = pro_customer(app, connect)
        for url, problem in [("http://93.184.215.14/hooks", "must use https"),
                             ("https://user:pw@93.184.215.14/hooks", "user name or password"),
                             ("ftp://93.184.215.14/hooks", "must start with https://")]:
            answer = customer["client"].post("/v1/webhooks/endpoints", json={"url": url},
                                             headers=customer["headers"], base_url="https://localhost")
            assert answer.status_code == 422 and problem in answer.get_json()["detail"], (url, answer.get_json())
        # a public address is accepted (it is checked again before every delivery)
        answer = customer["client"].post("/v1/webhooks/endpoints", json={"url": "https://93.184.215.14/hooks"},
                                         headers=customer["headers"], base_url="https://localhost")
        assert answer.status_code == 201, answer.get_json()
    finally:
        app.extensions["sg_pool"].close()


# --- who may do what ---------------------------------------------------------------------------


def test_plans_without_api_access_cannot_add_endpoints(hook_app, connect, receiver):
    client = client_with_own_ip(hook_app)
    tokens = api_signup(client)
    answer = client.post("/v1/webhooks/endpoints", json={"url": receiver().url},
                         headers=bearer(tokens["access_token"]))
    assert answer.status_code == 403 and "Pro and Agency" in answer.get_json()["detail"]


def test_bad_input_is_a_clear_422(hook_app, connect):
    customer = pro_customer(hook_app, connect)
    for body, field in [({}, "url"), ({"url": 5}, "url"), ({"url": "https://x.test/", "event_types": []}, "event_types"),
                        ({"url": "https://x.test/", "event_types": ["video.exploded"]}, "event_types"),
                        ({"url": "not a url at all"}, "url")]:
        answer = customer["client"].post("/v1/webhooks/endpoints", json=body, headers=customer["headers"])
        assert answer.status_code == 422 and answer.get_json()["field"] == field, (body, answer.get_json())


def test_other_users_see_nothing_and_the_web_role_never_reads_a_secret(hook_app, connect, receiver):
    owner = pro_customer(hook_app, connect)
    endpoint = add_endpoint(owner, receiver().url)
    delivery = owner["client"].post(f"/v1/webhooks/endpoints/{endpoint['id']}/test", headers=owner["headers"]).get_json()
    other = pro_customer(hook_app, connect)
    client, headers = other["client"], other["headers"]
    assert client.get("/v1/webhooks/endpoints", headers=headers).get_json() == {"endpoints": []}
    assert client.get("/v1/webhooks/deliveries", headers=headers).get_json() == {"deliveries": []}
    assert client.delete(f"/v1/webhooks/endpoints/{endpoint['id']}", headers=headers).status_code == 404
    assert client.post(f"/v1/webhooks/endpoints/{endpoint['id']}/test", headers=headers).status_code == 404
    assert client.post(f"/v1/webhooks/endpoints/{endpoint['id']}/disable", headers=headers).status_code == 404
    assert client.get(f"/v1/webhooks/deliveries/{delivery['id']}", headers=headers).status_code == 404
    assert client.post(f"/v1/webhooks/deliveries/{delivery['id']}/resend", headers=headers).status_code == 404
    listed = owner["client"].get("/v1/webhooks/endpoints", headers=owner["headers"]).get_json()["endpoints"]
    assert "secret" not in listed[0]

    app_role = connect("sg_app")
    with app_role.transaction():
        app_role.execute("select set_config('app.user_id', %s, true)", (owner["id"],))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app_role.execute("select secret from webhook_endpoints")
    with app_role.transaction():
        app_role.execute("select set_config('app.user_id', %s, true)", (owner["id"],))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app_role.execute("insert into webhook_events (user_id, type, dedupe_key, body) "
                             "values (%s, 'render.completed', 'forged', '{}')", (owner["id"],))
    with app_role.transaction():
        app_role.execute("select set_config('app.user_id', %s, true)", (owner["id"],))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app_role.execute("select app._emit_webhook(%s, 'render.completed', 'forged', '{}')", (owner["id"],))


# --- the page ----------------------------------------------------------------------------------


def test_the_webhooks_page_adds_an_endpoint_shows_its_secret_once_tests_and_resends(hook_app, connect, receiver,
                                                                                     worker_pool):
    hook = receiver(statuses=(500, 200))
    customer = pro_customer(hook_app, connect)
    browser = client_with_own_ip(hook_app)
    log_in(browser, customer["email"])
    page = browser.get("/webhooks").get_data(as_text=True)
    created = browser.post("/webhooks", data={"url": hook.url, "description": "CMS import",
                                              "event_types": ["render.completed", "credits.low"],
                                              "csrf_token": csrf_token(page)})
    assert created.status_code == 201
    html = created.get_data(as_text=True)
    secret = re.search(r'id="secret">(whsec_[0-9a-f]+)<', html).group(1)
    assert "render.completed, credits.low" in html or "credits.low, render.completed" in html
    again = browser.get("/webhooks").get_data(as_text=True)
    assert secret not in again and hook.url in again

    endpoint_id = re.search(r'data-endpoint="([0-9a-f-]+)"', again).group(1)
    tested = browser.post(f"/webhooks/{endpoint_id}/test", data={"csrf_token": csrf_token(again)})
    assert tested.status_code == 302
    delivery_id = re.search(r'data-delivery="([0-9a-f-]+)"', browser.get("/webhooks").get_data(as_text=True)).group(1)
    assert worker_pool(delivery_id) == "retrying"
    log_page = browser.get("/webhooks").get_data(as_text=True)
    assert 'data-status="pending"' in log_page and "HTTP 500" in log_page and "UTC" in log_page

    resent = browser.post(f"/webhooks/deliveries/{delivery_id}/resend", data={"csrf_token": csrf_token(log_page)})
    assert resent.status_code == 302
    assert worker_pool(delivery_id) == "succeeded"
    assert verify_signature(secret, hook.requests[-1]["headers"]["Story-Genius-Signature"], hook.requests[-1]["body"])
    final = browser.get("/webhooks").get_data(as_text=True)
    assert 'data-status="succeeded"' in final

    refused = browser.post("/webhooks", data={"url": "https://x.test/", "csrf_token": csrf_token(final)})
    assert refused.status_code == 422 and "Choose at least one event." in refused.get_data(as_text=True)
    assert browser.post("/webhooks/not-an-id/delete", data={"csrf_token": csrf_token(final)}).status_code == 404
    assert browser.post(f"/webhooks/{endpoint_id}/delete", data={}).status_code == 400  # no CSRF token
    deleted = browser.post(f"/webhooks/{endpoint_id}/delete", data={"csrf_token": csrf_token(final)})
    assert deleted.status_code == 302 and hook.url not in browser.get("/webhooks").get_data(as_text=True)


def test_the_migrations_apply_to_a_populated_database_and_roll_back():
    """0085 and 0086 on a database with accounts and jobs: their later changes emit events
    once an endpoint exists, referral grants are accepted, and both roll back and re-apply."""
    from psycopg.rows import dict_row

    from web.migrate import ROLES_FILE, _run_sql_file, migrate, rollback_all

    from .conftest import PASSWORD_HASH, throwaway_database
    from .test_identity_migrations import _apply

    with throwaway_database("sg_whmig") as dsn:
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as admin:
            _run_sql_file(admin, ROLES_FILE)
            _apply(dsn, before="0085")
            user = admin.execute("insert into users (email, password_hash, is_verified) values "
                                 "('old@example.com', %s, true) returning id", (PASSWORD_HASH,)).fetchone()["id"]
            admin.execute("insert into subscriptions (user_id, tier, credits_total, credits_remaining) "
                          "values (%s, 'pro', 100, 100)", (user,))
            job = admin.execute("insert into jobs (user_id, platform, topic, status, tier_at_creation) "
                                "values (%s, 'tiktok', 'An old job', 'processing', 'pro') returning id",
                                (user,)).fetchone()["id"]

            migrate(dsn, environ={})
            admin.execute("insert into webhook_endpoints (user_id, url, event_types, secret) values "
                          "(%s, 'https://hooks.example.org/x', array['render.completed', 'subscription.updated'], "
                          "'whsec_x')", (user,))
            admin.execute("update jobs set status = 'completed', finished_at = now() where id = %s", (job,))
            admin.execute("update subscriptions set tier = 'agency' where user_id = %s", (user,))
            types = [r["type"] for r in admin.execute("select type from webhook_events order by created_at, type")]
            assert sorted(types) == ["render.completed", "subscription.updated"]
            # 0086 (referrals) let the ledger take referral grants, keeping every older row valid
            admin.execute("insert into credit_ledger (user_id, delta, reason, idempotency_key) "
                          "values (%s, 5, 'referral_grant', 'referral:referee:' || %s)", (user, user))
            check = admin.execute("select pg_get_constraintdef(oid) as d from pg_constraint "
                                  "where conname = 'credit_ledger_reason_check'").fetchone()["d"]
            assert "'referral_grant'::text" in check and "'upgrade_grant'::text" in check

            rollback_all(dsn)
            migrate(dsn, environ={})
            assert admin.execute("select count(*) as n from webhook_endpoints").fetchone()["n"] == 0


# --- the whole thing, live: gunicorn, `python -m worker`, real renders, a customer's receiver ----


def test_live_render_completed_deliveries_verify_and_a_referral_pays_once(database_dsn, media_root, connect,
                                                                          webhook_secret, receiver, empty_queue,
                                                                          tmp_path):
    """The transcript the issue asks for: over real HTTP, a Pro customer registers an
    endpoint, makes two videos, the worker renders them and delivers render.completed to
    the customer's receiver (signatures verified with the secret shown once); a friend
    signs up through the customer's link, confirms, pays; the referrer is paid once."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import requests

    from .stripe_fakes import free_port, wait_for_port
    from .stripe_payloads import invoice_paid, signed
    from .test_referrals import PRICES

    hook = receiver()
    admin = connect("postgres")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DATABASE_URL": database_dsn, "SECRET_KEY": "live-" + "s" * 40, "BIND": f"127.0.0.1:{port}",
           "WEB_CONCURRENCY": "1", "MEDIA_ROOT": str(media_root), "BILLING_MODE": "stripe",
           "STRIPE_SECRET_KEY": "sk_test_live", "STRIPE_WEBHOOK_SECRET": webhook_secret, "APP_URL": base,
           "MAIL_OUTBOX": str(tmp_path / "outbox"), "SMTP_URL": "", "TTS_ENABLED": "0", "RENDER_MUSIC": "0",
           "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "1", "RATE_LIMITS": "off"}
    root = Path(__file__).resolve().parent.parent
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "web/gunicorn_conf.py", "web:create_app()"],
                           cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([sys.executable, "-m", "worker"], cwd=root, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    transcript = []

    def say(line: str) -> None:
        transcript.append(line)
        print(line)

    try:
        wait_for_port(port)
        http = requests.Session()
        customer = http.post(f"{base}/v1/auth/signup", json={"email": f"live-{uuid_hex()}@example.com",
                                                             "password": "velvet-otter-canyon-42"}).json()
        set_tier(admin, customer["user"]["id"], "pro")
        auth = {"Authorization": f"Bearer {customer['access_token']}"}
        created = http.post(f"{base}/v1/webhooks/endpoints", headers=auth,
                            json={"url": hook.url, "event_types": ["render.completed", "render.failed"]})
        assert created.status_code == 201, created.text
        endpoint = created.json()
        say(f"POST /v1/webhooks/endpoints -> 201 {endpoint['url']} secret {endpoint['secret'][:12]}… (shown once)")
        # rendered at the free plan's 720p, so two renders fit a shared test machine
        admin.execute("update subscriptions set tier = 'free' where user_id = %s", (customer["user"]["id"],))
        jobs = []
        for topic in ("Why octopuses have three hearts", "How bees make honey"):
            answer = http.post(f"{base}/v1/shorts/generate", headers=auth,
                               json={"platform": "tiktok", "topic": topic, "duration_seconds": 15})
            assert answer.status_code == 202, answer.text
            jobs.append(answer.json()["job_id"])
            say(f"POST /v1/shorts/generate {topic!r} -> 202 job {jobs[-1]}")
        deadline = time.monotonic() + 240
        while len(hook.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(hook.requests) == 2, [r["body"][:80] for r in hook.requests]
        for request in hook.requests:
            body = json.loads(request["body"])
            ok = verify_signature(endpoint["secret"], request["headers"]["Story-Genius-Signature"], request["body"])
            say(f"receiver: {body['type']} {body['id']} job {body['data']['object']['job_id']} "
                f"{body['data']['object']['video_url']} signature {'verified' if ok else 'BAD'}")
            assert ok and body["type"] == "render.completed"
        assert sorted(json.loads(r["body"])["data"]["object"]["job_id"] for r in hook.requests) == sorted(jobs)
        log = http.get(f"{base}/v1/webhooks/deliveries", headers=auth).json()["deliveries"]
        say("GET /v1/webhooks/deliveries -> " + ", ".join(
            f"{d['event_type']} {d['status']} HTTP {d['last_status_code']} {d['last_latency_ms']} ms" for d in log))
        assert [d["status"] for d in log] == ["succeeded", "succeeded"]

        code = http.get(f"{base}/v1/referrals", headers=auth).json()["code"]
        friend = requests.post(f"{base}/v1/auth/signup", json={"email": f"friend-{uuid_hex()}@example.com",
                                                               "password": "velvet-otter-canyon-42",
                                                               "referral_code": code}).json()
        say(f"friend signs up with referral_code {code}: balance {friend['user']['credits_remaining']}")
        admin.execute("update users set is_verified = true where id = %s", (friend["user"]["id"],))
        friend_auth = {"Authorization": f"Bearer {friend['access_token']}"}
        say(f"friend confirms their email: balance "
            f"{requests.get(f'{base}/v1/user/credits', headers=friend_auth).json()['credits_remaining']}")
        for tier, price in PRICES.items():
            admin.execute("update plans set stripe_price_id = %s where tier = %s", (price, tier))
        try:
            cus = f"cus_live_{uuid_hex()}"
            admin.execute("update subscriptions set stripe_customer_id = %s where user_id = %s",
                          (cus, friend["user"]["id"]))
            paid = invoice_paid(cus, f"sub_live_{uuid_hex()}", PRICES["starter"], int(time.time()))
            before = http.get(f"{base}/v1/user/credits", headers=auth).json()["credits_remaining"]
            for attempt in (1, 2):  # Stripe delivers the event twice
                body, headers = signed(paid, webhook_secret)
                answer = requests.post(f"{base}/v1/billing/webhook", data=body, headers=headers)
                assert answer.status_code == 200, answer.text
                say(f"Stripe invoice.paid for the friend (delivery {attempt}) -> {answer.json()['outcome']}")
            # the reward is decided an hour later by the worker: let the hour pass
            admin.execute("update referrals set reward_due_at = now() where referee_id = %s", (friend["user"]["id"],))
            admin.execute("update pgqueuer set execute_after = now() where dedupe_key = %s",
                          (f"referral_reward:{friend['user']['id']}",))
            deadline = time.monotonic() + 30
            while (http.get(f"{base}/v1/user/credits", headers=auth).json()["credits_remaining"] == before
                   and time.monotonic() < deadline):
                time.sleep(0.3)
            after = http.get(f"{base}/v1/user/credits", headers=auth).json()["credits_remaining"]
            programme = http.get(f"{base}/v1/referrals", headers=auth).json()
            say(f"an hour later the worker decides: referrer balance {before} -> {after}; referrals: " + ", ".join(
                f"{r['referee']} {r['status']} +{r['credits_earned']}" for r in programme["referrals"]))
            assert after == before + 10 and programme["credits_earned"] == 10
        finally:
            for tier in PRICES:
                admin.execute("update plans set stripe_price_id = null where tier = %s", (tier,))
    finally:
        for process in (web, worker):
            process.terminate()
        for process in (web, worker):
            process.wait(timeout=60)
    (tmp_path / "transcript.txt").write_text("\n".join(transcript))


def uuid_hex() -> str:
    import uuid

    return uuid.uuid4().hex[:10]


def test_an_erased_account_sends_nothing_more_and_keeps_no_secret(hook_app, connect, receiver):
    from .conftest import STRONG_PASSWORD

    customer = pro_customer(hook_app, connect)
    add_endpoint(customer, receiver().url, ["render.completed", "render.failed"])
    generate(customer)  # unfinished: the erasure fails it, which would be a render.failed
    delivery = customer["client"].post("/v1/webhooks/endpoints/" + customer["client"].get(
        "/v1/webhooks/endpoints", headers=customer["headers"]).get_json()["endpoints"][0]["id"] + "/test",
        headers=customer["headers"]).get_json()
    answer = customer["client"].delete("/v1/account", json={"password": STRONG_PASSWORD}, headers=customer["headers"])
    assert answer.status_code < 300, answer.get_json()
    admin = connect("postgres")
    for table in ("webhook_endpoints", "webhook_events", "webhook_deliveries", "webhook_attempts"):
        assert admin.execute(f"select count(*) as n from {table} where user_id = %s",
                             (customer["id"],)).fetchone()["n"] == 0, table
    # the test event's queued attempt finds nothing to send
    assert connect("sg_worker").execute("select * from app.claim_webhook_delivery(%s)",
                                        (delivery["id"],)).fetchall() == []


def test_concurrent_attempts_of_one_delivery_are_recorded_once(hook_app, connect, receiver, database_dsn):
    """Eight workers handed the same delivery at once (a resend racing retries): each one that
    claims it before the outcome is in sends it (at least once), and only the latest
    claim's outcome is recorded."""
    from concurrent.futures import ThreadPoolExecutor

    hook = receiver()
    customer = pro_customer(hook_app, connect)
    endpoint = add_endpoint(customer, hook.url)
    delivery_id = customer["client"].post(f"/v1/webhooks/endpoints/{endpoint['id']}/test",
                                          headers=customer["headers"]).get_json()["id"]

    def one_worker(_):
        async def run():
            pool = AsyncConnectionPool(role_dsn(database_dsn, "sg_worker"), min_size=1, max_size=1,
                                       kwargs={"autocommit": True}, open=False)
            await pool.open()
            try:
                return await deliver_once(pool, delivery_id, LOCAL)
            finally:
                await pool.close()
        return run_async(run())

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(one_worker, range(8)))
    # a worker that claims after the outcome is in finds nothing to do; every other one sends
    sent = [o for o in outcomes if o != "nothing to do"]
    assert outcomes.count("succeeded") == 1 and set(outcomes) <= {"succeeded", "superseded", "nothing to do"}
    assert len(hook.requests) == len(sent) >= 1
    assert len({r["headers"]["Story-Genius-Event-Id"] for r in hook.requests}) == 1
    admin = connect("postgres")
    row = admin.execute("select status, attempts from webhook_deliveries where id = %s", (delivery_id,)).fetchone()
    assert (row["status"], row["attempts"]) == ("succeeded", len(sent))
    assert admin.execute("select count(*) as n from webhook_attempts where delivery_id = %s",
                         (delivery_id,)).fetchone()["n"] == 1


def test_at_most_ten_endpoints_even_when_added_concurrently(hook_app, connect, receiver):
    from concurrent.futures import ThreadPoolExecutor

    customer = pro_customer(hook_app, connect)
    url = receiver().url

    def add(n):
        client = client_with_own_ip(hook_app)
        return client.post("/v1/webhooks/endpoints", json={"url": f"{url}/{n}"}, headers=customer["headers"]).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = sorted(pool.map(add, range(20)))
    assert statuses == [201] * 10 + [409] * 10
    assert connect("postgres").execute("select count(*) as n from webhook_endpoints where user_id = %s",
                                       (customer["id"],)).fetchone()["n"] == 10


def test_the_log_keeps_thirty_days_and_never_a_pending_delivery(hook_app, connect, receiver, worker_pool):
    customer = pro_customer(hook_app, connect)
    endpoint = add_endpoint(customer, receiver().url)
    client, headers = customer["client"], customer["headers"]
    sent = client.post(f"/v1/webhooks/endpoints/{endpoint['id']}/test", headers=headers).get_json()["id"]
    assert worker_pool(sent) == "succeeded"
    waiting = client.post(f"/v1/webhooks/endpoints/{endpoint['id']}/test", headers=headers).get_json()["id"]
    fresh = client.post(f"/v1/webhooks/endpoints/{endpoint['id']}/test", headers=headers).get_json()["id"]
    assert worker_pool(fresh) == "succeeded"
    admin = connect("postgres")
    admin.execute("update webhook_events set created_at = now() - interval '31 days' where id in "
                  "(select event_id from webhook_deliveries where id in (%s, %s))", (sent, waiting))
    assert connect("sg_worker").execute("select app.purge_webhook_log() as n").fetchone()["n"] >= 1
    left = {r["id"] for r in admin.execute("select id from webhook_deliveries where user_id = %s", (customer["id"],))}
    assert left == {uuid_of(waiting), uuid_of(fresh)}
    assert admin.execute("select count(*) as n from webhook_attempts where delivery_id = %s", (sent,)).fetchone()["n"] == 0


def uuid_of(text: str):
    import uuid

    return uuid.UUID(text)


def test_every_event_sent_matches_its_documented_schema(hook_app, connect, receiver, webhook_secret):
    """Each kind of event, made the way production makes it, validates against the schema
    the OpenAPI document's `webhooks` gives its type (what generated receivers expect)."""
    import uuid

    from jsonschema import Draft202012Validator

    from .stripe_payloads import payment_failed, signed

    customer = pro_customer(hook_app, connect)
    endpoint = add_endpoint(customer, receiver().url)
    admin = connect("postgres")
    finish_job(connect, generate(customer))
    finish_job(connect, generate(customer), ok=False)
    customer["client"].post(f"/v1/webhooks/endpoints/{endpoint['id']}/test", headers=customer["headers"])
    admin.execute("update subscriptions set credits_total = 100, credits_remaining = 21 where user_id = %s",
                  (customer["id"],))
    admin.execute("insert into credit_ledger (user_id, delta, reason, idempotency_key) select %s, "
                  "21 - coalesce(sum(delta), 0), 'admin_grant', 'schema-test:' || %s from credit_ledger "
                  "where user_id = %s", (customer["id"], customer["id"], customer["id"]))
    generate(customer)  # 21 -> 20: credits.low
    admin.execute("update subscriptions set tier = 'agency', current_period_end = now() + interval '1 day' "
                  "where user_id = %s", (customer["id"],))
    connect("sg_worker").execute("select app.emit_credits_expiring()")
    cus = f"cus_schema_{uuid.uuid4().hex[:10]}"
    admin.execute("update subscriptions set stripe_customer_id = %s where user_id = %s", (cus, customer["id"]))
    body, headers = signed(payment_failed(cus, f"sub_schema_{uuid.uuid4().hex[:10]}"), webhook_secret)
    assert hook_app.test_client().post("/v1/billing/webhook", data=body, headers=headers).status_code == 200

    spec = hook_app.test_client().get("/openapi.json").get_json()
    events = admin.execute("select type, body from webhook_events where user_id = %s", (customer["id"],)).fetchall()
    assert {e["type"] for e in events} == {"render.completed", "render.failed", "webhook.test", "credits.low",
                                           "subscription.updated", "credits.expiring", "payment.failed"}
    for event in events:
        schema = spec["webhooks"][event["type"]]["post"]["requestBody"]["content"]["application/json"]["schema"]
        errors = [e.message for e in Draft202012Validator({**spec, **schema}).iter_errors(event["body"])]
        assert errors == [], (event["type"], errors, event["body"])


def test_a_disabled_account_keeps_its_endpoints(hook_app, connect, receiver):
    """`flask disable-user` deactivates without erasing: the endpoints stay for when it is enabled again."""
    customer = pro_customer(hook_app, connect)
    add_endpoint(customer, receiver().url)
    admin = connect("postgres")
    admin.execute("update users set is_active = false where id = %s", (customer["id"],))
    admin.execute("update users set is_active = true where id = %s", (customer["id"],))
    assert admin.execute("select count(*) as n from webhook_endpoints where user_id = %s",
                         (customer["id"],)).fetchone()["n"] == 1
def test_batch_completed_once_when_its_last_jobs_finish_together(hook_app, connect, receiver, worker_pool,
                                                                 database_dsn):
    """Five videos bought as one batch (sql/43_batches.sql emits the event through
    app._emit_webhook); the first two finish, then the last three commit at the same moment
    from three workers: one batch.completed, counting the failed (and refunded) one."""
    from concurrent.futures import ThreadPoolExecutor

    hook = receiver()
    customer = pro_customer(hook_app, connect)
    add_endpoint(customer, hook.url, ["batch.completed"])
    bought = customer["client"].post("/v1/shorts/batch", headers=customer["headers"], json={"items": [
        {"platform": "tiktok", "topic": f"Batch topic {n}", "duration_seconds": 15} for n in range(5)]})
    assert bought.status_code == 202, bought.get_json()
    batch_id, job_ids = bought.get_json()["batch_id"], bought.get_json()["job_ids"]
    finish_job(connect, job_ids[0])
    finish_job(connect, job_ids[1], ok=False)
    admin = connect("postgres")
    assert deliveries(admin, customer["id"], "batch.completed") == []

    workers = [psycopg.connect(role_dsn(database_dsn, "sg_worker"), autocommit=True) for _ in range(3)]
    claims = [w.execute("select attempts from app.claim_job(%s)", (j,)).fetchone()[0]
              for w, j in zip(workers, job_ids[2:])]
    for w in workers:
        w.execute("begin")
    for w, j, attempt in zip(workers, job_ids[2:], claims):
        w.execute("select app.complete_job(%s, %s, %s)", (j, attempt, f"/media/{j}.mp4"))
    with ThreadPoolExecutor(max_workers=3) as pool:  # three commits at once
        list(pool.map(lambda w: w.execute("commit"), workers))
    for w in workers:
        w.close()

    [event] = deliveries(admin, customer["id"], "batch.completed")
    data = event["body"]["data"]["object"]
    assert data["batch_id"] == batch_id and data["status"] == "partially_failed" and data["total"] == 5
    assert data["counts"] == {"completed": 4, "failed": 1} and data["job_ids"] == job_ids
    assert worker_pool(event["id"]) == "succeeded"
    assert json.loads(hook.requests[0]["body"])["type"] == "batch.completed"


def test_a_retried_endpoint_creation_makes_one_endpoint_and_never_replays_its_secret(hook_app, connect, receiver):
    import uuid

    customer = pro_customer(hook_app, connect)
    headers = {**customer["headers"], "Idempotency-Key": str(uuid.uuid4())}
    body = {"url": receiver().url, "event_types": ["render.completed"]}
    first = customer["client"].post("/v1/webhooks/endpoints", json=body, headers=headers)
    again = customer["client"].post("/v1/webhooks/endpoints", json=body, headers=headers)
    assert first.status_code == 201 and first.get_json()["secret"].startswith("whsec_")
    assert again.status_code == 409 and "secret" not in again.get_json()
    assert first.get_json()["secret"] not in again.get_data(as_text=True)
    assert connect("postgres").execute("select count(*) as n from webhook_endpoints where user_id = %s",
                                       (customer["id"],)).fetchone()["n"] == 1


def test_the_python_clients_helper_verifies_our_deliveries(hook_app, connect, receiver, worker_pool):
    """The official client's verify_webhook (clients/python) accepts what our sender signs,
    and refuses it with another secret or a touched body."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "clients" / "python"))
    import storygenius

    hook = receiver()
    customer = pro_customer(hook_app, connect)
    endpoint = add_endpoint(customer, hook.url)
    delivery = customer["client"].post(f"/v1/webhooks/endpoints/{endpoint['id']}/test",
                                       headers=customer["headers"]).get_json()
    assert worker_pool(delivery["id"]) == "succeeded"
    [request] = hook.requests
    header = request["headers"][storygenius.SIGNATURE_HEADER]
    event = storygenius.verify_webhook(request["body"], header, endpoint["secret"])
    assert event["type"] == "webhook.test" and event["id"] == delivery["event_id"]
    for secret, body in (("whsec_" + "0" * 64, request["body"]), (endpoint["secret"], request["body"] + b" ")):
        with pytest.raises(storygenius.WebhookSignatureError):
            storygenius.verify_webhook(body, header, secret)
