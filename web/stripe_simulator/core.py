"""The simulator's state: objects, the simulated clock, events, persistence, webhook delivery.

Every change happens inside `_action()`: one re-entrant lock, the clock pinned to one
whole second (so one action's events share their `created`, as Stripe's do), and the
state file rewritten afterwards. Time-driven work (renewals, retries, expiries) runs
before each action and in `advance()`, each item at its own simulated moment, so a
long-running local service and a test that jumps a month see the same history.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import stripe

from . import shapes
from .params import StripeError, allow, integer, missing

log = logging.getLogger(__name__)

KINDS = ("customer", "product", "price", "subscription", "subscription_schedule", "invoice", "invoiceitem",
         "checkout.session", "billing_portal.session", "payment_method", "payment_intent", "charge", "refund",
         "dispute", "webhook_endpoint")
# longest first: `sub_sched_` must win over `sub_`
PREFIXES = (("sub_sched_", "subscription_schedule"), ("cus_", "customer"), ("prod_", "product"),
            ("price_", "price"), ("sub_", "subscription"), ("in_", "invoice"), ("ii_", "invoiceitem"),
            ("cs_", "checkout.session"), ("bps_", "billing_portal.session"), ("pm_", "payment_method"),
            ("pi_", "payment_intent"), ("ch_", "charge"), ("re_", "refund"), ("dp_", "dispute"),
            ("we_", "webhook_endpoint"))
FAULTS = ("card_declined", "rate_limit", "api_error", "authentication", "invalid_request", "connection")
DELIVERY_ATTEMPTS = 4
DELIVERY_BACKOFF = (0.2, 0.5, 1.0)  # seconds before the 2nd, 3rd and 4th attempt
IDEMPOTENCY_TTL = 24 * 3600  # seconds of real time
PRIVATE = "_sim_"  # keys the simulator keeps on its objects and never sends


class SimulatorError(Exception):
    """A test hook used wrongly (e.g. paying a completed Checkout Session): HTTP `status`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def private_stripped(value: Any) -> Any:
    """A deep copy without the simulator's bookkeeping keys."""
    if isinstance(value, dict):
        return {k: private_stripped(v) for k, v in value.items() if not k.startswith(PRIVATE)}
    if isinstance(value, list):
        return [private_stripped(v) for v in value]
    return value


def changes(before: Any, after: Any) -> dict:
    """Stripe's `previous_attributes`: the old value of every changed field, nested
    objects reduced to their changed fields, lists and scalars given whole."""
    previous = {}
    for key in before.keys() | after.keys():
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            previous[key] = changes(old, new)
        else:
            previous[key] = old
    return previous


class Deliveries:
    """Posts events to webhook endpoints from two threads (deliveries overlap, as
    Stripe's do) and retries a failed attempt with a short backoff."""

    def __init__(self, sim: "Core"):
        self.sim = sim
        self.queue: queue.Queue = queue.Queue()
        self.pending = 0
        self.idle = threading.Condition()
        self.threads: list[threading.Thread] = []

    def submit(self, event: dict, endpoint: dict) -> None:
        with self.idle:
            self.pending += 1
            if not self.threads:
                self.threads = [threading.Thread(target=self._work, daemon=True, name=f"stripe-sim-webhooks-{n}")
                                for n in range(2)]
                for thread in self.threads:
                    thread.start()
        self.queue.put((event, endpoint, 1))

    def _work(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            event, endpoint, attempt = job
            status = self.sim._post_event(event, endpoint, attempt)
            if not (status and 200 <= status < 300) and attempt < DELIVERY_ATTEMPTS:
                timer = threading.Timer(DELIVERY_BACKOFF[attempt - 1], self.queue.put,
                                        args=((event, endpoint, attempt + 1),))
                timer.daemon = True
                timer.start()
                continue
            with self.idle:
                self.pending -= 1
                self.idle.notify_all()

    def wait(self, timeout: float) -> bool:
        with self.idle:
            return self.idle.wait_for(lambda: self.pending == 0, timeout)

    def stop(self) -> None:
        for _ in self.threads:
            self.queue.put(None)
        self.threads = []


class Core:
    """State, clock, events and persistence; the Stripe behaviour is in the mixins."""

    def __init__(self, state_file: str | os.PathLike | None = None):
        self.state_file = Path(state_file) if state_file else None
        self._lock = threading.RLock()
        self.objects: dict[str, dict[str, dict]] = {kind: {} for kind in KINDS}
        self.events: list[dict] = []
        self._events_by_id: dict[str, dict] = {}
        self.deliveries: list[dict] = []
        # every API call answered: method, path, parameters, status (what a dashboard's request log shows)
        self.requests: list[dict] = []
        self.auto_deliver = True
        self.base_url: str | None = None
        self._offset = 0
        self._pinned: int | None = None
        self._request: tuple[str | None, str | None] = (None, None)
        self._seq = 0
        self._faults: list[str] = []
        self._idempotency: dict[str, dict] = {}
        self._deliveries = Deliveries(self)
        self._server = None
        self._thread = None
        if self.state_file and self.state_file.exists():
            self._load()

    # -- the clock -----------------------------------------------------------------------------

    def _clock(self) -> int:
        return int(time.time()) + self._offset

    def now(self) -> int:
        """The simulated clock in whole seconds: real time plus every `advance`."""
        return self._pinned if self._pinned is not None else self._clock()

    def advance(self, seconds: int) -> int:
        """Move the clock forward and process every renewal, retry and expiry passed, in order."""
        if int(seconds) < 0:
            raise ValueError("the simulated clock only moves forward")
        with self._lock:
            self._offset += int(seconds)
            self._run_due()
            self._save()
        return self.now()

    @contextmanager
    def _action(self, request_id: str | None = None, idempotency_key: str | None = None) -> Iterator[None]:
        """One state change: locked, due work done first, the clock pinned, state saved after."""
        with self._lock:
            outer = self._pinned is None
            if outer:
                self._run_due()
                self._pinned = self._clock()
                self._request = (request_id, idempotency_key)
            try:
                yield
            finally:
                if outer:
                    self._pinned = None
                    self._request = (None, None)
                    self._save()

    def _run_due(self) -> None:
        """Process the time-driven items that fell due, earliest first, each at its own moment."""
        for _ in range(100_000):  # a bound, so a bug can never spin forever
            target = self._clock()
            due = [item for item in self._due_items() if item[0] <= target]
            if not due:
                return
            moment, _, handler = min(due, key=lambda item: (item[0], item[1]))
            self._pinned, self._request = moment, (None, None)
            try:
                handler()
            finally:
                self._pinned = None
        raise RuntimeError("stripe simulator: time-driven work did not settle")

    def _due_items(self) -> list[tuple[int, int, Any]]:  # pragma: no cover - defined by the mixins
        return []

    # -- objects -------------------------------------------------------------------------------

    def _store(self, kind: str, obj: dict) -> dict:
        self._seq += 1
        obj[PRIVATE + "seq"] = self._seq
        self.objects[kind][obj["id"]] = obj
        return obj

    def _kind_of(self, object_id: str) -> str | None:
        for prefix, kind in PREFIXES:
            if object_id.startswith(prefix):
                return kind
        return None

    def _get(self, kind: str, object_id: Any, param: str = "id") -> dict:
        obj = self.objects[kind].get(object_id) if isinstance(object_id, str) else None
        if obj is None:
            raise missing(kind, object_id, param)
        return obj

    def _newest_first(self, kind: str) -> list[dict]:
        return sorted(self.objects[kind].values(), key=lambda o: o[PRIVATE + "seq"], reverse=True)

    def _page(self, kind: str, p: dict, url: str, match=lambda obj: True) -> dict:
        """One page of a list endpoint, newest first, with Stripe's cursors."""
        allow(p, ("limit", "starting_after", "ending_before", "created"))
        return self._slice([self._render(o) for o in self._newest_first(kind) if match(o)], p, url,
                           known=self.objects[kind], kind=kind)

    def _slice(self, rows: list[dict], p: dict, url: str, known: dict | None = None, kind: str = "object") -> dict:
        limit = integer(p.get("limit", 10), "limit", 1, 100)
        after, before = p.get("starting_after"), p.get("ending_before")
        ids = [row["id"] for row in rows]
        for cursor, name in ((after, "starting_after"), (before, "ending_before")):
            if cursor is not None and cursor not in ids and (known is None or cursor not in known):
                raise missing(kind, cursor, name)
        if after is not None:
            rows = rows[ids.index(after) + 1:] if after in ids else []
        elif before is not None:
            earlier = rows[:ids.index(before)] if before in ids else []
            return {"object": "list", "data": earlier[-limit:], "has_more": len(earlier) > limit, "url": url}
        return {"object": "list", "data": rows[:limit], "has_more": len(rows) > limit, "url": url}

    def _render(self, obj: dict) -> dict:
        """An object as the API sends it: bookkeeping removed, URLs on this server filled in."""
        out = private_stripped(obj)
        base = self.base_url or "http://stripe-simulator.invalid"
        kind = out.get("object")
        if kind == "invoice" and out["status"] != "draft":
            out["hosted_invoice_url"] = f"{base}/invoices/{out['id']}"
            out["invoice_pdf"] = f"{base}/invoices/{out['id']}/pdf"
        elif kind == "checkout.session":
            out["url"] = f"{base}/checkout/{out['id']}" if out["status"] == "open" else None
        elif kind == "billing_portal.session":
            out["url"] = f"{base}/portal/{out['id']}"
        return out

    # -- events --------------------------------------------------------------------------------

    def _emit(self, type: str, obj: dict, previous: dict | None = None) -> dict:
        endpoints = [e for e in self.objects["webhook_endpoint"].values()
                     if "*" in e["enabled_events"] or type in e["enabled_events"]]
        event = shapes.event(shapes.new_id("evt_"), self.now(), type, self._render(obj), previous,
                             *self._request, pending_webhooks=len(endpoints))
        self.events.append(event)
        self._events_by_id[event["id"]] = event
        if self.auto_deliver:
            for endpoint in endpoints:
                self._deliveries.submit(event, endpoint)
        return event

    @contextmanager
    def _changing(self, obj: dict, type: str) -> Iterator[None]:
        """Emit `type` (an `*.updated` event with previous_attributes) if `obj` changes inside."""
        before = self._render(obj)
        yield
        previous = changes(before, self._render(obj))
        if previous:
            self._emit(type, obj, previous)

    def _post_event(self, event: dict, endpoint: dict, attempt: int) -> int | None:
        """One signed delivery attempt, recorded in `deliveries`; the HTTP status or None."""
        body = json.dumps(event, indent=2)
        header = stripe.WebhookSignature.generate_signature_header(body, endpoint["secret"])
        request = urllib.request.Request(endpoint["url"], data=body.encode(), method="POST", headers={
            "Content-Type": "application/json; charset=utf-8", "Stripe-Signature": header,
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"})
        record = {"event": event["id"], "type": event["type"], "url": endpoint["url"], "attempt": attempt,
                  "status": None, "error": None, "at": time.time()}
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                record["status"] = response.status
        except urllib.error.HTTPError as error:
            record["status"] = error.code
        except (OSError, ValueError) as error:
            record["error"] = f"{type(error).__name__}: {error}"
        self.deliveries.append(record)
        return record["status"]

    # -- persistence ---------------------------------------------------------------------------

    def _save(self) -> None:
        if not self.state_file:
            return
        state = {"version": 1, "offset": self._offset, "seq": self._seq, "objects": self.objects,
                 "events": self.events, "idempotency": self._idempotency}
        temporary = self.state_file.with_name(self.state_file.name + ".tmp")
        temporary.write_text(json.dumps(state))
        os.replace(temporary, self.state_file)

    def _load(self) -> None:
        state = json.loads(self.state_file.read_text())
        self._offset, self._seq = state["offset"], state["seq"]
        for kind in KINDS:
            self.objects[kind] = state["objects"].get(kind, {})
        self.events = state["events"]
        self._events_by_id = {event["id"]: event for event in self.events}
        self._idempotency = state["idempotency"]

    def _remember(self, key: str, answer: dict) -> None:
        """Keep an idempotent answer; like Stripe, forget keys after 24 hours."""
        now = time.time()
        answer["at"] = now
        self._idempotency = {k: v for k, v in self._idempotency.items()
                             if v.get("at", now) > now - IDEMPOTENCY_TTL}
        self._idempotency[key] = answer
        self._save()

    # -- faults --------------------------------------------------------------------------------

    def fail_next(self, kind: str, times: int = 1) -> None:
        """Make the next `times` API calls fail with `kind` (one of FAULTS)."""
        if kind not in FAULTS:
            raise ValueError(f"fail_next: kind must be one of {', '.join(FAULTS)}")
        with self._lock:
            self._faults.extend([kind] * int(times))

    def _take_fault(self) -> str | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    @staticmethod
    def fault_error(kind: str) -> StripeError:
        if kind == "card_declined":
            return StripeError(402, "Your card was declined.", type="card_error", code="card_declined",
                               decline_code="generic_decline")
        if kind == "rate_limit":
            return StripeError(429, "Request rate limit exceeded. Learn more about rate limits here "
                               "https://stripe.com/docs/rate-limits.", code="rate_limit")
        if kind == "api_error":
            return StripeError(500, "An unknown error occurred", type="api_error")
        if kind == "authentication":
            return StripeError(401, "Invalid API Key provided: sk_test_********************simu")
        return StripeError(400, "Invalid request (injected by the Stripe simulator).", code="parameter_invalid")

    # -- webhooks ------------------------------------------------------------------------------

    def add_webhook_endpoint(self, url: str, secret: str | None = None,
                             enabled_events: list[str] | None = None) -> dict:
        """Every matching event is POSTed to `url`, signed with `secret` (generated if None)."""
        with self._action():
            endpoint = shapes.webhook_endpoint(shapes.new_id("we_"), self.now(), url,
                                               secret or shapes.new_id("whsec_", 32), enabled_events or ["*"],
                                               None, {})
            self._store("webhook_endpoint", endpoint)
            return private_stripped(endpoint)

    def wait_for_deliveries(self, timeout: float = 10) -> bool:
        """Block until every queued delivery (with its retries) is done; False on timeout."""
        return self._deliveries.wait(timeout)

    def deliver(self, event: dict | str, url: str | None = None) -> list[int | None]:
        """Send one recorded event now (for tests running with auto_deliver off): one
        attempt to each endpoint (or only the one at `url`); the statuses."""
        event = self._events_by_id[event if isinstance(event, str) else event["id"]]
        endpoints = [e for e in list(self.objects["webhook_endpoint"].values()) if url in (None, e["url"])]
        return [self._post_event(event, endpoint, 1) for endpoint in endpoints]

    # -- the server ----------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve the API, the hosted pages and the /_sim hooks (threaded werkzeug); the base URL."""
        from werkzeug.serving import WSGIRequestHandler, make_server

        from .server import Application

        class QuietHandler(WSGIRequestHandler):
            def log_request(self, *args, **kwargs):  # one line per API call would drown test output
                pass

        self._server = make_server(host, port, Application(self), threaded=True, request_handler=QuietHandler)
        self.base_url = f"http://{host}:{self._server.server_port}"
        # a short poll interval makes stop() quick (each test stops its own simulator)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="stripe-simulator")
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._deliveries.stop()
        with self._lock:
            self._save()
