"""Multi-touch attribution, recruiter tiers and payout priority on both databases (issue 6).

One visitor touches three partners' links of one campaign (A, then B, then C, who converts);
noise around it (a bot click, a fallback click, another visitor, a click outside the window,
a click after the converting click, an earlier click of A) must not count. Client fee 200,
payout 50% = 100 minor units shared by the touches.
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from partnernet import clock, queue
from partnernet.conversions.services import record_conversion
from partnernet.extensions import db
from partnernet.ledger.services import sync_conversion, verify_ledger
from partnernet.models import (
    Click,
    Conversion,
    ConversionSplit,
    PartnerPayoutOverride,
    PartnerTier,
    PerformanceBonus,
)
from tests.factories import make_campaign, make_client, make_link, make_partner

_n = itertools.count(1)
EVENTS = [{"key": "sale", "client_fee_minor": 200, "payout_percent": "50"}]


def click(link, visitor, at, *, bot=False, fallback=None) -> str:
    cid = f"ck{next(_n):06d}"
    db.session.add(Click(click_id=cid, link_id=link.id, campaign_id=link.campaign_id, partner_id=link.partner_id,
                         created_at=at, visitor=visitor, is_bot=bot, fallback_reason=fallback, is_unique=True))
    db.session.commit()
    return cid


def convert(camp, link, click_id, *, txn=None) -> Conversion:
    rec = record_conversion(
        campaign_id=camp.id, event=camp.event("sale"), link_id=link.id, partner_id=link.partner_id,
        click_id=click_id, click_at=None, txn_id=txn or f"T{next(_n)}", amount_minor=None, duration_s=None,
        status="pending", reason=None,
    )
    db.session.commit()
    queue.run_pending()
    db.session.expire_all()
    return db.session.get(Conversion, rec.conversion.id)


def lines(conv) -> list[tuple[str, str, int]]:
    rows = db.session.scalars(
        select(ConversionSplit).where(ConversionSplit.conversion_id == conv.id).order_by(ConversionSplit.id)
    ).all()
    return [(r.party, r.role, r.amount_minor) for r in rows]


def journey(model: str):
    """Campaign with ``model``; partners A, B, C touched by visitor v; C's click converts."""
    now = clock.utcnow()
    camp = make_campaign(make_client(), events=EVENTS, attribution_model=model, attribution_window_days=30)
    a, b, c, d, e = (make_partner(name=n) for n in "ABCDE")
    la, lb, lc, ld, le = (make_link(p, camp) for p in (a, b, c, d, e))
    v = "visitor-0123456789abcdef"
    click(la, v, now - timedelta(days=40))  # A outside the window (still A: one touch anyway)
    click(ld, v, now - timedelta(days=45))  # D only outside the window: no touch
    click(la, v, now - timedelta(hours=10))
    click(la, v, now - timedelta(hours=5))  # A's latest click: before B's
    click(lb, v, now - timedelta(hours=4))
    click(ld, v, now - timedelta(hours=3), bot=True)  # bot: no touch
    click(le, v, now - timedelta(hours=2), fallback="paused")  # fallback: no touch
    click(le, "someone-else-0000000000", now - timedelta(hours=2))  # other visitor
    conv_click = click(lc, v, now - timedelta(hours=1))
    click(ld, v, now - timedelta(minutes=30))  # after the converting click: no touch
    conv = convert(camp, lc, conv_click)
    return conv, a, b, c


EXPECTED = {
    # (converter C, touch B, touch A, margin); fee 200, payout 100
    "last_click": {"C": 100, "B": 0, "A": 0},
    "first_click": {"C": 0, "B": 0, "A": 100},
    "linear": {"C": 34, "B": 33, "A": 33},
    "position_based": {"C": 40, "B": 20, "A": 40},
}


@pytest.mark.parametrize("model", sorted(EXPECTED))
def test_each_model_on_three_partner_touches(app, model):
    conv, a, b, c = journey(model)
    want = EXPECTED[model]
    expected = [(f"partner:{c.id}", "converter", want["C"])]
    for p, key in ((b, "B"), (a, "A")):
        if want[key]:
            expected.append((f"partner:{p.id}", "touch", want[key]))
    expected.append(("agency", "margin", 100))
    assert lines(conv) == expected
    assert verify_ledger() == []


def test_coupon_conversion_has_one_touch(app):
    camp = make_campaign(make_client(), events=EVENTS, attribution_model="linear")
    p = make_partner()
    conv = convert(camp, make_link(p, camp, coupon_code="SAVE10"), None)
    assert lines(conv) == [(f"partner:{p.id}", "converter", 100), ("agency", "margin", 100)]


def test_the_split_job_run_twice_posts_once(app):
    conv, *_ = journey("linear")
    before = lines(conv)
    assert sync_conversion(conv.id) == "pending"
    assert sync_conversion(conv.id) == "pending"
    db.session.expire_all()
    assert lines(conv) == before
    assert verify_ledger() == []


def test_split_lines_carry_the_rule(app):
    conv, *_ = journey("linear")
    rules = {r.role: r.rule for r in db.session.scalars(
        select(ConversionSplit).where(ConversionSplit.conversion_id == conv.id))}
    assert rules["converter"] == "event: 50%"
    assert rules["touch"] == "event: 50%"
    assert rules["margin"] == "fee minus partner amounts"


def test_two_recruiter_tiers_are_paid_from_the_margin(app):
    camp = make_campaign(make_client(), events=[{"key": "sale", "client_fee_minor": 1000, "payout_percent": "50"}])
    top = make_partner(name="Top")
    mid = make_partner(name="Mid", recruiter=top, recruiter_percent="10")
    mid.tier2_percent = Decimal(5)  # top earns 5% on what mid's recruits earn
    db.session.commit()
    leaf = make_partner(name="Leaf", recruiter=mid, recruiter_percent="20")
    conv = convert(camp, make_link(leaf, camp), None)
    # payout 500 to leaf; mid 20% of 500 = 100; top 5% of 500 = 25; margin 500 - 125 = 375
    assert lines(conv) == [
        (f"partner:{leaf.id}", "converter", 500),
        (f"partner:{mid.id}", "recruiter", 100),
        (f"partner:{top.id}", "recruiter", 25),
        ("agency", "margin", 375),
    ]
    rules = [r.rule for r in db.session.scalars(select(ConversionSplit).where(
        ConversionSplit.conversion_id == conv.id, ConversionSplit.role == "recruiter").order_by(ConversionSplit.id))]
    assert rules == ["recruiter override", "recruiter override tier 2"]
    assert verify_ledger() == []


def test_second_tier_is_capped_by_what_the_margin_has_left(app):
    camp = make_campaign(make_client(), events=[{"key": "sale", "client_fee_minor": 1000, "payout_percent": "90"}])
    top = make_partner()
    mid = make_partner(recruiter=top, recruiter_percent="10")
    mid.tier2_percent = Decimal(50)
    db.session.commit()
    leaf = make_partner(recruiter=mid, recruiter_percent="10")
    conv = convert(camp, make_link(leaf, camp), None)
    # payout 900, margin 100; tier 1: 90; tier 2: 450 capped at the 10 left
    assert [x[2] for x in lines(conv)] == [900, 90, 10, 0]


def test_payout_priority(app):
    camp = make_campaign(make_client(), events=EVENTS)  # event: 50% of 200
    p = make_partner()
    link = make_link(p, camp)
    conv = convert(camp, link, None)
    assert lines(conv)[0][2] == 100

    gold = PartnerTier(name="Gold", payout_percent=Decimal(60))
    db.session.add(gold)
    db.session.flush()
    p.tier_id = gold.id
    db.session.commit()
    conv = convert(camp, link, None)
    assert lines(conv)[0][2] == 120
    assert conv.splits[0].rule == "tier Gold: 60%"

    db.session.add(PartnerPayoutOverride(campaign_id=camp.id, partner_id=p.id, event_key=None, payout_minor=150))
    db.session.commit()
    conv = convert(camp, link, None)
    assert lines(conv)[0][2] == 150
    assert conv.splits[0].rule == "override: 1.50 USD"

    db.session.add(PartnerPayoutOverride(campaign_id=camp.id, partner_id=p.id, event_key="sale",
                                         payout_percent=Decimal(70)))
    db.session.add(PerformanceBonus(campaign_id=camp.id, event_key="sale", threshold=2, bonus_points=Decimal(5)))
    db.session.commit()
    conv = convert(camp, link, None)
    assert lines(conv)[0][2] == 140  # the event-specific override; bonus not reached (0 approved)
    for c in db.session.scalars(select(Conversion).where(Conversion.campaign_id == camp.id)).all()[:2]:
        c.status, c.approved_at = "approved", clock.utcnow()
    db.session.commit()
    conv = convert(camp, link, None)
    assert lines(conv)[0][2] == 150  # 75% of 200
    assert conv.splits[0].rule == "override bonus +5 (2 approved): 75%"
