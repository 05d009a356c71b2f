"""Fraud flags that block (CONTRACT v2 §5 ``flags``, §6 "flagged ones excepted"), end to end
on SQLite and PostgreSQL: real clicks through ``/c/<token>``, conversions through
``/postback``, then the hold period ends and the scheduled approval runs. Each attack trips one
flag and the conversion is still pending afterwards; an unflagged one is approved. The flags
show in ``GET /api/v1/conversions`` and, with their evidence, on the staff review page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select

from partnernet import clock
from partnernet.conversions.review import approve_matured
from partnernet.extensions import db
from partnernet.models import Conversion
from tests.factories import make_campaign, make_client, make_link, make_partner, make_user
from tests.web.test_api_support import staff_api

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
T0 = datetime(2030, 5, 4, 10, 0, tzinfo=UTC)
PW = "correct horse battery"


@pytest.fixture
def shop(app):
    """A client with a sale (fixed fee), a lead and a percent-of-sale order event, 7 days' hold."""
    clock.set_now(T0)
    adv = make_client()
    camp = make_campaign(adv, hold_days=7, events=[
        {"key": "sale", "client_fee_minor": 1000, "payout_minor": 400},
        {"key": "lead", "client_fee_minor": 300, "payout_minor": 200},
        {"key": "order", "client_fee_percent": "10", "payout_percent": "50"},
    ])
    partner = make_partner()
    return adv, camp, partner, make_link(partner, camp)


def click(app, link, ip: str, ua: str = CHROME) -> str:
    """A visitor (fresh cookie jar) follows the tracking link from ``ip``; returns the click ID."""
    http = app.test_client()
    tok = app.extensions["partnernet_link_signer"].dumps(link.id)
    http.environ_base.pop("HTTP_USER_AGENT", None)
    resp = http.get(f"/c/{tok}", headers={"User-Agent": ua}, environ_base={"REMOTE_ADDR": ip})
    assert resp.status_code == 302
    from urllib.parse import parse_qs, urlsplit

    return parse_qs(urlsplit(resp.headers["Location"]).query)["click_id"][0]


def postback(app, adv, click_id: str, txn: str, event: str = "sale", **extra) -> dict:
    resp = app.test_client().get("/postback", query_string={"key": adv.postback_key, "click_id": click_id,
                                                            "txn_id": txn, "event": event, **extra})
    assert resp.status_code in (200, 201), resp.get_json()
    return resp.get_json()


def conv(conversion_id) -> Conversion:
    db.session.expire_all()
    return db.session.get(Conversion, int(conversion_id))


def after_hold(days: int = 8):
    """Move the clock past the 7-day hold and run the scheduled approval; returns how many it approved."""
    clock.set_now(T0 + timedelta(days=days))
    return approve_matured()


def test_fast_sale_waits_for_staff_a_lead_as_fast_is_approved(app, shop):
    adv, _camp, _p, link = shop
    sale_click, lead_click, slow_click = (click(app, link, f"198.51.100.{n}") for n in (1, 2, 3))
    clock.set_now(T0 + timedelta(seconds=5))  # 5 s after the clicks
    sale = postback(app, adv, sale_click, "S1")
    lead = postback(app, adv, lead_click, "L1", event="lead")
    clock.set_now(T0 + timedelta(minutes=10))
    slow = postback(app, adv, slow_click, "S2")
    assert sale["status"] == lead["status"] == slow["status"] == "pending"
    assert conv(sale["conversion_id"]).flags == ["fast_conversion"]
    assert "under 30 s" in conv(sale["conversion_id"]).flag_evidence["fast_conversion"]
    assert conv(lead["conversion_id"]).flags == [] and conv(slow["conversion_id"]).flags == []

    assert after_hold() == 2
    assert conv(sale["conversion_id"]).status == "pending"  # still waiting for staff
    assert conv(lead["conversion_id"]).status == conv(slow["conversion_id"]).status == "approved"
    assert conv(lead["conversion_id"]).approved_by == "auto"
    assert after_hold(30) == 0  # however long it waits


def test_percent_of_sale_event_is_judged_as_a_sale(app, shop):
    adv, _camp, _p, link = shop
    cid = click(app, link, "198.51.100.9")
    clock.set_now(T0 + timedelta(seconds=10))
    body = postback(app, adv, cid, "O1", event="order", amount="80.00")
    assert conv(body["conversion_id"]).flags == ["fast_conversion"]
    assert after_hold() == 0 and conv(body["conversion_id"]).status == "pending"


def test_click_flood_from_one_ip(app, shop):
    adv, _camp, _p, link = shop
    ids = [click(app, link, "203.0.113.50", ua=f"{CHROME} v{n}") for n in range(20)]  # 20 "visitors", one IP
    other = click(app, link, "203.0.113.51")
    clock.set_now(T0 + timedelta(minutes=5))
    flooded = postback(app, adv, ids[-1], "F1")
    clean = postback(app, adv, other, "F2")
    c = conv(flooded["conversion_id"])
    assert c.flags == ["ip_flood"] and "20 clicks from 203.0.113.50" in c.flag_evidence["ip_flood"]
    assert conv(clean["conversion_id"]).flags == []
    assert after_hold() == 1
    assert conv(flooded["conversion_id"]).status == "pending"
    assert conv(clean["conversion_id"]).status == "approved"


def test_conversion_flood_from_one_ip(app, shop):
    """Five orders in a day on clicks from one IP: the fifth is flagged (the first four were not yet)."""
    adv, _camp, _p, link = shop
    bodies = []
    for n in range(5):
        clock.set_now(T0 + timedelta(minutes=10 * n))
        cid = click(app, link, "192.0.2.77", ua=f"{CHROME} v{n}")
        clock.set_now(T0 + timedelta(minutes=10 * n + 5))
        bodies.append(postback(app, adv, cid, f"C{n}"))
    flags = [conv(b["conversion_id"]).flags for b in bodies]
    assert flags == [[], [], [], [], ["ip_flood"]]
    assert "5 conversions" in conv(bodies[-1]["conversion_id"]).flag_evidence["ip_flood"]
    assert after_hold() == 4 and conv(bodies[-1]["conversion_id"]).status == "pending"


def test_self_referral_from_the_partners_own_sign_in_ip(app, shop):
    adv, _camp, partner, link = shop
    make_user("own@example.com", role="partner", partner_id=partner.id)
    http = app.test_client()
    r = http.post("/login", data={"email": "own@example.com", "password": PW},
                  environ_base={"REMOTE_ADDR": "198.51.100.200"})
    assert r.status_code in (302, 303), r.data[:300]
    own = click(app, link, "198.51.100.200")  # the partner clicks its own link from home
    stranger = click(app, link, "198.51.100.201")
    clock.set_now(T0 + timedelta(minutes=5))
    mine = postback(app, adv, own, "R1")
    theirs = postback(app, adv, stranger, "R2")
    c = conv(mine["conversion_id"])
    assert c.flags == ["self_referral"] and "198.51.100.200" in c.flag_evidence["self_referral"]
    assert conv(theirs["conversion_id"]).flags == []
    assert after_hold() == 1 and conv(mine["conversion_id"]).status == "pending"


def test_env_thresholds_change_the_outcome(app, shop, monkeypatch):
    """With PARTNERNET_FLAG_FAST_SALE_S=0 (read by partnernet.config) the same fast sale is not
    flagged and is approved; with a 20-minute threshold a 10-minute sale is."""
    adv, _camp, _p, link = shop
    monkeypatch.setitem(app.config, "PARTNERNET_FLAG_FAST_SALE_S", 0)
    a = click(app, link, "198.51.100.31")
    clock.set_now(T0 + timedelta(seconds=2))
    quick = postback(app, adv, a, "E1")
    monkeypatch.setitem(app.config, "PARTNERNET_FLAG_FAST_SALE_S", 1200)
    b = click(app, link, "198.51.100.32")
    clock.set_now(T0 + timedelta(minutes=10))
    slow = postback(app, adv, b, "E2")
    assert conv(quick["conversion_id"]).flags == [] and conv(slow["conversion_id"]).flags == ["fast_conversion"]
    monkeypatch.setitem(app.config, "PARTNERNET_FLAG_IP_FLOOD_CLICKS", 2)
    c1, c2 = click(app, link, "198.51.100.33"), click(app, link, "198.51.100.33", ua=CHROME + " x")
    clock.set_now(T0 + timedelta(hours=1))
    flood = postback(app, adv, c2, "E3")
    assert conv(flood["conversion_id"]).flags == ["ip_flood"]
    del c1
    assert after_hold() == 1
    assert conv(quick["conversion_id"]).status == "approved" and conv(slow["conversion_id"]).status == "pending"


def test_client_approval_is_honoured_and_staff_decide_flagged_ones(app, shop, client):
    """A client's status=approved postback approves a flagged conversion (CONTRACT §3 step 5);
    staff may approve or reject a flagged one on the review page."""
    adv, _camp, _p, link = shop
    a, b, c = (click(app, link, f"198.51.100.{n}") for n in (41, 42, 43))
    clock.set_now(T0 + timedelta(seconds=4))
    first = postback(app, adv, a, "A1")
    second = postback(app, adv, b, "A2")
    third = postback(app, adv, c, "A3", status="approved")
    assert all(conv(x["conversion_id"]).flags == ["fast_conversion"] for x in (first, second, third))
    again = postback(app, adv, a, "A1", status="approved")
    assert again["duplicate"] and again["status"] == "approved"
    assert conv(first["conversion_id"]).approved_by == "postback"
    assert conv(third["conversion_id"]).status == "approved"  # created approved by the client

    make_user("boss@example.com")
    assert client.post("/login", data={"email": "boss@example.com", "password": PW}).status_code in (302, 303)
    r = client.post("/staff/conversions/review", data={"action": "reject", "reason": "fraud",
                                                       "ids": [second["conversion_id"]]})
    assert r.status_code == 303
    assert conv(second["conversion_id"]).status == "rejected"


def test_api_and_review_page_show_the_stored_flags(app, shop, client):
    adv, camp, _p, link = shop
    a, b = click(app, link, "198.51.100.61"), click(app, link, "198.51.100.62")
    clock.set_now(T0 + timedelta(seconds=3))
    flagged = postback(app, adv, a, "P1")
    clock.set_now(T0 + timedelta(minutes=3))
    clean = postback(app, adv, b, "P2")

    items = {i["id"]: i for i in staff_api(client).get(f"/conversions?campaign_id={camp.id}").get_json()["items"]}
    assert items[flagged["conversion_id"]]["flags"] == ["fast_conversion"]
    assert items[clean["conversion_id"]]["flags"] == []
    doc = client.get("/api/v1/openapi.json").get_json()
    assert "flags" in doc["components"]["schemas"]["Conversion"]["properties"]

    make_user("boss@example.com")
    assert client.post("/login", data={"email": "boss@example.com", "password": PW}).status_code in (302, 303)
    page = client.get("/staff/conversions").get_data(as_text=True)
    assert "converted too soon after the click" in page and "sale 3 s after the click (under 30 s)" in page
    assert page.count("data-conversion=") == 2
    only = client.get("/staff/conversions?flag=fast_conversion").get_data(as_text=True)
    assert only.count("data-conversion=") == 1 and f'data-conversion="{flagged["conversion_id"]}"' in only
    assert client.get("/staff/conversions?flag=flagged").get_data(as_text=True).count("data-conversion=") == 1
    assert client.get("/staff/conversions?flag=ip_flood").get_data(as_text=True).count("data-conversion=") == 0
    assert client.get("/staff/conversions?flag=bot_click").status_code == 400  # a reason, not a flag


def test_rows_recorded_before_the_column_have_no_flags_and_mature(app, shop):
    """A conversion written without the flags columns (recorded before they existed) reads as
    ``[]`` and is approved when its hold ends."""
    _adv, camp, partner, link = shop
    table = Conversion.__table__
    cols = {c.name for c in table.columns} - {"id", "flags", "flag_evidence"}
    row = {"campaign_id": camp.id, "event_key": "sale", "link_id": link.id, "partner_id": partner.id,
           "click_id": None, "txn_id": "OLD", "dedup_key": "t:OLD", "status": "pending", "reason": None,
           "currency": "USD", "amount_minor": None, "client_fee_minor": 1000, "payout_minor": 400,
           "payout_percent": None, "duration_s": None, "created_at": T0, "click_at": T0, "hold_until": T0,
           "approved_at": None, "approved_by": None, "rejected_at": None, "reversed_at": None,
           "ledger_status": None, "is_test": False}
    stmt = insert(table).values({k: v for k, v in row.items() if k in cols})
    stmt = stmt.execution_options(render_nulls=True)
    cid = db.session.execute(stmt.returning(table.c.id)).scalar()
    db.session.commit()
    raw = db.session.execute(select(table.c.flags, table.c.flag_evidence).where(table.c.id == cid)).one()
    assert list(raw.flags) == [] and dict(raw.flag_evidence) == {}
    assert after_hold() == 1 and conv(cid).status == "approved"


def test_customer_id_equal_to_the_partners_email_is_self_referral(app, shop):
    """The postback's ``customer_id`` (CONTRACT §3 v2), when the recording path passes it on, is
    compared with the partner's emails, case-insensitively; a stranger's ID is not."""
    from partnernet.conversions.flags import FlagSettings, gather_facts

    _adv, camp, partner, link = shop
    event = camp.event("sale")
    base = {"campaign_id": camp.id, "partner_id": partner.id, "click_id": None, "click_at": None,
            "created_at": T0}
    own = gather_facts({**base, "customer_id": f" {partner.email.upper()} "}, event, FlagSettings())
    other = gather_facts({**base, "customer_id": "cust-123"}, event, FlagSettings())
    assert own.customer_is_partner and not other.customer_is_partner
    with_click = gather_facts({**base, "click_id": click(app, link, "198.51.100.90"),
                               "customer_id": partner.email}, event, FlagSettings())
    assert with_click.customer_is_partner and with_click.click_ip == "198.51.100.90"
