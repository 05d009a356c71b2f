"""Clicks and the hourly traffic rollups that reports read."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import BigId, UTCDateTime, now_utc

FALLBACK_REASONS = ("paused", "over_budget", "partner_suspended", "partner_not_approved",
                    "over_daily_cap", "over_monthly_cap")
# Why a click is a bot click (Click.flag): a non-navigation load (v2), or a bot agent / HEAD.
CLICK_FLAGS = ("non_navigation", "bot")


class Click(db.Model):
    """One redirect through a tracking link (CONTRACT §1).

    ``click_id`` is the signed public ID (:class:`partnernet.signing.ClickIdSigner`).
    ``visitor`` is the signed visitor cookie's id, else a keyed hash of IP and user agent
    (:mod:`partnernet.tracking.visitor`).
    ``fallback_reason`` is set (paused, over_budget, partner_suspended) when the visitor
    went to the fallback; such a click, like a bot click, is never billable.
    ``is_bot`` marks every click that is never unique, never billable, never a touch and whose
    conversions are rejected ``bot_click``; ``flag`` says why (:data:`CLICK_FLAGS`):
    ``non_navigation`` (v2: ``Sec-Fetch-Dest`` present and not ``document``, an ``<img>`` or
    ``<iframe>`` load) or ``bot`` (a bot agent, no agent, ``HEAD``); None for human clicks and
    for clicks recorded before the column existed.
    ``partner_id`` and ``campaign_id`` are copied from the link for reporting."""

    __tablename__ = "clicks"
    __table_args__ = (
        Index("ix_clicks_link_visitor_created", "link_id", "visitor", "created_at"),
        Index("ix_clicks_campaign_visitor_created", "campaign_id", "visitor", "created_at"),
        Index("ix_clicks_campaign_ip_created", "campaign_id", "ip", "created_at"),  # fraud flag ip_flood
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    click_id: Mapped[str] = mapped_column(String(40), unique=True)
    link_id: Mapped[int] = mapped_column(ForeignKey("links.id"))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc, index=True)
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(Text)
    referer: Mapped[str | None] = mapped_column(Text)
    visitor: Mapped[str] = mapped_column(String(64))
    sub1: Mapped[str | None] = mapped_column(String(255))
    sub2: Mapped[str | None] = mapped_column(String(255))
    sub3: Mapped[str | None] = mapped_column(String(255))
    sub4: Mapped[str | None] = mapped_column(String(255))
    sub5: Mapped[str | None] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(8), default="GET")
    is_bot: Mapped[bool] = mapped_column(default=False)
    is_unique: Mapped[bool] = mapped_column(default=False)
    flag: Mapped[str | None] = mapped_column(String(32))
    fallback_reason: Mapped[str | None] = mapped_column(String(32))
    destination: Mapped[str | None] = mapped_column(Text)


class TrafficCounts:
    """The traffic measures every traffic rollup carries (mixin): clicks, unique clicks, bot and
    fallback clicks, impressions and bot impressions."""

    clicks: Mapped[int] = mapped_column(default=0)
    unique_clicks: Mapped[int] = mapped_column(default=0)
    bot_clicks: Mapped[int] = mapped_column(default=0)
    fallback_clicks: Mapped[int] = mapped_column(default=0)
    impressions: Mapped[int] = mapped_column(default=0)
    bot_impressions: Mapped[int] = mapped_column(default=0)


class TrafficRollup(TrafficCounts, db.Model):
    """Hourly traffic counts per link and ``sub1`` (``""`` for none), kept in step with the
    clicks and impressions as they are written. Reports read these, never raw clicks.
    ``hour`` is the UTC hour start."""

    __tablename__ = "traffic_rollups"
    __table_args__ = (UniqueConstraint("hour", "link_id", "sub1"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime)
    link_id: Mapped[int] = mapped_column(ForeignKey("links.id"), index=True)
    sub1: Mapped[str] = mapped_column(String(255), default="")


class LinkCounter(db.Model):
    """Running counts per link that billing needs: billable impressions counted so far
    (non-bot, not in fallback, the first of a visitor in its hour: :class:`ImpressionVisit`);
    every 1,000th becomes an ``impression`` conversion (CONTRACT §2, §5)."""

    __tablename__ = "link_counters"

    link_id: Mapped[int] = mapped_column(ForeignKey("links.id"), primary_key=True)
    impressions: Mapped[int] = mapped_column(default=0)


class BufferBatch(db.Model):
    """One batch of buffered clicks and impressions written from the Redis buffer
    (:func:`partnernet.tracking.buffer.flush_clicks`). Inserted in the batch's own
    transaction, so a batch re-read after a crash between the commit and the removal of
    its Redis copy is recognised and not counted twice (clicks are also protected by the
    unique ``click_id``; impressions only by this row). Rows older than two days are pruned."""

    __tablename__ = "buffer_batches"

    batch_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    written_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc, index=True)


class ImpressionVisit(db.Model):
    """A visitor's billable impression on a link in one UTC hour (CONTRACT §2, v2): the row is
    inserted with ``ON CONFLICT DO NOTHING`` by :func:`partnernet.tracking.buffer.write_records`,
    and only the impression whose insert took effect is billed, so the primary key enforces
    "once per visitor, link and hour" on every write path and under concurrency.

    ``key`` is ``"<link_id>:<YYYYMMDDHH>:<visitor>"`` (at most 10 + 1 + 10 + 1 + 64
    characters); ``hour`` the UTC hour start, for pruning (rows older than two days go)."""

    __tablename__ = "impression_visits"

    key: Mapped[str] = mapped_column(String(96), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
