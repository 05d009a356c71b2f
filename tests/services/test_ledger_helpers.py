"""Helpers shared by the ledger and payout service tests (no tests here)."""

from __future__ import annotations

from sqlalchemy import func, select

from partnernet import queue
from partnernet.conversions.services import apply_postback_status, record_conversion
from partnernet.extensions import db
from partnernet.ledger.services import partner_earnings
from partnernet.models import Conversion, LedgerTransaction

_txn = iter(range(1, 10**9))


def record(campaign, link, *, status="pending", event="sale", amount_minor=None, run_jobs=True) -> int:
    """Record a conversion on ``link`` as a postback would, commit, run the queued jobs
    (in-process mode); returns its id."""
    ev = campaign.event(event)
    rec = record_conversion(
        campaign_id=campaign.id, event=ev, link_id=link.id, partner_id=link.partner_id, click_id=None,
        click_at=None, txn_id=f"T{next(_txn)}", amount_minor=amount_minor, duration_s=None, status=status,
        reason=None,
    )
    db.session.commit()
    if run_jobs:
        queue.run_pending()
    return rec.conversion.id


def postback_status(conversion_id: int, status: str, *, run_jobs=True) -> bool:
    """Apply a postback status change to a conversion, commit, run the jobs."""
    conv = db.session.get(Conversion, conversion_id)
    changed = apply_postback_status(conv, status)
    db.session.commit()
    if run_jobs:
        queue.run_pending()
    return changed


def earnings(partner_id: int, currency: str = "USD") -> dict:
    """The partner's earnings in ``currency`` without the currency key (zeros when none)."""
    for e in partner_earnings(partner_id):
        if e["currency"] == currency:
            return {k: v for k, v in e.items() if k != "currency"}
    return {"pending": 0, "approved": 0, "paid": 0, "balance": 0}


def kinds(conversion_id: int) -> list[str]:
    """Kinds of the ledger transactions of a conversion, in posting order."""
    return list(db.session.scalars(
        select(LedgerTransaction.kind).where(LedgerTransaction.source == f"conversion:{conversion_id}")
        .order_by(LedgerTransaction.id)
    ))


def transaction_count() -> int:
    return db.session.scalar(select(func.count()).select_from(LedgerTransaction))


def fresh(conversion_id: int) -> Conversion:
    """The conversion re-read from the database."""
    db.session.expire_all()
    return db.session.get(Conversion, conversion_id)
