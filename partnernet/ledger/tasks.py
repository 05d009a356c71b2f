"""Ledger jobs (ARCHITECTURE: jobs take ids only, are idempotent, and log with their job id).

Queued by :mod:`partnernet.conversions.services` after commit with a deterministic job id
(``ledger-sync-<conversion id>-<status>``); run by ``flask worker`` or, without Redis,
in-process right after the request.
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
