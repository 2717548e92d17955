"""/v1/account: delete the account, export its data (GDPR Art. 17 and 20)."""
from __future__ import annotations

from flask import jsonify

from .. import erasure
from . import api, require_auth
from .auth import user_tx
from .validation import json_body, string_field


@api.delete("/account")
@require_auth
def delete_account():
    """Delete the caller's account: the password again, and a code when two-factor sign-in
    is on. The Stripe subscription ends at once; every token, key and session stops."""
    body = json_body()
    password = string_field(body, "password", max_length=1024)
    code = string_field(body, "code", required=False, min_length=1, max_length=50)
    erasure.delete_account(user_tx, password, code)
    return "", 204


@api.get("/account/export")
@require_auth
def export_account():
    """Everything the account holds about the caller, as JSON (no secrets or hashes)."""
    response = jsonify(erasure.export_account(user_tx))
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Disposition"] = 'attachment; filename="story-genius-export.json"'
    return response
