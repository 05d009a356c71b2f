"""Spend alerts to a client: a campaign's spend at 80% and at 100% of its budget, and a daily or
monthly spend cap reached (CONTRACT §6 email; caps: :mod:`partnernet.clients.caps`).

Where: :func:`check_spend_alerts` runs at the end of every split job
(:func:`partnernet.ledger.tasks.sync_lagging_job`), which every change of spend asks for after
its commit (a new live conversion, a rejection, a reversal; click conversions included). So an
alert leaves within a job's lag of the conversion that crossed the line, and the postback path
does no extra work. A budget lowered by staff below the spend alerts with the next split job.

Once: each alert is a :class:`~partnernet.models.SpendAlert` row, unique per (campaign, kind,
mark), written with ``INSERT … ON CONFLICT DO NOTHING``: the budget alerts once per budget value
(mark = the budget in minor units; a new budget can alert again), a cap once per window (mark =
the window's end). Spend that falls back under a line and crosses it again does not alert twice.
When spend jumps past 100% at once, only the 100% email is sent (the 80% one is recorded as
passed). The recipients are the client's active client users; with none, the alert is recorded
and nothing is sent.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import String, and_, cast, exists, select
from sqlalchemy.dialects import postgresql, sqlite

from ..clock import utcnow
from ..extensions import db
from ..models import Campaign, User
from ..models.portal import SpendAlert
from . import messages
from .outbox import queue_email

log = logging.getLogger(__name__)

BUDGET_LINES = ((100, messages.BUDGET_100), (80, messages.BUDGET_80))  # highest first
_INSERTS = {
    name: dialect_insert(SpendAlert.__table__).on_conflict_do_nothing(
        index_elements=["campaign_id", "kind", "mark"]).returning(SpendAlert.__table__.c.id)
    for name, dialect_insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}


def _record(campaign_id: int, kind: str, mark: str, now: datetime) -> bool:
    """Write the alert row; True when this call wrote it (False: it existed)."""
    stmt = _INSERTS[db.session.get_bind().dialect.name]
    new_id = db.session.execute(stmt, {"campaign_id": campaign_id, "kind": kind, "mark": mark,
                                       "created_at": now}).scalar()
    return new_id is not None


def client_recipients(client_id: int) -> list[str]:
    """Login emails of the client's active client users, in id order."""
    return list(db.session.scalars(select(User.email).where(
        User.client_id == client_id, User.role == "client", User.active.is_(True)).order_by(User.id)))


def _send(client_id: int, subject: str, body: str, kind: str) -> int:
    to = client_recipients(client_id)
    for addr in to:
        queue_email(addr, subject, body, kind=kind)
    return len(to)


def _budget_alerts(now: datetime) -> int:
    queued = 0
    for percent, kind in BUDGET_LINES:
        already = exists().where(and_(SpendAlert.campaign_id == Campaign.id, SpendAlert.kind == kind,
                                      SpendAlert.mark == cast(Campaign.budget_minor, String)))
        rows = db.session.execute(
            select(Campaign.id, Campaign.client_id, Campaign.name, Campaign.currency, Campaign.spent_minor,
                   Campaign.budget_minor)
            .where(Campaign.budget_minor.is_not(None), Campaign.budget_minor > 0,
                   Campaign.spent_minor * 100 >= Campaign.budget_minor * percent, ~already)
            .order_by(Campaign.id)
        ).all()
        for cid, client_id, name, currency, spent, budget in rows:
            mark = str(int(budget))
            if not _record(cid, kind, mark, now):
                continue
            lower_new = [_record(cid, k, mark, now) for p, k in BUDGET_LINES if p < percent]
            subject, body = messages.budget_reached(percent, name, int(spent), int(budget), currency)
            queued += _send(client_id, subject, body, kind)
            log.info("campaign %s: %s%% of its budget reached (%s lower alert(s) passed)", cid, percent,
                     sum(lower_new))
    return queued


def _cap_alerts(now: datetime) -> int:
    from ..clients.caps import client_zone

    queued = 0
    capped = db.session.scalars(
        select(Campaign).where(Campaign.cap_reached_reason.is_not(None), Campaign.cap_reached_until > now)
        .order_by(Campaign.id)).all()
    for camp in capped:
        until = camp.cap_reached_until.astimezone(UTC)
        if not _record(camp.id, camp.cap_reached_reason, until.isoformat(), now):
            continue
        daily = camp.cap_reached_reason == "over_daily_cap"
        local = until.astimezone(client_zone(camp))
        cap = camp.daily_cap_minor if daily else camp.monthly_cap_minor
        subject, body = messages.cap_reached(camp.name, "daily" if daily else "monthly", cap, camp.currency,
                                             local.strftime("%Y-%m-%d %H:%M ") + (local.tzname() or "UTC"))
        queued += _send(camp.client_id, subject, body, messages.CAP_REACHED)
        log.info("campaign %s: %s until %s", camp.id, camp.cap_reached_reason, until.isoformat())
    return queued


def check_spend_alerts(now: datetime | None = None) -> int:
    """Record and queue every spend alert due (module docstring) and commit. Returns how many
    emails were queued. Never raises: a failure is logged and rolled back (the next split job
    looks again), so it never fails the split job that runs it."""
    now = now or utcnow()
    try:
        queued = _budget_alerts(now) + _cap_alerts(now)
        db.session.commit()
        return queued
    except Exception:  # noqa: BLE001 - alerts must not fail the ledger work that ran before
        log.exception("spend alerts check failed; the next split job tries again")
        db.session.rollback()
        return 0
