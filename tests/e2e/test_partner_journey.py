"""A new partner's journey in Chromium: sign up, confirm the email, get approved by staff, sign
in, apply to a campaign, build a link, click it, the advertiser posts a conversion, the worker
splits it, and the earnings page shows the conversion and its split.

With ``PARTNERNET_SCREENSHOTS=<dir>`` it also saves each main partner page at desktop and
phone width (docs/screenshots/partner-<page>-{desktop,phone}.png).
"""

import os
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

pytestmark = [pytest.mark.live]

PW = "Sunny-Meadow-42"
EMAIL = "Journey.Partner@example.com"
SHOTS = os.environ.get("PARTNERNET_SCREENSHOTS")
PAGES = [("home", "/partner/"), ("campaigns", "/partner/campaigns"), ("link-builder", "/partner/links/new"),
         ("links", "/partner/links"), ("earnings", "/partner/earnings"), ("profile", "/partner/profile"),
         ("postbacks", "/partner/postbacks")]


@pytest.fixture(scope="module")
def live():
    """The live stack with the schema made from the models (the portal's tables are newer than
    the migration)."""
    from live import LiveStack

    from tests.e2e.conftest import E2E_PG_URL, E2E_REDIS_URL, ensure_database

    stack = LiveStack(ensure_database(E2E_PG_URL), E2E_REDIS_URL, web_workers=2, proxy_hops=0, schema="create_all")
    stack.start()
    yield stack
    stack.stop()


def _shot(page, name, width):
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"partner-{name}-{width}.png"), full_page=True)


def _sign_in(page, base):
    page.goto(base + "/login")
    page.fill("input[name=email]", EMAIL.upper())
    page.fill("input[name=password]", PW)
    page.click("main button[type=submit]")
    page.wait_for_url(re.compile(r".*/partner/$"))


def test_partner_journey(live, page, browser):
    base = live.base_url
    live.create_user("journey.staff@example.com", role="staff", password="staff-password-1")
    staff = {"Authorization": f"Bearer {live.create_api_key('journey.staff@example.com')}"}
    client = requests.post(f"{base}/api/v1/clients", headers=staff, timeout=10,
                           json={"name": "Sunrise Shoes", "currency": "USD", "website_url": "https://shoes.example/"})
    assert client.status_code == 201, client.text
    client = client.json()
    camp = requests.post(f"{base}/api/v1/campaigns", headers=staff, timeout=10, json={
        "client_id": client["id"], "name": "Sunrise Shoes spring sale", "destination_url": f"{base}/healthz",
        "deep_link_hosts": ["shoes.example"], "hold_days": 30, "default_event": "sale", "visibility": "approval",
        "events": [{"key": "sale", "label": "sale", "client_fee_percent": "10", "payout_percent": "60"}]})
    assert camp.status_code == 201, camp.text
    camp = camp.json()

    # 1. sign up
    page.goto(base + "/signup")
    _shot(page, "signup", "desktop")
    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=password]", PW)
    page.fill("input[name=name]", "Journey Deals")
    page.check("input[name=kind][value=affiliate]")
    page.fill("input[name=website]", "https://journey.example/")
    page.fill("input[name=audience_size]", "12000")
    page.check("input[name=channels][value=content]")
    page.check("input[name=payout_method][value=paypal]")
    page.fill("input[name=paypal_email]", "pay@journey.example")
    page.select_option("select[name=timezone]", "Europe/Berlin")
    page.check("input[name=accept_terms]")
    page.click("main button[type=submit]")
    page.wait_for_selector("text=Check your email")

    # 2. confirm the email with the link from the outbox
    body = live.sql("SELECT body FROM outbox_emails WHERE to_addr = %s AND kind = 'confirm_email'",
                    (EMAIL.lower(),))[0][0]
    confirm = re.search(r"(http://\S+/signup/confirm/\S+)", body).group(1)
    page.goto(confirm)
    page.wait_for_selector("text=Email confirmed")

    # the partner signs in and sees that it waits for approval
    _sign_in(page, base)
    assert page.locator("text=reviews your application").count() == 1

    # 3. staff approves the partner (JSON API)
    pid = live.sql("SELECT partner_id FROM users WHERE email = %s", (EMAIL.lower(),))[0][0]
    r = requests.post(f"{base}/api/v1/partners/{pid}/approve", headers=staff, timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "approved", r.text

    # 4. apply; staff approves the application
    page.goto(base + "/partner/campaigns")
    assert page.locator("text=6% of each sale").count() == 1
    page.click("form[action$='/apply'] button")
    page.wait_for_selector("text=application pending")
    app_id = live.sql("SELECT id FROM campaign_applications WHERE partner_id = %s", (pid,))[0][0]
    res = live.python("from partnernet import create_app\nfrom partnernet.partners.applications import "
                      "approve_application\napp = create_app()\nwith app.app_context():\n"
                      f"    approve_application({app_id}, None)\n")
    assert res.ok, res.stderr

    # 5. build a link with a sub ID
    page.goto(base + "/partner/links/new")
    page.select_option("select[name=campaign_id]", str(camp["id"]))
    page.fill("input[name=sub1]", "spring-post")
    page.click("main button[type=submit]")
    page.wait_for_selector("#tracking-url")
    url = page.input_value("#tracking-url")
    assert "/c/" in url and "sub1=spring-post" in url and page.locator("svg.qr").count() == 1

    # 6. a visitor opens the link; the advertiser's page receives a click ID
    # headless Chromium says "HeadlessChrome", which the tracker rightly counts as a bot
    visitor = browser.new_context(user_agent="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 "
                                             "(KHTML, like Gecko) Chrome/126.0 Safari/537.36")
    vpage = visitor.new_page()
    vpage.goto(url)
    click_id = parse_qs(urlsplit(vpage.url).query)["click_id"][0]
    visitor.close()

    # 7. the advertiser's server posts the sale
    r = requests.get(f"{base}/postback", timeout=10, params={
        "key": client["postback_key"], "click_id": click_id, "txn_id": "ORDER-1001", "amount": "80.00"})
    assert r.status_code == 201, r.text

    # 8. the worker splits it; the earnings page shows the conversion and its split
    assert live.drain().ok
    page.goto(base + "/partner/earnings")
    text = page.inner_text("main")
    assert "Sunrise Shoes spring sale" in text and "$80.00" in text and "$4.80" in text and "pending" in text
    assert "spring-post" in text
    page.click("a[href*='/partner/conversions/']")
    page.wait_for_selector("text=You (converter)")
    assert "$4.80" in page.inner_text("main")

    if SHOTS:
        for name, path in PAGES:
            page.goto(base + path)
            _shot(page, name, "desktop")
        page.goto(base + f"/partner/links/{live.sql('SELECT id FROM links WHERE partner_id = %s', (pid,))[0][0]}"
                  "?sub1=spring-post")
        _shot(page, "link", "desktop")
        phone = browser.new_context(viewport={"width": 390, "height": 844})
        ppage = phone.new_page()
        ppage.goto(base + "/signup")
        _shot(ppage, "signup", "phone")
        _sign_in(ppage, base)
        for name, path in PAGES:
            ppage.goto(base + path)
            _shot(ppage, name, "phone")
        ppage.goto(page.url)
        _shot(ppage, "link", "phone")
        phone.close()
