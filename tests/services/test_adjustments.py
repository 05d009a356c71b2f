"""Adjustments through /postback (CONTRACT v2 §3 "Adjustments", §4 rounding), on SQLite and
PostgreSQL: a partial refund of a pending and of an approved conversion, after a payout (the
balance goes negative), the refusals (400 ``bad_adjustment``), repeats, multi-touch shares and
recruiter overrides recomputed exactly, spend and reports moved, ``ledger verify`` clean."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from sqlalchemy import select

from partnernet import clock, queue
from partnernet.conversions.review import approve_conversion
from partnernet.conversions.services import record_conversion
from partnernet.extensions import db
from partnernet.ledger.services import account_balance, client_account, verify_ledger
from partnernet.models import Campaign, Click, Conversion, ConversionSplit, PostbackLog
from partnernet.payouts.services import approve_batch, create_batch, mark_batch_paid
from partnernet.reporting.services import report
from tests.factories import make_campaign, make_client, make_link, make_partner, make_user
from tests.services.test_ledger_helpers import earnings, fresh, kinds, record
from tests.services.test_postback import send
from tests.services.test_report_rollups import assert_money_rollup_equals_rebuild

_n = itertools.count(1)


@pytest.fixture
def shop(app):
    """USD client; ``sale`` is 10% of the sale with a 50% payout, ``lead`` a fixed 12.50 fee."""
    adv = make_client(currency="USD")
    camp = make_campaign(adv, default_event="sale", events=[
        {"key": "sale", "client_fee_percent": "10", "payout_percent": "50"},
        {"key": "lead", "client_fee_minor": 1250, "payout_minor": 900},
    ])
    partner = make_partner()
    link = make_link(partner, camp, coupon_code="SHOP10")
    return {"adv": adv, "camp": camp, "partner": partner, "link": link}


def post(client, shop, txn, *, status="pending", amount=None, event="sale", coupon="SHOP10"):
    params = {"key": shop["adv"].postback_key, "coupon": coupon, "txn_id": txn, "event": event, "status": status}
    if amount is not None:
        params["amount"] = amount
    return send(client, params)


def lines(cid):
    return [(r.party, r.role, r.amount_minor) for r in db.session.scalars(
        select(ConversionSplit).where(ConversionSplit.conversion_id == cid).order_by(ConversionSplit.id))]


def spent(camp_id):
    db.session.expire_all()
    return db.session.get(Campaign, camp_id).spent_minor


def revenue_today():
    today = clock.utcnow().date()
    rows = report("campaign", today, today)
    return [(r.revenue_minor, r.payout_minor, r.margin_minor) for r in rows]


def test_partial_refund_of_a_pending_conversion_then_approval(client, shop):
    p = shop["partner"].id
    status, body = post(client, shop, "O1", amount="100.00")
    assert status == 201
    cid = int(body["conversion_id"])
    queue.run_pending()
    assert earnings(p)["pending"] == 500 and spent(shop["camp"].id) == 1000

    status, body = post(client, shop, "O1", status="adjusted", amount="60.01")
    assert (status, body) == (200, {"ok": True, "conversion_id": str(cid), "status": "pending", "duplicate": True})
    conv = fresh(cid)
    # fee 600.1 -> 600; payout 300; margin 300 (CONTRACT §4, half up)
    assert (conv.status, conv.amount_minor, conv.original_amount_minor, conv.client_fee_minor) == (
        "pending", 6001, 10000, 600)
    assert kinds(cid) == ["split", "adjustment:1"]
    assert lines(cid) == [(f"partner:{p}", "converter", 300), ("agency", "margin", 300)]
    assert earnings(p) == {"pending": 300, "approved": 0, "paid": 0, "balance": 0}
    assert account_balance(client_account(shop["adv"].id, "receivable", "USD")) == 600
    assert spent(shop["camp"].id) == 600
    assert revenue_today() == [(600, 300, 300)]
    assert_money_rollup_equals_rebuild()
    assert verify_ledger() == []

    # the same amount again is a repeat: nothing moves
    assert post(client, shop, "O1", status="adjusted", amount="60.01")[0] == 200
    assert kinds(cid) == ["split", "adjustment:1"] and spent(shop["camp"].id) == 600
    last = db.session.scalars(select(PostbackLog).order_by(PostbackLog.id.desc())).first()
    assert last.message == "existing: pending, unchanged"

    # approval moves the net of the split and its adjustment to payable
    approve_conversion(cid, user_id=1)
    queue.run_pending()
    assert kinds(cid) == ["split", "adjustment:1", "approve"]
    assert earnings(p) == {"pending": 0, "approved": 300, "paid": 0, "balance": 300}
    assert verify_ledger() == []


def test_adjustment_before_the_split_job_splits_the_new_fee(client, shop):
    cid = record(shop["camp"], shop["link"], amount_minor=5000, run_jobs=False)  # split job not run yet
    txn = fresh(cid).txn_id
    assert kinds(cid) == []
    assert post(client, shop, txn, status="adjusted", amount="20.00")[0] == 200  # then the split job runs
    assert kinds(cid) == ["split"]
    assert lines(cid) == [(f"partner:{shop['partner'].id}", "converter", 100), ("agency", "margin", 100)]
    assert spent(shop["camp"].id) == 200
    assert verify_ledger() == []


def test_approved_and_paid_then_adjusted_leaves_a_negative_balance(client, shop):
    p = shop["partner"].id
    status, body = post(client, shop, "O3", status="approved", amount="100.00")
    cid = int(body["conversion_id"])
    queue.run_pending()
    maker, checker = make_user("maker@example.com"), make_user("checker@example.com")
    batch = create_batch("USD", 0, maker.id)
    approve_batch(batch.id, checker.id)
    mark_batch_paid(batch.id, maker.id)
    assert earnings(p) == {"pending": 0, "approved": 500, "paid": 500, "balance": 0}

    status, body = post(client, shop, "O3", status="adjusted", amount="40.00")
    assert (status, body["status"], body["duplicate"]) == (200, "approved", True)
    assert kinds(cid) == ["split", "approve", "adjustment:1"]
    assert earnings(p) == {"pending": 0, "approved": 200, "paid": 500, "balance": -300}
    assert spent(shop["camp"].id) == 400
    # a second, smaller refund is the second adjustment; a corrected total back up to at most
    # the original amount is allowed too
    assert post(client, shop, "O3", status="adjusted", amount="30.00")[0] == 200
    assert post(client, shop, "O3", status="adjusted", amount="100.00")[0] == 200
    assert kinds(cid) == ["split", "approve", "adjustment:1", "adjustment:2", "adjustment:3"]
    assert earnings(p)["balance"] == 0 and fresh(cid).client_fee_minor == 1000
    assert verify_ledger() == []
    # a reversal then claws back exactly what is left
    assert post(client, shop, "O3", status="reversed", amount="100.00")[0] == 200
    queue.run_pending()
    assert earnings(p) == {"pending": 0, "approved": 0, "paid": 500, "balance": -500}
    assert spent(shop["camp"].id) == 0
    assert revenue_today() == []  # neither rejected nor reversed conversions only (CONTRACT §5)
    assert_money_rollup_equals_rebuild()
    assert verify_ledger() == []


def test_refusals_change_nothing(client, shop):
    status, body = post(client, shop, "O4", amount="100.00")
    cid = int(body["conversion_id"])
    queue.run_pending()
    before = (kinds(cid), lines(cid), spent(shop["camp"].id))

    status, body = post(client, shop, "O4", status="adjusted", amount="100.01")  # above the original
    assert (status, body["ok"], body["error"]) == (400, False, "bad_adjustment")
    assert post(client, shop, "O4", status="adjusted", amount="50.00")[0] == 200
    status, body = post(client, shop, "O4", status="adjusted", amount="100.01")  # still above the first amount
    assert (status, body["error"]) == (400, "bad_adjustment")

    # a fixed-fee event
    status, body = post(client, shop, "L1", event="lead")
    lead = int(body["conversion_id"])
    status, body = post(client, shop, "L1", event="lead", status="adjusted", amount="5.00")
    assert (status, body["error"]) == (400, "bad_adjustment")
    assert fresh(lead).amount_minor is None and fresh(lead).client_fee_minor == 1250

    # no conversion to adjust: refused, nothing stored
    n = db.session.scalar(select(db.func.count()).select_from(Conversion))
    status, body = post(client, shop, "NOPE", status="adjusted", amount="5.00")
    assert (status, body["error"]) == (400, "bad_adjustment")
    assert db.session.scalar(select(db.func.count()).select_from(Conversion)) == n

    # a reversed conversion answers as a duplicate and keeps everything
    assert post(client, shop, "O4", status="reversed", amount="100.00")[0] == 200
    queue.run_pending()
    rev = (kinds(cid), fresh(cid).amount_minor)
    status, body = post(client, shop, "O4", status="adjusted", amount="10.00")
    assert (status, body["status"], body["duplicate"]) == (200, "reversed", True)
    assert (kinds(cid), fresh(cid).amount_minor) == rev
    assert before[0] == ["split"] and verify_ledger() == []


def test_multi_touch_shares_and_recruiter_override_recomputed_exactly(client, app):
    now = clock.utcnow()
    adv = make_client(currency="USD")
    camp = make_campaign(adv, attribution_model="linear", events=[
        {"key": "sale", "client_fee_percent": "10", "payout_percent": "50"}])
    recruiter = make_partner(name="R")
    a, b = make_partner(name="A"), make_partner(name="B")
    c = make_partner(name="C", recruiter=recruiter, recruiter_percent=10)
    la, lb = make_link(a, camp), make_link(b, camp)
    lc = make_link(c, camp, coupon_code="CEE")
    visitor = "visitor-adjust-0000000001"
    ids = []
    for link, hours in ((la, 3), (lb, 2), (lc, 1)):
        ck = f"adj{next(_n):06d}"
        db.session.add(Click(click_id=ck, link_id=link.id, campaign_id=camp.id, partner_id=link.partner_id,
                             created_at=now - timedelta(hours=hours), visitor=visitor, is_unique=True))
        ids.append(ck)
    db.session.commit()
    rec = record_conversion(campaign_id=camp.id, event=camp.event("sale"), link_id=lc.id, partner_id=c.id,
                            click_id=ids[-1], click_at=None, txn_id="MT1", amount_minor=2000, duration_s=None,
                            status="pending", reason=None)
    db.session.commit()
    queue.run_pending()
    cid = rec.conversion.id
    # fee 200, payout 100: C 34, B 33, A 33; C's recruiter 3.4 -> 3; margin 97
    assert lines(cid) == [(f"partner:{c.id}", "converter", 34), (f"partner:{b.id}", "touch", 33),
                          (f"partner:{a.id}", "touch", 33), (f"partner:{recruiter.id}", "recruiter", 3),
                          ("agency", "margin", 97)]

    status, _ = send(client, {"key": adv.postback_key, "coupon": "CEE", "txn_id": "MT1",
                              "status": "adjusted", "amount": "13.33"})
    assert status == 200
    # fee 133.3 -> 133; payout 66.5 -> 67; 67 / 3 = 22.33: 22 each, the odd unit to the latest
    # touch (C) -> 23; C's recruiter 2.3 -> 2; margin 133 - 67 - 2 = 64
    assert lines(cid) == [(f"partner:{c.id}", "converter", 23), (f"partner:{b.id}", "touch", 22),
                          (f"partner:{a.id}", "touch", 22), (f"partner:{recruiter.id}", "recruiter", 2),
                          ("agency", "margin", 64)]
    assert [earnings(x.id)["pending"] for x in (a, b, c, recruiter)] == [22, 22, 23, 2]
    assert spent(camp.id) == 133
    assert_money_rollup_equals_rebuild()
    assert verify_ledger() == []
