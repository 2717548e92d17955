"""The simulator's objects in the shape of Stripe API version 2026-10-28.endive.

Field names and nesting follow Stripe's own example objects (`openapi/fixtures3.json` of
stripe/openapi) and the attribute lists of stripe-python 16's resource classes. The
current shapes differ from the 2017 ones localstripe speaks where it matters to billing:
a subscription's period lives on its items (`items.data[].current_period_start/end`), an
invoice names its subscription under `parent.subscription_details`, and an invoice line
carries its price under `pricing.price_details` and its proration flag under
`parent.subscription_item_details`.
"""
from __future__ import annotations

import secrets
import string
from datetime import datetime, timezone

API_VERSION = "2026-10-28.endive"
_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def day(timestamp: int) -> str:
    """Stripe's date in line descriptions: `5 Jan 2027`."""
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return f"{moment.day} {moment:%b %Y}"


def money(cents: int, currency: str = "usd") -> str:
    sign = "-" if cents < 0 else ""
    symbol = "$" if currency == "usd" else currency.upper() + " "
    return f"{sign}{symbol}{abs(cents) / 100:,.2f}"


def listing(data: list, url: str) -> dict:
    return {"object": "list", "data": data, "has_more": False, "total_count": len(data), "url": url}


def customer(id: str, created: int, email: str | None, name: str | None, description: str | None,
             metadata: dict) -> dict:
    return {
        "id": id, "object": "customer",
        "address": None, "balance": 0, "business_name": None, "cash_balance": None, "created": created,
        "currency": None, "customer_account": None, "default_source": None, "delinquent": False,
        "description": description, "discount": None, "email": email, "individual_name": None,
        "invoice_prefix": new_id("", 8).upper(),
        "invoice_settings": {"custom_fields": None, "default_payment_method": None, "footer": None,
                             "rendering_options": None},
        "livemode": False, "metadata": metadata, "name": name, "next_invoice_sequence": 1, "phone": None,
        "preferred_locales": [], "shipping": None, "tax_exempt": "none", "test_clock": None,
    }


def product(id: str, created: int, name: str, default_price: str | None = None) -> dict:
    return {
        "id": id, "object": "product", "active": True, "created": created, "default_price": default_price,
        "description": None, "images": [], "livemode": False, "marketing_features": [], "metadata": {},
        "name": name, "package_dimensions": None, "shippable": None, "statement_descriptor": None,
        "tax_code": None, "type": "service", "unit_label": None, "updated": created, "url": None,
    }


def price(id: str, created: int, product_id: str, unit_amount: int, currency: str,
          interval: str | None, interval_count: int = 1, nickname: str | None = None,
          lookup_key: str | None = None, metadata: dict | None = None) -> dict:
    return {
        "id": id, "object": "price", "active": True, "billing_scheme": "per_unit", "created": created,
        "currency": currency, "custom_unit_amount": None, "livemode": False, "lookup_key": lookup_key,
        "metadata": metadata or {}, "nickname": nickname, "product": product_id,
        "recurring": ({"interval": interval, "interval_count": interval_count, "meter": None,
                       "trial_period_days": None, "usage_type": "licensed"} if interval else None),
        "tax_behavior": "unspecified", "tiers_mode": None, "transform_quantity": None,
        "type": "recurring" if interval else "one_time",
        "unit_amount": unit_amount, "unit_amount_decimal": str(unit_amount),
    }


def plan(price_obj: dict) -> dict:
    """The legacy `plan` every subscription item still carries, derived from its price."""
    recurring = price_obj["recurring"] or {}
    return {
        "id": price_obj["id"], "object": "plan", "active": price_obj["active"],
        "amount": price_obj["unit_amount"], "amount_decimal": price_obj["unit_amount_decimal"],
        "billing_scheme": "per_unit", "created": price_obj["created"], "currency": price_obj["currency"],
        "interval": recurring.get("interval"), "interval_count": recurring.get("interval_count"),
        "livemode": False, "metadata": price_obj["metadata"], "meter": None, "nickname": price_obj["nickname"],
        "product": price_obj["product"], "tiers_mode": None, "transform_usage": None,
        "trial_period_days": None, "usage_type": "licensed",
    }


def subscription_item(id: str, created: int, subscription_id: str, price_obj: dict, quantity: int,
                      period_start: int, period_end: int, metadata: dict | None = None) -> dict:
    return {
        "id": id, "object": "subscription_item", "billing_thresholds": None, "created": created,
        "current_period_end": period_end, "current_period_start": period_start, "discounts": [],
        "metadata": metadata or {}, "plan": plan(price_obj), "price": price_obj, "quantity": quantity,
        "subscription": subscription_id, "tax_rates": [],
    }


def subscription(id: str, created: int, customer_id: str, items: list, metadata: dict,
                 description: str | None = None) -> dict:
    return {
        "id": id, "object": "subscription", "application": None, "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": created, "billing_cycle_anchor_config": None,
        "billing_mode": {"flexible": None, "type": "classic", "updated_at": None}, "billing_schedules": [],
        "billing_thresholds": None, "cancel_at": None, "cancel_at_period_end": False, "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically", "created": created, "currency": "usd",
        "customer": customer_id, "customer_account": None, "days_until_due": None,
        "default_payment_method": None, "default_source": None, "default_tax_rates": [],
        "description": description, "discounts": [], "ended_at": None,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": listing(items, f"/v1/subscription_items?subscription={id}"),
        "latest_invoice": None, "livemode": False, "managed_payments": None, "metadata": metadata,
        "next_pending_invoice_item_invoice": None, "on_behalf_of": None, "pause_collection": None,
        "payment_settings": {"payment_method_options": None, "payment_method_types": None,
                             "save_default_payment_method": "off"},
        "pending_invoice_item_interval": None, "pending_setup_intent": None, "pending_update": None,
        "schedule": None, "start_date": created, "status": "incomplete", "test_clock": None,
        "transfer_data": None, "trial_end": None,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}}, "trial_start": None,
    }


def invoice(id: str, created: int, customer_obj: dict, billing_reason: str, subscription_id: str | None,
            subscription_metadata: dict | None, period_start: int, period_end: int) -> dict:
    parent = None
    if subscription_id:
        parent = {"quote_details": None, "type": "subscription_details",
                  "subscription_details": {"metadata": subscription_metadata, "subscription": subscription_id,
                                           "subscription_proration_date": None}}
    return {
        "id": id, "object": "invoice", "account_country": "US", "account_name": "Story Genius (simulated)",
        "account_tax_ids": None, "amount_due": 0, "amount_overpaid": 0, "amount_paid": 0,
        "amount_remaining": 0, "amount_shipping": 0, "application": None, "attempt_count": 0,
        "attempted": False, "auto_advance": True,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None, "provider": None,
                          "status": None},
        "automatically_finalizes_at": None, "billing_reason": billing_reason,
        "collection_method": "charge_automatically", "confirmation_secret": None, "created": created,
        "currency": "usd", "custom_fields": None, "customer": customer_obj["id"], "customer_account": None,
        "customer_address": None, "customer_email": customer_obj["email"], "customer_name": customer_obj["name"],
        "customer_phone": None, "customer_shipping": None, "customer_tax_exempt": "none", "customer_tax_ids": [],
        "default_payment_method": None, "default_source": None, "default_tax_rates": [], "description": None,
        "discounts": [], "due_date": None, "effective_at": None, "ending_balance": None, "footer": None,
        "from_invoice": None, "hosted_invoice_url": None, "invoice_pdf": None, "issuer": {"type": "self"},
        "last_finalization_error": None, "latest_revision": None,
        "lines": listing([], f"/v1/invoices/{id}/lines"), "livemode": False, "metadata": {},
        "next_payment_attempt": None, "number": None, "on_behalf_of": None, "parent": parent,
        "payment_settings": {"default_mandate": None, "payment_method_options": None,
                             "payment_method_types": None},
        "period_end": period_end, "period_start": period_start, "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0, "receipt_number": None, "rendering": None,
        "shipping_cost": None, "shipping_details": None, "starting_balance": 0, "statement_descriptor": None,
        "status": "draft", "status_transitions": {"finalized_at": None, "marked_uncollectible_at": None,
                                                  "paid_at": None, "voided_at": None},
        "subtotal": 0, "subtotal_excluding_tax": 0, "test_clock": None, "total": 0,
        "total_discount_amounts": [], "total_excluding_tax": 0, "total_pretax_credit_amounts": [],
        "total_taxes": [], "webhooks_delivered_at": None,
    }


def invoice_item(id: str, created: int, customer_id: str, subscription_id: str, item_id: str, price_obj: dict,
                 amount: int, quantity: int, description: str, start: int, end: int,
                 credited: dict | None) -> dict:
    """A pending proration: billed on the next invoice of its subscription."""
    return {
        "id": id, "object": "invoiceitem", "amount": amount, "currency": price_obj["currency"],
        "customer": customer_id, "customer_account": None, "date": created, "description": description,
        "discountable": False, "discounts": [], "invoice": None, "livemode": False, "metadata": {},
        "net_amount": amount,
        "parent": {"subscription_details": {"subscription": subscription_id, "subscription_item": item_id},
                   "type": "subscription_details"},
        "period": {"end": end, "start": start},
        "pricing": {"price_details": {"price": price_obj["id"], "product": price_obj["product"]},
                    "type": "price_details", "unit_amount_decimal": str(amount)},
        "proration": True, "proration_details": {"credited_items": credited},
        "quantity": quantity, "quantity_decimal": str(quantity), "tax_rates": [], "test_clock": None,
    }


def line(id: str, invoice_id: str, subscription_id: str | None, item_id: str | None, price_obj: dict,
         amount: int, quantity: int, description: str, start: int, end: int, proration: bool,
         invoice_item_id: str | None = None, credited: dict | None = None, metadata: dict | None = None) -> dict:
    if subscription_id:
        parent = {"invoice_item_details": None, "type": "subscription_item_details",
                  "subscription_item_details": {
                      "invoice_item": invoice_item_id, "proration": proration,
                      "proration_details": {"credited_items": credited}, "subscription": subscription_id,
                      "subscription_item": item_id}}
    else:
        parent = {"invoice_item_details": {"invoice_item": invoice_item_id, "proration": proration,
                                           "proration_details": {"credited_items": credited},
                                           "subscription": None},
                  "subscription_item_details": None, "type": "invoice_item_details"}
    unit = price_obj["unit_amount"] if not proration else amount
    return {
        "id": id, "object": "line_item", "amount": amount, "currency": price_obj["currency"],
        "description": description, "discount_amounts": [], "discountable": not proration, "discounts": [],
        "invoice": invoice_id, "livemode": False, "metadata": metadata or {}, "parent": parent,
        "period": {"end": end, "start": start}, "pretax_credit_amounts": [],
        "pricing": {"price_details": {"price": price_obj["id"], "product": price_obj["product"]},
                    "type": "price_details", "unit_amount_decimal": str(unit)},
        "quantity": quantity, "quantity_decimal": str(quantity), "subscription": subscription_id,
        "subtotal": amount, "taxes": [],
    }


def schedule_phase(start: int, end: int, items: list[tuple[str, int]], proration_behavior: str,
                   metadata: dict | None = None) -> dict:
    return {
        "add_invoice_items": [], "application_fee_percent": None, "billing_cycle_anchor": None,
        "billing_thresholds": None, "collection_method": None, "currency": "usd", "default_payment_method": None,
        "default_tax_rates": [], "description": None, "discounts": [], "end_date": end,
        "invoice_settings": None,
        "items": [{"billing_thresholds": None, "discounts": [], "metadata": {}, "plan": price_id,
                   "price": price_id, "quantity": quantity, "tax_rates": []} for price_id, quantity in items],
        "metadata": metadata or {}, "on_behalf_of": None, "proration_behavior": proration_behavior,
        "start_date": start, "transfer_data": None, "trial_end": None,
    }


def subscription_schedule(id: str, created: int, customer_id: str, subscription_id: str, phases: list,
                          end_behavior: str, metadata: dict) -> dict:
    return {
        "id": id, "object": "subscription_schedule", "application": None,
        "billing_mode": {"flexible": None, "type": "classic", "updated_at": None},
        "canceled_at": None, "completed_at": None, "created": created,
        "current_phase": {"end_date": phases[0]["end_date"], "start_date": phases[0]["start_date"]},
        "customer": customer_id, "customer_account": None,
        "default_settings": {
            "application_fee_percent": None, "automatic_tax": {"disabled_reason": None, "enabled": False,
                                                               "liability": None},
            "billing_cycle_anchor": "automatic", "billing_thresholds": None,
            "collection_method": "charge_automatically", "default_payment_method": None, "description": None,
            "invoice_settings": {"account_tax_ids": None, "days_until_due": None, "issuer": {"type": "self"}},
            "on_behalf_of": None, "transfer_data": None},
        "end_behavior": end_behavior, "livemode": False, "metadata": metadata, "pause_schedules": [], "phases": phases,
        "released_at": None, "released_subscription": None, "status": "active", "subscription": subscription_id,
        "test_clock": None,
    }


def checkout_session(id: str, created: int, mode: str, customer_id: str | None, customer_email: str | None,
                     amount: int, currency: str, success_url: str | None, cancel_url: str | None,
                     client_reference_id: str | None, metadata: dict, expires_at: int) -> dict:
    return {
        "id": id, "object": "checkout.session", "adaptive_pricing": {"enabled": False},
        "after_expiration": None, "allow_promotion_codes": None, "amount_subtotal": amount,
        "amount_total": amount,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": None, "cancel_url": cancel_url, "client_reference_id": client_reference_id,
        "client_secret": None, "collected_information": None, "consent": None, "consent_collection": None,
        "created": created, "currency": currency, "currency_conversion": None, "custom_fields": [],
        "custom_text": {"after_submit": None, "shipping_address": None, "submit": None,
                        "terms_of_service_acceptance": None},
        "customer": customer_id, "customer_account": None,
        "customer_creation": "if_required" if mode == "payment" and not customer_id else None,
        "customer_details": None, "customer_email": customer_email, "discounts": [], "expires_at": expires_at,
        "invoice": None,
        "integration_identifier": None,
        "invoice_creation": ({"enabled": False, "invoice_data": {
            "account_tax_ids": None, "custom_fields": None, "description": None, "footer": None,
            "issuer": None, "metadata": {}, "rendering_options": None}} if mode == "payment" else None),
        "livemode": False, "locale": None, "managed_payments": None, "metadata": metadata, "mode": mode,
        "origin_context": None,
        "payment_intent": None, "payment_link": None,
        "payment_method_collection": "always" if mode == "subscription" else None,
        "payment_method_configuration_details": None,
        "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"], "payment_status": "unpaid", "permissions": None,
        "phone_number_collection": {"enabled": False}, "recovered_from": None,
        "saved_payment_method_options": None, "setup_intent": None, "shipping_address_collection": None,
        "shipping_cost": None, "shipping_options": [], "status": "open", "submit_type": None,
        "subscription": None, "success_url": success_url,
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted_page", "url": None, "wallet_options": None,
    }


def customer_details(email: str | None) -> dict:
    return {"address": None, "business_name": None, "email": email, "individual_name": None, "name": None,
            "phone": None, "tax_exempt": "none", "tax_ids": []}


def portal_session(id: str, created: int, customer_id: str, return_url: str | None) -> dict:
    return {"id": id, "object": "billing_portal.session", "configuration": "bpc_simulator_default",
            "created": created, "customer": customer_id, "customer_account": None, "flow": None,
            "livemode": False, "locale": None, "on_behalf_of": None, "return_url": return_url, "url": None}


def payment_method(id: str, created: int, customer_id: str | None) -> dict:
    return {
        "id": id, "object": "payment_method", "allow_redisplay": "unspecified",
        "billing_details": {"address": None, "email": None, "name": None, "phone": None, "tax_id": None},
        "card": {"brand": "visa", "checks": {"address_line1_check": None, "address_postal_code_check": None,
                                             "cvc_check": "pass"},
                 "country": "US", "display_brand": "visa", "exp_month": 12, "exp_year": 2034,
                 "fingerprint": "SimulatorVisa4242", "funding": "credit", "last4": "4242",
                 "networks": {"available": ["visa"], "preferred": None}, "wallet": None},
        "created": created, "customer": customer_id, "customer_account": None, "livemode": False,
        "metadata": {}, "type": "card",
    }


def payment_intent(id: str, created: int, amount: int, currency: str, customer_id: str | None,
                   metadata: dict, description: str | None) -> dict:
    return {
        "id": id, "object": "payment_intent", "amount": amount, "amount_capturable": 0,
        "amount_details": {"tip": {}}, "amount_received": 0, "application": None,
        "application_fee_amount": None, "automatic_payment_methods": None, "canceled_at": None,
        "cancellation_reason": None, "capture_method": "automatic", "client_secret": f"{id}_secret_{new_id('', 25)}",
        "confirmation_method": "automatic", "created": created, "currency": currency, "customer": customer_id,
        "customer_account": None, "description": description, "excluded_payment_method_types": None,
        "last_payment_error": None, "latest_charge": None, "livemode": False, "managed_payments": None,
        "metadata": metadata, "next_action": None, "on_behalf_of": None, "payment_method": None,
        "payment_method_configuration_details": None, "payment_method_options": {},
        "payment_method_types": ["card"], "processing": None, "receipt_email": None, "review": None,
        "setup_future_usage": None, "shipping": None, "source": None, "statement_descriptor": None,
        "statement_descriptor_suffix": None, "status": "requires_payment_method", "transfer_data": None,
        "transfer_group": None,
    }


def charge(id: str, created: int, amount: int, currency: str, customer_id: str | None, payment_intent_id: str,
           payment_method_id: str, method: str, metadata: dict, description: str | None) -> dict:
    if method == "card":
        details = {"card": {"amount_authorized": amount, "brand": "visa", "country": "US", "exp_month": 12,
                            "exp_year": 2034, "fingerprint": "SimulatorVisa4242", "funding": "credit",
                            "last4": "4242", "network": "visa"}, "type": "card"}
    else:
        details = {"customer_balance": {}, "type": "customer_balance"}
    return {
        "id": id, "object": "charge", "amount": amount, "amount_captured": 0, "amount_refunded": 0,
        "application": None, "application_fee": None, "application_fee_amount": None,
        "balance_transaction": None,
        "billing_details": {"address": None, "email": None, "name": None, "phone": None, "tax_id": None},
        "calculated_statement_descriptor": "STORY GENIUS", "captured": False, "created": created,
        "currency": currency, "customer": customer_id, "description": description, "disputed": False,
        "failure_balance_transaction": None, "failure_code": None, "failure_message": None, "fraud_details": {},
        "livemode": False, "metadata": metadata, "on_behalf_of": None, "outcome": None, "paid": False,
        "payment_intent": payment_intent_id, "payment_method": payment_method_id,
        "payment_method_details": details, "receipt_email": None, "receipt_number": None, "receipt_url": None,
        "refunded": False, "refunds": listing([], f"/v1/charges/{id}/refunds"), "review": None, "shipping": None,
        "source": None, "source_transfer": None, "statement_descriptor": None, "statement_descriptor_suffix": None,
        "status": "pending", "transfer_data": None, "transfer_group": None,
    }


def refund(id: str, created: int, charge_obj: dict, amount: int, reason: str | None, metadata: dict) -> dict:
    return {
        "id": id, "object": "refund", "amount": amount, "balance_transaction": None, "charge": charge_obj["id"],
        "created": created, "currency": charge_obj["currency"], "customer": charge_obj["customer"],
        "customer_account": None,
        "destination_details": {"card": {"reference_status": "pending", "reference_type": "acquirer_reference_number",
                                         "type": "refund"}, "type": "card"},
        "metadata": metadata, "payment_intent": charge_obj["payment_intent"],
        "payment_method": charge_obj["payment_method"], "reason": reason, "receipt_number": None,
        "source_transfer_reversal": None, "status": "succeeded", "transfer_reversal": None,
    }


def dispute(id: str, created: int, charge_obj: dict, amount: int, reason: str) -> dict:
    return {
        "id": id, "object": "dispute", "amount": amount, "balance_transactions": [], "charge": charge_obj["id"],
        "created": created, "currency": charge_obj["currency"], "enhanced_eligibility_types": [],
        "evidence": {}, "evidence_details": {"due_by": created + 7 * 86400, "enhanced_eligibility": {},
                                             "has_evidence": False, "past_due": False, "submission_count": 0},
        "is_charge_refundable": False, "livemode": False, "metadata": {},
        "payment_intent": charge_obj["payment_intent"],
        "payment_method_details": {"card": {"brand": "visa", "case_type": "chargeback",
                                            "network_reason_code": "10.4"}, "type": "card"},
        "reason": reason, "status": "needs_response",
    }


def event(id: str, created: int, type: str, obj: dict, previous: dict | None, request_id: str | None,
          idempotency_key: str | None, pending_webhooks: int) -> dict:
    data = {"object": obj}
    if previous is not None:
        data["previous_attributes"] = previous
    return {"id": id, "object": "event", "api_version": API_VERSION, "created": created, "data": data,
            "livemode": False, "pending_webhooks": pending_webhooks,
            "request": {"id": request_id, "idempotency_key": idempotency_key}, "type": type}


def webhook_endpoint(id: str, created: int, url: str, secret: str, enabled_events: list[str],
                     description: str | None, metadata: dict) -> dict:
    return {"id": id, "object": "webhook_endpoint", "api_version": API_VERSION, "application": None,
            "created": created, "description": description, "enabled_events": enabled_events,
            "livemode": False, "metadata": metadata, "secret": secret, "status": "enabled", "url": url}
