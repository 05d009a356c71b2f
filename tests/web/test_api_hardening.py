"""Inputs that used to crash with a 500 (on SQLite or PostgreSQL): text that cannot be stored,
numbers beyond the columns, dates at the end of the calendar, too large bodies. Each answers a
4xx with a code (CONTRACT §5 errors; ``bad_text`` and ``too_large`` are project codes)."""

from __future__ import annotations

import pytest

from partnernet.extensions import db
from partnernet.ids import MAX_BIG_ID, MAX_ID
from partnernet.models import Campaign
from tests.factories import make_campaign, make_client, make_user
from tests.web.test_api_support import assert_error, campaign_body, staff_api

PW = "correct horse battery"


def _raw_post(api, path: str, text: str):
    return api.client.post("/api/v1" + path, data=text.encode("ascii"), content_type="application/json",
                           headers=api._headers())


@pytest.mark.parametrize("name", ["a\\ud800b", "a\\u0000b", "\\udfff"])
def test_api_text_with_surrogate_or_nul_is_bad_text(client, name):
    api = staff_api(client)
    body = '{"name": "%s", "currency": "USD", "website_url": "https://acme.example/"}' % name
    assert_error(_raw_post(api, "/clients", body), 400, "bad_text", "name")


def test_api_bad_text_in_nested_values_and_keys(client):
    acme = make_client()
    api = staff_api(client)
    body = campaign_body(acme.id)
    body["events"][1]["label"] = "Le\x00ad"
    assert_error(api.post("/campaigns", body), 400, "bad_text", "events[1].label")
    assert_error(_raw_post(api, "/clients", '{"na\\ud800me": "x"}'), 400, "bad_text")
    assert_error(api.get("/clients?name=a%00b"), 400, "bad_text", "name")


@pytest.mark.parametrize("field", ["budget", "client_fee", "min_amount"])
@pytest.mark.parametrize("value", ["99999999999999999999", "92233720368547758.07", "1000000000000.01"])
def test_api_huge_money_is_bad_amount(client, field, value):
    acme = make_client()
    api = staff_api(client)
    body = campaign_body(acme.id)
    if field == "budget":
        body["budget"] = value
    else:
        event = next(e for e in body["events"] if field in e)
        event[field] = value
    resp = api.post("/campaigns", body)
    assert_error(resp, 400, "bad_amount")
    assert db.session.query(Campaign).count() == 0


def test_api_largest_budget_is_kept(client):
    acme = make_client()
    resp = staff_api(client).post("/campaigns", campaign_body(acme.id, budget="1000000000000.00"))
    assert resp.status_code == 201 and resp.get_json()["budget"] == "1000000000000.00"


def test_api_ids_beyond_the_key_columns(client):
    api = staff_api(client)
    for big in (str(MAX_ID + 1), "999999999999999999", "99999999999999999999999"):
        assert_error(api.get(f"/campaigns/{big}"), 404, "not_found")
        assert_error(api.get(f"/clients/{big}"), 404, "not_found")
        assert_error(api.get(f"/conversions?campaign_id={big}"), 400, "bad_id", "campaign_id")
    assert_error(api.get(f"/conversions/{MAX_BIG_ID}"), 404, "not_found")
    assert_error(api.get(f"/conversions/{MAX_BIG_ID + 1}"), 404, "not_found")
    assert api.get(f"/clients?cursor={MAX_ID}").get_json() == {"items": [], "next": None}
    assert api.get(f"/conversions?cursor={MAX_BIG_ID}").get_json() == {"items": [], "next": None}


def test_api_report_at_the_end_of_the_calendar_is_bad_range(client):
    api = staff_api(client)
    assert_error(api.get("/reports?group_by=day&from=9999-12-30&to=9999-12-31"), 400, "bad_range")
    assert_error(api.get("/reports?group_by=day&from=0001-01-01&to=0001-01-02&tz=Asia/Tokyo"), 400, "bad_range")


def test_api_too_large_body_is_413_json(client):
    api = staff_api(client)
    big = '{"name": "%s"}' % ("x" * (1024 * 1024 + 1))
    assert_error(_raw_post(api, "/clients", big), 413, "too_large")


def _staff(client):
    make_user("boss@example.com")
    assert client.post("/login", data={"email": "boss@example.com", "password": PW}).status_code == 302


def test_web_ids_and_dates_beyond_range(client):
    _staff(client)
    acme = make_client()
    camp = make_campaign(acme)
    for path in (f"/staff/campaigns/{MAX_ID + 1}", "/staff/campaigns/99999999999999999999999",
                 "/client/campaigns/99999999999999999999999"):
        assert client.get(path).status_code == 404, path
    assert client.get(f"/staff/campaigns/{camp.id}").status_code == 200
    for path in ("/staff/audit?actor=9999999999999999999999", f"/staff/audit?actor={MAX_ID + 1}",
                 "/staff/audit?to=9999-12-31", "/staff/audit?from=0001-01-01&to=9999-12-31"):
        assert client.get(path).status_code == 200, path
    resp = client.get("/reports?group_by=day&from=9999-12-30&to=9999-12-31")
    assert resp.status_code == 400


def test_client_report_page_at_the_end_of_the_calendar(client):
    acme = make_client()
    make_user("owner@acme.example", role="client", client_id=acme.id)
    assert client.post("/login", data={"email": "owner@acme.example", "password": PW}).status_code == 302
    assert client.get("/client/reports?group_by=day&from=9999-12-30&to=9999-12-31").status_code == 400
    assert client.get("/client/campaigns/99999999999999999999999").status_code == 404


@pytest.mark.parametrize("value", ["a\x00b"])
def test_web_form_with_nul_is_a_form_error(client, value):
    resp = client.post("/signup", data={"email": "ann@example.com", "name": value, "password": PW})
    assert resp.status_code == 400 and b"NUL" in resp.data
    resp = client.post("/login", data={"email": value, "password": PW})
    assert resp.status_code == 400
    resp = client.get("/login?next=%00")
    assert resp.status_code == 400


def test_web_form_too_large_is_413(client):
    resp = client.post("/login", data={"email": "x" * (1024 * 1024 + 1), "password": PW})
    assert resp.status_code == 413 and b"too large" in resp.data
