"""/v1/user: the caller's credits and usage history."""
from __future__ import annotations

from flask import jsonify

from .. import credits as credit_views
from . import api, require_auth
from .auth import user_tx
from .validation import query_int


@api.get("/user/credits")
@require_auth
def credits():
    with user_tx() as cur:
        cur.execute("select * from app.credit_balance()")
        row = cur.fetchone()
        live = credit_views.buckets(cur)
    soon = credit_views.expiring_soon(live)
    if soon:
        soon["first_expires_at"] = soon["first_expires_at"].isoformat()
    return jsonify(tier=row["tier"], status=row["status"], credits_total=row["credits_total"],
                   credits_used=row["credits_used"], credits_remaining=row["credits_remaining"],
                   renews_at=row["renews_at"].isoformat(),
                   buckets=[{"id": str(b["id"]), "source": b["source"], "amount": b["amount"],
                             "remaining": b["remaining"],
                             "expires_at": b["expires_at"].isoformat() if b["expires_at"] else None}
                            for b in live],
                   expiring_soon=soon)


@api.get("/user/usage")
@require_auth
def usage():
    days = query_int("days", default=30, minimum=1, maximum=365)
    with user_tx() as cur:
        cur.execute("select * from app.usage(%s)", (days,))
        rows = cur.fetchall()
    return jsonify(usage=[{"action": row["action"], "credits": row["credits"],
                           "job_id": str(row["job_id"]) if row["job_id"] else None,
                           "timestamp": row["created_at"].isoformat()} for row in rows])
