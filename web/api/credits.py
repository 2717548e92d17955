"""/v1/credits: the statement of every credit movement, and the balance at any past moment
(both from the ledger, sql/31_buckets.sql)."""
from __future__ import annotations

from datetime import datetime, timezone

from flask import jsonify, request

from .. import credits as credit_views
from ..errors import ApiError
from . import api, require_auth
from .auth import user_tx


@api.get("/credits/statement")
@require_auth
def statement():
    since = credit_views.parse_moment(request.args.get("from"), "from")
    until = credit_views.parse_moment(request.args.get("to"), "to")
    kind = request.args.get("kind") or None
    with user_tx() as cur:
        rows = credit_views.statement(cur, since, until, kind)
    return jsonify(movements=[credit_views.movement_json(r) for r in rows],
                   truncated=len(rows) == credit_views.STATEMENT_MAX_ROWS)


@api.get("/credits/balance")
@require_auth
def balance_at():
    at = credit_views.parse_moment(request.args.get("at"), "at")
    if at is None:
        raise ApiError(422, "at: field required", field="at")
    now = datetime.now(timezone.utc)
    if at > now:
        raise ApiError(422, "at: must not be in the future", field="at")
    with user_tx() as cur:
        cur.execute("select app.credit_balance_at(%s) as balance", (at,))
        balance = cur.fetchone()["balance"]
    return jsonify(at=at.isoformat(), credits_remaining=balance)
