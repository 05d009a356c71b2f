"""The live stack serves pages that Chromium renders, and a staff user can sign in."""

import pytest

pytestmark = [pytest.mark.live]


def test_sign_in_in_a_real_browser(live, page):
    live.create_user("smoke.staff@example.com", role="staff", password="smoke-password-1")
    page.goto(live.base_url + "/login")
    page.fill("input[name=email]", "Smoke.Staff@example.com")
    page.fill("input[name=password]", "smoke-password-1")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert page.locator("text=smoke.staff@example.com").count() >= 1
    assert "/login" not in page.url
