"""Pricing and billing pages in local test mode (BILLING_MODE=test: the Stripe simulator
plays Stripe, its hosted Checkout stands in for Stripe's), as a member uses them."""
from __future__ import annotations

import re

import pytest

from web import create_app

from .billing_env import session_of, settle, simulated_billing
from .test_auth_ui import csrf_token, sign_up


@pytest.fixture(scope="module")
def env(database_dsn, media_root, connect, webhook_secret):
    with simulated_billing(database_dsn, media_root, connect("postgres"), webhook_secret,
                           BILLING_MODE="test", STRIPE_SECRET_KEY="sk_test_simulator") as env:
        yield env


@pytest.fixture
def member(env):
    member = env.app.test_client()
    sign_up(member)
    email = re.search(r'class="email" href="/account">([^<]+)<', member.get("/dashboard").get_data(as_text=True))[1]
    env.admin.execute("update users set is_verified = true where email = %s", (email,))
    member.email = email
    return member


def post_plan(member, tier: str, path: str = "/billing/change-plan"):
    page = member.get("/pricing").get_data(as_text=True)
    return member.post(path, data={"csrf_token": csrf_token(page), "tier": tier})


def buy(env, member, tier: str = "starter") -> None:
    response = post_plan(member, tier)
    assert response.status_code == 303, response.get_data(as_text=True)
    assert response.headers["Location"].startswith(env.sim.base_url + "/checkout/")
    env.sim.complete_checkout(session_of(response.headers["Location"]), "paid")
    settle(env)


def card(page: str, tier: str) -> str:
    return re.search(rf'data-tier="{tier}">(.*?)</section>', page, re.S)[1]


def test_pricing_page_for_visitors_and_members(env, member):
    visitor = env.app.test_client().get("/pricing").get_data(as_text=True)
    assert 'id="test-mode"' in visitor and "Start free, then upgrade" in visitor and "Upgrade to" not in visitor
    for name in ("Free", "Starter", "Pro", "Agency"):
        assert f"<h2>{name}</h2>" in visitor
        assert visitor.count("videos a month") == 4  # once per card, from the plan's own highlights
    member = member.get("/pricing").get_data(as_text=True)
    assert "Current plan" in card(member, "free")
    assert "Upgrade to Starter" in card(member, "starter") and "Upgrade to Pro" in card(member, "pro")


def test_test_mode_checkout_buys_starter(env, member):
    buy(env, member, "starter")
    billing = member.get("/billing").get_data(as_text=True)
    assert "Starter · $9/month" in billing
    assert "25 credits left · 25 granted this period" in billing
    assert "Payment methods" in billing and "Cancel subscription" in billing
    statement = re.search(r'id="statement">(.*?)</table>', billing, re.S)[1]
    assert "Plan credits" in statement and "+20" in statement and "Welcome credits" in statement
    invoices = re.search(r'id="invoices">(.*?)</table>', billing, re.S)[1]
    assert "$9.00" in invoices and "paid" in invoices and f'href="{env.sim.base_url}' in invoices
    pricing = member.get("/pricing").get_data(as_text=True)
    assert "Current plan" in card(pricing, "starter")
    assert "Upgrade to Pro" in card(pricing, "pro") and "Downgrade to Free" in card(pricing, "free")


def test_a_pro_user_is_offered_downgrades_never_a_second_checkout(env, member):
    buy(env, member, "pro")
    pricing = member.get("/pricing").get_data(as_text=True)
    assert "Downgrade to Starter" in card(pricing, "starter") and "Upgrade to Agency" in card(pricing, "agency")
    assert "Upgrade to Starter" not in pricing
    response = post_plan(member, "starter")
    assert response.status_code == 303 and response.headers["Location"].endswith("/billing")
    settle(env)
    billing = member.get("/billing").get_data(as_text=True)
    assert "You keep Pro until the end of this period" in billing
    assert re.search(r'id="pending-change">Changes to Starter on \d{1,2} \w{3} \d{4} \(UTC\)', billing)
    assert 'id="undo-change"' in billing and "Keep Pro" in billing
    assert "Starts " in card(member.get("/pricing").get_data(as_text=True), "starter")
    response = post_plan(member, "pro")  # undo
    settle(env)
    assert 'id="pending-change"' not in member.get("/billing").get_data(as_text=True)


def test_cancel_and_resume_from_the_pages(env, member):
    buy(env, member, "starter")
    post_plan(member, "free")
    settle(env)
    billing = member.get("/billing").get_data(as_text=True)
    assert re.search(r'id="ends">\d{1,2} \w{3} \d{4} \(UTC\), then Free', billing) and 'id="resume"' in billing
    assert "Resume Starter" in card(member.get("/pricing").get_data(as_text=True), "starter")
    response = member.post("/billing/resume", data={"csrf_token": csrf_token(billing)})
    assert response.status_code == 303
    settle(env)
    assert 'id="renews"' in member.get("/billing").get_data(as_text=True)


def test_plan_changes_need_the_csrf_token(env, member):
    assert member.post("/billing/change-plan", data={"tier": "pro"}).status_code in (302, 400)
    assert member.post("/billing/resume", data={}).status_code in (302, 400)
    assert env.admin.execute("select count(*) as n from pgqueuer where entrypoint = 'stripe_sync'").fetchone()["n"] == 0


def test_billing_page_shows_usage_and_chart(env, member):
    page = member.get("/dashboard").get_data(as_text=True)
    member.post("/dashboard/generate", data={"csrf_token": csrf_token(page), "topic": "charted topic",
                                              "platform": "tiktok", "duration_seconds": "20"})
    billing = member.get("/billing").get_data(as_text=True)
    assert "4 credits left · 5 granted this period" in billing and "<svg" in billing and "1 used" in billing
    assert billing.count('class="bar"') == 1
    assert "Video: “charted topic”" in billing and "-1" in billing


@pytest.mark.parametrize("status, marker", [("past_due", 'id="past-due"'), ("unpaid", 'id="unpaid"'),
                                            ("paused", 'id="paused"'), ("incomplete", 'id="incomplete"')])
def test_each_troubled_status_explains_itself(env, member, status, marker):
    buy(env, member, "starter")
    env.admin.execute("update subscriptions s set status = %s from users u where u.id = s.user_id and u.email = %s",
                      (status, member.email))
    assert marker in member.get("/billing").get_data(as_text=True)


def test_portal_without_customer_explains(env):
    member = env.app.test_client()
    sign_up(member)
    response = member.get("/billing/portal")
    assert response.status_code == 302
    assert "subscribe to a plan first" in member.get("/billing").get_data(as_text=True)


def test_landing_pages(env, member):
    assert "all set" in member.get("/billing/success").get_data(as_text=True)
    assert "No payment was taken" in member.get("/billing/canceled").get_data(as_text=True)


def test_production_refuses_to_start_in_test_mode(database_dsn):
    with pytest.raises(RuntimeError, match="BILLING_MODE=test is for development only"):
        create_app({"DATABASE_URL": database_dsn, "SECRET_KEY": "x" * 40, "BILLING_MODE": "test"})
    # without keys and without a mode, production bills for real (and says it is not configured)
    app = create_app({"DATABASE_URL": database_dsn, "SECRET_KEY": "x" * 40})
    assert app.config["BILLING_MODE"] == "stripe"
    app.extensions["sg_pool"].close()


def test_development_without_keys_is_test_mode(database_dsn):
    app = create_app({"TESTING": True, "DATABASE_URL": database_dsn})
    assert app.config["BILLING_MODE"] == "test"
    keyed = create_app({"TESTING": True, "DATABASE_URL": database_dsn, "STRIPE_SECRET_KEY": "sk_test_x"})
    assert keyed.config["BILLING_MODE"] == "stripe"
    for one in (app, keyed):
        one.extensions["sg_pool"].close()
