"""The hosted pages Stripe would show: Checkout, the billing portal, an invoice and its PDF.

They are plain HTML forms (templates/stripe_simulator/), so a browser test clicks the
same buttons a person would; each button calls the simulator method of the same name.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from werkzeug.routing import Rule
from werkzeug.utils import redirect
from werkzeug.wrappers import Request, Response

from . import shapes
from .core import PRIVATE, SimulatorError
from .params import StripeError

TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "stripe_simulator"
_jinja = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
_jinja.filters["money"] = lambda cents, currency="usd": shapes.money(cents or 0, currency)


def _date(ts: int | None) -> str:
    if not ts:
        return "—"
    moment = datetime.fromtimestamp(ts, timezone.utc)
    return f"{moment.day} {moment:%b %Y %H:%M} UTC"


_jinja.filters["date"] = _date


def _page(template: str, status: int = 200, **context) -> Response:
    return Response(_jinja.get_template(template).render(**context), status=status, mimetype="text/html")


def _gone(message: str, status: int) -> Response:
    return _page("message.html", status, title="Checkout", message=message)


def checkout_page(app, request: Request, id: str) -> Response:
    sim = app.sim
    with sim._lock:
        session = sim.objects["checkout.session"].get(id)
        if session is None:
            return _gone("This Checkout Session does not exist.", 404)
        if session["status"] != "open":
            return _gone("This Checkout Session is no longer available.", 409)
        return _checkout(sim, session, 200)


def _checkout(sim, session: dict, status: int) -> Response:
    customer = sim.objects["customer"].get(session["customer"] or "")
    return _page("checkout.html", status, session=sim._render(session), lines=sim.session_lines(session),
                 email=customer["email"] if customer else session["customer_email"],
                 error=session.get(PRIVATE + "error"))


def checkout_pay(app, request: Request, id: str) -> Response:
    sim = app.sim
    outcome = request.form.get("outcome", "paid")
    if outcome not in ("paid", "declined", "delayed"):
        return _gone("Unknown payment choice.", 400)
    try:
        session = sim.complete_checkout(id, outcome)
    except SimulatorError as error:
        return _gone(str(error), error.status)
    if outcome == "declined":
        with sim._lock:
            return _checkout(sim, sim.objects["checkout.session"][id], 402)
    if session["success_url"]:
        return redirect(session["success_url"].replace("{CHECKOUT_SESSION_ID}", id), 303)
    return _page("message.html", 200, title="Checkout", message="Thank you: your payment is complete.")


def portal_page(app, request: Request, id: str, error: str | None = None, status: int = 200) -> Response:
    sim = app.sim
    with sim._lock:
        session = sim.objects["billing_portal.session"].get(id)
        if session is None:
            return _page("message.html", 404, title="Billing", message="This portal session does not exist.")
        customer_id = session["customer"]
        subscriptions = [sim._render(s) for s in sim._newest_first("subscription")
                         if s["customer"] == customer_id and s["status"] not in ("canceled", "incomplete_expired")]
        for sub in subscriptions:
            sub["names"] = [sim._name(i["price"]) for i in sub["items"]["data"]]
        invoices = [sim._render(i) for i in sim._newest_first("invoice")
                    if i["customer"] == customer_id and i["status"] != "draft"]
        customer = sim._render(sim.objects["customer"][customer_id])
    return _page("portal.html", status, session=sim._render(session), customer=customer,
                 subscriptions=subscriptions, invoices=invoices, error=error)


def portal_action(app, request: Request, id: str, sub: str, action: str) -> Response:
    if action not in ("cancel", "renew"):
        return _page("message.html", 404, title="Billing", message="Unknown action.")
    try:
        app.sim.portal_action(id, sub, action)
    except SimulatorError as error:
        return _page("message.html", error.status, title="Billing", message=str(error))
    except StripeError as error:
        return portal_page(app, request, id, error=error.message, status=error.status)
    return redirect(f"/portal/{id}", 303)


def invoice_page(app, request: Request, id: str, error: str | None = None, status: int = 200) -> Response:
    sim = app.sim
    with sim._lock:
        invoice = sim.objects["invoice"].get(id)
        if invoice is None or invoice["status"] == "draft":
            return _page("message.html", 404, title="Invoice", message="This invoice does not exist.")
        return _page("invoice.html", status, invoice=sim._render(invoice), error=error)


def invoice_pay(app, request: Request, id: str) -> Response:
    sim = app.sim
    try:
        with sim._action():
            sim.api_invoices_pay(id, {})
    except StripeError as error:
        return invoice_page(app, request, id, error=error.message, status=error.status)
    return redirect(f"/invoices/{id}", 303)


def invoice_pdf(app, request: Request, id: str) -> Response:
    sim = app.sim
    with sim._lock:
        invoice = sim.objects["invoice"].get(id)
        if invoice is None or invoice["status"] == "draft":
            return _page("message.html", 404, title="Invoice", message="This invoice does not exist.")
        invoice = sim._render(invoice)
    rows = [f"Invoice {invoice['number']}  ({invoice['status']})",
            f"Customer {invoice['customer']}  {invoice['customer_email'] or ''}", ""]
    rows += [f"{line['description']}    {shapes.money(line['amount'])}" for line in invoice["lines"]["data"]]
    rows += ["", f"Total {shapes.money(invoice['total'])}    Amount due {shapes.money(invoice['amount_due'])}"
                 f"    Paid {shapes.money(invoice['amount_paid'])}"]
    return Response(pdf(rows), mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{invoice["number"]}.pdf"'})


def pdf(rows: list[str]) -> bytes:
    """A one-page PDF of text rows (Helvetica, Latin-1), with a correct xref table."""
    def escape(text: str) -> str:
        text = text.encode("latin-1", "replace").decode("latin-1")
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    lines = "".join(f"({escape(row)}) Tj T* " for row in rows)
    stream = f"BT /F1 11 Tf 14 TL 56 780 Td {lines}ET".encode("latin-1")
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >> "
               b"/Contents 5 0 R >>",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def rules() -> list[Rule]:
    """Fresh rules for one Application (a werkzeug Rule binds to one Map only)."""
    return [
        Rule("/checkout/<id>", methods=["GET"], endpoint=checkout_page),
        Rule("/checkout/<id>/pay", methods=["POST"], endpoint=checkout_pay),
        Rule("/portal/<id>", methods=["GET"], endpoint=portal_page),
        Rule("/portal/<id>/subscriptions/<sub>/<action>", methods=["POST"], endpoint=portal_action),
        Rule("/invoices/<id>", methods=["GET"], endpoint=invoice_page),
        Rule("/invoices/<id>/pay", methods=["POST"], endpoint=invoice_pay),
        Rule("/invoices/<id>/pdf", methods=["GET"], endpoint=invoice_pdf),
    ]
