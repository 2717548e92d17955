"""Subscription schedules: phases from a subscription, their updates, release and
cancellation, and the phase changes at their boundaries.
"""
from __future__ import annotations

from typing import Any

from . import shapes
from .params import allow, choice, integer, invalid, listed, metadata, require
from .periods import PRORATION_BEHAVIORS, RENEWING, add_interval


class Schedules:
    """Mixin of the simulator: every method runs inside `_action()` (the lock is held)."""

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
        phases, current = self._parse_phases(schedule, p["phases"]) if "phases" in p else (None, None)
        proration = choice(p.get("proration_behavior", "create_prorations"), "proration_behavior",
                           PRORATION_BEHAVIORS)
        end_behavior = choice(p.get("end_behavior", schedule["end_behavior"]), "end_behavior", ("release", "cancel"))
        meta = metadata(p.get("metadata", {}), current=schedule["metadata"])
        with self._changing(schedule, "subscription_schedule.updated"):
            schedule.update(end_behavior=end_behavior, metadata=meta)
            if phases is not None:
                schedule["phases"] = phases
                schedule["current_phase"] = {"start_date": current["start_date"], "end_date": current["end_date"]}
        if phases is not None:
            wanted = [(i["price"], i["quantity"]) for i in current["items"]]
            if wanted != [(i["price"]["id"], i["quantity"]) for i in sub["items"]["data"]]:
                self._enter_phase(sub, current, proration if "proration_behavior" in p
                                  else current["proration_behavior"])
        return self._render(schedule)

    def _parse_phases(self, schedule: dict, param: Any) -> tuple[list[dict], dict]:
        """The new phases and the current one among them. Phases that already ended may be
        passed back as they are (as `schedule.phases` lists them) and are kept unchanged; the
        first other phase is the current one, whose start cannot move."""
        current = schedule["current_phase"]
        phases, previous_end, current_phase = [], None, None
        given = listed(param, "phases")
        if not given:
            raise invalid("Missing required param: phases.", param="phases", code="parameter_missing")
        ended = {ph["start_date"]: ph for ph in schedule["phases"] if ph["end_date"] <= current["start_date"]}
        first = 0
        for n, spec in enumerate(given):
            if first == n and isinstance(spec, dict) and str(spec.get("start_date", "")).isdigit() and \
                    int(spec["start_date"]) in ended:
                phases.append(ended[int(spec["start_date"])])
                first = n + 1
                continue
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
            if n == first:
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
            if n == first and end <= self.now():
                raise invalid("The current phase must end in the future.", param=f"{name}[end_date]")
            behavior = choice(spec.get("proration_behavior", "create_prorations"), f"{name}[proration_behavior]",
                              PRORATION_BEHAVIORS)
            phases.append(shapes.schedule_phase(start, end, [(price["id"], q) for price, q in items], behavior,
                                                metadata(spec.get("metadata", {}), f"{name}[metadata]")))
            current_phase = current_phase or phases[-1]
            previous_end = end
        if current_phase is None:
            raise invalid("The phases must include the current phase.", param="phases")
        return phases, current_phase

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
