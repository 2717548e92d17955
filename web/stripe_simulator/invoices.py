"""Invoices: lines (pending prorations first), finalization with the customer's credit
balance, payment attempts, and what a paid invoice does to its subscription.
"""
from __future__ import annotations

from . import shapes
from .core import PRIVATE
from .params import allow, boolean, card_declined, choice, invalid
from .periods import RETRIES, RETRY_EVERY


class Invoices:
    """Mixin of the simulator: every method runs inside `_action()` (the lock is held)."""

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
        return self._page("invoiceitem", p, "/v1/invoiceitems",
                          lambda i: (customer is None or i["customer"] == customer)
                          and (wanted is None or (i["invoice"] is None) == wanted))
