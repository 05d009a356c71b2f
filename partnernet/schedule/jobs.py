"""The small periodic tasks of :data:`partnernet.schedule.tasks.TASKS`: each takes ``now`` (aware
UTC) and returns a one-line summary. They call the services that own the work."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import select

from .. import queue
from ..extensions import db
from ..models import PartnerPostbackDelivery

#: Partner postback deliveries looked at per run.
POSTBACK_SWEEP_LIMIT = 500


def setting(name: str, default, cast=int):
    """``name`` from the app config, else the environment, else ``default``; cast with ``cast``.
    A value that does not cast gives ``default`` (the schedule never stops on a typo)."""
    raw = current_app.config.get(name)
    if raw is None:
        raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except (TypeError, ValueError):
        return default


def approve_matured(now: datetime) -> str:
    """Approve every pending, unflagged conversion whose hold period ended by ``now``
    (:func:`partnernet.conversions.review.approve_matured`; CONTRACT v2 §6, flagged ones excepted)."""
    from ..conversions.review import approve_matured as approve

    return f"approved {approve(now)} conversion(s)"


def requeue_stuck(now: datetime) -> str:
    """Queue the split job again when conversions' ledger lags their status
    (:func:`partnernet.ledger.services.requeue_stuck`)."""
    from ..ledger.services import requeue_stuck as requeue

    n = requeue()
    return f"{n} conversion(s) lagged; split job queued" if n else "nothing lagged"


def postback_next_try(created_at: datetime, attempts: int, backoff_s: float) -> datetime:
    """PURE: when try ``attempts + 1`` of a partner postback delivery is due. Tries follow each
    other after ``backoff × 2^(n-1)`` seconds (:func:`partnernet.partners.postbacks.deliver_job`),
    so try n+1 is due ``backoff × (2^n − 1)`` seconds after the delivery was created; the first
    try (``attempts`` 0) at once."""
    return created_at + timedelta(seconds=backoff_s * (2 ** max(attempts, 0) - 1))


def retry_partner_postbacks(now: datetime) -> str:
    """Send again every pending partner postback delivery whose next try is overdue
    (:func:`postback_next_try`), by queueing its delivery job. With Redis, RQ's own scheduled
    retry normally comes first; this catches a try lost with Redis, and is the only retry in
    the embedded mode. A try queued here and one sent by RQ at once are counted apart by the
    delivery row (it is locked and re-read by each try). Returns how many were queued."""
    from ..partners import postbacks

    backoff = setting("PARTNERNET_PARTNER_POSTBACK_BACKOFF_S", 30.0, float)
    max_tries = setting("PARTNERNET_PARTNER_POSTBACK_ATTEMPTS", 5)
    grace = timedelta(seconds=max(60.0, backoff) if queue.redis_url() else 0)
    rows = db.session.execute(
        select(PartnerPostbackDelivery.id, PartnerPostbackDelivery.created_at, PartnerPostbackDelivery.attempts)
        .where(PartnerPostbackDelivery.status == "pending", PartnerPostbackDelivery.attempts < max_tries)
        .order_by(PartnerPostbackDelivery.id).limit(POSTBACK_SWEEP_LIMIT)).all()
    due = [(did, n) for did, created, n in rows if postback_next_try(created, n, backoff) + grace <= now]
    for did, n in due:
        queue.enqueue(postbacks.DELIVER_JOB, did, job_id=f"ppb-{did}-{n}-sweep",
                      queue=getattr(postbacks, "QUEUE", queue.QUEUE_DEFAULT))
    db.session.commit()
    return f"queued {len(due)} partner postback retr{'y' if len(due) == 1 else 'ies'}"


def retry_unsent_email(now: datetime) -> str:
    """Queue unsent email again (:func:`partnernet.mail.outbox.requeue_unsent`) when SMTP is
    configured; without it nothing could be sent, so nothing is queued."""
    from ..mail.outbox import requeue_unsent
    from ..mail.settings import MailConfigError, smtp_settings

    try:
        configured = smtp_settings(current_app.config) is not None
    except MailConfigError:
        configured = False
    if not configured:
        return "no SMTP configured; nothing queued"
    return f"queued {requeue_unsent()} unsent email(s)"
