"""Bookkeeping of the click stream (ARCHITECTURE, the hot path): which batches each web process
sent, which Redis dataset the writer reads, and every loss found (issue: no silent loss).

Written by the click writer (:mod:`partnernet.tracking.producers`) in the same transaction as
the clicks of the batches it accounts for, so a batch is counted exactly once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import BigId, UTCDateTime, now_utc

LOSS_KINDS = ("gap", "unrecorded", "redis_reset")


class ClickProducer(db.Model):
    """One web process that sent clicks to the stream (:class:`partnernet.tracking.batcher.ClickBatcher`):
    ``producer`` its id (host, pid and a random part), ``last_seq`` the number of its last batch
    written, ``records`` its running count of records at that batch."""

    __tablename__ = "click_producers"

    producer: Mapped[str] = mapped_column(String(80), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    records: Mapped[int] = mapped_column(BigInteger, default=0)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc, index=True)


class ClickStreamEpoch(db.Model):
    """The token the writer put in Redis (:data:`partnernet.tracking.producers.EPOCH_KEY`). When
    Redis no longer holds it, Redis lost its dataset (restarted without persistence, flushed,
    failed over to an empty replica) and whatever it held then is lost: a ``redis_reset`` loss."""

    __tablename__ = "click_stream_epochs"

    token: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


class ClickLoss(db.Model):
    """Clicks or impressions answered but never written, as found by the writer:

    - ``gap``: batches of ``producer`` that were sent to Redis and never reached the writer
      (``batches`` how many, ``records`` how many records they held);
    - ``unrecorded``: records neither Redis nor the database took when they were sent;
    - ``redis_reset``: Redis lost its dataset (``records`` unknown: None); the gaps the web
      processes' next batches show give the counts.

    ``reported_at``: when ``flask drain`` reported it (it exits non-zero once per loss)."""

    __tablename__ = "click_losses"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    found_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    producer: Mapped[str | None] = mapped_column(String(80))
    batches: Mapped[int] = mapped_column(BigInteger, default=0)
    records: Mapped[int | None] = mapped_column(BigInteger)
    detail: Mapped[str | None] = mapped_column(Text)
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
