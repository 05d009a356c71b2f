"""Partner portal tables: sign-up profile, email outbox, campaign applications, partner postbacks."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .base import BigId, UTCDateTime, now_utc

APPLICATION_STATUSES = ("pending", "approved", "rejected")
PAYOUT_METHODS = ("paypal", "iban")
PARTNER_POSTBACK_EVENTS = ("recorded", "approved", "rejected", "reversed", "test")


class PartnerProfile(db.Model):
    """What a partner told us at sign-up and keeps in its profile (one row per partner).

    ``payout_method`` is ``paypal`` (the address is ``Partner.payout_email``) or ``iban``
    (``payout_iban``, stored without spaces, upper-case, mod-97 checked). ``timezone`` is an
    IANA name used for the partner's dates and daily chart. ``email_confirmed_at`` is set by
    the confirmation link (single use: a confirmed email refuses the token)."""

    __tablename__ = "partner_profiles"

    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), primary_key=True)
    website: Mapped[str] = mapped_column(Text, default="")
    social_handles: Mapped[str] = mapped_column(Text, default="")
    audience_size: Mapped[int | None] = mapped_column()
    channels: Mapped[list] = mapped_column(JSON, default=list)
    payout_method: Mapped[str | None] = mapped_column(String(16))
    payout_iban: Mapped[str | None] = mapped_column(String(34))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    terms_accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    email_confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


class OutboxEmail(db.Model):
    """An email we send (confirmation, password reset, status news). Every email is kept here;
    with SMTP configured a job sends it and sets ``sent_at``, without it only the log shows it."""

    __tablename__ = "outbox_emails"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    to_addr: Mapped[str] = mapped_column(String(254), index=True)
    subject: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc, index=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)


class CampaignApplication(db.Model):
    """A partner's request to promote a campaign: ``pending`` until staff decides, or
    ``approved`` at once when the campaign auto-approves partners. One per (partner, campaign)."""

    __tablename__ = "campaign_applications"
    __table_args__ = (UniqueConstraint("partner_id", "campaign_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    message: Mapped[str] = mapped_column(Text, default="")
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    partner = relationship("Partner")
    campaign = relationship("Campaign")


class PartnerPostback(db.Model):
    """A partner's own postback URL: global (``campaign_id`` None) or for one campaign (which
    wins over the global one). Macros: {click_id} {sub1}..{sub5} {event} {txn_id} {status}
    {payout} {currency}."""

    __tablename__ = "partner_postbacks"
    __table_args__ = (UniqueConstraint("partner_id", "campaign_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id"))
    url: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


class PartnerPostbackDelivery(db.Model):
    """One partner postback to deliver: ``status`` pending → delivered, or failed after the last
    retry. ``attempts`` counts the tries; ``last_status`` is the receiver's HTTP status (None
    when it could not be reached), ``last_error`` why it failed. ``conversion_id`` is None for
    a test. Unique per (conversion, conversion status): each change is sent once."""

    __tablename__ = "partner_postback_deliveries"
    __table_args__ = (
        UniqueConstraint("conversion_id", "trigger"),
        Index("ix_ppd_partner_created", "partner_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    conversion_id: Mapped[int | None] = mapped_column(ForeignKey("conversions.id"))
    trigger: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    last_status: Mapped[int | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
