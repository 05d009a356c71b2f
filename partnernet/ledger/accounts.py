"""Ledger accounts and balanced transactions (CONTRACT §4, ARCHITECTURE: every money movement is a
balanced ledger transaction). The conversion postings (:mod:`partnernet.ledger.services`), payout
batches (:mod:`partnernet.payouts.services`) and invoices post through these.

Sign convention: a posting's ``amount_minor`` > 0 debits its account, < 0 credits it;
every transaction's postings add up to 0. ``LedgerAccount.balance_minor`` is the signed
sum of the account's postings, moved by ``UPDATE ... SET balance_minor = balance_minor + x``
in the same database transaction as the postings.

Accounts, one per owner, kind and currency (``code`` is unique):

============================== =============================================================
``client:<id>:receivable:CUR`` what a client owes for its conversions (debit balance)
``partner:<id>:pending:CUR``   what a partner earns on pending conversions (credit balance)
``partner:<id>:payable:CUR``   approved earnings not yet paid out (credit balance; a debit
                               balance after a reversal of money already paid)
``agency:margin_pending:CUR``  the agency's margin on pending conversions
``agency:margin:CUR``          the agency's margin on approved conversions
``agency:cash:CUR``            money paid out to partners (credited by payout batches)
============================== =============================================================
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models import LedgerAccount, LedgerPosting, LedgerTransaction

log = logging.getLogger(__name__)

# Account kinds.
# Account kinds.
RECEIVABLE = "receivable"
PENDING = "pending"
PAYABLE = "payable"
MARGIN_PENDING = "margin_pending"
MARGIN = "margin"
CASH = "cash"

# Transaction kinds.
SPLIT = "split"
APPROVE = "approve"
REJECT = "reject"
REVERSE = "reverse"
PAID = "paid"



@dataclass(frozen=True)
class Account:
    """An account's identity: owner (``partner``, ``client``, ``agency``), owner id (None for the
    agency), kind and currency. :attr:`code` is its unique ledger code."""

    owner_type: str
    owner_id: int | None
    kind: str
    currency: str

    @property
    def code(self) -> str:
        """``"partner:7:payable:EUR"``, ``"agency:margin:JPY"``..."""
        if self.owner_id is None:
            return f"{self.owner_type}:{self.kind}:{self.currency}"
        return f"{self.owner_type}:{self.owner_id}:{self.kind}:{self.currency}"


def partner_account(partner_id: int, kind: str, currency: str) -> Account:
    """A partner's ``pending`` or ``payable`` account in ``currency``."""
    return Account("partner", partner_id, kind, currency)


def client_account(client_id: int, kind: str, currency: str) -> Account:
    """A client's ``receivable`` account in ``currency``."""
    return Account("client", client_id, kind, currency)


def agency_account(kind: str, currency: str) -> Account:
    """The agency's ``margin_pending``, ``margin`` or ``cash`` account in ``currency``."""
    return Account("agency", None, kind, currency)


# --------------------------------------------------------------------------- posting


def ensure_accounts(accounts: list[Account]) -> dict[Account, int]:
    """The ids of ``accounts``, creating the missing ones (race-safe: INSERT ... ON CONFLICT DO
    NOTHING on the unique code, in code order so that concurrent creators never deadlock).
    Does not commit."""
    wanted = {a.code: a for a in accounts}
    if not wanted:
        return {}
    found = dict(db.session.execute(
        select(LedgerAccount.code, LedgerAccount.id).where(LedgerAccount.code.in_(list(wanted)))
    ).all())
    missing = sorted(code for code in wanted if code not in found)
    if missing:
        dialect = db.session.get_bind().dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        for code in missing:
            a = wanted[code]
            db.session.execute(
                dialect_insert(LedgerAccount)
                .values(code=code, owner_type=a.owner_type, owner_id=a.owner_id, kind=a.kind,
                        currency=a.currency, balance_minor=0)
                .on_conflict_do_nothing(index_elements=["code"])
            )
        found.update(db.session.execute(
            select(LedgerAccount.code, LedgerAccount.id).where(LedgerAccount.code.in_(missing))
        ).all())
    return {a: found[code] for code, a in wanted.items()}


def apply_balances(deltas: dict[int, int]) -> None:
    """Move cached balances: ``{account_id: delta}``, ``UPDATE ... SET balance_minor =
    balance_minor + delta`` for each account, sent as one executemany in account-id order so
    that two writers never deadlock on the shared (agency) accounts. Does not commit."""
    params = [{"aid": acct_id, "delta": deltas[acct_id]} for acct_id in sorted(deltas) if deltas[acct_id]]
    if not params:
        return
    table = LedgerAccount.__table__
    db.session.execute(
        table.update().where(table.c.id == bindparam("aid"))
        .values(balance_minor=table.c.balance_minor + bindparam("delta")),
        params,
    )


def post_transaction(source: str, kind: str, currency: str, postings: list[tuple[Account, int]],
                     *, memo: str | None = None, extra=None,
                     balances: dict[int, int] | None = None) -> LedgerTransaction | None:
    """Post one balanced transaction, unique on (``source``, ``kind``), inside a SAVEPOINT.

    ``postings``: ``[(Account, amount_minor), ...]``, debits > 0, credits < 0, every account in
    ``currency``. Postings to the same account are merged and zero amounts dropped (a
    transaction may end up with no posting at all: it still marks the movement as done).
    Balances move with :func:`apply_balances` once the postings are written; a caller that
    posts several transactions in one database transaction passes a ``balances`` dict to
    collect the deltas in, and applies them once at the end, so that every row lock on an
    account is taken in one account-id order (no deadlock between two posters).
    ``extra``: an optional callable run inside the same SAVEPOINT after the postings (e.g.
    writing the conversion's split lines).

    Returns the new transaction, or None when (source, kind) was already posted (the unique
    constraint is the backstop; the SAVEPOINT is rolled back and the caller's transaction
    goes on). Raises ValueError when the postings do not balance or mix currencies.
    Does not commit.
    """
    if sum(amount for _, amount in postings) != 0:
        raise ValueError(f"unbalanced transaction {source} {kind}: {postings!r}")
    if any(acct.currency != currency for acct, _ in postings):
        raise ValueError(f"transaction {source} {kind} mixes currencies")
    merged: dict[Account, int] = defaultdict(int)
    for acct, amount in postings:
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise ValueError("posting amounts are int minor units")
        merged[acct] += amount
    merged = {a: x for a, x in merged.items() if x != 0}
    ids = ensure_accounts(list(merged))
    try:
        with db.session.begin_nested():
            txn = LedgerTransaction(source=source, kind=kind, currency=currency, memo=memo)
            db.session.add(txn)
            db.session.flush()
            rows = sorted((ids[a], x) for a, x in merged.items())
            if rows:
                db.session.execute(insert(LedgerPosting), [
                    {"transaction_id": txn.id, "account_id": acct_id, "amount_minor": x}
                    for acct_id, x in rows
                ])
            if extra is not None:
                extra(txn)
                db.session.flush()
    except IntegrityError:
        log.info("ledger transaction %s %s already posted", source, kind)
        return None
    if balances is None:
        apply_balances(dict(rows))
    else:
        for acct_id, x in rows:
            balances[acct_id] = balances.get(acct_id, 0) + x
    return txn


def conversion_source(conversion_id: int) -> str:
    """The ledger ``source`` of a conversion: ``"conversion:<id>"``."""
    return f"conversion:{conversion_id}"

