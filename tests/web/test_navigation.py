"""The navigation marks the current section (issue: a day's work in the browser, item 5):
exactly one link carries ``aria-current="page"``, on list and detail pages alike, for each role."""

from __future__ import annotations

import re

import pytest

from tests.factories import make_campaign, make_client, make_link, make_partner, make_user

PW = "correct horse battery"
CURRENT = re.compile(r'<a href="([^"]+)" aria-current="page">([^<]+)</a>')


def _current(http, url):
    resp = http.get(url)
    assert resp.status_code == 200, (url, resp.data[:300])
    html = resp.get_data(as_text=True)
    nav = html.split('<nav aria-label="Main">', 1)[1].split("</nav>", 1)[0]
    return CURRENT.findall(nav)


def _login(http, email):
    assert http.post("/login", data={"email": email, "password": PW}).status_code == 302


@pytest.fixture
def world(app):
    client = make_client()
    camp = make_campaign(client)
    partner = make_partner()
    link = make_link(partner, camp)
    make_user("boss@example.com")
    make_user("p@example.com", role="partner", partner_id=partner.id)
    make_user("c@example.com", role="client", client_id=client.id)
    return {"client": client, "camp": camp, "partner": partner, "link": link}


def test_staff_sections(app, client, world):
    _login(client, "boss@example.com")
    for url, label in [("/staff/", "Dashboard"), ("/staff/partners", "Partners"),
                       (f"/staff/partners/{world['partner'].id}", "Partners"), ("/staff/campaigns", "Campaigns"),
                       (f"/staff/campaigns/{world['camp'].id}", "Campaigns"), ("/staff/campaigns/new", "Campaigns"),
                       (f"/staff/clients/{world['client'].id}", "Clients"), ("/staff/conversions", "Review"),
                       ("/reports", "Reports"), ("/account", "Account")]:
        assert [x[1] for x in _current(client, url)] == [label], url


def test_partner_sections(app, client, world):
    _login(client, "p@example.com")
    for url, label in [("/partner/", "Home"), ("/partner/links", "Links"),
                       (f"/partner/links/{world['link'].id}", "Links"), ("/partner/earnings", "Earnings")]:
        assert [x[1] for x in _current(client, url)] == [label], url


def test_client_sections(app, client, world):
    _login(client, "c@example.com")
    for url, label in [("/client/", "Campaigns"), (f"/client/campaigns/{world['camp'].id}", "Campaigns"),
                       ("/client/conversions", "Conversions"), ("/client/invoices", "Invoices")]:
        assert [x[1] for x in _current(client, url)] == [label], url
