"""The report query (CONTRACT §5 ``GET /reports``) on a small hand-computed data set.

Traffic rollups and conversions with their split lines are inserted directly, then the report
rollups are rebuilt from them. Every expected figure below is worked out by hand in the comments.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select

from partnernet.errors import ValidationError
from partnernet.extensions import db
from partnernet.models import Click, Conversion, ConversionSplit, Link, TrafficRollup
from partnernet.reporting.rollup import rebuild_rollups
from partnernet.reporting.services import conversion_rate, earnings_per_click, report
from tests.factories import make_campaign, make_client, make_link, make_partner


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def build_world() -> dict:
    """Client X (USD) with campaign cx, client Y (EUR) with cy; partners A and B (A recruited B).
    Links: la = A on cx (channel social), lb = B on cx (no channel), lay = A on cy (search)."""
    x, y = make_client(currency="USD"), make_client(currency="EUR")
    cx = make_campaign(
        x,
        events=[
            {"key": "sale", "client_fee_minor": 1000, "payout_percent": "50"},
            {"key": "lead", "client_fee_minor": 300, "payout_percent": "50"},
            {"key": "click", "client_fee_minor": 20, "payout_percent": "50"},
        ],
    )
    cy = make_campaign(y, events=[{"key": "lead", "client_fee_minor": 500, "payout_percent": "40"}])
    a = make_partner()
    b = make_partner(recruiter=a, recruiter_percent="10")
    la, lb, lay = (
        make_link(a, cx, channel="social"),
        make_link(b, cx, channel=None),
        make_link(a, cy, channel="search"),
    )

    def rollup(link, hour, sub1="", clicks=0, uniques=0, impressions=0):
        db.session.add(
            TrafficRollup(
                hour=at(hour),
                link_id=link.id,
                sub1=sub1,
                clicks=clicks,
                unique_clicks=uniques,
                impressions=impressions,
            )
        )

    rollup(la, "2025-03-09 23:00", clicks=50, uniques=50)  # before every range below
    rollup(la, "2025-03-10 10:00", clicks=10, uniques=8, impressions=100)
    rollup(lb, "2025-03-10 18:00", clicks=4, uniques=4)  # 23:30 in Kolkata
    rollup(la, "2025-03-10 23:00", sub1="spring", clicks=5, uniques=4)
    rollup(lb, "2025-03-11 00:00", clicks=3, uniques=3, impressions=50)
    rollup(lay, "2025-03-11 12:00", clicks=7, uniques=2)
    rollup(la, "2025-03-12 00:00", clicks=100)  # 2025-03-11 in New York

    db.session.add(
        Click(
            click_id="ck1",
            link_id=la.id,
            campaign_id=cx.id,
            partner_id=a.id,
            visitor="v1",
            sub1="spring",
            created_at=at("2025-03-10 10:20"),
        )
    )
    db.session.add(
        Click(
            click_id="ck3",
            link_id=la.id,
            campaign_id=cx.id,
            partner_id=a.id,
            visitor="v3",
            created_at=at("2025-03-11 00:05"),
        )
    )
    n = [0]

    def conv(link, event, status, fee, created, splits, click_id=None):
        n[0] += 1
        c = Conversion(
            campaign_id=link.campaign_id,
            event_key=event,
            link_id=link.id,
            partner_id=link.partner_id,
            click_id=click_id,
            txn_id=f"t{n[0]}",
            dedup_key=f"t:t{n[0]}",
            status=status,
            currency=link.campaign.currency,
            client_fee_minor=fee,
            created_at=at(created),
            reason="client_rejected" if status == "rejected" else None,
        )
        db.session.add(c)
        db.session.flush()
        for party, role, amount in splits:
            pid = int(party.split(":")[1]) if party.startswith("partner:") else None
            db.session.add(
                ConversionSplit(
                    conversion_id=c.id, party=party, partner_id=pid, role=role, amount_minor=amount
                )
            )
        return c

    A, B = f"partner:{a.id}", f"partner:{b.id}"
    conv(
        la,
        "sale",
        "pending",
        1000,
        "2025-03-10 10:30",
        [(A, "converter", 500), ("agency", "margin", 500)],
        click_id="ck1",
    )  # c1
    conv(
        lb,
        "lead",
        "approved",
        300,
        "2025-03-10 23:30",
        [(B, "converter", 150), (A, "recruiter", 15), ("agency", "margin", 135)],
    )  # c2
    conv(
        la,
        "click",
        "pending",
        20,
        "2025-03-11 00:10",
        [(A, "converter", 10), ("agency", "margin", 10)],
        click_id="ck3",
    )  # c3
    conv(la, "sale", "rejected", 999, "2025-03-10 12:00", [])  # c4: left out
    conv(
        lb, "sale", "reversed", 2000, "2025-03-10 12:00", [(B, "converter", 1000), ("agency", "margin", 1000)]
    )  # c5: left out
    conv(
        lay, "lead", "pending", 500, "2025-03-11 12:00", [(A, "converter", 200), ("agency", "margin", 300)]
    )  # c6
    conv(la, "sale", "pending", 700, "2025-03-12 01:00", [])  # c7: not split yet
    db.session.commit()
    rebuild_rollups()  # rows inserted directly: bring the report rollups level with them
    return {"x": x, "y": y, "cx": cx, "cy": cy, "a": a, "b": b}


def rows(result):
    return [
        (
            r.key,
            r.currency,
            r.clicks,
            r.unique_clicks,
            r.impressions,
            r.conversions,
            r.revenue_minor,
            r.payout_minor,
            r.margin_minor,
            r.cr,
            r.epc_minor,
        )
        for r in result
    ]


D1, D2 = date(2025, 3, 10), date(2025, 3, 11)


def test_by_campaign_utc(app):
    w = build_world()
    # cx: clicks 10+4+5+3=22, uniques 8+4+4+3=19, impressions 150; conversions c1, c2 (c3 is a click);
    # revenue 1000+300+20; payout 500+150+15+10=675; margin 500+135+10=645;
    # cr 2/19 = 10.526 -> 10.53; epc 675/22 = 30.68 -> 31.
    # cy: 7 clicks, 2 uniques; c6: revenue 500, payout 200, margin 300; cr 1/2; epc 200/7 = 28.57 -> 29.
    assert rows(report("campaign", D1, D2)) == [
        (str(w["cx"].id), "USD", 22, 19, 150, 2, 1320, 675, 645, "10.53", 31),
        (str(w["cy"].id), "EUR", 7, 2, 0, 1, 500, 200, 300, "50.00", 29),
    ]


def test_by_day_utc(app):
    build_world()
    # 03-10: rollups 10:00, 18:00, 23:00 -> 19 clicks, 16 uniques, 100 impressions; c1, c2;
    #   payout 500+150+15 = 665, margin 635; cr 2/16 = 12.50; epc 665/19 = 35.
    # 03-11 USD: the 00:00 rollup (3, 3, 50) and c3 (a click conversion: money, no count);
    #   epc 10/3 = 3.33 -> 3.
    assert rows(report("day", D1, D2)) == [
        ("2025-03-10", "USD", 19, 16, 100, 2, 1300, 665, 635, "12.50", 35),
        ("2025-03-11", "EUR", 7, 2, 0, 1, 500, 200, 300, "50.00", 29),
        ("2025-03-11", "USD", 3, 3, 50, 0, 20, 10, 10, "0.00", 3),
    ]


def test_by_day_in_new_york(app):
    build_world()
    # EDT (UTC-4) since 2025-03-09: the days run 04:00Z to 04:00Z. 03-10 holds every USD rollup from
    # 03-10 10:00Z to 03-11 00:00Z and c1, c2, c3 (c3 at 20:10 local); 03-11 holds the 03-12 00:00Z rollup
    # (100 clicks, no unique) and c7 (21:00 local, fee 700, not split yet).
    # Read from conversions and split lines, c7 counts as soon as it is recorded:
    assert rows(report("day", D1, D2, "America/New_York", use_rollups=False)) == [
        ("2025-03-10", "USD", 22, 19, 150, 2, 1320, 675, 645, "10.53", 31),
        ("2025-03-11", "EUR", 7, 2, 0, 1, 500, 200, 300, "50.00", 29),
        ("2025-03-11", "USD", 100, 0, 0, 1, 700, 0, 0, "0.00", 0),
    ]
    # from the money rollups (the default) it counts once its split is posted (module notes):
    assert rows(report("day", D1, D2, "America/New_York")) == [
        ("2025-03-10", "USD", 22, 19, 150, 2, 1320, 675, 645, "10.53", 31),
        ("2025-03-11", "EUR", 7, 2, 0, 1, 500, 200, 300, "50.00", 29),
        ("2025-03-11", "USD", 100, 0, 0, 0, 0, 0, 0, "0.00", 0),
    ]


def test_half_hour_zone_counts_straddling_hour_on_the_earlier_day(app):
    build_world()
    # Asia/Kolkata (+05:30): 03-11 runs 03-10 18:30Z to 03-11 18:30Z. The 18:00Z rollup starts at 23:30
    # local on 03-10, so it counts on 03-10 (documented limitation); conversions are exact: c2, c3, c6.
    # USD: clicks 5+3 = 8, uniques 7, impressions 50; c2 counted; revenue 320; payout 150+15+10 = 175;
    # margin 145; cr 1/7 = 14.29; epc 175/8 = 21.875 -> 22.
    assert rows(report("day", D2, D2, "Asia/Kolkata")) == [
        ("2025-03-11", "EUR", 7, 2, 0, 1, 500, 200, 300, "50.00", 29),
        ("2025-03-11", "USD", 8, 7, 50, 1, 320, 175, 145, "14.29", 22),
    ]


def test_by_partner(app):
    w = build_world()
    a, b = w["a"], w["b"]
    # traffic by the link's partner; conversions and revenue by the converter; partner lines by the
    # partner that earned them (A earns the 15 recruiter override on B's c2); agency lines by the converter.
    # A USD: clicks 10+5, uniques 12, c1 (c3 is a click), revenue 1020, payout 500+15+10, margin 510.
    # B USD: clicks 4+3, uniques 7, c2, revenue 300, payout 150, margin 135; epc 150/7 = 21.4 -> 21.
    assert rows(report("partner", D1, D2)) == [
        (str(a.id), "EUR", 7, 2, 0, 1, 500, 200, 300, "50.00", 29),
        (str(a.id), "USD", 15, 12, 100, 1, 1020, 525, 510, "8.33", 35),
        (str(b.id), "USD", 7, 7, 50, 1, 300, 150, 135, "14.29", 21),
    ]


def test_by_channel_and_sub1(app):
    build_world()
    # channel "" = lb: (4+3 clicks, 7 uniques, 50 imp), c2: payout 150+15, margin 135; epc 165/7 = 23.6 -> 24.
    # channel social = la: (15, 12, 100), c1 and c3; payout 510; epc 510/15 = 34.
    assert rows(report("channel", D1, D2)) == [
        ("", "USD", 7, 7, 50, 1, 300, 165, 135, "14.29", 24),
        ("search", "EUR", 7, 2, 0, 1, 500, 200, 300, "50.00", 29),
        ("social", "USD", 15, 12, 100, 1, 1020, 510, 510, "8.33", 34),
    ]
    # sub1 from the rollups and, for conversions, from their click (c1 -> ck1 -> "spring"; c3's click has
    # none, c2 has no click). "" USD: (10+4+3 clicks, 15 uniques, 150 imp), c2 and c3: revenue 320,
    # payout 175, margin 145, cr 1/15 = 6.67, epc 175/17 = 10.3 -> 10. "spring": (5, 4), c1: cr 25.00,
    # epc 500/5 = 100.
    assert rows(report("sub1", D1, D2)) == [
        ("", "EUR", 7, 2, 0, 1, 500, 200, 300, "50.00", 29),
        ("", "USD", 17, 15, 150, 1, 320, 175, 145, "6.67", 10),
        ("spring", "USD", 5, 4, 0, 1, 1000, 500, 500, "25.00", 100),
    ]


def test_partner_scope_sees_its_own_amounts_only(app):
    w = build_world()
    a, b = w["a"], w["b"]
    # A's rows: its links' traffic, the conversions it converted, and its own lines (converter and
    # recruiter); revenue = its amounts, margin 0.
    assert rows(report("partner", D1, D2, partner_id=a.id)) == [
        (str(a.id), "EUR", 7, 2, 0, 1, 200, 200, 0, "50.00", 29),
        (str(a.id), "USD", 15, 12, 100, 1, 525, 525, 0, "8.33", 35),
    ]
    # by campaign B sees only its traffic on cx and its 150 on c2
    assert rows(report("campaign", D1, D2, partner_id=b.id)) == [
        (str(w["cx"].id), "USD", 7, 7, 50, 1, 150, 150, 0, "14.29", 21),
    ]


def test_partner_scope_never_keys_its_lines_by_another_partners_sub_id_or_code(app):
    """CONTRACT v2 §5: a partner's rows by sub1, coupon or number carry only its own sub IDs and
    codes. A recruited B; B converts through its click with sub1 "b-private" (c8: fee 400, B 200,
    A's override 20) and through its coupon BCODE (c9: fee 600, B 300, A 30)."""
    w = build_world()
    a, b, cx = w["a"], w["b"], w["cx"]
    lb = db.session.scalar(select(Link).where(Link.partner_id == b.id, Link.campaign_id == cx.id))
    lb.coupon_code, lb.coupon_code_lower = "BCODE", "bcode"
    db.session.add(Click(click_id="ckb", link_id=lb.id, campaign_id=cx.id, partner_id=b.id, visitor="vb",
                         sub1="b-private", created_at=at("2025-03-10 11:00")))
    for n, (click_id, fee, mine, override) in enumerate((("ckb", 400, 200, 20), (None, 600, 300, 30)), 8):
        c = Conversion(campaign_id=cx.id, event_key="sale", link_id=lb.id, partner_id=b.id, click_id=click_id,
                       txn_id=f"t{n}", dedup_key=f"t:t{n}", status="pending", currency="USD", client_fee_minor=fee,
                       created_at=at("2025-03-10 11:30"))
        db.session.add(c)
        db.session.flush()
        for party, pid, role, amount in ((f"partner:{b.id}", b.id, "converter", mine),
                                         (f"partner:{a.id}", a.id, "recruiter", override),
                                         ("agency", None, "margin", fee - mine - override)):
            db.session.add(ConversionSplit(conversion_id=c.id, party=party, partner_id=pid, role=role,
                                           amount_minor=amount))
    db.session.commit()
    rebuild_rollups()
    for group, secret in (("sub1", "b-private"), ("coupon", "BCODE")):
        mine = {(r.key, r.currency): r.payout_minor for r in report(group, D1, D2, partner_id=a.id)}
        assert secret not in {k for k, _ in mine}, group
        # A's own lines without a key of its own: c1 (500) under "spring" by sub1; c2's 15, c3's 10 and the
        # two new overrides (20 + 30) under ""
        assert mine[("", "USD")] == (15 + 10 + 20 + 30 if group == "sub1" else 500 + 15 + 10 + 20 + 30), group
        # B and staff still see B's own sub ID and code
        assert secret in {r.key for r in report(group, D1, D2, partner_id=b.id)}, group
        assert secret in {r.key for r in report(group, D1, D2)}, group


def test_client_scope_sees_its_campaigns(app):
    w = build_world()
    assert rows(report("campaign", D1, D2, client_id=w["y"].id)) == [
        (str(w["cy"].id), "EUR", 7, 2, 0, 1, 500, 200, 300, "50.00", 29),
    ]
    assert [r.key for r in report("campaign", D1, D2, client_id=w["x"].id)] == [str(w["cx"].id)]


def test_empty_range_and_refusals(app):
    build_world()
    assert report("day", date(2024, 1, 1), date(2024, 1, 31)) == []
    # the longest range (3660 days) works by day, and the data set falls on its days
    longest = report("day", date(2015, 3, 15), date(2025, 3, 16))
    assert [(r.key, r.currency) for r in longest][:2] == [("2025-03-09", "USD"), ("2025-03-10", "USD")]
    with pytest.raises(ValidationError) as err:
        report("week", D1, D2)
    assert err.value.code == "bad_group_by"
    with pytest.raises(ValidationError) as err:
        report("day", D1, D2, "Nowhere/City")
    assert err.value.code == "unknown_timezone"
    with pytest.raises(ValidationError) as err:
        report("day", D2, D1)
    assert err.value.code == "bad_range"
    with pytest.raises(ValidationError) as err:
        report("campaign", date(2000, 1, 1), date(2020, 1, 1))
    assert err.value.code == "bad_range"


def test_rounding_half_up():
    assert conversion_rate(1, 32) == "3.13"  # 3.125: half up, not to even
    assert conversion_rate(1, 3) == "33.33"
    assert conversion_rate(2, 3) == "66.67"
    assert conversion_rate(0, 0) == "0.00" and conversion_rate(5, 0) == "0.00"
    assert conversion_rate(3, 2) == "150.00"
    assert earnings_per_click(5, 2) == 3  # 2.5 -> 3
    assert earnings_per_click(25, 10) == 3 and earnings_per_click(24, 10) == 2
    assert earnings_per_click(100, 0) == 0
    assert earnings_per_click(-5, 2) == -3  # a reversal can make payout negative: half away from zero


def test_offset_segments():
    from zoneinfo import ZoneInfo

    from partnernet.reporting.services import offset_segments

    ny = ZoneInfo("America/New_York")
    segs = offset_segments(at("2025-01-01 05:00"), at("2026-01-01 05:00"), ny)
    assert segs == [
        (at("2025-01-01 05:00"), -18000),
        (at("2025-03-09 07:00"), -14400),
        (at("2025-11-02 06:00"), -18000),
    ]
    assert offset_segments(at("2025-01-01 00:00"), at("2026-01-01 00:00"), ZoneInfo("Asia/Kolkata")) == [
        (at("2025-01-01 00:00"), 19800)
    ]
    # Lord Howe moves by half an hour, at 02:00 local
    lh = offset_segments(at("2025-01-01 00:00"), at("2025-12-31 00:00"), ZoneInfo("Australia/Lord_Howe"))
    assert [o for _, o in lh] == [39600, 37800, 39600]
    assert lh[1][0] == at("2025-04-05 15:00") and lh[2][0] == at("2025-10-04 15:30")


def test_day_across_the_fall_back_in_new_york(app):
    camp = make_campaign(
        make_client(currency="USD"), events=[{"key": "sale", "client_fee_minor": 100, "payout_percent": "50"}]
    )
    link = make_link(make_partner(), camp)
    for i, created in enumerate(
        ["2025-11-02 03:59", "2025-11-02 04:30", "2025-11-03 04:30", "2025-11-03 05:00"]
    ):
        conv = Conversion(
            campaign_id=camp.id,
            event_key="sale",
            link_id=link.id,
            partner_id=link.partner_id,
            txn_id=f"n{i}",
            dedup_key=f"t:n{i}",
            status="pending",
            currency="USD",
            client_fee_minor=100,
            created_at=at(created),
        )
        db.session.add(conv)
        db.session.flush()
        db.session.add_all([
            ConversionSplit(conversion_id=conv.id, party=f"partner:{link.partner_id}", partner_id=link.partner_id,
                            role="converter", amount_minor=50),
            ConversionSplit(conversion_id=conv.id, party="agency", role="margin", amount_minor=50),
        ])
    db.session.commit()
    rebuild_rollups()
    # 03:59Z is 23:59 EDT on 11-01; 04:30Z is 00:30 EDT on 11-02; after the 06:00Z fall-back, 04:30Z on 11-03
    # is 23:30 EST on 11-02 and 05:00Z is midnight EST, 11-03. Both paths (rollups and conversions) agree.
    for use_rollups in (True, False):
        got = [
            (r.key, r.conversions, r.payout_minor)
            for r in report("day", date(2025, 11, 1), date(2025, 11, 3), "America/New_York",
                            use_rollups=use_rollups)
        ]
        assert got == [("2025-11-01", 1, 50), ("2025-11-02", 2, 100), ("2025-11-03", 1, 50)]
