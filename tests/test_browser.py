"""The seed's Day-7 checklist, walked in a real browser (Debian's Chromium, driven by
Playwright) against a live gunicorn + render worker, with localstripe behind Stripe's API.

Screenshots of every step land in tests/artifacts/.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .stripe_fakes import RecordingProxy, free_port, start_localstripe, wait_for_port
from .stripe_payloads import checkout_completed, invoice_paid, signed

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/lib/chromium/chromium"
SECRET = "whsec_browser_" + "b" * 24
PRICE = "price_browser_starter"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and not shutil.which("chromium"),
                                reason="Debian's chromium is not installed (make test installs it)")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", "--disable-quic"]}


@pytest.fixture(scope="module")
def stack(database_dsn, media_root, connect):
    """gunicorn + worker + localstripe (+ the proxy that plays Checkout), all on loopback."""
    admin = connect("postgres")
    admin.execute("delete from pgqueuer")
    admin.execute("update plans set stripe_price_id = %s where tier = 'starter'", (PRICE,))
    localstripe, localstripe_url = start_localstripe()
    proxy = RecordingProxy(localstripe_url).start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    outbox = media_root / "outbox"
    env = {**os.environ, "DATABASE_URL": database_dsn, "SECRET_KEY": "browser-" + "s" * 40, "BIND": f"127.0.0.1:{port}",
           "WEB_CONCURRENCY": "2", "MEDIA_ROOT": str(media_root), "STRIPE_SECRET_KEY": "sk_test_browser",
           "STRIPE_API_BASE": proxy.url, "STRIPE_WEBHOOK_SECRET": SECRET, "FRONTEND_URL": base, "APP_URL": base,
           "MAIL_OUTBOX": str(outbox), "SMTP_URL": ""}
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "web/gunicorn_conf.py", "web:create_app()"],
                           cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield {"base": base, "proxy": proxy, "outbox": outbox}
    for process in (web, worker, localstripe):
        process.terminate()
    for process in (web, worker, localstripe):
        process.wait(timeout=60)
    proxy.stop()
    admin.execute("update plans set stripe_price_id = null where tier = 'starter'")


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def fits_the_screen(page) -> bool:
    """No sideways scrolling: the page is no wider than the viewport."""
    return page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")


def generate(page, topic: str) -> None:
    page.fill("#topic", topic)
    page.click("form.generate button[type=submit]")
    page.wait_for_selector(".flash-success")


def emailed_link(outbox: Path, address: str, path: str, timeout: float = 30) -> str:
    """The link in the newest mail to `address` that the worker wrote to the outbox folder."""
    from email import message_from_bytes, policy

    deadline = time.time() + timeout
    while time.time() < deadline:
        for eml in sorted(outbox.glob("*.eml"), reverse=True):
            message = message_from_bytes(eml.read_bytes(), policy=policy.default)
            if address in message["To"]:
                text = message.get_body(preferencelist=("plain",)).get_content()
                return re.search(rf"https?://\S+{path}\?token=\w+", text).group(0)
        time.sleep(0.2)
    raise AssertionError(f"no mail to {address} in {outbox}")


def test_day_seven_checklist_in_a_browser(stack, browser, connect):
    base = stack["base"]
    context = browser.new_context(viewport=PHONE, base_url=base)
    page = context.new_page()
    # Stripe Checkout is Stripe's page: the browser is sent there, and here we only stand in for it
    page.route("https://checkout.stripe.test/**", lambda route: route.fulfill(
        status=200, content_type="text/html", body="<h1>Stripe Checkout (test stand-in)</h1>"))

    page.goto("/signup")
    shot(page, "01-signup")
    email = f"browser-{time.time_ns()}@example.com"
    page.fill("#email", email)
    page.fill("#password", "velvet-otter-canyon-42")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/dashboard")
    assert page.inner_text("#credits-badge").strip() == "5 credits"
    assert "Account created! You have 5 free credits." in page.content()
    assert fits_the_screen(page)
    assert page.locator("#verify-banner").count() == 1
    shot(page, "02-dashboard-5-credits")
    # the verification mail (written to the outbox folder: no SMTP in this run) has the link
    page.goto(emailed_link(stack["outbox"], email, "/verify"))
    assert page.locator("#verify-banner").count() == 0

    # generate: watch the job's status and progress move until the video is there
    generate(page, "The history of coffee")
    job = page.locator("li.job").first
    seen = []
    deadline = time.time() + 60
    while time.time() < deadline:
        # one snapshot of the row: the page's poller may replace it between two separate reads
        status, progress, has_video = job.evaluate(
            "li => [li.dataset.status, li.querySelector('progress')?.getAttribute('value') ?? null,"
            " li.querySelector('video') !== null]")
        seen.append((status, progress))
        if status == "completed" and has_video:
            break
        time.sleep(0.1)
    assert seen[0][0] in ("queued", "processing") and seen[-1][0] == "completed", seen
    shot(page, "03-video-ready")
    video = job.locator("video")
    video.evaluate("v => { v.muted = true; return v.play(); }")
    page.wait_for_function("() => { const v = document.querySelector('li.job video');"
                           " return v.readyState >= 2 && v.currentTime > 0.2; }", timeout=20000)
    duration = video.evaluate("v => v.duration")
    assert abs(duration - 20) < 0.6
    assert page.inner_text("#credits-badge").strip() == "4 credits"

    for n in range(4):
        generate(page, f"Another topic number {n + 1}")
    page.wait_for_selector("#upgrade-prompt")
    assert page.inner_text("#credits-badge").strip() == "0 credits"
    shot(page, "04-out-of-credits")

    page.click("#upgrade-prompt a[href='/pricing']")
    page.wait_for_url(f"{base}/pricing")
    assert page.locator("section.plan").count() == 4
    assert fits_the_screen(page)
    shot(page, "05-pricing")
    before = len(stack["proxy"].requests)
    page.click("section.plan[data-tier='starter'] button[type=submit]")
    page.wait_for_url("https://checkout.stripe.test/**")
    sent = stack["proxy"].requests[before].form
    assert sent["line_items[0][price]"] == PRICE and sent["metadata[tier]"] == "starter"

    # what Stripe sends once the customer pays
    subscription = f"sub_browser_{time.time_ns()}"
    for payload in (checkout_completed(sent["metadata[user_id]"], sent["customer"], subscription, "starter"),
                    invoice_paid(sent["customer"], subscription, PRICE, int(time.time()))):
        body, headers = signed(payload, SECRET)
        request = urllib.request.Request(f"{base}/v1/billing/webhook", data=body, headers=headers)
        with urllib.request.urlopen(request) as response:
            assert response.status == 200
    page.goto(sent["success_url"].replace("{CHECKOUT_SESSION_ID}", "cs_test"))
    shot(page, "06-checkout-success")
    page.goto("/billing")
    assert "Starter" in page.inner_text("#plan-name")
    assert page.inner_text("#credits-line").startswith("20 of")
    assert page.inner_text("#credits-badge").strip() == "20 credits"
    assert fits_the_screen(page)
    shot(page, "07-billing-starter")

    page.click("header form button")  # Logout
    page.wait_for_url(f"{base}/login")
    page.goto("/dashboard")
    assert page.url.startswith(f"{base}/login?next=")
    shot(page, "08-logged-out")
    context.close()


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_pages_fit_phone_and_desktop(stack, browser, viewport):
    context = browser.new_context(viewport=viewport, base_url=stack["base"])
    page = context.new_page()
    name = f"{viewport['width']}x{viewport['height']}"
    for path in ("/signup", "/login", "/pricing", "/docs"):
        page.goto(path)
        assert fits_the_screen(page), path
        shot(page, f"layout-{name}{path.replace('/', '-')}")
    page.goto("/signup")
    page.fill("#email", f"layout-{time.time_ns()}@example.com")
    page.fill("#password", "velvet-otter-canyon-42")
    page.click("button[type=submit]")
    for path in ("/dashboard", "/billing", "/account"):
        page.goto(path)
        assert fits_the_screen(page), path
        shot(page, f"layout-{name}{path.replace('/', '-')}")
    context.close()
