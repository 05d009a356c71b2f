"""Client invoices (issue 5): one per client, calendar month (the client's time zone) and currency."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .base import BigId, MinorUnits, UTCDateTime, now_utc

INVOICE_STATUSES = ("draft", "issued", "paid")
INVOICE_LINE_KINDS = ("conversion", "clicks", "impressions", "credit")


class Invoice(db.Model):
    """What a client owes for one period in one currency. ``period_start`` is the 1st of the month,
    ``period_end`` the 1st of the next (exclusive), local dates of ``timezone`` (the client's at
    build time). ``total_minor`` is the sum of its lines. Status draft → issued → paid; a draft
    may be rebuilt, an issued or paid invoice never changes (partnernet.clients.invoices)."""

    __tablename__ = "invoices"
    __table_args__ = (UniqueConstraint("client_id", "period_start", "currency"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), index=True)
    number: Mapped[str] = mapped_column(String(40), unique=True)
    currency: Mapped[str] = mapped_column(String(3))
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    timezone: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="draft")
    total_minor: Mapped[int] = mapped_column(MinorUnits, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    built_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    lines = relationship("InvoiceLine", order_by="InvoiceLine.position", cascade="all, delete-orphan",
                         back_populates="invoice", foreign_keys="InvoiceLine.invoice_id")


class InvoiceLine(db.Model):
    """One line: ``conversion`` (one billable action: date, campaign, event, txn_id), ``clicks`` /
    ``impressions`` (CPC / CPM: a count of tracker conversions of one campaign at one unit fee),
    or ``credit`` (a conversion billed on an earlier issued invoice and since rejected or
    reversed: a negative amount). Money in minor units of the invoice's currency."""

    __tablename__ = "invoice_lines"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    position: Mapped[int] = mapped_column(default=0)
    kind: Mapped[str] = mapped_column(String(16))
    occurred_on: Mapped[date | None] = mapped_column(Date)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    campaign_name: Mapped[str] = mapped_column(String(200), default="")
    event_key: Mapped[str] = mapped_column(String(64))
    txn_id: Mapped[str | None] = mapped_column(String(255))
    conversion_id: Mapped[int | None] = mapped_column(ForeignKey("conversions.id"))
    credited_invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"))
    quantity: Mapped[int] = mapped_column(default=1)
    unit_minor: Mapped[int] = mapped_column(MinorUnits, default=0)
    amount_minor: Mapped[int] = mapped_column(MinorUnits, default=0)

    invoice = relationship("Invoice", back_populates="lines", foreign_keys=[invoice_id])


class InvoiceCharge(db.Model):
    """A conversion billed on an invoice: unique per conversion, so no conversion is billed twice.
    ``credit_invoice_id`` is set once its rejection or reversal after issue was credited."""

    __tablename__ = "invoice_charges"
    __table_args__ = (Index("ix_invoice_charges_invoice", "invoice_id"),)

    conversion_id: Mapped[int] = mapped_column(ForeignKey("conversions.id"), primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"))
    amount_minor: Mapped[int] = mapped_column(MinorUnits)
    credit_invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"), index=True)
