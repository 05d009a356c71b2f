"""CONTRACT v2 §3 customers and recurring commissions, through /postback on SQLite and PostgreSQL:
the first conversion with a ``customer_id`` binds the customer to its link; a recurring event
then credits postbacks naming only the customer (with ``txn_id``) to that link while the binding
is younger than ``recurring_months`` (null: lifetime), else rejects them ``outside_window``; an
unknown customer is 404 ``unknown_customer``; a click ID, coupon or number wins and never rebinds;
a suspended partner's customer is rejected ``partner_suspended``; concurrent first postbacks bind
once (PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, null, select

from partnernet import clock
from partnernet.clock import utcnow
from partnernet.extensions import db
from partnernet.models import Conversion, CustomerBinding, Partner, PostbackLog
from tests.concurrency import fire_postbacks
from tests.factories import make_campaign, make_client, make_link, make_partner

EVENTS = [
    {"key": "signup", "client_fee_minor": 500, "payout_minor": 300},
    {"key": "renewal", "client_fee_percent": "20", "payout_percent": "50", "recurring_months": 12},
    {"key": "lifetime", "client_fee_minor": 100, "payout_minor": 60, "recurring_months": null()},  # lifetime
]


@pytest.fixture
def shop(app):
    adv = make_client(currency="USD")
    camp = make_campaign(adv, default_event="signup", events=EVENTS)
    first = make_link(make_partner(), camp, coupon_code="FIRST10")
    second = make_link(make_partner(), camp, coupon_code="SECOND10")
    return adv, camp, first, second


def _post(client, **params) -> tuple[int, dict]:
    resp = client.get("/postback", query_string=params)
    return resp.status_code, resp.get_json()


def _conv(body) -> Conversion:
    return db.session.get(Conversion, int(body["conversion_id"]))


def _binding(camp, customer="cus_1") -> CustomerBinding | None:
    db.session.expire_all()
    return db.session.scalar(select(CustomerBinding).where(
        CustomerBinding.campaign_id == camp.id, CustomerBinding.customer_id == customer))


def test_first_conversion_binds_and_renewals_are_credited_to_the_bound_link(client, shop):
    adv, camp, first, second = shop
    st, body = _post(client, key=adv.postback_key, coupon="first10", txn_id="S-1", customer_id="cus_1")
    assert st == 201
    assert _conv(body).customer_id == "cus_1"
    b = _binding(camp)
    assert (b.link_id, b.partner_id, b.conversion_id) == (first.id, first.partner_id, int(body["conversion_id"]))
    st, body = _post(client, key=adv.postback_key, customer_id="cus_1", txn_id="R-1", event="renewal",
                     amount="50.00")
    assert (st, body["status"]) == (201, "pending"), body
    conv = _conv(body)
    assert (conv.link_id, conv.partner_id, conv.customer_id, conv.click_id) == (
        first.id, first.partner_id, "cus_1", None)
    assert conv.client_fee_minor == 1000
    # A repeat is the same conversion (step 5).
    st, again = _post(client, key=adv.postback_key, customer_id="cus_1", txn_id="R-1", event="renewal",
                      amount="50.00")
    assert (st, again["duplicate"], again["conversion_id"]) == (200, True, body["conversion_id"])
    # GET /conversions shows the customer_id (null when none).
    from tests.web.test_api_support import staff_api

    items = staff_api(client).get("/conversions").get_json()["items"]
    assert sorted(i["customer_id"] for i in items) == ["cus_1", "cus_1"]


def test_renewal_outside_the_window_is_rejected_and_lifetime_never_ends(client, shop):
    adv, camp, first, _ = shop
    assert _post(client, key=adv.postback_key, coupon="FIRST10", txn_id="S-1", customer_id="cus_1")[0] == 201
    bound_at = _binding(camp).bound_at
    try:
        clock.set_now(bound_at + timedelta(days=364))
        st, body = _post(client, key=adv.postback_key, customer_id="cus_1", txn_id="R-1", event="renewal",
                         amount="10.00")
        assert (st, body["status"]) == (201, "pending")
        clock.set_now(bound_at + timedelta(days=366))
        st, body = _post(client, key=adv.postback_key, customer_id="cus_1", txn_id="R-2", event="renewal",
                         amount="10.00")
        assert (st, body["status"], body["reason"]) == (200, "rejected", "outside_window")
        assert _conv(body).link_id == first.id
        clock.set_now(bound_at + timedelta(days=3650))
        st, body = _post(client, key=adv.postback_key, customer_id="cus_1", txn_id="L-1", event="lifetime")
        assert (st, body.get("status")) == (201, "pending"), body
        assert _conv(body).partner_id == first.partner_id
    finally:
        clock.set_now(None)


def test_refusals_unknown_customer_non_recurring_event_missing_txn_id_and_bad_customer_id(client, shop):
    adv, camp, _, _ = shop
    st, body = _post(client, key=adv.postback_key, customer_id="nobody", txn_id="R-1", event="renewal",
                     amount="10.00")
    assert (st, body["error"]) == (404, "unknown_customer")
    assert _post(client, key=adv.postback_key, coupon="FIRST10", txn_id="S-1", customer_id="cus_1")[0] == 201
    # A bound customer on an event that is not recurring: the v1 answer for no identifier.
    st, body = _post(client, key=adv.postback_key, customer_id="cus_1", txn_id="R-1")
    assert (st, body["error"]) == (400, "missing_click_id")
    st, body = _post(client, key=adv.postback_key, customer_id="cus_1", event="renewal", amount="10.00")
    assert (st, body["error"]) == (400, "missing_txn_id")
    st, body = _post(client, key=adv.postback_key, coupon="FIRST10", txn_id="S-2", customer_id="x" * 256)
    assert (st, body["error"]) == (400, "bad_customer_id")
    assert _post(client, key=adv.postback_key, txn_id="S-3")[1]["error"] == "missing_click_id"
    # Another client's customer is unknown to this client.
    other = make_client(currency="USD")
    st, body = _post(client, key=other.postback_key, customer_id="cus_1", txn_id="R-9", event="renewal",
                     amount="10.00")
    assert (st, body["error"]) == (404, "unknown_customer")
    db.session.expire_all()
    assert db.session.scalar(select(func.count()).select_from(Conversion)) == 1
    assert db.session.scalar(select(func.count()).select_from(CustomerBinding)) == 1
    assert db.session.scalar(select(func.count()).select_from(PostbackLog)) == 7


def test_a_click_id_or_coupon_wins_over_the_binding_and_never_rebinds(app, client, shop):
    adv, camp, first, second = shop
    # A rejected first conversion binds nothing.
    st, body = _post(client, key=adv.postback_key, coupon="FIRST10", txn_id="S-0", customer_id="cus_1",
                     status="rejected")
    assert body["reason"] == "client_rejected" and _binding(camp) is None
    assert _post(client, key=adv.postback_key, coupon="FIRST10", txn_id="S-1", customer_id="cus_1")[0] == 201
    cid = app.extensions["partnernet_click_signer"].make(second.id, int(utcnow().timestamp()) - 60)
    st, body = _post(client, key=adv.postback_key, click_id=cid, customer_id="cus_1", txn_id="R-1",
                     event="renewal", amount="10.00")
    assert st == 201 and _conv(body).link_id == second.id
    st, body = _post(client, key=adv.postback_key, coupon="second10", customer_id="cus_1", txn_id="R-2",
                     event="renewal", amount="10.00")
    assert st == 201 and _conv(body).link_id == second.id
    assert _binding(camp).link_id == first.id
    st, body = _post(client, key=adv.postback_key, customer_id="cus_1", txn_id="R-3", event="renewal",
                     amount="10.00")
    assert st == 201 and _conv(body).link_id == first.id


def test_suspended_partners_customer_is_rejected(client, shop):
    adv, camp, first, _ = shop
    assert _post(client, key=adv.postback_key, coupon="FIRST10", txn_id="S-1", customer_id="cus_1")[0] == 201
    partner = db.session.get(Partner, first.partner_id)
    partner.status = "suspended"
    db.session.commit()
    st, body = _post(client, key=adv.postback_key, customer_id="cus_1", txn_id="R-1", event="renewal",
                     amount="10.00")
    assert (st, body["status"], body["reason"]) == (200, "rejected", "partner_suspended")


def test_recurring_months_on_campaign_events_through_the_api(client, app):
    from tests.web.test_api_support import staff_api

    api = staff_api(client)
    adv = make_client(currency="USD")
    payload = {"client_id": str(adv.id), "name": "Subs", "destination_url": "https://acme.example/",
               "default_event": "sale", "events": [
                   {"key": "sale", "client_fee": "5.00", "payout": "3.00"},
                   {"key": "renewal", "client_fee": "5.00", "payout": "3.00", "recurring_months": None},
                   {"key": "yearly", "client_fee": "5.00", "payout": "3.00", "recurring_months": 12}]}
    resp = api.post("/campaigns", json=payload)
    assert resp.status_code == 201, resp.get_json()
    got = {e["key"]: e["recurring_months"] for e in resp.get_json()["events"]}
    assert got == {"sale": 0, "renewal": None, "yearly": 12}
    bad = dict(payload, events=[{"key": "sale", "client_fee": "5.00", "payout": "3.00", "recurring_months": 1201}])
    assert api.post("/campaigns", json=bad).status_code == 400
    bad["events"][0]["recurring_months"] = "12"
    assert api.post("/campaigns", json=bad).status_code == 400


def test_concurrent_first_postbacks_bind_once(pg_app):
    adv = make_client(currency="USD")
    camp = make_campaign(adv, events=EVENTS)
    link_ids = {make_link(make_partner(), camp, coupon_code=f"RACE{i}").id for i in range(4)}
    key = adv.postback_key
    answers = fire_postbacks(pg_app, lambda i: {"key": key, "coupon": f"RACE{i % 4}",
                                                "txn_id": f"S-{i}", "customer_id": "cus_race"}, 8)
    assert {st for st, _ in answers} == {201}
    db.session.expire_all()
    (b,) = db.session.scalars(select(CustomerBinding)).all()
    assert b.link_id in link_ids
    assert db.session.get(Conversion, b.conversion_id).link_id == b.link_id


def test_a_customer_bound_on_two_campaigns_needs_an_event_only_one_of_them_recurs(client, shop):
    adv, camp, first, _ = shop
    other = make_campaign(adv, default_event="signup", events=[
        {"key": "signup", "client_fee_minor": 500, "payout_minor": 300},
        {"key": "renewal", "client_fee_minor": 200, "payout_minor": 100, "recurring_months": 6},
        {"key": "monthly", "client_fee_minor": 200, "payout_minor": 100, "recurring_months": 6}])
    other_link = make_link(make_partner(), other, coupon_code="OTHER10")
    assert _post(client, key=adv.postback_key, coupon="FIRST10", txn_id="S-1", customer_id="cus_1")[0] == 201
    assert _post(client, key=adv.postback_key, coupon="OTHER10", txn_id="S-2", customer_id="cus_1")[0] == 201
    st, body = _post(client, key=adv.postback_key, customer_id="cus_1", txn_id="R-1", event="renewal",
                     amount="10.00")
    assert (st, body["error"]) == (400, "ambiguous_customer")
    st, body = _post(client, key=adv.postback_key, customer_id="cus_1", txn_id="R-2", event="monthly")
    assert st == 201 and _conv(body).link_id == other_link.id
