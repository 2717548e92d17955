"""Stripe Billing as the simulator plays it: customers, prices, subscriptions, invoices,
prorations, subscription schedules, and what the clock does at each period boundary.

The rules copied from Stripe's documentation:
- prorations are computed to the second: an item changed at `t` in period [s, e) gets
  "Unused time on <old> after <date>" (-old * (e-t)/(e-s)) and "Remaining time on <new>
  after <date>" (+new * (e-t)/(e-s)), rounded half up to the cent;
- `always_invoice` bills them at once (billing_reason `subscription_update`);
  `create_prorations` leaves them pending for the next invoice, where they are listed
  before the new period's line; the period never moves on a price change;
- a failed renewal makes the subscription `past_due` and is retried every 3 days; after
  3 failed retries it becomes `unpaid`; a paid invoice makes it `active` again;
- an `incomplete` subscription whose first invoice is unpaid after 23 hours becomes
  `incomplete_expired` and its invoice is voided.
"""
from __future__ import annotations

import calendar
from datetime import datetime, timezone
from typing import Any

from . import shapes
from .core import PRIVATE, SimulatorError
from .params import (allow, boolean, card_declined, choice, integer, invalid, listed, metadata, require,
                     string, text)

DAY = 86400
RETRY_EVERY = 3 * DAY
RETRIES = 3
INCOMPLETE_EXPIRES_AFTER = 23 * 3600
PENDING_UPDATE_EXPIRES_AFTER = 23 * 3600
RENEWING = ("trialing", "active", "past_due", "unpaid")
PRORATION_BEHAVIORS = ("create_prorations", "none", "always_invoice")
PAYMENT_BEHAVIORS = ("allow_incomplete", "error_if_incomplete", "pending_if_incomplete", "default_incomplete")
MANAGED = ("The subscription is managed by the subscription schedule `{}`, and updating any cancelation "
           "behavior directly is not allowed. Please update the schedule instead.")


def add_interval(anchor: int, interval: str, count: int, k: int) -> int:
    """`anchor` plus k intervals; months keep the anchor's day, clamped to the month's end."""
    if interval == "day":
        return anchor + k * count * DAY
    if interval == "week":
        return anchor + k * count * 7 * DAY
    months = k * count * (12 if interval == "year" else 1)
    moment = datetime.fromtimestamp(anchor, timezone.utc)
    years, month = divmod(moment.month - 1 + months, 12)
    year = moment.year + years
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return int(moment.replace(year=year, month=month + 1, day=day).timestamp())


def next_boundary(anchor: int, interval: str, count: int, after: int) -> int:
    """The first period boundary of a cycle anchored at `anchor` that is later than `after`."""
    k = 1
    while add_interval(anchor, interval, count, k) <= after:
        k += 1
    return add_interval(anchor, interval, count, k)


def prorated(amount: int, remaining: int, total: int) -> int:
    """amount * remaining / total in whole cents, halves rounded away from zero."""
    sign = -1 if amount < 0 else 1
    return sign * ((2 * abs(amount) * remaining + total) // (2 * total))


class Billing:
    """Mixin of the simulator: every method runs inside `_action()` (the lock is held)."""

    # -- customers ------------------------------------------------------------------------

    def api_customers_create(self, p: dict) -> dict:
        allow(p, ("email", "name", "description", "metadata", "phone", "preferred_locales"))
        obj = shapes.customer(shapes.new_id("cus_", 14), self.now(),
                              string(p["email"], "email", 512) if p.get("email") else None,
                              string(p["name"], "name", 256) if p.get("name") else None,
                              string(p["description"], "description") if p.get("description") else None,
                              metadata(p.get("metadata", {})))
        self._store("customer", obj)
        self._emit("customer.created", obj)
        return self._render(obj)

    def _customer(self, customer_id: Any, param: str = "id") -> dict:
        obj = self._get("customer", customer_id, param)
        if obj.get(PRIVATE + "deleted"):
            raise invalid(f"No such customer: '{customer_id}'", param=param, code="resource_missing")
        return obj

    def api_customers_retrieve(self, customer_id: str) -> dict:
        obj = self._get("customer", customer_id)
        if obj.get(PRIVATE + "deleted"):
            return {"id": obj["id"], "object": "customer", "deleted": True}
        return self._render(obj)

    def api_customers_update(self, customer_id: str, p: dict) -> dict:
        allow(p, ("email", "name", "description", "metadata", "phone"))
        obj = self._customer(customer_id)
        with self._changing(obj, "customer.updated"):
            for field, limit in (("email", 512), ("name", 256), ("description", 5000), ("phone", 20)):
                if field in p:
                    obj[field] = string(p[field], field, limit) or None
            if "metadata" in p:
                obj["metadata"] = metadata(p["metadata"], current=obj["metadata"])
        return self._render(obj)

    def api_customers_delete(self, customer_id: str) -> dict:
        obj = self._customer(customer_id)
        for sub in self._newest_first("subscription"):
            if sub["customer"] == obj["id"] and sub["status"] not in ("canceled", "incomplete_expired"):
                self._end_subscription(sub, "cancellation_requested", immediately=True)
        obj[PRIVATE + "deleted"] = True
        self._emit("customer.deleted", obj)
        return {"id": obj["id"], "object": "customer", "deleted": True}

    def api_customers_list(self, p: dict) -> dict:
        email = p.pop("email", None)
        return self._page("customer", p, "/v1/customers",
                          lambda c: not c.get(PRIVATE + "deleted") and (email is None or c["email"] == email))

    def set_payment_failure(self, customer_id: str, failing: bool = True) -> None:
        """From now on the customer's card declines (or works again)."""
        with self._action():
            self._customer(customer_id)[PRIVATE + "failing"] = bool(failing)

    # -- products and prices --------------------------------------------------------------

    def ensure_price(self, price_id: str, unit_amount: int, product_name: str, interval: str | None = "month",
                     currency: str = "usd", interval_count: int = 1) -> dict:
        """A price with our own id (a recurring one unless interval is None), created once."""
        with self._action():
            existing = self.objects["price"].get(price_id)
            if existing:
                recurring = existing["recurring"] or {}
                if (existing["unit_amount"], existing["currency"], recurring.get("interval")) != (
                        unit_amount, currency, interval):
                    raise ValueError(f"price {price_id} exists with other terms (prices cannot change)")
                return self._render(existing)
            product = next((p for p in self.objects["product"].values() if p["name"] == product_name), None)
            if product is None:
                product = self._store("product", shapes.product(shapes.new_id("prod_", 14), self.now(), product_name))
                self._emit("product.created", product)
            price = self._store("price", shapes.price(price_id, self.now(), product["id"], int(unit_amount), currency,
                                                      interval, interval_count))
            if product["default_price"] is None:
                product["default_price"] = price_id
            self._emit("price.created", price)
            return self._render(price)

    def api_products_create(self, p: dict) -> dict:
        allow(p, ("id", "name", "description", "metadata", "active"))
        name = string(require(p, "name"), "name", 250)
        product_id = string(p["id"], "id", 200) if p.get("id") else shapes.new_id("prod_", 14)
        if product_id in self.objects["product"]:
            raise invalid(f"Product already exists.", param="id", code="resource_already_exists")
        product = shapes.product(product_id, self.now(), name)
        product["description"] = text(p, "description")
        product["metadata"] = metadata(p.get("metadata", {}))
        self._store("product", product)
        self._emit("product.created", product)
        return self._render(product)

    def api_prices_create(self, p: dict) -> dict:
        allow(p, ("currency", "unit_amount", "product", "product_data", "recurring", "nickname", "lookup_key",
                  "metadata", "active", "tax_behavior"))
        price = self._new_price(p, "")
        self._emit("price.created", price)
        return self._render(price)

    def _new_price(self, p: dict, prefix: str) -> dict:
        """A price from `price` / `price_data` parameters (`prefix` names them in errors)."""
        currency = string(require(p, "currency", f"{prefix}currency" if prefix else None),
                          f"{prefix}currency", 3).lower()
        if currency != "usd":
            raise invalid(f"The simulator's account only settles usd, not {currency}.", param=f"{prefix}currency")
        unit_amount = integer(require(p, "unit_amount", f"{prefix}unit_amount" if prefix else None),
                              f"{prefix}unit_amount", 0, 99_999_999)
        if p.get("product"):
            product = self._get("product", p["product"], f"{prefix}product")
        elif p.get("product_data"):
            data = allow(p["product_data"], ("name", "description", "metadata"), f"{prefix}product_data")
            product = self._store("product", shapes.product(
                shapes.new_id("prod_", 14), self.now(),
                string(require(data, "name", f"{prefix}product_data[name]"), f"{prefix}product_data[name]", 250)))
            self._emit("product.created", product)
        else:
            raise invalid(f"Missing required param: {prefix}product.", param=f"{prefix}product",
                          code="parameter_missing")
        interval, count = None, 1
        if p.get("recurring"):
            recurring = allow(p["recurring"], ("interval", "interval_count", "usage_type"), f"{prefix}recurring")
            interval = choice(require(recurring, "interval", f"{prefix}recurring[interval]"),
                              f"{prefix}recurring[interval]", ("day", "week", "month", "year"))
            count = integer(recurring.get("interval_count", 1), f"{prefix}recurring[interval_count]", 1, 12)
        price = shapes.price(shapes.new_id("price_"), self.now(), product["id"], unit_amount, currency, interval,
                             count, nickname=text(p, "nickname", f"{prefix}nickname"),
                             lookup_key=text(p, "lookup_key", f"{prefix}lookup_key", 200),
                             metadata=metadata(p.get("metadata", {})))
        return self._store("price", price)

    def api_prices_list(self, p: dict) -> dict:
        product, active = p.pop("product", None), p.pop("active", None)
        wanted = None if active is None else boolean(active, "active")
        return self._page("price", p, "/v1/prices", lambda o: (product is None or o["product"] == product)
                          and (wanted is None or o["active"] == wanted))

    def _price(self, price_id: Any, param: str, recurring: bool | None = None) -> dict:
        price = self._get("price", price_id, param)
        if recurring is True and not price["recurring"]:
            raise invalid(f"The price specified is set to `type=one_time` but this field only accepts prices "
                          f"with `type=recurring`.", param=param)
        return price

    def _name(self, price: dict) -> str:
        product = self.objects["product"].get(price["product"])
        return product["name"] if product else (price["nickname"] or price["id"])

    # -- subscriptions: reading -----------------------------------------------------------

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

    # -- subscriptions: creating ----------------------------------------------------------

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

    # -- subscriptions: updating ----------------------------------------------------------

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
        changes = self._item_changes(sub, p["items"]) if "items" in p else []
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

    def _item_changes(self, sub: dict, param: Any) -> list[dict]:
        """[{item, price, quantity, old_price, old_quantity}] for `items[n]` (None item: added)."""
        by_id = {item["id"]: item for item in sub["items"]["data"]}
        changes, prices = [], []
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
                    raise invalid("Missing required param: items[{n}][id].", param=f"items[{n}][id]",
                                  code="parameter_missing")
                changes.append({"item": item, "price": None, "quantity": 0,
                                "old_price": item["price"], "old_quantity": item["quantity"]})
                continue
            if item is None:
                price = self._price(require(spec, "price", f"items[{n}][price]"), f"items[{n}][price]", True)
            else:
                price = (self._price(spec["price"], f"items[{n}][price]", True) if spec.get("price")
                         else item["price"])
            quantity = integer(spec.get("quantity", item["quantity"] if item else 1), f"items[{n}][quantity]", 1,
                               10_000)
            if item is not None and "metadata" in spec:
                item["metadata"] = metadata(spec["metadata"], f"items[{n}][metadata]", item["metadata"])
            prices.append(price)
            if item is None or price["id"] != item["price"]["id"] or quantity != item["quantity"]:
                changes.append({"item": item, "price": price, "quantity": quantity,
                                "old_price": item["price"] if item else None,
                                "old_quantity": item["quantity"] if item else 0})
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
        return changes

    def _apply_item_changes(self, sub: dict, changes: list[dict]) -> None:
        start, end = self._period(sub)
        items = sub["items"]["data"]
        for change in changes:
            item = change["item"]
            if change["price"] is None:
                items.remove(item)
            elif item is None:
                items.append(shapes.subscription_item(shapes.new_id("si_", 14), self.now(), sub["id"],
                                                      change["price"], change["quantity"], start, end))
            else:
                item.update(price=change["price"], plan=shapes.plan(change["price"]), quantity=change["quantity"])
        sub["items"]["total_count"] = len(items)
        if changes and sub["schedule"]:
            # the schedule's current phase follows what the subscription now bills
            schedule = self.objects["subscription_schedule"][sub["schedule"]]
            phase = self._current_phase(schedule)
            if phase is not None:
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

    # -- subscriptions: ending ------------------------------------------------------------

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

    def _end_subscription(self, sub: dict, reason: str, immediately: bool = False, schedule_status: str = "canceled") -> None:
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

    # -- invoices -------------------------------------------------------------------------

    @staticmethod
    def _invoice_subscription(invoice: dict) -> str | None:
        parent = invoice["parent"] or {}
        return (parent.get("subscription_details") or {}).get("subscription")

    def _pending_items(self, sub: dict) -> list[dict]:
        return sorted((i for i in self.objects["invoiceitem"].values() if i["invoice"] is None
                       and i["parent"]["subscription_details"]["subscription"] == sub["id"]),
                      key=lambda i: i[PRIVATE + "seq"])

    def _new_invoice(self, sub: dict, reason: str, period_start: int, period_end: int) -> dict:
        customer = self._get("customer", sub["customer"])
        invoice = shapes.invoice(shapes.new_id("in_"), self.now(), customer, reason, sub["id"],
                                 dict(sub["metadata"]), period_start, period_end)
        return self._store("invoice", invoice)

    def _add_line(self, invoice: dict, sub: dict | None, item: dict | None, amount: int, description: str,
                  start: int, end: int, price: dict | None = None, proration: bool = False,
                  invoice_item: str | None = None, credited: dict | None = None) -> dict:
        line = shapes.line(shapes.new_id("il_"), invoice["id"], sub["id"] if sub else None,
                           item["id"] if item else None, price or item["price"], amount,
                           item["quantity"] if item else 1, description, start, end, proration, invoice_item,
                           credited)
        invoice["lines"]["data"].append(line)
        invoice["lines"]["total_count"] = len(invoice["lines"]["data"])
        return line

    def _add_period_line(self, invoice: dict, sub: dict, item: dict) -> None:
        price, quantity = item["price"], item["quantity"]
        recurring = price["recurring"]
        every = recurring["interval"] if recurring["interval_count"] == 1 else (
            f"every {recurring['interval_count']} {recurring['interval']}s")
        description = f"{quantity} × {self._name(price)} (at {shapes.money(price['unit_amount'])} / {every})"
        line = self._add_line(invoice, sub, item, price["unit_amount"] * quantity, description,
                              item["current_period_start"], item["current_period_end"])
        # what an "Unused time" proration later credits
        item[PRIVATE + "billed"] = {"invoice": invoice["id"], "invoice_line_items": [line["id"]]}

    def _line_from_item(self, invoice: dict, item: dict) -> None:
        sub = self.objects["subscription"][item["parent"]["subscription_details"]["subscription"]]
        price = self.objects["price"][item["pricing"]["price_details"]["price"]]
        line = shapes.line(shapes.new_id("il_"), invoice["id"], sub["id"],
                           item["parent"]["subscription_details"]["subscription_item"] or None, price,
                           item["amount"], item["quantity"], item["description"], item["period"]["start"],
                           item["period"]["end"], True, item["id"], item["proration_details"]["credited_items"])
        invoice["lines"]["data"].append(line)
        invoice["lines"]["total_count"] = len(invoice["lines"]["data"])
        item["invoice"] = invoice["id"]

    def _add_pending_lines(self, invoice: dict, sub: dict) -> None:
        """Pending prorations go first, as Stripe lists them."""
        for item in self._pending_items(sub):
            self._line_from_item(invoice, item)

    @staticmethod
    def _amount_due(customer: dict, total: int) -> int:
        balance = customer["balance"]
        return max(0, total + balance) if total >= 0 else 0

    def _issue(self, invoice: dict) -> None:
        """invoice.created (draft), then finalize: totals, customer credit, number, `open`."""
        self._emit("invoice.created", invoice)
        customer = self._get("customer", invoice["customer"])
        total = sum(line["amount"] for line in invoice["lines"]["data"])
        balance = customer["balance"]
        due = self._amount_due(customer, total)
        ending = balance + total - due
        invoice.update(subtotal=total, subtotal_excluding_tax=total, total=total, total_excluding_tax=total,
                       amount_due=due, amount_remaining=due, starting_balance=balance, ending_balance=ending,
                       status="open", effective_at=self.now(),
                       number=f"{customer['invoice_prefix']}-{customer['next_invoice_sequence']:04d}")
        invoice["status_transitions"]["finalized_at"] = self.now()
        customer["balance"] = ending
        customer["next_invoice_sequence"] += 1
        self._emit("invoice.finalized", invoice)

    def _collect(self, invoice: dict) -> bool:
        """One payment attempt with the customer's card; a failure schedules the next retry."""
        if invoice["amount_due"] == 0:
            self._mark_paid(invoice)
            return True
        customer = self._get("customer", invoice["customer"])
        invoice["attempted"] = True
        invoice["attempt_count"] += 1
        if customer.get(PRIVATE + "failing"):
            retries = invoice["billing_reason"] != "subscription_create" and not invoice.get(PRIVATE + "pending_update")
            invoice["next_payment_attempt"] = (self.now() + RETRY_EVERY
                                               if retries and invoice["attempt_count"] <= RETRIES else None)
            self._emit("invoice.payment_failed", invoice)
            return False
        self._mark_paid(invoice)
        return True

    def _mark_paid(self, invoice: dict) -> None:
        invoice.update(status="paid", amount_paid=invoice["amount_due"], amount_remaining=0, attempted=True,
                       next_payment_attempt=None, auto_advance=False)
        invoice.pop(PRIVATE + "processing", None)
        invoice["status_transitions"]["paid_at"] = self.now()
        self._emit("invoice.paid", invoice)
        self._emit("invoice.payment_succeeded", invoice)
        sub = self.objects["subscription"].get(self._invoice_subscription(invoice) or "")
        if sub is None:
            return
        if invoice.get(PRIVATE + "pending_update") and sub["pending_update"] and \
                sub["pending_update"][PRIVATE + "invoice"] == invoice["id"]:
            self._apply_pending_update(sub)
        others_open = any(i["status"] == "open" and i["amount_remaining"] > 0 and i["id"] != invoice["id"]
                          and self._invoice_subscription(i) == sub["id"] for i in self.objects["invoice"].values())
        if sub["status"] in ("incomplete", "past_due", "unpaid") and not others_open:
            with self._changing(sub, "customer.subscription.updated"):
                sub["status"] = "active"

    def _void(self, invoice: dict) -> None:
        invoice.update(status="void", amount_remaining=0, next_payment_attempt=None, auto_advance=False)
        invoice["status_transitions"]["voided_at"] = self.now()
        self._emit("invoice.voided", invoice)

    def api_invoices_pay(self, invoice_id: str, p: dict) -> dict:
        allow(p, ("off_session", "payment_method", "paid_out_of_band"))
        invoice = self._get("invoice", invoice_id)
        if invoice["status"] != "open":
            raise invalid(f"Invoice is already {invoice['status']}.", code="invoice_not_open")
        if invoice.get(PRIVATE + "processing"):
            raise invalid("This invoice's payment is still processing.", code="invoice_payment_processing")
        if not self._collect(invoice):
            raise card_declined()
        return self._render(invoice)

    def api_invoices_list(self, p: dict) -> dict:
        customer, subscription, status = p.pop("customer", None), p.pop("subscription", None), p.pop("status", None)
        if status is not None:
            choice(status, "status", ("draft", "open", "paid", "uncollectible", "void"))
        return self._page("invoice", p, "/v1/invoices", lambda i: (customer is None or i["customer"] == customer)
                          and (subscription is None or self._invoice_subscription(i) == subscription)
                          and (status is None or i["status"] == status))

    def api_invoice_lines(self, invoice_id: str, p: dict) -> dict:
        invoice = self._get("invoice", invoice_id)
        allow(p, ("limit", "starting_after", "ending_before"))
        return self._slice(self._render(invoice)["lines"]["data"], p, f"/v1/invoices/{invoice_id}/lines")

    def api_invoiceitems_list(self, p: dict) -> dict:
        customer, pending = p.pop("customer", None), p.pop("pending", None)
        wanted = None if pending is None else boolean(pending, "pending")
        return self._page("invoiceitem", p, "/v1/invoiceitems", lambda i: (customer is None or i["customer"] == customer)
                          and (wanted is None or (i["invoice"] is None) == wanted))

    # -- subscription schedules -----------------------------------------------------------

    @staticmethod
    def _current_phase(schedule: dict) -> dict | None:
        current = schedule["current_phase"]
        if current is None:
            return None
        return next((ph for ph in schedule["phases"] if ph["start_date"] == current["start_date"]), None)

    def api_schedules_create(self, p: dict) -> dict:
        allow(p, ("from_subscription", "customer", "phases", "start_date", "end_behavior", "metadata"))
        if not p.get("from_subscription"):
            raise invalid("The simulator creates subscription schedules `from_subscription` only.",
                          param="from_subscription", code="parameter_missing")
        for name in ("phases", "customer", "start_date"):
            if name in p:
                raise invalid(f"You cannot set `{name}` if `from_subscription` is set.", param=name)
        sub = self._get("subscription", p["from_subscription"], "from_subscription")
        if sub["schedule"]:
            raise invalid(f"You cannot migrate a subscription that is already attached to a schedule: "
                          f"`{sub['schedule']}`.", param="from_subscription")
        if sub["status"] not in RENEWING:
            raise invalid(f"You cannot create a schedule from a {sub['status']} subscription.",
                          param="from_subscription")
        start, end = self._period(sub)
        phase = shapes.schedule_phase(start, end, [(i["price"]["id"], i["quantity"]) for i in sub["items"]["data"]],
                                      "create_prorations")
        schedule = shapes.subscription_schedule(
            shapes.new_id("sub_sched_"), self.now(), sub["customer"], sub["id"], [phase],
            choice(p.get("end_behavior", "release"), "end_behavior", ("release", "cancel")),
            metadata(p.get("metadata", {})))
        self._store("subscription_schedule", schedule)
        self._emit("subscription_schedule.created", schedule)
        with self._changing(sub, "customer.subscription.updated"):
            sub["schedule"] = schedule["id"]
        return self._render(schedule)

    def api_schedules_update(self, schedule_id: str, p: dict) -> dict:
        allow(p, ("phases", "end_behavior", "metadata", "proration_behavior"))
        schedule = self._get("subscription_schedule", schedule_id)
        if schedule["status"] not in ("active", "not_started"):
            raise invalid(f"You cannot update a subscription schedule that is currently in the "
                          f"`{schedule['status']}` status.")
        sub = self.objects["subscription"][schedule["subscription"]]
        phases = self._parse_phases(schedule, p["phases"]) if "phases" in p else None
        proration = choice(p.get("proration_behavior", "create_prorations"), "proration_behavior",
                           PRORATION_BEHAVIORS)
        with self._changing(schedule, "subscription_schedule.updated"):
            if "end_behavior" in p:
                schedule["end_behavior"] = choice(p["end_behavior"], "end_behavior", ("release", "cancel"))
            if "metadata" in p:
                schedule["metadata"] = metadata(p["metadata"], current=schedule["metadata"])
            if phases is not None:
                schedule["phases"] = phases
                schedule["current_phase"] = {"start_date": phases[0]["start_date"], "end_date": phases[0]["end_date"]}
        if phases is not None:
            wanted = [(i["price"], i["quantity"]) for i in phases[0]["items"]]
            if wanted != [(i["price"]["id"], i["quantity"]) for i in sub["items"]["data"]]:
                self._enter_phase(sub, phases[0], proration if "proration_behavior" in p
                                  else phases[0]["proration_behavior"])
        return self._render(schedule)

    def _parse_phases(self, schedule: dict, param: Any) -> list[dict]:
        current = schedule["current_phase"]
        phases, previous_end = [], None
        given = listed(param, "phases")
        if not given:
            raise invalid("Missing required param: phases.", param="phases", code="parameter_missing")
        for n, spec in enumerate(given):
            name = f"phases[{n}]"
            spec = allow(spec, ("items", "start_date", "end_date", "iterations", "proration_behavior", "metadata"),
                         name)
            items = []
            for m, item in enumerate(listed(require(spec, "items", f"{name}[items]"), f"{name}[items]")):
                item = allow(item, ("price", "quantity", "metadata"), f"{name}[items][{m}]")
                price = self._price(require(item, "price", f"{name}[items][{m}][price]"),
                                    f"{name}[items][{m}][price]", recurring=True)
                items.append((price, integer(item.get("quantity", 1), f"{name}[items][{m}][quantity]", 1, 10_000)))
            if not items:
                raise invalid(f"Missing required param: {name}[items].", param=f"{name}[items]",
                              code="parameter_missing")
            if n == 0:
                start = current["start_date"]
                if "start_date" in spec and spec["start_date"] != "now" and \
                        integer(spec["start_date"], f"{name}[start_date]") != start:
                    raise invalid("You can not modify the start date of the current phase.",
                                  param=f"{name}[start_date]")
            else:
                start = previous_end
                if "start_date" in spec and integer(spec["start_date"], f"{name}[start_date]") != start:
                    raise invalid(f"The start_date of {name} must equal the end_date of the phase before it.",
                                  param=f"{name}[start_date]")
            recurring = items[0][0]["recurring"]
            if spec.get("end_date"):
                end = integer(spec["end_date"], f"{name}[end_date]")
            elif spec.get("iterations"):
                end = add_interval(start, recurring["interval"], recurring["interval_count"],
                                   integer(spec["iterations"], f"{name}[iterations]", 1, 100))
            elif n == len(given) - 1:
                end = add_interval(start, recurring["interval"], recurring["interval_count"], 1)
            else:
                raise invalid(f"Missing required param: {name}[end_date].", param=f"{name}[end_date]",
                              code="parameter_missing")
            if end <= start:
                raise invalid(f"The end_date of {name} must be after its start_date.", param=f"{name}[end_date]")
            if n == 0 and end <= self.now():
                raise invalid("The current phase must end in the future.", param=f"{name}[end_date]")
            behavior = choice(spec.get("proration_behavior", "create_prorations"), f"{name}[proration_behavior]",
                              PRORATION_BEHAVIORS)
            phases.append(shapes.schedule_phase(start, end, [(price["id"], q) for price, q in items], behavior,
                                                metadata(spec.get("metadata", {}), f"{name}[metadata]")))
            previous_end = end
        return phases

    def _enter_phase(self, sub: dict, phase: dict, proration: str) -> None:
        """Make the subscription bill `phase`'s items from now on."""
        wanted = {i["price"]: i["quantity"] for i in phase["items"]}
        current = sub["items"]["data"]
        changes = []
        for n, item in enumerate(current):
            price_id = list(wanted)[n] if n < len(wanted) else None
            if price_id is None:
                changes.append({"item": item, "price": None, "quantity": 0, "old_price": item["price"],
                                "old_quantity": item["quantity"]})
            elif price_id != item["price"]["id"] or wanted[price_id] != item["quantity"]:
                changes.append({"item": item, "price": self.objects["price"][price_id], "quantity": wanted[price_id],
                                "old_price": item["price"], "old_quantity": item["quantity"]})
        for price_id in list(wanted)[len(current):]:
            changes.append({"item": None, "price": self.objects["price"][price_id], "quantity": wanted[price_id],
                            "old_price": None, "old_quantity": 0})
        prorations = self._prorations(sub, changes, self.now()) if proration != "none" else []
        invoice = None
        with self._changing(sub, "customer.subscription.updated"):
            self._apply_item_changes(sub, changes)
            for item in prorations:
                self._store("invoiceitem", item)
            if proration == "always_invoice" and self._pending_items(sub):
                invoice = self._new_invoice(sub, "subscription_update", self.now(), self.now())
                self._add_pending_lines(invoice, sub)
                sub["latest_invoice"] = invoice["id"]
        if invoice is not None:
            self._issue(invoice)
            if not self._collect(invoice) and sub["status"] == "active":
                with self._changing(sub, "customer.subscription.updated"):
                    sub["status"] = "past_due"

    def api_schedules_release(self, schedule_id: str, p: dict) -> dict:
        allow(p, ("preserve_cancel_date",))
        schedule = self._get("subscription_schedule", schedule_id)
        if schedule["status"] not in ("active", "not_started"):
            raise invalid(f"You cannot release a subscription schedule that is currently in the "
                          f"`{schedule['status']}` status.")
        sub = self.objects["subscription"][schedule["subscription"]]
        with self._changing(sub, "customer.subscription.updated"):
            self._release(schedule, sub)
        return self._render(schedule)

    def _release(self, schedule: dict, sub: dict) -> None:
        schedule.update(status="released", released_at=self.now(), released_subscription=sub["id"],
                        subscription=None, current_phase=None)
        sub["schedule"] = None
        self._emit("subscription_schedule.released", schedule)

    def api_schedules_cancel(self, schedule_id: str, p: dict) -> dict:
        allow(p, ("invoice_now", "prorate"))
        schedule = self._get("subscription_schedule", schedule_id)
        if schedule["status"] not in ("active", "not_started"):
            raise invalid(f"You cannot cancel a subscription schedule that is currently in the "
                          f"`{schedule['status']}` status.")
        self._end_subscription(self.objects["subscription"][schedule["subscription"]], "cancellation_requested",
                               immediately=True)
        return self._render(schedule)

    # -- the clock ------------------------------------------------------------------------

    def _due_items(self) -> list[tuple[int, int, Any]]:
        """(when, tie-breaker, handler) for every time-driven change still to happen."""
        items = []
        for sub in self.objects["subscription"].values():
            seq = sub[PRIVATE + "seq"]
            if sub["status"] in RENEWING:
                end = self._period(sub)[1]
                items.append((end, seq, lambda sub=sub: self._period_end(sub)))
                if sub["cancel_at"] is not None and sub["cancel_at"] < end:
                    items.append((sub["cancel_at"], seq,
                                  lambda sub=sub: self._end_subscription(sub, "cancellation_requested")))
                schedule = self.objects["subscription_schedule"].get(sub["schedule"] or "")
                if schedule and schedule["current_phase"] and schedule["current_phase"]["end_date"] < end:
                    items.append((schedule["current_phase"]["end_date"], seq,
                                  lambda schedule=schedule, sub=sub: self._phase_end(schedule, sub)))
            elif sub["status"] == "incomplete":
                invoice = self.objects["invoice"].get(sub["latest_invoice"] or "")
                if invoice is None or not invoice.get(PRIVATE + "processing"):
                    items.append((sub["created"] + INCOMPLETE_EXPIRES_AFTER, seq,
                                  lambda sub=sub: self._expire_incomplete(sub)))
            if sub["pending_update"]:
                items.append((sub["pending_update"]["expires_at"], seq,
                              lambda sub=sub: self._expire_pending_update(sub)))
        for invoice in self.objects["invoice"].values():
            if invoice["status"] == "open" and invoice["next_payment_attempt"]:
                items.append((invoice["next_payment_attempt"], invoice[PRIVATE + "seq"],
                              lambda invoice=invoice: self._retry(invoice)))
        for session in self.objects["checkout.session"].values():
            if session["status"] == "open":
                items.append((session["expires_at"], session[PRIVATE + "seq"],
                              lambda session=session: self._expire_session(session)))
        return items

    def _period_end(self, sub: dict) -> None:
        """The period ended: a schedule's phase change, a cancellation, or a renewal invoice."""
        now = self.now()
        before = self._render(sub)
        schedule = self.objects["subscription_schedule"].get(sub["schedule"] or "")
        if schedule and schedule["current_phase"] and schedule["current_phase"]["end_date"] <= now:
            if self._schedule_boundary(schedule, sub):
                return
        if sub["cancel_at"] is not None and sub["cancel_at"] <= now:
            self._end_subscription(sub, "cancellation_requested")
            return
        old_start = self._period(sub)[0]
        if sub["status"] == "trialing":
            sub["status"] = "active"
            sub["billing_cycle_anchor"] = now
        end = self._next_end(sub, now)
        for item in sub["items"]["data"]:
            item.update(current_period_start=now, current_period_end=end)
        invoice = self._new_invoice(sub, "subscription_cycle", old_start, now)
        self._add_pending_lines(invoice, sub)
        for item in sub["items"]["data"]:
            self._add_period_line(invoice, sub, item)
        sub["latest_invoice"] = invoice["id"]
        self._emit("customer.subscription.updated", sub, self._previous(before, sub))
        self._issue(invoice)
        if sub["status"] == "unpaid":
            # Stripe keeps invoicing an unpaid subscription but stops trying to collect
            invoice["auto_advance"] = False
            return
        if not self._collect(invoice) and sub["status"] == "active":
            with self._changing(sub, "customer.subscription.updated"):
                sub["status"] = "past_due"

    def _previous(self, before: dict, obj: dict) -> dict:
        from .core import changes

        return changes(before, self._render(obj))

    def _schedule_boundary(self, schedule: dict, sub: dict) -> bool:
        """The current phase ended with the period; True when that ended the subscription."""
        phases = schedule["phases"]
        index = phases.index(self._current_phase(schedule))
        if index + 1 < len(phases):
            following = phases[index + 1]
            with self._changing(schedule, "subscription_schedule.updated"):
                schedule["current_phase"] = {"start_date": following["start_date"], "end_date": following["end_date"]}
            self._enter_phase_silently(sub, following)
            return False
        if schedule["end_behavior"] == "release":
            self._release(schedule, sub)
            return False
        self._end_subscription(sub, "cancellation_requested", schedule_status="completed")
        return True

    def _enter_phase_silently(self, sub: dict, phase: dict) -> None:
        """At a period boundary the next phase starts without prorations; the renewal's
        `customer.subscription.updated` reports the price change with the new period."""
        wanted = [(self.objects["price"][i["price"]], i["quantity"]) for i in phase["items"]]
        start, end = self._period(sub)
        items = sub["items"]["data"]
        for n, (price, quantity) in enumerate(wanted):
            if n < len(items):
                items[n].update(price=price, plan=shapes.plan(price), quantity=quantity)
            else:
                items.append(shapes.subscription_item(shapes.new_id("si_", 14), self.now(), sub["id"], price,
                                                      quantity, start, end))
        del items[len(wanted):]
        sub["items"]["total_count"] = len(items)

    def _phase_end(self, schedule: dict, sub: dict) -> None:
        """A phase ended inside a period: the next one starts now, prorated as it says."""
        phases = schedule["phases"]
        index = phases.index(self._current_phase(schedule))
        if index + 1 < len(phases):
            following = phases[index + 1]
            with self._changing(schedule, "subscription_schedule.updated"):
                schedule["current_phase"] = {"start_date": following["start_date"], "end_date": following["end_date"]}
            self._enter_phase(sub, following, following["proration_behavior"])
        elif schedule["end_behavior"] == "release":
            with self._changing(sub, "customer.subscription.updated"):
                self._release(schedule, sub)
        else:
            self._end_subscription(sub, "cancellation_requested", immediately=True, schedule_status="completed")

    def _retry(self, invoice: dict) -> None:
        """Smart Retries: another attempt; the last failed one leaves the subscription unpaid."""
        if not self._collect(invoice) and invoice["next_payment_attempt"] is None:
            sub = self.objects["subscription"].get(self._invoice_subscription(invoice) or "")
            if sub is not None and sub["status"] in ("active", "past_due"):
                with self._changing(sub, "customer.subscription.updated"):
                    sub["status"] = "unpaid"

    def _expire_incomplete(self, sub: dict) -> None:
        with self._changing(sub, "customer.subscription.updated"):
            sub.update(status="incomplete_expired", ended_at=self.now())
        invoice = self.objects["invoice"].get(sub["latest_invoice"] or "")
        if invoice is not None and invoice["status"] == "open":
            self._void(invoice)

    def _expire_pending_update(self, sub: dict) -> None:
        invoice = self.objects["invoice"].get(sub["pending_update"][PRIVATE + "invoice"])
        with self._changing(sub, "customer.subscription.updated"):
            sub["pending_update"] = None
        self._emit("customer.subscription.pending_update_expired", sub)
        if invoice is not None and invoice["status"] == "open":
            self._void(invoice)
