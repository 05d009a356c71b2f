"""Commission rules beyond the campaign event's payout (issue 6, CONTRACT §4): partner tiers,
per-partner payout overrides, performance bonuses, vanity coupon requests and the tracking
number pool.

Payout priority (applied in this order, each later rule acting on the result of the earlier
ones, see :func:`partnernet.ledger.payout_rules.resolve_payout`): the campaign event's payout,
then the partner's tier, then a per-partner override on the campaign, then a performance bonus.
The rules in force when a conversion is recorded are the ones that pay it (CONTRACT v2 §4): they
are resolved then and stored on the conversion (``Conversion.payout_rule`` and ``terms_*``), so
creating, changing or deleting a tier, override or bonus changes only later conversions.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .base import MinorUnits, UTCDateTime, now_utc

COUPON_REQUEST_STATUSES = ("pending", "approved", "rejected")


class PartnerTier(db.Model):
    """A partner tier (``Partner.tier_id``), e.g. Silver, Gold. Either ``payout_percent``
    (replaces the event's payout with that percent of the client fee) or ``bonus_points``
    (adds that many percentage points; on a fixed payout, that percent of the client fee)."""

    __tablename__ = "partner_tiers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    payout_percent: Mapped[Decimal | None] = mapped_column(Numeric(9, 4))
    bonus_points: Mapped[Decimal | None] = mapped_column(Numeric(9, 4))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


class PartnerPayoutOverride(db.Model):
    """A per-partner payout on one campaign: ``payout_minor`` (fixed, minor units of the
    campaign's currency) or ``payout_percent`` (of the client fee). ``event_key`` None means
    every event of the campaign; an override for the exact event wins over the catch-all."""

    __tablename__ = "partner_payout_overrides"
    __table_args__ = (UniqueConstraint("campaign_id", "partner_id", "event_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    event_key: Mapped[str | None] = mapped_column(String(64))
    payout_minor: Mapped[int | None] = mapped_column(MinorUnits)
    payout_percent: Mapped[Decimal | None] = mapped_column(Numeric(9, 4))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


class PerformanceBonus(db.Model):
    """A performance bonus of a campaign (``event_key`` None: every event): once a partner has
    ``threshold`` approved conversions (of that event, on that campaign) in a UTC calendar
    month, the conversions of that month recorded after that get ``bonus_points`` more percentage
    points (counted when each is recorded: a later approval never lifts an earlier conversion)."""

    __tablename__ = "performance_bonuses"
    __table_args__ = (UniqueConstraint("campaign_id", "event_key", "threshold"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    event_key: Mapped[str | None] = mapped_column(String(64))
    threshold: Mapped[int] = mapped_column()
    bonus_points: Mapped[Decimal] = mapped_column(Numeric(9, 4))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


class CouponRequest(db.Model):
    """A partner's request for a vanity coupon code on one of its links; staff approve or
    reject it. ``code_lower`` is the code lower-cased (codes compare case-insensitively and are
    unique across the network: the approval writes ``Link.coupon_code_lower``, which is unique)."""

    __tablename__ = "coupon_requests"
    __table_args__ = (Index("ix_coupon_requests_code_lower", "code_lower"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    link_id: Mapped[int] = mapped_column(ForeignKey("links.id"), index=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    code: Mapped[str] = mapped_column(String(64))
    code_lower: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    note: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    link = relationship("Link")


class TrackingNumber(db.Model):
    """A call tracking number (E.164) in the pool. ``link_id`` is set once staff assign it to a
    link (the link's ``tracking_number`` then holds the same number)."""

    __tablename__ = "tracking_numbers"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)
    link_id: Mapped[int | None] = mapped_column(ForeignKey("links.id"), unique=True)
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
