"""Script writers: the chat-completions client against a loopback server started here
(answers, refusals, errors, timeouts), a refusal failing the job and refunding it through
the real worker, and the API's `voice` and `script` fields reaching the video."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pgqueuer
import pytest
from pgqueuer.types import QueueExecutionMode

from web.config import role_dsn
from worker.main import WorkerSettings, create_pgqueuer
from worker.script import (ChatCompletionsWriter, ScriptRefused, ScriptRequest, ScriptUnavailable,
                           writer_from_env, OfflineWriter)

from .conftest import api_signup, balance, bearer, ledger_sum, verify, wait_for
from .media import max_volume

REQUEST = ScriptRequest("the history of coffee", 20, "en", 42, 17.0)


def completion(content: str | None = None, refusal: str | None = None, finish: str = "stop") -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "test-model",
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": content, "refusal": refusal}}]}


GOOD = json.dumps({"title": "Coffee, from goats to espresso", "lines": [
    "Legend says a goatherd noticed his goats dancing after eating red berries.",
    "Monks in Yemen brewed those berries to stay awake through night prayers.",
    "By the sixteen hundreds, coffee houses filled Istanbul, London and Venice.",
    "Today, the world drinks about two billion cups every day."]})


class FakeChatServer:
    """An OpenAI-compatible /chat/completions on loopback that plays a list of answers:
    (status, body) pairs, or ("sleep", seconds) to time the client out."""

    def __init__(self, answers: list):
        self.answers = list(answers)
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                kind, value = server.answers.pop(0) if server.answers else (500, {"error": "no more answers"})
                if kind == "sleep":
                    time.sleep(value)
                    kind, value = 200, completion(GOOD)
                data = json.dumps(value).encode()
                self.send_response(kind)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def chat():
    servers = []

    def start(*answers):
        servers.append(FakeChatServer(list(answers)))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def writer(server, **kwargs) -> ChatCompletionsWriter:
    return ChatCompletionsWriter(url=server.url, api_key="sk-test", model="test-model",
                                 **{"timeout": 2, "backoff": 0.05, **kwargs})


def test_the_client_asks_for_the_topic_and_returns_the_lines(chat):
    server = chat((200, completion(GOOD)))
    script = writer(server).write(REQUEST)
    assert script.title == "Coffee, from goats to espresso" and len(script.lines) == 4 and script.source == "api"
    [sent] = server.requests
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer sk-test"
    assert sent["body"]["model"] == "test-model" and sent["body"]["seed"] == 42
    assert "the history of coffee" in sent["body"]["messages"][-1]["content"]
    assert "20-second" in sent["body"]["messages"][-1]["content"]


def test_server_errors_and_timeouts_are_retried(chat):
    server = chat((503, {"error": "busy"}), ("sleep", 3), (200, completion("```json\n" + GOOD + "\n```")))
    script = writer(server, timeout=1, attempts=3).write(REQUEST)
    assert len(script.lines) == 4 and len(server.requests) == 3


def test_a_service_that_stays_down_is_unavailable_not_refused(chat):
    server = chat((500, {}), (502, {}), (429, {}))
    with pytest.raises(ScriptUnavailable):
        writer(server, attempts=3).write(REQUEST)
    assert len(server.requests) == 3


@pytest.mark.parametrize("answer", [
    (200, completion(refusal="I can't help with that.")),
    (200, completion(json.dumps({"refusal": "not appropriate"}))),
    (200, completion(None, finish="content_filter")),
    (400, {"error": {"message": "content policy"}}),
    (401, {"error": {"message": "bad key"}}),
])
def test_refusals_and_client_errors_are_final(chat, answer):
    server = chat(answer, (200, completion(GOOD)))
    with pytest.raises(ScriptRefused):
        writer(server).write(REQUEST)
    assert len(server.requests) == 1


def test_nonsense_is_retried_then_unavailable(chat):
    server = chat((200, completion("not json")), (200, completion(json.dumps({"lines": ["one"]}))),
                  (200, completion(json.dumps({"title": "x", "lines": "no list"}))))
    with pytest.raises(ScriptUnavailable):
        writer(server).write(REQUEST)


def test_the_setting_chooses_the_writer():
    assert isinstance(writer_from_env({}), OfflineWriter)
    chosen = writer_from_env({"SCRIPT_API_URL": "http://127.0.0.1:9/v1", "SCRIPT_API_KEY": "k", "SCRIPT_MODEL": "m"})
    assert isinstance(chosen, ChatCompletionsWriter) and chosen.model == "m" and chosen.api_key == "k"


def drain_worker(database_dsn: str, media_root) -> None:
    """The real worker, in this process, until the queue is empty."""
    settings = WorkerSettings(dsn=role_dsn(database_dsn, "sg_worker"), media_root=media_root, retry_base_seconds=0.05)

    async def main():
        await asyncio.wait_for(pgqueuer.run(lambda: create_pgqueuer(settings), mode=QueueExecutionMode.drain,
                                            batch_size=1, max_concurrent_tasks=2,
                                            dequeue_timeout=timedelta(seconds=1), shutdown=asyncio.Event()),
                               timeout=240)

    outcome: list[BaseException] = []

    def target():
        try:
            asyncio.run(main())
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            outcome.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if outcome:
        raise outcome[0]


def test_a_refused_topic_fails_the_job_at_once_and_refunds_it(api, connect, database_dsn, media_root, empty_queue,
                                                             chat, monkeypatch):
    server = chat((200, completion(refusal="I won't write about that.")))
    monkeypatch.setenv("SCRIPT_API_URL", server.url)
    admin = connect("postgres")
    user = api_signup(api)
    auth = bearer(user["access_token"])
    response = api.post("/v1/shorts/generate", json={"platform": "tiktok", "topic": "something it refuses"},
                        headers=auth)
    job_id = response.get_json()["job_id"]
    drain_worker(database_dsn, media_root)
    job = api.get(f"/v1/jobs/{job_id}", headers=auth).get_json()
    assert job["status"] == "failed" and "declined" in job["error"]
    assert len(server.requests) == 1  # refused once: neither the client nor the worker asked again
    uid = user["user"]["id"]
    assert balance(admin, uid) == 5 == ledger_sum(admin, uid)
    reasons = [r["reason"] for r in admin.execute("select reason from credit_ledger where job_id = %s", (job_id,))]
    assert sorted(reasons) == ["refund", "render"]


def test_voice_and_script_reach_the_video_and_a_language_without_a_voice_is_noted(
        api, connect, database_dsn, media_root, empty_queue):
    user = api_signup(api)
    verify(connect("postgres"), user["user"]["id"])  # an unconfirmed address spends one credit only
    auth = bearer(user["access_token"])
    own = api.post("/v1/shorts/generate", headers=auth, json={
        "platform": "tiktok", "topic": "coffee in Yemen", "voice": "en_US-joe-medium", "duration_seconds": 15,
        "script": "Coffee was first brewed by Sufi monks in Yemen. They drank it to stay awake."})
    japanese = api.post("/v1/shorts/generate", headers=auth, json={
        "platform": "tiktok", "topic": "東京のカフェ文化", "duration_seconds": 15})
    assert own.status_code == japanese.status_code == 202
    drain_worker(database_dsn, media_root)
    done = api.get(f"/v1/jobs/{own.get_json()['job_id']}", headers=auth).get_json()
    assert done["status"] == "completed" and done["voice"] == "en_US-joe-medium" and done["note"] is None
    assert max_volume(media_root / f"{done['job_id']}.mp4") >= -20
    assert (media_root / f"{done['job_id']}.jpg").is_file()
    noted = api.get(f"/v1/jobs/{japanese.get_json()['job_id']}", headers=auth).get_json()
    assert noted["status"] == "completed" and "Japanese" in noted["note"]


@pytest.mark.parametrize("field, value", [
    ("voice", "no-such-voice"), ("voice", 7), ("script", ""), ("script", "   "), ("script", "x" * 2001),
    ("script", 12), ("script", "...!!"),
])
def test_bad_voice_or_script_is_refused_before_a_credit_is_spent(api, connect, field, value):
    admin = connect("postgres")
    user = api_signup(api)
    response = api.post("/v1/shorts/generate", headers=bearer(user["access_token"]),
                        json={"platform": "tiktok", "topic": "the history of coffee", field: value})
    assert response.status_code == 422 and response.get_json()["field"] == field
    assert balance(admin, user["user"]["id"]) == 5
