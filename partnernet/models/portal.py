"""Partner portal tables: sign-up profile, email outbox and spend alerts, campaign applications,
partner postbacks."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .base import BigId, UTCDateTime, now_utc

APPLICATION_STATUSES = ("pending", "approved", "rejected")
PARTNER_POSTBACK_EVENTS = ("recorded", "approved", "rejected", "reversed", "test")


class PartnerProfile(db.Model):
    """What a partner told us at sign-up and keeps in its profile (one row per partner).

    The payout details live on ``Partner`` (``payout_method``, ``payout_email``, ``iban``, ``bic``,
    ``account_holder``). ``timezone`` is an
    IANA name used for the partner's dates and daily chart. ``email_confirmed_at`` is set by
    the confirmation link (single use: a confirmed email refuses the token)."""

    __tablename__ = "partner_profiles"

    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), primary_key=True)
    website: Mapped[str] = mapped_column(Text, default="")
    social_handles: Mapped[str] = mapped_column(Text, default="")
    audience_size: Mapped[int | None] = mapped_column()
    channels: Mapped[list] = mapped_column(JSON, default=list)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    terms_accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    email_confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


class OutboxEmail(db.Model):
    """An email we send (see :mod:`partnernet.mail`). Every email is kept here; with SMTP
    configured a job sends it after commit and sets ``sent_at``; without SMTP it stays unsent.

    ``claimed_at``: a sender took the row (an atomic conditional UPDATE; a claim older than
    ``partnernet.mail.outbox.CLAIM_TTL_S`` counts as abandoned). ``attempts`` counts the tries,
    ``error`` says why the last one failed, ``failed_at`` is set when the SMTP server refused the
    message for good (a 5xx answer): it is never tried again. ``message_id`` is the Message-ID
    header, fixed when the row is written, so every try sends the same one. The body of a row
    that carries a sign-in link (confirmation, password reset) is replaced once it is sent."""

    __tablename__ = "outbox_emails"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    to_addr: Mapped[str] = mapped_column(String(254), index=True)
    subject: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc, index=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SpendAlert(db.Model):
    """A spend alert emailed to a client (:mod:`partnernet.mail.alerts`), one row per
    (campaign, kind, mark): ``kind`` ``budget_80`` / ``budget_100`` with ``mark`` the budget in
    minor units it was reached for (a new budget value can alert again), or ``over_daily_cap`` /
    ``over_monthly_cap`` with ``mark`` the end of the cap's window (ISO 8601 UTC). The unique
    constraint makes each alert happen once, however many jobs look at the same time."""

    __tablename__ = "spend_alerts"
    __table_args__ = (UniqueConstraint("campaign_id", "kind", "mark"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    kind: Mapped[str] = mapped_column(String(32))
    mark: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


class CampaignApplication(db.Model):
    """A partner's access to a campaign (CONTRACT §5 (v2)): its application, ``pending`` until
    staff decide or ``approved`` at once when the campaign auto-approves partners; a staff grant
    or invitation is an ``approved`` one; ``rejected`` keeps the partner off the campaign (a
    public one too). One per (partner, campaign). See :mod:`partnernet.catalog.access`."""

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
