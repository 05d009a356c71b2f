"""Scheduled payout batches (CONTRACT v2 §6 "any scheduled payout batch").

A :class:`~partnernet.models.PayoutSchedule` per currency says on which day of the month
(00:00 UTC; the last day of a shorter month), above which minimum and with which NET terms a
draft payout batch is created by the schedule (task ``payout_batches``,
:func:`create_due_batches`). The batch is an ordinary draft: a staff user approves it (the
maker-checker rule holds: its creator is the system user :data:`SYSTEM_EMAIL`, so any staff
user may approve it), cancels it, marks it paid.

NET terms: with ``net_days`` N, earnings credited to a partner's payable account in the N days
before the batch day wait for a later batch: a partner's item is its available amount
(:func:`partnernet.payouts.services.available_amounts`) less those recent credits. Without
NET terms the batch is exactly what ``POST /payout-batches`` creates
(:func:`partnernet.payouts.services.create_batch`).

Each (currency, day) is one run row (``payout_batch:<CUR>``) written in the batch's own commit,
so a batch is created once per day however many runners look, and a missed day is created at
the next look.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..audit import record as audit_record
from ..clock import utcnow
from ..errors import NotFound, ValidationError
from ..extensions import db
from ..ledger.accounts import PAYABLE
from ..models import LedgerAccount, LedgerPosting, LedgerTransaction, PayoutBatch, PayoutItem, PayoutSchedule, User
from ..money import is_currency
from . import services

log = logging.getLogger(__name__)

SYSTEM_EMAIL = "schedule@system.invalid"
SYSTEM_NAME = "Schedule (system)"
#: Never the hash of any password: the system user cannot sign in.
UNUSABLE_PASSWORD = "!"


def system_user_id() -> int:
    """The id of the system staff user that scheduled batches are created by (created on first
    use, in its own commit). It has no usable password and no API key, and its email is under
    the reserved ``.invalid`` domain, so nobody can sign in as it; deactivating it stops the
    scheduled batches (their runs fail with 403 until it is active again)."""
    uid = db.session.scalar(select(User.id).where(User.email == SYSTEM_EMAIL))
    if uid is not None:
        return uid
    try:
        user = User(email=SYSTEM_EMAIL, password_hash=UNUSABLE_PASSWORD, role="staff", name=SYSTEM_NAME, active=True)
        db.session.add(user)
        db.session.commit()
        return user.id
    except IntegrityError:  # another runner created it first
        db.session.rollback()
        return db.session.scalar(select(User.id).where(User.email == SYSTEM_EMAIL))


def set_schedule(currency: str, day_of_month: int, min_amount_minor: int = 0, net_days: int = 0,
                 active: bool = True) -> PayoutSchedule:
    """Create or replace the payout schedule of ``currency`` and commit. ``day_of_month`` 1-31,
    ``min_amount_minor`` int minor units >= 0, ``net_days`` 0-366. Raises ValidationError (400):
    ``unknown_currency``, ``bad_day``, ``bad_amount``, ``bad_net_days``."""
    if not is_currency(currency):
        raise ValidationError(f"unknown currency code {currency!r}", code="unknown_currency", field="currency")
    for value, lo, hi, code, field in ((day_of_month, 1, 31, "bad_day", "day_of_month"),
                                       (min_amount_minor, 0, 10**14, "bad_amount", "min_amount"),
                                       (net_days, 0, 366, "bad_net_days", "net_days")):
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValidationError(f"{field} must be a whole number from {lo} to {hi}", code=code, field=field)
    row = db.session.scalar(select(PayoutSchedule).where(PayoutSchedule.currency == currency))
    if row is None:
        row = PayoutSchedule(currency=currency)
        db.session.add(row)
    row.day_of_month, row.min_amount_minor, row.net_days, row.active = day_of_month, min_amount_minor, net_days, active
    db.session.commit()
    return row


def delete_schedule(currency: str) -> None:
    """Remove the payout schedule of ``currency`` and commit. Raises NotFound (404)."""
    row = db.session.scalar(select(PayoutSchedule).where(PayoutSchedule.currency == currency))
    if row is None:
        raise NotFound(f"no payout schedule for {currency!r}")
    db.session.delete(row)
    db.session.commit()


def schedules() -> list[PayoutSchedule]:
    """Every payout schedule, by currency."""
    return list(db.session.scalars(select(PayoutSchedule).order_by(PayoutSchedule.currency)))


def recent_credits(currency: str, since: datetime) -> dict[int, int]:
    """Per partner id: minor units credited to its payable account in ``currency`` by ledger
    transactions created after ``since`` (approved earnings still inside NET terms)."""
    rows = db.session.execute(
        select(LedgerAccount.owner_id, func.sum(-LedgerPosting.amount_minor))
        .join(LedgerPosting, LedgerPosting.account_id == LedgerAccount.id)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
        .where(LedgerAccount.owner_type == "partner", LedgerAccount.kind == PAYABLE,
               LedgerAccount.currency == currency, LedgerPosting.amount_minor < 0,
               LedgerTransaction.created_at > since)
        .group_by(LedgerAccount.owner_id)).all()
    return {int(pid): int(amount) for pid, amount in rows}


def _create_with_net_terms(schedule: PayoutSchedule, due: datetime, user_id: int) -> PayoutBatch:
    """A draft batch as :func:`services.create_batch` makes it, each item less the partner's
    credits of the last ``net_days`` before ``due``; one transaction, committed."""
    currency, minimum = schedule.currency, schedule.min_amount_minor
    services._lock_currency(currency)  # the same per-currency lock as every batch creation
    batch = PayoutBatch(currency=currency, status="draft", min_amount_minor=minimum, total_minor=0,
                        created_by=user_id, created_at=utcnow())
    db.session.add(batch)
    db.session.flush()
    young = recent_credits(currency, due - timedelta(days=schedule.net_days))
    total = n_items = 0
    for partner_id, available in services.available_amounts(currency).items():
        amount = available - young.get(partner_id, 0)
        if amount > 0 and amount >= minimum:
            db.session.add(PayoutItem(batch_id=batch.id, partner_id=partner_id, amount_minor=amount))
            total += amount
            n_items += 1
    batch.total_minor = total
    audit_record(user_id, "payout_batch.create", "payout_batch", batch.id, None,
                 {"status": "draft", "currency": currency, "min_amount_minor": minimum, "total_minor": total,
                  "items": n_items, "schedule": {"net_days": schedule.net_days, "due": due.isoformat()}})
    db.session.commit()
    return batch


def create_due_batches(now: datetime) -> str:
    """Scheduled entry point (task ``payout_batches``): for every active schedule whose day has
    come this UTC month (:func:`partnernet.schedule.rules.payout_due`), create its draft batch
    once (module docstring). A currency whose batch fails is logged and its run marked failed
    (tried again at the next look); the others go on. Returns a summary."""
    from ..schedule.rules import payout_due
    from ..schedule.runs import finish, mark, run_once

    due_rows = [(s, payout_due(now, s.day_of_month)) for s in schedules() if s.active]
    due_rows = [(s.currency, s.day_of_month, s.min_amount_minor, s.net_days, due) for s, due in due_rows if due]
    db.session.rollback()
    created = []
    for currency, _day, minimum, net_days, due in due_rows:
        def work(run_id, currency=currency, minimum=minimum, net_days=net_days, due=due):
            user_id = system_user_id()
            mark(run_id, "ok")  # committed with the batch: one batch per currency and day
            if net_days:
                sched = db.session.scalar(select(PayoutSchedule).where(PayoutSchedule.currency == currency))
                batch = _create_with_net_terms(sched, due, user_id)
            else:
                batch = services.create_batch(currency, minimum, user_id)
            finish(run_id, "ok", f"batch {batch.id}: {len(batch.items)} item(s), total {batch.total_minor}")
            return batch.id

        try:
            batch_id = run_once(f"payout_batch:{currency}", due, work, now=now)
        except Exception:  # noqa: BLE001 - recorded on the currency's run; the others go on
            log.exception("scheduled payout batch %s due %s failed", currency, due.isoformat())
            continue
        if batch_id is not None:
            created.append(f"{currency} #{batch_id}")
    return "created " + (", ".join(created) if created else "no payout batch")
