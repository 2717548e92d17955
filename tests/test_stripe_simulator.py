"""The Stripe simulator, driven the way the app drives Stripe: through stripe-python's
StripeClient over HTTP, with events checked by stripe.Webhook.construct_event."""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest
import stripe

from web.stripe_simulator import API_VERSION, StripeSimulator

STARTER, PRO = "price_starter_test", "price_pro_test"
SECRET = "whsec_simulator_tests"
DAY = 86400


class Receiver:
    """A webhook endpoint on loopback: records every delivery; answers `statuses` first."""

    def __init__(self, statuses: list[int] | None = None):
        from werkzeug.serving import WSGIRequestHandler, make_server

        class Quiet(WSGIRequestHandler):
            def log_request(self, *args, **kwargs):
                pass

        self.received: list[tuple[bytes, str]] = []
        self.statuses = list(statuses or [])
        self.lock = threading.Lock()
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True, request_handler=Quiet)
        self.url = f"http://127.0.0.1:{self.server.server_port}/webhook"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def app(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        with self.lock:
            self.received.append((body, environ.get("HTTP_STRIPE_SIGNATURE", "")))
            status = self.statuses.pop(0) if self.statuses else 200
        start_response(f"{status} X", [("Content-Type", "text/plain")])
        return [b"ok"]

    def events(self) -> list[stripe.Event]:
        return [stripe.Webhook.construct_event(body, signature, SECRET) for body, signature in self.received]

    def stop(self):
        self.server.shutdown()


@pytest.fixture
def sim():
    simulator = StripeSimulator()
    simulator.start()
    simulator.ensure_price(STARTER, unit_amount=900, product_name="Starter")
    simulator.ensure_price(PRO, unit_amount=2900, product_name="Pro")
    yield simulator
    simulator.stop()


@pytest.fixture
def client(sim):
    return stripe.StripeClient("sk_test_simulator", base_addresses={"api": sim.base_url}, max_network_retries=0)


@pytest.fixture
def receiver(sim):
    endpoint = Receiver()
    sim.add_webhook_endpoint(endpoint.url, SECRET)
    yield endpoint
    endpoint.stop()


def http(url: str, data: dict | None = None, method: str | None = None, headers: dict | None = None):
    """(status, headers, body) of one plain HTTP request; redirects are not followed."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    body = urllib.parse.urlencode(data, doseq=True).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, method=method or ("POST" if data is not None else "GET"),
                                     headers=headers or {})
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def types(sim, since: int = 0) -> list[str]:
    return [event["type"] for event in sim.events[since:]]


def subscribe(sim, client, price=STARTER, metadata=None):
    """A customer who bought `price` through Checkout; (customer id, subscription)."""
    customer = client.v1.customers.create(params={"email": "buyer@example.com"})
    session = client.v1.checkout.sessions.create(params={
        "mode": "subscription", "customer": customer.id, "line_items": [{"price": price, "quantity": 1}],
        "success_url": "http://app.test/ok?session={CHECKOUT_SESSION_ID}", "metadata": metadata or {},
        "subscription_data": {"metadata": metadata or {}}})
    completed = sim.complete_checkout(session.id, "paid")
    return customer.id, client.v1.subscriptions.retrieve(completed["subscription"])


def period(sub) -> tuple[int, int]:
    item = sub["items"]["data"][0]
    return item["current_period_start"], item["current_period_end"]


def prorated(amount: int, remaining: int, total: int) -> int:
    sign = -1 if amount < 0 else 1
    return sign * ((2 * abs(amount) * remaining + total) // (2 * total))


# -- the API's manners -----------------------------------------------------------------------

def test_customers_create_retrieve_update_list(client):
    created = client.v1.customers.create(params={"email": "a@example.com", "metadata": {"user_id": "u1"}})
    assert created.id.startswith("cus_") and created.object == "customer"
    updated = client.v1.customers.update(created.id, params={"metadata": {"plan": "pro", "user_id": ""}})
    assert updated.metadata.to_dict() == {"plan": "pro"}
    assert client.v1.customers.retrieve(created.id).email == "a@example.com"
    client.v1.customers.create(params={"email": "b@example.com"})
    found = client.v1.customers.list(params={"email": "a@example.com"})
    assert [c.id for c in found.data] == [created.id]
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.customers.retrieve("cus_nope")
    assert missing.value.http_status == 404 and missing.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.customers.create(params={"emial": "typo@example.com"})
    assert unknown.value.code == "parameter_unknown" and unknown.value.param == "emial"


def test_lists_page_with_starting_after(client):
    ids = [client.v1.customers.create(params={"name": f"c{n}"}).id for n in range(5)]
    first = client.v1.customers.list(params={"limit": 2})
    assert [c.id for c in first.data] == ids[::-1][:2] and first.has_more
    rest = client.v1.customers.list(params={"limit": 10, "starting_after": first.data[-1].id})
    assert [c.id for c in rest.data] == ids[::-1][2:] and not rest.has_more
    assert first.url == "/v1/customers"


def test_prices_from_ensure_price_and_the_api(sim, client):
    starter = client.v1.prices.retrieve(STARTER)
    assert (starter.unit_amount, starter.currency, starter.recurring.interval, starter.type) == (
        900, "usd", "month", "recurring")
    assert client.v1.products.retrieve(starter.product).name == "Starter"
    assert sim.ensure_price(STARTER, unit_amount=900, product_name="Starter")["id"] == STARTER
    with pytest.raises(ValueError):
        sim.ensure_price(STARTER, unit_amount=1000, product_name="Starter")
    pack = client.v1.prices.create(params={"currency": "usd", "unit_amount": 500,
                                           "product_data": {"name": "10 credits"}})
    assert pack.id.startswith("price_") and pack.type == "one_time" and pack.recurring is None
    assert client.v1.prices.retrieve(pack.id).unit_amount == 500


def test_requests_need_a_test_secret_key(sim):
    anonymous = stripe.StripeClient("", base_addresses={"api": sim.base_url})
    status, _, body = http(f"{sim.base_url}/v1/customers")
    assert status == 401 and "API key" in json.loads(body)["error"]["message"]
    live = stripe.StripeClient("sk_live_realkey1234", base_addresses={"api": sim.base_url}, max_network_retries=0)
    with pytest.raises(stripe.AuthenticationError):
        live.v1.customers.list()
    del anonymous


def test_unknown_routes_answer_stripes_404(sim):
    status, headers, body = http(f"{sim.base_url}/v1/nothing_here", headers={"Authorization": "Bearer sk_test_x"})
    assert status == 404 and headers["Request-Id"].startswith("req_")
    assert json.loads(body)["error"]["type"] == "invalid_request_error"


def test_idempotency_replays_the_stored_answer_and_refuses_other_params(sim, client):
    headers = {"Authorization": "Bearer sk_test_x", "Idempotency-Key": "create-customer-1"}
    first = http(f"{sim.base_url}/v1/customers", {"email": "same@example.com"}, headers=headers)
    again = http(f"{sim.base_url}/v1/customers", {"email": "same@example.com"}, headers=headers)
    assert first[0] == again[0] == 200
    assert json.loads(first[2])["id"] == json.loads(again[2])["id"]
    assert again[1].get("Idempotent-Replayed") == "true" and "Idempotent-Replayed" not in first[1]
    assert len(client.v1.customers.list(params={"email": "same@example.com"}).data) == 1
    with pytest.raises(stripe.IdempotencyError):
        client.v1.customers.create(params={"email": "other@example.com"},
                                   options={"idempotency_key": "create-customer-1"})
    replayed = client.v1.customers.create(params={"email": "same@example.com"},
                                          options={"idempotency_key": "create-customer-1"})
    assert replayed.id == json.loads(first[2])["id"]


@pytest.mark.parametrize("kind, error", [
    ("card_declined", stripe.CardError), ("rate_limit", stripe.RateLimitError), ("api_error", stripe.APIError),
    ("authentication", stripe.AuthenticationError), ("invalid_request", stripe.InvalidRequestError),
    ("connection", stripe.APIConnectionError)])
def test_injected_failures_surface_as_stripes_exception_classes(sim, client, kind, error):
    sim.fail_next(kind)
    with pytest.raises(error) as raised:
        client.v1.customers.create(params={"email": "x@example.com"})
    if kind == "card_declined":
        assert raised.value.http_status == 402 and raised.value.code == "card_declined"
    assert client.v1.customers.list().data == []  # the failed call created nothing
    assert client.v1.customers.create(params={"email": "x@example.com"}).id.startswith("cus_")


def test_expand_schedule_latest_invoice_and_customer(sim, client):
    _, sub = subscribe(sim, client)
    schedule = client.v1.subscription_schedules.create(params={"from_subscription": sub.id})
    expanded = client.v1.subscriptions.retrieve(sub.id, params={"expand": ["schedule", "latest_invoice", "customer"]})
    assert expanded.schedule.id == schedule.id and expanded.schedule.object == "subscription_schedule"
    assert expanded.latest_invoice.object == "invoice" and expanded.latest_invoice.status == "paid"
    assert expanded.customer.object == "customer"
    listed = client.v1.subscriptions.list(params={"expand": ["data.latest_invoice"]})
    assert listed.data[0].latest_invoice.object == "invoice"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.retrieve(sub.id, params={"expand": ["status"]})


# -- checkout --------------------------------------------------------------------------------

def test_subscription_checkout_paid_on_the_hosted_page_emits_stripes_sequence(sim, client, receiver):
    customer = client.v1.customers.create(params={"email": "buyer@example.com"})
    session = client.v1.checkout.sessions.create(params={
        "mode": "subscription", "customer": customer.id, "client_reference_id": "user-1",
        "line_items": [{"price": STARTER, "quantity": 1}], "metadata": {"user_id": "user-1", "tier": "starter"},
        "subscription_data": {"metadata": {"user_id": "user-1"}},
        "success_url": "http://app.test/billing/success?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "http://app.test/billing/canceled"})
    assert session.url == f"{sim.base_url}/checkout/{session.id}" and session.status == "open"
    status, _, page = http(session.url)
    assert status == 200
    for button in (b"Pay</button>", b"Pay with a declined card", b"Pay by bank transfer (delayed)"):
        assert button in page
    start = len(sim.events)
    status, headers, _ = http(f"{session.url}/pay", {"outcome": "paid"})
    assert status == 303
    assert headers["Location"] == f"http://app.test/billing/success?session_id={session.id}"
    assert types(sim, start) == ["customer.subscription.created", "invoice.created", "invoice.finalized",
                                 "invoice.paid", "invoice.payment_succeeded", "customer.subscription.updated",
                                 "checkout.session.completed"]
    created, completed = sim.events[start], sim.events[-1]
    assert created["data"]["object"]["status"] == "incomplete"
    assert sim.events[-2]["data"]["object"]["status"] == "active"
    assert sim.events[-2]["data"]["previous_attributes"]["status"] == "incomplete"
    assert {e["created"] for e in sim.events[start:]} == {created["created"]}  # one action, one second
    session = client.v1.checkout.sessions.retrieve(session.id)
    assert (session.status, session.payment_status, session.url) == ("complete", "paid", None)
    assert completed["data"]["object"]["subscription"] == session.subscription
    sub = client.v1.subscriptions.retrieve(session.subscription)
    assert sub.status == "active" and sub.metadata.to_dict() == {"user_id": "user-1"}
    assert client.v1.checkout.sessions.list(params={"customer": customer.id, "status": "complete"}).data[0].id == \
        session.id
    assert sim.wait_for_deliveries(10)
    assert [e.type for e in receiver.events()].count("checkout.session.completed") == 1


def test_a_checkout_session_is_paid_once(sim, client):
    session = client.v1.checkout.sessions.create(params={
        "mode": "subscription", "customer_email": "once@example.com",
        "line_items": [{"price": STARTER, "quantity": 1}], "success_url": "http://app.test/ok"})
    assert http(f"{session.url}/pay", {"outcome": "paid"})[0] == 303
    events, subscriptions = len(sim.events), client.v1.subscriptions.list(params={"status": "all"}).data
    status, _, page = http(f"{sim.base_url}/checkout/{session.id}/pay", {"outcome": "paid"})
    assert status == 409 and b"no longer available" in page
    assert http(f"{sim.base_url}/checkout/{session.id}")[0] == 409
    assert len(sim.events) == events
    assert client.v1.subscriptions.list(params={"status": "all"}).data == subscriptions
    created = client.v1.customers.list(params={"email": "once@example.com"}).data
    assert len(created) == 1 and created[0].id == subscriptions[0].customer


def test_a_declined_card_leaves_the_session_open_with_an_error(sim, client):
    session = client.v1.checkout.sessions.create(params={
        "mode": "subscription", "customer_email": "d@example.com", "line_items": [{"price": STARTER, "quantity": 1}],
        "success_url": "http://app.test/ok"})
    events = len(sim.events)
    status, _, page = http(f"{session.url}/pay", {"outcome": "declined"})
    assert status == 402 and b"declined" in page and b"Pay</button>" in page
    assert client.v1.checkout.sessions.retrieve(session.id).status == "open"
    assert len(sim.events) == events and client.v1.subscriptions.list(params={"status": "all"}).data == []
    assert http(f"{session.url}/pay", {"outcome": "paid"})[0] == 303


def test_expired_sessions_refuse_payment(sim, client):
    session = client.v1.checkout.sessions.create(params={
        "mode": "subscription", "customer_email": "e@example.com", "line_items": [{"price": STARTER, "quantity": 1}]})
    expired = client.v1.checkout.sessions.expire(session.id)
    assert expired.status == "expired" and sim.events[-1]["type"] == "checkout.session.expired"
    assert http(f"{sim.base_url}/checkout/{session.id}")[0] == 409
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.expire(session.id)
    later = client.v1.checkout.sessions.create(params={
        "mode": "subscription", "customer_email": "e@example.com", "line_items": [{"price": STARTER, "quantity": 1}]})
    sim.advance(DAY + 60)
    assert client.v1.checkout.sessions.retrieve(later.id).status == "expired"


def test_delayed_payment_completes_unpaid_then_succeeds(sim, client):
    customer_id = client.v1.customers.create(params={"email": "bank@example.com"}).id
    session = client.v1.checkout.sessions.create(params={
        "mode": "subscription", "customer": customer_id, "line_items": [{"price": PRO, "quantity": 1}],
        "success_url": "http://app.test/ok"})
    assert http(f"{session.url}/pay", {"outcome": "delayed"})[0] == 303
    completed = sim.events[-1]
    assert completed["type"] == "checkout.session.completed"
    assert completed["data"]["object"]["payment_status"] == "unpaid"
    sub = client.v1.subscriptions.retrieve(completed["data"]["object"]["subscription"])
    assert sub.status == "incomplete"
    sim.advance(2 * DAY)  # a processing transfer does not expire the subscription
    start = len(sim.events)
    sim.settle_delayed_payment(session.id, succeed=True)
    assert types(sim, start) == ["invoice.paid", "invoice.payment_succeeded", "customer.subscription.updated",
                                 "checkout.session.async_payment_succeeded"]
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    assert client.v1.checkout.sessions.retrieve(session.id).payment_status == "paid"


def test_delayed_payment_that_fails_expires_the_subscription(sim, client):
    session = client.v1.checkout.sessions.create(params={
        "mode": "subscription", "customer_email": "bank@example.com", "line_items": [{"price": PRO, "quantity": 1}]})
    sim.complete_checkout(session.id, "delayed")
    start = len(sim.events)
    sim.settle_delayed_payment(session.id, succeed=False)
    assert types(sim, start) == ["invoice.payment_failed", "customer.subscription.updated", "invoice.voided",
                                 "checkout.session.async_payment_failed"]
    done = client.v1.checkout.sessions.retrieve(session.id)
    assert client.v1.subscriptions.retrieve(done.subscription).status == "incomplete_expired"
    assert client.v1.invoices.retrieve(done.invoice).status == "void"
    with pytest.raises(Exception):
        sim.settle_delayed_payment(session.id, succeed=True)


def test_payment_mode_refunds_and_disputes(sim, client):
    pack = sim.ensure_price("price_pack_test", unit_amount=500, product_name="10 credits", interval=None)
    session = client.v1.checkout.sessions.create(params={
        "mode": "payment", "line_items": [{"price": pack["id"], "quantity": 2}], "customer_email": "p@example.com",
        "payment_intent_data": {"metadata": {"pack": "10"}}, "success_url": "http://app.test/ok"})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.create(params={"mode": "payment", "line_items": [{"price": STARTER,
                                                                                      "quantity": 1}]})
    start = len(sim.events)
    done = sim.complete_checkout(session.id)
    assert types(sim, start) == ["charge.succeeded", "payment_intent.succeeded", "checkout.session.completed"]
    assert done["payment_status"] == "paid" and done["amount_total"] == 1000
    intent = client.v1.payment_intents.retrieve(done["payment_intent"])
    charge = client.v1.charges.retrieve(intent.latest_charge)
    assert (intent.status, intent.amount, intent.metadata.to_dict()) == ("succeeded", 1000, {"pack": "10"})
    assert (charge.status, charge.paid, charge.amount) == ("succeeded", True, 1000)
    partial = client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 400})
    assert (partial.status, partial.amount, partial.charge) == ("succeeded", 400, charge.id)
    refunded = [e for e in sim.events if e["type"] == "charge.refunded"][-1]
    assert refunded["data"]["object"]["amount_refunded"] == 400
    assert refunded["data"]["previous_attributes"]["amount_refunded"] == 0
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.refunds.create(params={"charge": charge.id, "amount": 601})
    client.v1.refunds.create(params={"charge": charge.id})
    assert client.v1.charges.retrieve(charge.id).refunded is True
    assert client.v1.refunds.retrieve(partial.id).amount == 400
    status, _, body = http(f"{sim.base_url}/_sim/charges/{charge.id}/dispute", {"reason": "fraudulent"})
    assert status == 200 and json.loads(body)["charge"] == charge.id
    assert sim.events[-1]["type"] == "charge.dispute.created"
    assert client.v1.charges.retrieve(charge.id).disputed is True


# -- the billing portal and hosted invoices ------------------------------------------------------

def test_portal_page_cancels_at_period_end_and_renews(sim, client):
    customer_id, sub = subscribe(sim, client)
    portal = client.v1.billing_portal.sessions.create(params={"customer": customer_id,
                                                              "return_url": "http://app.test/billing"})
    assert portal.url == f"{sim.base_url}/portal/{portal.id}"
    status, _, page = http(portal.url)
    assert status == 200 and b"Cancel at period end" in page and b"http://app.test/billing" in page
    assert b"Starter" in page
    assert http(f"{portal.url}/subscriptions/{sub.id}/cancel", {})[0] == 303
    cancelled = client.v1.subscriptions.retrieve(sub.id)
    assert cancelled.cancel_at_period_end and cancelled.cancel_at == period(cancelled)[1]
    assert b"Renew now" in http(portal.url)[2]
    assert http(f"{portal.url}/subscriptions/{sub.id}/renew", {})[0] == 303
    assert client.v1.subscriptions.retrieve(sub.id).cancel_at_period_end is False


def test_hosted_invoice_page_and_pdf(sim, client):
    _, sub = subscribe(sim, client)
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert invoice.hosted_invoice_url == f"{sim.base_url}/invoices/{invoice.id}"
    status, _, page = http(invoice.hosted_invoice_url)
    assert status == 200 and invoice.number.encode() in page and b"Starter" in page
    status, headers, pdf = http(invoice.invoice_pdf)
    assert status == 200 and headers["Content-Type"] == "application/pdf"
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")


# -- subscriptions ---------------------------------------------------------------------------

def test_api_subscriptions_and_listing_by_status(sim, client):
    customer_id, first = subscribe(sim, client)
    stray = client.v1.subscriptions.create(params={"customer": customer_id, "items": [{"price": PRO}],
                                                   "metadata": {"stray": "yes"}})
    assert stray.status == "active" and stray.metadata.to_dict() == {"stray": "yes"}
    live = client.v1.subscriptions.list(params={"customer": customer_id})
    assert {s.id for s in live.data} == {first.id, stray.id}
    start = len(sim.events)
    canceled = client.v1.subscriptions.cancel(stray.id)
    assert canceled.status == "canceled" and canceled.ended_at == sim.now()
    assert types(sim, start) == ["customer.subscription.deleted"]
    assert [s.id for s in client.v1.subscriptions.list(params={"customer": customer_id}).data] == [first.id]
    every = client.v1.subscriptions.list(params={"customer": customer_id, "status": "all"})
    assert {s.id for s in every.data} == {first.id, stray.id}
    assert [s.id for s in client.v1.subscriptions.list(params={"status": "canceled"}).data] == [stray.id]


def test_upgrade_with_always_invoice_bills_two_proration_lines_now(sim, client):
    _, sub = subscribe(sim, client)
    start, end = period(sub)
    sim.advance(9 * DAY)
    events = len(sim.events)
    upgraded = client.v1.subscriptions.update(sub.id, params={
        "items": [{"id": sub["items"].data[0].id, "price": PRO, "metadata": {"tier": "pro"}}],
        "proration_behavior": "always_invoice", "payment_behavior": "error_if_incomplete"})
    assert upgraded["items"].data[0].price.id == PRO and period(upgraded) == (start, end)
    assert upgraded["items"].data[0].id == sub["items"].data[0].id
    assert upgraded["items"].data[0].metadata.to_dict() == {"tier": "pro"}
    invoice = client.v1.invoices.retrieve(upgraded.latest_invoice)
    assert (invoice.billing_reason, invoice.status) == ("subscription_update", "paid")
    unused, remaining = invoice.lines.data
    changed_at = unused.period.start
    assert unused.description.startswith("Unused time on Starter after ")
    assert remaining.description.startswith("Remaining time on Pro after ")
    assert unused.amount == prorated(-900, end - changed_at, end - start)
    assert remaining.amount == prorated(2900, end - changed_at, end - start)
    assert unused.amount < 0 < remaining.amount
    assert invoice.amount_paid == invoice.total == unused.amount + remaining.amount
    assert unused.pricing.price_details.price == STARTER and remaining.pricing.price_details.price == PRO
    for line in invoice.lines.data:
        assert line.parent.subscription_item_details.proration is True
        assert line.period.end == end
    assert invoice.parent.subscription_details.subscription == sub.id
    assert types(sim, events) == ["customer.subscription.updated", "invoice.created", "invoice.finalized",
                                  "invoice.paid", "invoice.payment_succeeded"]
    previous = sim.events[events]["data"]["previous_attributes"]
    assert previous["items"]["data"][0]["price"]["id"] == STARTER


def test_upgrade_that_declines_with_error_if_incomplete_changes_nothing(sim, client):
    customer_id, sub = subscribe(sim, client)
    sim.set_payment_failure(customer_id, True)
    before, events = client.v1.subscriptions.retrieve(sub.id).to_dict(), len(sim.events)
    invoices = client.v1.invoices.list(params={"customer": customer_id}).data
    with pytest.raises(stripe.CardError) as declined:
        client.v1.subscriptions.update(sub.id, params={
            "items": [{"id": sub["items"].data[0].id, "price": PRO, "metadata": {"tier": "pro"}}],
            "proration_behavior": "always_invoice", "payment_behavior": "error_if_incomplete",
            "metadata": {"tier": "pro"}})
    assert declined.value.http_status == 402 and declined.value.code == "card_declined"
    assert client.v1.subscriptions.retrieve(sub.id).to_dict() == before
    assert len(sim.events) == events
    assert client.v1.invoices.list(params={"customer": customer_id}).data == invoices
    assert client.v1.invoice_items.list(params={"customer": customer_id}).data == []


def test_upgrade_that_declines_with_allow_incomplete_applies_and_goes_past_due(sim, client):
    customer_id, sub = subscribe(sim, client)
    sim.set_payment_failure(customer_id, True)
    events = len(sim.events)
    updated = client.v1.subscriptions.update(sub.id, params={
        "items": [{"id": sub["items"].data[0].id, "price": PRO}], "proration_behavior": "always_invoice",
        "payment_behavior": "allow_incomplete"})
    assert updated.status == "past_due" and updated["items"].data[0].price.id == PRO
    invoice = client.v1.invoices.retrieve(updated.latest_invoice)
    assert invoice.status == "open" and invoice.attempt_count == 1 and invoice.next_payment_attempt
    assert types(sim, events) == ["customer.subscription.updated", "invoice.created", "invoice.finalized",
                                  "invoice.payment_failed", "customer.subscription.updated"]
    assert period(updated) == period(sub)


def test_upgrade_that_declines_with_pending_if_incomplete_waits_for_payment(sim, client):
    customer_id, sub = subscribe(sim, client)
    sim.set_payment_failure(customer_id, True)
    updated = client.v1.subscriptions.update(sub.id, params={
        "items": [{"id": sub["items"].data[0].id, "price": PRO}], "proration_behavior": "always_invoice",
        "payment_behavior": "pending_if_incomplete"})
    assert updated.status == "active" and updated["items"].data[0].price.id == STARTER
    assert updated.pending_update.subscription_items[0].price.id == PRO
    invoice = client.v1.invoices.retrieve(updated.latest_invoice)
    assert invoice.status == "open"
    sim.set_payment_failure(customer_id, False)
    paid = client.v1.invoices.pay(invoice.id)
    assert paid.status == "paid"
    applied = client.v1.subscriptions.retrieve(sub.id)
    assert applied["items"].data[0].price.id == PRO and applied.pending_update is None
    assert "customer.subscription.pending_update_applied" in types(sim)


def test_a_pending_update_that_is_never_paid_expires(sim, client):
    customer_id, sub = subscribe(sim, client)
    sim.set_payment_failure(customer_id, True)
    updated = client.v1.subscriptions.update(sub.id, params={
        "items": [{"id": sub["items"].data[0].id, "price": PRO}], "proration_behavior": "always_invoice",
        "payment_behavior": "pending_if_incomplete"})
    sim.advance(DAY)
    expired = client.v1.subscriptions.retrieve(sub.id)
    assert expired.pending_update is None and expired["items"].data[0].price.id == STARTER
    assert client.v1.invoices.retrieve(updated.latest_invoice).status == "void"
    assert "customer.subscription.pending_update_expired" in types(sim)


def test_create_prorations_are_listed_first_on_the_renewal_invoice(sim, client):
    _, sub = subscribe(sim, client)
    start, end = period(sub)
    sim.advance(5 * DAY)
    events = len(sim.events)
    updated = client.v1.subscriptions.update(sub.id, params={
        "items": [{"id": sub["items"].data[0].id, "price": PRO}], "proration_behavior": "create_prorations"})
    assert updated.latest_invoice == sub.latest_invoice  # nothing billed yet
    assert types(sim, events) == ["customer.subscription.updated", "invoiceitem.created", "invoiceitem.created"]
    pending = client.v1.invoice_items.list(params={"pending": True}).data
    assert len(pending) == 2
    sim.advance(end - sim.now() + 60)
    renewed = client.v1.subscriptions.retrieve(sub.id)
    assert period(renewed)[0] == end
    invoice = client.v1.invoices.retrieve(renewed.latest_invoice)
    assert invoice.billing_reason == "subscription_cycle" and invoice.status == "paid"
    descriptions = [line.description for line in invoice.lines.data]
    assert descriptions[0].startswith("Unused time on Starter")
    assert descriptions[1].startswith("Remaining time on Pro")
    assert descriptions[2] == "1 × Pro (at $29.00 / month)"
    flags = [line.parent.subscription_item_details.proration for line in invoice.lines.data]
    assert flags == [True, True, False]
    assert invoice.lines.data[2].period.start == end and invoice.lines.data[2].amount == 2900
    assert (invoice.period_start, invoice.period_end) == (start, end)
    assert invoice.total == sum(line.amount for line in invoice.lines.data)


def test_a_schedule_downgrade_takes_effect_at_the_period_boundary(sim, client):
    _, sub = subscribe(sim, client, price=PRO)
    start, end = period(sub)
    schedule = client.v1.subscription_schedules.create(params={"from_subscription": sub.id})
    assert schedule.phases[0].start_date == start and schedule.phases[0].end_date == end
    schedule = client.v1.subscription_schedules.update(schedule.id, params={
        "end_behavior": "release",
        "phases": [{"items": [{"price": PRO, "quantity": 1}], "start_date": start, "end_date": end},
                   {"items": [{"price": STARTER, "quantity": 1}], "iterations": 1, "proration_behavior": "none"}]})
    assert [p["items"][0]["price"] for p in schedule.phases] == [PRO, STARTER]
    assert client.v1.subscriptions.retrieve(sub.id).schedule == schedule.id
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    assert "managed by the subscription schedule" in refused.value.user_message
    sim.advance(end - sim.now() - 60)
    assert client.v1.subscriptions.retrieve(sub.id)["items"].data[0].price.id == PRO
    events = len(sim.events)
    sim.advance(120)
    renewed = client.v1.subscriptions.retrieve(sub.id)
    assert renewed["items"].data[0].price.id == STARTER and period(renewed)[0] == end
    invoice = client.v1.invoices.retrieve(renewed.latest_invoice)
    assert [line.amount for line in invoice.lines.data] == [900]
    assert types(sim, events) == ["subscription_schedule.updated", "customer.subscription.updated",
                                  "invoice.created", "invoice.finalized", "invoice.paid",
                                  "invoice.payment_succeeded"]
    assert client.v1.invoice_items.list().data == []
    next_end = period(renewed)[1]
    sim.advance(next_end - sim.now() + 60)
    released = client.v1.subscription_schedules.retrieve(schedule.id)
    assert released.status == "released" and released.released_subscription == sub.id
    after = client.v1.subscriptions.retrieve(sub.id)
    assert after.schedule is None and after.status == "active" and after["items"].data[0].price.id == STARTER
    assert "subscription_schedule.released" in types(sim)


def test_schedule_phases_that_change_inside_a_period_and_end_by_canceling(sim, client):
    _, sub = subscribe(sim, client)
    start, end = period(sub)
    switch = start + 10 * DAY
    schedule = client.v1.subscription_schedules.create(params={"from_subscription": sub.id})
    client.v1.subscription_schedules.update(schedule.id, params={"end_behavior": "cancel", "phases": [
        {"items": [{"price": STARTER}], "start_date": start, "end_date": switch},
        {"items": [{"price": PRO}], "iterations": 1, "proration_behavior": "create_prorations"}]})
    sim.advance(switch - sim.now() + 60)
    moved = client.v1.subscriptions.retrieve(sub.id)
    assert moved["items"].data[0].price.id == PRO and period(moved) == (start, end)
    pending = client.v1.invoice_items.list(params={"pending": True}).data
    assert sorted(i.amount for i in pending) == sorted([prorated(-900, end - switch, end - start),
                                                        prorated(2900, end - switch, end - start)])
    current = client.v1.subscription_schedules.retrieve(schedule.id)
    assert current.current_phase.start_date == switch
    phases = [{"items": [{"price": ph["items"][0]["price"]}], "start_date": ph.start_date, "end_date": ph.end_date}
              for ph in current.phases]
    updated = client.v1.subscription_schedules.update(schedule.id, params={"phases": phases,
                                                                           "metadata": {"note": "kept"}})
    assert [ph.start_date for ph in updated.phases] == [start, switch] and updated.metadata.note == "kept"
    sim.advance(end - sim.now() + 60)
    renewal = client.v1.invoices.retrieve(client.v1.subscriptions.retrieve(sub.id).latest_invoice)
    assert [line.parent.subscription_item_details.proration for line in renewal.lines.data] == [True, True, False]
    last_end = current.phases[1].end_date
    sim.advance(last_end - sim.now() + 60)
    assert client.v1.subscriptions.retrieve(sub.id).status == "canceled"
    assert client.v1.subscription_schedules.retrieve(schedule.id).status == "completed"
    assert "subscription_schedule.completed" in types(sim)


def test_releasing_a_schedule_undoes_the_downgrade(sim, client):
    _, sub = subscribe(sim, client, price=PRO)
    start, end = period(sub)
    schedule = client.v1.subscription_schedules.create(params={"from_subscription": sub.id})
    client.v1.subscription_schedules.update(schedule.id, params={"phases": [
        {"items": [{"price": PRO}], "start_date": start, "end_date": end}, {"items": [{"price": STARTER}]}]})
    released = client.v1.subscription_schedules.release(schedule.id)
    assert released.status == "released"
    assert client.v1.subscriptions.retrieve(sub.id).schedule is None
    client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})  # allowed again
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscription_schedules.release(schedule.id)


def test_cancel_at_period_end_then_deletion(sim, client):
    _, sub = subscribe(sim, client)
    end = period(sub)[1]
    cancelling = client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    assert cancelling.cancel_at_period_end and cancelling.cancel_at == end and cancelling.status == "active"
    update = sim.events[-1]
    assert update["type"] == "customer.subscription.updated"
    assert update["data"]["previous_attributes"]["cancel_at_period_end"] is False
    sim.advance(end - sim.now() + 3600)
    ended = client.v1.subscriptions.retrieve(sub.id)
    assert ended.status == "canceled" and ended.ended_at == end
    deleted = [e for e in sim.events if e["type"] == "customer.subscription.deleted"]
    assert len(deleted) == 1 and deleted[0]["created"] == end
    assert client.v1.invoices.list(params={"subscription": sub.id}).data[0].billing_reason == "subscription_create"


def test_failed_renewal_goes_past_due_and_recovers_at_the_next_retry(sim, client):
    customer_id, sub = subscribe(sim, client)
    end = period(sub)[1]
    sim.set_payment_failure(customer_id, True)
    sim.advance(end - sim.now() + 60)
    renewal = client.v1.invoices.list(params={"subscription": sub.id}).data[0]
    assert renewal.billing_reason == "subscription_cycle" and renewal.status == "open"
    assert renewal.next_payment_attempt == end + 3 * DAY
    assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"
    failed = [e for e in sim.events if e["type"] == "invoice.payment_failed"]
    assert failed[-1]["data"]["object"]["parent"]["subscription_details"]["subscription"] == sub.id
    sim.advance(3 * DAY)
    assert client.v1.invoices.retrieve(renewal.id).attempt_count == 2  # the first retry failed too
    sim.set_payment_failure(customer_id, False)
    events = len(sim.events)
    sim.advance(3 * DAY)
    assert client.v1.invoices.retrieve(renewal.id).status == "paid"
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    assert types(sim, events) == ["invoice.paid", "invoice.payment_succeeded", "customer.subscription.updated"]


def test_three_failed_retries_leave_the_subscription_unpaid(sim, client):
    customer_id, sub = subscribe(sim, client)
    sim.set_payment_failure(customer_id, True)
    sim.advance(period(sub)[1] - sim.now() + 60)
    sim.advance(3 * DAY)
    sim.advance(3 * DAY)
    assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"
    sim.advance(3 * DAY)
    renewal = client.v1.invoices.list(params={"subscription": sub.id, "status": "open"}).data[0]
    assert renewal.attempt_count == 4 and renewal.next_payment_attempt is None
    assert client.v1.subscriptions.retrieve(sub.id).status == "unpaid"


def test_paused_subscriptions_do_not_renew(sim, client):
    _, sub = subscribe(sim, client)
    status, _, _ = http(f"{sim.base_url}/_sim/subscriptions/{sub.id}/pause", {})
    assert status == 200
    assert client.v1.subscriptions.retrieve(sub.id).status == "paused"
    assert "customer.subscription.paused" in types(sim)
    invoices = len(client.v1.invoices.list().data)
    sim.advance(40 * DAY)
    assert len(client.v1.invoices.list().data) == invoices
    resumed = client.v1.subscriptions.resume(sub.id)
    assert resumed.status == "active" and period(resumed)[0] == sim.now()


def test_an_unpaid_first_invoice_expires_the_subscription_after_23_hours(sim, client):
    customer = client.v1.customers.create(params={"email": "late@example.com"})
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": STARTER}],
                                                 "payment_behavior": "default_incomplete"})
    assert sub.status == "incomplete"
    sim.advance(23 * 3600 + 1)
    assert client.v1.subscriptions.retrieve(sub.id).status == "incomplete_expired"
    assert client.v1.invoices.retrieve(sub.latest_invoice).status == "void"


def test_trials_bill_nothing_until_they_end(sim, client):
    session = client.v1.checkout.sessions.create(params={
        "mode": "subscription", "customer_email": "t@example.com", "line_items": [{"price": STARTER, "quantity": 1}],
        "subscription_data": {"trial_period_days": 7}})
    done = sim.complete_checkout(session.id)
    assert done["payment_status"] == "no_payment_required"
    sub = client.v1.subscriptions.retrieve(done["subscription"])
    assert sub.status == "trialing" and period(sub)[1] == sub.trial_end
    sim.advance(7 * DAY + 60)
    after = client.v1.subscriptions.retrieve(sub.id)
    assert after.status == "active"
    assert client.v1.invoices.retrieve(after.latest_invoice).amount_paid == 900


# -- events and webhooks ---------------------------------------------------------------------

OLD_SUBSCRIPTION_FIELDS = ("current_period_start", "current_period_end", "plan")
OLD_INVOICE_FIELDS = ("subscription", "subscription_details", "charge", "payment_intent", "paid")
OLD_LINE_FIELDS = ("price", "plan", "proration", "type")


def test_delivered_events_verify_and_have_the_current_shapes(sim, client, receiver):
    customer_id, sub = subscribe(sim, client, metadata={"user_id": "u-7"})
    client.v1.subscriptions.update(sub.id, params={"items": [{"id": sub["items"].data[0].id, "price": PRO}],
                                                   "proration_behavior": "always_invoice"})
    sim.advance(period(sub)[1] - sim.now() + 60)
    assert sim.wait_for_deliveries(10)
    events = receiver.events()
    assert sorted(e.id for e in events) == sorted(e["id"] for e in sim.events if e["type"] not in (
        "product.created", "price.created"))
    assert all(e.api_version == API_VERSION == "2026-10-28.endive" for e in events)
    checked = set()
    for event in events:
        obj = event.data.object.to_dict()
        if obj["object"] == "subscription":
            assert not set(OLD_SUBSCRIPTION_FIELDS) & obj.keys(), event.type
            assert {"current_period_start", "current_period_end"} <= obj["items"]["data"][0].keys()
            checked.add("subscription")
        if obj["object"] == "invoice":
            assert not set(OLD_INVOICE_FIELDS) & obj.keys(), event.type
            assert obj["parent"]["subscription_details"]["subscription"] == sub.id
            assert obj["parent"]["subscription_details"]["metadata"] == {"user_id": "u-7"}
            for line in obj["lines"]["data"]:
                assert not set(OLD_LINE_FIELDS) & line.keys()
                assert line["pricing"]["price_details"]["price"] in (STARTER, PRO)
                assert isinstance(line["parent"]["subscription_item_details"]["proration"], bool)
            checked.add("invoice")
    assert checked == {"subscription", "invoice"}
    updated = next(e for e in events if e.type == "customer.subscription.updated")
    assert "previous_attributes" in updated.data


def test_every_object_has_the_fields_stripe_python_16_declares(sim, client):
    """No field the current API lacks (so none of the removed ones), every required one
    present, every event type one that stripe-python knows."""
    import typing

    pack = sim.ensure_price("price_pack_test", unit_amount=500, product_name="Pack", interval=None)
    customer_id, sub = subscribe(sim, client)
    schedule = client.v1.subscription_schedules.create(params={"from_subscription": sub.id})
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    client.v1.subscription_schedules.release(schedule.id)
    client.v1.subscriptions.update(sub.id, params={"items": [{"id": sub["items"].data[0].id, "price": PRO}]})
    session = client.v1.checkout.sessions.create(params={"mode": "payment",
                                                         "line_items": [{"price": pack["id"], "quantity": 1}]})
    paid = sim.complete_checkout(session.id)
    intent = client.v1.payment_intents.retrieve(paid["payment_intent"])
    refund = client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 100})
    objects = [
        (client.v1.customers.retrieve(customer_id), stripe.Customer),
        (client.v1.subscriptions.retrieve(sub.id), stripe.Subscription),
        (sub["items"].data[0], stripe.SubscriptionItem),
        (client.v1.subscription_schedules.retrieve(schedule.id), stripe.SubscriptionSchedule),
        (invoice, stripe.Invoice), (invoice.lines.data[0], stripe.InvoiceLineItem),
        (client.v1.invoice_items.list().data[0], stripe.InvoiceItem),
        (client.v1.checkout.sessions.retrieve(session.id), stripe.checkout.Session),
        (intent, stripe.PaymentIntent), (client.v1.charges.retrieve(intent.latest_charge), stripe.Charge),
        (refund, stripe.Refund), (sim.dispute_charge(intent.latest_charge), stripe.Dispute),
        (client.v1.billing_portal.sessions.create(params={"customer": customer_id}), stripe.billing_portal.Session),
        (client.v1.prices.retrieve(STARTER), stripe.Price),
        (client.v1.products.retrieve(pack["product"]), stripe.Product),
        (client.v1.events.retrieve(sim.events[-1]["id"]), stripe.Event)]
    for obj, cls in objects:
        fields = obj if isinstance(obj, dict) and not hasattr(obj, "to_dict") else obj.to_dict()
        declared = {name: kind for name, kind in cls.__annotations__.items() if name != "OBJECT_NAME"}
        required = {name for name, kind in declared.items() if type(None) not in typing.get_args(kind)}
        assert set(fields) <= set(declared), (cls.__name__, set(fields) - set(declared))
        assert required <= set(fields), (cls.__name__, required - set(fields))
    known = set(typing.get_args(stripe.Event.__annotations__["type"]))
    assert {event["type"] for event in sim.events} <= known


def test_deliveries_are_retried_until_the_endpoint_answers_2xx(sim, client):
    flaky = Receiver(statuses=[500, 503])
    sim.add_webhook_endpoint(flaky.url, SECRET)
    try:
        client.v1.customers.create(params={"email": "r@example.com"})
        assert sim.wait_for_deliveries(10)
        attempts = [d for d in sim.deliveries if d["url"] == flaky.url]
        assert [d["status"] for d in attempts] == [500, 503, 200]
        assert [d["attempt"] for d in attempts] == [1, 2, 3]
        assert len({body for body, _ in flaky.received}) == 1
    finally:
        flaky.stop()


def test_without_auto_delivery_events_are_only_recorded(sim, client):
    quiet = Receiver()
    sim.add_webhook_endpoint(quiet.url, SECRET)
    sim.auto_deliver = False
    try:
        client.v1.customers.create(params={"email": "q@example.com"})
        assert sim.wait_for_deliveries(5) and quiet.received == []
        assert sim.deliver(sim.events[-1]) == [200]
        [event] = quiet.events()
        assert event.type == "customer.created"
    finally:
        quiet.stop()


def test_events_list_and_retrieve(sim, client):
    subscribe(sim, client)
    invoices = client.v1.events.list(params={"type": "invoice.paid"})
    assert [e.type for e in invoices.data] == ["invoice.paid"]
    newest = client.v1.events.list(params={"limit": 1}).data[0]
    assert newest.id == sim.events[-1]["id"]
    assert client.v1.events.retrieve(newest.id).type == "checkout.session.completed"


# -- hooks over HTTP, persistence ------------------------------------------------------------

def test_sim_hooks_over_http(sim, client):
    customer_id, sub = subscribe(sim, client)
    before = sim.now()
    status, _, body = http(f"{sim.base_url}/_sim/advance", {"seconds": str(DAY)})
    assert status == 200 and json.loads(body)["now"] >= before + DAY
    assert http(f"{sim.base_url}/_sim/fail_next", {"kind": "rate_limit"})[0] == 200
    with pytest.raises(stripe.RateLimitError):
        client.v1.customers.list()
    assert http(f"{sim.base_url}/_sim/fail_next", {"kind": "explode"})[0] == 400
    assert http(f"{sim.base_url}/_sim/customers/{customer_id}/payment_failure", {"failing": "true"})[0] == 200
    with pytest.raises(stripe.CardError):
        client.v1.subscriptions.update(sub.id, params={"items": [{"id": sub["items"].data[0].id, "price": PRO}],
                                                       "proration_behavior": "always_invoice",
                                                       "payment_behavior": "error_if_incomplete"})
    assert http(f"{sim.base_url}/_sim/customers/cus_missing/payment_failure", {"failing": "true"})[0] == 404
    status, _, body = http(f"{sim.base_url}/_sim/webhook_endpoints", {"url": "http://127.0.0.1:9/hook"})
    assert status == 200 and json.loads(body)["secret"].startswith("whsec_")
    state = json.loads(http(f"{sim.base_url}/_sim/state")[2])
    assert [s["id"] for s in state["objects"]["subscription"]] == [sub.id]
    assert state["events"][-1]["id"] == sim.events[-1]["id"]
    session = client.v1.checkout.sessions.create(params={
        "mode": "subscription", "customer_email": "h@example.com", "line_items": [{"price": STARTER, "quantity": 1}]})
    status, _, body = http(f"{sim.base_url}/_sim/checkout/{session.id}/complete", {"outcome": "delayed"})
    assert status == 200 and json.loads(body)["payment_status"] == "unpaid"
    assert http(f"{sim.base_url}/_sim/checkout/{session.id}/complete", {"outcome": "paid"})[0] == 409
    status, _, body = http(f"{sim.base_url}/_sim/checkout/{session.id}/settle", {"succeed": "true"})
    assert status == 200 and json.loads(body)["payment_status"] == "paid"


def test_state_survives_a_restart_with_a_state_file(tmp_path):
    path = tmp_path / "stripe.json"
    first = StripeSimulator(state_file=path)
    first.start()
    first.ensure_price(STARTER, unit_amount=900, product_name="Starter")
    api = stripe.StripeClient("sk_test_x", base_addresses={"api": first.base_url}, max_network_retries=0)
    customer_id, sub = subscribe(first, api)
    first.advance(10 * DAY)
    clock, events = first.now(), [e["id"] for e in first.events]
    first.stop()

    second = StripeSimulator(state_file=path)
    second.start()
    try:
        api = stripe.StripeClient("sk_test_x", base_addresses={"api": second.base_url}, max_network_retries=0)
        again = api.v1.subscriptions.retrieve(sub.id)
        assert again.status == "active" and again.customer == customer_id and period(again) == period(sub)
        assert [e["id"] for e in second.events] == events
        assert clock <= second.now() <= clock + 5
        assert api.v1.events.retrieve(events[-1]).type == "checkout.session.completed"
        second.advance(period(sub)[1] - second.now() + 60)
        assert api.v1.invoices.list(params={"subscription": sub.id}).data[0].billing_reason == "subscription_cycle"
    finally:
        second.stop()


def test_the_remaining_routes(sim, client):
    customer_id, sub = subscribe(sim, client, price=PRO)
    lines = client.v1.invoices.line_items.list(sub.latest_invoice)
    assert [line.description for line in lines.data] == ["1 × Pro (at $29.00 / month)"]
    session = client.v1.checkout.sessions.create(params={
        "mode": "subscription", "customer": customer_id, "line_items": [{"price": STARTER, "quantity": 2}]})
    items = client.v1.checkout.sessions.line_items.list(session.id)
    assert [(i.price.id, i.quantity, i.amount_total) for i in items.data] == [(STARTER, 2, 1800)]
    expanded = client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["line_items"]})
    assert expanded.line_items.data[0].price.id == STARTER
    schedule = client.v1.subscription_schedules.create(params={"from_subscription": sub.id})
    events = len(sim.events)
    canceled = client.v1.subscription_schedules.cancel(schedule.id)
    assert canceled.status == "canceled" and client.v1.subscriptions.retrieve(sub.id).status == "canceled"
    assert types(sim, events) == ["customer.subscription.deleted", "subscription_schedule.canceled"]
    endpoint = client.v1.webhook_endpoints.create(params={"url": "http://127.0.0.1:9/hook", "enabled_events": ["*"]})
    assert endpoint.secret.startswith("whsec_")
    assert [e.id for e in client.v1.webhook_endpoints.list().data if e.url == endpoint.url] == [endpoint.id]
    assert client.v1.webhook_endpoints.delete(endpoint.id).deleted is True
    second = client.v1.subscriptions.create(params={"customer": customer_id, "items": [{"price": STARTER}]})
    assert client.v1.customers.delete(customer_id).deleted is True
    assert client.v1.subscriptions.retrieve(second.id).status == "canceled"
    assert client.v1.customers.retrieve(customer_id).to_dict() == {"id": customer_id, "object": "customer",
                                                                    "deleted": True}


def test_idempotency_keys_are_forgotten_after_24_hours(sim, client, monkeypatch):
    import web.stripe_simulator.core as core

    first = client.v1.customers.create(params={"email": "k@example.com"}, options={"idempotency_key": "old-key"})
    real = core.time.time
    monkeypatch.setattr(core.time, "time", lambda: real() + 24 * 3600 + 5)
    client.v1.customers.create(params={"email": "other@example.com"})  # storing an answer prunes expired keys
    again = client.v1.customers.create(params={"email": "k@example.com"}, options={"idempotency_key": "old-key"})
    assert again.id != first.id


def test_the_simulator_runs_as_its_own_process(tmp_path):
    import signal
    import subprocess
    import sys

    receiver = Receiver()
    process = subprocess.Popen(
        [sys.executable, "-m", "web.stripe_simulator", "--port", "0", "--state-file", str(tmp_path / "s.json"),
         "--price", f"{STARTER}:900:Starter", "--webhook", f"{receiver.url}={SECRET}"],
        stdout=subprocess.PIPE, text=True)
    try:
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        api = stripe.StripeClient("sk_test_x", base_addresses={"api": base_url}, max_network_retries=0)
        assert api.v1.prices.retrieve(STARTER).unit_amount == 900
        customer = api.v1.customers.create(params={"email": "cli@example.com"})
        assert http(f"{base_url}/_sim/wait_for_deliveries", {"timeout": "10"})[0] == 200
        assert [e.data.object.id for e in receiver.events()] == [customer.id]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        receiver.stop()
    assert json.loads((tmp_path / "s.json").read_text())["objects"]["customer"][customer.id]["email"] == \
        "cli@example.com"
    refused = subprocess.run([sys.executable, "-m", "web.stripe_simulator", "--host", "0.0.0.0"],
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2 and "loopback" in refused.stderr


# -- every bad input is a clear 4xx -----------------------------------------------------------

GARBAGE = [
    {}, {"unknown": "1"}, {"items": "abc"}, {"items[0]": "abc"}, {"items[0][id][x]": "1"},
    {"items[0][id]": "si_nope", "items[0][price]": PRO}, {"items[0][price]": "price_nope"},
    {"items[0][deleted]": "true"}, {"items[0][quantity]": "-3", "items[0][price]": PRO},
    {"metadata": "abc"}, {"metadata[a][b]": "c"}, {"metadata[k]": "v" * 501}, {"limit": "abc"}, {"limit": "0"},
    {"limit": "1000"}, {"starting_after": "cus_nope"}, {"ending_before": "sub_nope"}, {"expand[0]": "nope"},
    {"expand": "abc"}, {"expand[0][x]": "1"}, {"customer[a]": "b"}, {"customer": "cus_nope"},
    {"line_items[0][price][x]": "1"}, {"line_items[0][price]": STARTER, "line_items[0][quantity]": "abc"},
    {"mode": "setup"}, {"mode": "subscription", "line_items": ""}, {"phases[0][items]": "x"},
    {"phases[0][items][0][price]": PRO, "phases[0][end_date]": "1"}, {"cancel_at_period_end": "maybe"},
    {"proration_date": "abc"}, {"proration_behavior": "sometimes"}, {"payment_behavior[x]": "1"},
    {"amount": "-5"}, {"amount": "99999999999999999999"}, {"status": "weird"}, {"type[a]": "1"},
    {"email[x]": "1"}, {"description[x]": "1"}, {"trial_end": "1"}, {"trial_period_days": "abc"},
    {"from_subscription": "sub_nope"}, {"from_subscription[x]": "1"}, {"end_behavior": "explode"},
    {"charge": "ch_nope"}, {"payment_intent[x]": "y"}, {"url": "ftp://x"}, {"enabled_events": "x"},
    {"a[": "1"}, {"]": "1"}, {"items[0][price]": PRO, "items[0]": "x"}, {"return_url[x]": "1"},
    {"cancellation_details": "x"}, {"cancellation_details[comment][x]": "1"}, {"types[0][x]": "1"},
    {"subscription_data[trial_period_days]": "0"}, {"expires_at": "1"}, {"recurring[interval]": "fortnight"},
]


def test_no_input_makes_the_api_answer_500(sim, client):
    from werkzeug.test import Client

    from web.stripe_simulator.server import API, Application

    customer_id, sub = subscribe(sim, client)
    schedule = client.v1.subscription_schedules.create(params={"from_subscription": sub.id})
    pack = sim.ensure_price("price_pack_test", unit_amount=500, product_name="Pack", interval=None)
    session = client.v1.checkout.sessions.create(params={
        "mode": "payment", "line_items": [{"price": pack["id"], "quantity": 1}]})
    done = sim.complete_checkout(session.id)
    charge = client.v1.payment_intents.retrieve(done["payment_intent"]).latest_charge
    ids = {"customers": customer_id, "subscriptions": sub.id, "subscription_schedules": schedule.id,
           "invoices": sub.latest_invoice, "checkout": session.id, "prices": STARTER, "charges": charge,
           "payment_intents": done["payment_intent"], "events": sim.events[-1]["id"]}
    headers = {"Authorization": "Bearer sk_test_x"}
    statuses = set()

    def destructive(route):  # routes that end what the others need go last, deleting the customer at the very end
        method, rule, _ = route
        return (rule == "/v1/customers/<id>" and method == "DELETE",
                method == "DELETE" or rule.endswith(("/cancel", "/release", "/expire", "/pay")))

    # the WSGI application in-process: thousands of requests without a socket each
    wsgi = Client(Application(sim))
    for method, rule, _ in sorted(API, key=destructive):
        resource = rule.split("/")[2]
        path = rule.replace("<id>", ids.get(resource, "xx_nope"))
        for params in GARBAGE:
            if method == "POST":
                answer = wsgi.post(path, data=params, headers=headers)
            else:
                answer = wsgi.open(path, method=method, query_string=params, headers=headers)
            status, body = answer.status_code, answer.get_data()
            assert status < 500, (method, path, params, body)
            statuses.add(status)
            if status >= 400:
                error = json.loads(body)["error"]
                assert error["type"] in ("invalid_request_error", "card_error", "idempotency_error")
                assert error["message"]
    assert {200, 400, 404} <= statuses


NAMES = ["customer", "customer_email", "email", "name", "description", "metadata", "items", "id", "price",
         "quantity", "deleted", "proration_behavior", "proration_date", "payment_behavior", "cancel_at_period_end",
         "cancel_at", "mode", "line_items", "price_data", "currency", "unit_amount", "product", "product_data",
         "recurring", "interval", "interval_count", "subscription_data", "trial_period_days", "trial_end",
         "payment_intent_data", "success_url", "cancel_url", "client_reference_id", "expires_at",
         "from_subscription", "phases", "start_date", "end_date", "iterations", "end_behavior", "return_url",
         "amount", "charge", "payment_intent", "reason", "limit", "starting_after", "ending_before", "status",
         "subscription", "type", "types", "expand", "url", "enabled_events", "cancellation_details", "comment",
         "customer_creation", "pending", "active", "default_payment_method", "0", "1"]


def _flatten(value, prefix: str) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [pair for key, inner in value.items() for pair in _flatten(inner, f"{prefix}[{key}]")]
    return [(prefix, value)]


def test_generated_parameters_never_make_the_api_answer_500():
    """Every POST route with parameters built from Stripe's own names, nested and typed at random."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from web.stripe_simulator.server import API

    sim = StripeSimulator()
    sim.start()
    try:
        sim.ensure_price(STARTER, unit_amount=900, product_name="Starter")
        sim.ensure_price(PRO, unit_amount=2900, product_name="Pro")
        api = stripe.StripeClient("sk_test_x", base_addresses={"api": sim.base_url}, max_network_retries=0)
        customer_id, sub = subscribe(sim, api)
        scalars = st.sampled_from(["", "0", "-1", "1", "2", "abc", "true", "false", "now", "usd", "month",
                                   "subscription", "payment", "always_invoice", "pending_if_incomplete",
                                   "http://x.test/", STARTER, PRO, "price_nope", customer_id, sub.id,
                                   sub["items"].data[0].id, sub.latest_invoice, str(10 ** 20),
                                   str(sim.now() + 40 * DAY)])
        values = st.recursive(scalars, lambda inner: st.dictionaries(st.sampled_from(NAMES), inner, max_size=3),
                              max_leaves=8)
        routes = [(m, r.replace("<id>", {"customers": customer_id, "subscriptions": sub.id, "invoices":
                                         sub.latest_invoice}.get(r.split("/")[2], "xx_nope")))
                  for m, r, _ in API if m == "POST" and not r.startswith("/v1/customers/")]

        @settings(max_examples=300, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        @given(route=st.sampled_from(routes), params=st.dictionaries(st.sampled_from(NAMES), values, max_size=4))
        def check(route, params):
            pairs = [pair for key, value in params.items() for pair in _flatten(value, key)]
            status, _, body = http(f"{sim.base_url}{route[1]}", pairs, "POST", {"Authorization": "Bearer sk_test_x"})
            assert status < 500, (route, pairs, body)

        check()
    finally:
        sim.stop()
