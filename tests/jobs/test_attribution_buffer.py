"""Attribution with the Redis click buffer (PostgreSQL + real Redis): the touches of a
conversion may still be buffered when the split job runs; the job flushes the buffer first,
so the split sees every touch."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from sqlalchemy import func, select

from partnernet.conversions.services import record_conversion
from partnernet.extensions import db
from partnernet.ledger.services import sync_conversion, verify_ledger
from partnernet.models import Click, ConversionSplit
from tests.factories import make_campaign, make_client, make_link, make_partner
from tests.services.test_redirect import get, token_of


def test_split_job_flushes_buffered_touches_first(redis_app):
    camp = make_campaign(make_client(), attribution_model="linear",
                         events=[{"key": "sale", "client_fee_minor": 200, "payout_percent": "50"}])
    a, b, c = make_partner(), make_partner(), make_partner()
    links = [make_link(p, camp) for p in (a, b, c)]
    browser = redis_app.test_client()  # one cookie jar: one visitor
    answers = [get(browser, f"/c/{token_of(redis_app, lk)}") for lk in links]
    click_id = parse_qs(urlsplit(answers[-1].headers["Location"]).query)["click_id"][0]
    assert db.session.scalar(select(func.count()).select_from(Click)) == 0  # all still in Redis

    rec = record_conversion(
        campaign_id=camp.id, event=camp.event("sale"), link_id=links[-1].id, partner_id=c.id, click_id=click_id,
        click_at=None, txn_id="order-1", amount_minor=None, duration_s=None, status="pending", reason=None,
    )
    db.session.commit()
    cid = rec.conversion.id
    assert sync_conversion(cid) == "pending"
    assert sync_conversion(cid) == "pending"  # twice: posted once
    db.session.expire_all()
    assert db.session.scalar(select(func.count()).select_from(Click)) == 3
    got = [(s.party, s.role, s.amount_minor) for s in db.session.scalars(
        select(ConversionSplit).where(ConversionSplit.conversion_id == cid).order_by(ConversionSplit.id))]
    assert got == [(f"partner:{c.id}", "converter", 34), (f"partner:{b.id}", "touch", 33),
                   (f"partner:{a.id}", "touch", 33), ("agency", "margin", 100)]
    assert verify_ledger() == []
