"""Ledger jobs (ARCHITECTURE: jobs take ids only, are idempotent, and log with their job id).

The split job (:func:`sync_lagging_job`) is coalesced: every status change of a conversion
asks for it after commit (:func:`schedule_ledger_sync`), one job runs for all the changes
committed before it started, and it reads its work list from the database (the conversions
whose ``ledger_status`` lags their status), ``partnernet.ledger.services.BATCH_SIZE`` at a
time. Run by ``flask worker`` or, without Redis, in-process right after the request.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def _job_id() -> str:
    try:
        from rq import get_current_job

        job = get_current_job()
    except Exception:  # noqa: BLE001 - outside a worker
        job = None
    return job.id if job is not None else "in-process"


SYNC_LAGGING_JOB = "partnernet.ledger.tasks.sync_lagging_job"
#: The Redis key that says a split job is queued and not started yet.
SYNC_MARKER = "partnernet:ledger-sync:queued"
#: Seconds one split job works before it hands the rest to a new job.
JOB_TIME_BUDGET_S = 20.0


def schedule_ledger_sync(*, force: bool = False) -> None:
    """Ask for the split job once the current session commits (coalesced; ``force``: even when
    one is queued already, for the sweeper). See :func:`partnernet.queue.enqueue_coalesced`."""
    from .. import queue

    queue.enqueue_coalesced(SYNC_LAGGING_JOB, SYNC_MARKER, force=force)


def sync_lagging_job() -> int:
    """The split job: bring the ledger level with every lagging conversion, in batches
    (:func:`partnernet.ledger.services.sync_lagging`). After :data:`JOB_TIME_BUDGET_S` seconds it
    queues a successor for the rest and returns. Returns how many conversions it synced."""
    from .. import queue
    from ..extensions import db
    from ..mail.alerts import check_spend_alerts
    from .services import sync_lagging

    queue.clear_coalesced(SYNC_MARKER)
    n, finished = sync_lagging(time_budget_s=JOB_TIME_BUDGET_S)
    check_spend_alerts()  # budget 80%/100% and cap emails to the client, once each (commits; never raises)
    if not finished:
        schedule_ledger_sync(force=True)
        db.session.commit()
    log.info("job %s: ledger sync of %s conversion(s)%s", _job_id(), n, "" if finished else ", more queued")
    return n


def sync_conversion_job(conversion_id: int) -> str | None:
    """Bring the ledger level with conversion ``conversion_id`` (split, approval, rejection,
    reversal); see :func:`partnernet.ledger.services.sync_conversion`. Safe to run twice.
    Returns the conversion's new ``ledger_status`` (None: no such conversion)."""
    from .services import sync_conversion

    result = sync_conversion(int(conversion_id))
    log.info("job %s: ledger sync of conversion %s -> %s", _job_id(), conversion_id, result)
    return result


def approve_matured_job() -> int:
    """Approve every pending conversion past its hold period (scheduled; idempotent).
    Returns how many were approved; see :func:`partnernet.conversions.review.approve_matured`."""
    from ..conversions.review import approve_matured

    n = approve_matured()
    log.info("job %s: approved %s matured conversion(s)", _job_id(), n)
    return n


def requeue_stuck_job() -> int:
    """Re-enqueue the ledger sync of conversions whose ledger lags their status (the sweeper).
    Returns how many were queued."""
    from .services import requeue_stuck

    n = requeue_stuck()
    log.info("job %s: requeued %s stuck conversion(s)", _job_id(), n)
    return n
