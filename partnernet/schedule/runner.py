"""Who runs the schedule (CONTRACT v2 §6 "Periodic work runs by itself"; no cron entry).

- With Redis, ``flask --app wsgi worker`` runs RQ's own :class:`rq.cron.CronScheduler` in a
  thread: every task of :data:`~partnernet.schedule.tasks.TASKS` is registered with RQ, which
  queues :func:`scheduled_job` at start and then every ``min(every, PARTNERNET_SCHEDULE_CHECK_S)``
  seconds; any worker runs the job.
- Without Redis (the embedded default), the web process runs :func:`run_due` in one background
  thread (:func:`start_embedded`, started on the first request so that CLI commands and forked
  server workers never inherit it).

Either way a run happens once per task and due time however many workers or web processes
look: :func:`partnernet.schedule.runs.claim` decides in the database. At start every task is
looked at once, so a run missed while nothing was running (its last run is in an earlier
slot) is made at once.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from flask import Flask

from .. import queue
from ..clock import utcnow
from ..extensions import db
from . import runs
from .rules import slot_at
from .tasks import TASKS, get_task

log = logging.getLogger(__name__)

DEFAULT_CHECK_S = 60
_embedded_lock = threading.Lock()


def run_task(name: str, now: datetime | None = None, *, manual: bool = False) -> str | None:
    """Run task ``name`` for its slot at ``now`` (default: now) when no other runner has:
    returns its summary, or None when the slot was already taken (or the task failed: the run
    is marked ``failed`` with the error and logged, and taken again at the next look). With
    ``manual`` the run is due at ``now`` itself (``flask schedule run``), so it always runs.
    Raises KeyError for an unknown task."""
    task = get_task(name)
    now = now or utcnow()
    due = now if manual else slot_at(now, task.every, task.offset)
    func = queue.resolve(task.func)
    try:
        result = runs.run_once(task.name, due, lambda _run_id: func(now, **task.kwargs), now=now)
    except Exception:  # noqa: BLE001 - recorded on the run; the schedule goes on
        log.exception("scheduled task %s (due %s) failed", task.name, due.isoformat())
        db.session.rollback()
        return None
    finally:
        if not queue.redis_url():
            queue.run_pending()  # in-process mode: the jobs the task queued
    if result is not None:
        log.info("scheduled task %s (due %s): %s", task.name, due.isoformat(), result)
    return result


def scheduled_job(name: str) -> str | None:
    """RQ job queued by the worker's cron scheduler: :func:`run_task` for ``name`` now. Never
    raises for a failing task (its run row says ``failed``), so a task failure is not a failed
    job for ``flask drain``."""
    return run_task(name)


def run_due(now: datetime | None = None) -> dict[str, str | None]:
    """Look at every task once (embedded runner, tests): each due task whose slot nobody has
    taken runs. Returns ``{name: summary or None}``."""
    now = now or utcnow()
    return {task.name: run_task(task.name, now) for task in TASKS}


def check_interval(app: Flask) -> int:
    """Seconds between two looks at a task: ``PARTNERNET_SCHEDULE_CHECK_S`` (default 60)."""
    import os

    raw = app.config.get("PARTNERNET_SCHEDULE_CHECK_S") or os.environ.get("PARTNERNET_SCHEDULE_CHECK_S")
    try:
        return max(1, int(float(raw))) if raw else DEFAULT_CHECK_S
    except ValueError:
        return DEFAULT_CHECK_S


def enabled(app: Flask) -> bool:
    """False when ``PARTNERNET_SCHEDULE`` is ``off`` (``0``, ``false``, ``no``): nothing runs by
    itself (for a second deployment on the same database, say); ``flask schedule run`` still works."""
    import os

    raw = str(app.config.get("PARTNERNET_SCHEDULE") or os.environ.get("PARTNERNET_SCHEDULE") or "on")
    return raw.strip().lower() not in ("off", "0", "false", "no")


def cron_scheduler(app: Flask, connection):
    """RQ's :class:`rq.cron.CronScheduler` on ``connection`` with every task registered: it
    queues :func:`scheduled_job` (``partnernet-default`` queue) for each task at start and then
    every ``min(every, check interval)`` seconds."""
    from rq.cron import CronScheduler

    scheduler = CronScheduler(connection=connection, logging_level="WARNING")
    check = check_interval(app)
    for task in TASKS:
        scheduler.register(scheduled_job, queue.QUEUE_DEFAULT, args=(task.name,), interval=min(task.every, check),
                           name=f"partnernet:{task.name}", result_ttl=600, failure_ttl=7 * 86400)
    return scheduler


def run_cron_scheduler(scheduler, stop: threading.Event) -> None:
    """Drive ``scheduler`` until ``stop`` is set, as :meth:`CronScheduler.start` does (queue what
    is due, save, heartbeat, sleep until the next is due), in a thread: ``start`` itself installs
    signal handlers, which only the main thread may, and the main thread is the RQ worker's."""
    scheduler.register_birth()
    try:
        while not stop.is_set():
            try:
                if scheduler.enqueue_jobs():
                    scheduler.save()
                scheduler.heartbeat()
            except Exception:  # noqa: BLE001 - Redis briefly down: try again at the next tick
                log.exception("the cron scheduler could not queue its jobs")
            stop.wait(max(0.05, scheduler.calculate_sleep_interval()))
    finally:
        try:
            scheduler.register_death()
        except Exception:  # noqa: BLE001
            pass


def _embedded_loop(app: Flask, stop: threading.Event, interval: float) -> None:
    while True:
        with app.app_context():
            try:
                run_due()
            except Exception:  # noqa: BLE001 - the database may be down: try at the next tick
                log.exception("the embedded schedule could not run")
            finally:
                db.session.remove()
        if stop.wait(interval):
            return


def start_embedded(app: Flask, interval: float | None = None) -> threading.Thread | None:
    """Start the embedded runner of ``app`` once per process: a daemon thread that runs
    :func:`run_due` at once and then every ``interval`` seconds (default: the check interval).
    Only without ``REDIS_URL``, outside ``TESTING`` (unless ``interval`` is given, as tests do)
    and when :func:`enabled`. Returns the thread, or None when it was not (or already) started.
    ``app.extensions["partnernet_schedule_stop"]`` stops it."""
    if app.config.get("REDIS_URL") or not enabled(app):
        return None
    if app.config.get("TESTING") and interval is None:
        return None
    with _embedded_lock:
        if app.extensions.get("partnernet_schedule_thread") is not None:
            return None
        stop = threading.Event()
        thread = threading.Thread(target=_embedded_loop, name="partnernet-schedule", daemon=True,
                                  args=(app, stop, float(interval or check_interval(app))))
        app.extensions["partnernet_schedule_thread"] = thread
        app.extensions["partnernet_schedule_stop"] = stop
        thread.start()
        return thread


def install(app: Flask) -> None:
    """Hook the embedded runner into ``app``: started by the first request the process serves
    (see the module docstring). No-op with Redis, in testing, or when not :func:`enabled`."""
    if app.config.get("REDIS_URL") or app.config.get("TESTING") or not enabled(app):
        return

    @app.before_request
    def _start_schedule():
        if "partnernet_schedule_thread" not in app.extensions:
            start_embedded(app)
