"""Client pages (issue 5): own data only (404 otherwise), pause/resume, budget and caps, postback
setup, invoices (HTML and CSV) and the report page with CSV, for every role's /reports."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from partnernet import clock
from partnernet.clients import invoices
from partnernet.extensions import db
from partnernet.models import Campaign
from tests.factories import make_campaign, make_client, make_link, make_partner, make_user

PW = "correct horse battery"


@pytest.fixture
def world(app, client):
    adv = make_client(name="Shop")
    camp = make_campaign(adv, budget_minor=50000)
    other = make_client(name="Rival")
    other_camp = make_campaign(other)
    link = make_link(make_partner(), camp)
    make_user("owner@shop.example", role="client", client_id=adv.id)
    client.post("/login", data={"email": "owner@shop.example", "password": PW})
    return adv, camp, other, other_camp, link


def test_overview_shows_own_campaigns_only(client, world):
    _adv, camp, _other, other_camp, _ = world
    page = client.get("/client/")
    assert page.status_code == 200
    assert camp.name.encode() in page.data and other_camp.name.encode() not in page.data
    assert b"$500.00" in page.data  # the budget
    assert client.get(f"/client/campaigns/{other_camp.id}").status_code == 404
    assert client.post(f"/client/campaigns/{other_camp.id}/status", data={"status": "paused"}).status_code == 404


def test_pause_resume_and_limits(app, client, world):
    _adv, camp, *_ = world
    r = client.post(f"/client/campaigns/{camp.id}/status", data={"status": "paused", "back": f"/client/campaigns/{camp.id}"})
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/client/campaigns/{camp.id}")
    db.session.expire_all()
    assert db.session.get(Campaign, camp.id).status == "paused"
    client.post(f"/client/campaigns/{camp.id}/status", data={"status": "active"})
    db.session.expire_all()
    assert db.session.get(Campaign, camp.id).status == "active"
    assert client.post(f"/client/campaigns/{camp.id}/status", data={"status": "gone"}).status_code == 400
    r = client.post(f"/client/campaigns/{camp.id}", data={"budget": "750.00", "daily_cap": "20", "monthly_cap": ""})
    assert r.status_code == 302
    db.session.expire_all()
    c = db.session.get(Campaign, camp.id)
    assert (c.budget_minor, c.daily_cap_minor, c.monthly_cap_minor) == (75000, 2000, None)
    r = client.post(f"/client/campaigns/{camp.id}", data={"budget": "1.234"})
    assert r.status_code == 400 and b"digits" in r.data or b"decimal" in r.data
    r = client.post(f"/client/campaigns/{camp.id}", data={"budget": "abc"})
    assert r.status_code == 400


def test_postback_setup_and_conversions(app, client, world):
    adv, _camp, *_ = world
    page = client.get("/client/postback")
    assert page.status_code == 200 and adv.postback_key.encode() in page.data and b"sig=" in page.data
    assert client.get("/client/conversions?status=nonsense").status_code == 200


def test_invoices_pages_scope_and_csv(app, client, world):
    adv, _camp, other, other_camp, link = world
    clock.set_now(datetime(2024, 2, 10, 15, tzinfo=UTC))
    cid = app.extensions["partnernet_click_signer"].make(link.id, int(clock.utcnow().timestamp()))
    client.get("/postback", query_string={"key": adv.postback_key, "click_id": cid, "txn_id": "ORD-9"})
    (inv,) = invoices.build_invoice(adv.id, 2024, 2)
    rival_link = make_link(make_partner(), other_camp)
    cid = app.extensions["partnernet_click_signer"].make(rival_link.id, int(clock.utcnow().timestamp()))
    client.get("/postback", query_string={"key": other.postback_key, "click_id": cid, "txn_id": "R-1"})
    (rival,) = invoices.build_invoice(other.id, 2024, 2)
    assert client.get("/client/invoices").status_code == 200
    page = client.get(f"/client/invoices/{inv.id}")
    assert page.status_code == 200 and b"ORD-9" in page.data and b"$10.00" in page.data
    csv_text = client.get(f"/client/invoices/{inv.id}.csv").get_data(as_text=True)
    assert "ORD-9" in csv_text and csv_text.splitlines()[-1].endswith("10.00,USD")
    assert client.get(f"/client/invoices/{rival.id}").status_code == 404
    assert client.get(f"/client/invoices/{rival.id}.csv").status_code == 404


def test_report_page_and_csv_for_each_role(app, client, world):
    _adv, _camp, *_ = world
    page = client.get("/client/reports?group_by=campaign&from=2024-01-01&to=2024-01-31")
    assert page.status_code == 200 and b"Reports" in page.data
    assert client.get("/reports?group_by=day&from=2024-01-31&to=2024-01-01").status_code == 400
    assert client.get("/client/reports?tz=Mars/Base").status_code == 400
    csv_resp = client.get("/client/reports?group_by=day&from=2024-01-01&to=2024-01-02&format=csv")
    assert csv_resp.mimetype == "text/csv" and csv_resp.get_data(as_text=True).startswith("key,label,currency")
    from flask import g

    g.pop("_login_user", None)  # the tests' shared app context caches the signed-in user in g
    anon = app.test_client()
    assert anon.get("/client/").status_code == 302  # to the sign-in page
    staff = app.test_client()
    make_user("boss@agency.example", role="staff")
    staff.post("/login", data={"email": "boss@agency.example", "password": PW})
    g.pop("_login_user", None)
    assert staff.get("/reports").status_code == 200
    assert staff.get("/client/").status_code == 404
