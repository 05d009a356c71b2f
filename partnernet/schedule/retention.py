"""Retention: the daily task that deletes rows nobody needs any more (CONTRACT v2 §6).

What goes, with its setting (days, from the app config or the environment; 0 keeps for ever):

| rows | rule | setting, default |
|---|---|---|
| ``postback_log`` | received before the cut-off | ``PARTNERNET_RETAIN_POSTBACK_LOG_DAYS``, 90 |
| ``partner_postback_deliveries`` | delivered or failed, created before the cut-off | ``PARTNERNET_RETAIN_DELIVERIES_DAYS``, 90 |
| ``outbox_emails`` | sent or failed for good, created before the cut-off | ``PARTNERNET_RETAIN_EMAIL_DAYS``, 90 |
| ``schedule_runs`` | finished task runs due before the cut-off (per-client and per-currency runs: 400 days) | ``PARTNERNET_RETAIN_RUNS_DAYS``, 14 |
| ``buffer_batches``, ``impression_visits`` | older than two days (their use ends then) | fixed |
| ``login_throttles`` | windows that are over | fixed |

Each table is deleted in chunks of :data:`CHUNK` rows, each chunk its own transaction, so a
large backlog never holds locks for long. The audit log, conversions, the ledger and invoices
are never pruned.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select

from ..extensions import db
from ..models import BufferBatch, OutboxEmail, PartnerPostbackDelivery, PostbackLog, ScheduleRun
from ..models.tracking import ImpressionVisit
from .jobs import setting

CHUNK = 5000
#: Runs of per-client and per-currency work (``task:...``) guard a month or a payout day: kept long.
ITEM_RUNS_KEEP = timedelta(days=400)
MARKERS_KEEP = timedelta(days=2)


def _chunked(model, key, where) -> int:
    """Delete the rows of ``model`` matching ``where`` in chunks (by primary key ``key``)."""
    total = 0
    while True:
        ids = db.session.scalars(select(key).where(where).limit(CHUNK)).all()
        if not ids:
            db.session.commit()
            return total
        db.session.execute(delete(model).where(key.in_(ids)).execution_options(synchronize_session=False))
        db.session.commit()
        total += len(ids)


def _days(name: str, default: int) -> int:
    return max(0, setting(name, default))


def prune(now: datetime) -> str:
    """Delete what the table in the module docstring says, as of ``now`` (aware UTC). Returns
    a summary of the counts, e.g. ``"postback_log 12, deliveries 0, ..."``."""
    from ..auth.throttle import prune as prune_throttles

    counts: dict[str, int] = {}
    days = _days("PARTNERNET_RETAIN_POSTBACK_LOG_DAYS", 90)
    if days:
        counts["postback_log"] = _chunked(PostbackLog, PostbackLog.id,
                                          PostbackLog.received_at < now - timedelta(days=days))
    days = _days("PARTNERNET_RETAIN_DELIVERIES_DAYS", 90)
    if days:
        counts["deliveries"] = _chunked(
            PartnerPostbackDelivery, PartnerPostbackDelivery.id,
            PartnerPostbackDelivery.status.in_(("delivered", "failed"))
            & (PartnerPostbackDelivery.created_at < now - timedelta(days=days)))
    days = _days("PARTNERNET_RETAIN_EMAIL_DAYS", 90)
    if days:
        counts["emails"] = _chunked(
            OutboxEmail, OutboxEmail.id,
            or_(OutboxEmail.sent_at.is_not(None), OutboxEmail.failed_at.is_not(None))
            & (OutboxEmail.created_at < now - timedelta(days=days)))
    days = _days("PARTNERNET_RETAIN_RUNS_DAYS", 14)
    if days:
        finished = ScheduleRun.status != "running"
        counts["runs"] = _chunked(ScheduleRun, ScheduleRun.id, finished & or_(
            ~ScheduleRun.task.contains(":") & (ScheduleRun.due_at < now - timedelta(days=days)),
            ScheduleRun.task.contains(":") & (ScheduleRun.due_at < now - ITEM_RUNS_KEEP)))
    counts["buffer_batches"] = _chunked(BufferBatch, BufferBatch.batch_id, BufferBatch.written_at < now - MARKERS_KEEP)
    counts["impression_visits"] = _chunked(ImpressionVisit, ImpressionVisit.key, ImpressionVisit.hour < now - MARKERS_KEEP)
    prune_throttles(now)
    return ", ".join(f"{k} {v}" for k, v in counts.items())
