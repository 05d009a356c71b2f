"""Adjustments of a conversion's sale amount (CONTRACT v2 §3 "Adjustments", §4 rounding).

A postback with ``status=adjusted`` and an ``amount`` (a partial refund, or a corrected order
total) on an existing pending or approved percent-of-sale conversion:

- the conversion keeps its status; ``amount_minor`` takes the new amount, the amount first
  recorded stays in ``original_amount_minor``; ``client_fee_minor`` is recomputed as
  ``amount × percent / 100`` rounded half up with the percent fixed at recording
  (``client_fee_percent``; a conversion recorded before that column existed uses the event's
  percent now);
- when the split is already posted, every split line is recomputed from the new fee with the
  terms fixed at recording (:func:`partnernet.ledger.split_details.compute_split_details`: the
  payout rule and the converter's recruiters as stored, touches and rounding of CONTRACT §4),
  and the difference of every line (new minus old) is posted as one balanced transaction of kind
  ``adjustment:<n>`` (the n-th adjustment of the conversion; source ``conversion:<id>`` like its
  other transactions): Dr receivable by the fee difference, each partner's ``pending`` (before
  the ``approve`` transaction) or ``payable`` (after it, also after a payout: the balance may go
  negative, like a reversal) and the agency's ``margin_pending`` / ``margin`` by their line's
  difference. The ``conversion_splits`` lines take the new amounts and the report rollups move
  by the difference, in the same database transaction;
- when the split is not posted yet, nothing is posted: the split job splits the new fee.

The later ledger movements stay exact: ``approve`` moves the net of the split and its
adjustments (:func:`partnernet.ledger.services.post_conversions`), ``reject`` / ``reverse``
negate everything posted for the conversion, adjustments included.

A multi-touch conversion's other touches' recruiters are read when the split is computed (as
for the split itself): an override on such a touch follows that partner's recruiter now.
"""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

from sqlalchemy import delete, select, update

from ..extensions import db
from ..models import Conversion, ConversionSplit, LedgerTransaction
from ..money import percent_of
from .accounts import (
    APPROVE,
    MARGIN,
    MARGIN_PENDING,
    PAYABLE,
    PENDING,
    RECEIVABLE,
    REJECT,
    REVERSE,
    SPLIT,
    Account,
    agency_account,
    client_account,
    conversion_source,
    partner_account,
)
from .services import _Txn, _write
from .split_details import _rule_text, compute_split_details

#: Prefix of the adjustment transactions' kind: ``adjustment:1``, ``adjustment:2``, ...
ADJUSTMENT = "adjustment"
#: The statuses a conversion may be adjusted in (CONTRACT v2 §3).
ADJUSTABLE = ("pending", "approved")


class BadAdjustment(Exception):
    """The adjustment cannot apply (CONTRACT v2 §3: 400 ``bad_adjustment``); ``message`` says why."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def fee_percent(conv: Conversion, event_percent: Decimal | None) -> Decimal | None:
    """The percent of the sale ``conv``'s client fee was fixed with: ``client_fee_percent`` as
    stored at recording, else (a conversion recorded before it was stored, with an amount) the
    event's percent now, ``event_percent``; None for a fixed-fee conversion."""
    if conv.client_fee_percent is not None:
        return Decimal(conv.client_fee_percent)
    if conv.amount_minor is not None and event_percent is not None:
        return Decimal(event_percent)
    return None


def check_adjustment(conv: Conversion, amount_minor: int | None, event_percent: Decimal | None) -> Decimal:
    """Check that ``conv`` may take the sale amount ``amount_minor`` (int minor units) and return
    the fee percent to apply (CONTRACT v2 §3). Raises :class:`BadAdjustment` for a fixed-fee
    conversion, no amount, or an amount above the amount first recorded (whatever the
    conversion's status: the postback itself is wrong)."""
    pct = fee_percent(conv, event_percent)
    if pct is None:
        raise BadAdjustment(f"event {conv.event_key!r} is a fixed fee: only a percent-of-sale conversion"
                            " can be adjusted")
    if amount_minor is None:
        raise BadAdjustment("amount is required with status adjusted")
    original = conv.original_amount_minor if conv.original_amount_minor is not None else conv.amount_minor
    if original is None or amount_minor > original:
        raise BadAdjustment("the adjusted amount may not be above the amount first recorded")
    return pct


def adjust_conversion(conv: Conversion, amount_minor: int, event_percent: Decimal | None) -> int | None:
    """Apply an adjusted sale amount to ``conv`` (CONTRACT v2 §3 Adjustments; module docstring).

    ``conv`` is locked by the caller in the house lock order (campaign row, then conversion row:
    ``conversions.services.lock_conversion_for_change``), which also serialises it with the
    split job. ``amount_minor``: the new sale amount, int minor units of the conversion's
    currency. ``event_percent``: the event's percent now (only for a conversion recorded before
    its percent was stored).

    Returns the client-fee difference (new − old, minor units; ≤ 0 unless an earlier adjustment
    lowered it) for the caller to move the campaign's spend by, or None when nothing changed (a
    repeat of the amount it has, or a conversion that is neither pending nor approved).
    Raises :class:`BadAdjustment` (see :func:`check_adjustment`), changing nothing.
    Does not commit.
    """
    pct = check_adjustment(conv, amount_minor, event_percent)
    if conv.status not in ADJUSTABLE or amount_minor == conv.amount_minor:
        return None
    old_fee = int(conv.client_fee_minor or 0)
    new_fee = percent_of(amount_minor, pct)
    if conv.original_amount_minor is None:
        conv.original_amount_minor = conv.amount_minor
    if conv.client_fee_percent is None:
        conv.client_fee_percent = pct
    conv.amount_minor = amount_minor
    conv.client_fee_minor = new_fee
    db.session.flush()
    if not conv.is_test:
        _post_difference(conv, old_fee)
    return new_fee - old_fee


def _post_difference(conv: Conversion, old_fee: int) -> None:
    """Post the difference between the split lines on record and the split of the new fee, when
    the split is posted and not undone; rewrite the split lines; move the rollups."""
    source = conversion_source(conv.id)
    kinds = set(db.session.scalars(select(LedgerTransaction.kind).where(LedgerTransaction.source == source)))
    if SPLIT not in kinds or kinds & {REJECT, REVERSE}:
        return  # nothing posted yet (the split job splits the new fee), or already undone
    from ..reporting.rollup import apply_conversion_money

    old_rows = list(db.session.scalars(
        select(ConversionSplit).where(ConversionSplit.conversion_id == conv.id).order_by(ConversionSplit.id)))
    detail = compute_split_details([conv])[conv.id]
    old = {(r.party, r.role): int(r.amount_minor) for r in old_rows}
    new = {(line.party, line.role): line for line in detail.lines}
    approved = APPROVE in kinds
    campaign_client = _client_of(conv.campaign_id)
    postings: dict[Account, int] = {}

    def add(acct: Account, amount: int) -> None:
        if amount:
            postings[acct] = postings.get(acct, 0) + amount

    add(client_account(campaign_client, RECEIVABLE, conv.currency), int(conv.client_fee_minor) - old_fee)
    for key in set(old) | set(new):
        party, role = key
        diff = (new[key].amount if key in new else 0) - old.get(key, 0)
        if role == "margin":
            add(agency_account(MARGIN if approved else MARGIN_PENDING, conv.currency), -diff)
        else:
            pid = int(party.partition(":")[2])
            add(partner_account(pid, PAYABLE if approved else PENDING, conv.currency), -diff)
    postings = {a: x for a, x in postings.items() if x}
    if postings:  # a new amount whose fee rounds to the old one moves no money
        n = 1 + sum(1 for k in kinds if k.startswith(ADJUSTMENT + ":"))
        _write([_Txn(conv, f"{ADJUSTMENT}:{n}", postings)])
    _rewrite_lines(conv, old_rows, detail, new)
    before = SimpleNamespace(**{k: getattr(conv, k) for k in (
        "created_at", "link_id", "campaign_id", "partner_id", "currency", "event_key", "is_test")},
        client_fee_minor=old_fee)
    old_lines = [{"partner_id": r.partner_id, "role": r.role, "amount_minor": int(r.amount_minor)} for r in old_rows]
    new_lines = [{"partner_id": line.partner_id, "role": line.role, "amount_minor": line.amount}
                 for line in detail.lines]
    apply_conversion_money([(before, old_lines, -1), (conv, new_lines, 1)])


def _client_of(campaign_id: int) -> int:
    from ..models import Campaign

    return int(db.session.scalar(select(Campaign.client_id).where(Campaign.id == campaign_id)))


def _rewrite_lines(conv: Conversion, old_rows: list[ConversionSplit], detail, new: dict) -> None:
    """Make the ``conversion_splits`` lines of ``conv`` those of ``detail``: changed amounts
    updated, lines gone deleted, new lines inserted (with their rule text)."""
    seen = set()
    for row in old_rows:
        key = (row.party, row.role)
        line = new.get(key)
        if line is None:
            db.session.execute(delete(ConversionSplit).where(ConversionSplit.id == row.id)
                               .execution_options(synchronize_session=False))
            continue
        seen.add(key)
        if line.amount != int(row.amount_minor):
            db.session.execute(update(ConversionSplit).where(ConversionSplit.id == row.id)
                               .values(amount_minor=line.amount).execution_options(synchronize_session=False))
    fresh = [{"conversion_id": conv.id, "party": line.party, "partner_id": line.partner_id, "role": line.role,
              "amount_minor": line.amount, "rule": _rule_text(detail, line)}
             for key, line in new.items() if key not in seen]
    if fresh:
        db.session.execute(ConversionSplit.__table__.insert(), fresh)
    db.session.expire(conv, ["splits"])
