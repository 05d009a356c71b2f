"""Reading the ledger (CONTRACT §5 earnings, §4/§6 ``flask ledger verify``): partner earnings,
an account's balance, and the whole-ledger check."""

from __future__ import annotations

from sqlalchemy import String, cast, func, literal, or_, select

from ..errors import NotFound
from ..extensions import db
from ..models import Conversion, ConversionSplit, LedgerAccount, LedgerPosting, LedgerTransaction, Partner
from ..models.conversions import LAGGING
from .accounts import PAID, PAYABLE, PENDING, SPLIT, Account


def partner_earnings(partner_id: int) -> list[dict]:
    """A partner's earnings per currency, read from the ledger (CONTRACT §5 earnings).

    Returns ``[{"currency", "pending", "approved", "paid", "balance"}, ...]`` (int minor units),
    one entry per currency in which the partner has any posting, sorted by currency:
    ``pending``: its amounts (converter, touch, recruiter) on pending conversions;
    ``approved``: the same on approved conversions, paid ones included, reversed ones left out;
    ``paid``: paid out by payout batches; ``balance`` = approved − paid (negative after a
    reversal of money already paid). Raises NotFound for an unknown partner.
    """
    if db.session.get(Partner, partner_id) is None:
        raise NotFound(f"no partner {partner_id}")
    rows = db.session.execute(
        select(LedgerAccount.currency, LedgerAccount.kind, LedgerTransaction.kind,
               func.sum(LedgerPosting.amount_minor))
        .join(LedgerPosting, LedgerPosting.account_id == LedgerAccount.id)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
        .where(LedgerAccount.owner_type == "partner", LedgerAccount.owner_id == partner_id)
        .group_by(LedgerAccount.currency, LedgerAccount.kind, LedgerTransaction.kind)
    ).all()
    out: dict[str, dict] = {}
    for cur, acct_kind, txn_kind, total in rows:
        e = out.setdefault(cur, {"currency": cur, "pending": 0, "approved": 0, "paid": 0, "balance": 0})
        total = int(total)
        if acct_kind == PENDING:
            e["pending"] -= total
        elif acct_kind == PAYABLE:
            e["balance"] -= total
            if txn_kind == PAID:
                e["paid"] += total
    for e in out.values():
        e["approved"] = e["balance"] + e["paid"]
    return [out[c] for c in sorted(out)]


def account_balance(account: Account) -> int:
    """The cached signed balance of ``account`` (0 when it has no posting yet), minor units."""
    value = db.session.scalar(select(LedgerAccount.balance_minor).where(LedgerAccount.code == account.code))
    return int(value or 0)


def verify_ledger() -> list[str]:
    """Check the whole ledger (CONTRACT §4/§6 ``flask ledger verify``). Returns the problems
    found, as readable lines; an empty list means all is well:

    - every transaction's postings add up to 0, in the transaction's currency;
    - every account's ``balance_minor`` equals the sum of its postings;
    - every conversion's split lines add up to its client fee, none negative, and a
      conversion has split lines exactly when its ``split`` transaction exists;
    - every conversion's ``ledger_status`` equals its status (a rejected conversion with
      nothing posted excepted). A lag here means a sync job has not run (yet).
    """
    problems: list[str] = []
    s = db.session
    for tid, source, kind, total in s.execute(
        select(LedgerTransaction.id, LedgerTransaction.source, LedgerTransaction.kind,
               func.coalesce(func.sum(LedgerPosting.amount_minor), 0))
        .outerjoin(LedgerPosting, LedgerPosting.transaction_id == LedgerTransaction.id)
        .group_by(LedgerTransaction.id, LedgerTransaction.source, LedgerTransaction.kind)
        .having(func.coalesce(func.sum(LedgerPosting.amount_minor), 0) != 0)
    ):
        problems.append(f"transaction {tid} ({source} {kind}) does not balance: postings sum to {total}")
    for tid, source, kind, code in s.execute(
        select(LedgerTransaction.id, LedgerTransaction.source, LedgerTransaction.kind, LedgerAccount.code)
        .join(LedgerPosting, LedgerPosting.transaction_id == LedgerTransaction.id)
        .join(LedgerAccount, LedgerAccount.id == LedgerPosting.account_id)
        .where(LedgerAccount.currency != LedgerTransaction.currency)
    ):
        problems.append(f"transaction {tid} ({source} {kind}) posts to {code} in another currency")
    for aid, code, cached, total in s.execute(
        select(LedgerAccount.id, LedgerAccount.code, LedgerAccount.balance_minor,
               func.coalesce(func.sum(LedgerPosting.amount_minor), 0))
        .outerjoin(LedgerPosting, LedgerPosting.account_id == LedgerAccount.id)
        .group_by(LedgerAccount.id, LedgerAccount.code, LedgerAccount.balance_minor)
        .having(LedgerAccount.balance_minor != func.coalesce(func.sum(LedgerPosting.amount_minor), 0))
    ):
        problems.append(f"account {aid} ({code}) has balance {cached} but its postings sum to {total}")
    for cid, fee, total, lowest in s.execute(
        select(Conversion.id, Conversion.client_fee_minor, func.sum(ConversionSplit.amount_minor),
               func.min(ConversionSplit.amount_minor))
        .join(ConversionSplit, ConversionSplit.conversion_id == Conversion.id)
        .group_by(Conversion.id, Conversion.client_fee_minor)
        .having(or_(func.sum(ConversionSplit.amount_minor) != Conversion.client_fee_minor,
                    func.min(ConversionSplit.amount_minor) < 0))
    ):
        problems.append(f"conversion {cid}: split lines sum to {total} (lowest {lowest}),"
                        f" client fee is {fee}")
    has_lines = select(ConversionSplit.id).where(ConversionSplit.conversion_id == Conversion.id).exists()
    has_split = (
        select(LedgerTransaction.id)
        .where(LedgerTransaction.kind == SPLIT,
               LedgerTransaction.source == literal("conversion:").concat(cast(Conversion.id, String)))
        .exists()
    )
    for (cid,) in s.execute(select(Conversion.id).where(has_lines != has_split).order_by(Conversion.id)):
        problems.append(f"conversion {cid}: split lines and split transaction do not match")
    for cid, status, ledger_status in s.execute(
        select(Conversion.id, Conversion.status, Conversion.ledger_status)
        .where(LAGGING).order_by(Conversion.id)
    ):
        problems.append(f"conversion {cid} is {status} but its ledger reflects {ledger_status or 'nothing'}"
                        " (sync not run yet?)")
    return problems
