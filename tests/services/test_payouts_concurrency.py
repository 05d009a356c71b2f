"""Payout batches under concurrency, on PostgreSQL: approvals, payments and creations that
race each other move the money once. Each thread has its own app context (own session)."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from partnernet.conversions.review import approve_conversion
from partnernet.errors import InvalidState
from partnernet.extensions import db
from partnernet.ledger.services import verify_ledger
from partnernet.models import LedgerTransaction, PayoutBatch, PayoutItem
from partnernet.payouts.services import approve_batch, create_batch, mark_batch_paid
from tests.factories import make_campaign, make_client, make_link, make_partner, make_user
from tests.services.test_ledger_helpers import earnings, record


def run_threads(app, n, fn):
    """Run ``fn(i)`` in ``n`` threads released together; returns [("ok", value) | ("err", exc)]."""
    barrier = threading.Barrier(n)
    results = [None] * n

    def target(i):
        with app.app_context():
            try:
                barrier.wait()
                results[i] = ("ok", fn(i))
            except Exception as exc:  # noqa: BLE001 - collected for the assertions
                db.session.rollback()
                results[i] = ("err", exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def setup_earnings(n_partners=3):
    maker = make_user("maker@example.com")
    checker = make_user("checker@example.com")
    camp = make_campaign(make_client(),
                         events=[{"key": "sale", "client_fee_minor": 1000, "payout_minor": 400}])
    partners = [make_partner() for _ in range(n_partners)]
    for p in partners:
        approve_conversion(record(camp, make_link(p, camp)), user_id=maker.id)
    return maker, checker, partners


def test_ten_simultaneous_approvals_approve_once(pg_app):
    maker, checker, _ = setup_earnings()
    batch_id = create_batch("USD", 0, maker.id).id
    checker_id = checker.id
    results = run_threads(pg_app, 10, lambda i: approve_batch(batch_id, checker_id).status)
    oks = [r for r in results if r[0] == "ok"]
    errs = [r[1] for r in results if r[0] == "err"]
    assert len(oks) == 1 and oks[0][1] == "approved"
    assert len(errs) == 9 and all(isinstance(e, InvalidState) for e in errs)
    db.session.expire_all()
    assert db.session.get(PayoutBatch, batch_id).status == "approved"


def test_simultaneous_mark_paid_pays_once(pg_app):
    maker, checker, partners = setup_earnings()
    batch_id = create_batch("USD", 0, maker.id).id
    approve_batch(batch_id, checker.id)
    maker_id = maker.id
    results = run_threads(pg_app, 5, lambda i: mark_batch_paid(batch_id, maker_id).status)
    assert sorted(r[0] for r in results) == ["err", "err", "err", "err", "ok"]
    assert all(isinstance(r[1], InvalidState) for r in results if r[0] == "err")
    assert db.session.scalar(select(func.count()).select_from(LedgerTransaction)
                             .where(LedgerTransaction.kind == "paid")) == 1
    for p in partners:
        assert earnings(p.id) == {"pending": 0, "approved": 400, "paid": 400, "balance": 0}
    assert verify_ledger() == []


def test_simultaneous_batches_never_include_the_same_money(pg_app):
    maker, _, partners = setup_earnings(4)
    maker_id = maker.id
    results = run_threads(pg_app, 6, lambda i: create_batch("USD", 0, maker_id).id)
    assert all(r[0] == "ok" for r in results)
    rows = db.session.execute(
        select(PayoutItem.partner_id, func.sum(PayoutItem.amount_minor), func.count())
        .group_by(PayoutItem.partner_id)
    ).all()
    assert sorted(rows) == sorted((p.id, 400, 1) for p in partners)


def test_two_simultaneous_approvals_then_ten_payments_pay_once(pg_app):
    """Two checkers approve at once (one wins, one 409), then ten mark-paid race: one payment."""
    maker, checker, partners = setup_earnings(2)
    second = make_user("second.checker@example.com")
    batch_id = create_batch("USD", 0, maker.id).id
    ids = [checker.id, second.id]
    results = run_threads(pg_app, 2, lambda i: approve_batch(batch_id, ids[i]).status)
    assert sorted(r[0] for r in results) == ["err", "ok"]
    assert isinstance([r[1] for r in results if r[0] == "err"][0], InvalidState)
    results = run_threads(pg_app, 10, lambda i: mark_batch_paid(batch_id, ids[i % 2]).status)
    assert [r[0] for r in results].count("ok") == 1
    assert db.session.scalar(select(func.count()).select_from(LedgerTransaction)
                             .where(LedgerTransaction.kind == "paid")) == 1
    for p in partners:
        assert earnings(p.id) == {"pending": 0, "approved": 400, "paid": 400, "balance": 0}
    from partnernet.models import AuditLog

    assert db.session.scalar(select(func.count()).select_from(AuditLog).where(
        AuditLog.action.in_(("payout_batch.approve", "payout_batch.mark_paid")))) == 2
    assert verify_ledger() == []
