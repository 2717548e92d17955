"""The Branding page in a real browser (Debian's Chromium via Playwright, against the live
gunicorn + worker stack of tests/test_browser.py): a Pro customer uploads a logo through
the file input and picks colours, sees the stored logo, and a hostile file is refused on
the page; axe-core finds nothing serious at phone and desktop widths. Screenshots land in
tests/artifacts/branding-*."""
from __future__ import annotations

import time

import pytest

from .test_branding import SVG, logo_png
from .test_browser import (CHROMIUM, DESKTOP, PHONE, axe_violations, browser_type_launch_args, fits_the_screen,  # noqa: F401
                           shot, stack, watch_console)

pytestmark = pytest.mark.skipif(not __import__("pathlib").Path(CHROMIUM).exists(),
                                reason="Debian's chromium is not installed (make test installs it)")


def pro_page(stack, browser, viewport, tmp_path):
    context = browser.new_context(viewport=viewport, base_url=stack["base"])
    page = context.new_page()
    email = f"brand-{time.time_ns()}@example.com"
    page.goto("/signup")
    page.fill("#email", email)
    page.fill("#password", "velvet-otter-canyon-42")
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard")
    admin = stack["admin"]
    user_id = admin.execute("select id from users where email = %s", (email,)).fetchone()["id"]
    admin.execute("update subscriptions set tier = 'pro' where user_id = %s", (user_id,))
    admin.execute("update users set is_verified = true where id = %s", (user_id,))
    return context, page, user_id


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_a_pro_customer_brands_their_videos_on_the_page(stack, browser, viewport, tmp_path):
    context, page, user_id = pro_page(stack, browser, viewport, tmp_path)
    errors = watch_console(page)
    page.goto("/dashboard")
    page.click("nav a[href='/branding']")
    page.wait_for_selector("#branding-form")
    assert axe_violations(page) == [] and fits_the_screen(page)
    logo = tmp_path / "logo.png"
    logo.write_bytes(logo_png())
    page.set_input_files("#logo", str(logo))
    page.fill("#primary_colour", "#10785a")
    page.fill("#accent_colour", "#ff7828")
    page.click("#branding-form button[type=submit]")
    page.wait_for_selector(".flash-success")
    assert "Your branding is saved" in page.inner_text("main")
    # the preview is the stored logo, loaded and decoded by the browser
    assert page.evaluate("() => document.querySelector('#brand-logo').naturalWidth") == 400
    assert page.input_value("#primary_colour") == "#10785a"
    assert axe_violations(page) == [] and fits_the_screen(page)
    shot(page, f"branding-{viewport['width']}-saved")

    svg = tmp_path / "logo.svg"
    svg.write_bytes(SVG)
    page.set_input_files("#logo", str(svg))
    page.click("#branding-form button[type=submit]")
    page.wait_for_selector(".field-error")
    assert "SVG" in page.inner_text(".field-error")
    assert axe_violations(page) == []
    shot(page, f"branding-{viewport['width']}-refused")
    stored = stack["admin"].execute("select primary_colour, length(logo_png) > 0 as has_logo from brands "
                                    "where user_id = %s", (user_id,)).fetchone()
    assert stored == {"primary_colour": "#10785a", "has_logo": True}
    assert [e for e in errors if "422" not in e] == [], errors
    context.close()
