"""Clicks and the hourly traffic rollups that reports read."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import ClassVar

from sqlalchemy import ForeignKey, Index, PrimaryKeyConstraint, String, Text, UniqueConstraint, event, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped, mapped_column

from ..clock import utcnow
from ..extensions import db
from .base import BigId, UTCDateTime, now_utc

FALLBACK_REASONS = ("paused", "over_budget", "partner_suspended", "partner_not_approved",
                    "over_daily_cap", "over_monthly_cap")
# Why a click is a bot click (Click.flag): a non-navigation load (v2), or a bot agent / HEAD.
CLICK_FLAGS = ("non_navigation", "bot")
#: Monthly partitions of ``clicks`` made ahead of time on PostgreSQL: this month and this many more.
PARTITION_MONTHS_AHEAD = 2
#: The partition that takes a click whose month has no partition yet (PostgreSQL).
DEFAULT_PARTITION = "clicks_default"


class PartitionKeyPrimaryKey(PrimaryKeyConstraint):
    """A primary key that also holds the partition key on PostgreSQL, where a unique index of a
    partitioned table must include it: ``PRIMARY KEY (id, created_at)`` there, ``PRIMARY KEY (id)``
    elsewhere (on SQLite ``id`` stays the rowid alias, numbered by the database). The ORM knows
    the row by ``id`` alone, which the sequence keeps unique on both."""

    def __init__(self, *columns: str, partition_columns: tuple[str, ...], **kw):
        super().__init__(*columns, **kw)
        self.partition_columns = partition_columns


@compiles(PartitionKeyPrimaryKey, "postgresql")
def _pk_with_partition_key(constraint, compiler, **kw):
    quote = compiler.preparer.quote
    names = [c.name for c in constraint.columns] + [n for n in constraint.partition_columns
                                                    if n not in constraint.columns]
    return (f"CONSTRAINT {compiler.preparer.format_constraint(constraint)} "
            f"PRIMARY KEY ({', '.join(quote(n) for n in names)})")


def month_start(day: date) -> datetime:
    """The first instant (aware UTC) of ``day``'s month."""
    return datetime(day.year, day.month, 1, tzinfo=UTC)


def add_months(start: datetime, months: int) -> datetime:
    """``start`` (a month start) moved by ``months`` (may be negative), still a month start."""
    index = start.year * 12 + start.month - 1 + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(start: datetime) -> str:
    """``clicks_yYYYYmMM``: the name of the partition of the month starting at ``start``."""
    return f"clicks_y{start.year:04d}m{start.month:02d}"


def partition_ddl(start: datetime) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of the partition of ``start``'s month (PostgreSQL), its
    range ``[start, next month start)`` in UTC. Only for a month with no rows in the default
    partition (else :func:`partnernet.tracking.partitions.ensure_partitions` moves them first)."""
    end = add_months(start, 1)
    return (f"CREATE TABLE IF NOT EXISTS {partition_name(start)} PARTITION OF clicks "
            f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')")


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
    ``partner_id`` and ``campaign_id`` are copied from the link for reporting.

    On PostgreSQL the table is partitioned by month of ``created_at`` (``clicks_yYYYYmMM``, plus
    ``clicks_default`` for a month not made yet; :mod:`partnernet.tracking.partitions`), so the
    primary key is ``(id, created_at)`` there and the click ID is unique with its ``created_at``
    (:attr:`CONFLICT_COLUMNS`, the same index on SQLite, where the table is a plain one)."""

    __tablename__ = "clicks"
    #: The columns of the unique index an ``INSERT ... ON CONFLICT`` of clicks names (both dialects).
    CONFLICT_COLUMNS: ClassVar[tuple[str, ...]] = ("click_id", "created_at")
    __table_args__ = (
        PartitionKeyPrimaryKey("id", partition_columns=("created_at",), name="pk_clicks"),
        Index("uq_clicks_click_id_created_at", *CONFLICT_COLUMNS, unique=True),
        Index("ix_clicks_link_visitor_created", "link_id", "visitor", "created_at"),
        Index("ix_clicks_campaign_visitor_created", "campaign_id", "visitor", "created_at"),
        Index("ix_clicks_campaign_ip_created", "campaign_id", "ip", "created_at"),  # fraud flag ip_flood
        {"postgresql_partition_by": "RANGE (created_at)"},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    click_id: Mapped[str] = mapped_column(String(40))
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


@event.listens_for(Click.__table__, "after_create")
def _first_partitions(target, connection, **kw) -> None:
    """Right after ``CREATE TABLE clicks`` on PostgreSQL (``db.create_all()``): the default
    partition, this month's and the next :data:`PARTITION_MONTHS_AHEAD` months' partitions."""
    if connection.dialect.name != "postgresql":
        return
    connection.execute(text(f"CREATE TABLE IF NOT EXISTS {DEFAULT_PARTITION} PARTITION OF clicks DEFAULT"))
    start = month_start(utcnow())
    for ahead in range(PARTITION_MONTHS_AHEAD + 1):
        connection.execute(text(partition_ddl(add_months(start, ahead))))


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
