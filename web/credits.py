"""Credits as people read them: live buckets, what expires soon, and the statement of every
movement (sql/31_buckets.sql), shared by the JSON API and the billing page.

Each function takes the cursor of a transaction already acting for the user (`db.tx`), so
RLS decides what it reads; the one-call-per-view rule holds per question asked.
"""
from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone

from .errors import ApiError

# How far ahead "expiring soon" looks (the API's expiring_soon, the billing page's notice).
EXPIRING_SOON = timedelta(days=7)
STATEMENT_MAX_ROWS = 5000

LABELS = {
    "signup_grant": "Welcome credits",
    "plan_grant": "Plan credits",
    "upgrade_grant": "Upgrade: the new plan's extra credits",
    "renewal": "Renewal: this period's credits",
    "rollover": "Unused plan credits carried into this period",
    "expiry": "Unused credits expired",
    "render": "Video",
    "refund": "Refund for a failed video",
    "admin_grant": "Credits from support",
    "referral_grant": "Referral credits",
    "pack_grant": "Credit pack",
    "clawback": "Taken back: the purchase was refunded or disputed",
    "opening": "Balance carried into credit buckets",
}
SOURCES = {
    "signup": "welcome", "plan": "plan", "upgrade": "upgrade", "renewal": "plan", "rollover": "rollover",
    "pack": "pack", "referral": "referral", "operator": "support", "refund": "refund", "opening": "earlier balance",
}
# the statement's filter: what people look for, each a set of ledger reasons
KINDS = {
    "granted": {"signup_grant", "plan_grant", "upgrade_grant", "renewal", "rollover", "admin_grant", "referral_grant",
                "pack_grant", "opening"},
    "spent": {"render"},
    "refunded": {"refund"},
    "expired": {"expiry", "clawback"},
}
# No moment before Stripe existed or past what Postgres and the UI can show is a real question.
EARLIEST = datetime(2010, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9999, 1, 1, tzinfo=timezone.utc)


def parse_moment(text: str | None, name: str, default: datetime | None = None) -> datetime | None:
    """An ISO 8601 timestamp (a date alone is its midnight; no offset means UTC) from a
    query parameter; 422 naming the parameter when it is not one."""
    if text is None or text == "":
        return default
    try:
        moment = datetime.fromisoformat(text) if len(text) <= 40 else None
    except ValueError:
        moment = None
    if moment is None:
        raise ApiError(422, f"{name}: must be an ISO 8601 timestamp, e.g. 2026-12-01T12:00:00Z", field=name)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    if not EARLIEST <= moment <= LATEST:
        raise ApiError(422, f"{name}: must be between 2010 and 9999", field=name)
    return moment


def buckets(cur) -> list[dict]:
    """The user's live buckets in the order spends take them."""
    cur.execute("select * from app.credit_buckets(%s)", (EXPIRING_SOON,))
    return cur.fetchall()


def next_expiry(live: list[dict]) -> dict | None:
    """The soonest expiry among live buckets: how many credits lapse at that moment (buckets
    expiring the same day count together), or None when nothing expires."""
    dated = [b for b in live if b["expires_at"] is not None]
    if not dated:
        return None
    first = min(b["expires_at"] for b in dated)
    same_day = [b for b in dated if b["expires_at"].astimezone(timezone.utc).date()
                == first.astimezone(timezone.utc).date()]
    return {"credits": sum(b["remaining"] for b in same_day), "expires_at": first}


def expiring_soon(live: list[dict]) -> dict | None:
    """Credits that expire within EXPIRING_SOON, and the first such moment (None if none)."""
    soon = [b for b in live if b["expiring_soon"]]
    if not soon:
        return None
    return {"credits": sum(b["remaining"] for b in soon), "first_expires_at": min(b["expires_at"] for b in soon),
            "within_days": EXPIRING_SOON.days}


def statement(cur, since: datetime | None, until: datetime | None, kind: str | None = None) -> list[dict]:
    """Every movement from `since` to `until` (oldest first) with its bucket and running
    balance, optionally only one KINDS entry."""
    if kind is not None and kind not in KINDS:
        raise ApiError(422, f"kind: must be one of {', '.join(KINDS)}", field="kind")
    if since and until and since >= until:
        raise ApiError(422, "from: must be before to", field="from")
    cur.execute("select * from app.credit_movements(%s, %s, %s)",
                (since or "-infinity", until or "infinity", STATEMENT_MAX_ROWS))
    rows = cur.fetchall()
    return [r for r in rows if kind is None or r["reason"] in KINDS[kind]]


def describe(row: dict) -> str:
    """One statement line in words."""
    text = LABELS.get(row["reason"], row["reason"])
    if row.get("topic"):
        text += f": “{row['topic']}”"
    if row.get("note") and row["reason"] in ("admin_grant", "rollover", "clawback", "pack_grant"):
        text += f" ({row['note']})"
    return text


def movement_json(row: dict) -> dict:
    bucket = None
    if row["bucket_id"]:
        bucket = {"id": str(row["bucket_id"]), "source": row["bucket_source"],
                  "expires_at": row["bucket_expires_at"].isoformat() if row["bucket_expires_at"] else None}
    return {"id": str(row["id"]), "at": row["created_at"].isoformat(), "reason": row["reason"],
            "description": describe(row), "delta": row["delta"], "balance_after": int(row["balance_after"]),
            "bucket": bucket, "job_id": str(row["job_id"]) if row["job_id"] else None}


def statement_csv(rows: list[dict]) -> str:
    """The statement as CSV (UTC timestamps), for spreadsheets and accountants."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["at_utc", "reason", "description", "credits", "balance_after", "bucket_source",
                     "bucket_expires_at_utc", "job_id"])
    for row in rows:
        description = describe(row)
        # a cell starting with = + - @ is a formula to spreadsheets: never let a topic become one
        if description[:1] in ("=", "+", "-", "@", "\t", "\r"):
            description = "'" + description
        writer.writerow([row["created_at"].astimezone(timezone.utc).isoformat(), row["reason"], description,
                         row["delta"], row["balance_after"], row["bucket_source"] or "",
                         row["bucket_expires_at"].astimezone(timezone.utc).isoformat()
                         if row["bucket_expires_at"] else "", row["job_id"] or ""])
    return out.getvalue()
