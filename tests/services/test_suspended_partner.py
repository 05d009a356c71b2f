"""CONTRACT v2 §3 rule 6 ``partner_suspended``, through HTTP on SQLite and PostgreSQL: a
conversion credited to a partner who is not approved when the postback arrives is rejected,
whatever identified it (a click ID of a click made before the suspension included, a coupon, a
tracking number), in the contract's order of reasons; nothing is paid. The partner's status is
read when the conversion is recorded, never from a cache. The tracker's CPC ``click``
conversions are judged at the click (see ``record_conversion``)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from partnernet import queue
from partnernet.clock import utcnow
from partnernet.extensions import db
from partnernet.ledger.services import verify_ledger
from partnernet.models import Campaign, Conversion, LedgerTransaction, Partner, PostbackLog
from partnernet.postbacks import lookups
from partnernet.tracking.buffer import write_records
from tests.factories import make_campaign, make_client, make_link, make_partner
from tests.services.test_ledger_helpers import earnings
from tests.web.test_api_support import staff_api

NUMBER = "+14155550188"
EVENTS = [
    {"key": "lead", "client_fee_minor": 1250, "payout_minor": 900, "one_per_click": True},
    {"key": "sale", "client_fee_percent": "10", "payout_percent": "50", "min_amount_minor": 500},
    {"key": "call", "client_fee_minor": 300, "payout_percent": "70", "min_duration_s": 180},
    {"key": "click", "client_fee_minor": 12, "payout_minor": 8},
]


@pytest.fixture
def shop(app, client):
    """A client, a campaign, an approved partner whose link has a coupon and a number, staff API."""
    adv = make_client(currency="USD")
    camp = make_campaign(adv, default_event="lead", events=EVENTS)
    partner = make_partner()
    link = make_link(partner, camp, coupon_code="Suspend10", tracking_number=NUMBER)
    return adv, camp, partner, link, staff_api(client)


def _click_id(app, link, *, age_s: int = 60, bot: bool = False, fallback: bool = False) -> str:
    ts = int(utcnow().timestamp()) - age_s
    return app.extensions["partnernet_click_signer"].make(link.id, ts, bot=bot, fallback=fallback)


def _post(client, **params) -> tuple[int, dict]:
    resp = client.get("/postback", query_string=params)
    return resp.status_code, resp.get_json()


def _rejected(answer, reason: str) -> Conversion:
    status, body = answer
    got = (status, body["status"], body.get("reason"), body["duplicate"])
    assert got == (200, "rejected", reason, False), body
    conv = db.session.get(Conversion, int(body["conversion_id"]))
    assert (conv.status, conv.reason, conv.ledger_status) == ("rejected", reason, None)
    return conv


def _nothing_paid(camp, partner) -> None:
    queue.run_pending()
    db.session.expire_all()
    assert db.session.get(Campaign, camp.id).spent_minor == 0
    assert db.session.scalar(select(func.count()).select_from(LedgerTransaction)) == 0
    assert earnings(partner.id) == {"pending": 0, "approved": 0, "paid": 0, "balance": 0}
    assert verify_ledger() == []


def _suspend(api, partner) -> None:
    resp = api.post(f"/partners/{partner.id}/suspend")
    assert resp.status_code == 200 and resp.get_json()["status"] == "suspended"


def test_click_coupon_and_number_after_a_suspension_are_rejected_and_pay_nothing(app, client, shop):
    adv, camp, partner, link, api = shop
    cid = _click_id(app, link)  # a click made while the partner was approved
    _suspend(api, partner)
    _rejected(_post(client, key=adv.postback_key, click_id=cid, txn_id="C-1"), "partner_suspended")
    _rejected(_post(client, key=adv.postback_key, coupon="SUSPEND10", txn_id="P-1", event="sale", amount="80.00"),
              "partner_suspended")
    _rejected(_post(client, key=adv.postback_key, number=NUMBER, txn_id="N-1", event="call", duration="400"),
              "partner_suspended")
    # approved at once by the postback: still rejected, nothing posted
    _rejected(_post(client, key=adv.postback_key, click_id=_click_id(app, link), txn_id="C-2", status="approved"),
              "partner_suspended")
    logs = db.session.scalars(select(PostbackLog.outcome).order_by(PostbackLog.id)).all()
    assert logs == ["rejected"] * 4
    _nothing_paid(camp, partner)
    # a repeat answers the rejected conversion as a duplicate and changes nothing
    status, body = _post(client, key=adv.postback_key, click_id=cid, txn_id="C-1", status="approved")
    assert (status, body["status"], body["duplicate"]) == (200, "rejected", True)
    _nothing_paid(camp, partner)

    # reinstated: the same click's next conversion counts again
    assert api.post(f"/partners/{partner.id}/approve").get_json()["status"] == "approved"
    status, body = _post(client, key=adv.postback_key, click_id=cid, txn_id="C-3")
    assert (status, body["status"]) == (201, "pending")
    queue.run_pending()
    assert earnings(partner.id)["pending"] == 900


@pytest.mark.parametrize("status", ["pending", "rejected"])
def test_a_partner_never_approved_or_rejected_is_refused_too(app, client, shop, status):
    adv, camp, partner, link, _ = shop
    cid = _click_id(app, link)
    db.session.execute(update(Partner).where(Partner.id == partner.id).values(status=status))
    db.session.commit()
    _rejected(_post(client, key=adv.postback_key, click_id=cid), "partner_suspended")
    _nothing_paid(camp, partner)


def test_the_contract_order_of_reasons(app, client, shop):
    """bot_click and fallback_click come before partner_suspended; every later reason gives way."""
    adv, camp, partner, link, api = shop
    key = adv.postback_key
    bot, fallback = _click_id(app, link, bot=True), _click_id(app, link, fallback=True)
    old = _click_id(app, link, age_s=31 * 86400)  # outside the 30-day attribution window
    taken = _click_id(app, link)
    assert _post(client, key=key, click_id=taken, txn_id="L-1")[0] == 201  # lead is one_per_click
    _suspend(api, partner)
    _rejected(_post(client, key=key, click_id=bot), "bot_click")
    _rejected(_post(client, key=key, click_id=fallback), "fallback_click")
    _rejected(_post(client, key=key, click_id=old), "partner_suspended")  # not outside_window
    _rejected(_post(client, key=key, click_id=taken, txn_id="L-2"), "partner_suspended")  # not duplicate_click
    _rejected(_post(client, key=key, coupon="suspend10", txn_id="S-1", event="sale", amount="1.00"),
              "partner_suspended")  # not below_min_amount
    _rejected(_post(client, key=key, number=NUMBER, txn_id="N-1", event="call", duration="10"),
              "partner_suspended")  # not below_min_duration
    # the conversion recorded before the suspension keeps its status and money
    queue.run_pending()
    assert earnings(partner.id)["pending"] == 900
    assert db.session.get(Campaign, camp.id).spent_minor == 1250


def test_a_pending_conversion_changes_status_after_the_suspension(app, client, shop):
    """Step 5 (an existing conversion) answers before the business rules: an approval or a reversal
    of a conversion recorded before the suspension applies."""
    adv, camp, partner, link, api = shop
    cid = _click_id(app, link)
    assert _post(client, key=adv.postback_key, click_id=cid, txn_id="E-1")[0] == 201
    _suspend(api, partner)
    status, body = _post(client, key=adv.postback_key, click_id=cid, txn_id="E-1", status="approved")
    assert (status, body["status"], body["duplicate"]) == (200, "approved", True)
    queue.run_pending()
    assert earnings(partner.id)["approved"] == 900


def test_the_status_is_read_at_recording_not_from_the_postback_cache(redis_app):
    """Lookups cached under the state version: a suspension made by plain SQL (no version bump,
    the worst case) is still seen by the next postback."""
    client = redis_app.test_client()
    lookups.clear_cache(redis_app)
    redis_app.config["PARTNERNET_STATE_TTL_S"] = 3600
    try:
        adv = make_client(currency="USD")
        camp = make_campaign(adv, default_event="lead", events=EVENTS)
        partner = make_partner()
        link = make_link(partner, camp, coupon_code="Cached77")
        assert _post(client, key=adv.postback_key, coupon="cached77", txn_id="W-1")[0] == 201  # warms the cache
        db.session.execute(update(Partner).where(Partner.id == partner.id).values(status="suspended"))
        db.session.commit()
        _rejected(_post(client, key=adv.postback_key, coupon="cached77", txn_id="W-2"), "partner_suspended")
        _rejected(_post(client, key=adv.postback_key, click_id=_click_id(redis_app, link), txn_id="W-3"),
                  "partner_suspended")
    finally:
        redis_app.config["PARTNERNET_STATE_TTL_S"] = 0


def test_a_cpc_click_made_before_the_suspension_and_written_after_it_still_counts(app, shop):
    """The tracker's ``click`` conversion is judged at the click: the redirect saw an approved
    partner (no fallback), so the click is billable even when the buffer writes it after the
    suspension. A click made after the suspension went to the fallback and never converts."""
    adv, camp, partner, link, api = shop
    at = utcnow()
    before = {"t": "c", "click_id": "cpc-before-suspension", "link_id": link.id, "campaign_id": camp.id,
              "partner_id": partner.id, "at": at.isoformat(), "visitor": "v1", "unique": True}
    after = {**before, "click_id": "cpc-after-suspension", "visitor": "v2", "fb": "partner_suspended"}
    _suspend(api, partner)
    write_records([before, after])
    queue.run_pending()
    convs = db.session.scalars(select(Conversion).where(Conversion.event_key == "click")).all()
    assert [(c.click_id, c.status, c.reason) for c in convs] == [("cpc-before-suspension", "pending", None)]
    assert earnings(partner.id)["pending"] == 8
