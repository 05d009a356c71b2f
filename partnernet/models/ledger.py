"""The double-entry ledger: accounts, transactions and postings (append-only)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .base import BigId, MinorUnits, UTCDateTime, now_utc


class LedgerAccount(db.Model):
    """An account in one currency. ``code`` is unique, e.g. ``partner:7:pending:EUR``,
    ``client:2:receivable:USD``, ``agency:margin:JPY``. ``balance_minor`` is the signed sum of
    its postings (debits positive, credits negative), kept in the same transaction as each
    posting; ``flask ledger verify`` recomputes it."""

    __tablename__ = "ledger_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(80), unique=True)
    owner_type: Mapped[str] = mapped_column(String(16))  # partner, client, agency
    owner_id: Mapped[int | None] = mapped_column(index=True)
    kind: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    balance_minor: Mapped[int] = mapped_column(MinorUnits, default=0)


class LedgerTransaction(db.Model):
    """One balanced money movement. (``source``, ``kind``) is unique, so the same movement
    can never be posted twice (ARCHITECTURE: the ledger is append-only)."""

    __tablename__ = "ledger_transactions"
    __table_args__ = (UniqueConstraint("source", "kind"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source: Mapped[str] = mapped_column(String(64))  # e.g. "conversion:12", "payout_batch:3"
    kind: Mapped[str] = mapped_column(String(32))  # split, approve, reverse, reject, payout
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc, index=True)
    memo: Mapped[str | None] = mapped_column(String(255))

    postings = relationship("LedgerPosting", back_populates="transaction", order_by="LedgerPosting.id")


class LedgerPosting(db.Model):
    """One line of a transaction: ``amount_minor`` > 0 debits the account, < 0 credits it."""

    __tablename__ = "ledger_postings"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("ledger_transactions.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"), index=True)
    amount_minor: Mapped[int] = mapped_column(MinorUnits)

    transaction = relationship("LedgerTransaction", back_populates="postings")
    account = relationship("LedgerAccount")
