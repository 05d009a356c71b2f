"""Customer bindings: which link a paying customer belongs to, for recurring commissions (CONTRACT v2 §3)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import BigId, UTCDateTime, now_utc


class CustomerBinding(db.Model):
    """The link a customer (the advertiser's ``customer_id``) is bound to on one campaign.

    Written once, by the first conversion that is not rejected and carries the ``customer_id``
    (``INSERT … ON CONFLICT DO NOTHING`` on (campaign, customer): concurrent first postbacks bind
    once, and nothing ever rebinds it). Later postbacks of a recurring event that name only the
    customer are credited to ``link_id`` while ``bound_at`` is younger than the event's
    ``recurring_months`` (:mod:`partnernet.postbacks.customers`)."""

    __tablename__ = "customer_bindings"
    # customer_id first: the same index serves the lookup of a customer across a client's campaigns.
    __table_args__ = (UniqueConstraint("customer_id", "campaign_id", name="uq_customer_bindings_customer_campaign"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    customer_id: Mapped[str] = mapped_column(String(255))
    link_id: Mapped[int] = mapped_column(ForeignKey("links.id"), index=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    bound_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    conversion_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("conversions.id"))
