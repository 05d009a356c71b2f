"""Payout batches (CONTRACT §5): amounts from the ledger, maker-checker, 409s, minimum,
cancel, mark-paid postings and the CSV export (of an approved batch). Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import select

from partnernet.conversions.review import approve_conversion, reject_conversion
from partnernet.errors import Forbidden, InvalidState, NotFound, ValidationError
from partnernet.extensions import db
from partnernet.ledger.services import account_balance, agency_account, verify_ledger
from partnernet.models import LedgerTransaction
from partnernet.payouts.exports import export_csv
from partnernet.payouts.services import (
    approve_batch,
    cancel_batch,
    create_batch,
    get_batch,
    mark_batch_paid,
)
from tests.factories import make_campaign, make_client, make_link, make_partner, make_user
from tests.services.test_ledger_helpers import earnings, postback_status, record


@pytest.fixture
def world(app):
    """Staff users maker and checker, a partner user, and three partners on a USD campaign
    (fee 10.00, payout fixed) with approved earnings of 6.00, 3.00 and 0.50."""
    maker = make_user("maker@example.com")
    checker = make_user("checker@example.com")
    camp = make_campaign(make_client(), events=[
        {"key": "big", "client_fee_minor": 1000, "payout_minor": 600},
        {"key": "mid", "client_fee_minor": 1000, "payout_minor": 300},
        {"key": "small", "client_fee_minor": 1000, "payout_minor": 50},
    ])
    a = make_partner(name="Ava")
    b = make_partner(name="=HYPERLINK(\"http://evil\")")
    b.payout_email = "pay-b@example.com"
    db.session.commit()
    c = make_partner(name="Cy")
    partner_user = make_user("p@example.com", role="partner", partner_id=a.id)
    links = {p.id: make_link(p, camp) for p in (a, b, c)}
    for p, ev in ((a, "big"), (b, "mid"), (c, "small")):
        cid = record(camp, links[p.id], event=ev)
        approve_conversion(cid, user_id=maker.id)
    return {"maker": maker, "checker": checker, "partner_user": partner_user, "camp": camp, "links": links,
            "a": a, "b": b, "c": c}


def items(batch):
    return [(i.partner_id, i.amount_minor) for i in get_batch(batch.id).items]


def test_create_batch_takes_every_positive_balance(world):
    w = world
    batch = create_batch("USD", 0, w["maker"].id)
    assert batch.status == "draft" and batch.created_by == w["maker"].id
    assert items(batch) == [(w["a"].id, 600), (w["b"].id, 300), (w["c"].id, 50)]
    assert batch.total_minor == 950


def test_min_amount_leaves_small_balances_out(world):
    w = world
    batch = create_batch("USD", 300, w["maker"].id)  # equal qualifies
    assert items(batch) == [(w["a"].id, 600), (w["b"].id, 300)]
    assert batch.total_minor == 900
    assert batch.min_amount_minor == 300


def test_open_batches_hold_money_back_and_cancel_releases_it(world):
    w = world
    first = create_batch("USD", 100, w["maker"].id)
    second = create_batch("USD", 0, w["maker"].id)
    assert items(second) == [(w["c"].id, 50)]
    empty = create_batch("USD", 0, w["maker"].id)
    assert items(empty) == [] and empty.total_minor == 0 and empty.status == "draft"
    # a new approval is picked up by the next batch
    cid = record(w["camp"], w["links"][w["a"].id], event="small")
    approve_conversion(cid, user_id=w["maker"].id)
    assert items(create_batch("USD", 0, w["maker"].id)) == [(w["a"].id, 50)]
    # pending money is not payable
    record(w["camp"], w["links"][w["b"].id], event="big")
    assert items(create_batch("USD", 0, w["maker"].id)) == []
    # approved batches still hold money back; cancelled ones release it
    approve_batch(first.id, w["checker"].id)
    assert items(create_batch("USD", 0, w["maker"].id)) == []
    cancel_batch(second.id, w["checker"].id)
    assert get_batch(second.id).status == "cancelled"
    assert items(create_batch("USD", 0, w["maker"].id)) == [(w["c"].id, 50)]


def test_other_currencies_are_separate(world):
    w = world
    camp = make_campaign(make_client(currency="JPY"), events=[{"key": "sale", "client_fee_minor": 1000,
                                                                "payout_minor": 700}])
    cid = record(camp, make_link(w["a"], camp))
    approve_conversion(cid, user_id=w["maker"].id)
    assert items(create_batch("JPY", 0, w["maker"].id)) == [(w["a"].id, 700)]
    assert items(create_batch("EUR", 0, w["maker"].id)) == []


def test_a_rejection_answered_before_is_seen(world):
    w = world
    cid = record(w["camp"], w["links"][w["c"].id], event="big")
    reject_conversion(cid, user_id=w["maker"].id, reason="fraud")
    batch = create_batch("USD", 0, w["maker"].id)
    assert dict(items(batch))[w["c"].id] == 50


def test_maker_checker(world):
    w = world
    batch = create_batch("USD", 0, w["maker"].id)
    with pytest.raises(Forbidden) as err:
        approve_batch(batch.id, w["maker"].id)
    assert err.value.status == 403
    with pytest.raises(Forbidden):
        approve_batch(batch.id, w["partner_user"].id)
    approved = approve_batch(batch.id, w["checker"].id)
    assert approved.status == "approved" and approved.approved_by == w["checker"].id
    assert approved.approved_at is not None
    # the maker-checker rule is checked before the state
    with pytest.raises(Forbidden):
        approve_batch(batch.id, w["maker"].id)
    with pytest.raises(InvalidState) as err:
        approve_batch(batch.id, w["checker"].id)
    assert err.value.status == 409


def test_state_rules_answer_409(world):
    w = world
    batch = create_batch("USD", 0, w["maker"].id)
    with pytest.raises(InvalidState):
        mark_batch_paid(batch.id, w["maker"].id)
    approve_batch(batch.id, w["checker"].id)
    with pytest.raises(InvalidState):
        cancel_batch(batch.id, w["maker"].id)
    mark_batch_paid(batch.id, w["maker"].id)
    assert get_batch(batch.id).status == "paid"
    for action in (mark_batch_paid, cancel_batch):
        with pytest.raises(InvalidState):
            action(batch.id, w["maker"].id)
    with pytest.raises(InvalidState):
        approve_batch(batch.id, w["checker"].id)
    other = create_batch("USD", 0, w["maker"].id)
    cancel_batch(other.id, w["maker"].id)
    with pytest.raises(InvalidState):
        approve_batch(other.id, w["checker"].id)
    with pytest.raises(InvalidState):
        cancel_batch(other.id, w["maker"].id)


def test_unknown_batch_and_bad_input(world):
    w = world
    for action in (approve_batch, cancel_batch, mark_batch_paid):
        with pytest.raises(NotFound):
            action(4242, w["checker"].id)
    with pytest.raises(NotFound):
        export_csv(4242)
    with pytest.raises(ValidationError) as err:
        create_batch("XXX", 0, w["maker"].id)
    assert err.value.code == "unknown_currency"
    with pytest.raises(ValidationError) as err:
        create_batch("USD", -1, w["maker"].id)
    assert err.value.code == "bad_amount"
    with pytest.raises(Forbidden):
        create_batch("USD", 0, w["partner_user"].id)


def test_mark_paid_posts_one_balanced_transaction(world):
    w = world
    batch = create_batch("USD", 100, w["maker"].id)
    approve_batch(batch.id, w["checker"].id)
    before_c = earnings(w["c"].id)
    paid = mark_batch_paid(batch.id, w["maker"].id)
    assert paid.status == "paid" and paid.paid_at is not None
    txn = db.session.scalars(
        select(LedgerTransaction).where(LedgerTransaction.source == f"payout_batch:{batch.id}")).one()
    assert txn.kind == "paid"
    assert sum(p.amount_minor for p in txn.postings) == 0
    assert account_balance(agency_account("cash", "USD")) == -900
    assert earnings(w["a"].id) == {"pending": 0, "approved": 600, "paid": 600, "balance": 0}
    assert earnings(w["b"].id) == {"pending": 0, "approved": 300, "paid": 300, "balance": 0}
    assert earnings(w["c"].id) == before_c == {"pending": 0, "approved": 50, "paid": 0, "balance": 50}
    # nothing left to pay but c's 0.50
    assert items(create_batch("USD", 0, w["maker"].id)) == [(w["c"].id, 50)]
    assert verify_ledger() == []


def test_reversal_of_paid_money_is_recovered_from_later_earnings(world):
    w = world
    a = w["a"].id
    batch = create_batch("USD", 0, w["maker"].id)
    approve_batch(batch.id, w["checker"].id)
    mark_batch_paid(batch.id, w["maker"].id)
    # a's conversion was the only one of event "big": reverse it
    conv_id = db.session.scalar(select(LedgerTransaction.source).where(LedgerTransaction.kind == "approve")
                                .order_by(LedgerTransaction.id).limit(1)).split(":")[1]
    postback_status(int(conv_id), "reversed")
    assert earnings(a) == {"pending": 0, "approved": 0, "paid": 600, "balance": -600}
    for _ in range(2):  # 2 × 6.00 approved
        cid = record(w["camp"], w["links"][a], event="big")
        approve_conversion(cid, user_id=w["maker"].id)
    assert earnings(a)["balance"] == 600
    assert items(create_batch("USD", 0, w["maker"].id)) == [(a, 600)]
    assert verify_ledger() == []


def test_export_csv(world):
    w = world
    batch = approve_batch(create_batch("USD", 0, w["maker"].id).id, w["checker"].id)
    text = export_csv(batch.id)
    assert text.splitlines()[0] == "partner_id,name,payout_email,amount,currency,payout_method,iban,bic,account_holder"
    rows = list(csv.reader(io.StringIO(text)))
    assert [r[:5] for r in rows[1:]] == [
        [str(w["a"].id), "Ava", w["a"].email, "6.00", "USD"],
        [str(w["b"].id), "'=HYPERLINK(\"http://evil\")", "pay-b@example.com", "3.00", "USD"],
        [str(w["c"].id), "Cy", w["c"].email, "0.50", "USD"],
    ]
    empty = approve_batch(create_batch("USD", 0, w["maker"].id).id, w["checker"].id)
    assert export_csv(empty.id) == "partner_id,name,payout_email,amount,currency,payout_method,iban,bic,account_holder\r\n"


def test_export_csv_jpy_amounts(app):
    maker, checker = make_user("maker@example.com"), make_user("checker@example.com")
    camp = make_campaign(make_client(currency="JPY"), events=[{"key": "sale", "client_fee_minor": 5000,
                                                                "payout_percent": "50"}])
    p = make_partner(name="Kai")
    cid = record(camp, make_link(p, camp), status="approved")
    assert cid
    batch = approve_batch(create_batch("JPY", 0, maker.id).id, checker.id)
    assert export_csv(batch.id).splitlines()[1] == f"{p.id},Kai,{p.email},2500,JPY,paypal,,,"
