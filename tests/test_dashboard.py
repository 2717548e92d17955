"""The dashboard as a browser uses it: generate form, job list, polling endpoint, upgrade prompt."""
from __future__ import annotations

from .conftest import unique_email
from .test_auth_ui import csrf_token, sign_up


def generate_from_page(browser, topic="the history of coffee", platform="tiktok", duration="20"):
    page = browser.get("/dashboard").get_data(as_text=True)
    return browser.post("/dashboard/generate", data={"csrf_token": csrf_token(page), "topic": topic,
                                                     "platform": platform, "duration_seconds": duration})


def test_generate_from_the_dashboard(app):
    browser = app.test_client()
    sign_up(browser)
    page = browser.get("/dashboard").get_data(as_text=True)
    assert "Generate a video" in page and "No videos yet" in page and "5 credits" in page
    response = generate_from_page(browser)
    assert response.status_code == 302
    page = browser.get("/dashboard").get_data(as_text=True)
    assert "is on its way" in page and "4 credits" in page
    assert 'data-status="queued"' in page and "<progress" in page
    polled = browser.get("/dashboard/jobs.json").get_json()
    assert polled["credits_remaining"] == 4 and polled["jobs"][0]["status"] == "queued"


def test_dashboard_form_errors_take_no_credit(app):
    browser = app.test_client()
    sign_up(browser)
    for topic, platform, duration in (("ab", "tiktok", "20"), ("fine topic", "myspace", "20"),
                                      ("fine topic", "tiktok", "90"), ("fine topic", "tiktok", "soon")):
        response = generate_from_page(browser, topic, platform, duration)
        assert response.status_code == 422, (topic, platform, duration)
        assert 'class="field-error"' in response.get_data(as_text=True)
    assert browser.get("/dashboard/jobs.json").get_json()["credits_remaining"] == 5


def test_generate_without_csrf_token_is_refused(app):
    browser = app.test_client()
    sign_up(browser)
    response = browser.post("/dashboard/generate", data={"topic": "sneaky", "platform": "tiktok",
                                                         "duration_seconds": "20"})
    assert response.status_code == 400
    assert browser.get("/dashboard/jobs.json").get_json()["credits_remaining"] == 5


def test_out_of_credits_shows_the_upgrade_prompt(app, connect):
    browser = app.test_client()
    email = unique_email()
    sign_up(browser, email)
    # a confirmed address: an unconfirmed one spends only one credit
    connect("postgres").execute("update users set is_verified = true where email = %s", (email,))
    for n in range(5):
        assert generate_from_page(browser, f"topic number {n}").status_code == 302
    page = browser.get("/dashboard").get_data(as_text=True)
    assert 'id="upgrade-prompt"' in page and 'href="/pricing"' in page and "Generate video" not in page
    assert "0 credits" in page


def test_pricing_lists_the_four_plans(app):
    page = app.test_client().get("/pricing").get_data(as_text=True)
    for name, price in (("Free", "$0"), ("Starter", "$9"), ("Pro", "$29"), ("Agency", "$99")):
        assert name in page and price in page
    assert "Most popular" in page


def test_dashboard_needs_a_session(app):
    client = app.test_client()
    assert client.get("/dashboard/jobs.json").status_code == 302
    assert client.post("/dashboard/generate").status_code in (302, 400)
