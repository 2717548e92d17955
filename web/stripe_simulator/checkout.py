"""Checkout, the billing portal, one-off payments (PaymentIntents, charges, refunds,
disputes), events and webhook endpoints.

A Checkout Session is paid once: `complete_checkout` is what the hosted page's buttons
do, and a session that is no longer `open` refuses (409) without creating anything. A
declined card leaves the session open with the error shown, as Stripe's page does.
"""
from __future__ import annotations

from typing import Any

from . import shapes
from .core import PRIVATE, SimulatorError
from .params import allow, boolean, card_declined, choice, integer, invalid, listed, metadata, require, string, text

OUTCOMES = ("paid", "declined", "delayed")
DECLINED = "Your card was declined. Try a different card."


class Payments:
    """Mixin of the simulator: every method runs inside `_action()` (the lock is held)."""

    # -- checkout sessions ----------------------------------------------------------------

    def api_checkout_create(self, p: dict) -> dict:
        allow(p, ("mode", "customer", "customer_email", "line_items", "metadata", "subscription_data",
                  "payment_intent_data", "client_reference_id", "success_url", "cancel_url", "expires_at",
                  "allow_promotion_codes", "payment_method_types", "locale", "billing_address_collection",
                  "customer_creation", "ui_mode"))
        mode = choice(require(p, "mode"), "mode", ("payment", "subscription"))
        if p.get("ui_mode", "hosted_page") != "hosted_page":
            raise invalid("The simulator hosts its own Checkout page only (`ui_mode=hosted_page`).", param="ui_mode")
        customer = self._customer(p["customer"], "customer") if p.get("customer") else None
        if customer and p.get("customer_email"):
            raise invalid("You may only specify one of these parameters: customer, customer_email.",
                          param="customer_email")
        lines = []
        for n, spec in enumerate(listed(require(p, "line_items"), "line_items")):
            spec = allow(spec, ("price", "price_data", "quantity"), f"line_items[{n}]")
            if spec.get("price"):
                price = self._price(spec["price"], f"line_items[{n}][price]")
            elif spec.get("price_data"):
                price = self._new_price(allow(spec["price_data"], ("currency", "unit_amount", "product",
                                                                   "product_data", "recurring"),
                                              f"line_items[{n}][price_data]"), f"line_items[{n}][price_data]")
            else:
                raise invalid(f"Missing required param: line_items[{n}][price].", param=f"line_items[{n}][price]",
                              code="parameter_missing")
            quantity = integer(require(spec, "quantity", f"line_items[{n}][quantity]"),
                               f"line_items[{n}][quantity]", 1, 999_999)
            if mode == "payment" and price["recurring"]:
                raise invalid("You specified `payment` mode but passed a recurring price. Either switch to "
                              "`subscription` mode or use only one-time prices.", param=f"line_items[{n}][price]")
            lines.append((price, quantity))
        if not lines:
            raise invalid("Missing required param: line_items.", param="line_items", code="parameter_missing")
        if mode == "subscription":
            if not any(price["recurring"] for price, _ in lines):
                raise invalid("You must provide at least one recurring price in `subscription` mode when using "
                              "prices.", param="line_items")
            if any(not price["recurring"] for price, _ in lines):
                raise invalid("The simulator's subscription Checkout takes recurring prices only.", param="line_items")
            self._same_interval([price for price, _ in lines], "line_items")
        subscription_data = allow(p.get("subscription_data", {}), ("metadata", "trial_period_days", "description"),
                                  "subscription_data")
        if subscription_data and mode != "subscription":
            raise invalid("You can only pass `subscription_data` in `subscription` mode.", param="subscription_data")
        intent_data = allow(p.get("payment_intent_data", {}), ("metadata", "description"), "payment_intent_data")
        if intent_data and mode != "payment":
            raise invalid("You can only pass `payment_intent_data` in `payment` mode.", param="payment_intent_data")
        now = self.now()
        expires_at = integer(p.get("expires_at", now + 86400), "expires_at", now + 1800, now + 86400)
        session = shapes.checkout_session(
            shapes.new_id("cs_test_a1", 56), now, mode, customer["id"] if customer else None,
            string(p["customer_email"], "customer_email", 800) if p.get("customer_email") else None,
            sum(price["unit_amount"] * quantity for price, quantity in lines), lines[0][0]["currency"],
            string(p["success_url"], "success_url") if p.get("success_url") else None,
            string(p["cancel_url"], "cancel_url") if p.get("cancel_url") else None,
            string(p["client_reference_id"], "client_reference_id", 200) if p.get("client_reference_id") else None,
            metadata(p.get("metadata", {})), expires_at)
        session[PRIVATE + "lines"] = [{"price": price["id"], "quantity": quantity} for price, quantity in lines]
        session[PRIVATE + "subscription"] = {
            "metadata": metadata(subscription_data.get("metadata", {}), "subscription_data[metadata]"),
            "trial_days": integer(subscription_data["trial_period_days"], "subscription_data[trial_period_days]",
                                  1, 730) if subscription_data.get("trial_period_days") else None,
            "description": text(subscription_data, "description", "subscription_data[description]", 500)}
        session[PRIVATE + "intent"] = {"metadata": metadata(intent_data.get("metadata", {}),
                                                            "payment_intent_data[metadata]"),
                                       "description": text(intent_data, "description",
                                                           "payment_intent_data[description]")}
        if p.get("customer_creation"):
            if mode != "payment":
                raise invalid("`customer_creation` can only be used in `payment` mode.", param="customer_creation")
            session["customer_creation"] = choice(p["customer_creation"], "customer_creation",
                                                  ("always", "if_required"))
        self._store("checkout.session", session)
        return self._render(session)

    def api_checkout_list(self, p: dict) -> dict:
        filters = {name: p.pop(name) for name in ("customer", "status", "subscription", "payment_intent") if name in p}
        if "status" in filters:
            choice(filters["status"], "status", ("open", "complete", "expired"))
        return self._page("checkout.session", p, "/v1/checkout/sessions",
                          lambda s: all(s[name] == value for name, value in filters.items()))

    def api_checkout_expire(self, session_id: str, p: dict) -> dict:
        allow(p, ())
        session = self._get("checkout.session", session_id)
        if session["status"] != "open":
            raise invalid(f'Only Checkout Sessions with a status in ["open"] can be expired. This Checkout '
                          f'Session has a status of "{session["status"]}".')
        self._expire_session(session)
        return self._render(session)

    def _expire_session(self, session: dict) -> None:
        session["status"] = "expired"
        self._emit("checkout.session.expired", session)

    def session_lines(self, session: dict) -> list[dict]:
        """The line items (`GET …/line_items`, `expand[]=line_items`) as Stripe lists them."""
        rows = []
        for saved in session[PRIVATE + "lines"]:
            price = self.objects["price"][saved["price"]]
            amount = price["unit_amount"] * saved["quantity"]
            rows.append({"id": "li_" + session["id"][-20:] + str(len(rows)), "object": "item",
                         "amount_discount": 0, "amount_subtotal": amount, "amount_tax": 0, "amount_total": amount,
                         "currency": price["currency"], "description": self._name(price),
                         "price": self._render(price), "quantity": saved["quantity"]})
        return rows

    def api_checkout_line_items(self, session_id: str, p: dict) -> dict:
        allow(p, ("limit", "starting_after", "ending_before"))
        session = self._get("checkout.session", session_id)
        return self._slice(self.session_lines(session), p, f"/v1/checkout/sessions/{session_id}/line_items")

    def complete_checkout(self, session_id: str, outcome: str = "paid") -> dict:
        """What the hosted page's buttons do: `paid` (a working card), `declined` (the
        session stays open with an error) or `delayed` (a bank transfer, settled later)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}")
        with self._action():
            session = self.objects["checkout.session"].get(session_id)
            if session is None:
                raise SimulatorError(404, "No such Checkout Session.")
            if session["status"] != "open":
                raise SimulatorError(409, "This Checkout Session is no longer available.")
            if outcome == "declined":
                session[PRIVATE + "error"] = DECLINED
                return self._render(session)
            session.pop(PRIVATE + "error", None)
            customer = self.objects["customer"].get(session["customer"] or "")
            email = customer["email"] if customer else session["customer_email"]
            if customer is None and (session["mode"] == "subscription" or session["customer_creation"] == "always"):
                customer = self._store("customer", shapes.customer(shapes.new_id("cus_", 14), self.now(), email,
                                                                   None, None, {}))
                self._emit("customer.created", customer)
            method = self._store("payment_method", shapes.payment_method(
                shapes.new_id("pm_"), self.now(), customer["id"] if customer else None))
            if session["mode"] == "subscription":
                self._checkout_subscription(session, customer, method, outcome)
            else:
                self._checkout_payment(session, customer, method, outcome)
            if session["payment_status"] == "unpaid":
                session[PRIVATE + "awaiting"] = True
            session.update(status="complete", customer=customer["id"] if customer else None,
                           customer_details=shapes.customer_details(email),
                           collected_information={"business_name": None, "individual_name": None,
                                                  "shipping_details": None})
            self._emit("checkout.session.completed", session)
            return self._render(session)

    def _checkout_subscription(self, session: dict, customer: dict, method: dict, outcome: str) -> None:
        saved = session[PRIVATE + "subscription"]
        specs = [(self.objects["price"][line["price"]], line["quantity"], {}) for line in session[PRIVATE + "lines"]]
        trial_end = self.now() + saved["trial_days"] * 86400 if saved["trial_days"] else None
        sub = self._start_subscription(customer, specs, dict(saved["metadata"]), saved["description"], trial_end,
                                       payment="delayed" if outcome == "delayed" else "checkout",
                                       payment_method=method["id"])
        invoice = self.objects["invoice"][sub["latest_invoice"]]
        if invoice["status"] == "paid":
            status = "paid" if invoice["amount_paid"] > 0 else "no_payment_required"
        else:
            status = "unpaid"
        session.update(subscription=sub["id"], invoice=invoice["id"], payment_status=status)

    def _checkout_payment(self, session: dict, customer: dict | None, method: dict, outcome: str) -> None:
        intent_data = session[PRIVATE + "intent"]
        customer_id = customer["id"] if customer else None
        intent = self._store("payment_intent", shapes.payment_intent(
            shapes.new_id("pi_"), self.now(), session["amount_total"], session["currency"], customer_id,
            dict(intent_data["metadata"]), intent_data["description"]))
        charge = self._store("charge", shapes.charge(
            shapes.new_id("ch_"), self.now(), intent["amount"], intent["currency"], customer_id, intent["id"],
            method["id"], "card" if outcome == "paid" else "customer_balance", dict(intent["metadata"]),
            intent["description"]))
        intent.update(payment_method=method["id"], latest_charge=charge["id"])
        session["payment_intent"] = intent["id"]
        if outcome == "paid":
            self._charge_settled(intent, charge, True)
            session["payment_status"] = "paid"
        else:
            intent["status"] = "processing"
            self._emit("charge.pending", charge)

    def _charge_settled(self, intent: dict, charge: dict, succeeded: bool) -> None:
        if succeeded:
            intent.update(status="succeeded", amount_received=intent["amount"])
            charge.update(status="succeeded", paid=True, captured=True, amount_captured=charge["amount"],
                          outcome={"network_status": "approved_by_network", "reason": None, "risk_level": "normal",
                                   "seller_message": "Payment complete.", "type": "authorized"})
            self._emit("charge.succeeded", charge)
            self._emit("payment_intent.succeeded", intent)
        else:
            intent.update(status="requires_payment_method", last_payment_error={
                "code": "payment_method_customer_decline", "message": "The customer's bank declined the transfer.",
                "type": "card_error"})
            charge.update(status="failed", failure_code="payment_method_customer_decline",
                          failure_message="The customer's bank declined the transfer.")
            self._emit("charge.failed", charge)
            self._emit("payment_intent.payment_failed", intent)

    def settle_delayed_payment(self, session_id: str, succeed: bool = True) -> dict:
        """The bank transfer of a `delayed` checkout arrives (or fails)."""
        with self._action():
            session = self.objects["checkout.session"].get(session_id)
            if session is None:
                raise SimulatorError(404, "No such Checkout Session.")
            if not session.pop(PRIVATE + "awaiting", False):
                raise SimulatorError(409, "This Checkout Session has no payment waiting to settle.")
            if session["mode"] == "subscription":
                invoice = self.objects["invoice"][session["invoice"]]
                sub = self.objects["subscription"][session["subscription"]]
                invoice.pop(PRIVATE + "processing", None)
                if succeed:
                    invoice["attempt_count"] += 1
                    self._mark_paid(invoice)
                else:
                    invoice.update(attempted=True, attempt_count=invoice["attempt_count"] + 1)
                    self._emit("invoice.payment_failed", invoice)
                    self._expire_incomplete(sub)
            else:
                intent = self.objects["payment_intent"][session["payment_intent"]]
                self._charge_settled(intent, self.objects["charge"][intent["latest_charge"]], succeed)
            if succeed:
                session["payment_status"] = "paid"
                self._emit("checkout.session.async_payment_succeeded", session)
            else:
                self._emit("checkout.session.async_payment_failed", session)
            return self._render(session)

    # -- billing portal -------------------------------------------------------------------

    def api_portal_create(self, p: dict) -> dict:
        allow(p, ("customer", "return_url", "configuration", "locale"))
        customer = self._customer(require(p, "customer"), "customer")
        session = shapes.portal_session(shapes.new_id("bps_"), self.now(), customer["id"],
                                        string(p["return_url"], "return_url") if p.get("return_url") else None)
        self._store("billing_portal.session", session)
        return self._render(session)

    def portal_action(self, session_id: str, sub_id: str, action: str) -> None:
        """The portal's buttons: cancel at period end, or renew (undo that cancellation)."""
        with self._action():
            session = self._get("billing_portal.session", session_id)
            sub = self._get("subscription", sub_id)
            if sub["customer"] != session["customer"]:
                raise SimulatorError(404, "No such subscription for this customer.")
            self.api_subscriptions_update(sub_id, {"cancel_at_period_end": "true" if action == "cancel" else "false"})

    # -- one-off payments -----------------------------------------------------------------

    def api_payment_intents_create(self, p: dict) -> dict:
        """A PaymentIntent; with `confirm` and a saved card, charged at once (off-session
        too). A declined card answers 402 `card_declined` with the PaymentIntent in the error
        (status requires_payment_method) and emits payment_intent.payment_failed, as Stripe does."""
        allow(p, ("amount", "currency", "customer", "payment_method", "confirm", "off_session", "metadata",
                  "description", "payment_method_types", "setup_future_usage", "error_on_requires_action",
                  "statement_descriptor_suffix", "receipt_email"))
        amount = integer(require(p, "amount"), "amount", 50, 99_999_999)
        currency = choice(require(p, "currency"), "currency", ("usd", "eur", "gbp"))
        customer = self._customer(p["customer"], "customer") if p.get("customer") else None
        method = None
        if p.get("payment_method"):
            method = self._get("payment_method", p["payment_method"], "payment_method")
            if method["customer"] != (customer["id"] if customer else None):
                raise invalid(f"The payment method {method['id']} does not belong to the customer.",
                              param="payment_method")
        confirm = boolean(p.get("confirm", "false"), "confirm")
        off_session = boolean(p.get("off_session", "false"), "off_session") if "off_session" in p else False
        if off_session and not confirm:
            raise invalid("`off_session` can only be used with `confirm=true`.", param="off_session")
        if confirm and method is None:
            raise invalid("You cannot confirm this PaymentIntent because it's missing a payment method.",
                          code="payment_intent_unexpected_state")
        intent = self._store("payment_intent", shapes.payment_intent(
            shapes.new_id("pi_"), self.now(), amount, currency, customer["id"] if customer else None,
            metadata(p.get("metadata", {})), text(p, "description")))
        self._emit("payment_intent.created", intent)
        if not confirm:
            return self._render(intent)
        charge = self._store("charge", shapes.charge(
            shapes.new_id("ch_"), self.now(), amount, currency, intent["customer"], intent["id"], method["id"],
            "card", dict(intent["metadata"]), intent["description"]))
        intent.update(payment_method=method["id"], latest_charge=charge["id"])
        if customer.get(PRIVATE + "failing"):
            intent.update(status="requires_payment_method", last_payment_error={
                "code": "card_declined", "decline_code": "generic_decline", "message": "Your card was declined.",
                "payment_method": self._render(method), "type": "card_error"})
            charge.update(status="failed", failure_code="card_declined", failure_message="Your card was declined.",
                          outcome={"network_status": "declined_by_network", "reason": "generic_decline",
                                   "risk_level": "normal", "seller_message": "The bank did not approve this charge.",
                                   "type": "issuer_declined"})
            self._emit("charge.failed", charge)
            self._emit("payment_intent.payment_failed", intent)
            raise card_declined(payment_intent=self._render(intent), charge=charge["id"])
        self._charge_settled(intent, charge, True)
        return self._render(intent)

    def api_payment_methods_list(self, p: dict) -> dict:
        """A customer's saved payment methods, newest first (`customer` required here)."""
        customer = self._customer(require(p, "customer"), "customer")
        p.pop("customer")
        if "type" in p:
            choice(p.pop("type"), "type", ("card",))
        return self._page("payment_method", p, "/v1/payment_methods", lambda m: m["customer"] == customer["id"])

    def api_refunds_create(self, p: dict) -> dict:
        allow(p, ("payment_intent", "charge", "amount", "reason", "metadata"))
        if p.get("charge"):
            charge = self._get("charge", p["charge"], "charge")
        elif p.get("payment_intent"):
            intent = self._get("payment_intent", p["payment_intent"], "payment_intent")
            charge = self.objects["charge"].get(intent["latest_charge"] or "")
            if charge is None:
                raise invalid("This PaymentIntent does not have a successful charge to refund.", param="payment_intent")
        else:
            raise invalid("One of the following params should be provided for this request: payment_intent or "
                          "charge.", code="parameter_missing")
        if charge["status"] != "succeeded":
            raise invalid(f"Charge {charge['id']} has not succeeded and cannot be refunded.", param="charge")
        left = charge["amount"] - charge["amount_refunded"]
        if left == 0:
            raise invalid(f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded")
        amount = integer(p["amount"], "amount", 1) if "amount" in p else left
        if amount > left:
            raise invalid(f"Refund amount ({shapes.money(amount)}) is greater than unrefunded amount on charge "
                          f"({shapes.money(left)})", param="amount", code="amount_too_large")
        reason = choice(p["reason"], "reason", ("duplicate", "fraudulent", "requested_by_customer")) \
            if p.get("reason") else None
        refund = self._store("refund", shapes.refund(shapes.new_id("re_"), self.now(), charge, amount, reason,
                                                     metadata(p.get("metadata", {}))))
        with self._changing(charge, "charge.refunded"):
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] == charge["amount"]
            charge["refunds"]["data"].insert(0, shapes.refund(refund["id"], refund["created"], charge, amount,
                                                              reason, refund["metadata"]))
            charge["refunds"]["total_count"] = len(charge["refunds"]["data"])
        self._emit("refund.created", refund)
        return self._render(refund)

    def dispute_charge(self, charge_id: str, amount: int | None = None, reason: str = "fraudulent") -> dict:
        """The cardholder disputes a charge: `charge.dispute.created`."""
        with self._action():
            charge = self.objects["charge"].get(charge_id)
            if charge is None:
                raise SimulatorError(404, "No such charge.")
            if charge["status"] != "succeeded" or charge["disputed"]:
                raise SimulatorError(409, "Only a succeeded, undisputed charge can be disputed.")
            dispute = self._store("dispute", shapes.dispute(shapes.new_id("dp_"), self.now(), charge,
                                                            int(amount or charge["amount"]), reason))
            charge["disputed"] = True
            self._emit("charge.dispute.created", dispute)
            return self._render(dispute)

    # -- events and webhook endpoints -----------------------------------------------------

    def api_events_list(self, p: dict) -> dict:
        wanted = text(p, "type", max_length=200)
        p.pop("type", None)
        types = {string(t, "types") for t in listed(p.pop("types", []), "types")}

        def match(event: dict) -> bool:
            if wanted is not None:
                if wanted.endswith("*"):
                    if not event["type"].startswith(wanted[:-1]):
                        return False
                elif event["type"] != wanted:
                    return False
            return not types or event["type"] in types

        allow(p, ("limit", "starting_after", "ending_before", "created", "delivery_success"))
        rows = [event for event in reversed(self.events) if match(event)]
        return self._slice(rows, p, "/v1/events", known=self._events_by_id, kind="event")

    def api_events_retrieve(self, event_id: str) -> dict:
        event = self._events_by_id.get(event_id)
        if event is None:
            raise invalid(f"No such event: '{event_id}'", param="id", code="resource_missing")
        return event

    def api_webhook_endpoints_create(self, p: dict) -> dict:
        allow(p, ("url", "enabled_events", "description", "metadata", "api_version"))
        url = string(require(p, "url"), "url")
        if not url.startswith(("http://", "https://")):
            raise invalid("Invalid URL: URL must be http or https.", param="url", code="url_invalid")
        events = [string(e, "enabled_events") for e in listed(require(p, "enabled_events"), "enabled_events")]
        endpoint = shapes.webhook_endpoint(shapes.new_id("we_"), self.now(), url, shapes.new_id("whsec_", 32),
                                           events, text(p, "description"), metadata(p.get("metadata", {})))
        self._store("webhook_endpoint", endpoint)
        return self._render(endpoint)

    def api_webhook_endpoints_delete(self, endpoint_id: str) -> dict:
        self._get("webhook_endpoint", endpoint_id)
        del self.objects["webhook_endpoint"][endpoint_id]
        return {"id": endpoint_id, "object": "webhook_endpoint", "deleted": True}

    def api_webhook_endpoints_list(self, p: dict) -> dict:
        page = self._page("webhook_endpoint", p, "/v1/webhook_endpoints")
        for endpoint in page["data"]:
            endpoint.pop("secret", None)  # Stripe shows the secret only when the endpoint is created
        return page

    def expandable(self, value: Any) -> dict | None:
        """The object an id names, as `expand[]` shows it (None: not an id of ours)."""
        if not isinstance(value, str):
            return None
        kind = self._kind_of(value)
        obj = self.objects[kind].get(value) if kind else None
        if obj is None and value.startswith("evt_"):
            return self._events_by_id.get(value)
        return self._render(obj) if obj is not None else None
