"""The ledger: splits posted once, approvals, rejections, reversals, earnings, verify, the
sweeper and matured approvals (CONTRACT §3/§4/§5). Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask import current_app
from sqlalchemy import select, update

from partnernet import clock, queue
from partnernet.conversions.review import approve_conversion, approve_matured, reject_conversion
from partnernet.errors import InvalidState, NotFound, ValidationError
from partnernet.extensions import db
from partnernet.ledger import tasks
from partnernet.ledger.services import (
    account_balance,
    agency_account,
    client_account,
    partner_account,
    partner_earnings,
    post_transaction,
    requeue_stuck,
    sync_conversion,
    verify_ledger,
)
from partnernet.models import ConversionSplit, LedgerAccount, LedgerPosting, LedgerTransaction
from partnernet.payouts.services import approve_batch, create_batch, mark_batch_paid
from tests.factories import make_campaign, make_client, make_link, make_partner, make_user
from tests.services.test_ledger_helpers import (
    earnings,
    fresh,
    kinds,
    postback_status,
    record,
    transaction_count,
)


@pytest.fixture
def shop(app):
    """A USD client with a campaign: sale fee 10.00, payout 50%; one approved partner and link."""
    client = make_client(currency="USD")
    camp = make_campaign(client, events=[{"key": "sale", "client_fee_minor": 1000, "payout_percent": "50"}])
    partner = make_partner()
    link = make_link(partner, camp)
    return {"client": client, "campaign": camp, "partner": partner, "link": link}


def splits_of(conversion_id):
    rows = db.session.scalars(select(ConversionSplit).where(ConversionSplit.conversion_id == conversion_id)
                              .order_by(ConversionSplit.id))
    return [(s.party, s.role, s.amount_minor) for s in rows]


def test_split_posted_once_when_the_job_runs_twice(shop):
    cid = record(shop["campaign"], shop["link"])  # the queued job ran once already
    p = shop["partner"].id
    assert kinds(cid) == ["split"]
    assert tasks.sync_conversion_job(cid) == "pending"
    assert tasks.sync_conversion_job(cid) == "pending"
    assert kinds(cid) == ["split"]
    assert splits_of(cid) == [(f"partner:{p}", "converter", 500), ("agency", "margin", 500)]
    assert fresh(cid).ledger_status == "pending"
    assert earnings(p) == {"pending": 500, "approved": 0, "paid": 0, "balance": 0}
    assert account_balance(client_account(shop["client"].id, "receivable", "USD")) == 1000
    assert account_balance(partner_account(p, "pending", "USD")) == -500
    assert account_balance(agency_account("margin_pending", "USD")) == -500
    assert verify_ledger() == []


def test_every_transaction_balances_and_balances_match(shop):
    cid = record(shop["campaign"], shop["link"])
    approve_conversion(cid, user_id=1)
    for txn in db.session.scalars(select(LedgerTransaction)):
        assert sum(p.amount_minor for p in txn.postings) == 0
    for acct in db.session.scalars(select(LedgerAccount)):
        total = sum(p.amount_minor for p in db.session.scalars(
            select(LedgerPosting).where(LedgerPosting.account_id == acct.id)))
        assert acct.balance_minor == total


def test_approved_then_reversed_after_payout_leaves_a_negative_balance(shop):
    maker = make_user("maker@example.com")
    checker = make_user("checker@example.com")
    p = shop["partner"].id
    cid = record(shop["campaign"], shop["link"])
    assert earnings(p) == {"pending": 500, "approved": 0, "paid": 0, "balance": 0}

    conv = approve_conversion(cid, user_id=maker.id)
    assert conv.status == "approved" and conv.approved_by == f"user:{maker.id}"
    assert conv.ledger_status == "approved"
    assert kinds(cid) == ["split", "approve"]
    assert earnings(p) == {"pending": 0, "approved": 500, "paid": 0, "balance": 500}
    assert account_balance(agency_account("margin", "USD")) == -500
    assert account_balance(agency_account("margin_pending", "USD")) == 0
    queue.run_pending()  # the sync job queued by the approval finds nothing to do
    assert kinds(cid) == ["split", "approve"]

    batch = create_batch("USD", 0, maker.id)
    assert [(i.partner_id, i.amount_minor) for i in batch.items] == [(p, 500)]
    approve_batch(batch.id, checker.id)
    mark_batch_paid(batch.id, maker.id)
    assert earnings(p) == {"pending": 0, "approved": 500, "paid": 500, "balance": 0}

    assert postback_status(cid, "reversed")
    assert kinds(cid) == ["split", "approve", "reverse"]
    assert fresh(cid).ledger_status == "reversed"
    assert earnings(p) == {"pending": 0, "approved": 0, "paid": 500, "balance": -500}
    assert account_balance(partner_account(p, "payable", "USD")) == 500  # a debit: the partner owes us
    assert account_balance(client_account(shop["client"].id, "receivable", "USD")) == 0
    assert account_balance(agency_account("margin", "USD")) == 0
    assert verify_ledger() == []

    # later earnings net against the debt: 500 approved more brings the balance to 0, no payout
    cid2 = record(shop["campaign"], shop["link"])
    approve_conversion(cid2, user_id=maker.id)
    assert earnings(p) == {"pending": 0, "approved": 500, "paid": 500, "balance": 0}
    assert create_batch("USD", 0, maker.id).items == []
    cid3 = record(shop["campaign"], shop["link"], status="approved")
    assert kinds(cid3) == ["split", "approve"]
    assert earnings(p) == {"pending": 0, "approved": 1000, "paid": 500, "balance": 500}
    assert verify_ledger() == []


def test_staff_rejection_reverses_the_split(shop):
    p = shop["partner"].id
    cid = record(shop["campaign"], shop["link"])
    conv = reject_conversion(cid, user_id=7, reason="fraud")
    assert conv.status == "rejected" and conv.reason == "fraud" and conv.ledger_status == "rejected"
    assert kinds(cid) == ["split", "reject"]
    assert earnings(p) == {"pending": 0, "approved": 0, "paid": 0, "balance": 0}
    assert account_balance(client_account(shop["client"].id, "receivable", "USD")) == 0
    assert account_balance(agency_account("margin_pending", "USD")) == 0
    # the split lines stay as a record of what the split was
    assert sum(a for _, _, a in splits_of(cid)) == 1000
    queue.run_pending()
    assert kinds(cid) == ["split", "reject"]
    assert verify_ledger() == []


def test_postback_rejection_of_a_pending_conversion_reverses(shop):
    cid = record(shop["campaign"], shop["link"])
    assert postback_status(cid, "rejected")
    assert kinds(cid) == ["split", "reject"]
    assert earnings(shop["partner"].id)["pending"] == 0
    assert verify_ledger() == []


def test_pending_reversed_by_postback(shop):
    cid = record(shop["campaign"], shop["link"])
    assert postback_status(cid, "reversed")
    assert kinds(cid) == ["split", "reverse"]
    assert earnings(shop["partner"].id) == {"pending": 0, "approved": 0, "paid": 0, "balance": 0}
    assert verify_ledger() == []


def test_rejected_at_creation_gets_no_postings_and_no_split_lines(shop):
    cid = record(shop["campaign"], shop["link"], status="rejected")
    conv = fresh(cid)
    assert conv.status == "rejected" and conv.reason == "client_rejected"
    assert conv.splits == []
    assert kinds(cid) == []
    assert transaction_count() == 0
    assert partner_earnings(shop["partner"].id) == []
    assert verify_ledger() == []
    assert requeue_stuck() == 0
    # even a stray sync posts nothing for it
    sync_conversion(cid)
    assert kinds(cid) == [] and fresh(cid).splits == []


def test_rejected_before_the_split_job_ran_posts_nothing(shop):
    cid = record(shop["campaign"], shop["link"], run_jobs=False)
    postback_status(cid, "rejected", run_jobs=False)
    queue.run_pending()  # the split job runs now and finds a rejected conversion: nothing to post
    assert kinds(cid) == []
    assert fresh(cid).ledger_status is None  # nothing posted, and nothing lags
    assert requeue_stuck() == 0
    assert verify_ledger() == []


def test_approved_at_creation_posts_split_and_approve(shop):
    cid = record(shop["campaign"], shop["link"], status="approved")
    assert kinds(cid) == ["split", "approve"]
    assert earnings(shop["partner"].id) == {"pending": 0, "approved": 500, "paid": 0, "balance": 500}


def test_a_late_split_job_catches_up_with_an_approval(shop):
    cid = record(shop["campaign"], shop["link"], run_jobs=False)
    postback_status(cid, "approved", run_jobs=False)
    assert kinds(cid) == []
    assert sync_conversion(cid) == "approved"
    assert kinds(cid) == ["split", "approve"]
    queue.run_pending()
    assert kinds(cid) == ["split", "approve"]


def test_recruiter_override_is_earned_by_the_recruiter(app):
    client = make_client(currency="EUR")
    camp = make_campaign(client, events=[{"key": "sale", "client_fee_minor": 2000, "payout_minor": 1200}])
    recruiter = make_partner()
    partner = make_partner(recruiter=recruiter, recruiter_percent="10")
    link = make_link(partner, camp)
    cid = record(camp, link)
    assert splits_of(cid) == [(f"partner:{partner.id}", "converter", 1200),
                              (f"partner:{recruiter.id}", "recruiter", 120), ("agency", "margin", 680)]
    assert earnings(recruiter.id, "EUR") == {"pending": 120, "approved": 0, "paid": 0, "balance": 0}
    approve_conversion(cid, user_id=1)
    assert earnings(recruiter.id, "EUR") == {"pending": 0, "approved": 120, "paid": 0, "balance": 120}
    assert earnings(partner.id, "EUR") == {"pending": 0, "approved": 1200, "paid": 0, "balance": 1200}
    assert verify_ledger() == []


def test_percent_of_sale_fee_in_jpy(app):
    client = make_client(currency="JPY")
    camp = make_campaign(client, events=[{"key": "sale", "client_fee_percent": "8", "payout_percent": "75"}])
    partner = make_partner()
    link = make_link(partner, camp)
    cid = record(camp, link, amount_minor=12345)  # fee 987.6 -> 988 yen, payout 741 yen
    assert [a for _, _, a in splits_of(cid)] == [741, 247]
    assert partner_earnings(partner.id) == [
        {"currency": "JPY", "pending": 741, "approved": 0, "paid": 0, "balance": 0}]


def test_earnings_per_currency(app):
    partner = make_partner()
    for cur in ("USD", "EUR"):
        camp = make_campaign(make_client(currency=cur),
                             events=[{"key": "sale", "client_fee_minor": 1000, "payout_minor": 300}])
        record(camp, make_link(partner, camp), status="approved")
    assert [e["currency"] for e in partner_earnings(partner.id)] == ["EUR", "USD"]
    assert all(e["approved"] == 300 for e in partner_earnings(partner.id))


def test_earnings_of_unknown_partner(app):
    with pytest.raises(NotFound):
        partner_earnings(9999)


def test_review_refuses_conversions_that_are_not_pending(shop):
    cid = record(shop["campaign"], shop["link"], status="approved")
    with pytest.raises(InvalidState) as err:
        approve_conversion(cid, user_id=1)
    assert err.value.status == 409
    with pytest.raises(InvalidState):
        reject_conversion(cid, user_id=1, reason="late")
    with pytest.raises(NotFound):
        approve_conversion(123456, user_id=1)
    with pytest.raises(NotFound):
        reject_conversion(123456, user_id=1, reason=None)
    assert kinds(cid) == ["split", "approve"]


def test_reject_reason_rules(shop):
    cid = record(shop["campaign"], shop["link"])
    with pytest.raises(ValidationError) as err:
        reject_conversion(cid, user_id=1, reason="x" * 33)
    assert err.value.field == "reason"
    conv = reject_conversion(cid, user_id=1, reason="   ")
    assert conv.reason == "rejected_by_staff"


def test_requeue_stuck_brings_lost_jobs_level(shop):
    b = record(shop["campaign"], shop["link"])
    a = record(shop["campaign"], shop["link"], run_jobs=False)
    postback_status(b, "approved", run_jobs=False)
    queue.discard_pending()  # the jobs were lost
    problems = verify_ledger()
    assert any(f"conversion {a} is pending" in p for p in problems)
    assert any(f"conversion {b} is approved" in p for p in problems)
    assert requeue_stuck() == 2  # in-process mode: they ran already
    assert kinds(a) == ["split"] and kinds(b) == ["split", "approve"]
    assert requeue_stuck() == 0
    assert verify_ledger() == []


def test_verify_finds_tampering(shop):
    cid = record(shop["campaign"], shop["link"])
    assert verify_ledger() == []
    acct = partner_account(shop["partner"].id, "pending", "USD").code
    db.session.execute(update(LedgerAccount).where(LedgerAccount.code == acct).values(balance_minor=-499))
    posting = db.session.scalars(select(LedgerPosting).order_by(LedgerPosting.id)).first()
    posting.amount_minor += 1
    split_line = db.session.scalars(
        select(ConversionSplit).where(ConversionSplit.conversion_id == cid)).first()
    split_line.amount_minor -= 7
    db.session.commit()
    problems = verify_ledger()
    assert any("does not balance" in p for p in problems)
    assert any(f"({acct}) has balance -499" in p for p in problems)
    assert any(f"conversion {cid}: split lines sum to 993" in p for p in problems)


def test_verify_finds_split_lines_without_a_split_transaction(shop):
    cid = record(shop["campaign"], shop["link"])
    db.session.add(ConversionSplit(conversion_id=cid, party="agency", role="touch", amount_minor=0))
    db.session.execute(update(LedgerTransaction).values(kind="other"))
    db.session.commit()
    assert any(f"conversion {cid}: split lines and split transaction" in p for p in verify_ledger())


def test_zero_fee_conversion_posts_empty_transactions(app):
    camp = make_campaign(make_client(), events=[{"key": "sale", "client_fee_minor": 0, "payout_minor": 0}])
    partner = make_partner()
    cid = record(camp, make_link(partner, camp), status="approved")
    assert kinds(cid) == ["split", "approve"]
    assert splits_of(cid) == [(f"partner:{partner.id}", "converter", 0), ("agency", "margin", 0)]
    assert verify_ledger() == []


def test_approve_matured(app):
    start = datetime(2030, 1, 1, tzinfo=UTC)
    clock.set_now(start)
    camp = make_campaign(make_client(), hold_days=30)
    link = make_link(make_partner(), camp)
    a = record(camp, link)
    clock.set_now(start + timedelta(days=10))
    b = record(camp, link)
    c = record(camp, link)
    reject_conversion(c, user_id=1, reason="nope")

    assert approve_matured(now=start + timedelta(days=29)) == 0
    assert approve_matured(now=start + timedelta(days=30)) == 1
    conv = fresh(a)
    assert conv.status == "approved" and conv.approved_by == "auto" and conv.ledger_status == "approved"
    assert kinds(a) == ["split", "approve"]
    assert approve_matured(now=start + timedelta(days=30)) == 0  # idempotent
    clock.set_now(start + timedelta(days=41))
    assert approve_matured() == 1
    assert fresh(b).status == "approved" and fresh(c).status == "rejected"
    queue.run_pending()
    assert kinds(b) == ["split", "approve"]
    assert verify_ledger() == []


def test_post_transaction_is_unique_on_source_and_kind(app):
    cash, margin = agency_account("cash", "USD"), agency_account("margin", "USD")
    first = post_transaction("test:1", "move", "USD", [(cash, 100), (margin, -60), (margin, -40)])
    assert first is not None
    assert sorted(p.amount_minor for p in first.postings) == [-100, 100]  # merged per account
    assert post_transaction("test:1", "move", "USD", [(cash, 5), (margin, -5)]) is None
    db.session.commit()  # the session is still usable after the refused duplicate
    assert account_balance(cash) == 100 and account_balance(margin) == -100
    with pytest.raises(ValueError):
        post_transaction("test:2", "move", "USD", [(cash, 100), (margin, -99)])
    with pytest.raises(ValueError):
        post_transaction("test:3", "move", "USD", [(agency_account("cash", "EUR"), 1), (margin, -1)])
    assert verify_ledger() == []


def test_flask_ledger_verify_command(shop):
    record(shop["campaign"], shop["link"], status="approved")
    runner = current_app.test_cli_runner()
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 0, result.output
    db.session.execute(update(LedgerAccount).values(balance_minor=LedgerAccount.balance_minor + 1))
    db.session.commit()
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 1
