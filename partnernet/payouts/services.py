"""Payout batches (CONTRACT §5 ``/payout-batches``): draft → approved (by a second staff
user) → paid, or draft → cancelled. Amounts are read from the ledger: a partner's
``balance`` is the credit balance of its ``payable`` account (approved earnings, less
payouts and reversals). Each use case commits once, at its end.

Race safety: creating a batch and marking one paid take a PostgreSQL advisory lock per
currency (``pg_advisory_xact_lock``), so two batches created at once never include the
same money; on SQLite the batch row is written first, which takes the database's write
lock before anything is read. Status changes are conditional UPDATEs
(``... WHERE status = 'draft'``), so two concurrent approvals approve once.
"""

from __future__ import annotations

import io

from sqlalchemy import func, select, text, update

from .. import csvsafe
from ..audit import record as audit_record
from ..clock import utcnow
from ..errors import Forbidden, InvalidState, NotFound, ValidationError
from ..extensions import db
from ..ledger.services import CASH, PAID, PAYABLE, agency_account, partner_account, post_transaction
from ..mail import notify
from ..models import LedgerAccount, Partner, PayoutBatch, PayoutItem, User
from ..money import format_minor, is_currency

OPEN_STATUSES = ("draft", "approved")  # batches whose items hold money back
CSV_HEADER = ("partner_id", "name", "payout_email", "amount", "currency")
_LOCK_NAMESPACE = 0x504E  # "PN": first key of the two-key advisory lock


def _lock_currency(currency: str) -> None:
    """Serialise batch creation and payment per currency (PostgreSQL advisory lock held until
    commit; SQLite serialises writers by itself)."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text("SELECT pg_advisory_xact_lock(:ns, :key)"),
                           {"ns": _LOCK_NAMESPACE, "key": int.from_bytes(currency.encode("ascii"), "big")})


def _staff(user_id: int) -> User:
    user = db.session.get(User, user_id) if isinstance(user_id, int) else None
    if user is None or user.role != "staff" or not user.active:
        raise Forbidden("only staff users manage payout batches")
    return user


def get_batch(batch_id: int) -> PayoutBatch:
    """The payout batch ``batch_id`` with its items. Raises NotFound (404)."""
    batch = db.session.get(PayoutBatch, batch_id) if isinstance(batch_id, int) else None
    if batch is None:
        raise NotFound(f"no payout batch {batch_id}")
    return batch


def available_amounts(currency: str) -> dict[int, int]:
    """Per partner id: its balance in ``currency`` (credit balance of its payable account)
    minus its items in ``draft`` or ``approved`` batches, minor units; partners with a
    payable account only, whatever the sign. Read in one statement (one snapshot)."""
    reserved = (
        select(PayoutItem.partner_id, func.sum(PayoutItem.amount_minor).label("reserved"))
        .join(PayoutBatch, PayoutBatch.id == PayoutItem.batch_id)
        .where(PayoutBatch.currency == currency, PayoutBatch.status.in_(OPEN_STATUSES))
        .group_by(PayoutItem.partner_id)
        .subquery()
    )
    rows = db.session.execute(
        select(LedgerAccount.owner_id, -LedgerAccount.balance_minor - func.coalesce(reserved.c.reserved, 0))
        .outerjoin(reserved, reserved.c.partner_id == LedgerAccount.owner_id)
        .where(LedgerAccount.owner_type == "partner", LedgerAccount.kind == PAYABLE,
               LedgerAccount.currency == currency)
        .order_by(LedgerAccount.owner_id)
    ).all()
    return {int(pid): int(avail) for pid, avail in rows}


def create_batch(currency: str, min_amount_minor: int, user_id: int) -> PayoutBatch:
    """Create a draft payout batch in ``currency`` (CONTRACT §5 ``POST /payout-batches``): one
    item per partner whose balance minus its items in draft or approved batches is positive
    and at least ``min_amount_minor`` (int minor units, >= 0), for that amount. A batch with no
    item is still created; ``total_minor`` is the sum of the items. Sees every approval and
    rejection committed before it. Commits.

    Raises Forbidden (403) unless ``user_id`` is an active staff user; ValidationError (400)
    for an unknown currency (code ``unknown_currency``) or a bad minimum (code ``bad_amount``).
    """
    _staff(user_id)
    if not is_currency(currency):
        raise ValidationError(f"unknown currency code {currency!r}", code="unknown_currency",
                              field="currency")
    if isinstance(min_amount_minor, bool) or not isinstance(min_amount_minor, int) or min_amount_minor < 0:
        raise ValidationError("min_amount must be a non-negative amount", code="bad_amount",
                              field="min_amount")
    _lock_currency(currency)
    batch = PayoutBatch(currency=currency, status="draft", min_amount_minor=min_amount_minor, total_minor=0,
                        created_by=user_id, created_at=utcnow())
    db.session.add(batch)
    db.session.flush()
    total = 0
    n_items = 0
    for partner_id, amount in available_amounts(currency).items():
        if amount > 0 and amount >= min_amount_minor:
            db.session.add(PayoutItem(batch_id=batch.id, partner_id=partner_id, amount_minor=amount))
            total += amount
            n_items += 1
    batch.total_minor = total
    audit_record(user_id, "payout_batch.create", "payout_batch", batch.id, None,
                 {"status": "draft", "currency": currency, "min_amount_minor": min_amount_minor,
                  "total_minor": total, "items": n_items})
    db.session.commit()
    return batch


def _conditional_status(batch: PayoutBatch, from_status: str, **values) -> None:
    result = db.session.execute(
        update(PayoutBatch)
        .where(PayoutBatch.id == batch.id, PayoutBatch.status == from_status)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        db.session.rollback()
        current = db.session.scalar(select(PayoutBatch.status).where(PayoutBatch.id == batch.id))
        raise InvalidState(f"payout batch {batch.id} is {current}, not {from_status}")


def approve_batch(batch_id: int, user_id: int) -> PayoutBatch:
    """Approve a draft batch (CONTRACT §5): only by a staff user other than its creator
    (maker-checker). Two concurrent approvals approve once (conditional UPDATE). Commits.

    Raises NotFound (404); Forbidden (403) when ``user_id`` is not staff or created the batch,
    checked before the state; InvalidState (409) when the batch is not a draft.
    """
    batch = get_batch(batch_id)
    _staff(user_id)
    if user_id == batch.created_by:
        raise Forbidden("a payout batch must be approved by a staff user other than its creator")
    _conditional_status(batch, "draft", status="approved", approved_by=user_id, approved_at=utcnow())
    audit_record(user_id, "payout_batch.approve", "payout_batch", batch.id, {"status": "draft"},
                 {"status": "approved"})
    db.session.commit()
    return batch


def cancel_batch(batch_id: int, user_id: int) -> PayoutBatch:
    """Cancel a draft batch: status ``cancelled``, its items no longer hold money back
    (CONTRACT §5). Commits. Raises NotFound (404), Forbidden (403) unless staff,
    InvalidState (409) when the batch is not a draft."""
    batch = get_batch(batch_id)
    _staff(user_id)
    _conditional_status(batch, "draft", status="cancelled", cancelled_at=utcnow())
    audit_record(user_id, "payout_batch.cancel", "payout_batch", batch.id, {"status": "draft"},
                 {"status": "cancelled"})
    db.session.commit()
    return batch


def payout_source(batch_id: int) -> str:
    """The ledger ``source`` of a payout batch: ``"payout_batch:<id>"``."""
    return f"payout_batch:{batch_id}"


def mark_batch_paid(batch_id: int, user_id: int) -> PayoutBatch:
    """Mark an approved batch paid (CONTRACT §5): status ``paid`` and one balanced ledger
    transaction (``"payout_batch:<id>"``, ``"paid"``): each partner's payable debited by its
    item, cash credited by the total; so each partner's ``paid`` rises and ``balance`` drops by
    its item. Commits. Raises NotFound (404), Forbidden (403) unless staff, InvalidState (409)
    when the batch is not approved."""
    batch = get_batch(batch_id)
    _staff(user_id)
    _lock_currency(batch.currency)
    _conditional_status(batch, "approved", status="paid", paid_at=utcnow())
    items = db.session.execute(
        select(PayoutItem.partner_id, PayoutItem.amount_minor).where(PayoutItem.batch_id == batch.id)
    ).all()
    cur = batch.currency
    postings = [(partner_account(pid, PAYABLE, cur), int(amount)) for pid, amount in items]
    postings.append((agency_account(CASH, cur), -sum(int(amount) for _, amount in items)))
    txn = post_transaction(payout_source(batch.id), PAID, cur, postings, memo=f"payout batch {batch.id}")
    if txn is None:
        db.session.rollback()
        raise InvalidState(f"payout batch {batch.id} was already paid")
    audit_record(user_id, "payout_batch.mark_paid", "payout_batch", batch.id, {"status": "approved"},
                 {"status": "paid", "total_minor": sum(int(amount) for _, amount in items)})
    notify.payout_sent(batch.id, cur)  # one email per partner in the batch, sent after commit
    db.session.commit()
    return batch


def _cell(value: str | None) -> str:
    """Text for a CSV cell, neutralised against spreadsheet formula injection
    (:func:`partnernet.csvsafe.neutralise`: a leading ``= + - @`` or control character gets a
    ``'`` in front). The writers are :func:`partnernet.csvsafe.writer` too, so every text cell is
    safe even where this is not called."""
    return csvsafe.neutralise(value or "")


def export_csv(batch_id: int) -> str:
    """The batch as CSV text (CONTRACT §5 ``export.csv``): header
    ``partner_id,name,payout_email,amount,currency``, one row per item in item order;
    ``amount`` as a decimal string with the currency's minor digits; ``payout_email`` falls
    back to the partner's email when none is set. Raises NotFound (404)."""
    batch = get_batch(batch_id)
    rows = db.session.execute(
        select(PayoutItem.partner_id, Partner.name, Partner.payout_email, Partner.email,
               PayoutItem.amount_minor)
        .join(Partner, Partner.id == PayoutItem.partner_id)
        .where(PayoutItem.batch_id == batch.id)
        .order_by(PayoutItem.id)
    ).all()
    out = io.StringIO()
    writer = csvsafe.writer(out, numeric={CSV_HEADER.index("amount")}, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for pid, name, payout_email, email, amount in rows:
        writer.writerow([str(pid), _cell(name), _cell(payout_email or email),
                         format_minor(int(amount), batch.currency), batch.currency])
    return out.getvalue()


#: PayPal Payouts Web upload (payouts.paypal.com "Payouts Web"): no header row; one row per
#: recipient, columns in this order: recipient identifier (email), payment amount, currency,
#: customer ID (at most 30 characters, no spaces), note to recipient (at most 400 characters),
#: recipient wallet (``PAYPAL``). One currency per file.
PAYPAL_COLUMNS = ("recipient", "amount", "currency", "customer_id", "note", "wallet")
PAYPAL_NOTE_MAX = 400


def export_paypal_csv(batch_id: int, note: str | None = None) -> str:
    """The batch as a PayPal Payouts Web CSV (see :data:`PAYPAL_COLUMNS`): no header, one row
    per item in item order: the partner's payout email (else its email), the amount as a
    decimal string with a ``.`` and the currency's minor digits (``"12.50"``, ``"1000"`` for
    JPY), the currency code, ``partner-<id>`` as the customer ID, ``note`` (default
    ``"PartnerNet payout batch <id>"``, cut to 400 characters) and ``PAYPAL``. Lines end in CRLF.
    Raises NotFound (404)."""
    batch = get_batch(batch_id)
    note = (note or f"PartnerNet payout batch {batch.id}").replace("\r", " ").replace("\n", " ")
    note = _cell(note[:PAYPAL_NOTE_MAX])
    rows = db.session.execute(
        select(PayoutItem.partner_id, Partner.payout_email, Partner.email, PayoutItem.amount_minor)
        .join(Partner, Partner.id == PayoutItem.partner_id)
        .where(PayoutItem.batch_id == batch.id)
        .order_by(PayoutItem.id)
    ).all()
    out = io.StringIO()
    writer = csvsafe.writer(out, numeric={PAYPAL_COLUMNS.index("amount")}, lineterminator="\r\n")
    for pid, payout_email, email, amount in rows:
        writer.writerow([_cell(payout_email or email), format_minor(int(amount), batch.currency),
                         batch.currency, f"partner-{pid}", note, "PAYPAL"])
    return out.getvalue()
