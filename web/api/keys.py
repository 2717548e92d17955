"""/v1/keys: API keys for Pro and Agency plans. The full key is shown once, at creation.
A key has scopes (what it may do) and an optional monthly credit budget."""
from __future__ import annotations

from uuid import UUID

from flask import jsonify

from .. import identity
from ..errors import ApiError
from . import api, require_auth
from .auth import user_tx
from .validation import json_body, string_field

SCOPES = ("videos:write", "videos:read", "credits:read", "webhooks:manage")
MAX_BUDGET = 1_000_000


def key_json(row: dict) -> dict:
    """A key as the API and the keys page show it (never the key itself)."""
    return {"id": str(row["id"]), "name": row["name"], "prefix": row["prefix"],
            "scopes": list(row["scopes"]), "monthly_budget": row["monthly_budget"],
            "budget_used": row.get("budget_used", 0),
            "created_at": row["created_at"].isoformat(),
            "last_used": row["last_used_at"].isoformat() if row.get("last_used_at") else None}


def scopes_field(body: dict) -> list[str] | None:
    """body["scopes"]: a non-empty list of known scopes, each once; absent or null means all."""
    scopes = body.get("scopes")
    if scopes is None:
        return None
    if (not isinstance(scopes, list) or not scopes or len(set(map(str, scopes))) != len(scopes)
            or not all(isinstance(s, str) and s in SCOPES for s in scopes)):
        raise ApiError(422, f"scopes: must be a list of one or more of {', '.join(SCOPES)}, each once",
                       field="scopes")
    return scopes


def budget_field(body: dict) -> int | None:
    """body["monthly_budget"]: whole credits from 1, or null/absent for no budget."""
    budget = body.get("monthly_budget")
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= MAX_BUDGET:
        raise ApiError(422, f"monthly_budget: must be an integer from 1 to {MAX_BUDGET}, or null for none",
                       field="monthly_budget")
    return budget


def create(cur, name: str, scopes: list[str] | None, budget: int | None) -> dict:
    """Create a key for the transaction's user; its row plus the full key (shown once)."""
    key, prefix, key_hash = identity.new_api_key()
    cur.execute("select * from app.create_api_key(%s, %s, %s, %s, %s)", (name, prefix, key_hash, scopes, budget))
    return {**cur.fetchone(), "key": key}


@api.post("/keys")
@require_auth
def create_key():
    body = json_body()
    name = string_field(body, "name", min_length=1, max_length=100, strip=True)
    scopes, budget = scopes_field(body), budget_field(body)
    with user_tx() as cur:
        row = create(cur, name, scopes, budget)
    response = jsonify({**key_json(row), "key": row["key"]})
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response


@api.get("/keys")
@require_auth
def list_keys():
    with user_tx() as cur:
        cur.execute("select * from app.list_api_keys()")
        rows = cur.fetchall()
    return jsonify(keys=[key_json(row) for row in rows])


@api.delete("/keys/<key_id>")
@require_auth
def revoke_key(key_id: str):
    try:
        key_uuid = UUID(key_id)
    except ValueError:
        raise ApiError(404, "API key not found.") from None
    with user_tx() as cur:
        cur.execute("select app.revoke_api_key(%s)", (key_uuid,))
    return "", 204
