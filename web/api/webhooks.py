"""/v1/webhooks: the endpoints a customer's systems receive events at, and the delivery log.

An endpoint's URL is checked here before it is stored (https outside development, and
every address its host resolves to public, as the sender checks again before each
delivery: worker/webhooks.py). Its signing secret is answered once, at creation.
"""
from __future__ import annotations

from uuid import UUID

from flask import current_app, jsonify, request

from worker.webhooks import RefusedTarget, check_url, resolve_target

from ..errors import ApiError
from . import api, require_auth
from .auth import user_tx
from .validation import json_body, query_int, string_field

EVENT_TYPES = ["render.completed", "render.failed", "batch.completed", "credits.low", "credits.expiring",
               "subscription.updated", "payment.failed"]
MAX_URL = 2000


def private_addresses_allowed() -> bool:
    """WEBHOOK_ALLOW_PRIVATE_ADDRESSES (web/config.py read it at start-up): local development and tests only."""
    return bool(current_app.config.get("WEBHOOK_ALLOW_PRIVATE_ADDRESSES"))


def check_endpoint_url(url: str) -> None:
    """422 naming `url` unless it may receive webhooks: https (http only in development or
    local mode) and, outside local mode, a host whose every address is public."""
    local = private_addresses_allowed()
    try:
        resolve_target(url, allow_private=local, allow_http=local or current_app.debug or current_app.testing)
    except RefusedTarget as refused:
        raise ApiError(422, f"url: {refused}", field="url") from None


def parse_id(value: str, what: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise ApiError(404, f"{what} not found.") from None


def _iso(value):
    return value.isoformat() if value is not None else None


def endpoint_json(row: dict) -> dict:
    return {"id": str(row["id"]), "url": row["url"], "description": row["description"],
            "event_types": list(row["event_types"]), "enabled": row["disabled_at"] is None,
            "disabled_reason": row["disabled_reason"], "consecutive_failures": row["consecutive_failures"],
            "last_success_at": _iso(row["last_success_at"]), "created_at": _iso(row["created_at"])}


def delivery_json(row: dict) -> dict:
    return {"id": str(row["id"]), "endpoint_id": str(row["endpoint_id"]), "url": row["url"],
            "event_id": row["body"]["id"], "event_type": row["type"], "status": row["status"],
            "attempts": row["attempts"], "last_status_code": row["last_status_code"],
            "last_latency_ms": row["last_latency_ms"], "last_error": row["last_error"],
            "next_attempt_at": _iso(row["next_attempt_at"]), "created_at": _iso(row["created_at"]),
            "finished_at": _iso(row["finished_at"])}


ENDPOINT_COLUMNS = ("id, url, description, event_types, created_at, consecutive_failures, last_success_at, "
                    "disabled_at, disabled_reason")
DELIVERY_QUERY = """
select d.*, e.url, ev.type, ev.body
  from webhook_deliveries d
  join webhook_endpoints e on e.id = d.endpoint_id
  join webhook_events ev on ev.id = d.event_id
"""


def list_endpoints(cur) -> list[dict]:
    cur.execute(f"select {ENDPOINT_COLUMNS} from webhook_endpoints order by created_at, id")
    return [endpoint_json(row) for row in cur.fetchall()]


def get_endpoint(cur, endpoint_id: UUID) -> dict:
    cur.execute(f"select {ENDPOINT_COLUMNS} from webhook_endpoints where id = %s", (endpoint_id,))
    row = cur.fetchone()
    if row is None:
        raise ApiError(404, "Webhook endpoint not found.")
    return endpoint_json(row)


def list_deliveries(cur, limit: int, endpoint_id: UUID | None = None) -> list[dict]:
    where = "where d.endpoint_id = %s" if endpoint_id else ""
    cur.execute(f"{DELIVERY_QUERY} {where} order by d.created_at desc, d.id limit %s",
                (endpoint_id, limit) if endpoint_id else (limit,))
    return [delivery_json(row) for row in cur.fetchall()]


def get_delivery(cur, delivery_id: UUID) -> dict:
    cur.execute(f"{DELIVERY_QUERY} where d.id = %s", (delivery_id,))
    row = cur.fetchone()
    if row is None:
        raise ApiError(404, "Delivery not found.")
    cur.execute("select attempt, attempted_at, status_code, latency_ms, error, succeeded from webhook_attempts "
                "where delivery_id = %s order by attempt, id", (delivery_id,))
    log = [{**a, "attempted_at": _iso(a["attempted_at"])} for a in cur.fetchall()]
    return {**delivery_json(row), "event": row["body"], "attempt_log": log}


def create_endpoint(cur, url: str, event_types: list[str], description: str | None) -> dict:
    """Stores the endpoint (the plan and address checks are the database's), then checks
    its URL in the same transaction, so a refused URL leaves nothing behind."""
    cur.execute("select * from app.create_webhook_endpoint(%s, %s, %s)", (url, event_types, description))
    row = cur.fetchone()
    check_endpoint_url(url)
    return row


def endpoint_body() -> tuple[str, list[str], str | None]:
    body = json_body()
    url = string_field(body, "url", min_length=8, max_length=MAX_URL, strip=True)
    try:
        check_url(url, allow_http=True)  # its form now; https and its addresses once the plan allows it
    except RefusedTarget as refused:
        raise ApiError(422, f"url: {refused}", field="url") from None
    types = body.get("event_types", EVENT_TYPES)
    if (not isinstance(types, list) or not types or len(types) > len(EVENT_TYPES)
            or not all(isinstance(t, str) and t in EVENT_TYPES for t in types)):
        raise ApiError(422, f"event_types: must be a non-empty list of {', '.join(EVENT_TYPES)}",
                       field="event_types")
    description = string_field(body, "description", required=False, max_length=200, strip=True) or None
    return url, sorted(set(types)), description


@api.post("/webhooks/endpoints")
@require_auth
def create_webhook_endpoint():
    url, types, description = endpoint_body()
    with user_tx() as cur:
        row = create_endpoint(cur, url, types, description)
    response = jsonify({"id": str(row["id"]), "url": row["url"], "description": row["description"],
                        "event_types": list(row["event_types"]), "enabled": True, "disabled_reason": None,
                        "consecutive_failures": 0, "last_success_at": None, "created_at": _iso(row["created_at"]),
                        "secret": row["secret"]})
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response


@api.get("/webhooks/endpoints")
@require_auth
def list_webhook_endpoints():
    with user_tx() as cur:
        return jsonify(endpoints=list_endpoints(cur))


@api.delete("/webhooks/endpoints/<endpoint_id>")
@require_auth
def delete_webhook_endpoint(endpoint_id: str):
    endpoint_uuid = parse_id(endpoint_id, "Webhook endpoint")
    with user_tx() as cur:
        cur.execute("select app.delete_webhook_endpoint(%s)", (endpoint_uuid,))
    return "", 204


def _set_enabled(endpoint_id: str, enabled: bool):
    endpoint_uuid = parse_id(endpoint_id, "Webhook endpoint")
    with user_tx() as cur:
        cur.execute("select app.set_webhook_endpoint_enabled(%s, %s)", (endpoint_uuid, enabled))
        return jsonify(get_endpoint(cur, endpoint_uuid))


@api.post("/webhooks/endpoints/<endpoint_id>/enable")
@require_auth
def enable_webhook_endpoint(endpoint_id: str):
    return _set_enabled(endpoint_id, True)


@api.post("/webhooks/endpoints/<endpoint_id>/disable")
@require_auth
def disable_webhook_endpoint(endpoint_id: str):
    return _set_enabled(endpoint_id, False)


@api.post("/webhooks/endpoints/<endpoint_id>/test")
@require_auth
def send_test_webhook(endpoint_id: str):
    endpoint_uuid = parse_id(endpoint_id, "Webhook endpoint")
    with user_tx() as cur:
        cur.execute("select app.send_test_webhook(%s) as id", (endpoint_uuid,))
        delivery = get_delivery(cur, cur.fetchone()["id"])
    response = jsonify(delivery)
    response.status_code = 202
    return response


@api.get("/webhooks/deliveries")
@require_auth
def list_webhook_deliveries():
    limit = query_int("limit", default=50, minimum=1, maximum=100)
    endpoint_id = request.args.get("endpoint_id")
    endpoint_uuid = None
    if endpoint_id is not None:
        try:
            endpoint_uuid = UUID(endpoint_id)
        except ValueError:
            raise ApiError(422, "endpoint_id: must be an endpoint id", field="endpoint_id") from None
    with user_tx() as cur:
        return jsonify(deliveries=list_deliveries(cur, limit, endpoint_uuid))


@api.get("/webhooks/deliveries/<delivery_id>")
@require_auth
def get_webhook_delivery(delivery_id: str):
    delivery_uuid = parse_id(delivery_id, "Delivery")
    with user_tx() as cur:
        return jsonify(get_delivery(cur, delivery_uuid))


@api.post("/webhooks/deliveries/<delivery_id>/resend")
@require_auth
def resend_webhook_delivery(delivery_id: str):
    delivery_uuid = parse_id(delivery_id, "Delivery")
    with user_tx() as cur:
        cur.execute("select app.resend_webhook_delivery(%s)", (delivery_uuid,))
        delivery = get_delivery(cur, delivery_uuid)
    response = jsonify(delivery)
    response.status_code = 202
    return response
