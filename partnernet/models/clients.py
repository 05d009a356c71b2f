"""Clients (advertisers), their campaigns and each campaign's events and pricing."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import JSON, ForeignKey, Numeric, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .base import MinorUnits, UTCDateTime, now_utc

ATTRIBUTION_MODELS = ("last_click", "first_click", "linear", "position_based")
CAMPAIGN_STATUSES = ("active", "paused")


class Client(db.Model):
    """An advertiser. ``postback_key`` names and (unless ``require_signature``) authenticates
    its postbacks; ``postback_secret`` keys their HMAC (CONTRACT §3). ``ip_allowlist`` is a
    comma-separated list of IPs or CIDR networks allowed to post (empty: any)."""

    __tablename__ = "clients"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    website_url: Mapped[str] = mapped_column(Text, default="")
    postback_key: Mapped[str] = mapped_column(String(64), unique=True)
    postback_secret: Mapped[str] = mapped_column(String(128))
    require_signature: Mapped[bool] = mapped_column(default=False)
    ip_allowlist: Mapped[str] = mapped_column(Text, default="")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)

    campaigns = relationship("Campaign", back_populates="client", order_by="Campaign.id")


class Campaign(db.Model):
    """An offer of one client. Money in ``*_minor`` integers of ``currency`` (the client's).

    ``budget_minor`` None = no budget. ``spent_minor`` is kept in step with the client
    fees of its conversions that are neither rejected nor reversed (CONTRACT §5 ``spent``),
    updated in the same transaction as the conversion, under a row lock.
    ``state_version`` rises on every change the redirect must see."""

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    destination_url: Mapped[str] = mapped_column(Text)
    fallback_url: Mapped[str | None] = mapped_column(Text)
    click_param: Mapped[str] = mapped_column(String(64), default="click_id")
    deep_link_hosts: Mapped[list] = mapped_column(JSON, default=list)
    attribution_window_days: Mapped[int] = mapped_column(default=30)
    hold_days: Mapped[int] = mapped_column(default=30)
    attribution_model: Mapped[str] = mapped_column(String(20), default="last_click")
    budget_minor: Mapped[int | None] = mapped_column(MinorUnits)
    spent_minor: Mapped[int] = mapped_column(MinorUnits, default=0)
    status: Mapped[str] = mapped_column(String(16), default="active")
    default_event: Mapped[str] = mapped_column(String(64))
    # Who may promote it (CONTRACT §5 (v2), the rule in partnernet.catalog.access): "public" (any
    # approved partner, at once), "approval" (an approved application; auto_approve_partners
    # approves applications at once) or "invite_only" (hidden; staff grant access).
    visibility: Mapped[str] = mapped_column(String(16), default="public", server_default="public")
    auto_approve_partners: Mapped[bool] = mapped_column(default=False, server_default="0")
    # Spend caps (issue 5), minor units of ``currency``, None = no cap: the client fees of live
    # conversions created in one local day / calendar month of the client's time zone.
    daily_cap_minor: Mapped[int | None] = mapped_column(MinorUnits)
    monthly_cap_minor: Mapped[int | None] = mapped_column(MinorUnits)
    # Set under the campaign lock when a cap is reached: clicks go to the fallback with reason
    # ``cap_reached_reason`` (over_daily_cap | over_monthly_cap) until ``cap_reached_until`` (UTC,
    # the next local midnight or month start). See partnernet.clients.caps.
    cap_reached_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cap_reached_reason: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc, onupdate=now_utc)

    client = relationship("Client", back_populates="campaigns")
    events = relationship("CampaignEvent", back_populates="campaign", order_by="CampaignEvent.id",
                          cascade="all, delete-orphan")

    def event(self, key: str) -> "CampaignEvent | None":
        """The event with ``key``, or None."""
        for ev in self.events:
            if ev.key == key:
                return ev
        return None

    @property
    def over_budget(self) -> bool:
        """True once spend has reached the budget (CONTRACT §1 fallback)."""
        return self.budget_minor is not None and self.spent_minor >= self.budget_minor


class CampaignEvent(db.Model):
    """One billable event of a campaign and its pricing.

    Client fee: ``client_fee_minor`` (fixed) or ``client_fee_percent`` (of the sale amount).
    Payout: ``payout_minor`` (fixed) or ``payout_percent`` (of the client fee). Exactly one
    of each pair is set (CONTRACT §5 ``POST /campaigns``)."""

    __tablename__ = "campaign_events"
    __table_args__ = (UniqueConstraint("campaign_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    key: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(200), default="")
    client_fee_minor: Mapped[int | None] = mapped_column(MinorUnits)
    client_fee_percent: Mapped[Decimal | None] = mapped_column(Numeric(9, 4))
    payout_minor: Mapped[int | None] = mapped_column(MinorUnits)
    payout_percent: Mapped[Decimal | None] = mapped_column(Numeric(9, 4))
    min_duration_s: Mapped[int | None] = mapped_column()
    min_amount_minor: Mapped[int | None] = mapped_column(MinorUnits)
    one_per_click: Mapped[bool] = mapped_column(default=False)
    # Recurring commissions (CONTRACT v2 §3): months a bound customer's later postbacks are credited
    # to its link (0: not recurring; None: for the customer's lifetime).
    recurring_months: Mapped[int | None] = mapped_column(default=0, server_default="0")

    campaign = relationship("Campaign", back_populates="events")
