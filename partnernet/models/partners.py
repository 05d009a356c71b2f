"""Partners (affiliates and influencers) and their links."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Numeric, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .base import UTCDateTime, now_utc

PARTNER_KINDS = ("affiliate", "influencer")
PARTNER_STATUSES = ("pending", "approved", "rejected", "suspended")
#: How a partner is paid (CONTRACT v2 §5): PayPal, or a bank (credit) transfer to its IBAN.
PAYOUT_METHODS = ("paypal", "bank")
CHANNELS = ("search", "social", "influencer", "display", "native", "affiliate", "email", "content")


class Partner(db.Model):
    """An affiliate or influencer. Only ``approved`` partners have working links (CONTRACT §1).
    ``recruiter_id``/``recruiter_percent``: the sub-affiliate tier (CONTRACT §4 override)."""

    __tablename__ = "partners"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    recruiter_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"), index=True)
    recruiter_percent: Mapped[Decimal | None] = mapped_column(Numeric(9, 4))
    # Second recruiter tier (issue 6): the percent that this partner's own recruiter earns on the
    # amounts of the partners this partner recruited (paid from the margin, after the first tier).
    tier2_percent: Mapped[Decimal | None] = mapped_column(Numeric(9, 4))
    # Partner tier (issue 6 payout priority), see models.commission.PartnerTier.
    tier_id: Mapped[int | None] = mapped_column(ForeignKey("partner_tiers.id"), index=True)
    # Payout details (CONTRACT v2 §5, checked in partnernet.payouts.details): the method
    # ("paypal" | "bank", see PAYOUT_METHODS), the PayPal address (else the partner's email), and
    # for a bank transfer the IBAN and BIC (compact, upper case) and the account holder's name.
    payout_email: Mapped[str | None] = mapped_column(String(254))
    payout_method: Mapped[str] = mapped_column(String(16), default="paypal", server_default="paypal")
    iban: Mapped[str | None] = mapped_column(String(34))
    bic: Mapped[str | None] = mapped_column(String(11))
    account_holder: Mapped[str | None] = mapped_column(String(70))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc, onupdate=now_utc)

    recruiter = relationship("Partner", remote_side=[id])


class Link(db.Model):
    """One partner's assignment to one campaign: the tracking URL (token = signed ``id``),
    optionally a coupon code (unique, compared lower-case via ``coupon_code_lower``) and a
    tracking phone number (E.164, unique)."""

    __tablename__ = "links"

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    channel: Mapped[str | None] = mapped_column(String(32))
    deep_link: Mapped[str | None] = mapped_column(Text)
    coupon_code: Mapped[str | None] = mapped_column(String(64))
    coupon_code_lower: Mapped[str | None] = mapped_column(String(64), unique=True)
    tracking_number: Mapped[str | None] = mapped_column(String(20), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)

    partner = relationship("Partner")
    campaign = relationship("Campaign")
