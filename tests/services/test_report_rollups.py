"""The report rollups (issue 7 item 4): kept in step incrementally they equal a rebuild from
scratch, and the report read from them equals the report read from conversions, split lines
and the link-level hourly traffic, on both databases.

- the money rollups after a mix of postbacks, approvals, rejections, reversals, multi-touch
  splits and recruiter overrides made by the real ledger engine equal ``rebuild_money_rollup()``;
- :func:`apply_conversion_money` called directly (+1 / -1) equals the rebuild;
- the click flusher's daily and per-campaign traffic equal ``rebuild_traffic_rollups()``;
- report(rollups) == report(exact) over random data, every group_by the rollups answer, zones
  with whole-hour offsets and DST changes (rollups) and with half-hour offsets (the exact
  money path), staff, partner and client scopes.
"""

from __future__ import annotations

import itertools
import random
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from partnernet import clock, queue
from partnernet.conversions.review import approve_conversion, reject_conversion
from partnernet.conversions.services import apply_postback_status, lock_conversion_for_change, record_conversion
from partnernet.extensions import db
from partnernet.models import (
    MONEY_COLUMNS,
    TRAFFIC_COLUMNS,
    CampaignMoneyRollup,
    CampaignTrafficRollup,
    Click,
    Conversion,
    ConversionSplit,
    DailyMoneyRollup,
    DailyTrafficRollup,
    MoneyRollup,
    TrafficRollup,
)
from partnernet.reporting.rollup import (
    apply_conversion_money,
    rebuild_money_rollup,
    rebuild_rollups,
    rebuild_traffic_rollups,
)
from partnernet.reporting.services import report
from partnernet.tracking.buffer import write_records
from tests.factories import make_campaign, make_client, make_link, make_partner, make_user

_n = itertools.count(1)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def snapshot(models) -> dict[str, list[tuple]]:
    """Every row of the rollup ``models`` that holds something, as sorted tuples."""
    out = {}
    for model in models:
        measures = MONEY_COLUMNS if hasattr(model, "entries") else TRAFFIC_COLUMNS
        cols = [c.name for c in model.__table__.columns]
        out[model.__tablename__] = sorted(tuple(getattr(r, c) for c in cols)
                                          for r in db.session.scalars(select(model))
                                          if any(getattr(r, m) for m in measures))
    db.session.rollback()
    return out


MONEY_MODELS = (MoneyRollup, DailyMoneyRollup, CampaignMoneyRollup)
TRAFFIC_MODELS = (DailyTrafficRollup, CampaignTrafficRollup)


def assert_money_rollup_equals_rebuild() -> dict:
    incremental = snapshot(MONEY_MODELS)
    rebuild_money_rollup()
    rebuilt = snapshot(MONEY_MODELS)
    assert incremental == rebuilt
    return rebuilt


# --------------------------------------------------------------------------- through the ledger engine


def _click(link, visitor, when) -> str:
    cid = f"rk{next(_n):06d}"
    db.session.add(Click(click_id=cid, link_id=link.id, campaign_id=link.campaign_id, partner_id=link.partner_id,
                         created_at=when, visitor=visitor, is_unique=True))
    db.session.commit()
    return cid


def _convert(camp, link, when, *, event="sale", click_id=None, status="pending", is_test=False, amount=None):
    clock.set_now(when)
    rec = record_conversion(
        campaign_id=camp.id, event=camp.event(event), link_id=link.id, partner_id=link.partner_id,
        click_id=click_id, click_at=None, txn_id=None if event == "click" else f"R{next(_n)}",
        amount_minor=amount, duration_s=None, status=status, reason=None,
        key=f"c:rk-click-{next(_n)}" if event == "click" else None, is_test=is_test,
    )
    db.session.commit()
    queue.run_pending()
    return rec.conversion.id


def _postback_status(conversion_id: int, status: str) -> None:
    conv = lock_conversion_for_change(conversion_id)
    assert apply_postback_status(conv, status)
    db.session.commit()
    queue.run_pending()


def test_engine_keeps_the_money_rollup_equal_to_a_rebuild(app):
    """Needs the ledger engine to call apply_conversion_money (split posted +1, reject/reverse -1)."""
    staff = make_user("rollup-staff@example.com")
    usd, eur = make_client(currency="USD"), make_client(currency="EUR")
    events = [{"key": "sale", "client_fee_minor": 1000, "payout_percent": "50"},
              {"key": "lead", "client_fee_minor": 300, "payout_minor": 100},
              {"key": "click", "client_fee_minor": 20, "payout_percent": "50"}]
    camp = make_campaign(usd, events=events, attribution_model="linear")
    other = make_campaign(eur, events=[{"key": "lead", "client_fee_minor": 500, "payout_percent": "40"}])
    a = make_partner()
    b = make_partner(recruiter=a, recruiter_percent="10")
    c = make_partner(recruiter=b, recruiter_percent="5")
    la, lb, lc = make_link(a, camp, channel="social"), make_link(b, camp, channel=None), make_link(c, camp)
    lo = make_link(a, other, channel="search")
    t0 = at("2025-03-09 05:10")

    # a visitor touches A, B, then C, who converts: touch lines for A and B, recruiter lines for A and B
    _click(la, "v1", t0)
    _click(lb, "v1", t0 + timedelta(minutes=20))
    multi = _convert(camp, lc, t0 + timedelta(minutes=50), click_id=_click(lc, "v1", t0 + timedelta(minutes=40)))
    ids = {"multi": multi}
    ids["approved"] = _convert(camp, lb, t0 + timedelta(hours=2), event="lead")
    approve_conversion(ids["approved"], staff.id)
    ids["rejected_by_staff"] = _convert(camp, la, t0 + timedelta(hours=2, minutes=5))
    reject_conversion(ids["rejected_by_staff"], staff.id, "fraud")
    ids["reversed_after_approval"] = _convert(camp, lc, t0 + timedelta(hours=26), status="approved")
    _postback_status(ids["reversed_after_approval"], "reversed")
    ids["client_rejected"] = _convert(camp, la, t0 + timedelta(hours=26, minutes=1))
    _postback_status(ids["client_rejected"], "rejected")
    ids["rejected_at_creation"] = _convert(camp, lb, t0 + timedelta(hours=27), status="rejected")
    ids["test"] = _convert(camp, la, t0 + timedelta(hours=27), is_test=True)
    ids["click"] = _convert(camp, la, t0 + timedelta(hours=28), event="click")
    ids["eur"] = _convert(other, lo, t0 + timedelta(days=2), event="lead")
    ids["approved_by_postback"] = _convert(other, lo, t0 + timedelta(days=2, hours=1), event="lead")
    _postback_status(ids["approved_by_postback"], "approved")
    db.session.expire_all()

    splits = {cid: db.session.scalars(select(ConversionSplit).where(ConversionSplit.conversion_id == cid)).all()
              for cid in ids.values()}
    assert {s.role for s in splits[multi]} == {"converter", "touch", "recruiter", "margin"}
    assert not splits[ids["rejected_at_creation"]] and not splits[ids["test"]]

    rebuilt = assert_money_rollup_equals_rebuild()
    hourly = {(r[0], r[1], r[2]): r for r in rebuilt["money_rollups"]}
    # the multi-touch hour: C's row holds the conversion; A and B rows hold only their touch and recruiter lines
    hour = at("2025-03-09 06:00")
    assert hourly[(hour, lc.id, c.id)][4:9] == (1, 1000, sum(s.amount_minor for s in splits[multi]
                                                             if s.partner_id == c.id),
                                                 [s.amount_minor for s in splits[multi] if s.role == "margin"][0], 2)
    assert hourly[(hour, lc.id, a.id)][4:6] == (0, 0) and hourly[(hour, lc.id, a.id)][6] > 0
    # the conversions rejected or reversed after their split left nothing behind
    assert (at("2025-03-10 07:00"), lc.id, c.id) not in hourly
    for group_by in ("day", "campaign", "partner", "channel"):
        for tz in ("UTC", "America/New_York"):
            args = (group_by, date(2025, 3, 8), date(2025, 3, 12), tz)
            assert report(*args) == report(*args, use_rollups=False)
            assert report(*args, partner_id=a.id) == report(*args, partner_id=a.id, use_rollups=False)


# --------------------------------------------------------------------------- apply_conversion_money directly


def _world():
    usd, eur = make_client(currency="USD"), make_client(currency="EUR")
    cx = make_campaign(usd, events=[{"key": "sale", "client_fee_minor": 1000, "payout_percent": "50"},
                                    {"key": "click", "client_fee_minor": 20, "payout_percent": "50"},
                                    {"key": "impression", "client_fee_minor": 250, "payout_minor": 150}])
    cy = make_campaign(eur, events=[{"key": "lead", "client_fee_minor": 500, "payout_percent": "40"}])
    partners = [make_partner() for _ in range(4)]
    links = [make_link(p, camp, channel=ch)
             for p, camp, ch in zip(partners + partners[:2], [cx] * 4 + [cy] * 2,
                                    ["social", None, "search", "social", "email", None], strict=True)]
    return {"usd": usd, "eur": eur, "cx": cx, "cy": cy, "partners": partners, "links": links}


def _random_conversion(rnd: random.Random, w: dict, when: datetime, status: str) -> tuple[Conversion, list[dict]]:
    """A conversion on a random link with random split lines (converter, maybe touches and a
    recruiter of other partners, margin) adding up to its fee, inserted directly."""
    link = rnd.choice(w["links"])
    camp = w["cx"] if link.campaign_id == w["cx"].id else w["cy"]
    event = rnd.choice(["sale", "sale", "click", "impression"]) if camp is w["cx"] else "lead"
    fee = rnd.choice([0, 20, 250, 999, 1000, 1234])
    n = next(_n)
    conv = Conversion(campaign_id=camp.id, event_key=event, link_id=link.id, partner_id=link.partner_id,
                      txn_id=f"x{n}", dedup_key=f"t:x{n}", status=status, currency=camp.currency,
                      client_fee_minor=fee, created_at=when,
                      reason="client_rejected" if status == "rejected" else None)
    db.session.add(conv)
    db.session.flush()
    payout = rnd.randint(0, fee)
    others = [p.id for p in w["partners"] if p.id != link.partner_id]
    lines = []
    for pid in rnd.sample(others, rnd.randint(0, 2)):
        share = rnd.randint(1, payout) if payout else 0
        if share:
            lines.append({"partner_id": pid, "role": rnd.choice(["touch", "recruiter"]), "amount_minor": share})
            payout -= share
    lines = [{"partner_id": link.partner_id, "role": "converter", "amount_minor": payout}, *lines]
    lines.append({"partner_id": None, "role": "margin", "amount_minor": fee - sum(x["amount_minor"] for x in lines)})
    for line in lines:
        pid = line["partner_id"]
        db.session.add(ConversionSplit(conversion_id=conv.id, party=f"partner:{pid}" if pid else "agency",
                                       partner_id=pid, role=line["role"], amount_minor=line["amount_minor"]))
    return conv, lines


def test_apply_conversion_money_equals_the_rebuild(app):
    rnd = random.Random(7)
    w = _world()
    posted = []
    for _ in range(60):
        when = at("2025-03-08 00:00") + timedelta(minutes=rnd.randint(0, 5 * 24 * 60))
        conv, lines = _random_conversion(rnd, w, when, "pending")
        posted.append((conv, lines))
    apply_conversion_money([(conv, lines, 1) for conv, lines in posted[:30]])  # one batch
    for conv, lines in posted[30:]:  # and one by one
        apply_conversion_money([(conv, lines, 1)])
    # some are rejected or reversed after their split was posted, in one batch with a new posting
    undone = posted[::4]
    for conv, _ in undone:
        conv.status = rnd.choice(["rejected", "reversed"])
    late, late_lines = _random_conversion(rnd, w, at("2025-03-10 12:34"), "approved")
    apply_conversion_money([(conv, lines, -1) for conv, lines in undone] + [(late, late_lines, 1)])
    # a test conversion never counts; one rejected at creation has no split and is never applied
    test_conv, test_lines = _random_conversion(rnd, w, at("2025-03-09 09:00"), "pending")
    test_conv.is_test = True
    apply_conversion_money([(test_conv, test_lines, 1)])
    db.session.commit()
    rebuilt = assert_money_rollup_equals_rebuild()
    assert len(rebuilt["money_rollups"]) > 40
    with pytest.raises(ValueError):
        apply_conversion_money([(late, late_lines, 2)])


# --------------------------------------------------------------------------- traffic kept by the flusher


def test_flusher_keeps_daily_and_campaign_traffic_equal_to_the_rebuild(app):
    rnd = random.Random(3)
    w = _world()
    records = []
    for i in range(400):
        link = rnd.choice(w["links"])
        when = at("2025-03-29 20:00") + timedelta(minutes=rnd.randint(0, 3 * 24 * 60))
        common = {"link_id": link.id, "campaign_id": link.campaign_id, "partner_id": link.partner_id,
                  "at": when.isoformat(), "sub1": rnd.choice([None, "a", "b"]), "bot": rnd.random() < 0.1}
        if rnd.random() < 0.7:
            records.append({"t": "c", "click_id": f"fl{i:05d}", "visitor": f"v{rnd.randint(0, 50)}",
                            "unique": rnd.random() < 0.6, "fb": "paused" if rnd.random() < 0.05 else None, **common})
        else:
            records.append({"t": "i", **common})
    for k in range(0, len(records), 37):
        write_records(records[k:k + 37], batch_id=f"b{k}")
    incremental = snapshot(TRAFFIC_MODELS)
    assert sum(r[2] for r in incremental["traffic_rollups_daily"]) == sum(
        1 for r in records if r["t"] == "c")
    rebuild_traffic_rollups()
    assert snapshot(TRAFFIC_MODELS) == incremental


# --------------------------------------------------------------------------- report: rollups == exact


ZONES = ["UTC", "America/New_York", "Europe/Paris", "Asia/Tokyo", "America/St_Johns", "Asia/Kolkata",
         "Australia/Lord_Howe"]


def _random_data(seed: int) -> dict:
    rnd = random.Random(seed)
    w = _world()
    first = at("2025-03-06 00:00")
    span = 28 * 24  # hours: both the US (03-09) and the EU (03-30) DST changes
    for link in w["links"]:
        for hour in sorted(rnd.sample(range(span), 60)):
            db.session.add(TrafficRollup(hour=first + timedelta(hours=hour), link_id=link.id,
                                         sub1=rnd.choice(["", "x"]), clicks=rnd.randint(0, 40),
                                         unique_clicks=rnd.randint(0, 20), impressions=rnd.randint(0, 90)))
    for _ in range(150):
        when = first + timedelta(seconds=rnd.randint(0, span * 3600 - 1))
        _random_conversion(rnd, w, when, rnd.choice(["pending", "pending", "approved", "rejected", "reversed"]))
    db.session.commit()
    rebuild_rollups()
    return w


@pytest.mark.parametrize("seed", [1, 2])
def test_report_from_rollups_equals_the_exact_report(app, seed):
    rnd = random.Random(100 + seed)
    w = _random_data(seed)
    scopes = [{}, {"partner_id": w["partners"][0].id}, {"partner_id": w["partners"][3].id},
              {"client_id": w["usd"].id}, {"client_id": w["eur"].id}]
    ranges = [(date(2025, 3, 5), date(2025, 4, 3)), (date(2025, 3, 9), date(2025, 3, 9)),
              (date(2025, 3, 29), date(2025, 3, 31))]
    ranges += [(d, d + timedelta(days=rnd.randint(0, 6))) for d in
               (date(2025, 3, 6) + timedelta(days=rnd.randint(0, 20)) for _ in range(2))]
    checked = 0
    for group_by in ("day", "campaign", "partner", "channel"):
        for tz in ZONES:
            for frm, to in ranges:
                scope = rnd.choice(scopes)
                fast = report(group_by, frm, to, tz, **scope)
                exact = report(group_by, frm, to, tz, use_rollups=False, **scope)
                assert fast == exact, (group_by, tz, frm, to, scope)
                checked += bool(exact)
    assert checked > 80


def test_cli_rebuilds_the_rollups(app):
    w = _random_data(5)
    before = snapshot(MONEY_MODELS + TRAFFIC_MODELS)
    for model in MONEY_MODELS + TRAFFIC_MODELS:
        db.session.query(model).delete()
    db.session.commit()
    out = app.test_cli_runner().invoke(args=["reports", "rebuild-rollup"])
    assert out.exit_code == 0, out.output
    assert "rebuilt the report rollups" in out.output
    assert snapshot(MONEY_MODELS + TRAFFIC_MODELS) == before
    assert w["links"]
