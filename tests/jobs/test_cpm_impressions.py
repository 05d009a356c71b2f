"""CPM (issue 5): impressions through /i/<token> are buffered in Redis and written by a real RQ
worker; every 1,000th billable impression of a link (CONTRACT §2, v2: non-bot, the first of a
visitor on the link in its hour) becomes an ``impression`` conversion, billed and split like any
other, and the report shows the impressions and the fee."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from partnernet.clock import utcnow
from partnernet.extensions import db
from partnernet.models import Conversion, LinkCounter, TrafficRollup
from partnernet.reporting.kpis import detailed_report
from tests.conftest import drain_jobs
from tests.factories import make_campaign, make_client, make_link, make_partner

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"


def test_every_thousandth_impression_is_billed(redis_app, worker):
    adv = make_client()
    camp = make_campaign(adv, events=[{"key": "impression", "client_fee_minor": 250, "payout_minor": 150}])
    link = make_link(make_partner(), camp)
    tok = redis_app.extensions["partnernet_link_signer"].dumps(link.id)
    http = redis_app.test_client()
    http.environ_base.pop("HTTP_USER_AGENT", None)
    for i in range(1001):  # 1,001 visitors (IP and agent), one impression each
        r = http.get(f"/i/{tok}", headers={"User-Agent": CHROME},
                     environ_base={"REMOTE_ADDR": f"10.0.{i // 250}.{i % 250 + 1}"})
        assert r.status_code == 200 and r.mimetype == "image/gif"
    for _ in range(99):  # one of them again in the same hour: recorded, not billed
        http.get(f"/i/{tok}", headers={"User-Agent": CHROME}, environ_base={"REMOTE_ADDR": "10.0.0.1"})
    for _ in range(5):
        http.get(f"/i/{tok}", headers={"User-Agent": "curl/8.5.0"})  # bots: counted apart, never billed
    drain_jobs()
    db.session.expire_all()
    assert db.session.get(LinkCounter, link.id).impressions == 1001
    assert db.session.scalar(select(func.sum(TrafficRollup.impressions))) == 1100
    assert db.session.scalar(select(func.sum(TrafficRollup.bot_impressions))) == 5
    (conv,) = db.session.scalars(select(Conversion)).all()
    assert (conv.event_key, conv.status, conv.client_fee_minor, conv.dedup_key) == (
        "impression", "pending", 250, f"i:{link.id}:1000")
    assert sorted(s.amount_minor for s in conv.splits) == [100, 150]
    today = utcnow().date()
    (row,) = detailed_report("campaign", today - timedelta(days=1), today + timedelta(days=1), client_id=adv.id)
    assert (row.impressions, row.events, row.revenue_minor, row.conversions) == (1100, {"impression": 1}, 250, 0)
    assert row.cpm_minor == 227  # 250 * 1000 / 1100 = 227.27 -> 227
