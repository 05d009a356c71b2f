"""CONTRACT v2 §4: a conversion's payout terms (event payout, partner tier, per-partner override,
performance bonus, and the converter's recruiters) are those in force when the postback is
recorded, however late the split job runs. Through HTTP (postbacks and the staff API) on SQLite
and PostgreSQL, with the in-process queue held back until the rules have changed."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from partnernet import queue
from partnernet.extensions import db
from partnernet.ledger.services import verify_ledger
from partnernet.models import Conversion, ConversionSplit
from tests.factories import make_campaign, make_client, make_link, make_partner
from tests.services.test_ledger_helpers import earnings
from tests.web.test_api_support import staff_api

EVENTS = [{"key": "sale", "client_fee_minor": 1000, "payout_percent": "50"}]


@pytest.fixture
def held(monkeypatch):
    """Hold the in-process jobs back (the split job does not run after each request); returns
    the real ``run_pending`` to run them when the test says so."""
    real = queue.run_pending
    monkeypatch.setattr(queue, "run_pending", lambda *a, **k: 0)
    return real


@pytest.fixture
def shop(app, client):
    adv = make_client(currency="USD")
    camp = make_campaign(adv, events=EVENTS)
    partner = make_partner()
    link = make_link(partner, camp, coupon_code="Terms10")
    return adv, camp, partner, link, staff_api(client)


def _sale(client, adv, txn: str, status: str | None = None) -> int:
    params = {"key": adv.postback_key, "coupon": "terms10", "txn_id": txn}
    if status:
        params["status"] = status
    resp = client.get("/postback", query_string=params)
    assert resp.status_code == 201, resp.get_json()
    return int(resp.get_json()["conversion_id"])


def _lines(conversion_id: int) -> list[tuple[str, str, int, str | None]]:
    rows = db.session.scalars(select(ConversionSplit).where(ConversionSplit.conversion_id == conversion_id)
                              .order_by(ConversionSplit.id))
    return [(s.party, s.role, s.amount_minor, s.rule) for s in rows]


def _change_every_rule(api, camp, partner) -> None:
    """A tier (60%), an override (7.25 fixed), a bonus reached at once (+5 points, 1 approved:
    an earlier conversion is approved first by the caller) and a recruiter at 10%."""
    tier = api.post("/partner-tiers", json={"name": "Gold", "payout_percent": "60"}).get_json()
    assert api.post(f"/partners/{partner.id}/tier", json={"tier_id": tier["id"]}).status_code == 200
    assert api.post("/payout-overrides", json={"campaign_id": str(camp.id), "partner_id": str(partner.id),
                                               "payout": "7.25"}).status_code == 201
    assert api.post("/performance-bonuses", json={"campaign_id": str(camp.id), "threshold": 1,
                                                  "bonus_points": "5"}).status_code == 201
    recruiter = make_partner(name="Recruiter")
    assert api.post(f"/partners/{partner.id}/recruiter", json={"recruiter_id": str(recruiter.id),
                                                               "recruiter_percent": "10"}).status_code == 200


def test_rules_changed_after_recording_change_nothing_however_late_the_split_runs(app, client, shop, held):
    adv, camp, partner, link, api = shop
    first = _sale(client, adv, "T-0")
    late = _sale(client, adv, "T-1")  # recorded under the event's 50%
    assert api.post(f"/conversions/{first}/approve").status_code == 200  # 1 approved: the bonus is reached
    _change_every_rule(api, camp, partner)
    assert db.session.scalar(select(ConversionSplit.id).where(ConversionSplit.conversion_id == late)) is None
    held()  # the split job runs only now
    assert _lines(late) == [(f"partner:{partner.id}", "converter", 500, "event: 50%"),
                            ("agency", "margin", 500, "fee minus partner amounts")]
    # a conversion recorded after the changes gets them: override 7.25 + 5% of 10.00 = 7.75, recruiter 10%
    after = _sale(client, adv, "T-2")
    held()
    lines = _lines(after)
    assert lines[0] == (f"partner:{partner.id}", "converter", 775, "override bonus +5 (1 approved): 7.75 USD")
    assert [(role, amount) for _, role, amount, _ in lines[1:]] == [("recruiter", 78), ("margin", 147)]
    conv = db.session.get(Conversion, after)
    assert (conv.payout_rule, conv.terms_payout_minor, conv.terms_payout_percent) == (
        "override bonus +5 (1 approved): 7.75 USD", 775, None)
    assert verify_ledger() == []


def test_a_rule_removed_after_recording_still_pays_what_it_promised(app, client, shop, held):
    adv, camp, partner, link, api = shop
    ov = api.post("/payout-overrides", json={"campaign_id": str(camp.id), "partner_id": str(partner.id),
                                             "payout_percent": "80"}).get_json()
    cid = _sale(client, adv, "R-1")
    gone = api.client.delete(f"/api/v1/payout-overrides/{ov['id']}", headers=api._headers())
    assert gone.status_code == 204
    held()
    assert _lines(cid)[0] == (f"partner:{partner.id}", "converter", 800, "override: 80%")


def test_staff_approval_and_reversal_post_the_recorded_terms(app, client, shop, held):
    """A staff approval posts the split itself when the job has not run yet: with the terms of the
    recording. A reversal by postback then takes back exactly what was posted."""
    adv, camp, partner, link, api = shop
    cid = _sale(client, adv, "A-1")
    assert api.post("/payout-overrides", json={"campaign_id": str(camp.id), "partner_id": str(partner.id),
                                               "payout": "9.00"}).status_code == 201
    assert api.post(f"/conversions/{cid}/approve").status_code == 200  # posts split + approve inline
    assert _lines(cid)[0][2:] == (500, "event: 50%")
    assert earnings(partner.id) == {"pending": 0, "approved": 500, "paid": 0, "balance": 500}
    resp = client.get("/postback", query_string={"key": adv.postback_key, "coupon": "terms10", "txn_id": "A-1",
                                                 "status": "reversed"})
    assert resp.get_json()["status"] == "reversed"
    held()
    assert earnings(partner.id) == {"pending": 0, "approved": 0, "paid": 0, "balance": 0}
    assert verify_ledger() == []


def test_a_bonus_counts_the_approvals_made_before_the_recording_only(app, client, shop, held):
    adv, camp, partner, link, api = shop
    assert api.post("/performance-bonuses", json={"campaign_id": str(camp.id), "threshold": 1,
                                                  "bonus_points": "10"}).status_code == 201
    first = _sale(client, adv, "B-0")
    before = _sale(client, adv, "B-1")  # 0 approved when recorded
    assert api.post(f"/conversions/{first}/approve").status_code == 200
    after = _sale(client, adv, "B-2")  # 1 approved when recorded
    held()
    assert _lines(before)[0][2:] == (500, "event: 50%")
    assert _lines(after)[0][2:] == (600, "event bonus +10 (1 approved): 60%")


def test_recruiter_percents_are_fixed_at_recording(app, client, shop, held):
    adv, camp, partner, link, api = shop
    top, mid = make_partner(name="Top"), make_partner(name="Mid")
    api.post(f"/partners/{mid.id}/recruiter", json={"recruiter_id": str(top.id), "recruiter_percent": "1",
                                                    "tier2_percent": "4"})
    api.post(f"/partners/{partner.id}/recruiter", json={"recruiter_id": str(mid.id), "recruiter_percent": "10"})
    cid = _sale(client, adv, "C-1")
    # later: the percents change and the chain is cut
    api.post(f"/partners/{partner.id}/recruiter", json={"recruiter_id": str(mid.id), "recruiter_percent": "40"})
    api.post(f"/partners/{mid.id}/recruiter", json={"recruiter_id": None, "recruiter_percent": None})
    held()
    assert [(p, r, a) for p, r, a, _ in _lines(cid)] == [
        (f"partner:{partner.id}", "converter", 500), (f"partner:{mid.id}", "recruiter", 50),
        (f"partner:{top.id}", "recruiter", 20), ("agency", "margin", 430)]


def test_a_conversion_recorded_before_terms_were_stored_is_resolved_when_split(app, client, shop, held):
    """Rows written before the terms columns existed (``payout_rule`` NULL): resolved by the split
    job, with the rules in force then (the behaviour before terms were fixed)."""
    adv, camp, partner, link, api = shop
    cid = _sale(client, adv, "L-1")
    db.session.execute(update(Conversion).where(Conversion.id == cid).values(
        payout_rule=None, terms_payout_minor=None, terms_payout_percent=None))
    db.session.commit()
    tier = api.post("/partner-tiers", json={"name": "Silver", "payout_percent": "55"}).get_json()
    api.post(f"/partners/{partner.id}/tier", json={"tier_id": tier["id"]})
    held()
    assert _lines(cid)[0][2:] == (550, "tier Silver: 55%")
