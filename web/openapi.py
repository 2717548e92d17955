"""The published API contract: an OpenAPI 3.1 document for every /v1 route, served at
/openapi.json and rendered for people at /docs.

Generated clients and linters read it, so every operation has a stable `operationId`
(renaming one breaks every client built from it), a description, a tag declared below,
and an example for its body and answers; every schema has a description and an example
that validates against it. tests/test_contract.py keeps it in step with the routes and
runs Redocly, Spectral and a TypeScript consumer (tests/contract/) on the served document.
"""
from __future__ import annotations

import re

from flask import Blueprint, jsonify, render_template, request

from worker.script import MAX_USER_SCRIPT
from worker.voices import VOICES

docs = Blueprint("docs", __name__)

TIERS = ["free", "starter", "pro", "agency"]
PLATFORMS = ["youtube_shorts", "tiktok", "instagram_reels"]

# ids and times the examples share, so one example reads as one story
USER_ID = "6f1c0a52-9b7e-4c1f-8d3a-2f5e7c9b1a04"
JOB_ID = "0b8e6c1d-4f2a-4d7e-9c3b-5a1f2e8d7c60"
KEY_ID = "3c9d2e7f-1a4b-4c8d-b2e6-7f0a9d1c5e38"
NOW = "2026-12-01T10:15:00+00:00"
LATER = "2026-12-01T10:16:12+00:00"
PERIOD_END = "2027-01-01T00:00:00+00:00"


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: list[str], **properties) -> dict:
    return {"type": "object", "required": required, "properties": properties}


def described(description: str, example, schema: dict) -> dict:
    """A component schema with the description and example generators and linters read."""
    return {**schema, "description": description, "examples": [example]}


STRING = {"type": "string"}
NULLABLE_STRING = {"type": ["string", "null"]}
DATETIME = {"type": "string", "format": "date-time"}
UUID = {"type": "string", "format": "uuid"}
# text fields must carry something besides white space
TEXT = {"type": "string", "pattern": r"\S"}

BUCKET_ID = "3c1d9e7a-52b4-4f0e-9a61-7be2c8d4f015"
PACK_BUCKET_ID = "8e2f4a6b-1c3d-4e5f-a7b9-0c1d2e3f4a5b"
MOVEMENT_ID = "5b7c9d1e-3f5a-4b7c-9d1e-3f5a7b9c1d3e"
USER_EXAMPLE = {"id": USER_ID, "email": "ada@example.com", "full_name": "Ada Lovelace", "is_verified": True,
                "tier": "pro", "credits_remaining": 97}
TOKEN_PAIR_EXAMPLE = {"access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI2ZjFj…",
                      "refresh_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0eXAiOiJyZWZyZXNo…",
                      "token_type": "bearer", "expires_in": 86400, "user": USER_EXAMPLE}
DEVICE_TOKEN = "dv_5Jx0f3Qm9tLr2WcA7yKpN1sE"
FEATURES_EXAMPLE = {"width": 2160, "height": 3840, "watermark": False, "api_keys": True, "queue_priority": 10,
                    "rate_limit_per_minute": 60,
                    "closing_card": False, "branding": True, "white_label": False,
                    "highlights": ["100 videos a month", "4K vertical video, no watermark",
                                   "Your logo and brand colours on every video", "API access",
                                   "Priority rendering"]}
KEY_EXAMPLE = {"id": KEY_ID, "name": "CI pipeline", "prefix": "sk_live_3kTq",
               "scopes": ["videos:write", "videos:read"], "monthly_budget": 50, "budget_used": 12,
               "created_at": NOW, "last_used": None}
KEY_SCOPES = ["videos:write", "videos:read", "credits:read", "webhooks:manage"]
JOB_EXAMPLE = {"job_id": JOB_ID, "status": "completed", "progress": 100,
               "video_url": f"/media/{JOB_ID}.mp4", "poster_url": f"/media/{JOB_ID}.jpg",
               "title": "Three hearts, one octopus", "error": None, "note": None, "voice": "en_US-joe-medium",
               "platform": "youtube_shorts", "topic": "Why octopuses have three hearts", "duration_seconds": 20,
               "created_at": NOW, "finished_at": LATER}

SCHEMAS = {
    "Error": described(
        "Every error. `field` names the offending input; 402 adds `upgrade_url`.",
        {"detail": "topic: must be 3 to 200 characters", "field": "topic"},
        obj(["detail"], detail={**STRING, "description": "what went wrong, for people"},
            field={**STRING, "description": "the input at fault, when there is one"},
            upgrade_url={**STRING, "description": "where to buy credits (402 only)"})),
    "User": described(
        "The signed-in account: identity, plan and balance.", USER_EXAMPLE,
        obj(["id", "email", "full_name", "is_verified", "tier", "credits_remaining"],
            id=UUID, email=STRING, full_name=NULLABLE_STRING, is_verified={"type": "boolean"},
            tier={"enum": TIERS}, credits_remaining={"type": "integer", "minimum": 0})),
    "TokenPair": described(
        "A new session's tokens: a 24-hour access token for `Authorization: Bearer`, and a 30-day refresh "
        "token that `/v1/auth/refresh` rotates.", TOKEN_PAIR_EXAMPLE,
        obj(["access_token", "refresh_token", "token_type", "expires_in", "user"],
            access_token=STRING, refresh_token=STRING, token_type={"const": "bearer"},
            expires_in={"type": "integer", "description": "seconds the access token lives"}, user=ref("User"))),
    "SignupRequest": described(
        "A new account: a deliverable address and a password that is not a common one.",
        {"email": "ada@example.com", "password": "correct horse battery staple", "full_name": "Ada Lovelace",
         "referral_code": "k3v9q27xm2"},
        obj(["email", "password"], email={**TEXT, "maxLength": 254},
            password={"type": "string", "minLength": 8, "maxLength": 128},
            full_name={"type": ["string", "null"], "maxLength": 200},
            referral_code={"type": ["string", "null"], "maxLength": 40,
                           "description": "from a referral link (`/r/<code>`): +5 credits once the address is "
                                          "confirmed; an unknown code is ignored"})),
    "LoginRequest": described(
        "Credentials, with the device token of an earlier sign-in from this device.",
        {"email": "ada@example.com", "password": "correct horse battery staple", "device_token": DEVICE_TOKEN},
        obj(["email", "password"], email={"type": "string", "maxLength": 254},
            password={"type": "string", "maxLength": 1024},
            device_token={"type": "string", "minLength": 1, "maxLength": 200,
                          "description": "from an earlier sign-in on this device: other clients' "
                                         "failed attempts never throttle it"})),
    "SignedIn": described(
        "A successful sign-in: the token pair and this device's token.",
        {**TOKEN_PAIR_EXAMPLE, "device_token": DEVICE_TOKEN},
        {"allOf": [ref("TokenPair"), obj(["device_token"], device_token={
            "type": "string", "description": "keep it and send it with the next sign-in from this device"})]}),
    "TwoFactorChallenge": described(
        "The password was right and two-factor sign-in is on: send a code with this challenge.",
        {"two_factor_required": True, "challenge_token": "tfa_Qm9sZCBtb3ZlcyBvbmx5", "expires_in": 300,
         "device_token": DEVICE_TOKEN},
        obj(["two_factor_required", "challenge_token", "expires_in", "device_token"],
            two_factor_required={"const": True}, challenge_token=STRING,
            expires_in={"type": "integer", "description": "seconds the challenge lives"}, device_token=STRING)),
    "TwoFactorLogin": described(
        "The second step of a sign-in.", {"challenge_token": "tfa_Qm9sZCBtb3ZlcyBvbmx5", "code": "492039"},
        obj(["challenge_token", "code"], challenge_token={"type": "string", "minLength": 1, "maxLength": 200},
            code={"type": "string", "minLength": 1, "maxLength": 50,
                  "description": "6 digits from the authenticator app, or a recovery code"})),
    "TwoFactorSetup": described(
        "A new TOTP secret, as text and as an otpauth URI for a QR code.",
        {"secret": "JBSWY3DPEHPK3PXP",
         "otpauth_uri": "otpauth://totp/Story%20Genius:ada%40example.com?secret=JBSWY3DPEHPK3PXP&issuer=Story%20Genius"},
        obj(["secret", "otpauth_uri"], secret=STRING, otpauth_uri=STRING)),
    "TwoFactorConfirm": described(
        "The password and a current code, to turn two-factor sign-in on or off.",
        {"password": "correct horse battery staple", "code": "492039"},
        obj(["password", "code"], password={"type": "string", "maxLength": 1024},
            code={"type": "string", "minLength": 1, "maxLength": 50})),
    "RecoveryCodes": described(
        "Ten single-use codes that stand in for the authenticator app; shown once.",
        {"recovery_codes": [f"k3v9-q{n}7x-m2pa" for n in range(10)]},
        obj(["recovery_codes"], recovery_codes={"type": "array", "items": STRING, "minItems": 10, "maxItems": 10})),
    "RefreshRequest": described(
        "A refresh token to rotate or revoke.", {"refresh_token": TOKEN_PAIR_EXAMPLE["refresh_token"]},
        obj(["refresh_token"], refresh_token={"type": "string", "maxLength": 4096})),
    "PasswordChange": described(
        "The current password and the new one.",
        {"current_password": "correct horse battery staple", "new_password": "a longer and newer passphrase"},
        obj(["current_password", "new_password"], current_password={"type": "string", "maxLength": 1024},
            new_password={"type": "string", "minLength": 8, "maxLength": 128})),
    "TokenRequest": described(
        "A token from an emailed link.", {"token": "vf_8HqZt2LmR4yXc1NwB6sJ"},
        obj(["token"], token={"type": "string", "minLength": 1, "maxLength": 200})),
    "Verified": described("The address is confirmed.", {"verified": True}, obj(["verified"], verified={"const": True})),
    "Message": described("A confirmation for people to read.", {"detail": "Verification email sent."},
                         obj(["detail"], detail=STRING)),
    "ForgotRequest": described("The address to send a reset link to.", {"email": "ada@example.com"},
                               obj(["email"], email={"type": "string", "maxLength": 254})),
    "ResetRequest": described(
        "The emailed reset token and the new password.",
        {"token": "rs_3NfW8kYp0QzT5aLm2VhC", "new_password": "a longer and newer passphrase"},
        obj(["token", "new_password"], token={"type": "string", "minLength": 1, "maxLength": 200},
            new_password={"type": "string", "minLength": 8, "maxLength": 128})),
    "PlanFeatures": described(
        "What a plan's videos and account can do.", FEATURES_EXAMPLE,
        {**obj(["width", "height", "watermark", "api_keys", "queue_priority", "rate_limit_per_minute", "closing_card",
                "branding", "white_label", "highlights"],
               width={"type": "integer", "minimum": 1, "description": "video width in pixels"},
               height={"type": "integer", "minimum": 1, "description": "video height in pixels"},
               watermark={"type": "boolean", "description": "videos carry the Story Genius mark"},
               closing_card={"type": "boolean", "description": "videos end on the Story Genius closing card"},
               branding={"type": "boolean", "description": "videos carry your logo and colours (/v1/branding)"},
               white_label={"type": "boolean", "description": "no Story Genius name in your videos"},
               api_keys={"type": "boolean", "description": "the plan may create API keys"},
               queue_priority={"type": "integer", "minimum": 0,
                               "description": "higher renders first when the queue is busy"},
               rate_limit_per_minute={"type": "integer", "minimum": 1,
                                      "description": "/v1 requests a minute per API key (or per user with an "
                                                     "access token); see the RateLimit-* headers"},
               highlights={"type": "array", "items": STRING, "description": "selling points, in order"}),
         "additionalProperties": False}),
    "Plan": described(
        "A plan on sale.",
        {"tier": "pro", "name": "Pro", "price_cents": 2900, "price": "$29.00", "credits": 100,
         "features": FEATURES_EXAMPLE},
        obj(["tier", "name", "price_cents", "price", "credits", "features"], tier={"enum": TIERS},
            name=STRING, price_cents={"type": "integer", "minimum": 0}, price=STRING,
            credits={"type": "integer", "minimum": 0, "description": "credits each month"},
            features=ref("PlanFeatures"))),
    "Plans": described(
        "Every plan, cheapest first.",
        {"plans": [{"tier": "pro", "name": "Pro", "price_cents": 2900, "price": "$29.00", "credits": 100,
                    "features": FEATURES_EXAMPLE}], "test_mode": False},
        obj(["plans", "test_mode"], plans={"type": "array", "items": ref("Plan")},
            test_mode={"type": "boolean", "description": "true when checkout is simulated (no Stripe keys)"})),
    "CheckoutRequest": described("The paid plan to buy.", {"tier": "pro"},
                                 obj(["tier"], tier={"enum": ["starter", "pro", "agency"]})),
    "CheckoutSession": described(
        "Stripe's hosted payment page for the plan.", {"checkout_url": "https://checkout.stripe.com/c/pay/cs_test_a1b2"},
        obj(["checkout_url"], checkout_url=STRING)),
    "ChangePlanRequest": described(
        "The plan to move to.", {"tier": "agency"},
        obj(["tier"], tier={"enum": TIERS, "description": "free = cancel at the period's end"})),
    "PlanChange": described(
        "What a plan change did, or the Checkout to open when there is nothing to change yet.",
        {"action": "upgraded", "detail": "You are on Agency now; the difference was charged."},
        obj(["action", "detail"],
            action={"enum": ["checkout", "upgraded", "downgrade_scheduled", "downgrade_canceled",
                             "cancel_scheduled", "resumed"]},
            detail=STRING,
            checkout_url={**STRING, "description": "only for action `checkout`: open it to pay"})),
    "Subscription": described(
        "Your subscription as Stripe last told us: plan, status, period and any change waiting for the period's end.",
        {"tier": "pro", "status": "active", "subscribed_tier": "pro", "credits_remaining": 97,
         "credits_granted_this_period": 100, "current_period_start": "2026-12-01T00:00:00+00:00",
         "current_period_end": PERIOD_END, "cancel_at_period_end": False, "cancel_at": None,
         "pending_change": {"tier": "starter", "effective_at": PERIOD_END}, "syncing": False},
        obj(["tier", "status", "subscribed_tier", "credits_remaining", "credits_granted_this_period",
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
            syncing={"type": "boolean", "description": "a change made at Stripe is still being read back"})),
    "InvoiceList": described(
        "Your latest invoices, newest first.",
        {"invoices": [{"id": "in_1QxYz2AbCdEf", "number": "SG-0001-0003", "status": "paid", "amount_paid": 2900,
                       "amount_due": 2900, "currency": "usd", "created": 1796083200,
                       "hosted_invoice_url": "https://invoice.stripe.com/i/acct_1/test_a1b2"}]},
        obj(["invoices"], invoices={"type": "array", "items": obj(
            ["id", "number", "status", "amount_paid", "amount_due", "currency", "created", "hosted_invoice_url"],
            id=STRING, number=NULLABLE_STRING, status=STRING, amount_paid={"type": "integer"},
            amount_due={"type": "integer"}, currency=STRING,
            created={"type": "integer", "description": "Unix time"}, hosted_invoice_url=NULLABLE_STRING)})),
    "PortalSession": described(
        "Stripe's customer portal for cards and invoices.",
        {"portal_url": "https://billing.stripe.com/p/session/test_a1b2"}, obj(["portal_url"], portal_url=STRING)),
    "StripeEvent": described(
        "An event as Stripe sends it; its `Stripe-Signature` header is checked before anything is read.",
        {"id": "evt_1QxYz2AbCdEf", "object": "event", "type": "invoice.paid", "data": {"object": {"id": "in_1"}}},
        {"type": "object"}),
    "WebhookResult": described(
        "The event was stored (or was a repeat) and will be applied.", {"received": True, "outcome": "stored"},
        obj(["received", "outcome"], received={"type": "boolean"}, outcome=STRING)),
    "KeyCreate": described(
        "A new key: a name to tell keys apart, what it may do, and how many credits it may spend a month.",
        {"name": "CI pipeline", "scopes": ["videos:write", "videos:read"], "monthly_budget": 50},
        obj(["name"], name={**TEXT, "minLength": 1, "maxLength": 100},
            scopes={"type": "array", "items": {"enum": KEY_SCOPES}, "minItems": 1, "maxItems": 4, "uniqueItems": True,
                    "description": "what the key may do (default: all four); a request outside them is a 403 "
                                   "naming the missing scope. Keys never manage keys, billing or the account."},
            monthly_budget={"type": ["integer", "null"], "minimum": 1, "maximum": 1_000_000,
                            "description": "credits the key may spend per calendar month (UTC), checked in the "
                                           "spend's transaction; null: no limit but the balance"})),
    "Key": described(
        "An API key as listed: never the key itself, only its first characters.", KEY_EXAMPLE,
        obj(["id", "name", "prefix", "scopes", "monthly_budget", "budget_used", "created_at", "last_used"],
            id=UUID, name=STRING, prefix=STRING, scopes={"type": "array", "items": {"enum": KEY_SCOPES}},
            monthly_budget={"type": ["integer", "null"], "description": "null: no budget"},
            budget_used={"type": "integer", "minimum": 0,
                         "description": "credits spent through the key this month (refunded videos not counted)"},
            created_at=DATETIME, last_used={"type": ["string", "null"], "format": "date-time"})),
    "KeyCreated": described(
        "A new key, shown this once.", {**KEY_EXAMPLE, "key": "sk_live_3kTqV8mZr1XcN0bLp5WyH7dF"},
        {"allOf": [ref("Key"), obj(["key"], key={"type": "string", "pattern": "^sk_",
                                                 "description": "shown once; store it now"})]}),
    "KeyList": described("Your live API keys, newest first.", {"keys": [KEY_EXAMPLE]},
                         obj(["keys"], keys={"type": "array", "items": ref("Key")})),
    "GenerateRequest": described(
        "What to make: the platform sets the format, the topic (or your own script) the story.",
        {"platform": "youtube_shorts", "topic": "Why octopuses have three hearts", "duration_seconds": 20,
         "voice": "en_US-joe-medium"},
        obj(["platform", "topic"], platform={"enum": PLATFORMS},
            topic={**TEXT, "minLength": 3, "maxLength": 200},
            duration_seconds={"type": "integer", "minimum": 15, "maximum": 60, "default": 20},
            voice={"enum": list(VOICES), "description": "narration voice (default: the "
                   "service's TTS_VOICE); a script in a language it does not speak is "
                   "narrated by a voice that does, or captioned only, with a note on the job"},
            script={**TEXT, "minLength": 1, "maxLength": MAX_USER_SCRIPT,
                    "description": "your own narration, spoken as written; the video "
                    "runs as long as it takes to say (paced toward duration_seconds)"})),
    "GenerateAccepted": described(
        "The credit is spent and the video queued; follow it at `Location`.",
        {"job_id": JOB_ID, "status": "queued", "credits_remaining": 96},
        obj(["job_id", "status", "credits_remaining"], job_id=UUID, status={"const": "queued"},
            credits_remaining={"type": "integer", "minimum": 0})),
    "Job": described(
        "A video being made, or made: its progress, then its URL or why it failed (the credit is refunded).",
        JOB_EXAMPLE,
        obj(["job_id", "status", "progress", "video_url", "error", "platform", "topic", "duration_seconds",
             "created_at", "finished_at"],
            job_id=UUID, status={"enum": ["queued", "processing", "completed", "failed"]},
            progress={"type": "integer", "minimum": 0, "maximum": 100}, video_url=NULLABLE_STRING,
            error=NULLABLE_STRING, note={**NULLABLE_STRING, "description": "what the video could not do "
                                         "(e.g. no voice for its language)"},
            voice=NULLABLE_STRING, platform={"enum": PLATFORMS}, topic=STRING,
            title={**NULLABLE_STRING, "description": "your name for the video (renameJob); null shows the topic"},
            poster_url={**NULLABLE_STRING, "description": "a frame of the finished video (JPEG)"},
            duration_seconds={"type": "integer"}, created_at=DATETIME,
            finished_at={"type": ["string", "null"], "format": "date-time"})),
    "JobRename": described(
        "A new name for a video: one line, used in lists and as the download's file name.",
        {"title": "Three hearts, one octopus"},
        obj(["title"], title={**TEXT, "minLength": 1, "maxLength": 200,
                              "description": "one line; surrounding spaces are trimmed"})),
    "JobList": described(
        "A page of your jobs, newest first.", {"jobs": [JOB_EXAMPLE], "next_before": None},
        obj(["jobs", "next_before"], jobs={"type": "array", "items": ref("Job")},
            next_before={"type": ["string", "null"], "format": "uuid",
                         "description": "pass as `before` for the next page; null on the last"})),
    "Credits": described(
        "Your plan, this period's credits, and every bucket of credits left to spend.",
        {"tier": "pro", "status": "active", "credits_total": 100, "credits_used": 3, "credits_remaining": 107,
         "renews_at": PERIOD_END,
         "buckets": [{"id": BUCKET_ID, "source": "renewal", "amount": 100, "remaining": 97, "expires_at": PERIOD_END},
                     {"id": PACK_BUCKET_ID, "source": "pack", "amount": 10, "remaining": 10,
                      "expires_at": "2027-12-01T09:30:00+00:00"}],
         "expiring_soon": None},
        obj(["tier", "status", "credits_total", "credits_used", "credits_remaining", "renews_at", "buckets",
             "expiring_soon"],
            tier={"enum": TIERS}, status=STRING, credits_total={"type": "integer"},
            credits_used={"type": "integer"}, credits_remaining={"type": "integer"}, renews_at=DATETIME,
            buckets={"type": "array", "description": "credits left to spend, in the order videos take them "
                                                     "(soonest expiry first)", "items": ref("CreditBucket")},
            expiring_soon={"description": "credits that expire within 7 days (null: none)",
                           "oneOf": [{"type": "null"}, obj(
                               ["credits", "first_expires_at", "within_days"], credits={"type": "integer"},
                               first_expires_at=DATETIME, within_days={"type": "integer"})]})),
    "CreditBucket": described(
        "One grant of credits: where it came from, what is left, when it expires.",
        {"id": BUCKET_ID, "source": "pack", "amount": 50, "remaining": 12, "expires_at": "2027-12-01T09:30:00+00:00"},
        obj(["id", "source", "amount", "remaining", "expires_at"], id=UUID,
            source={"enum": ["signup", "plan", "upgrade", "renewal", "rollover", "pack", "referral", "operator",
                             "refund", "opening"]},
            amount={"type": "integer"}, remaining={"type": "integer", "minimum": 1},
            expires_at={"type": ["string", "null"], "format": "date-time", "description": "null: never expires"})),
    "CreditStatement": described(
        "Every credit movement, oldest first, with its bucket and the balance after it.",
        {"movements": [{"id": MOVEMENT_ID, "at": NOW, "reason": "render", "description": "Video: “Octopus hearts”",
                        "delta": -1, "balance_after": 96,
                        "bucket": {"id": BUCKET_ID, "source": "renewal", "expires_at": PERIOD_END},
                        "job_id": JOB_ID}], "truncated": False},
        obj(["movements", "truncated"],
            truncated={"type": "boolean", "description": "true when the window holds more than 5000 movements"},
            movements={"type": "array", "items": obj(
                ["id", "at", "reason", "description", "delta", "balance_after", "bucket", "job_id"], id=UUID,
                at=DATETIME, reason=STRING, description=STRING, delta={"type": "integer"},
                balance_after={"type": "integer"}, job_id={"type": ["string", "null"], "format": "uuid"},
                bucket={"oneOf": [{"type": "null"}, obj(["id", "source", "expires_at"], id=UUID, source=STRING,
                                                         expires_at={"type": ["string", "null"],
                                                                     "format": "date-time"})]})})),
    "BalanceAt": described(
        "The balance at a past moment, from the ledger.", {"at": NOW, "credits_remaining": 96},
        obj(["at", "credits_remaining"], at=DATETIME, credits_remaining={"type": "integer"})),
    "Packs": described(
        "The credit packs on sale; bought credits last 12 months.",
        {"packs": [{"pack": "pack_10", "name": "10 credits", "credits": 10, "price_cents": 500, "price": "$5.00",
                    "on_sale": True}], "expires_after_months": 12},
        obj(["packs", "expires_after_months"], expires_after_months={"type": "integer"}, packs={
            "type": "array", "items": obj(["pack", "name", "credits", "price_cents", "price", "on_sale"],
                                          pack=STRING, name=STRING, credits={"type": "integer"},
                                          price_cents={"type": "integer"}, price=STRING,
                                          on_sale={"type": "boolean"})})),
    "BuyPackRequest": described("The pack to buy.", {"pack": "pack_50"},
                                obj(["pack"], pack={"enum": ["pack_10", "pack_50", "pack_200"]})),
    "AutoTopUp": described(
        "Your automatic top-up: a pack bought with your saved card when a video leaves fewer credits than the "
        "threshold.",
        {"enabled": True, "pack": "pack_50", "threshold": 5, "min_hours_between": 24, "max_per_month": 3,
         "disabled_reason": None, "bought_this_month": 1, "last_attempt_at": NOW},
        obj(["enabled", "pack", "threshold", "min_hours_between", "max_per_month", "disabled_reason",
             "bought_this_month", "last_attempt_at"],
            enabled={"type": "boolean"}, pack={"type": ["string", "null"]}, threshold={"type": ["integer", "null"]},
            min_hours_between={"type": "integer"}, max_per_month={"type": "integer"},
            disabled_reason={"type": ["string", "null"], "description": "why we turned it off (a failed payment)"},
            bought_this_month={"type": "integer"},
            last_attempt_at={"type": ["string", "null"], "format": "date-time"})),
    "AutoTopUpRequest": described(
        "Automatic top-up on or off, which pack, below how many credits, and how often at most.",
        {"enabled": True, "pack": "pack_50", "threshold": 5, "min_hours_between": 24, "max_per_month": 3},
        obj(["enabled", "pack", "threshold"], enabled={"type": "boolean"},
            pack={"enum": ["pack_10", "pack_50", "pack_200"]},
            threshold={"type": "integer", "minimum": 1, "maximum": 1000,
                       "description": "buy when a video leaves fewer credits than this"},
            min_hours_between={"type": "integer", "minimum": 1, "maximum": 720, "default": 24},
            max_per_month={"type": "integer", "minimum": 1, "maximum": 31, "default": 3})),
    "Usage": described(
        "Your billable actions, newest first.",
        {"usage": [{"action": "render", "credits": 1, "job_id": JOB_ID, "timestamp": NOW}]},
        obj(["usage"], usage={"type": "array", "items": obj(
            ["action", "credits", "job_id", "timestamp"], action=STRING, credits={"type": "integer"},
            job_id={"type": ["string", "null"], "format": "uuid"}, timestamp=DATETIME)})),
}

# --- batches, key scopes, Idempotency-Key (issue 20 items 1, 2, 4, 5) ----------------------
BATCH_ID = "5b0c3a1e-8f1d-4c1a-9a57-0e0f4d2b7c11"
SECOND_JOB_ID = "7e2b1c3d-4a5f-4e6d-8c7b-9a0f1e2d3c4b"
SCHEMAS.update({
    "BatchRequest": described(
        "Up to 50 videos to buy together: all of them or none.",
        {"items": [{"platform": "tiktok", "topic": "The history of coffee"},
                   {"platform": "youtube_shorts", "topic": "Why cats purr", "duration_seconds": 30}]},
        obj(["items"], items={"type": "array", "items": ref("GenerateRequest"), "minItems": 1, "maxItems": 50,
                              "description": "each as for `generateShort`; a refusal names it (`items[3].topic`)"})),
    "BatchAccepted": described(
        "Every video of the batch is paid for and queued; follow the batch at `Location`.",
        {"batch_id": BATCH_ID, "job_ids": [JOB_ID, SECOND_JOB_ID], "status": "queued", "credits_remaining": 95},
        obj(["batch_id", "job_ids", "status", "credits_remaining"], batch_id=UUID,
            job_ids={"type": "array", "items": UUID, "minItems": 1, "maxItems": 50,
                     "description": "in the order of the request's items"},
            status={"const": "queued"}, credits_remaining={"type": "integer", "minimum": 0})),
    "Batch": described(
        "A batch: each video's job, how many are in each state, and the progress of the whole.",
        {"batch_id": BATCH_ID, "status": "processing", "progress": 75, "total": 2,
         "counts": {"queued": 0, "processing": 1, "completed": 1, "failed": 0}, "created_at": NOW,
         "items": [JOB_EXAMPLE, {**JOB_EXAMPLE, "job_id": SECOND_JOB_ID, "status": "processing", "progress": 50,
                                 "video_url": None, "finished_at": None}]},
        obj(["batch_id", "status", "progress", "total", "counts", "created_at", "items"], batch_id=UUID,
            status={"enum": ["queued", "processing", "completed", "partially_failed", "failed"]},
            progress={"type": "integer", "minimum": 0, "maximum": 100,
                      "description": "of the whole batch; a failed (refunded) video counts as done"},
            total={"type": "integer", "minimum": 1, "maximum": 50},
            counts={**obj(["queued", "processing", "completed", "failed"],
                          **{state: {"type": "integer", "minimum": 0}
                             for state in ("queued", "processing", "completed", "failed")}),
                    "description": "videos in each state"},
            created_at=DATETIME, items={"type": "array", "items": ref("Job"), "description": "in request order"})),
})

# --- webhooks to customers (issue 20 item 3) ---------------------------------------------
WEBHOOK_EVENT_TYPES = ["render.completed", "render.failed", "batch.completed", "credits.low", "credits.expiring",
                       "subscription.updated", "payment.failed"]
ENDPOINT_ID = "9a4e2b1c-7d3f-4e8a-b5c6-1f2d3e4a5b6c"
DELIVERY_ID = "5e7f8a9b-0c1d-4e2f-a3b4-c5d6e7f8a9b0"
ENDPOINT_EXAMPLE = {"id": ENDPOINT_ID, "url": "https://hooks.example.org/storygenius", "description": "CMS import",
                    "event_types": ["render.completed", "render.failed"], "enabled": True, "disabled_reason": None,
                    "consecutive_failures": 0, "last_success_at": LATER, "created_at": NOW}
EVENT_EXAMPLE = {"id": "evt_0b8e6c1d4f2a4d7e9c3b5a1f2e8d7c60", "object": "event", "type": "render.completed",
                 "created": 1796120172, "data": {"object": {
                     "job_id": JOB_ID, "status": "completed", "platform": "youtube_shorts",
                     "topic": "Why octopuses have three hearts", "video_url": f"/media/{JOB_ID}.mp4", "error": None,
                     "created_at": NOW, "finished_at": LATER}}}
DELIVERY_EXAMPLE = {"id": DELIVERY_ID, "endpoint_id": ENDPOINT_ID, "url": "https://hooks.example.org/storygenius",
                    "event_id": EVENT_EXAMPLE["id"], "event_type": "render.completed", "status": "succeeded",
                    "attempts": 2, "last_status_code": 200, "last_latency_ms": 84, "last_error": None,
                    "next_attempt_at": None, "created_at": LATER, "finished_at": "2026-12-01T10:17:12+00:00"}
NULLABLE_DATETIME = {"type": ["string", "null"], "format": "date-time"}
NULLABLE_INTEGER = {"type": ["integer", "null"]}
ENDPOINT_PROPERTIES = dict(
    id=UUID, url=STRING, description=NULLABLE_STRING,
    event_types={"type": "array", "items": {"enum": WEBHOOK_EVENT_TYPES}},
    enabled={"type": "boolean", "description": "false once turned off, by you or after three days of failures"},
    disabled_reason=NULLABLE_STRING,
    consecutive_failures={"type": "integer", "minimum": 0, "description": "failed attempts since the last 2xx"},
    last_success_at=NULLABLE_DATETIME, created_at=DATETIME)
DELIVERY_PROPERTIES = dict(
    id=UUID, endpoint_id=UUID, url=STRING, event_id={**STRING, "description": "the event's `id`, the same on every "
                                                     "attempt and resend: deduplicate on it"},
    event_type={"enum": [*WEBHOOK_EVENT_TYPES, "webhook.test"]},
    status={"enum": ["pending", "succeeded", "failed"],
            "description": "pending: an attempt is due at `next_attempt_at`; failed: given up after three days "
                           "(or the endpoint is off)"},
    attempts={"type": "integer", "minimum": 0}, last_status_code=NULLABLE_INTEGER,
    last_latency_ms=NULLABLE_INTEGER, last_error=NULLABLE_STRING, next_attempt_at=NULLABLE_DATETIME,
    created_at=DATETIME, finished_at=NULLABLE_DATETIME)
SCHEMAS.update({
    "WebhookEndpointCreate": described(
        "Where to send events, and which. The URL must be https and reach the public internet.",
        {"url": "https://hooks.example.org/storygenius", "event_types": ["render.completed", "render.failed"],
         "description": "CMS import"},
        obj(["url"], url={"type": "string", "minLength": 8, "maxLength": 2000, "pattern": "^https?://"},
            event_types={"type": "array", "items": {"enum": WEBHOOK_EVENT_TYPES}, "minItems": 1,
                         "maxItems": len(WEBHOOK_EVENT_TYPES), "description": "default: every type"},
            description={"type": ["string", "null"], "maxLength": 200})),
    "WebhookEndpoint": described("An endpoint events are sent to (never its secret).", ENDPOINT_EXAMPLE,
                                 obj(list(ENDPOINT_PROPERTIES), **ENDPOINT_PROPERTIES)),
    "WebhookEndpointCreated": described(
        "A new endpoint with its signing secret, shown this once.",
        {**ENDPOINT_EXAMPLE, "last_success_at": None,
         "secret": "whsec_8c1f0e2d9b7a4c3e8f6a1b2d3c4e5f60a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4"},
        {"allOf": [ref("WebhookEndpoint"), obj(["secret"], secret={
            "type": "string", "pattern": "^whsec_",
            "description": "verify each delivery's Story-Genius-Signature with it; store it now"})]}),
    "WebhookEndpointList": described("Your webhook endpoints, oldest first.", {"endpoints": [ENDPOINT_EXAMPLE]},
                                     obj(["endpoints"], endpoints={"type": "array", "items": ref("WebhookEndpoint")})),
    "WebhookEvent": described(
        "The JSON body of every delivery, signed in the `Story-Genius-Signature` header as "
        "`t=<unix time>,v1=<hex HMAC-SHA256 of \"<t>.<body>\" keyed by the endpoint's secret>`. Verify: "
        "recompute the HMAC over the raw body, compare in constant time, refuse a `t` more than 5 minutes "
        "away; answer 2xx within 10 s. Failed deliveries are retried with exponential backoff for three days.",
        EVENT_EXAMPLE,
        obj(["id", "object", "type", "created", "data"], id={**STRING, "pattern": "^evt_"},
            object={"const": "event"}, type={"enum": [*WEBHOOK_EVENT_TYPES, "webhook.test"]},
            created={"type": "integer", "description": "Unix time the event happened"},
            data=obj(["object"], object={"type": "object", "description": "what the event is about: a job, "
                                         "the balance, the subscription or the invoice"}))),
    "WebhookDelivery": described("One event on its way to one endpoint.", DELIVERY_EXAMPLE,
                                 obj(list(DELIVERY_PROPERTIES), **DELIVERY_PROPERTIES)),
    "WebhookDeliveryDetail": described(
        "A delivery with the event sent and every attempt.",
        {**DELIVERY_EXAMPLE, "event": EVENT_EXAMPLE, "attempt_log": [
            {"attempt": 1, "attempted_at": LATER, "status_code": 500, "latency_ms": 120, "error": "HTTP 500",
             "succeeded": False},
            {"attempt": 2, "attempted_at": "2026-12-01T10:17:12+00:00", "status_code": 200, "latency_ms": 84,
             "error": None, "succeeded": True}]},
        {"allOf": [ref("WebhookDelivery"), obj(["event", "attempt_log"], event=ref("WebhookEvent"),
                                               attempt_log={"type": "array", "items": obj(
                                                   ["attempt", "attempted_at", "status_code", "latency_ms", "error",
                                                    "succeeded"],
                                                   attempt={"type": "integer", "minimum": 1},
                                                   attempted_at=DATETIME, status_code=NULLABLE_INTEGER,
                                                   latency_ms=NULLABLE_INTEGER, error=NULLABLE_STRING,
                                                   succeeded={"type": "boolean"})})]}),
    "WebhookDeliveryList": described("Deliveries, newest first.", {"deliveries": [DELIVERY_EXAMPLE]},
                                     obj(["deliveries"], deliveries={"type": "array",
                                                                     "items": ref("WebhookDelivery")})),
})

# --- account deletion and export (issue 16 item 8) ----------------------------------------
EXPORT_EXAMPLE = {
    "exported_at": LATER,
    "profile": {"id": USER_ID, "email": "ada@example.com", "full_name": "Ada Lovelace", "is_verified": True,
                "is_active": True, "created_at": NOW, "updated_at": NOW, "last_login": LATER},
    "subscription": {"tier": "pro", "status": "active", "subscribed_tier": "pro", "credits_total": 100,
                     "credits_remaining": 97, "current_period_start": NOW, "current_period_end": PERIOD_END,
                     "cancel_at_period_end": False, "pending_tier": None, "stripe_customer_id": "cus_Q2w3E4r5T6y7U8",
                     "stripe_subscription_id": "sub_1QaZ2wSx3EdC4rFv", "created_at": NOW},
    "credit_ledger": [{"delta": 5, "reason": "signup_grant", "job_id": None, "note": None, "created_at": NOW},
                      {"delta": -1, "reason": "render", "job_id": JOB_ID, "note": None, "created_at": LATER}],
    "usage": [{"action": "render", "credits": 1, "job_id": JOB_ID, "created_at": LATER}],
    "jobs": [{"id": JOB_ID, "platform": "youtube_shorts", "topic": "Why octopuses have three hearts",
              "title": None, "deleted_at": None, "options": {"duration_seconds": 20}, "status": "completed",
              "output_url": f"/media/{JOB_ID}.mp4",
              "error": None, "note": None, "tier": "pro", "created_at": NOW, "finished_at": LATER}],
    "api_keys": [{"id": KEY_ID, "name": "CI pipeline", "prefix": "sk_live_3kTq", "created_at": NOW,
                  "last_used_at": None, "revoked_at": None}],
    "sessions": [{"kind": "api", "id": "7d1e2f3a-4b5c-4d6e-8f7a-9b0c1d2e3f4a", "created_at": NOW, "revoked_at": None}],
    "trusted_devices": [{"created_at": NOW, "last_used_at": LATER, "expires_at": PERIOD_END}],
    "two_factor": None,
    "sign_in_attempts": [{"kind": "signup", "client_ip": "203.0.113.7", "attempted_at": NOW}],
    "emails": [{"kind": "verify", "created_at": NOW, "sent_at": NOW}],
    "webhook_endpoints": [{"id": ENDPOINT_ID, "url": "https://hooks.example.org/storygenius",
                           "description": "CMS import", "event_types": ["render.completed"], "created_at": NOW,
                           "disabled_at": None}],
    "webhook_events": [EVENT_EXAMPLE],
    "brand": {"primary_colour": "#1d1b26", "accent_colour": "#6d3df5", "has_logo": True, "updated_at": NOW},
    "referral_code": {"code": "k3v9q27xm2", "created_at": NOW},
    "referrals": [{"role": "referrer", "status": "rewarded", "created_at": LATER}],
}
ROWS = {"type": "array", "items": {"type": "object"}}
SCHEMAS.update({
    "AccountDelete": described(
        "Your password again, and a code when two-factor sign-in is on.",
        {"password": "correct horse battery staple", "code": "492039"},
        obj(["password"], password={"type": "string", "maxLength": 1024},
            code={"type": "string", "minLength": 1, "maxLength": 50,
                  "description": "required when two-factor sign-in is on: 6 digits from the authenticator app, "
                                 "or a recovery code"})),
    "AccountExport": described(
        "Everything the account holds about you; never a password, key or token hash, nor the two-factor secret.",
        EXPORT_EXAMPLE,
        obj(list(EXPORT_EXAMPLE), exported_at=DATETIME, profile={"type": "object"},
            subscription={"type": ["object", "null"]}, credit_ledger=ROWS, usage=ROWS, jobs=ROWS, api_keys=ROWS,
            sessions=ROWS, trusted_devices=ROWS, two_factor={"type": ["object", "null"]}, sign_in_attempts=ROWS,
            emails=ROWS, webhook_endpoints=ROWS, webhook_events=ROWS, brand={"type": ["object", "null"]},
            referral_code={"type": ["object", "null"]}, referrals=ROWS)),
})

ERROR_TEXT = {
    400: "Bad request (webhook signature or body)", 401: "Not authenticated, or the token/key is invalid",
    402: "Out of credits, or the card was declined", 403: "Not allowed (plan, disabled account, wrong current password)",
    404: "Not found (or not yours)", 409: "Conflict", 413: "Request body over 1 MB",
    422: "Invalid input (or an unknown query parameter); `field` names it", 429: "Too many attempts; see Retry-After",
    503: "Temporarily unavailable; see Retry-After",
}
ERROR_EXAMPLE = {
    400: {"detail": "Invalid signature."},
    401: {"detail": "Not authenticated."},
    402: {"detail": "Out of credits.", "upgrade_url": "/pricing"},
    403: {"detail": "API keys are for Pro and Agency plans."},
    404: {"detail": "Not found."},
    409: {"detail": "That already exists."},
    413: {"detail": "Request body is over 1 MB."},
    422: {"detail": "topic: must be 3 to 200 characters", "field": "topic"},
    429: {"detail": "Too many login attempts. Try again in about 15 minute(s)."},
    503: {"detail": "Service temporarily unavailable. Please retry."},
}

TAGS = [
    {"name": "auth", "description": "Accounts, sign-in, sessions, two-factor sign-in, email and password links."},
    {"name": "keys", "description": "API keys (Pro and Agency): `Authorization: Bearer sk_…` for servers."},
    {"name": "videos", "description": "Spend credits on videos and follow their renders."},
    {"name": "account", "description": "Your balance and the billable actions behind it; export or delete "
                                       "your account."},
    {"name": "billing", "description": "Plans, your Stripe subscription and its changes, invoices, Stripe's webhook."},
    {"name": "webhooks", "description": "Signed events about your account sent to your own HTTPS endpoints "
                                        "(Pro and Agency), and the log of every delivery."},
]

HEADERS = {
    "Retry-After": {"description": "Seconds to wait before trying again.", "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9]+$", "examples": ["30"]}},
    "Location": {"description": "Where to follow what was created.", "required": True,
                 "schema": {"type": "string", "examples": [f"/v1/jobs/{JOB_ID}"]}},
    # IETF draft-ietf-httpapi-ratelimit-headers: the key's or token's window, counted in Postgres
    "RateLimit-Limit": {"description": "Requests allowed in the current window for this key or token.",
                        "schema": {"type": "string", "pattern": "^[0-9]+$", "examples": ["60"]}},
    "RateLimit-Remaining": {"description": "Requests left in the current window.",
                            "schema": {"type": "string", "pattern": "^[0-9]+$", "examples": ["57"]}},
    "RateLimit-Reset": {"description": "Seconds until the window starts again.",
                        "schema": {"type": "string", "pattern": "^[0-9]+$", "examples": ["42"]}},
    "Idempotent-Replayed": {"description": "`true` when this is the kept answer of an earlier request with the "
                                           "same Idempotency-Key (nothing was done again).",
                            "schema": {"type": "string", "enum": ["true"], "examples": ["true"]}},
}
RATE_LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


def header_ref(name: str) -> dict:
    return {"$ref": f"#/components/headers/{name}"}


def example_of(schema: dict):
    """The example a schema (or the component it refers to) carries, if any."""
    if "$ref" in schema:
        schema = SCHEMAS[schema["$ref"].rsplit("/", 1)[-1]]
    return (schema.get("examples") or [None])[0]


def json_response(description: str, schema: dict, example=None, headers: dict | None = None) -> dict:
    media = {"schema": schema}
    example = example if example is not None else example_of(schema)
    if example is not None:
        media["example"] = example
    response = {"description": description, "content": {"application/json": media}}
    if headers:
        response["headers"] = headers
    return response


def error_response(status: int) -> dict:
    # every 429 and 503 says when to come back
    headers = {"Retry-After": header_ref("Retry-After")} if status in (429, 503) else None
    return json_response(ERROR_TEXT[status], ref("Error"), ERROR_EXAMPLE[status], headers)


def operation(summary: str, ok: int, ok_schema: dict | None, errors: list[int], *, op_id: str = "",
              description: str = "", body: str | None = None, auth: bool = True,
              params: list[dict] | None = None, tag: str = "", ok_headers: dict | None = None) -> dict:
    """One operation. `op_id` is what generated clients name their method: never rename one.
    Every /v1 operation can answer 422 (an unknown query parameter is refused) and 503 (the
    database is unreachable); an authenticated one 401 and 403, one with a body 413."""
    headers = {name: header_ref(name) for name in RATE_LIMIT_HEADERS} if auth else {}
    headers.update(ok_headers or {})
    if ok_schema:
        success = json_response(summary, ok_schema, headers=headers or None)
    else:
        success = {"description": summary, **({"headers": headers} if headers else {})}
    responses = {str(ok): success}
    for status in sorted(set(errors) | {422, 503} | ({401, 403} if auth else set()) | ({413} if body else set())):
        responses[str(status)] = error_response(status)
    if auth:
        responses["429"] = {**error_response(429), "headers": {
            "Retry-After": header_ref("Retry-After"),
            **{name: header_ref(name) for name in RATE_LIMIT_HEADERS}}}
        responses = dict(sorted(responses.items()))
    op = {"operationId": op_id, "summary": summary, "description": description or summary + ".",
          "tags": [tag], "responses": responses, "security": [{"bearer": []}] if auth else []}
    if body:
        op["requestBody"] = {"required": True, "description": SCHEMAS[body]["description"],
                             "content": {"application/json": {"schema": ref(body),
                                                              "example": example_of(ref(body))}}}
    if params:
        op["parameters"] = params
    return op


def with_response(op: dict, status: int, description: str, schema: dict) -> dict:
    """`op` with one more successful answer."""
    return {**op, "responses": dict(sorted({**op["responses"], str(status): json_response(description, schema)}
                                           .items()))}


def query(name: str, schema: dict, description: str, example) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description,
            "example": example}


def path_id(name: str, description: str, example: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": UUID, "description": description,
            "example": example}


PATHS = {
    "/v1/auth/signup": {"post": operation(
        "Create an account (free plan, 5 credits; 5 signups an hour per client network)", 201, ref("TokenPair"),
        [409, 429], op_id="signup", body="SignupRequest", auth=False, tag="auth",
        description="Creates an account on the free plan and signs it in. Until the emailed link is followed "
                    "the account may spend one of its five credits. 409 when the address is taken; 429 with "
                    "Retry-After past 5 signups an hour or 20 a day from one network.")},
    "/v1/auth/login": {"post": with_response(
        operation("Sign in", 200, ref("SignedIn"), [401, 403, 429], op_id="login", body="LoginRequest",
                  auth=False, tag="auth",
                  description="Checks the password. 200 with tokens, or 202 with a challenge when two-factor "
                              "sign-in is on. The same 401 for an unknown address and a wrong password; 429 with "
                              "Retry-After after 10 failures in 15 minutes."),
        202, "Password accepted; two-factor sign-in is on: send a code to /v1/auth/login/2fa",
        ref("TwoFactorChallenge"))},
    "/v1/auth/login/2fa": {"post": operation(
        "Second step of a sign-in with two-factor on", 200, ref("TokenPair"), [401, 429], op_id="loginSecondFactor",
        body="TwoFactorLogin", auth=False, tag="auth",
        description="Exchanges the challenge from `login` and a TOTP or recovery code for tokens. Wrong codes "
                    "count like wrong passwords.")},
    "/v1/auth/2fa/setup": {"post": operation(
        "Start two-factor enrolment: a secret for the authenticator app", 200, ref("TwoFactorSetup"), [409],
        op_id="startTwoFactorSetup", tag="auth",
        description="Creates a TOTP secret for the authenticator app; nothing changes until `enableTwoFactor` "
                    "confirms a code from it. 409 when two-factor sign-in is already on.")},
    "/v1/auth/2fa/enable": {"post": operation(
        "Turn two-factor sign-in on (password and a code); recovery codes", 200, ref("RecoveryCodes"), [409],
        op_id="enableTwoFactor", body="TwoFactorConfirm", tag="auth",
        description="Turns two-factor sign-in on and answers ten single-use recovery codes, shown this once. "
                    "A mail confirms the change.")},
    "/v1/auth/2fa/disable": {"post": operation(
        "Turn two-factor sign-in off (password and a code)", 200, ref("Message"), [409], op_id="disableTwoFactor",
        body="TwoFactorConfirm", tag="auth",
        description="Turns two-factor sign-in off; the recovery codes stop working. A mail confirms the change.")},
    "/v1/auth/refresh": {"post": operation(
        "Rotate a refresh token into a new pair", 200, ref("TokenPair"), [401, 403], op_id="refreshTokens",
        body="RefreshRequest", auth=False, tag="auth",
        description="Trades a refresh token for a new pair; the old one stops working. Presented again within "
                    "10 s (a second tab, a retry) it answers the same new pair; later, the whole session ends.")},
    "/v1/auth/logout": {"post": operation(
        "Revoke a refresh token (and its family)", 204, None, [], op_id="logout", body="RefreshRequest",
        tag="auth", description="Ends the session: its access and refresh tokens stop working at once.")},
    "/v1/auth/me": {"get": operation("The signed-in user", 200, ref("User"), [], op_id="getMe", tag="auth",
                                     description="The account the token or key belongs to.")},
    "/v1/auth/password": {"post": operation(
        "Change password; every other session ends", 200, ref("TokenPair"), [], op_id="changePassword",
        body="PasswordChange", tag="auth",
        description="Sets a new password (403 when the current one is wrong), ends every other session and "
                    "answers a fresh pair for this one.")},
    "/v1/auth/verify": {"post": operation(
        "Confirm an email address with the emailed token", 200, ref("Verified"), [], op_id="verifyEmail",
        body="TokenRequest", auth=False, tag="auth",
        description="Confirms the address the token was mailed to; the account may then spend all its credits.")},
    "/v1/auth/verify/resend": {"post": operation(
        "Email a new verification link (3 an hour)", 202, ref("Message"), [409, 429], op_id="resendVerification",
        tag="auth", description="Mails a new confirmation link: 3 an hour, 5 a day. 409 when already confirmed.")},
    "/v1/auth/password/forgot": {"post": operation(
        "Email a password-reset link; the same answer whether or not the account exists", 202, ref("Message"),
        [429], op_id="forgotPassword", body="ForgotRequest", auth=False, tag="auth",
        description="Mails a reset link if the account exists; the answer never says whether it does. 3 an "
                    "hour and 5 a day per address.")},
    "/v1/auth/password/reset": {"post": operation(
        "Set a new password with the emailed token; every session ends", 200, ref("Message"), [],
        op_id="resetPassword", body="ResetRequest", auth=False, tag="auth",
        description="Sets a new password with the emailed token (single use, one hour); every session ends.")},
    "/v1/keys": {
        "post": operation("Create an API key (Pro and Agency); the key is shown once", 201, ref("KeyCreated"),
                          [409], op_id="createApiKey", body="KeyCreate", tag="keys",
                          description="Creates a key for servers; only its SHA-256 is kept, so store the answer's "
                                      "`key` now. 403 on plans without API access; at most 25 live keys."),
        "get": operation("List live API keys", 200, ref("KeyList"), [], op_id="listApiKeys", tag="keys",
                         description="Your keys that are not revoked, with when each was last used."),
    },
    "/v1/keys/{key_id}": {"delete": operation(
        "Revoke an API key", 204, None, [404], op_id="revokeApiKey",
        params=[path_id("key_id", "the key's id from `listApiKeys`", KEY_ID)], tag="keys",
        description="The key stops working at once.")},
    "/v1/shorts/generate": {"post": operation(
        "Spend one credit on a video", 202, ref("GenerateAccepted"), [402], op_id="generateShort",
        body="GenerateRequest", tag="videos",
        ok_headers={"Location": header_ref("Location")},
        description="Takes one credit and queues the render in one transaction. Poll `Location` (or list your "
                    "jobs); a render that fails for good refunds its credit. 402 when the balance is empty.")},
    "/v1/shorts/batch": {"post": operation(
        "Spend one credit per video on up to 50 videos, all or nothing", 202, ref("BatchAccepted"), [402],
        op_id="createBatch", body="BatchRequest", tag="videos", ok_headers={"Location": header_ref("Location")},
        description="Buys every video of the list in one transaction, each exactly as `generateShort` would, "
                    "and queues them. 402 says how many credits the batch needs and nothing is spent; any other "
                    "refusal (a key's scope or budget, an unconfirmed address) refuses the whole batch too.")},
    "/v1/batches/{batch_id}": {"get": operation(
        "One of your batches: each video and the progress of the whole", 200, ref("Batch"), [404],
        op_id="getBatch", params=[path_id("batch_id", "the id `createBatch` answered", BATCH_ID)], tag="videos",
        description="Each video's job in request order, how many are queued, rendering, done or failed, and "
                    "the batch's progress. 404 for another user's batch.")},
    "/v1/jobs": {"get": operation("Your jobs, newest first", 200, ref("JobList"), [422], op_id="listJobs", params=[
        query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}, "page size", 20),
        query("before", UUID, "id of the last job of the previous page", JOB_ID)], tag="videos",
        description="A page of your jobs; pass `next_before` as `before` for the next one.")},
    "/v1/jobs/{job_id}": {
        "get": operation(
            "One of your jobs", 200, ref("Job"), [404], op_id="getJob",
            params=[path_id("job_id", "the id `generateShort` answered", JOB_ID)], tag="videos",
            description="A job's status and progress; once completed, its video URL. 404 for another user's job."),
        "patch": operation(
            "Rename a video", 200, ref("Job"), [404], op_id="renameJob", body="JobRename",
            params=[path_id("job_id", "the id `generateShort` answered", JOB_ID)], tag="videos",
            description="The title replaces the topic in lists and download names."),
        "delete": operation(
            "Delete a finished video", 204, None, [404, 409], op_id="deleteJob",
            params=[path_id("job_id", "the id `generateShort` answered", JOB_ID)], tag="videos",
            description="Removes the video and its poster; the credit it cost stays spent. 409 while it renders."),
    },
    "/v1/user/credits": {"get": operation("Plan and balance", 200, ref("Credits"), [], op_id="getCredits",
                                          tag="account",
                                          description="Your plan, this period's credits and when they renew.")},
    "/v1/credits/statement": {"get": operation(
        "Every credit movement with its bucket and running balance", 200, ref("CreditStatement"), [422],
        op_id="getCreditStatement", params=[
            query("from", {"type": "string", "format": "date-time"}, "from this moment (inclusive)", NOW),
            query("to", {"type": "string", "format": "date-time"}, "until this moment (exclusive)", PERIOD_END),
            query("kind", {"enum": ["granted", "spent", "refunded", "expired"]}, "only these movements", "spent")],
        tag="account",
        description="Grants, videos, refunds, rollovers, expiries and clawbacks, oldest first; each names the "
                    "bucket it moved and the balance after it (the true running balance, whatever the window).")},
    "/v1/credits/balance": {"get": operation(
        "The balance at a past moment", 200, ref("BalanceAt"), [422], op_id="getBalanceAt",
        params=[{**query("at", {"type": "string", "format": "date-time"}, "the moment (ISO 8601, not in the future)",
                         NOW), "required": True}], tag="account",
        description="Answered from the ledger alone: every movement up to `at`, less credits whose expiry had "
                    "come by then.")},
    "/v1/user/usage": {"get": operation("Billable actions", 200, ref("Usage"), [422], op_id="listUsage", params=[
        query("days", {"type": "integer", "minimum": 1, "maximum": 365, "default": 30}, "how far back", 30)],
        tag="account", description="Every credit spent or refunded in the last `days` days.")},
    "/v1/billing/plans": {"get": operation(
        "The plans on sale", 200, ref("Plans"), [], op_id="listPlans", auth=False, tag="billing",
        description="Every plan with its price, monthly credits and features; no sign-in needed.")},
    "/v1/billing/create-checkout-session": {"post": operation(
        "Start a Stripe Checkout for a plan (verified email required)", 200, ref("CheckoutSession"), [409, 503],
        op_id="createCheckoutSession", body="CheckoutRequest", tag="billing",
        description="Opens Stripe Checkout for a first paid plan. 409 when a subscription is already live "
                    "(change it with `changePlan`).")},
    "/v1/billing/packs": {"get": operation(
        "Credit packs on sale", 200, ref("Packs"), [], op_id="listCreditPacks", auth=False, tag="billing",
        description="Packs of credits to buy on any plan; bought credits last 12 months.")},
    "/v1/billing/buy-pack": {"post": operation(
        "Start a Stripe Checkout for a credit pack", 200, ref("CheckoutSession"), [503], op_id="buyCreditPack",
        body="BuyPackRequest", tag="billing",
        description="Opens Stripe Checkout (a one-off payment) for a pack, on any plan; a confirmed address is "
                    "needed (403). The credits arrive once Stripe says it is paid.")},
    "/v1/billing/auto-top-up": {
        "get": operation("Your automatic top-up setting", 200, ref("AutoTopUp"), [], op_id="getAutoTopUp",
                         tag="billing", description="Whether a pack is bought for you when credits run low."),
        "put": operation(
            "Set automatic top-up", 200, ref("AutoTopUp"), [], op_id="setAutoTopUp", body="AutoTopUpRequest",
            tag="billing",
            description="Paid plans (403 otherwise): buy the pack off-session with your saved card when a video "
                        "leaves fewer credits than the threshold, at most once per `min_hours_between` hours and "
                        "`max_per_month` times a month. A failed payment turns it off and emails you.")},
    "/v1/billing/portal": {"get": operation(
        "Open the Stripe customer portal", 200, ref("PortalSession"), [404], op_id="openBillingPortal",
        tag="billing", description="A link to Stripe's portal for cards and invoices; 404 before a first payment.")},
    "/v1/billing/subscription": {"get": operation(
        "Your subscription: plan, status, period, pending changes", 200, ref("Subscription"), [],
        op_id="getSubscription", tag="billing",
        description="Your subscription as last read from Stripe, which is its source of truth.")},
    "/v1/billing/change-plan": {"post": operation(
        "Change plan: Checkout from Free; an upgrade applies at once (prorated, charged now); a downgrade or "
        "Free applies when the period ends; your current plan undoes a pending change", 202, ref("PlanChange"),
        [402, 409, 503], op_id="changePlan", body="ChangePlanRequest", tag="billing",
        description="Moves your one subscription to another plan. An upgrade is charged now (402 when the card "
                    "is declined, and nothing changes); a downgrade waits for the period's end.")},
    "/v1/billing/cancel": {"post": operation(
        "Cancel at the period's end (resumable until then)", 202, ref("PlanChange"), [409, 503],
        op_id="cancelSubscription", tag="billing",
        description="Paid features and credits last until the period ends; `resumeSubscription` undoes it.")},
    "/v1/billing/resume": {"post": operation(
        "Undo a cancellation at the period's end", 202, ref("PlanChange"), [409, 503], op_id="resumeSubscription",
        tag="billing", description="Keeps the subscription renewing; 409 when nothing was cancelled.")},
    "/v1/billing/invoices": {"get": operation(
        "Your latest invoices, with Stripe's hosted page for each", 200, ref("InvoiceList"), [503],
        op_id="listInvoices", tag="billing", description="Read from Stripe each time; 503 when it is unreachable.")},
    "/v1/billing/webhook": {"post": {
        **operation("Stripe events (signed; called by Stripe)", 200, ref("WebhookResult"), [400],
                    op_id="receiveStripeEvent", auth=False, tag="billing",
                    description="Stripe's webhook. The signature is checked in the database; the event is stored "
                                "and applied once, whatever Stripe repeats."),
        "parameters": [{"name": "Stripe-Signature", "in": "header", "required": True, "schema": STRING,
                        "description": "`t=…,v1=…` as Stripe signs", "example": "t=1796083200,v1=5257a869e7…"}],
        "requestBody": {"required": True, "description": "the event, exactly as Stripe sent it",
                        "content": {"application/json": {"schema": ref("StripeEvent"),
                                                         "example": example_of(ref("StripeEvent"))}}},
    }},
}

# -- custom branding (Pro and Agency; web/api/branding.py) ----------------------------
TAGS.append({"name": "branding", "description": "Your logo and colours on every video (Pro and Agency); "
                                                "Agency videos also leave the Story Genius name out."})
COLOUR_FIELD = {"type": "string", "maxLength": 7, "pattern": "^(#[0-9a-fA-F]{6})?$"}
BRANDING_EXAMPLE = {"available": True, "white_label": False, "has_logo": True, "logo_url": "/v1/branding/logo",
                    "logo_bytes": 18342, "primary_colour": "#10785a", "accent_colour": "#ff7828",
                    "updated_at": NOW}
SCHEMAS["Branding"] = described(
    "Your branding as stored, and what your plan does with it.", BRANDING_EXAMPLE,
    obj(["available", "white_label", "has_logo", "logo_url", "logo_bytes", "primary_colour", "accent_colour",
         "updated_at"],
        available={"type": "boolean", "description": "your plan draws your branding on your videos"},
        white_label={"type": "boolean", "description": "your plan leaves the Story Genius name out of your videos"},
        has_logo={"type": "boolean"}, logo_url=NULLABLE_STRING,
        logo_bytes={"type": ["integer", "null"], "description": "size of the stored (re-encoded) PNG"},
        primary_colour={"type": ["string", "null"], "pattern": "^#[0-9a-f]{6}$",
                        "description": "the scenes' background tint; null: the default palettes"},
        accent_colour={"type": ["string", "null"], "pattern": "^#[0-9a-f]{6}$",
                       "description": "the highlighted caption word; null: yellow"},
        updated_at={"type": ["string", "null"], "format": "date-time"}))
SCHEMAS["BrandingUpload"] = described(
    "A logo and colours, as multipart/form-data. Colours replace the stored ones (empty or omitted: the "
    "defaults); the stored logo stays unless a new one is sent or `remove_logo` is true.",
    {"primary_colour": "#10785a", "accent_colour": "#ff7828"},
    {"type": "object", "minProperties": 1, "properties": {
        "logo": {"type": "string", "format": "binary", "description": "PNG, JPEG or WebP (not SVG), at most 1 MB "
                 "and 4096×4096 pixels; re-encoded as PNG"},
        "primary_colour": {**COLOUR_FIELD, "description": "#rrggbb: the scenes' background tint"},
        "accent_colour": {**COLOUR_FIELD, "description": "#rrggbb: the highlighted caption word"},
        "remove_logo": {"enum": ["true", "false"], "description": "true removes the stored logo"},
    }})
_put_branding = operation(
    "Set your logo and colours (Pro and Agency)", 200, ref("Branding"), [], op_id="setBranding", tag="branding",
    description="Stores a logo and colours for every video you make from now on. The logo is decoded safely and "
                "stored re-encoded as PNG; an SVG, a decompression bomb, a file with data after the image or one "
                "whose type does not match its bytes is a 422 that changes nothing. 403 on plans without custom "
                "branding; 413 over 1 MB.")
_put_branding["responses"]["413"] = error_response(413)
_put_branding["requestBody"] = {"required": True, "description": SCHEMAS["BrandingUpload"]["description"],
                                "content": {"multipart/form-data": {
                                    "schema": ref("BrandingUpload"),
                                    "example": example_of(ref("BrandingUpload"))}}}
_logo = operation("Your logo as stored (PNG)", 200, None, [404], op_id="getBrandingLogo", tag="branding",
                  description="The stored logo: the re-encoded PNG every video draws. 404 when there is none.")
_logo["responses"]["200"] = {**_logo["responses"]["200"],
                             "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}
PATHS["/v1/branding"] = {
    "get": operation("Your branding, and whether your plan draws it", 200, ref("Branding"), [],
                     op_id="getBranding", tag="branding",
                     description="Your logo and colours as stored (on any plan), and whether your plan puts them "
                                 "on your videos (`available`) and leaves our name out (`white_label`)."),
    "put": _put_branding,
    "delete": operation("Remove your branding", 204, None, [], op_id="deleteBranding", tag="branding",
                        description="Forgets your logo and colours (allowed on every plan); later videos use "
                                    "the defaults."),
}
PATHS["/v1/branding/logo"] = {"get": _logo}

ENDPOINT_PARAM = path_id("endpoint_id", "the endpoint's id", ENDPOINT_ID)
DELIVERY_PARAM = path_id("delivery_id", "the delivery's id", DELIVERY_ID)
PATHS.update({
    "/v1/webhooks/endpoints": {
        "post": operation("Add a webhook endpoint; its signing secret is shown once", 201,
                          ref("WebhookEndpointCreated"), [409], op_id="createWebhookEndpoint",
                          body="WebhookEndpointCreate", tag="webhooks",
                          description="Registers an https URL (Pro and Agency, verified address; at most 10). "
                                      "422 when the URL is not https or its host resolves to a loopback, private, "
                                      "link-local or otherwise non-public address."),
        "get": operation("List webhook endpoints", 200, ref("WebhookEndpointList"), [],
                         op_id="listWebhookEndpoints", tag="webhooks",
                         description="Your endpoints with their state; secrets are never listed."),
    },
    "/v1/webhooks/endpoints/{endpoint_id}": {"delete": operation(
        "Delete a webhook endpoint", 204, None, [404], op_id="deleteWebhookEndpoint", params=[ENDPOINT_PARAM],
        tag="webhooks", description="Stops all deliveries to it and forgets its log.")},
    "/v1/webhooks/endpoints/{endpoint_id}/enable": {"post": operation(
        "Turn a webhook endpoint on", 200, ref("WebhookEndpoint"), [404], op_id="enableWebhookEndpoint",
        params=[ENDPOINT_PARAM], tag="webhooks",
        description="Turns on an endpoint that was turned off (by you, or after three days of failed deliveries); "
                    "its failure count starts again. Resend what it missed from the delivery log.")},
    "/v1/webhooks/endpoints/{endpoint_id}/disable": {"post": operation(
        "Turn a webhook endpoint off", 200, ref("WebhookEndpoint"), [404], op_id="disableWebhookEndpoint",
        params=[ENDPOINT_PARAM], tag="webhooks",
        description="Nothing is sent to it until it is turned on again.")},
    "/v1/webhooks/endpoints/{endpoint_id}/test": {"post": operation(
        "Send a test event to a webhook endpoint", 202, ref("WebhookDeliveryDetail"), [404, 409],
        op_id="sendTestWebhook", params=[ENDPOINT_PARAM], tag="webhooks",
        description="Queues a signed `webhook.test` event to this endpoint, whatever types it subscribes to; "
                    "follow it in the delivery log. 409 when the endpoint is off.")},
    "/v1/webhooks/deliveries": {"get": operation(
        "The webhook delivery log", 200, ref("WebhookDeliveryList"), [], op_id="listWebhookDeliveries",
        params=[query("endpoint_id", UUID, "only this endpoint's deliveries", ENDPOINT_ID),
                query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}, "how many", 50)],
        tag="webhooks",
        description="Every delivery with its status, attempts, last response code and latency, and next retry.")},
    "/v1/webhooks/deliveries/{delivery_id}": {"get": operation(
        "One webhook delivery with every attempt", 200, ref("WebhookDeliveryDetail"), [404],
        op_id="getWebhookDelivery", params=[DELIVERY_PARAM], tag="webhooks",
        description="The event as sent and a line per attempt (time, response code, latency, error).")},
    "/v1/webhooks/deliveries/{delivery_id}/resend": {"post": operation(
        "Send a delivery again now", 202, ref("WebhookDeliveryDetail"), [404, 409],
        op_id="resendWebhookDelivery", params=[DELIVERY_PARAM], tag="webhooks",
        description="Sends the same event (same id and body, a fresh signature) again now, with three more days "
                    "of retries. 409 when the endpoint is off.")},
})

PATHS.update({
    "/v1/account": {"delete": operation(
        "Delete your account", 204, None, [], op_id="deleteAccount", body="AccountDelete", tag="account",
        description="Deletes the account for good: the Stripe subscription ends at once (no refund), videos and "
                    "personal data are erased, every session, token and API key stops. The credit ledger is "
                    "kept under a pseudonymous id. 403 for a wrong password or code, 422 when a code is needed; "
                    "nothing changes then.")},
    "/v1/account/export": {"get": operation(
        "Export your data", 200, ref("AccountExport"), [], op_id="exportAccount", tag="account",
        description="Everything your account holds about you, as one JSON document: profile, subscription, "
                    "credit ledger, usage, jobs, API keys and sessions (metadata only), trusted devices, "
                    "two-factor status, sign-in attempts and mails.")},
})

# --- referrals (issue 20 item 6) ------------------------------------------------------------
REFERRAL_EXAMPLE = {"referee": "g•••@example.net", "joined_at": NOW, "status": "rewarded", "detail": "earned",
                    "credits_earned": 10, "rewarded_at": LATER}
SCHEMAS["Referrals"] = described(
    "Your referral link, its terms, and each friend who signed up through it (address masked).",
    {"code": "k3v9q27xm2", "link": "https://storygenius.app/r/k3v9q27xm2", "referee_credits": 5,
     "referrer_credits": 10, "monthly_cap": 20, "rewards_this_month": 1, "credits_earned": 10,
     "referrals": [REFERRAL_EXAMPLE]},
    obj(["code", "link", "referee_credits", "referrer_credits", "monthly_cap", "rewards_this_month",
         "credits_earned", "referrals"],
        code=STRING, link={**STRING, "description": "share this"},
        referee_credits={"type": "integer", "description": "your friend's, when they confirm their email"},
        referrer_credits={"type": "integer", "description": "yours, when their first invoice is paid"},
        monthly_cap={"type": "integer", "description": "rewards you can earn per calendar month (UTC)"},
        rewards_this_month={"type": "integer", "minimum": 0}, credits_earned={"type": "integer", "minimum": 0},
        referrals={"type": "array", "items": obj(
            ["referee", "joined_at", "status", "detail", "credits_earned", "rewarded_at"],
            referee=STRING, joined_at=DATETIME,
            status={"enum": ["pending", "rewarded", "refused", "capped"],
                    "description": "refused: the same person as you (mailbox, browser, network or card)"},
            detail=STRING, credits_earned={"type": "integer", "minimum": 0}, rewarded_at=NULLABLE_DATETIME)}))
TAGS.append({"name": "referrals", "description": "Invite friends: credits for both sides, once per friend."})
PATHS["/v1/referrals"] = {"get": operation(
    "Your referral link and what it has earned", 200, ref("Referrals"), [], op_id="getReferrals", tag="referrals",
    description="Your link (made on first call; a confirmed address is needed, else 403), this month's rewards "
                "against the cap, and every friend who signed up through it.")}

# --- the events we send to customers' endpoints (OpenAPI 3.1 `webhooks`) ---------------------
JOB_EVENT_PROPERTIES = dict(
    job_id=UUID, status={"enum": ["completed", "failed"]}, platform={"enum": PLATFORMS}, topic=STRING,
    video_url=NULLABLE_STRING, error=NULLABLE_STRING, created_at=DATETIME, finished_at=NULLABLE_DATETIME)
EVENT_DATA = {
    "render.completed": ("RenderCompletedData", "A video is ready: its URL and what it was about.",
                         EVENT_EXAMPLE["data"]["object"],
                         obj(list(JOB_EVENT_PROPERTIES), **JOB_EVENT_PROPERTIES)),
    "render.failed": ("RenderFailedData", "A video failed for good; its credit was refunded.",
                      {**EVENT_EXAMPLE["data"]["object"], "status": "failed", "video_url": None,
                       "error": "Render failed — we refunded your credit.", "credits_refunded": 1},
                      obj([*JOB_EVENT_PROPERTIES, "credits_refunded"], **JOB_EVENT_PROPERTIES,
                          credits_refunded={"type": "integer", "minimum": 0})),
    "batch.completed": ("BatchCompletedData", "Every video of a batch has finished.",
                        {"batch_id": "7d2c4e6f-8a1b-4c3d-9e5f-0a1b2c3d4e5f", "status": "partially_failed",
                         "total": 2, "counts": {"completed": 1, "failed": 1}, "job_ids": [JOB_ID, KEY_ID]},
                        obj(["batch_id", "status", "total", "counts", "job_ids"], batch_id=UUID,
                            status={"enum": ["completed", "failed", "partially_failed"]},
                            total={"type": "integer", "minimum": 1},
                            counts=obj(["completed", "failed"], completed={"type": "integer", "minimum": 0},
                                       failed={"type": "integer", "minimum": 0,
                                               "description": "each refunded"}),
                            job_ids={"type": "array", "items": UUID, "description": "in the batch's order"})),
    "credits.low": ("CreditsLowData", "Your balance fell to 20% of this period's credits.",
                    {"credits_remaining": 20, "credits_total": 100, "tier": "pro", "renews_at": PERIOD_END},
                    obj(["credits_remaining", "credits_total", "tier", "renews_at"],
                        credits_remaining={"type": "integer", "minimum": 0}, credits_total={"type": "integer"},
                        tier={"enum": TIERS}, renews_at=DATETIME)),
    "credits.expiring": ("CreditsExpiringData", "Unused credits end within three days.",
                         {"credits_remaining": 18, "expires_at": PERIOD_END, "tier": "pro"},
                         obj(["credits_remaining", "expires_at", "tier"],
                             credits_remaining={"type": "integer", "minimum": 1}, expires_at=DATETIME,
                             tier={"enum": TIERS})),
    "subscription.updated": ("SubscriptionUpdatedData", "Your plan, its status or a scheduled change changed.",
                             {"tier": "agency", "status": "active", "cancel_at_period_end": False,
                              "current_period_end": PERIOD_END, "pending_tier": None, "credits_remaining": 497},
                             obj(["tier", "status", "cancel_at_period_end", "current_period_end", "pending_tier",
                                  "credits_remaining"],
                                 tier={"enum": TIERS}, status=STRING, cancel_at_period_end={"type": "boolean"},
                                 current_period_end=DATETIME,
                                 pending_tier={"type": ["string", "null"], "enum": [*TIERS, None]},
                                 credits_remaining={"type": "integer", "minimum": 0})),
    "payment.failed": ("PaymentFailedData", "Stripe could not take a payment; it will try again.",
                       {"invoice_id": "in_1QxYz2AbCdEf", "amount_due": 2900, "currency": "usd",
                        "hosted_invoice_url": "https://invoice.stripe.com/i/acct_1/test_a1b2"},
                       obj(["invoice_id", "amount_due", "currency", "hosted_invoice_url"],
                           invoice_id=NULLABLE_STRING, amount_due={"type": ["integer", "null"]},
                           currency=NULLABLE_STRING, hosted_invoice_url=NULLABLE_STRING)),
    "webhook.test": ("WebhookTestData", "A test event sent from the webhooks page or API.",
                     {"message": "A test event from Story Genius.", "endpoint_id": ENDPOINT_ID},
                     obj(["message", "endpoint_id"], message=STRING, endpoint_id=UUID)),
}
SIGNATURE_PARAMETER = {
    "name": "Story-Genius-Signature", "in": "header", "required": True,
    "schema": {"type": "string", "pattern": "^t=[0-9]+,v1=[0-9a-f]{64}$"}, "example": "t=1796120172,v1=" + "5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd",
    "description": "`t=<unix time>,v1=<hex HMAC-SHA256 of \"<t>.<raw body>\" keyed by the endpoint's secret>`: "
                   "recompute it over the raw body, compare in constant time, refuse a `t` more than 5 minutes away"}
WEBHOOKS = {}
for event_type, (data_schema, summary, data_example, data_shape) in EVENT_DATA.items():
    SCHEMAS[data_schema] = described(summary, data_example, data_shape)
    event_schema = data_schema.removesuffix("Data") + "Event"
    event_example = {**EVENT_EXAMPLE, "type": event_type, "data": {"object": data_example}}
    SCHEMAS[event_schema] = described(
        f"The `{event_type}` event as your endpoint receives it.", event_example,
        {"allOf": [ref("WebhookEvent"), obj(["type", "data"], type={"const": event_type},
                                             data=obj(["object"], object=ref(data_schema)))]})
    WEBHOOKS[event_type] = {"post": {
        "operationId": "on" + "".join(part.title() for part in re.split(r"[._]", event_type)),
        "summary": summary, "tags": ["webhooks"],
        "description": f"Sent to each of your endpoints that subscribes to `{event_type}`, signed; at least "
                       "once (deduplicate on the event's `id`), retried with growing pauses for three days "
                       "until your endpoint answers 2xx within 10 s.",
        "parameters": [SIGNATURE_PARAMETER],
        "requestBody": {"required": True, "description": f"the `{event_type}` event",
                        "content": {"application/json": {"schema": ref(event_schema), "example": event_example}}},
        "responses": {"200": {"description": "Received (any 2xx will do); anything else, or no answer, is retried"},
                      "4XX": {"description": "Not accepted (so is any other answer, or none): retried"}},
        "security": [],
    }}

IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False, "example": "8e2f6c1a-3b4d-4e5f-9a8b-7c6d5e4f3a2b",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
    "description": "Carry this request out at most once: a retry with the same key and body within 24 hours gets "
                   "the first answer again (with `Idempotent-Replayed: true`) and changes nothing; the same key "
                   "with another body is a 422; a retry while the first still runs is a 409 with Retry-After. "
                   "Keys belong to your account; a UUID per logical request is a good choice.",
}


def _idempotent_posts(paths: dict) -> None:
    """Every authenticated POST takes an Idempotency-Key: its successes may be replays, and
    it can answer 409 (the first request with the key still runs) and 422 (the key was used
    for another request)."""
    for ops in paths.values():
        op = ops.get("post")
        if not op or not op["security"]:
            continue
        op["parameters"] = [*op.get("parameters", []), IDEMPOTENCY_KEY]
        responses = {**op["responses"]}
        for status, response in responses.items():
            if status.startswith("2"):
                responses[status] = {**response, "headers": {**response.get("headers", {}),
                                                             "Idempotent-Replayed": header_ref("Idempotent-Replayed")}}
        if "409" not in responses:
            responses["409"] = error_response(409)
        responses["409"] = {**responses["409"], "headers": {"Retry-After": {
            "description": "Only while the first request with this Idempotency-Key still runs: seconds to wait "
                           "before retrying it.",
            "schema": {"type": "string", "pattern": "^[0-9]+$", "examples": ["1"]}}}}
        op["responses"] = dict(sorted(responses.items()))


_idempotent_posts(PATHS)

DOCUMENT = {
    "openapi": "3.1.0",
    "info": {"title": "Story Genius API", "version": "1.0.0",
             "description": "Accounts, credits, video generation and billing. Authenticate with "
                            "`Authorization: Bearer <access token>` (from signup/login) or `Bearer sk_…` "
                            "(an API key). Errors are `{\"detail\": …}`.",
             "contact": {"name": "Story Genius support", "email": "support@storygenius.app",
                         "url": "https://storygenius.app/docs"},
             "license": {"name": "Proprietary", "url": "https://storygenius.app/terms"}},
    "servers": [{"url": "https://storygenius.app", "description": "production"}],
    "tags": TAGS,
    "paths": PATHS,
    "webhooks": WEBHOOKS,
    "components": {"schemas": SCHEMAS, "headers": HEADERS,
                   "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                  "description": "JWT access token or sk_ API key"}}},
}


def query_parameters(rule: str, method: str) -> set[str]:
    """The query parameters the document lists for a Flask URL rule and method."""
    import re

    path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)
    op = PATHS.get(path, {}).get(method.lower(), {})
    return {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}


def served_document() -> dict:
    """The document with the address it was fetched from as its server, so generated
    clients and "try it" tools call the deployment that served it (ProxyFix, when
    TRUSTED_PROXY_COUNT is set, makes that the public address)."""
    return {**DOCUMENT, "servers": [{"url": request.url_root.rstrip("/"), "description": "this deployment"}]}


@docs.get("/openapi.json")
def openapi_json():
    return jsonify(served_document())


@docs.get("/docs")
def api_docs():
    from .api_docs import page_context

    return render_template("docs.html", **page_context(served_document()))
