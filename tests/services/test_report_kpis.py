"""Web report KPIs (issue 5, partnernet.reporting.kpis) on a small data set worked out by hand,
and the time-zone cases, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime

from partnernet import clock
from partnernet.conversions.services import record_conversion
from partnernet.extensions import db
from partnernet.models import TrafficRollup
from partnernet.queue import run_pending
from partnernet.reporting.kpis import detailed_report, totals
from partnernet.reporting.rollup import rebuild_traffic_rollups
from tests.factories import make_campaign, make_client, make_link, make_partner

EVENTS = [
    {"key": "sale", "client_fee_percent": "10", "payout_percent": "50"},
    {"key": "lead", "client_fee_minor": 500, "payout_minor": 300},
    {"key": "click", "client_fee_minor": 12, "payout_minor": 8},
    {"key": "impression", "client_fee_minor": 200, "payout_minor": 100},
]


def _post(app, http, adv, link, **q):
    cid = app.extensions["partnernet_click_signer"].make(link.id, int(clock.utcnow().timestamp()))
    return http.get("/postback", query_string={"key": adv.postback_key, "click_id": cid, **q}).get_json()


def _tracker(camp, link, event_key, key):
    ev = camp.event(event_key)
    record_conversion(campaign_id=camp.id, event=ev, link_id=link.id, partner_id=link.partner_id, click_id=None,
                      click_at=None, txn_id=None, amount_minor=None, duration_s=None, status="pending", reason=None,
                      key=key)
    db.session.commit()
    run_pending()


def _dataset(app, http):
    adv = make_client()
    camp = make_campaign(adv, events=EVENTS)
    link = make_link(make_partner(), camp)
    db.session.add(TrafficRollup(hour=datetime(2024, 5, 10, 12, tzinfo=UTC), link_id=link.id, sub1="",
                                 clicks=10, unique_clicks=8, impressions=2000))
    db.session.commit()
    rebuild_traffic_rollups()  # inserted directly, not by the click flusher
    clock.set_now(datetime(2024, 5, 10, 15, tzinfo=UTC))
    assert _post(app, http, adv, link, event="sale", txn_id="S1", amount="200.00")["status"] == "pending"
    assert _post(app, http, adv, link, event="sale", txn_id="S2", amount="100.00")["status"] == "pending"
    assert _post(app, http, adv, link, event="lead", txn_id="L1")["status"] == "pending"
    assert _post(app, http, adv, link, event="lead", txn_id="L2", status="rejected")["status"] == "rejected"
    _tracker(camp, link, "impression", f"i:{link.id}:1000")
    _tracker(camp, link, "impression", f"i:{link.id}:2000")
    _tracker(camp, link, "click", "c:hand-made")
    return adv, camp, link


def test_every_kpi_on_a_hand_computed_data_set(app, client):
    adv, camp, link = _dataset(app, client)
    (row,) = detailed_report("campaign", date(2024, 5, 10), date(2024, 5, 10))
    # fees: sales 10% of 200.00 and 100.00 = 2000 + 1000; lead 500; 2 impressions x 200; 1 click 12
    assert (row.key, row.currency) == (str(camp.id), "USD")
    assert (row.clicks, row.unique_clicks, row.impressions, row.conversions) == (10, 8, 2000, 3)
    assert row.events == {"sale": 2, "lead": 1, "impression": 2, "click": 1}
    assert row.revenue_minor == 3912
    assert row.payout_minor == 1000 + 500 + 300 + 200 + 8 == 2008
    assert row.margin_minor == 3912 - 2008
    assert row.sale_amount_minor == 30000
    assert row.cr == "37.50"  # 3 / 8
    assert row.epc_minor == 201  # 2008 / 10 = 200.8
    assert row.ecpc_minor == 391  # 3912 / 10 = 391.2
    assert row.cpl_minor == 3912  # one lead
    assert row.cpa_minor == 1304  # 3912 / 3
    assert row.cps_minor == 1956  # 3912 / 2
    assert row.cpm_minor == 1956  # 3912 * 1000 / 2000
    assert row.roas == "7.67"  # 30000 / 3912 = 7.668...
    (total,) = totals([row])
    assert (total.key, total.revenue_minor, total.cpa_minor) == ("total", 3912, 1304)
    # scopes: the client sees its campaign, another client nothing; the partner its own earnings
    assert len(detailed_report("day", date(2024, 5, 10), date(2024, 5, 10), client_id=adv.id)) == 1
    other = make_client()
    assert detailed_report("day", date(2024, 5, 10), date(2024, 5, 10), client_id=other.id) == []
    (mine,) = detailed_report("partner", date(2024, 5, 10), date(2024, 5, 10), partner_id=link.partner_id)
    assert (mine.revenue_minor, mine.margin_minor) == (2008, 0)


def test_kpis_without_divisors_are_none(app, client):
    adv = make_client()
    camp = make_campaign(adv, events=EVENTS)
    link = make_link(make_partner(), camp)
    db.session.add(TrafficRollup(hour=datetime(2024, 5, 10, 12, tzinfo=UTC), link_id=link.id, sub1="", clicks=3))
    db.session.commit()
    rebuild_traffic_rollups()
    (row,) = detailed_report("day", date(2024, 5, 10), date(2024, 5, 10))
    assert (row.ecpc_minor, row.cpl_minor, row.cpa_minor, row.cps_minor, row.cpm_minor, row.roas) == (
        0, None, None, None, None, None)
    assert row.cr == "0.00"


def test_chicago_day_holds_a_sale_at_0223_utc_next_day_and_dst_days(app, client):
    adv = make_client()
    camp = make_campaign(adv, events=EVENTS)
    link = make_link(make_partner(), camp)
    for when, txn in [(datetime(2024, 5, 11, 2, 23, tzinfo=UTC), "NIGHT"),  # May 10th 21:23 CDT
                      (datetime(2024, 3, 10, 5, 30, tzinfo=UTC), "BEFORE"),  # Mar 9th 23:30 CST
                      (datetime(2024, 3, 11, 4, 30, tzinfo=UTC), "LATE"),  # Mar 10th 23:30 CDT (23-hour day)
                      (datetime(2024, 11, 4, 5, 30, tzinfo=UTC), "FALL")]:  # Nov 3rd 23:30 CST (25-hour day)
        clock.set_now(when)
        assert _post(app, client, adv, link, event="sale", txn_id=txn, amount="10.00")["status"] == "pending"
    rows = detailed_report("day", date(2024, 3, 1), date(2024, 11, 30), "America/Chicago")
    assert [(r.key, r.events, r.sale_amount_minor) for r in rows] == [
        ("2024-03-09", {"sale": 1}, 1000), ("2024-03-10", {"sale": 1}, 1000),
        ("2024-05-10", {"sale": 1}, 1000), ("2024-11-03", {"sale": 1}, 1000)]
    utc_rows = detailed_report("day", date(2024, 5, 11), date(2024, 5, 11), "UTC")
    assert [r.key for r in utc_rows] == ["2024-05-11"]
