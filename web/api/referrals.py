"""/v1/referrals: the caller's referral link and what it has earned (issue 20 item 6).

The rules (who is the same person, what each side earns, the monthly cap) are the
database's: sql/48_referrals.sql. Signups through a link are recorded by the signup
views, in the signup's own transaction (`record_referral`).
"""
from __future__ import annotations

from flask import jsonify, request, url_for

from .. import accounts, identity
from . import api, require_auth
from .auth import user_tx

# A code as the link carries it (sql/48_referrals.sql makes 10 of [a-z0-9]).
MAX_CODE = 40


def record_referral(cur, code: str | None, client_ip: str | None, device_tokens: list[str] = ()) -> str | None:
    """In a signup's transaction (the new user current): note that they came through
    `code` from `client_ip`, with the browser's device tokens (only their hashes reach the
    database). A bad or missing code changes nothing: the signup goes ahead either way."""
    if not code or len(code) > MAX_CODE or not code.isascii() or not code.isalnum():
        return None
    cur.execute("select app.record_referral(%s, %s, %s) as outcome",
                (code, client_ip, [identity.sha256(t) for t in device_tokens]))
    return cur.fetchone()["outcome"]


def referral_link(code: str) -> str:
    return url_for("ui.referral_landing", code=code, _external=True)


STATUS_TEXT = {
    "pending": "waiting for their first payment",
    "rewarded": "earned",
    "capped": "not rewarded: you had reached this month's limit",
    "refused": "not rewarded",
}
REFUSED_TEXT = {
    "same_email": "the same mailbox as yours",
    "same_device": "signed up from your own browser",
    "same_network": "signed up from your own network",
    "same_payment_method": "paid with a card you have used",
}


def summary(cur) -> dict:
    """The current user's link, terms, standing this month and their referees."""
    cur.execute("select app.referral_code(%s) as code", (accounts.client_ip(request),))
    code = cur.fetchone()["code"]
    cur.execute("select * from app.referral_terms()")
    terms = cur.fetchone()
    cur.execute("select * from app.referral_standing()")
    standing = cur.fetchone()
    cur.execute("select * from app.referrals_summary()")
    referees = [_referee_json(row, terms["referrer_credits"]) for row in cur.fetchall()]
    return {"code": code, "link": referral_link(code), "referee_credits": terms["referee_credits"],
            "referrer_credits": terms["referrer_credits"], "monthly_cap": terms["monthly_cap"],
            "rewards_this_month": standing["rewards_this_month"], "credits_earned": standing["credits_earned"],
            "referrals": referees}


def _referee_json(row: dict, referrer_credits: int) -> dict:
    status = row["status"]
    if status == "pending" and not row["confirmed"]:
        detail = "waiting for them to confirm their email"
    elif status == "pending" and row["reward_due_at"]:
        detail = "paid: your credits arrive within the hour"
    elif status == "refused":
        detail = f"not rewarded: {REFUSED_TEXT.get(row['refused_reason'], 'the same person')}"
    else:
        detail = STATUS_TEXT[status]
    rewarded_at = row["referrer_rewarded_at"]
    return {"referee": row["referee"], "joined_at": row["joined_at"].isoformat(), "status": status, "detail": detail,
            "credits_earned": referrer_credits if rewarded_at else 0,
            "rewarded_at": rewarded_at.isoformat() if rewarded_at else None}


@api.get("/referrals")
@require_auth
def get_referrals():
    with user_tx() as cur:
        return jsonify(summary(cur))
