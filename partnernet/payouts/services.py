"""Payout batches (CONTRACT §5 ``/payout-batches``): draft → approved (by a second staff
user) → paid, or draft → cancelled. Amounts are read from the ledger: a partner's
``balance`` is the credit balance of its ``payable`` account (approved earnings, less
payouts and reversals). Each use case commits once, at its end.

Race safety: creating a batch and marking one paid take a PostgreSQL advisory lock per
currency (``pg_advisory_xact_lock``), so two batches created at once never include the
same money; on SQLite the batch row is written first, which takes the database's write
lock before anything is read. Status changes are conditional UPDATEs
(``... WHERE status = 'draft'``), so two concurrent approvals approve once.

Approval re-checks the batch (CONTRACT v2 §5): its conditional UPDATE locks the batch row
first, then the items' partners' payable accounts are locked (``SELECT ... FOR UPDATE``) in
account-id order, the order the ledger moves balances in, so a reversal posted at the same
moment either lands before the check (and is seen) or waits for the approval to commit.

The payout files (bank CSV, PayPal CSV, SEPA XML) are in :mod:`partnernet.payouts.exports`
and :mod:`partnernet.payouts.sepa`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, text, update

from ..audit import record as audit_record
from ..clock import utcnow
from ..errors import Forbidden, InvalidState, NotFound, ValidationError
from ..extensions import db
from ..ledger.services import CASH, PAID, PAYABLE, agency_account, partner_account, post_transaction
from ..mail import notify
from ..models import LedgerAccount, PayoutBatch, PayoutItem, User
from ..money import format_minor, is_currency

OPEN_STATUSES = ("draft", "approved")  # batches whose items hold money back
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


@dataclass(frozen=True)
class Shortfall:
    """An item larger than what its partner has left: ``available_minor`` = the partner's balance
    minus its items in other open (draft or approved) batches, minor units of the batch currency."""

    partner_id: int
    amount_minor: int
    available_minor: int


def shortfalls(batch: PayoutBatch, *, lock: bool = False) -> list[Shortfall]:
    """The items of ``batch`` larger than their partner's balance minus its items in the other
    draft or approved batches of the currency (a reversal since the draft), by partner id; empty
    when every item is covered. With ``lock`` (PostgreSQL) the partners' payable accounts are read
    ``FOR UPDATE`` in account-id order (the ledger's order), so no posting moves them before the
    caller commits."""
    in_batch = select(PayoutItem.partner_id).where(PayoutItem.batch_id == batch.id)
    accounts = (
        select(LedgerAccount.owner_id, LedgerAccount.balance_minor)
        .where(LedgerAccount.owner_type == "partner", LedgerAccount.kind == PAYABLE,
               LedgerAccount.currency == batch.currency, LedgerAccount.owner_id.in_(in_batch))
        .order_by(LedgerAccount.id)
    )
    if lock and db.session.get_bind().dialect.name == "postgresql":
        accounts = accounts.with_for_update()
    balance = {int(pid): -int(bal) for pid, bal in db.session.execute(accounts)}
    reserved = dict(db.session.execute(
        select(PayoutItem.partner_id, func.sum(PayoutItem.amount_minor))
        .join(PayoutBatch, PayoutBatch.id == PayoutItem.batch_id)
        .where(PayoutBatch.currency == batch.currency, PayoutBatch.status.in_(OPEN_STATUSES),
               PayoutBatch.id != batch.id, PayoutItem.partner_id.in_(in_batch))
        .group_by(PayoutItem.partner_id)
    ).all())
    items = db.session.execute(
        select(PayoutItem.partner_id, PayoutItem.amount_minor).where(PayoutItem.batch_id == batch.id)
        .order_by(PayoutItem.partner_id)
    ).all()
    out = []
    for pid, amount in items:
        available = balance.get(int(pid), 0) - int(reserved.get(pid) or 0)
        if int(amount) > available:
            out.append(Shortfall(int(pid), int(amount), available))
    return out


def _shortfall_message(batch: PayoutBatch, short: list[Shortfall]) -> str:
    shown = "; ".join(
        f"partner {s.partner_id}: item {format_minor(s.amount_minor, batch.currency)}, available "
        f"{format_minor(s.available_minor, batch.currency)}" for s in short[:20])
    more = f" and {len(short) - 20} more" if len(short) > 20 else ""
    return (f"payout batch {batch.id}: balances changed since the draft (a reversal?) for {len(short)} "
            f"partner(s): {shown}{more}. Nothing was approved: cancel this batch and create a new one.")


def approve_batch(batch_id: int, user_id: int) -> PayoutBatch:
    """Approve a draft batch (CONTRACT §5): only by a staff user other than its creator
    (maker-checker). Two concurrent approvals approve once (conditional UPDATE). The batch is
    re-checked first (CONTRACT v2 §5): an item larger than its partner's balance minus the
    partner's other open items (:func:`shortfalls`, under lock) refuses the whole approval.
    Commits.

    Raises NotFound (404); Forbidden (403) when ``user_id`` is not staff or created the batch,
    checked before the state; InvalidState (409) when the batch is not a draft, or code
    ``balance_changed`` (the partners named in the message; nothing approved).
    """
    batch = get_batch(batch_id)
    _staff(user_id)
    if user_id == batch.created_by:
        raise Forbidden("a payout batch must be approved by a staff user other than its creator")
    _conditional_status(batch, "draft", status="approved", approved_by=user_id, approved_at=utcnow())
    short = shortfalls(batch, lock=True)
    if short:
        message = _shortfall_message(batch, short)
        db.session.rollback()  # the batch stays a draft
        raise InvalidState(message, code="balance_changed")
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
