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
    "AutoTopUp": obj(["enabled", "pack", "threshold", "min_hours_between", "max_per_month", "disabled_reason",
                      "bought_this_month", "last_attempt_at"],
                     enabled={"type": "boolean"}, pack={"type": ["string", "null"]},
                     threshold={"type": ["integer", "null"]}, min_hours_between={"type": "integer"},
                     max_per_month={"type": "integer"}, disabled_reason={"type": ["string", "null"]},
                     bought_this_month={"type": "integer"},
                     last_attempt_at={"type": ["string", "null"], "format": "date-time"}),
    "AutoTopUpRequest": obj(["enabled", "pack", "threshold"], enabled={"type": "boolean"},
                            pack={"enum": ["pack_10", "pack_50", "pack_200"]},
                            threshold={"type": "integer", "minimum": 1, "maximum": 1000,
                                       "description": "buy when a video leaves fewer credits than this"},
                            min_hours_between={"type": "integer", "minimum": 1, "maximum": 720, "default": 24},
                            max_per_month={"type": "integer", "minimum": 1, "maximum": 31, "default": 3}),
    "BuyPackRequest": obj(["pack"], pack={"enum": ["pack_10", "pack_50", "pack_200"]}),
    "Packs": obj(["packs", "expires_after_months"], expires_after_months={"type": "integer"}, packs={
        "type": "array", "items": obj(["pack", "name", "credits", "price_cents", "price", "on_sale"], pack=STRING,
                                      name=STRING, credits={"type": "integer"}, price_cents={"type": "integer"},
                                      price=STRING, on_sale={"type": "boolean"})}),
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
    "Credits": obj(["tier", "status", "credits_total", "credits_used", "credits_remaining", "renews_at", "buckets",
                    "expiring_soon"],
                   tier={"enum": TIERS}, status=STRING, credits_total={"type": "integer"},
                   credits_used={"type": "integer"}, credits_remaining={"type": "integer"}, renews_at=DATETIME,
                   buckets={"type": "array", "description": "credits left to spend, in the order spends take them "
                                                            "(soonest expiry first)", "items": ref("CreditBucket")},
                   expiring_soon={"oneOf": [{"type": "null"}, obj(
                       ["credits", "first_expires_at", "within_days"], credits={"type": "integer"},
                       first_expires_at=DATETIME, within_days={"type": "integer"})]}),
    "CreditBucket": obj(["id", "source", "amount", "remaining", "expires_at"], id=UUID,
                        source={"enum": ["signup", "plan", "upgrade", "renewal", "rollover", "pack", "referral",
                                         "operator", "refund", "opening"]},
                        amount={"type": "integer"}, remaining={"type": "integer", "minimum": 1},
                        expires_at={"type": ["string", "null"], "format": "date-time",
                                    "description": "null: never expires"}),
    "CreditStatement": obj(["movements", "truncated"], truncated={"type": "boolean"}, movements={
        "type": "array", "items": obj(
            ["id", "at", "reason", "description", "delta", "balance_after", "bucket", "job_id"], id=UUID,
            at=DATETIME, reason=STRING, description=STRING, delta={"type": "integer"},
            balance_after={"type": "integer"}, job_id={"type": ["string", "null"], "format": "uuid"},
            bucket={"oneOf": [{"type": "null"}, obj(["id", "source", "expires_at"], id=UUID, source=STRING,
                                                     expires_at={"type": ["string", "null"], "format": "date-time"})]})}),
    "BalanceAt": obj(["at", "credits_remaining"], at=DATETIME, credits_remaining={"type": "integer"}),
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
    "/v1/credits/statement": {"get": operation(
        "Every credit movement (oldest first) with its bucket and the balance after it", 200, ref("CreditStatement"),
        [422], params=[query("from", {"type": "string", "format": "date-time"}, "from this moment (inclusive)"),
                       query("to", {"type": "string", "format": "date-time"}, "until this moment (exclusive)"),
                       query("kind", {"enum": ["granted", "spent", "refunded", "expired"]}, "only these movements")],
        tag="account")},
    "/v1/credits/balance": {"get": operation(
        "The balance at a past moment, from the ledger", 200, ref("BalanceAt"), [422],
        params=[{**query("at", {"type": "string", "format": "date-time"}, "the moment (ISO 8601)"),
                 "required": True}], tag="account")},
    "/v1/user/usage": {"get": operation("Billable actions", 200, ref("Usage"), [422], params=[
        query("days", {"type": "integer", "minimum": 1, "maximum": 365, "default": 30}, "how far back")],
        tag="account")},
    "/v1/billing/plans": {"get": operation("The plans on sale", 200, ref("Plans"), [], auth=False, tag="billing")},
    "/v1/billing/create-checkout-session": {"post": operation(
        "Start a Stripe Checkout for a plan (verified email required)", 200, ref("CheckoutSession"), [409, 503],
        body="CheckoutRequest", tag="billing")},
    "/v1/billing/packs": {"get": operation("Credit packs on sale (bought credits last 12 months)", 200, ref("Packs"), [],
                                           auth=False, tag="billing")},
    "/v1/billing/buy-pack": {"post": operation(
        "Start a Stripe Checkout for a credit pack, on any plan (verified email required)", 200,
        ref("CheckoutSession"), [503], body="BuyPackRequest", tag="billing")},
    "/v1/billing/auto-top-up": {
        "get": operation("Your automatic top-up setting", 200, ref("AutoTopUp"), [], tag="billing"),
        "put": operation("Set automatic top-up (paid plans): buy a pack off-session when a video leaves fewer "
                         "credits than the threshold, within the limits; a failed payment turns it off", 200,
                         ref("AutoTopUp"), [], body="AutoTopUpRequest", tag="billing")},
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
