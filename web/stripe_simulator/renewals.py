"""What the simulated clock does: renewals at period ends, Smart Retries, expiries.
"""
from __future__ import annotations

from typing import Any

from .core import PRIVATE, changes
from .periods import INCOMPLETE_EXPIRES_AFTER, RENEWING


class Renewals:
    """Mixin of the simulator: every method runs inside `_action()` (the lock is held)."""

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
        return changes(before, self._render(obj))

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
