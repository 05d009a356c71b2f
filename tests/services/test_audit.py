"""The audit trail: staff use cases write one append-only row each, in their own transaction."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select

from partnernet import audit, clock
from partnernet.catalog.services import set_partner_status
from partnernet.conversions.review import approve_conversion, reject_conversion
from partnernet.errors import Forbidden, InvalidState
from partnernet.extensions import db
from partnernet.models import AuditLog
from partnernet.payouts.services import approve_batch, cancel_batch, create_batch, mark_batch_paid
from tests.factories import make_campaign, make_client, make_link, make_partner, make_user
from tests.services.test_ledger_helpers import record


def rows(**filters):
    return db.session.scalars(audit.audit_query(**filters)).all()


def test_record_adds_a_row_without_committing(app):
    staff = make_user("a@example.com")
    audit.record(staff.id, "thing.do", "thing", 7, {"at": datetime(2024, 1, 2, tzinfo=UTC)}, {"n": 1})
    db.session.rollback()
    assert rows() == []
    audit.record(staff.id, "thing.do", "thing", 7, {"at": datetime(2024, 1, 2, tzinfo=UTC)}, {"n": 1})
    db.session.commit()
    (row,) = rows()
    assert (row.actor_user_id, row.action, row.target_type, row.target_id) == (staff.id, "thing.do", "thing", "7")
    assert row.before == {"at": "2024-01-02T00:00:00+00:00"} and row.after == {"n": 1}


def test_rows_are_append_only(app):
    row = audit.record(None, "x.y", "x", 1, None, None)
    db.session.commit()
    row.action = "changed"
    with pytest.raises(RuntimeError, match="append-only"):
        db.session.commit()
    db.session.rollback()
    db.session.delete(db.session.get(AuditLog, row.id))
    with pytest.raises(RuntimeError, match="append-only"):
        db.session.commit()
    db.session.rollback()
    assert [r.action for r in rows()] == ["x.y"]


def test_partner_status_changes_are_audited_and_a_refused_one_is_not(app):
    staff = make_user("s@example.com")
    p = make_partner(status="pending")
    set_partner_status(p.id, "approve", staff.id)
    set_partner_status(p.id, "suspend", staff.id)
    with pytest.raises(InvalidState):
        set_partner_status(p.id, "reject", staff.id)
    got = [(r.action, r.before, r.after) for r in reversed(rows(target_type="partner"))]
    assert got == [("partner.approve", {"status": "pending"}, {"status": "approved"}),
                   ("partner.suspend", {"status": "approved"}, {"status": "suspended"})]


def test_conversion_review_and_payout_cycle_are_audited(app):
    maker, checker = make_user("maker@example.com"), make_user("checker@example.com")
    camp = make_campaign(make_client(), events=[{"key": "sale", "client_fee_minor": 1000, "payout_minor": 400}])
    p = make_partner()
    c1 = record(camp, make_link(p, camp))
    c2 = record(camp, make_link(p, camp), event="sale")
    approve_conversion(c1, user_id=maker.id)
    reject_conversion(c2, user_id=maker.id, reason="fraud")
    b = create_batch("USD", 0, maker.id)
    with pytest.raises(Forbidden):
        approve_batch(b.id, maker.id)
    approve_batch(b.id, checker.id)
    mark_batch_paid(b.id, checker.id)
    b2 = create_batch("USD", 0, maker.id)
    cancel_batch(b2.id, checker.id)
    actions = [r.action for r in reversed(rows())]
    assert actions == ["conversion.approve", "conversion.reject", "payout_batch.create", "payout_batch.approve",
                       "payout_batch.mark_paid", "payout_batch.create", "payout_batch.cancel"]
    created = rows(action="payout_batch.create", target_id=str(b.id))[0]
    assert created.after == {"status": "draft", "currency": "USD", "min_amount_minor": 0, "total_minor": 400,
                             "items": 1}
    assert rows(action="conversion.reject")[0].after == {"status": "rejected", "reason": "fraud"}
    assert [r.action for r in rows(actor="checker@example.com")] == [
        "payout_batch.cancel", "payout_batch.mark_paid", "payout_batch.approve"]
    assert len(rows(action="payout_batch.")) == 5
    assert rows(actor=str(maker.id))[0].action == "payout_batch.create"


def test_filters_by_date_and_system_actor(app):
    clock.set_now(datetime(2024, 3, 1, 12, tzinfo=UTC))
    audit.record(None, "cron.run", "job", "approve-matured", None, {"approved": 3})
    clock.set_now(datetime(2024, 3, 3, 12, tzinfo=UTC))
    audit.record(None, "cron.run", "job", "approve-matured", None, {"approved": 0})
    db.session.commit()
    assert len(rows(actor="system")) == 2
    assert [r.after for r in rows(date_from=date(2024, 3, 2))] == [{"approved": 0}]
    assert [r.after for r in rows(date_to=date(2024, 3, 1))] == [{"approved": 3}]
    assert rows(date_from=date(2024, 3, 2), date_to=date(2024, 3, 2)) == []
    assert audit.actions() == ["cron.run"]
    assert db.session.scalar(select(AuditLog.id).where(AuditLog.action == "nope")) is None
