"""The simulator's HTTP face: Stripe's `/v1` API, the hosted pages, and the `/_sim` hooks.

`/v1` behaves as Stripe's API does for stripe-python: Bearer `sk_test_…` keys only,
form-encoded bracket parameters, `expand[]`, Stripe's error bodies and status codes, and
idempotency keys (the same key and parameters replay the stored answer with
`Idempotent-Replayed: true`; the same key with other parameters is a 400
`idempotency_error`). A fault armed with `fail_next` answers the next call instead; a
`connection` fault closes the socket without a reply.
"""
from __future__ import annotations

import json
import logging
import socket
from typing import Any, Callable

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from . import pages, shapes
from .core import FAULTS, SimulatorError
from .params import StripeError, allow, decode, invalid

log = logging.getLogger(__name__)
Handler = Callable[..., dict]


def _retrieve(kind: str) -> Handler:
    def handler(sim, p: dict, id: str) -> dict:
        allow(p, ())
        return sim._render(sim._get(kind, id))
    return handler


def _listing(kind: str, url: str, *filters: str) -> Handler:
    def handler(sim, p: dict) -> dict:
        wanted = {name: p.pop(name) for name in filters if name in p}
        return sim._page(kind, p, url, lambda o: all(o.get(k) == v for k, v in wanted.items()))
    return handler


def _no_params(method: Callable[[Any, str], dict]) -> Handler:
    def handler(sim, p: dict, id: str) -> dict:
        allow(p, ())
        return method(sim, id)
    return handler


API: list[tuple[str, str, Handler]] = [
    ("GET", "/v1/customers", lambda s, p: s.api_customers_list(p)),
    ("POST", "/v1/customers", lambda s, p: s.api_customers_create(p)),
    ("GET", "/v1/customers/<id>", _no_params(lambda s, id: s.api_customers_retrieve(id))),
    ("POST", "/v1/customers/<id>", lambda s, p, id: s.api_customers_update(id, p)),
    ("DELETE", "/v1/customers/<id>", _no_params(lambda s, id: s.api_customers_delete(id))),
    ("GET", "/v1/products", _listing("product", "/v1/products")),
    ("POST", "/v1/products", lambda s, p: s.api_products_create(p)),
    ("GET", "/v1/products/<id>", _retrieve("product")),
    ("GET", "/v1/prices", lambda s, p: s.api_prices_list(p)),
    ("POST", "/v1/prices", lambda s, p: s.api_prices_create(p)),
    ("GET", "/v1/prices/<id>", _retrieve("price")),
    ("GET", "/v1/checkout/sessions", lambda s, p: s.api_checkout_list(p)),
    ("POST", "/v1/checkout/sessions", lambda s, p: s.api_checkout_create(p)),
    ("GET", "/v1/checkout/sessions/<id>", _retrieve("checkout.session")),
    ("POST", "/v1/checkout/sessions/<id>/expire", lambda s, p, id: s.api_checkout_expire(id, p)),
    ("GET", "/v1/checkout/sessions/<id>/line_items", lambda s, p, id: s.api_checkout_line_items(id, p)),
    ("POST", "/v1/billing_portal/sessions", lambda s, p: s.api_portal_create(p)),
    ("GET", "/v1/subscriptions", lambda s, p: s.api_subscriptions_list(p)),
    ("POST", "/v1/subscriptions", lambda s, p: s.api_subscriptions_create(p)),
    ("GET", "/v1/subscriptions/<id>", _retrieve("subscription")),
    ("POST", "/v1/subscriptions/<id>", lambda s, p, id: s.api_subscriptions_update(id, p)),
    ("DELETE", "/v1/subscriptions/<id>", lambda s, p, id: s.api_subscriptions_cancel(id, p)),
    ("POST", "/v1/subscriptions/<id>/resume", lambda s, p, id: s.api_subscriptions_resume(id, p)),
    ("GET", "/v1/subscription_schedules", _listing("subscription_schedule", "/v1/subscription_schedules",
                                                   "customer", "subscription")),
    ("POST", "/v1/subscription_schedules", lambda s, p: s.api_schedules_create(p)),
    ("GET", "/v1/subscription_schedules/<id>", _retrieve("subscription_schedule")),
    ("POST", "/v1/subscription_schedules/<id>", lambda s, p, id: s.api_schedules_update(id, p)),
    ("POST", "/v1/subscription_schedules/<id>/release", lambda s, p, id: s.api_schedules_release(id, p)),
    ("POST", "/v1/subscription_schedules/<id>/cancel", lambda s, p, id: s.api_schedules_cancel(id, p)),
    ("GET", "/v1/invoices", lambda s, p: s.api_invoices_list(p)),
    ("GET", "/v1/invoices/<id>", _retrieve("invoice")),
    ("GET", "/v1/invoices/<id>/lines", lambda s, p, id: s.api_invoice_lines(id, p)),
    ("POST", "/v1/invoices/<id>/pay", lambda s, p, id: s.api_invoices_pay(id, p)),
    ("GET", "/v1/invoiceitems", lambda s, p: s.api_invoiceitems_list(p)),
    ("GET", "/v1/invoiceitems/<id>", _retrieve("invoiceitem")),
    ("GET", "/v1/payment_methods", lambda s, p: s.api_payment_methods_list(p)),
    ("GET", "/v1/payment_methods/<id>", _retrieve("payment_method")),
    ("GET", "/v1/payment_intents", _listing("payment_intent", "/v1/payment_intents", "customer")),
    ("POST", "/v1/payment_intents", lambda s, p: s.api_payment_intents_create(p)),
    ("GET", "/v1/payment_intents/<id>", _retrieve("payment_intent")),
    ("GET", "/v1/charges", _listing("charge", "/v1/charges", "customer", "payment_intent")),
    ("GET", "/v1/charges/<id>", _retrieve("charge")),
    ("POST", "/v1/refunds", lambda s, p: s.api_refunds_create(p)),
    ("GET", "/v1/refunds", _listing("refund", "/v1/refunds", "charge", "payment_intent")),
    ("GET", "/v1/refunds/<id>", _retrieve("refund")),
    ("GET", "/v1/disputes", _listing("dispute", "/v1/disputes", "charge", "payment_intent")),
    ("GET", "/v1/disputes/<id>", _retrieve("dispute")),
    ("GET", "/v1/events", lambda s, p: s.api_events_list(p)),
    ("GET", "/v1/events/<id>", _no_params(lambda s, id: s.api_events_retrieve(id))),
    ("GET", "/v1/webhook_endpoints", lambda s, p: s.api_webhook_endpoints_list(p)),
    ("POST", "/v1/webhook_endpoints", lambda s, p: s.api_webhook_endpoints_create(p)),
    ("GET", "/v1/webhook_endpoints/<id>", _retrieve("webhook_endpoint")),
    ("DELETE", "/v1/webhook_endpoints/<id>", _no_params(lambda s, id: s.api_webhook_endpoints_delete(id))),
]


def _expand(sim, obj: Any, path: str, full: str) -> None:
    """Replace the id at `path` (dotted; `data` walks a list) by the object it names."""
    if isinstance(obj, list):
        for element in obj:
            _expand(sim, element, path, full)
        return
    if obj is None:
        return
    head, _, rest = path.partition(".")
    if isinstance(obj, dict) and head == "line_items" and obj.get("object") == "checkout.session":
        session = sim.objects["checkout.session"][obj["id"]]
        obj["line_items"] = shapes.listing(sim.session_lines(session), f"/v1/checkout/sessions/{obj['id']}/line_items")
        obj["line_items"].pop("total_count")
    if not isinstance(obj, dict) or head not in obj:
        raise invalid(f"This property cannot be expanded ({full}).", param="expand")
    value = obj[head]
    if isinstance(value, str):
        expanded = sim.expandable(value)
        if expanded is None:
            raise invalid(f"This property cannot be expanded ({full}).", param="expand")
        obj[head] = value = expanded
    if rest:
        _expand(sim, value, rest, full)


def _api_key(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[7:].strip() or None
    if request.authorization and request.authorization.type == "basic":
        return request.authorization.username or None
    return None


def _json(status: int, body: Any, headers: dict | None = None) -> Response:
    response = Response(json.dumps(body, indent=2), status=status, mimetype="application/json")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _truthy(value: Any) -> bool:
    return value in (True, 1, "1", "true", "True", "yes", "on")


class Application:
    """The WSGI application `StripeSimulator.start` serves."""

    def __init__(self, sim):
        self.sim = sim
        self.api = Map([Rule(path, methods=[method], endpoint=n) for n, (method, path, _) in enumerate(API)],
                       strict_slashes=False)
        self.other = Map([
            Rule("/_sim/state", methods=["GET"], endpoint="state"),
            Rule("/_sim/events", methods=["GET"], endpoint="events"),
            Rule("/_sim/advance", methods=["POST"], endpoint="advance"),
            Rule("/_sim/prices", methods=["POST"], endpoint="prices"),
            Rule("/_sim/checkout/<id>/complete", methods=["POST"], endpoint="complete"),
            Rule("/_sim/checkout/<id>/settle", methods=["POST"], endpoint="settle"),
            Rule("/_sim/customers/<id>/payment_failure", methods=["POST"], endpoint="payment_failure"),
            Rule("/_sim/fail_next", methods=["POST"], endpoint="fail_next"),
            Rule("/_sim/webhook_endpoints", methods=["GET", "POST"], endpoint="webhooks"),
            Rule("/_sim/subscriptions/<id>/pause", methods=["POST"], endpoint="pause"),
            Rule("/_sim/charges/<id>/dispute", methods=["POST"], endpoint="dispute"),
            Rule("/_sim/wait_for_deliveries", methods=["POST"], endpoint="wait"),
            *pages.rules(),
        ])

    def __call__(self, environ, start_response):
        request = Request(environ)
        try:
            if request.path.startswith("/v1/"):
                response = self.handle_api(request)
            else:
                response = self.handle_other(request)
        except Exception:  # an answer for every input, never a traceback
            log.exception("stripe simulator: %s %s failed", request.method, request.path)
            response = _json(500, StripeError(500, "An unknown error occurred", type="api_error").body())
        return response(environ, start_response)

    # -- /v1 ----------------------------------------------------------------------------------

    def handle_api(self, request: Request) -> Response:
        sim = self.sim
        request_id = shapes.new_id("req_", 14)
        headers = {"Request-Id": request_id, "Stripe-Version": shapes.API_VERSION}
        key = _api_key(request)
        if not key:
            return _json(401, StripeError(401, "You did not provide an API key. You need to provide your API key "
                                               "in the Authorization header, using Bearer auth (e.g. "
                                               "'Authorization: Bearer YOUR_SECRET_KEY').").body(), headers)
        if not key.startswith(("sk_test_", "rk_test_")):
            shown = key[:8] + "*" * max(0, len(key) - 12) + key[-4:]
            return _json(401, StripeError(401, f"Invalid API Key provided: {shown}").body(), headers)
        fault = sim._take_fault()
        if fault == "connection":
            connection = request.environ.get("werkzeug.socket")
            if connection is not None:
                # the reply below then meets a closed socket, which werkzeug drops quietly
                connection.shutdown(socket.SHUT_RDWR)
            return _json(500, {"error": {"type": "api_error", "message": "connection closed"}})
        if fault:
            return _json(sim.fault_error(fault).status, sim.fault_error(fault).body(), headers)
        try:
            endpoint, args = self.api.bind_to_environ(request.environ).match()
        except (NotFound, MethodNotAllowed):
            return _json(404, StripeError(404, f"Unrecognized request URL ({request.method}: {request.path}). "
                                               "Please see https://stripe.com/docs or we can help at "
                                               "https://support.stripe.com/.").body(), headers)
        idempotency_key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
        with sim._lock:
            try:
                pairs = list(request.args.items(multi=True))
                if request.method == "POST":
                    pairs += list(request.form.items(multi=True))
                params = decode(pairs)
                fingerprint = json.dumps([request.method, request.path, params], sort_keys=True)
                if idempotency_key:
                    headers["Idempotency-Key"] = idempotency_key
                    stored = sim._idempotency.get(idempotency_key)
                    if stored is not None:
                        if stored["fingerprint"] != fingerprint:
                            raise StripeError(400, "Keys for idempotent requests can only be used with the same "
                                                   "parameters they were first used with. Try using a key other "
                                                   f"than '{idempotency_key}' if you meant to execute a different "
                                                   "request.", type="idempotency_error")
                        return _json(stored["status"], stored["body"],
                                     {**headers, "Idempotent-Replayed": "true",
                                      "Original-Request": stored["request_id"]})
                expand = params.pop("expand", [])
                if not isinstance(expand, list) or not all(isinstance(e, str) for e in expand):
                    raise invalid("Invalid array: expand must be an array of strings", param="expand")
                with sim._action(request_id, idempotency_key):
                    status, body = 200, API[endpoint][2](sim, params, **args)
                    for path in expand:
                        _expand(sim, body, path, path)
            except StripeError as error:
                status, body = error.status, error.body()
                if status != 402:
                    # Stripe keeps no result for a request refused before it ran
                    return _json(status, body, headers)
            if idempotency_key:
                sim._remember(idempotency_key, {"fingerprint": fingerprint, "status": status, "body": body,
                                                "request_id": request_id})
            sim.requests.append({"method": request.method, "path": request.path, "params": params,
                                 "status": status})
            return _json(status, body, headers)

    # -- pages and hooks ----------------------------------------------------------------------

    def handle_other(self, request: Request) -> Response:
        try:
            endpoint, args = self.other.bind_to_environ(request.environ).match()
        except HTTPException as error:
            return _json(error.code or 404, {"detail": error.description or "Not found"})
        if callable(endpoint):
            return endpoint(self, request, **args)
        try:
            return _json(200, getattr(self, "hook_" + endpoint)(request, **args))
        except SimulatorError as error:
            return _json(error.status, {"detail": str(error)})
        except StripeError as error:
            return _json(error.status, error.body())
        except (ValueError, TypeError, KeyError) as error:
            return _json(400, {"detail": str(error)})

    @staticmethod
    def _body(request: Request) -> dict:
        if request.is_json:
            body = request.get_json(silent=True)
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            return body
        return request.form.to_dict()

    def hook_state(self, request: Request) -> dict:
        sim = self.sim
        with sim._lock:
            return {"now": sim.now(), "base_url": sim.base_url,
                    "objects": {kind: [sim._render(o) for o in sim._newest_first(kind)] for kind in sim.objects},
                    "events": list(sim.events), "deliveries": list(sim.deliveries)}

    def hook_events(self, request: Request) -> dict:
        wanted = request.args.get("type")
        return {"data": [e for e in list(self.sim.events) if wanted in (None, e["type"])]}

    def hook_advance(self, request: Request) -> dict:
        seconds = int(self._body(request).get("seconds", 0))
        return {"now": self.sim.advance(seconds)}

    def hook_prices(self, request: Request) -> dict:
        body = self._body(request)
        interval = body.get("interval", "month") or None
        return self.sim.ensure_price(str(body["id"]), int(body["unit_amount"]), str(body["product_name"]),
                                     interval=interval)

    def hook_complete(self, request: Request, id: str) -> dict:
        return self.sim.complete_checkout(id, self._body(request).get("outcome", "paid"))

    def hook_settle(self, request: Request, id: str) -> dict:
        return self.sim.settle_delayed_payment(id, _truthy(self._body(request).get("succeed", True)))

    def hook_payment_failure(self, request: Request, id: str) -> dict:
        failing = _truthy(self._body(request).get("failing", True))
        self.sim.set_payment_failure(id, failing)
        return {"customer": id, "failing": failing}

    def hook_fail_next(self, request: Request) -> dict:
        body = self._body(request)
        kind = body.get("kind")
        if kind not in FAULTS:
            raise ValueError(f"kind must be one of {', '.join(FAULTS)}")
        self.sim.fail_next(kind, int(body.get("times", 1)))
        return {"armed": kind, "times": int(body.get("times", 1))}

    def hook_webhooks(self, request: Request) -> dict:
        if request.method == "POST":
            body = self._body(request)
            if not str(body.get("url", "")).startswith(("http://", "https://")):
                raise ValueError("url must be an http(s) URL")
            return self.sim.add_webhook_endpoint(body["url"], body.get("secret") or None)
        with self.sim._lock:
            return {"data": [self.sim._render(e) for e in self.sim._newest_first("webhook_endpoint")]}

    def hook_pause(self, request: Request, id: str) -> dict:
        return self.sim.pause_subscription(id)

    def hook_dispute(self, request: Request, id: str) -> dict:
        body = self._body(request)
        amount = int(body["amount"]) if body.get("amount") else None
        return self.sim.dispute_charge(id, amount, body.get("reason") or "fraudulent")

    def hook_wait(self, request: Request) -> dict:
        return {"done": self.sim.wait_for_deliveries(float(self._body(request).get("timeout", 10)))}
