"""Conversions, their splits, and the postback log."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import JSON, ForeignKey, Index, Numeric, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .base import BigId, MinorUnits, UTCDateTime, now_utc

CONVERSION_STATUSES = ("pending", "approved", "rejected", "reversed")
REJECTION_REASONS = (
    "bot_click", "fallback_click", "partner_suspended", "outside_window", "duplicate_click",
    "below_min_duration", "below_min_amount", "over_budget", "client_rejected",
    # Spend caps (issue 5; not in CONTRACT §3's list, which predates caps): checked right after over_budget.
    "over_daily_cap", "over_monthly_cap",
)


class Conversion(db.Model):
    """One event credited to a link (CONTRACT §3).

    Deduplication lives in the database: ``dedup_key`` is ``"t:<txn_id>"`` when the
    postback has a txn_id, else ``"c:<click_id>"`` (``"i:<link>:<n>"`` for impression
    conversions), unique per (campaign, event). The client fee is fixed here when the
    conversion is recorded; the payout rule of the event is copied too
    (``payout_minor`` or ``payout_percent``), and so are the payout terms in force then
    (``payout_rule`` and the ``terms_*`` columns: tier, override, bonus, recruiters), so later
    price or rule changes rewrite nothing (CONTRACT v2 §4).

    ``ledger_status`` is the status the ledger reflects (None: nothing posted yet); a
    job brings it level with ``status`` (:func:`partnernet.ledger.services.sync_conversion`).
    """

    __tablename__ = "conversions"
    __table_args__ = (
        UniqueConstraint("campaign_id", "event_key", "dedup_key"),
        Index("ix_conversions_campaign_status", "campaign_id", "status"),
        Index("ix_conversions_partner_status", "partner_id", "status"),
        Index("ix_conversions_click_event", "click_id", "event_key"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    event_key: Mapped[str] = mapped_column(String(64))
    link_id: Mapped[int] = mapped_column(ForeignKey("links.id"), index=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    click_id: Mapped[str | None] = mapped_column(String(40))
    txn_id: Mapped[str | None] = mapped_column(String(255))
    # The advertiser's stable ID of the paying customer, when the postback gave one (CONTRACT v2 §3).
    customer_id: Mapped[str | None] = mapped_column(String(255))
    dedup_key: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str | None] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int | None] = mapped_column(MinorUnits)
    client_fee_minor: Mapped[int] = mapped_column(MinorUnits, default=0)
    # (v2 §3 Adjustments) the sale amount as first recorded, kept when an ``adjusted`` postback
    # replaces ``amount_minor`` (None: never adjusted); and the event's percent of the sale fixed
    # at recording (None: a fixed fee, or recorded before it was stored), from which an adjusted
    # amount's client fee is recomputed (partnernet.ledger.adjustments).
    original_amount_minor: Mapped[int | None] = mapped_column(MinorUnits)
    client_fee_percent: Mapped[Decimal | None] = mapped_column(Numeric(9, 4))
    payout_minor: Mapped[int | None] = mapped_column(MinorUnits)
    payout_percent: Mapped[Decimal | None] = mapped_column(Numeric(9, 4))
    duration_s: Mapped[int | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc, index=True)
    click_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    hold_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    approved_by: Mapped[str | None] = mapped_column(String(32))  # "postback" or "user:<id>" or "auto"
    rejected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reversed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ledger_status: Mapped[str | None] = mapped_column(String(16))
    is_test: Mapped[bool] = mapped_column(default=False)
    # Payout terms fixed when the conversion is recorded (CONTRACT v2 §4; resolved by
    # partnernet.ledger.payout_rules.recording_terms): the rule text that its split lines carry,
    # the converter payout after tier, override and bonus (fixed minor units, or a percent of the
    # client fee), and the converter's recruiters (tier 1 and tier 2) with their percents.
    # ``payout_rule`` None: recorded before terms were fixed; the split job resolves them then.
    payout_rule: Mapped[str | None] = mapped_column(String(64))
    terms_payout_minor: Mapped[int | None] = mapped_column(MinorUnits)
    terms_payout_percent: Mapped[Decimal | None] = mapped_column(Numeric(9, 4))
    terms_recruiter_id: Mapped[int | None] = mapped_column()
    terms_recruiter_percent: Mapped[Decimal | None] = mapped_column(Numeric(9, 4))
    terms_recruiter2_id: Mapped[int | None] = mapped_column()
    terms_recruiter2_percent: Mapped[Decimal | None] = mapped_column(Numeric(9, 4))
    # Fraud flags (CONTRACT v2 §5 ``flags``), fixed when the conversion is recorded
    # (partnernet.conversions.flags): codes in FLAG_CODES order, and {code: short evidence}.
    # A conversion with a flag is never approved automatically (CONTRACT v2 §6).
    flags: Mapped[list] = mapped_column(JSON, default=list, server_default=text("'[]'"))
    flag_evidence: Mapped[dict] = mapped_column(JSON, default=dict, server_default=text("'{}'"))

    splits = relationship("ConversionSplit", order_by="ConversionSplit.id", lazy="selectin")


#: Conversions whose ledger lags their status (the split job's work list): not a test conversion,
#: and the ledger reflects another status, or nothing while the conversion is live (a conversion
#: rejected at creation has nothing to post). The partial index below holds exactly these rows,
#: so the split job finds its work without scanning the table.
#: (Plain SQL, the same text in the index and in the queries, so that PostgreSQL's planner
#: matches the partial index; ``= false`` works on both backends.)
LAGGING = text(
    "is_test = false AND (ledger_status <> status OR (ledger_status IS NULL AND status <> 'rejected'))"
)
Index("ix_conversions_ledger_lag", Conversion.id, postgresql_where=LAGGING, sqlite_where=LAGGING)


class ConversionSplit(db.Model):
    """One line of a conversion's split (CONTRACT §4/§5 ``splits``): ``party`` is
    ``"partner:<id>"`` or ``"agency"``; ``role`` converter, touch, recruiter or margin;
    ``amount_minor`` in the conversion's currency. The lines add up to the client fee."""

    __tablename__ = "conversion_splits"
    __table_args__ = (UniqueConstraint("conversion_id", "party", "role"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    conversion_id: Mapped[int] = mapped_column(ForeignKey("conversions.id"), index=True)
    party: Mapped[str] = mapped_column(String(40))
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    amount_minor: Mapped[int] = mapped_column(MinorUnits)
    rule: Mapped[str | None] = mapped_column(String(64))


class PostbackLog(db.Model):
    """Every postback, answered or refused (CONTRACT §3): what came in and what we said."""

    __tablename__ = "postback_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc, index=True)
    method: Mapped[str] = mapped_column(String(8))
    remote_ip: Mapped[str | None] = mapped_column(String(64))
    client_id: Mapped[int | None] = mapped_column(ForeignKey("clients.id"), index=True)
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id"), index=True)
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    http_status: Mapped[int] = mapped_column()
    outcome: Mapped[str] = mapped_column(String(32), index=True)
    conversion_id: Mapped[int | None] = mapped_column(ForeignKey("conversions.id"))
    message: Mapped[str | None] = mapped_column(Text)
    is_test: Mapped[bool] = mapped_column(default=False)  # the staff "send test postback" button
