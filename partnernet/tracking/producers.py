"""Exactly-once and loss detection for the click stream (issue: Redis is where a click lives between
the redirect and the database, so a loss must never be silent).

Each stream entry is one batch of one web process (:mod:`.batcher`): producer id ``p``, batch
number ``s`` (1, 2, 3, ...), the producer's running record count ``c`` after it, ``n`` records,
and, when earlier batches were written directly because Redis refused them, their numbers ``k``
and record count ``kn``; ``l`` counts records neither Redis nor the database took.

:func:`account` runs in the writer's transaction, before the records are written:

- an entry whose number is not above the producer's ``last_seq`` was written before (a writer
  crashed between its commit and its ``XACK``): it is skipped, so nothing is written twice;
- records the producer sent that never arrived: ``(c - n) - records_at_last_seq - kn`` > 0 is a
  ``gap`` (:class:`~partnernet.models.ClickLoss`), with the missing batch numbers;
- ``l`` > 0 is an ``unrecorded`` loss.

:func:`check_epoch` finds a Redis that lost its dataset: the writer keeps a random token in Redis
(:data:`EPOCH_KEY`) and in the database; a token missing from Redis is a ``redis_reset`` loss.
:func:`unreported_losses` is what ``flask drain`` reports (and exits non-zero for).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select, update

from ..clock import utcnow
from ..extensions import db
from ..models import ClickLoss, ClickProducer, ClickStreamEpoch

log = logging.getLogger(__name__)

EPOCH_KEY = "partnernet:{clicks}:epoch"


@dataclass
class Entry:
    """One parsed stream entry (see the module notes): ``records`` the click and impression dicts."""

    entry_id: bytes
    producer: str
    seq: int
    count: int
    n: int
    records: list
    skipped: tuple[int, ...] = ()
    skipped_records: int = 0
    lost: int = 0


def account(entries: list[Entry]) -> list[Entry]:
    """The entries to write, in order, after skipping those written before and recording the
    losses they reveal (see the module notes). Locks the producers' rows (``FOR UPDATE``) in
    the caller's transaction and moves them; the caller commits."""
    names = sorted({e.producer for e in entries})
    rows = {row.producer: row for row in db.session.scalars(
        select(ClickProducer).where(ClickProducer.producer.in_(names)).with_for_update())}
    now = utcnow()
    out: list[Entry] = []
    for e in entries:
        row = rows.get(e.producer)
        if row is None:
            row = rows[e.producer] = ClickProducer(producer=e.producer, last_seq=0, records=0,
                                                   first_seen=now, last_seen=now)
            db.session.add(row)
        if e.seq <= row.last_seq:
            continue  # written before: the writer stopped between its commit and its XACK
        missing_records = (e.count - e.n) - row.records - e.skipped_records
        if missing_records > 0:
            skipped = set(e.skipped)
            missing = [s for s in range(row.last_seq + 1, min(e.seq, row.last_seq + 10_001)) if s not in skipped]
            first = f"{missing[0]}" if missing else "?"
            last = f"{missing[-1]}" if missing else "?"
            db.session.add(ClickLoss(
                kind="gap", producer=e.producer, batches=max(len(missing), 1) if missing else 0,
                records=missing_records, found_at=now,
                detail=f"batches {first}..{last} of {e.producer} never reached the writer "
                       f"({missing_records} record(s))"))
            log.error("click stream gap: %s record(s) of %s (batches %s..%s) were lost",
                      missing_records, e.producer, first, last)
        if e.lost > 0:
            db.session.add(ClickLoss(kind="unrecorded", producer=e.producer, batches=0, records=e.lost,
                                     found_at=now, detail=f"{e.lost} record(s) of {e.producer} were refused by "
                                                          "Redis and the database"))
            log.error("%s click record(s) of %s were taken by neither Redis nor the database", e.lost, e.producer)
        row.last_seq, row.records, row.last_seen = e.seq, e.count, now
        out.append(e)
    return out


def check_epoch(r) -> bool:
    """Compare Redis's epoch token with the database's (see the module notes). Records a
    ``redis_reset`` loss and starts a new epoch when Redis lost its dataset; starts the first
    epoch on a new installation. Commits. Returns True when a reset was found. Raises redis
    and database errors."""
    token = r.get(EPOCH_KEY)
    token = token.decode() if isinstance(token, bytes) else token
    known = set(db.session.scalars(select(ClickStreamEpoch.token)))
    if token is not None and token in known:
        db.session.rollback()
        return False
    reset = token is None and bool(known)
    if reset:
        db.session.add(ClickLoss(
            kind="redis_reset", producer=None, batches=0, records=None, found_at=utcnow(),
            detail="Redis lost its data (its epoch key is gone): clicks and impressions it held are lost; "
                   "each web process's next batch shows how many of its own"))
        log.error("Redis lost its dataset: buffered clicks are lost (see flask drain)")
    if token is None:
        token = secrets.token_hex(16)
        if not r.set(EPOCH_KEY, token, nx=True):
            token = r.get(EPOCH_KEY).decode()
    db.session.execute(delete(ClickStreamEpoch))
    db.session.add(ClickStreamEpoch(token=token, created_at=utcnow()))
    db.session.commit()
    return reset


def unreported_losses(*, mark: bool = True) -> list[ClickLoss]:
    """Losses not reported yet, oldest first; with ``mark`` they are marked reported (commits)."""
    rows = list(db.session.scalars(select(ClickLoss).where(ClickLoss.reported_at.is_(None)).order_by(ClickLoss.id)))
    if rows and mark:
        db.session.execute(update(ClickLoss).where(ClickLoss.id.in_([x.id for x in rows]))
                           .values(reported_at=utcnow()))
        db.session.commit()
    return rows


def describe(losses: list[ClickLoss]) -> str:
    """One line for ``flask drain``: how many records were lost, and how."""
    known = sum(x.records or 0 for x in losses)
    resets = sum(1 for x in losses if x.kind == "redis_reset")
    parts = [f"{known} click/impression record(s) lost"]
    if resets:
        parts.append(f"Redis lost its data {resets} time(s) (count known once the web processes send again)")
    return "; ".join(parts) + ": " + " | ".join((x.detail or x.kind) for x in losses[:5])
