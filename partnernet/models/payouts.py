"""Payout batches and their items."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .base import MinorUnits, UTCDateTime, now_utc

BATCH_STATUSES = ("draft", "approved", "paid", "cancelled")


class PayoutBatch(db.Model):
    """A payout batch in one currency: draft → approved (by a second staff user) → paid,
    or draft → cancelled. ``total_minor`` is the sum of its items."""

    __tablename__ = "payout_batches"

    id: Mapped[int] = mapped_column(primary_key=True)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), default="draft")
    min_amount_minor: Mapped[int] = mapped_column(MinorUnits, default=0)
    total_minor: Mapped[int] = mapped_column(MinorUnits, default=0)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    approved_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    items = relationship("PayoutItem", order_by="PayoutItem.id", lazy="selectin")


class PayoutItem(db.Model):
    """What one partner is paid in one batch (minor units of the batch currency)."""

    __tablename__ = "payout_items"
    __table_args__ = (UniqueConstraint("batch_id", "partner_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("payout_batches.id"), index=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    amount_minor: Mapped[int] = mapped_column(MinorUnits)

    partner = relationship("Partner")
