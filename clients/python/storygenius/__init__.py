"""The official Python client of the Story Genius API (/v1, described at /openapi.json).

Retries are safe by construction: every POST carries an Idempotency-Key (a fresh UUID per
call unless the caller gives one), and every retry of that call sends the same key, so
the server carries it out at most once (a retried generate never spends a second credit).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Any, Iterator, Literal, Mapping, Sequence, TypeVar

import httpx

__all__ = [
    "Client", "Job", "Batch", "BatchAccepted", "GenerateAccepted", "Credits", "UsageEntry", "ApiKey",
    "RateLimit", "StoryGeniusError", "AuthenticationError", "InsufficientCredits", "PermissionDenied",
    "NotFound", "Conflict", "InvalidRequest", "RateLimited", "ServerError", "WebhookSignatureError",
    "verify_webhook", "sign_webhook", "SIGNATURE_HEADER",
]
__version__ = "0.1.0"

Platform = Literal["youtube_shorts", "tiktok", "instagram_reels"]
JobStatus = Literal["queued", "processing", "completed", "failed"]
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
# the header a webhook delivery's signature arrives in
SIGNATURE_HEADER = "Story-Genius-Signature"
# answers worth asking again: the server was briefly unable, or asked us to wait (409
# only with Retry-After: the first request with this Idempotency-Key is still running)
RETRY_STATUSES = {409, 429, 502, 503, 504}


# -- answers -------------------------------------------------------------------------------

T = TypeVar("T")


def _build(cls: type[T], data: Mapping[str, Any]) -> T:
    """A dataclass from a JSON object, ignoring fields a newer server may add."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{key: value for key, value in data.items() if key in names})


@dataclass(frozen=True)
class GenerateAccepted:
    job_id: str
    status: str
    credits_remaining: int


@dataclass(frozen=True)
class Job:
    job_id: str
    status: JobStatus
    progress: int
    video_url: str | None
    error: str | None
    platform: Platform
    topic: str
    duration_seconds: int
    created_at: str
    finished_at: str | None
    note: str | None = None
    voice: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed")


@dataclass(frozen=True)
class BatchAccepted:
    batch_id: str
    job_ids: list[str]
    status: str
    credits_remaining: int


@dataclass(frozen=True)
class Batch:
    batch_id: str
    status: Literal["queued", "processing", "completed", "partially_failed", "failed"]
    progress: int
    total: int
    counts: dict[str, int]
    created_at: str
    items: list[Job] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "partially_failed", "failed")


@dataclass(frozen=True)
class Credits:
    tier: str
    status: str
    credits_total: int
    credits_used: int
    credits_remaining: int
    renews_at: str


@dataclass(frozen=True)
class UsageEntry:
    action: str
    credits: int
    job_id: str | None
    timestamp: str


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    scopes: list[str]
    monthly_budget: int | None
    budget_used: int
    created_at: str
    last_used: str | None
    key: str | None = None  # only in the answer that created it


@dataclass(frozen=True)
class RateLimit:
    """The RateLimit-* headers of an answer: the plan's requests a minute, what is left,
    and the seconds until the count starts again."""

    limit: int
    remaining: int
    reset: int


# -- errors --------------------------------------------------------------------------------

class StoryGeniusError(Exception):
    """An answer the API refused with (status, its `detail`, the `field` it names)."""

    def __init__(self, status: int, detail: str, field: str | None = None, response: httpx.Response | None = None):
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.field = field
        self.response = response


class AuthenticationError(StoryGeniusError):
    """401: no credential, or an invalid, revoked or expired one."""


class InsufficientCredits(StoryGeniusError):
    """402: the balance does not cover it (nothing was spent)."""


class PermissionDenied(StoryGeniusError):
    """403: the plan, the key's scopes (the detail names the missing one) or its budget."""


class NotFound(StoryGeniusError):
    """404."""


class Conflict(StoryGeniusError):
    """409: e.g. a request with this Idempotency-Key is still running."""


class InvalidRequest(StoryGeniusError):
    """422: `field` names what was wrong."""


class RateLimited(StoryGeniusError):
    """429: `retry_after` seconds until the limit frees a request."""

    def __init__(self, *args, retry_after: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class ServerError(StoryGeniusError):
    """5xx after the retries ran out."""


_ERRORS: dict[int, type[StoryGeniusError]] = {401: AuthenticationError, 402: InsufficientCredits,
                                              403: PermissionDenied, 404: NotFound, 409: Conflict,
                                              422: InvalidRequest, 429: RateLimited}


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None


def _error(response: httpx.Response) -> StoryGeniusError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    detail = body.get("detail") if isinstance(body, dict) else None
    detail = detail or response.reason_phrase or "Request failed"
    field_name = body.get("field") if isinstance(body, dict) else None
    cls = _ERRORS.get(response.status_code, ServerError if response.status_code >= 500 else StoryGeniusError)
    if cls is RateLimited:
        return RateLimited(response.status_code, detail, field_name, response,
                           retry_after=_retry_after(response) or 1.0)
    return cls(response.status_code, detail, field_name, response)


# -- the client ----------------------------------------------------------------------------

class Client:
    """A Story Genius API client. Authenticate with an API key (`sk_…`) or an access token.

    `max_retries` retries of a request that failed to connect or was answered 409, 429
    (after its Retry-After), 502, 503 or 504, with exponential backoff from `backoff`
    seconds (with jitter, at most `max_backoff`). POSTs are retried with the same
    Idempotency-Key, so each is carried out at most once.
    """

    def __init__(self, api_key: str | None = None, *, base_url: str = DEFAULT_BASE_URL,
                 access_token: str | None = None, timeout: float = 30.0, max_retries: int = 3,
                 backoff: float = 0.5, max_backoff: float = 20.0, transport: httpx.BaseTransport | None = None):
        token = api_key or access_token
        if not token:
            raise ValueError("give an api_key (sk_…) or an access_token")
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.rate_limit: RateLimit | None = None
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport,
                                  headers={"Authorization": f"Bearer {token}", "Accept": "application/json",
                                           "User-Agent": f"storygenius-python/{__version__}"})

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- transport --

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        wait = _retry_after(response) if response is not None else None
        if wait is None:
            wait = min(self.max_backoff, self.backoff * 2 ** attempt)
            wait *= 0.5 + random.random() / 2  # jitter: retries of many clients do not arrive together
        return min(wait, self.max_backoff)

    def _note_rate_limit(self, response: httpx.Response) -> None:
        try:
            self.rate_limit = RateLimit(int(response.headers["RateLimit-Limit"]),
                                        int(response.headers["RateLimit-Remaining"]),
                                        int(response.headers["RateLimit-Reset"]))
        except (KeyError, ValueError):
            pass

    def request(self, method: str, path: str, *, json_body: Any = None, params: Mapping[str, Any] | None = None,
                idempotency_key: str | None = None) -> httpx.Response:
        """One API call, retried as the class says; the answer, or the error it stands for.
        A POST without `idempotency_key` gets a new one, kept for all its retries."""
        headers = {}
        if method.upper() == "POST":
            headers["Idempotency-Key"] = idempotency_key or str(uuid.uuid4())
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, json=json_body, params=params, headers=headers)
            except httpx.TransportError:
                if attempt >= self.max_retries:
                    raise
                time.sleep(self._delay(attempt, None))
                attempt += 1
                continue
            self._note_rate_limit(response)
            if response.status_code < 400:
                return response
            # a 409 is retried only when it says when (a request with this key still running)
            retryable = response.status_code in RETRY_STATUSES and (
                response.status_code != 409 or "Retry-After" in response.headers)
            if retryable and attempt < self.max_retries:
                time.sleep(self._delay(attempt, response))
                attempt += 1
                continue
            raise _error(response)

    def _json(self, method: str, path: str, **kwargs) -> Any:
        return self.request(method, path, **kwargs).json()

    # -- videos --

    def generate(self, platform: Platform, topic: str, *, duration_seconds: int = 20, voice: str | None = None,
                 script: str | None = None, idempotency_key: str | None = None) -> GenerateAccepted:
        """Spend one credit on a video; its job is queued (follow it with get_job/wait_for_job)."""
        body: dict[str, Any] = {"platform": platform, "topic": topic, "duration_seconds": duration_seconds}
        if voice is not None:
            body["voice"] = voice
        if script is not None:
            body["script"] = script
        return _build(GenerateAccepted, self._json("POST", "/v1/shorts/generate", json_body=body,
                                                   idempotency_key=idempotency_key))

    def create_batch(self, items: Sequence[Mapping[str, Any]], *, idempotency_key: str | None = None) -> BatchAccepted:
        """Up to 50 videos, all or nothing (InsufficientCredits says how many it needs)."""
        return _build(BatchAccepted, self._json("POST", "/v1/shorts/batch", json_body={"items": list(items)},
                                                idempotency_key=idempotency_key))

    def get_batch(self, batch_id: str) -> Batch:
        data = self._json("GET", f"/v1/batches/{batch_id}")
        return _build(Batch, {**data, "items": [_build(Job, item) for item in data.get("items", [])]})

    def get_job(self, job_id: str) -> Job:
        return _build(Job, self._json("GET", f"/v1/jobs/{job_id}"))

    def list_jobs(self, *, limit: int = 20, before: str | None = None) -> tuple[list[Job], str | None]:
        """One page of jobs, newest first, and the `before` of the next page (None on the last)."""
        params: dict[str, Any] = {"limit": limit}
        if before:
            params["before"] = before
        data = self._json("GET", "/v1/jobs", params=params)
        return [_build(Job, item) for item in data["jobs"]], data["next_before"]

    def iter_jobs(self, *, page_size: int = 50) -> Iterator[Job]:
        """Every job, newest first, page by page."""
        before = None
        while True:
            page, before = self.list_jobs(limit=page_size, before=before)
            yield from page
            if before is None:
                return

    def wait_for_job(self, job_id: str, *, timeout: float = 600.0, poll: float = 2.0) -> Job:
        """Poll a job until it is completed or failed; TimeoutError past `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job.finished:
                return job
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout} s")
            time.sleep(poll)

    def wait_for_batch(self, batch_id: str, *, timeout: float = 1800.0, poll: float = 3.0) -> Batch:
        deadline = time.monotonic() + timeout
        while True:
            batch = self.get_batch(batch_id)
            if batch.finished:
                return batch
            if time.monotonic() >= deadline:
                raise TimeoutError(f"batch {batch_id} still {batch.status} after {timeout} s")
            time.sleep(poll)

    # -- account --

    def credits(self) -> Credits:
        return _build(Credits, self._json("GET", "/v1/user/credits"))

    def usage(self, *, days: int = 30) -> list[UsageEntry]:
        return [_build(UsageEntry, row) for row in self._json("GET", "/v1/user/usage", params={"days": days})["usage"]]

    def me(self) -> dict[str, Any]:
        return self._json("GET", "/v1/auth/me")

    # -- keys (with an access token: keys cannot manage keys) --

    def create_key(self, name: str, *, scopes: Sequence[str] | None = None, monthly_budget: int | None = None,
                   idempotency_key: str | None = None) -> ApiKey:
        body: dict[str, Any] = {"name": name, "monthly_budget": monthly_budget}
        if scopes is not None:
            body["scopes"] = list(scopes)
        return _build(ApiKey, self._json("POST", "/v1/keys", json_body=body, idempotency_key=idempotency_key))

    def list_keys(self) -> list[ApiKey]:
        return [_build(ApiKey, row) for row in self._json("GET", "/v1/keys")["keys"]]

    def revoke_key(self, key_id: str) -> None:
        self.request("DELETE", f"/v1/keys/{key_id}")


# -- webhooks ------------------------------------------------------------------------------

class WebhookSignatureError(ValueError):
    """A webhook delivery whose signature does not verify (or is too old)."""


def sign_webhook(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The signature header of `payload`: `t=<unix time>,v1=<hex HMAC-SHA256 of "t.payload">`
    keyed with the endpoint's signing secret (how Story Genius signs; useful in tests)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_webhook(payload: bytes | str, signature_header: str | None, secret: str, *,
                   tolerance: int = 300, now: float | None = None) -> dict[str, Any]:
    """Check a webhook delivery and return its event (the parsed JSON body).

    `payload` must be the raw body as received (not re-serialised JSON). The header holds
    `t=…` and one or more `v1=…` (several while a secret is being rolled); any `v1` that
    matches, compared in constant time, within `tolerance` seconds of `t` (so a captured
    delivery cannot be replayed later), verifies. WebhookSignatureError otherwise.
    """
    raw = payload.encode() if isinstance(payload, str) else payload
    timestamp, signatures = None, []
    for part in (signature_header or "").split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            timestamp = value
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not timestamp.isdigit() or not signatures:
        raise WebhookSignatureError("malformed signature header (expected t=…,v1=…)")
    age = (time.time() if now is None else now) - int(timestamp)
    if abs(age) > tolerance:
        raise WebhookSignatureError(f"timestamp outside the {tolerance} s tolerance")
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise WebhookSignatureError("no signature matches")
    try:
        return json.loads(raw)
    except ValueError as error:
        raise WebhookSignatureError("the signed body is not JSON") from error
