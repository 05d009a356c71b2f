"""Daily and monthly spend caps in the client's time zone (issue 5; partnernet.clients.caps),
on SQLite and PostgreSQL: conversions past a cap are rejected, clicks go to the fallback while a
cap is reached, and both recover when the window turns or spend drops."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from partnernet import clock
from partnernet.clients.services import set_campaign_limits
from partnernet.errors import NotFound, ValidationError
from partnernet.extensions import db
from partnernet.models import Campaign, Click, Conversion
from tests.factories import make_campaign, make_client, make_link, make_partner

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
EVENTS = [{"key": "sale", "client_fee_minor": 1000, "payout_percent": "50"}]


def _setup(tz="America/Chicago", **camp_kw):
    adv = make_client()
    adv.timezone = tz
    db.session.commit()
    caps = {k: camp_kw.pop(k) for k in ("daily_cap_minor", "monthly_cap_minor") if k in camp_kw}
    camp = make_campaign(adv, events=EVENTS, **camp_kw)
    for k, v in caps.items():
        setattr(camp, k, v)
    db.session.commit()
    link = make_link(make_partner(), camp)
    return adv, camp, link


def _postback(app, http, adv, link, txn):
    cid = app.extensions["partnernet_click_signer"].make(link.id, int(clock.utcnow().timestamp()))
    return http.get("/postback", query_string={"key": adv.postback_key, "click_id": cid, "txn_id": txn}).get_json()


def _click(app, http, link):
    tok = app.extensions["partnernet_link_signer"].dumps(link.id)
    http.environ_base.pop("HTTP_USER_AGENT", None)
    return http.get(f"/c/{tok}", headers={"User-Agent": CHROME}).headers["Location"]


def test_daily_cap_rejects_and_sends_clicks_to_the_fallback_until_local_midnight(app, client):
    adv, camp, link = _setup(daily_cap_minor=2000)
    # 23:30 local (Chicago, CST) on March 4th = 05:30Z on the 5th.
    clock.set_now(datetime(2024, 3, 5, 5, 30, tzinfo=UTC))
    assert _click(app, client, link).startswith("https://acme.example/landing")
    assert _postback(app, client, adv, link, "A")["status"] == "pending"
    assert _postback(app, client, adv, link, "B")["status"] == "pending"
    third = _postback(app, client, adv, link, "C")
    assert (third["status"], third["reason"]) == ("rejected", "over_daily_cap")
    db.session.expire_all()
    camp = db.session.get(Campaign, camp.id)
    assert (camp.spent_minor, camp.cap_reached_reason) == (2000, "over_daily_cap")
    assert camp.cap_reached_until == datetime(2024, 3, 5, 6, tzinfo=UTC)  # local midnight
    assert _click(app, client, link) == "https://acme.example/fallback"
    last = db.session.scalars(select(Click).order_by(Click.id.desc())).first()
    assert last.fallback_reason == "over_daily_cap"
    # 00:00 local: a new day, the cap has room again.
    clock.set_now(datetime(2024, 3, 5, 6, 0, tzinfo=UTC))
    assert _click(app, client, link).startswith("https://acme.example/landing")
    assert _postback(app, client, adv, link, "D")["status"] == "pending"


def test_a_reversal_frees_the_cap_at_once(app, client):
    adv, camp, link = _setup(daily_cap_minor=1000)
    clock.set_now(datetime(2024, 6, 1, 15, tzinfo=UTC))
    assert _postback(app, client, adv, link, "A")["status"] == "pending"
    assert _click(app, client, link) == "https://acme.example/fallback"
    assert _postback(app, client, adv, link, "B")["reason"] == "over_daily_cap"
    cid = app.extensions["partnernet_click_signer"].make(link.id, int(clock.utcnow().timestamp()))
    client.get("/postback", query_string={"key": adv.postback_key, "click_id": cid, "txn_id": "A",
                                          "status": "reversed"})
    db.session.expire_all()
    assert db.session.get(Campaign, camp.id).cap_reached_reason is None
    assert _click(app, client, link).startswith("https://acme.example/landing")


def test_monthly_cap_counts_the_local_month(app, client):
    adv, camp, link = _setup(monthly_cap_minor=1000)
    # Feb 29th 23:00 Chicago = March 1st 05:00Z: still February for the client.
    clock.set_now(datetime(2024, 3, 1, 5, tzinfo=UTC))
    assert _postback(app, client, adv, link, "FEB")["status"] == "pending"
    body = _postback(app, client, adv, link, "FEB2")
    assert body["reason"] == "over_monthly_cap"
    db.session.expire_all()
    assert db.session.get(Campaign, camp.id).cap_reached_until == datetime(2024, 3, 1, 6, tzinfo=UTC)
    clock.set_now(datetime(2024, 3, 1, 6, 1, tzinfo=UTC))  # March in Chicago
    assert _postback(app, client, adv, link, "MAR")["status"] == "pending"
    assert _click(app, client, link) == "https://acme.example/fallback"  # March's cap is reached too


def test_budget_is_checked_before_the_caps(app, client):
    adv, _camp, link = _setup(budget_minor=500, daily_cap_minor=500)
    clock.set_now(datetime(2024, 6, 1, 15, tzinfo=UTC))
    assert _postback(app, client, adv, link, "A")["reason"] == "over_budget"
    db.session.expire_all()
    assert db.session.scalar(select(Conversion.reason)) == "over_budget"


def test_set_limits_as_client_raises_and_lowers(app, client):
    adv, camp, link = _setup(budget_minor=1000)
    clock.set_now(datetime(2024, 6, 1, 15, tzinfo=UTC))
    assert _postback(app, client, adv, link, "A")["status"] == "pending"
    assert _click(app, client, link) == "https://acme.example/fallback"
    set_campaign_limits(camp.id, {"budget": "25.00", "daily_cap": "10.00"}, as_client_id=adv.id)
    camp = db.session.get(Campaign, camp.id)
    assert (camp.budget_minor, camp.daily_cap_minor, camp.cap_reached_reason) == (2500, 1000, "over_daily_cap")
    assert _click(app, client, link) == "https://acme.example/fallback"
    set_campaign_limits(camp.id, {"daily_cap": ""}, as_client_id=adv.id)
    assert _click(app, client, link).startswith("https://acme.example/landing")
    other = make_client()
    with pytest.raises(NotFound):
        set_campaign_limits(camp.id, {"budget": "1.00"}, as_client_id=other.id)
    with pytest.raises(ValidationError) as err:
        set_campaign_limits(camp.id, {"budget": "1.001"}, as_client_id=adv.id)
    assert err.value.field == "budget"
    with pytest.raises(ValidationError):
        set_campaign_limits(camp.id, {"spent": "1.00"}, as_client_id=adv.id)
