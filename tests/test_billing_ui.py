"""Pricing, billing and test-mode checkout pages (no Stripe keys: local test mode)."""
from __future__ import annotations

import re

from .test_auth_ui import csrf_token, sign_up


def verify_signed_in(browser, connect):
    email = re.search(r'class="email" href="/account">([^<]+)<', browser.get("/dashboard").get_data(as_text=True))[1]
    connect("postgres").execute("update users set is_verified = true where email = %s", (email,))


def upgrade(browser, tier="starter"):
    page = browser.get("/pricing").get_data(as_text=True)
    response = browser.post("/billing/checkout", data={"csrf_token": csrf_token(page), "tier": tier})
    assert response.status_code == 303, response.get_data(as_text=True)
    return response.headers["Location"]


def test_pricing_page_for_visitors_and_members(app):
    visitor = app.test_client().get("/pricing").get_data(as_text=True)
    assert "test mode" in visitor and "Start free, then upgrade" in visitor and "Upgrade to" not in visitor
    for name in ("Free", "Starter", "Pro", "Agency"):
        assert f"<h2>{name}</h2>" in visitor
    browser = app.test_client()
    sign_up(browser)
    member = browser.get("/pricing").get_data(as_text=True)
    assert "Upgrade to Starter" in member and "Upgrade to Pro" in member
    assert re.search(r'data-tier="free">.*?Your plan', member, re.S)


def test_simulated_checkout_buys_starter(app, connect):
    browser = app.test_client()
    sign_up(browser)
    verify_signed_in(browser, connect)
    location = upgrade(browser)
    assert location.startswith("/billing/simulate/")
    page = browser.get(location).get_data(as_text=True)
    assert "Subscribe to Starter" in page and "No card is charged" in page
    paid = browser.post(location, data={"csrf_token": csrf_token(page)})
    assert paid.status_code == 302 and paid.headers["Location"].endswith("/billing/success")
    billing = browser.get("/billing").get_data(as_text=True)
    assert "Starter · $9/month" in billing and "25 of 25 credits remaining" in billing
    assert "25 credits" in billing  # header badge
    assert "Manage subscription" in billing
    # a second purchase of the same plan is refused with a message
    page = browser.get("/pricing").get_data(as_text=True)
    assert re.search(r'data-tier="starter">.*?Your plan', page, re.S)


def test_simulated_checkout_link_is_personal(app, connect):
    buyer, other = app.test_client(), app.test_client()
    sign_up(buyer)
    sign_up(other)
    verify_signed_in(buyer, connect)
    location = upgrade(buyer)
    assert other.get(location).status_code == 404
    assert other.get("/billing/simulate/not-a-token").status_code == 404


def test_billing_page_shows_usage_and_chart(app):
    browser = app.test_client()
    sign_up(browser)
    page = browser.get("/dashboard").get_data(as_text=True)
    browser.post("/dashboard/generate", data={"csrf_token": csrf_token(page), "topic": "charted topic",
                                              "platform": "tiktok", "duration_seconds": "20"})
    billing = browser.get("/billing").get_data(as_text=True)
    assert "4 of 5 credits remaining" in billing and "<svg" in billing and "1 used" in billing
    assert billing.count('class="bar"') == 1 and "Video" in billing


def test_past_due_shows_a_warning(app, connect):
    browser = app.test_client()
    sign_up(browser)
    email = re.search(r'class="email" href="/account">([^<]+)<', browser.get("/dashboard").get_data(as_text=True))[1]
    connect("postgres").execute("update subscriptions s set status = 'past_due' from users u "
                                "where u.id = s.user_id and u.email = %s", (email,))
    assert 'id="past-due"' in browser.get("/billing").get_data(as_text=True)


def test_portal_without_customer_explains(app):
    browser = app.test_client()
    sign_up(browser)
    response = browser.get("/billing/portal")
    assert response.status_code == 302
    assert "subscribe to a plan first" in browser.get("/billing").get_data(as_text=True)


def test_landing_pages(app):
    browser = app.test_client()
    sign_up(browser)
    assert "all set" in browser.get("/billing/success").get_data(as_text=True)
    assert "No payment was taken" in browser.get("/billing/canceled").get_data(as_text=True)
