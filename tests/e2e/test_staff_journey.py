"""Staff journey in Chromium on the live stack (gunicorn, RQ worker, PostgreSQL, Redis):
approve a partner, review and approve its conversions, create a payout batch, approve it as a
second staff user, export it, mark it paid, and see the partner's balance drop to zero.
Also saves the staff pages' screenshots (desktop and phone) under docs/screenshots/."""

from __future__ import annotations

import json
import os
import re
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import E2E_PG_URL, E2E_REDIS_URL, ensure_database

pytestmark = [pytest.mark.live]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("PARTNERNET_SCREENSHOTS") or ROOT / "docs" / "screenshots")
PW = "staff-password-1"


@pytest.fixture(scope="module")
def live():
    """The live stack with the tables created from the models (the migration for this wave's
    tables is generated later)."""
    from live import LiveStack

    stack = LiveStack(ensure_database(E2E_PG_URL), E2E_REDIS_URL, web_workers=2, proxy_hops=0, schema="create_all")
    stack.start()
    yield stack
    stack.stop()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **kw):
        return None


def api(live, key, method, path, body=None):
    req = urllib.request.Request(live.base_url + "/api/v1" + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read())


def click(live, url) -> str:
    """Follow a tracking link once (as a browser) and return the click ID from the redirect."""
    opener = urllib.request.build_opener(_NoRedirect)
    req = urllib.request.Request(url, headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120"})
    try:
        opener.open(req)
    except urllib.error.HTTPError as err:
        assert err.code == 302
        return re.search(r"click_id=([^&#]+)", err.headers["Location"]).group(1)
    raise AssertionError("no redirect")


def postback(live, **params) -> dict:
    url = live.base_url + "/postback?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url) as resp:
        return json.loads(resp.read())


def sign_in(page, live, email):
    page.goto(live.base_url + "/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PW)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/staff/$"))


def shoot(page, name):
    if not os.environ.get("PARTNERNET_SCREENSHOTS"):  # docs screenshots only when asked for
        return
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"staff-{name}-desktop.png"), full_page=True)


def test_staff_payout_cycle(live, page, phone_page, tmp_path):
    live.create_user("maker@example.com", role="staff", password=PW)
    live.create_user("checker@example.com", role="staff", password=PW)
    key = live.create_api_key("maker@example.com")
    client = api(live, key, "POST", "/clients", {"name": "Acme Shoes", "currency": "USD",
                                                 "website_url": "https://acme.example"})
    camp = api(live, key, "POST", "/campaigns", {
        "client_id": client["id"], "name": "Spring sale", "destination_url": "https://acme.example/spring",
        "hold_days": 30, "default_event": "sale",
        "events": [{"key": "sale", "label": "Sale", "client_fee": "12.00", "payout": "7.50"}]})
    partner = api(live, key, "POST", "/partners", {"email": "ada@example.com", "name": "Ada Creator",
                                                   "kind": "influencer"})
    pid = partner["id"]

    # 1. Approve the partner's application.
    sign_in(page, live, "maker@example.com")
    shoot(page, "dashboard")
    page.click("text=Partners")
    shoot(page, "partners")
    page.click("text=Ada Creator")
    page.click("button:has-text('Approve')")
    expect(page.locator("text=Ada Creator is now approved").first).to_be_visible()

    # The partner gets a link; three sales come in by postback.
    link = api(live, key, "POST", "/links", {"partner_id": pid, "campaign_id": camp["id"]})
    for n in range(3):
        cid = click(live, link["url"])
        assert postback(live, key=client["postback_key"], click_id=cid, txn_id=f"order-{n}")["status"] == "pending"
    assert live.drain().ok

    # 2. Review: tick all three and approve them.
    page.goto(live.base_url + "/staff/conversions")
    expect(page.locator("tr[data-conversion]")).to_have_count(3)
    shoot(page, "review")
    page.check("#check-all")
    page.click("button:has-text('Approve selected')")
    expect(page.locator("text=3 conversion(s) approved").first).to_be_visible()

    # 3. Create a batch with a minimum of 20.00: Ada's 22.50 qualifies.
    page.goto(live.base_url + "/staff/payouts")
    page.fill("input[name=currency]", "USD")
    page.fill("input[name=min_amount]", "20.00")
    page.click("button:has-text('Create draft batch')")
    expect(page.locator("#batch-total")).to_have_text("$22.50")
    batch_url = page.url
    # The maker cannot approve its own batch.
    page.click("#approve-batch")
    expect(page.locator("text=other than its creator").first).to_be_visible()
    page.click("button:has-text('Sign out')")

    # 4. A second staff user approves it, exports both files and marks it paid.
    sign_in(page, live, "checker@example.com")
    page.goto(batch_url)
    page.click("#approve-batch")
    expect(page.locator("#batch-status")).to_have_text("approved")
    with page.expect_download() as dl:
        page.click("#export-bank")
    bank = Path(dl.value.path()).read_bytes().decode()
    assert bank == ("partner_id,name,payout_email,amount,currency,payout_method,iban,bic,account_holder\r\n"
                    f"{pid},Ada Creator,ada@example.com,22.50,USD,paypal,,,\r\n")
    with page.expect_download() as dl:
        page.click("#export-paypal")
    batch_id = batch_url.rstrip("/").rsplit("/", 1)[1]
    assert Path(dl.value.path()).read_bytes().decode() == \
        f"ada@example.com,22.50,USD,partner-{pid},PartnerNet payout batch {batch_id},PAYPAL\r\n"
    shoot(page, "payout-batch")
    page.click("#mark-paid")
    expect(page.locator("#batch-status")).to_have_text("paid")

    # 5. The partner's balance is zero; the API agrees.
    page.goto(f"{live.base_url}/staff/partners/{pid}")
    expect(page.locator("td.balance[data-currency=USD]")).to_have_text("$0.00")
    shoot(page, "partner")
    earnings = api(live, key, "GET", f"/partners/{pid}/earnings")["items"]
    assert earnings == [{"currency": "USD", "pending": "0.00", "approved": "22.50", "paid": "22.50",
                         "balance": "0.00"}]
    assert live.ledger_verify().ok

    page.goto(live.base_url + "/staff/payouts")
    shoot(page, "payouts")
    page.goto(f"{live.base_url}/staff/campaigns/{camp['id']}/postback")
    page.click("#send-test")
    expect(page.locator("#test-answer")).to_contain_text('"status": "pending"')
    shoot(page, "postback-setup")
    page.goto(live.base_url + "/staff/audit")
    shoot(page, "audit")
    page.goto(live.base_url + "/staff/")
    shoot(page, "dashboard")

    # Phone-width views of the main pages.
    sign_in(phone_page, live, "checker@example.com")
    for name, path in [("dashboard", "/staff/"), ("review", "/staff/conversions?status="),
                       ("payout-batch", batch_url.replace(live.base_url, "")), ("audit", "/staff/audit")]:
        phone_page.goto(live.base_url + path)
        if os.environ.get("PARTNERNET_SCREENSHOTS"):
            phone_page.screenshot(path=str(SHOTS / f"staff-{name}-phone.png"), full_page=True)
