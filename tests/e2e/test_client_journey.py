"""The client journey in Chromium against a live stack (issue 5): sign in, see spend, pause a
campaign, its tracking link goes to the fallback, resume, back to the destination. Also takes
the docs screenshots of the main client pages (desktop and phone) under docs/screenshots/."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import E2E_PG_URL, E2E_REDIS_URL, ensure_database

pytestmark = [pytest.mark.live]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("PARTNERNET_SCREENSHOTS") or ROOT / "docs" / "screenshots")
PW = "client-password-1"
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"


@pytest.fixture(scope="module")
def live():
    """The live stack with the schema made from the models (the client tables are newer than the
    committed migration until the next migration is generated)."""
    from live import LiveStack

    stack = LiveStack(ensure_database(E2E_PG_URL), E2E_REDIS_URL, web_workers=2, proxy_hops=0, schema="create_all")
    stack.start()
    yield stack
    stack.stop()


def _api(live, key, method, path, body=None):
    r = requests.request(method, live.base_url + "/api/v1" + path, json=body,
                         headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code < 300, (path, r.status_code, r.text)
    return r.json()


def _follow_once(url: str) -> str:
    r = requests.get(url, allow_redirects=False, headers={"User-Agent": CHROME}, timeout=30)
    assert r.status_code == 302, r.status_code
    return r.headers["Location"]


def _login(page, live, email):
    page.goto(live.base_url + "/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PW)
    page.click("button[type=submit]")
    page.wait_for_url("**/client/")


def _shot(page, name):
    if not os.environ.get("PARTNERNET_SCREENSHOTS"):  # docs screenshots only when asked for
        return
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_client_pauses_and_resumes_a_campaign(live, page, phone_page):
    live.create_user("ops@agency.example", role="staff", password=PW)
    staff_key = live.create_api_key("ops@agency.example")
    live.create_user("owner@brightshop.example", role="client", password=PW)
    (client_id, pb_key), = live.sql("SELECT c.id, c.postback_key FROM clients c JOIN users u ON u.client_id = c.id "
                                    "WHERE u.email = 'owner@brightshop.example'")
    camp = _api(live, staff_key, "POST", "/campaigns", {
        "client_id": str(client_id), "name": "Spring sale", "destination_url": "https://shop.example/spring",
        "fallback_url": "https://shop.example/sold-out", "budget": "500.00", "default_event": "sale",
        "events": [{"key": "sale", "label": "Sale", "client_fee_percent": "10", "payout_percent": "60"},
                   {"key": "lead", "label": "Newsletter sign-up", "client_fee": "2.00", "payout": "1.20"}]})
    partner = _api(live, staff_key, "POST", "/partners",
                   {"email": "maya@creators.example", "name": "Maya Creates", "kind": "influencer"})
    _api(live, staff_key, "POST", f"/partners/{partner['id']}/approve")
    link = _api(live, staff_key, "POST", "/links", {"partner_id": partner["id"], "campaign_id": camp["id"],
                                                     "channel": "social"})
    # Some spend: two sales and a lead through the real postback.
    for i, (event, amount) in enumerate([("sale", "129.90"), ("sale", "80.00"), ("lead", None)]):
        loc = _follow_once(link["url"])
        click_id = loc.split("click_id=")[1].split("&")[0]
        q = {"key": pb_key, "click_id": click_id, "event": event, "txn_id": f"ORD-{i}"}
        if amount:
            q["amount"] = amount
        assert requests.get(live.base_url + "/postback", params=q, timeout=30).status_code == 201
    month = datetime.now(UTC).strftime("%Y-%m")
    assert live.drain().ok
    assert live.flask("invoices", "build", "--month", month).ok
    assert live.drain().ok

    _login(page, live, "Owner@BrightShop.example")
    spend = page.locator("[data-kpi=spend]").inner_text()
    assert spend == "$22.99"  # 10% of 129.90 (12.99) + 10% of 80.00 (8.00) + a lead at 2.00
    _shot(page, "client-home-desktop")
    page.click("text=Spring sale")
    page.wait_for_url(f"**/client/campaigns/{camp['id']}")
    _shot(page, "client-campaign-desktop")
    assert _follow_once(link["url"]).startswith("https://shop.example/spring")
    page.click("button[data-action=pause]")
    page.wait_for_selector("button[data-action=resume]")
    assert page.locator("[data-status]").get_attribute("data-status") == "paused"
    assert _follow_once(link["url"]) == "https://shop.example/sold-out"
    page.click("button[data-action=resume]")
    page.wait_for_selector("button[data-action=pause]")
    assert _follow_once(link["url"]).startswith("https://shop.example/spring")
    for path, name in [("/client/conversions", "client-conversions"), ("/client/reports?group_by=day", "client-reports"),
                       ("/client/invoices", "client-invoices"), ("/client/postback", "client-postback")]:
        page.goto(live.base_url + path)
        _shot(page, name + "-desktop")
    page.goto(live.base_url + "/client/invoices")
    page.click("table a >> nth=0")
    assert page.locator("[data-field=total]").inner_text() == spend
    _shot(page, "client-invoice-desktop")

    _login(phone_page, live, "owner@brightshop.example")
    _shot(phone_page, "client-home-phone")
    phone_page.goto(live.base_url + f"/client/campaigns/{camp['id']}")
    _shot(phone_page, "client-campaign-phone")
    phone_page.goto(live.base_url + "/client/reports?group_by=day")
    _shot(phone_page, "client-reports-phone")
