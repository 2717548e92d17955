"""Subscriptions: creation, price changes with prorations and payment behaviours,
cancellation, pause and resume.
"""
from __future__ import annotations

from typing import Any

from . import shapes
from .core import PRIVATE, SimulatorError
from .params import allow, boolean, card_declined, choice, integer, invalid, listed, metadata, require, text
from .periods import (DAY, PAYMENT_BEHAVIORS, PENDING_UPDATE_EXPIRES_AFTER, PRORATION_BEHAVIORS, RENEWING,
                      next_boundary, prorated)

MANAGED = ("The subscription is managed by the subscription schedule `{}`, and updating any cancelation "
           "behavior directly is not allowed. Please update the schedule instead.")


class Subscriptions:
    """Mixin of the simulator: every method runs inside `_action()` (the lock is held)."""

    @staticmethod
    def _period(sub: dict) -> tuple[int, int]:
        item = sub["items"]["data"][0]
        return item["current_period_start"], item["current_period_end"]

    def _next_end(self, sub: dict, after: int) -> int:
        recurring = sub["items"]["data"][0]["price"]["recurring"]
        return next_boundary(sub["billing_cycle_anchor"], recurring["interval"], recurring["interval_count"], after)

    def api_subscriptions_list(self, p: dict) -> dict:
        customer, price = p.pop("customer", None), p.pop("price", None)
        status = p.pop("status", None)
        if status is not None:
            choice(status, "status", ("active", "all", "canceled", "ended", "incomplete", "incomplete_expired",
                                      "past_due", "paused", "trialing", "unpaid"))

        def match(sub: dict) -> bool:
            if customer is not None and sub["customer"] != customer:
                return False
            if price is not None and all(i["price"]["id"] != price for i in sub["items"]["data"]):
                return False
            if status is None:  # Stripe's default hides the ended ones
                return sub["status"] not in ("canceled", "incomplete_expired")
            if status == "ended":
                return sub["status"] in ("canceled", "incomplete_expired")
            return status == "all" or sub["status"] == status

        return self._page("subscription", p, "/v1/subscriptions", match)

    def api_subscriptions_create(self, p: dict) -> dict:
        allow(p, ("customer", "items", "metadata", "description", "payment_behavior", "proration_behavior",
                  "default_payment_method", "trial_period_days", "trial_end", "collection_method", "off_session",
                  "cancel_at_period_end"))
        customer = self._customer(require(p, "customer"), "customer")
        specs = []
        for n, spec in enumerate(listed(require(p, "items"), "items")):
            spec = allow(spec, ("price", "quantity", "metadata"), f"items[{n}]")
            price = self._price(require(spec, "price", f"items[{n}][price]"), f"items[{n}][price]", recurring=True)
            specs.append((price, integer(spec.get("quantity", 1), f"items[{n}][quantity]", 1, 10_000),
                          metadata(spec.get("metadata", {}), f"items[{n}][metadata]")))
        if not specs:
            raise invalid("Missing required param: items.", param="items", code="parameter_missing")
        self._same_interval([s[0] for s in specs], "items")
        if p.get("collection_method", "charge_automatically") != "charge_automatically":
            raise invalid("The simulator collects automatically only.", param="collection_method")
        behavior = choice(p.get("payment_behavior", "allow_incomplete"), "payment_behavior", PAYMENT_BEHAVIORS)
        if behavior == "pending_if_incomplete":
            raise invalid("You cannot use `pending_if_incomplete` when creating a subscription.",
                          param="payment_behavior")
        trial_end = None
        if p.get("trial_end"):
            trial_end = integer(p["trial_end"], "trial_end", self.now() + 1)
        elif p.get("trial_period_days"):
            trial_end = self.now() + integer(p["trial_period_days"], "trial_period_days", 1, 730) * DAY
        due = sum(price["unit_amount"] * quantity for price, quantity, _ in specs)
        if (behavior == "error_if_incomplete" and not trial_end and due > 0
                and customer.get(PRIVATE + "failing")):
            raise card_declined()
        sub = self._start_subscription(customer, specs, metadata(p.get("metadata", {})),
                                       text(p, "description", max_length=500), trial_end,
                                       payment="none" if behavior == "default_incomplete" else "card")
        if "cancel_at_period_end" in p and boolean(p["cancel_at_period_end"], "cancel_at_period_end"):
            with self._changing(sub, "customer.subscription.updated"):
                self._schedule_cancel(sub, True)
        return self._render(sub)

    def _same_interval(self, prices: list[dict], param: str, sub: dict | None = None) -> None:
        wanted = {(p["recurring"]["interval"], p["recurring"]["interval_count"]) for p in prices}
        if sub is not None:
            current = sub["items"]["data"][0]["price"]["recurring"]
            wanted.add((current["interval"], current["interval_count"]))
        if len(wanted) > 1:
            raise invalid("The simulator only moves between prices of one billing interval (Stripe would reset "
                          "the billing cycle).", param=param)

    def _start_subscription(self, customer: dict, specs: list, meta: dict, description: str | None,
                            trial_end: int | None, payment: str, payment_method: str | None = None) -> dict:
        """A new subscription and its first invoice; `payment` is `card` (pay now with the
        customer's card), `checkout` (a card that works), `delayed` (bank transfer still
        processing) or `none` (left open)."""
        now = self.now()
        sub_id = shapes.new_id("sub_")
        end = trial_end or next_boundary(now, specs[0][0]["recurring"]["interval"],
                                         specs[0][0]["recurring"]["interval_count"], now)
        items = [shapes.subscription_item(shapes.new_id("si_", 14), now, sub_id, price, quantity, now, end, meta_item)
                 for price, quantity, meta_item in specs]
        sub = shapes.subscription(sub_id, now, customer["id"], items, meta, description)
        sub["default_payment_method"] = payment_method
        if trial_end:
            sub.update(status="trialing", trial_start=now, trial_end=trial_end, billing_cycle_anchor=trial_end)
        self._store("subscription", sub)
        invoice = self._new_invoice(sub, "subscription_create", now, now)
        for item in sub["items"]["data"]:
            if trial_end:
                self._add_line(invoice, sub, item, 0, f"Trial period for {self._name(item['price'])}", now, trial_end)
            else:
                self._add_period_line(invoice, sub, item)
        sub["latest_invoice"] = invoice["id"]
        self._emit("customer.subscription.created", sub)
        self._issue(invoice)
        if trial_end or invoice["amount_due"] == 0:
            self._mark_paid(invoice)
        elif payment == "delayed":
            invoice[PRIVATE + "processing"] = True
        elif payment == "checkout":
            self._mark_paid(invoice)
        elif payment == "card":
            self._collect(invoice)
        return sub

    def api_subscriptions_update(self, sub_id: str, p: dict) -> dict:
        allow(p, ("items", "proration_behavior", "proration_date", "payment_behavior", "cancel_at_period_end",
                  "cancel_at", "metadata", "description", "default_payment_method", "cancellation_details",
                  "off_session", "collection_method"))
        sub = self._get("subscription", sub_id)
        if sub["status"] in ("canceled", "incomplete_expired") and set(p) - {"metadata", "cancellation_details"}:
            raise invalid("A canceled subscription can only update its cancellation_details and metadata.")
        now = self.now()
        proration = choice(p.get("proration_behavior", "create_prorations"), "proration_behavior",
                           PRORATION_BEHAVIORS)
        behavior = choice(p.get("payment_behavior", "allow_incomplete"), "payment_behavior", PAYMENT_BEHAVIORS)
        if ("cancel_at_period_end" in p or "cancel_at" in p) and sub["schedule"]:
            raise invalid(MANAGED.format(sub["schedule"]))
        cancel = boolean(p["cancel_at_period_end"], "cancel_at_period_end") if "cancel_at_period_end" in p else None
        cancel_at = p.get("cancel_at")
        if cancel_at not in (None, ""):
            cancel_at = integer(cancel_at, "cancel_at", now)
        details = allow(p.get("cancellation_details", {}), ("comment", "feedback"), "cancellation_details")
        changes, item_metadata = self._item_changes(sub, p["items"]) if "items" in p else ([], [])
        start, end = self._period(sub)
        when = integer(p["proration_date"], "proration_date", start, end) if "proration_date" in p else now
        if behavior == "pending_if_incomplete" and set(p) - {"items", "proration_behavior", "proration_date",
                                                             "payment_behavior", "off_session"}:
            raise invalid("When `payment_behavior=pending_if_incomplete`, you may only update `items`, "
                          "`proration_behavior` and `proration_date`.", param="payment_behavior")
        prorations = (self._prorations(sub, changes, when)
                      if changes and proration != "none" and sub["status"] != "trialing" else [])
        bill_now = bool(changes) and proration == "always_invoice"
        customer = self._get("customer", sub["customer"])
        if bill_now and behavior != "default_incomplete" and customer.get(PRIVATE + "failing"):
            due = sum(i["amount"] for i in prorations) + sum(i["amount"] for i in self._pending_items(sub))
            if self._amount_due(customer, due) > 0:
                if behavior == "error_if_incomplete":
                    raise card_declined()
                if behavior == "pending_if_incomplete":
                    return self._pending_update(sub, changes, prorations)
        invoice = None
        with self._changing(sub, "customer.subscription.updated"):
            if "metadata" in p:
                sub["metadata"] = metadata(p["metadata"], current=sub["metadata"])
            if "description" in p:
                sub["description"] = text(p, "description", max_length=500)
            if "default_payment_method" in p:
                sub["default_payment_method"] = text(p, "default_payment_method")
            for key in ("comment", "feedback"):
                if key in details:
                    sub["cancellation_details"][key] = text(details, key, f"cancellation_details[{key}]")
            if cancel is not None:
                self._schedule_cancel(sub, cancel)
            if cancel_at is not None:
                self._cancel_at(sub, cancel_at or None)
            for item, meta in item_metadata:
                item["metadata"] = meta
            self._apply_item_changes(sub, changes)
            for item in prorations:
                self._store("invoiceitem", item)
            if bill_now and self._pending_items(sub):
                invoice = self._new_invoice(sub, "subscription_update", now, now)
                self._add_pending_lines(invoice, sub)
                sub["latest_invoice"] = invoice["id"]
        if not bill_now:
            for item in prorations:
                self._emit("invoiceitem.created", item)
        if invoice is not None:
            self._issue(invoice)
            if behavior == "default_incomplete" and invoice["amount_due"] > 0:
                paid = False
            else:
                paid = self._collect(invoice)
            if not paid and sub["status"] in ("active", "trialing"):
                with self._changing(sub, "customer.subscription.updated"):
                    sub["status"] = "past_due"
        return self._render(sub)

    def _schedule_cancel(self, sub: dict, cancel: bool) -> None:
        self._cancel_at(sub, self._period(sub)[1] if cancel else None)

    def _cancel_at(self, sub: dict, when: int | None) -> None:
        end = self._period(sub)[1]
        sub["cancel_at"] = when
        sub["cancel_at_period_end"] = when is not None and when == end
        # Stripe: canceled_at is when the cancellation was asked for
        sub["canceled_at"] = self.now() if when is not None else None
        sub["cancellation_details"]["reason"] = "cancellation_requested" if when is not None else None

    def _item_changes(self, sub: dict, param: Any) -> tuple[list[dict], list[tuple[dict, dict]]]:
        """What `items[n]` asks for, checked and not yet applied: the billing changes
        [{item, price, quantity, old_price, old_quantity, metadata}] (item None: added),
        and the metadata of kept items [(item, new metadata)]."""
        by_id = {item["id"]: item for item in sub["items"]["data"]}
        changes, prices, item_metadata = [], [], []
        for n, spec in enumerate(listed(param, "items")):
            spec = allow(spec, ("id", "price", "quantity", "deleted", "metadata", "clear_usage"), f"items[{n}]")
            item, item_id = None, text(spec, "id", f"items[{n}][id]")
            if item_id:
                item = by_id.get(item_id)
                if item is None:
                    raise invalid(f"No such subscription item: '{item_id}'", param=f"items[{n}][id]",
                                  code="resource_missing")
            if spec.get("deleted") and boolean(spec["deleted"], f"items[{n}][deleted]"):
                if item is None:
                    raise invalid(f"Missing required param: items[{n}][id].", param=f"items[{n}][id]",
                                  code="parameter_missing")
                changes.append({"item": item, "price": None, "quantity": 0,
                                "old_price": item["price"], "old_quantity": item["quantity"], "metadata": None})
                continue
            if item is None:
                price = self._price(require(spec, "price", f"items[{n}][price]"), f"items[{n}][price]", True)
            else:
                price = (self._price(spec["price"], f"items[{n}][price]", True) if spec.get("price")
                         else item["price"])
            quantity = integer(spec.get("quantity", item["quantity"] if item else 1), f"items[{n}][quantity]", 1,
                               10_000)
            meta = (metadata(spec["metadata"], f"items[{n}][metadata]", item["metadata"] if item else {})
                    if "metadata" in spec else None)
            prices.append(price)
            if item is None or price["id"] != item["price"]["id"] or quantity != item["quantity"]:
                changes.append({"item": item, "price": price, "quantity": quantity,
                                "old_price": item["price"] if item else None,
                                "old_quantity": item["quantity"] if item else 0, "metadata": meta})
            elif meta is not None:
                item_metadata.append((item, meta))
        if prices:
            self._same_interval(prices, "items", sub)
        remaining = ({i["id"] for i in sub["items"]["data"]}
                     - {c["item"]["id"] for c in changes if c["item"] and c["price"] is None})
        if not remaining and not any(c["item"] is None for c in changes):
            raise invalid("A subscription must have at least one active plan.", param="items")
        final = [c["price"]["id"] for c in changes if c["price"]] + [
            i["price"]["id"] for i in sub["items"]["data"] if i["id"] in remaining
            and not any(c["item"] is i for c in changes)]
        if len(final) != len(set(final)):
            raise invalid("Cannot add multiple subscription items with the same price.", param="items")
        return changes, item_metadata

    def _apply_item_changes(self, sub: dict, changes: list[dict]) -> None:
        start, end = self._period(sub)
        items = sub["items"]["data"]
        for change in changes:
            item = change["item"]
            if change["price"] is None:
                items.remove(item)
            elif item is None:
                items.append(shapes.subscription_item(shapes.new_id("si_", 14), self.now(), sub["id"],
                                                      change["price"], change["quantity"], start, end,
                                                      change.get("metadata")))
            else:
                item.update(price=change["price"], plan=shapes.plan(change["price"]), quantity=change["quantity"])
                if change.get("metadata") is not None:
                    item["metadata"] = change["metadata"]
        sub["items"]["total_count"] = len(items)
        schedule = self.objects["subscription_schedule"].get(sub["schedule"] or "")
        phase = self._current_phase(schedule) if schedule else None
        if changes and phase is not None:
            # the schedule's current phase follows what the subscription now bills
            with self._changing(schedule, "subscription_schedule.updated"):
                phase["items"] = shapes.schedule_phase(0, 0, [(i["price"]["id"], i["quantity"]) for i in items],
                                                       "create_prorations")["items"]

    def _prorations(self, sub: dict, changes: list[dict], when: int) -> list[dict]:
        """The unsaved pending invoice items for `changes` made at `when`."""
        start, end = self._period(sub)
        if when >= end:
            return []
        result = []
        for change in changes:
            item = change["item"]
            item_id = item["id"] if item else None
            if change["old_price"] is not None:
                amount = prorated(-change["old_price"]["unit_amount"] * change["old_quantity"], end - when, end - start)
                result.append(self._proration_item(sub, item_id, change["old_price"], change["old_quantity"], amount,
                                                   "Unused time", when, end, item.get(PRIVATE + "billed")))
            if change["price"] is not None:
                amount = prorated(change["price"]["unit_amount"] * change["quantity"], end - when, end - start)
                result.append(self._proration_item(sub, item_id, change["price"], change["quantity"], amount,
                                                   "Remaining time", when, end, None))
        return result

    def _proration_item(self, sub: dict, item_id: str | None, price: dict, quantity: int, amount: int, what: str,
                        when: int, end: int, credited: dict | None) -> dict:
        count = f"{quantity} × " if quantity != 1 else ""
        description = f"{what} on {count}{self._name(price)} after {shapes.day(when)}"
        return shapes.invoice_item(shapes.new_id("ii_"), self.now(), sub["customer"], sub["id"], item_id or "",
                                   price, amount, quantity, description, when, end, credited)

    def _pending_update(self, sub: dict, changes: list[dict], prorations: list[dict]) -> dict:
        """pending_if_incomplete and the payment failed: bill the change, apply it only once paid."""
        now = self.now()
        invoice = self._new_invoice(sub, "subscription_update", now, now)
        invoice[PRIVATE + "pending_update"] = True
        for item in prorations:
            self._store("invoiceitem", item)
            self._line_from_item(invoice, item)
        self._issue(invoice)
        self._collect(invoice)
        with self._changing(sub, "customer.subscription.updated"):
            preview = [dict(change["item"] or {}, price=change["price"], quantity=change["quantity"])
                       for change in changes if change["price"] is not None]
            sub["pending_update"] = {
                "billing_cycle_anchor": None, "expires_at": now + PENDING_UPDATE_EXPIRES_AFTER,
                "subscription_items": preview, "trial_end": None, "trial_from_plan": None,
                PRIVATE + "changes": [{"item": c["item"]["id"] if c["item"] else None,
                                       "price": c["price"]["id"] if c["price"] else None,
                                       "quantity": c["quantity"]} for c in changes],
                PRIVATE + "invoice": invoice["id"]}
            sub["latest_invoice"] = invoice["id"]
        return self._render(sub)

    def _apply_pending_update(self, sub: dict) -> None:
        pending = sub["pending_update"]
        by_id = {item["id"]: item for item in sub["items"]["data"]}
        changes = []
        for saved in pending[PRIVATE + "changes"]:
            item = by_id.get(saved["item"])
            price = self.objects["price"][saved["price"]] if saved["price"] else None
            changes.append({"item": item, "price": price, "quantity": saved["quantity"],
                            "old_price": item["price"] if item else None,
                            "old_quantity": item["quantity"] if item else 0})
        with self._changing(sub, "customer.subscription.updated"):
            self._apply_item_changes(sub, changes)
            sub["pending_update"] = None
        self._emit("customer.subscription.pending_update_applied", sub)

    def api_subscriptions_cancel(self, sub_id: str, p: dict) -> dict:
        allow(p, ("invoice_now", "prorate", "cancellation_details"))
        sub = self._get("subscription", sub_id)
        if sub["status"] in ("canceled", "incomplete_expired"):
            raise invalid(f"This subscription has already been canceled: {sub_id}.", param="id")
        details = allow(p.get("cancellation_details", {}), ("comment", "feedback"), "cancellation_details")
        for key in ("comment", "feedback"):
            if key in details:
                sub["cancellation_details"][key] = text(details, key, f"cancellation_details[{key}]")
        self._end_subscription(sub, "cancellation_requested", immediately=True)
        return self._render(sub)

    def _end_subscription(self, sub: dict, reason: str, immediately: bool = False,
                          schedule_status: str = "canceled") -> None:
        now = self.now()
        sub.update(status="canceled", ended_at=now, canceled_at=sub["canceled_at"] or now, pending_update=None)
        sub["cancellation_details"]["reason"] = sub["cancellation_details"]["reason"] or reason
        if immediately:
            sub["cancel_at_period_end"] = False
            # Stripe drops pending prorations when a subscription is canceled at once
            for item in self._pending_items(sub):
                del self.objects["invoiceitem"][item["id"]]
        for invoice in self.objects["invoice"].values():
            if self._invoice_subscription(invoice) == sub["id"] and invoice["status"] == "open":
                invoice.update(auto_advance=False, next_payment_attempt=None)
        self._emit("customer.subscription.deleted", sub)
        schedule = self.objects["subscription_schedule"].get(sub["schedule"] or "")
        if schedule and schedule["status"] in ("active", "not_started"):
            key = "canceled_at" if schedule_status == "canceled" else "completed_at"
            schedule.update({"status": schedule_status, key: now, "current_phase": None})
            self._emit(f"subscription_schedule.{schedule_status}", schedule)

    def pause_subscription(self, sub_id: str) -> dict:
        """Stripe's `paused` status (a trial that ended without a payment method)."""
        with self._action():
            sub = self._get("subscription", sub_id)
            if sub["status"] not in RENEWING:
                raise SimulatorError(409, f"a {sub['status']} subscription cannot be paused")
            with self._changing(sub, "customer.subscription.updated"):
                sub["status"] = "paused"
            self._emit("customer.subscription.paused", sub)
            return self._render(sub)

    def api_subscriptions_resume(self, sub_id: str, p: dict) -> dict:
        allow(p, ("billing_cycle_anchor", "proration_behavior", "proration_date"))
        sub = self._get("subscription", sub_id)
        if sub["status"] != "paused":
            raise invalid("Only a paused subscription can be resumed.", param="id")
        now = self.now()
        with self._changing(sub, "customer.subscription.updated"):
            sub["billing_cycle_anchor"] = now
            end = self._next_end(sub, now)
            for item in sub["items"]["data"]:
                item.update(current_period_start=now, current_period_end=end)
            sub["status"] = "active"
            invoice = self._new_invoice(sub, "subscription_cycle", now, now)
            self._add_pending_lines(invoice, sub)
            for item in sub["items"]["data"]:
                self._add_period_line(invoice, sub, item)
            sub["latest_invoice"] = invoice["id"]
        self._emit("customer.subscription.resumed", sub)
        self._issue(invoice)
        if not self._collect(invoice):
            with self._changing(sub, "customer.subscription.updated"):
                sub["status"] = "past_due"
        return self._render(sub)
