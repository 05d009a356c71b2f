"""The RQ worker and the drain (CONTRACT §6 ``flask worker``, ``flask drain``).

The worker is a non-forking :class:`rq.SimpleWorker`: every job runs in the
worker's own process inside a Flask app context, and the SQLAlchemy session is
removed after each job. Jobs here are short, take ids only and are idempotent,
so a fork per job would only cost time (a fork per conversion cannot reach
1,000 splits a second). A crashed job is retried by RQ (``Retry``) and, for
money, re-found by the sweeper (``flask requeue-stuck``, also a scheduled task).

Besides the jobs, the worker runs two threads: the click writer (a consumer of the click stream,
a pass at most every ``PARTNERNET_CLICK_WRITE_S``) and RQ's cron scheduler, which queues the
periodic tasks of :mod:`partnernet.schedule` (approvals, invoices, payout batches, retries,
retention); each due run runs once however many workers run (a run row decides).
"""

from __future__ import annotations

import logging
import threading
import time

from flask import Flask
from rq import SimpleWorker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from .extensions import db
from .queue import QUEUES, get_queue, get_redis

log = logging.getLogger(__name__)

FAILED_SEEN_KEY = "partnernet:drain:failed_seen"


class AppWorker(SimpleWorker):
    """A SimpleWorker that runs each job inside the Flask app context and cleans the session."""

    flask_app: Flask | None = None

    def perform_job(self, job, queue, *args, **kwargs):  # noqa: D401 - RQ hook
        # RQ 3 passes an execution record as well: hand on whatever RQ gives.
        with self.flask_app.app_context():
            try:
                return super().perform_job(job, queue, *args, **kwargs)
            finally:
                db.session.remove()


def _click_flusher(app: Flask, stop: threading.Event, interval: float) -> None:
    """Background loop in the worker: the click writer, a long-running consumer of the click
    stream (:func:`partnernet.tracking.buffer.flush_clicks` with a blocking read of up to a
    second). Group commit on the writer's side too: a pass starts at most every
    ``PARTNERNET_CLICK_WRITE_S`` seconds (unless the last one stopped at its time budget with
    more waiting), so under load each transaction carries many clicks (a click is written
    within about that long) instead of one transaction per click. ``interval``: the pause after
    an error (database down: the clicks stay in Redis)."""
    from .tracking.buffer import flush_clicks

    cycle = float(app.config.get("PARTNERNET_CLICK_WRITE_S") or 0)
    while not stop.is_set():
        started = time.monotonic()
        with app.app_context():
            try:
                if flush_clicks(block_ms=1000) == 0:
                    stop.wait(0.05)  # another writer holds the lock, or nothing came
            except Exception:  # noqa: BLE001 - the database may be down; clicks stay buffered
                log.exception("click write failed; clicks stay in the stream")
                stop.wait(interval)
            finally:
                db.session.remove()
        rest = cycle - (time.monotonic() - started)
        if rest > 0:
            stop.wait(rest)


def run_worker(app: Flask, *, burst: bool = False) -> None:
    """Run the worker on every PartnerNet queue until stopped (or until empty with ``burst``)."""
    import redis

    # The worker's own connection, without the web's short socket timeout: RQ blocks on the
    # queues for longer than that while it waits for work.
    conn = redis.Redis.from_url(app.config["REDIS_URL"])
    from rq import Queue

    from .tracking.durability import check_at_start

    check_at_start(app)  # warns, or refuses in production, when Redis cannot keep clicks
    queues = [Queue(name, connection=conn) for name in QUEUES]
    AppWorker.flask_app = app
    worker = AppWorker(queues, connection=conn)
    stop = threading.Event()
    flusher = None
    if not burst:
        flusher = threading.Thread(
            target=_click_flusher, args=(app, stop, float(app.config["PARTNERNET_CLICK_FLUSH_S"])), daemon=True
        )
        flusher.start()
    if not burst:
        from .schedule.runner import cron_scheduler, enabled, run_cron_scheduler

        if enabled(app):  # periodic work (CONTRACT v2 §6): RQ's cron scheduler queues it
            threading.Thread(target=run_cron_scheduler, args=(cron_scheduler(app, conn), stop),
                             name="partnernet-cron", daemon=True).start()
    try:
        worker.work(burst=burst, with_scheduler=True, logging_level="INFO")
    finally:
        stop.set()


def _busy() -> bool:
    from .tracking.buffer import has_buffered

    conn = get_redis()
    if has_buffered():
        return True
    for name in QUEUES:
        q = get_queue(name)
        if q.count > 0:
            return True
        if StartedJobRegistry(queue=q).count > 0 or ScheduledJobRegistry(queue=q).count > 0:
            return True
    return bool(conn.exists("partnernet:jobs:deferred"))


def _new_failures() -> list[str]:
    conn = get_redis()
    failed: set[str] = set()
    for name in QUEUES:
        failed.update(FailedJobRegistry(queue=get_queue(name)).get_job_ids())
    seen = {x.decode() for x in conn.smembers(FAILED_SEEN_KEY)}
    new = sorted(failed - seen)
    if new:
        conn.sadd(FAILED_SEEN_KEY, *new)
    return new


def _lagging_count() -> int:
    """How many conversions' ledger lags their status (the partial index makes this cheap)."""
    from sqlalchemy import func, select

    from .models import Conversion
    from .models.conversions import LAGGING

    try:
        return int(db.session.scalar(select(func.count(Conversion.id)).where(LAGGING)) or 0)
    finally:
        db.session.rollback()


def drain(timeout: float) -> tuple[int, str]:
    """Write buffered clicks and wait for every queue to be empty with no job running, and for
    the ledger to be level with every conversion's status (CONTRACT §6 ``flask drain``).

    When the queues are idle but conversions still lag their ledger (their split job was lost,
    e.g. Redis was flushed or a worker died), the split job is queued again, at most once a
    second, and the wait goes on. Returns (exit code, message): 0 drained, 1 timed out
    (the message says how many conversions still lag, if any), 2 a job ended failed (after its
    retries) since the last drain, 3 clicks or impressions were lost since the last drain
    (:mod:`partnernet.tracking.producers`: a gap in a web process's batches, or Redis lost its
    data), reported once. Without Redis, runs the in-process jobs (and the sweeper when
    something still lags) and returns 0.
    """
    from flask import current_app

    from .ledger.services import requeue_stuck
    from .queue import run_pending
    from .tracking.buffer import flush_clicks

    if not current_app.config.get("REDIS_URL"):
        flush_clicks()
        run_pending()
        if _lagging_count():
            requeue_stuck()
        return 0, "drained (in-process mode)"
    end = time.monotonic() + timeout
    quiet = 0
    lagging = 0
    next_requeue = 0.0
    while time.monotonic() < end:
        try:
            flush_clicks()
        except Exception as exc:  # noqa: BLE001 - database briefly down: keep waiting
            log.warning("click flush failed during drain: %s", exc)
            db.session.rollback()
        if _busy():
            quiet = 0
        else:
            quiet += 1
            if quiet >= 2:
                try:
                    lagging = _lagging_count()
                except Exception as exc:  # noqa: BLE001 - database briefly down: keep waiting
                    log.warning("ledger check failed during drain: %s", exc)
                    db.session.rollback()
                    lagging, quiet = 0, 0
                    time.sleep(0.05)
                    continue
                if lagging:
                    quiet = 0
                    if time.monotonic() >= next_requeue:
                        log.info("drain: %s conversion(s) lag their ledger with no job queued; queueing it", lagging)
                        requeue_stuck()
                        next_requeue = time.monotonic() + 1.0
                else:
                    from .tracking.producers import describe, unreported_losses

                    losses = unreported_losses()
                    if losses:
                        return 3, f"drained, but {describe(losses)}"
                    new = _new_failures()
                    if new:
                        return 2, f"drained, but {len(new)} job(s) failed: {', '.join(new[:10])}"
                    return 0, "drained"
        time.sleep(0.05)
    if lagging:
        return 1, f"timed out waiting for the queues to drain; {lagging} conversion(s) still lag their ledger"
    return 1, "timed out waiting for the queues to drain"
