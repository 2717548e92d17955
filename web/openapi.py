"""The published API contract: an OpenAPI 3.1 document for every /v1 route, served at
/openapi.json and rendered for people at /docs. A test keeps it in step with the routes."""
from __future__ import annotations

from flask import Blueprint, jsonify, render_template

from worker.script import MAX_USER_SCRIPT
from worker.voices import VOICES

docs = Blueprint("docs", __name__)

TIERS = ["free", "starter", "pro", "agency"]
PLATFORMS = ["youtube_shorts", "tiktok", "instagram_reels"]


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: list[str], **properties) -> dict:
    return {"type": "object", "required": required, "properties": properties}


STRING = {"type": "string"}
NULLABLE_STRING = {"type": ["string", "null"]}
DATETIME = {"type": "string", "format": "date-time"}
UUID = {"type": "string", "format": "uuid"}
# text fields must carry something besides white space
TEXT = {"type": "string", "pattern": r"\S"}

SCHEMAS = {
    "Error": {**obj(["detail"], detail=STRING, field=STRING, upgrade_url=STRING),
              "description": "Every error. `field` names the offending input; 402 adds `upgrade_url`."},
    "User": obj(["id", "email", "full_name", "is_verified", "tier", "credits_remaining"],
                id=UUID, email=STRING, full_name=NULLABLE_STRING, is_verified={"type": "boolean"},
                tier={"enum": TIERS}, credits_remaining={"type": "integer", "minimum": 0}),
    "TokenPair": obj(["access_token", "refresh_token", "token_type", "expires_in", "user"],
                     access_token=STRING, refresh_token=STRING, token_type={"const": "bearer"},
                     expires_in={"type": "integer"}, user=ref("User")),
    "SignupRequest": obj(["email", "password"], email={**TEXT, "maxLength": 254},
                         password={"type": "string", "minLength": 8, "maxLength": 128},
                         full_name={"type": ["string", "null"], "maxLength": 200}),
    "LoginRequest": obj(["email", "password"], email={"type": "string", "maxLength": 254},
                        password={"type": "string", "maxLength": 1024},
                        device_token={"type": "string", "minLength": 1, "maxLength": 200,
                                      "description": "from an earlier sign-in on this device: other clients' "
                                                     "failed attempts never throttle it"}),
    "SignedIn": {"allOf": [ref("TokenPair"), obj(["device_token"], device_token={
        "type": "string", "description": "keep it and send it with the next sign-in from this device"})]},
    "TwoFactorChallenge": obj(["two_factor_required", "challenge_token", "expires_in", "device_token"],
                              two_factor_required={"const": True}, challenge_token=STRING,
                              expires_in={"type": "integer"}, device_token=STRING),
    "TwoFactorLogin": obj(["challenge_token", "code"], challenge_token={"type": "string", "minLength": 1,
                                                                       "maxLength": 200},
                          code={"type": "string", "minLength": 1, "maxLength": 50,
                                "description": "6 digits from the authenticator app, or a recovery code"}),
    "TwoFactorSetup": obj(["secret", "otpauth_uri"], secret=STRING, otpauth_uri=STRING),
    "TwoFactorConfirm": obj(["password", "code"], password={"type": "string", "maxLength": 1024},
                            code={"type": "string", "minLength": 1, "maxLength": 50}),
    "RecoveryCodes": obj(["recovery_codes"], recovery_codes={"type": "array", "items": STRING,
                                                             "minItems": 10, "maxItems": 10}),
    "RefreshRequest": obj(["refresh_token"], refresh_token={"type": "string", "maxLength": 4096}),
    "PasswordChange": obj(["current_password", "new_password"],
                          current_password={"type": "string", "maxLength": 1024},
                          new_password={"type": "string", "minLength": 8, "maxLength": 128}),
    "TokenRequest": obj(["token"], token={"type": "string", "minLength": 1, "maxLength": 200}),
    "Verified": obj(["verified"], verified={"const": True}),
    "Message": obj(["detail"], detail=STRING),
    "ForgotRequest": obj(["email"], email={"type": "string", "maxLength": 254}),
    "ResetRequest": obj(["token", "new_password"], token={"type": "string", "minLength": 1, "maxLength": 200},
                        new_password={"type": "string", "minLength": 8, "maxLength": 128}),
    "Plan": obj(["tier", "name", "price_cents", "price", "credits", "features"], tier={"enum": TIERS},
                name=STRING, price_cents={"type": "integer"}, price=STRING, credits={"type": "integer"},
                features={"type": "object"}),
    "Plans": obj(["plans", "test_mode"], plans={"type": "array", "items": ref("Plan")},
                 test_mode={"type": "boolean", "description": "true when checkout is simulated (no Stripe keys)"}),
    "CheckoutRequest": obj(["tier"], tier={"enum": ["starter", "pro", "agency"]}),
    "CheckoutSession": obj(["checkout_url"], checkout_url=STRING),
    "ChangePlanRequest": obj(["tier"], tier={"enum": TIERS, "description": "free = cancel at the period's end"}),
    "PlanChange": obj(["action", "detail"],
                      action={"enum": ["checkout", "upgraded", "downgrade_scheduled", "downgrade_canceled",
                                       "cancel_scheduled", "resumed"]},
                      detail=STRING,
                      checkout_url={**STRING, "description": "only for action `checkout`: open it to pay"}),
    "Subscription": obj(
        ["tier", "status", "subscribed_tier", "credits_remaining", "credits_granted_this_period",
         "current_period_start", "current_period_end", "cancel_at_period_end", "cancel_at", "pending_change",
         "syncing"],
        tier={"enum": TIERS, "description": "the plan whose features you have now"},
        status={"enum": ["active", "trialing", "past_due", "unpaid", "canceled", "incomplete",
                         "incomplete_expired", "paused"]},
        subscribed_tier={"type": ["string", "null"], "enum": [*TIERS, None],
                         "description": "the plan of your Stripe subscription, whatever its status"},
        credits_remaining={"type": "integer", "minimum": 0}, credits_granted_this_period={"type": "integer"},
        current_period_start=DATETIME, current_period_end=DATETIME, cancel_at_period_end={"type": "boolean"},
        cancel_at={"type": ["string", "null"], "format": "date-time"},
        pending_change={"type": ["object", "null"], "required": ["tier", "effective_at"],
                        "properties": {"tier": {"enum": TIERS}, "effective_at": DATETIME}},
        syncing={"type": "boolean", "description": "a change made at Stripe is still being read back"}),
    "InvoiceList": obj(["invoices"], invoices={"type": "array", "items": obj(
        ["id", "number", "status", "amount_paid", "amount_due", "currency", "created", "hosted_invoice_url"],
        id=STRING, number=NULLABLE_STRING, status=STRING, amount_paid={"type": "integer"},
        amount_due={"type": "integer"}, currency=STRING, created={"type": "integer"},
        hosted_invoice_url=NULLABLE_STRING)}),
    "PortalSession": obj(["portal_url"], portal_url=STRING),
    "WebhookResult": obj(["received", "outcome"], received={"type": "boolean"}, outcome=STRING),
    "KeyCreate": obj(["name"], name={**TEXT, "minLength": 1, "maxLength": 100}),
    "Key": obj(["id", "name", "prefix", "created_at", "last_used"], id=UUID, name=STRING, prefix=STRING,
               created_at=DATETIME, last_used={"type": ["string", "null"], "format": "date-time"}),
    "KeyCreated": {"allOf": [ref("Key"), obj(["key"], key={"type": "string", "pattern": "^sk_",
                                                            "description": "shown once; store it now"})]},
    "KeyList": obj(["keys"], keys={"type": "array", "items": ref("Key")}),
    "GenerateRequest": obj(["platform", "topic"], platform={"enum": PLATFORMS},
                           topic={**TEXT, "minLength": 3, "maxLength": 200},
                           duration_seconds={"type": "integer", "minimum": 15, "maximum": 60, "default": 20},
                           voice={"enum": list(VOICES), "description": "narration voice (default: the "
                                  "service's TTS_VOICE); a script in a language it does not speak is "
                                  "narrated by a voice that does, or captioned only, with a note on the job"},
                           script={**TEXT, "minLength": 1, "maxLength": MAX_USER_SCRIPT,
                                   "description": "your own narration, spoken as written; the video "
                                   "runs as long as it takes to say (paced toward duration_seconds)"}),
    "GenerateAccepted": obj(["job_id", "status", "credits_remaining"], job_id=UUID, status={"const": "queued"},
                            credits_remaining={"type": "integer", "minimum": 0}),
    "Job": obj(["job_id", "status", "progress", "video_url", "error", "platform", "topic", "duration_seconds",
                "created_at", "finished_at"],
               job_id=UUID, status={"enum": ["queued", "processing", "completed", "failed"]},
               progress={"type": "integer", "minimum": 0, "maximum": 100}, video_url=NULLABLE_STRING,
               error=NULLABLE_STRING, note={**NULLABLE_STRING, "description": "what the video could not do "
                                            "(e.g. no voice for its language)"},
               voice=NULLABLE_STRING, platform={"enum": PLATFORMS}, topic=STRING,
               duration_seconds={"type": "integer"}, created_at=DATETIME,
               finished_at={"type": ["string", "null"], "format": "date-time"}),
    "JobList": obj(["jobs", "next_before"], jobs={"type": "array", "items": ref("Job")},
                   next_before={"type": ["string", "null"], "format": "uuid",
                                "description": "pass as `before` for the next page; null on the last"}),
    "Credits": obj(["tier", "status", "credits_total", "credits_used", "credits_remaining", "renews_at"],
                   tier={"enum": TIERS}, status=STRING, credits_total={"type": "integer"},
                   credits_used={"type": "integer"}, credits_remaining={"type": "integer"}, renews_at=DATETIME),
    "Usage": obj(["usage"], usage={"type": "array", "items": obj(
        ["action", "credits", "job_id", "timestamp"], action=STRING, credits={"type": "integer"},
        job_id={"type": ["string", "null"], "format": "uuid"}, timestamp=DATETIME)}),
}

ERROR_TEXT = {
    400: "Bad request (webhook signature or body)", 401: "Not authenticated, or the token/key is invalid",
    402: "Out of credits, or the card was declined", 403: "Not allowed (plan, disabled account, wrong current password)",
    404: "Not found (or not yours)", 409: "Conflict", 413: "Request body over 1 MB",
    422: "Invalid input; `field` names it", 429: "Too many attempts; see Retry-After",
    503: "Temporarily unavailable; see Retry-After",
}


def json_response(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def operation(summary: str, ok: int, ok_schema: dict | None, errors: list[int], *, body: str | None = None,
              auth: bool = True, params: list[dict] | None = None, tag: str = "") -> dict:
    responses = {str(ok): json_response(summary, ok_schema) if ok_schema else {"description": summary}}
    for status in sorted(set(errors) | {503} | ({401, 403} if auth else set()) | ({413, 422} if body else set())):
        responses[str(status)] = json_response(ERROR_TEXT[status], ref("Error"))
    op = {"summary": summary, "tags": [tag], "responses": responses,
          "security": [{"bearer": []}] if auth else []}
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(body)}}}
    if params:
        op["parameters"] = params
    return op


def with_response(op: dict, status: int, description: str, schema: dict) -> dict:
    """`op` with one more successful answer."""
    return {**op, "responses": {**op["responses"], str(status): json_response(description, schema)}}


def query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def path_id(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": UUID}


PATHS = {
    "/v1/auth/signup": {"post": operation("Create an account (free plan, 5 credits; 5 signups an hour per client "
                                          "network)", 201, ref("TokenPair"), [409, 429],
                                          body="SignupRequest", auth=False, tag="auth")},
    "/v1/auth/login": {"post": with_response(
        operation("Sign in", 200, ref("SignedIn"), [401, 403, 429], body="LoginRequest", auth=False, tag="auth"),
        202, "Password accepted; two-factor sign-in is on: send a code to /v1/auth/login/2fa",
        ref("TwoFactorChallenge"))},
    "/v1/auth/login/2fa": {"post": operation("Second step of a sign-in with two-factor on", 200, ref("TokenPair"),
                                             [401, 429], body="TwoFactorLogin", auth=False, tag="auth")},
    "/v1/auth/2fa/setup": {"post": operation("Start two-factor enrolment: a secret for the authenticator app", 200,
                                             ref("TwoFactorSetup"), [409], tag="auth")},
    "/v1/auth/2fa/enable": {"post": operation("Turn two-factor sign-in on (password and a code); recovery codes",
                                              200, ref("RecoveryCodes"), [409], body="TwoFactorConfirm", tag="auth")},
    "/v1/auth/2fa/disable": {"post": operation("Turn two-factor sign-in off (password and a code)", 200,
                                               ref("Message"), [409], body="TwoFactorConfirm", tag="auth")},
    "/v1/auth/refresh": {"post": operation("Rotate a refresh token into a new pair", 200, ref("TokenPair"),
                                           [401, 403], body="RefreshRequest", auth=False, tag="auth")},
    "/v1/auth/logout": {"post": operation("Revoke a refresh token (and its family)", 204, None, [],
                                          body="RefreshRequest", tag="auth")},
    "/v1/auth/me": {"get": operation("The signed-in user", 200, ref("User"), [], tag="auth")},
    "/v1/auth/password": {"post": operation("Change password; every other session ends", 200, ref("TokenPair"),
                                            [], body="PasswordChange", tag="auth")},
    "/v1/auth/verify": {"post": operation("Confirm an email address with the emailed token", 200, ref("Verified"),
                                          [], body="TokenRequest", auth=False, tag="auth")},
    "/v1/auth/verify/resend": {"post": operation("Email a new verification link (3 an hour)", 202, ref("Message"),
                                                 [409, 429], tag="auth")},
    "/v1/auth/password/forgot": {"post": operation(
        "Email a password-reset link; the same answer whether or not the account exists", 202, ref("Message"),
        [429], body="ForgotRequest", auth=False, tag="auth")},
    "/v1/auth/password/reset": {"post": operation(
        "Set a new password with the emailed token; every session ends", 200, ref("Message"), [],
        body="ResetRequest", auth=False, tag="auth")},
    "/v1/keys": {
        "post": operation("Create an API key (Pro and Agency); the key is shown once", 201, ref("KeyCreated"),
                          [409], body="KeyCreate", tag="keys"),
        "get": operation("List live API keys", 200, ref("KeyList"), [], tag="keys"),
    },
    "/v1/keys/{key_id}": {"delete": operation("Revoke an API key", 204, None, [404], params=[path_id("key_id")],
                                              tag="keys")},
    "/v1/shorts/generate": {"post": operation("Spend one credit on a video", 202, ref("GenerateAccepted"), [402],
                                              body="GenerateRequest", tag="videos")},
    "/v1/jobs": {"get": operation("Your jobs, newest first", 200, ref("JobList"), [422], params=[
        query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}, "page size"),
        query("before", UUID, "id of the last job of the previous page")], tag="videos")},
    "/v1/jobs/{job_id}": {"get": operation("One of your jobs", 200, ref("Job"), [404], params=[path_id("job_id")],
                                           tag="videos")},
    "/v1/user/credits": {"get": operation("Plan and balance", 200, ref("Credits"), [], tag="account")},
    "/v1/user/usage": {"get": operation("Billable actions", 200, ref("Usage"), [422], params=[
        query("days", {"type": "integer", "minimum": 1, "maximum": 365, "default": 30}, "how far back")],
        tag="account")},
    "/v1/billing/plans": {"get": operation("The plans on sale", 200, ref("Plans"), [], auth=False, tag="billing")},
    "/v1/billing/create-checkout-session": {"post": operation(
        "Start a Stripe Checkout for a plan (verified email required)", 200, ref("CheckoutSession"), [409, 503],
        body="CheckoutRequest", tag="billing")},
    "/v1/billing/portal": {"get": operation("Open the Stripe customer portal", 200, ref("PortalSession"), [404],
                                            tag="billing")},
    "/v1/billing/subscription": {"get": operation("Your subscription: plan, status, period, pending changes", 200,
                                                  ref("Subscription"), [], tag="billing")},
    "/v1/billing/change-plan": {"post": operation(
        "Change plan: Checkout from Free; an upgrade applies at once (prorated, charged now); a downgrade or "
        "Free applies when the period ends; your current plan undoes a pending change", 202, ref("PlanChange"),
        [402, 409, 503], body="ChangePlanRequest", tag="billing")},
    "/v1/billing/cancel": {"post": operation("Cancel at the period's end (resumable until then)", 202,
                                             ref("PlanChange"), [409, 503], tag="billing")},
    "/v1/billing/resume": {"post": operation("Undo a cancellation at the period's end", 202, ref("PlanChange"),
                                             [409, 503], tag="billing")},
    "/v1/billing/invoices": {"get": operation("Your latest invoices, with Stripe's hosted page for each", 200,
                                              ref("InvoiceList"), [503], tag="billing")},
    "/v1/billing/webhook": {"post": {
        **operation("Stripe events (signed; called by Stripe)", 200, ref("WebhookResult"), [400], auth=False,
                    tag="billing"),
        "parameters": [{"name": "Stripe-Signature", "in": "header", "required": True, "schema": STRING}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
    }},
}

DOCUMENT = {
    "openapi": "3.1.0",
    "info": {"title": "Story Genius API", "version": "1.0.0",
             "description": "Accounts, credits, video generation and billing. Authenticate with "
                            "`Authorization: Bearer <access token>` (from signup/login) or `Bearer sk_…` "
                            "(an API key). Errors are `{\"detail\": …}`."},
    "servers": [{"url": "/"}],
    "paths": PATHS,
    "components": {"schemas": SCHEMAS,
                   "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                  "description": "JWT access token or sk_ API key"}}},
}


def query_parameters(rule: str, method: str) -> set[str]:
    """The query parameters the document lists for a Flask URL rule and method."""
    import re

    path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)
    op = PATHS.get(path, {}).get(method.lower(), {})
    return {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}


@docs.get("/openapi.json")
def openapi_json():
    return jsonify(DOCUMENT)


@docs.get("/docs")
def api_docs():
    return render_template("docs.html", spec=DOCUMENT)


# -- The developer API: key scopes and budgets, batches, Idempotency-Key, rate limits --------

KEY_SCOPES = ["videos:write", "videos:read", "credits:read", "webhooks:manage"]
SCOPES_FIELD = {"type": "array", "items": {"enum": KEY_SCOPES}, "minItems": 1, "maxItems": 4, "uniqueItems": True,
                "description": "what the key may do; default: all four. Keys never manage keys, billing or "
                               "the account (that needs a signed-in session)"}
BUDGET_FIELD = {"type": ["integer", "null"], "minimum": 1, "maximum": 1_000_000,
                "description": "credits the key may spend per calendar month (UTC); null: no limit but "
                               "the balance"}
BATCH_ITEM = {**SCHEMAS["GenerateRequest"], "description": "one video, as for /v1/shorts/generate"}

SCHEMAS.update({
    "KeyCreate": {**obj(["name"], name={**TEXT, "minLength": 1, "maxLength": 100}, scopes=SCOPES_FIELD,
                        monthly_budget=BUDGET_FIELD),
                  "example": {"name": "CI server", "scopes": ["videos:write", "videos:read"],
                              "monthly_budget": 50}},
    "Key": obj(["id", "name", "prefix", "scopes", "monthly_budget", "budget_used", "created_at", "last_used"],
               id=UUID, name=STRING, prefix=STRING, scopes={"type": "array", "items": {"enum": KEY_SCOPES}},
               monthly_budget={"type": ["integer", "null"]},
               budget_used={"type": "integer", "minimum": 0,
                            "description": "credits spent through the key this month (refunds not counted)"},
               created_at=DATETIME, last_used={"type": ["string", "null"], "format": "date-time"}),
    "BatchRequest": {**obj(["items"], items={"type": "array", "items": BATCH_ITEM, "minItems": 1, "maxItems": 50}),
                     "example": {"items": [{"platform": "tiktok", "topic": "the history of coffee"},
                                           {"platform": "youtube_shorts", "topic": "why cats purr",
                                            "duration_seconds": 30}]}},
    "BatchAccepted": {**obj(["batch_id", "job_ids", "status", "credits_remaining"], batch_id=UUID,
                            job_ids={"type": "array", "items": UUID, "minItems": 1, "maxItems": 50,
                                     "description": "in the order of the request's items"},
                            status={"const": "queued"}, credits_remaining={"type": "integer", "minimum": 0}),
                      "example": {"batch_id": "5b0c3a1e-8f1d-4c1a-9a57-0e0f4d2b7c11",
                                  "job_ids": ["0d9f6a8e-2c51-4f4e-a7a1-3f1b2e4c5d60",
                                              "7e2b1c3d-4a5f-4e6d-8c7b-9a0f1e2d3c4b"],
                                  "status": "queued", "credits_remaining": 98}},
    "Batch": obj(["batch_id", "status", "progress", "total", "counts", "created_at", "items"], batch_id=UUID,
                 status={"enum": ["queued", "processing", "completed", "partially_failed", "failed"]},
                 progress={"type": "integer", "minimum": 0, "maximum": 100,
                           "description": "of the whole batch; a failed (refunded) video counts as done"},
                 total={"type": "integer", "minimum": 1, "maximum": 50},
                 counts=obj(["queued", "processing", "completed", "failed"],
                            **{s: {"type": "integer", "minimum": 0}
                               for s in ("queued", "processing", "completed", "failed")}),
                 created_at=DATETIME, items={"type": "array", "items": ref("Job")}),
})
SCHEMAS["Batch"]["example"] = {
    "batch_id": "5b0c3a1e-8f1d-4c1a-9a57-0e0f4d2b7c11", "status": "processing", "progress": 75, "total": 2,
    "counts": {"queued": 0, "processing": 1, "completed": 1, "failed": 0}, "created_at": "2026-12-01T19:00:00+00:00",
    "items": [{"job_id": "0d9f6a8e-2c51-4f4e-a7a1-3f1b2e4c5d60", "status": "completed", "progress": 100,
               "video_url": "/media/0d9f6a8e-2c51-4f4e-a7a1-3f1b2e4c5d60.mp4", "error": None, "note": None,
               "voice": None, "platform": "tiktok", "topic": "the history of coffee", "duration_seconds": 20,
               "created_at": "2026-12-01T19:00:00+00:00", "finished_at": "2026-12-01T19:00:41+00:00"},
              {"job_id": "7e2b1c3d-4a5f-4e6d-8c7b-9a0f1e2d3c4b", "status": "processing", "progress": 50,
               "video_url": None, "error": None, "note": None, "voice": None, "platform": "youtube_shorts",
               "topic": "why cats purr", "duration_seconds": 30, "created_at": "2026-12-01T19:00:00+00:00",
               "finished_at": None}]}
SCHEMAS["Key"]["example"] = {"id": "3c2b1a09-8f7e-4d6c-b5a4-392817160504", "name": "CI server",
                             "prefix": "sk_Ab3dE5f", "scopes": ["videos:write", "videos:read"], "monthly_budget": 50,
                             "budget_used": 12, "created_at": "2026-11-20T08:00:00+00:00",
                             "last_used": "2026-12-01T18:59:12+00:00"}

PATHS.update({
    "/v1/shorts/batch": {"post": operation(
        "Spend one credit per video on up to 50 videos, all or nothing (402 says how many credits the batch "
        "needs; nothing is spent)", 202, ref("BatchAccepted"), [402, 409], body="BatchRequest", tag="videos")},
    "/v1/batches/{batch_id}": {"get": operation("One of your batches: each video's status and the progress of "
                                                "the whole", 200, ref("Batch"), [404],
                                                params=[path_id("batch_id")], tag="videos")},
})

IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False, "example": "8e2f6c1a-3b4d-4e5f-9a8b-7c6d5e4f3a2b",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
    "description": "Carry this request out at most once: a retry with the same key and body within 24 hours "
                   "gets the first answer again (with `Idempotent-Replayed: true`) and changes nothing; the same "
                   "key with another body is a 422; a retry while the first is still running is a 409.",
}
RATE_LIMIT_HEADERS = {
    "RateLimit-Limit": "requests a minute your plan allows (per API key, or per user for access tokens)",
    "RateLimit-Remaining": "requests left in the current minute",
    "RateLimit-Reset": "seconds until the minute's count starts again",
}


def _header(name: str) -> dict:
    return {"$ref": f"#/components/headers/{name}"}


HEADERS = {
    **{name: {"description": text, "required": False, "schema": {"type": "integer", "minimum": 0}}
       for name, text in RATE_LIMIT_HEADERS.items()},
    "Retry-After": {"description": "seconds to wait before trying again", "required": True,
                    "schema": {"type": "integer", "minimum": 0}},
    "Idempotent-Replayed": {"description": "true when this is the kept answer of an earlier request with the "
                                           "same Idempotency-Key", "required": False, "schema": {"const": "true"}},
}


def _with_developer_headers(paths: dict) -> None:
    """Every authenticated operation is rate limited (429 + Retry-After) and says so in
    RateLimit-* headers; every authenticated POST takes an Idempotency-Key (422 for a key
    reused with another body, 409 while the first request runs)."""
    rate_headers = {name: _header(name) for name in RATE_LIMIT_HEADERS}
    for path_ops in paths.values():
        for method, op in path_ops.items():
            if not op.get("security"):
                continue
            statuses = {"429"} | ({"409", "422"} if method == "post" else set())
            for status in statuses - set(op["responses"]):
                op["responses"][status] = json_response(ERROR_TEXT[int(status)], ref("Error"))
            op["responses"]["429"] = {**op["responses"]["429"],
                                      "headers": {"Retry-After": _header("Retry-After"), **rate_headers}}
            for status, response in op["responses"].items():
                if status.startswith("2"):
                    response["headers"] = {**response.get("headers", {}), **rate_headers}
                    if method == "post":
                        response["headers"]["Idempotent-Replayed"] = _header("Idempotent-Replayed")
            if method == "post":
                op["parameters"] = [*op.get("parameters", []), IDEMPOTENCY_KEY]


_with_developer_headers(PATHS)
DOCUMENT["components"]["headers"] = HEADERS
