"""/v1/keys: API keys for Pro and Agency plans. The full key is shown once, at creation."""
from __future__ import annotations

from uuid import UUID

from flask import jsonify

from .. import identity
from ..errors import ApiError
from . import api, require_auth
from .auth import user_tx
from .validation import json_body, string_field


def _key_json(row: dict) -> dict:
    return {"id": str(row["id"]), "name": row["name"], "prefix": row["prefix"],
            "created_at": row["created_at"].isoformat(),
            "last_used": row["last_used_at"].isoformat() if row.get("last_used_at") else None}


@api.post("/keys")
@require_auth
def create_key():
    name = string_field(json_body(), "name", min_length=1, max_length=100, strip=True)
    key, prefix, key_hash = identity.new_api_key()
    with user_tx() as cur:
        cur.execute("select * from app.create_api_key(%s, %s, %s)", (name, prefix, key_hash))
        row = cur.fetchone()
    response = jsonify({**_key_json(row), "key": key})
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response


@api.get("/keys")
@require_auth
def list_keys():
    with user_tx() as cur:
        cur.execute("select id, name, prefix, created_at, last_used_at from api_keys "
                    "where revoked_at is null order by created_at desc, id")
        rows = cur.fetchall()
    return jsonify(keys=[_key_json(row) for row in rows])


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
