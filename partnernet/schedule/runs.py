"""Run rows: who runs a due task (CONTRACT v2 §6 "Periodic work runs by itself").

:func:`claim` is one ``INSERT ... ON CONFLICT`` on ``schedule_runs`` (unique per task and due
time), committed before the work starts: the runner whose statement inserted the row (or took
over a failed one, or one whose runner died) runs the work, every other runner gets None. So a
due run runs once however many workers and web processes look at the same moment, on
PostgreSQL and on SQLite alike.
"""

from __future__ import annotations

import os
import socket
import threading
from datetime import datetime, timedelta

from sqlalchemy import and_, func, literal, or_, select, update

from ..clock import utcnow
from ..extensions import db
from ..models import ScheduleRun
from ..models.base import UTCDateTime

#: Seconds after which a run still marked ``running`` is taken to have lost its runner.
LEASE_S = 3600
#: Tries of one due run; a run that failed this often waits for the task's next due time.
MAX_ATTEMPTS = 3
RESULT_MAX = 500


def runner_name() -> str:
    """``host:pid:thread`` of the caller, stored on the run it claims."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"[:128]


def _insert():
    if db.session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def claim(task: str, due_at: datetime, *, now: datetime | None = None) -> int | None:
    """Take the run of ``task`` (at most 96 characters) due at ``due_at`` (aware UTC). Returns
    the run id when this caller is to run it, None when another runner has it, has finished
    it, or it failed :data:`MAX_ATTEMPTS` times. A failed run, or a running one started more
    than :data:`LEASE_S` seconds ago, is taken over (``attempts`` + 1). Commits."""
    now = now or utcnow()
    insert = _insert()
    stmt = insert(ScheduleRun).values(task=task, due_at=due_at, status="running", runner=runner_name(),
                                      attempts=1, started_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=[ScheduleRun.task, ScheduleRun.due_at],
        set_={"status": "running", "runner": stmt.excluded.runner, "attempts": ScheduleRun.attempts + 1,
              "started_at": literal(now, UTCDateTime), "finished_at": None, "result": None},
        where=or_(and_(ScheduleRun.status == "failed", ScheduleRun.attempts < MAX_ATTEMPTS),
                  and_(ScheduleRun.status == "running",
                       ScheduleRun.started_at < literal(now - timedelta(seconds=LEASE_S), UTCDateTime))),
    ).returning(ScheduleRun.id)
    run_id = db.session.execute(stmt).scalar_one_or_none()
    db.session.commit()
    return run_id


def mark(run_id: int, status: str, result: object = None) -> None:
    """Set the run's ``status`` (``ok`` or ``failed``), ``finished_at`` and one-line ``result``
    in the current transaction, without committing: a use case that commits its own work
    (a payout batch, an invoice) marks its run in the same commit, so the run and the work are
    saved together or not at all."""
    text = " ".join(str(result).split())[:RESULT_MAX] if result is not None else None
    db.session.execute(update(ScheduleRun).where(ScheduleRun.id == run_id)
                       .values(status=status, finished_at=utcnow(), result=text)
                       .execution_options(synchronize_session=False))


def finish(run_id: int, status: str, result: object = None) -> None:
    """:func:`mark` and commit."""
    mark(run_id, status, result)
    db.session.commit()


def run_once(task: str, due_at: datetime, work, *, now: datetime | None = None):
    """Claim (``task``, ``due_at``) and, when this caller has it, call ``work(run_id)``: the
    work commits its own changes and should :func:`mark` the run ``ok`` in that commit (else
    it is marked ``ok`` afterwards with what ``work`` returned). An exception rolls back, marks
    the run ``failed`` with the error, and is raised again. Returns ``work``'s value, or None
    when the run was not this caller's."""
    run_id = claim(task, due_at, now=now)
    if run_id is None:
        return None
    try:
        value = work(run_id)
    except Exception as err:
        db.session.rollback()
        finish(run_id, "failed", f"{type(err).__name__}: {err}")
        raise
    still_running = db.session.scalar(select(ScheduleRun.status).where(ScheduleRun.id == run_id)) == "running"
    if still_running:
        finish(run_id, "ok", value)
    else:
        db.session.commit()
    return value


def latest_runs(prefix_free: bool = True) -> dict[str, ScheduleRun]:
    """The latest run (by due time) of every task name; with ``prefix_free`` only task names
    without a ``:`` (the tasks themselves, not their per-client or per-currency runs)."""
    latest = (select(ScheduleRun.task, func.max(ScheduleRun.due_at).label("due_at"))
              .group_by(ScheduleRun.task).subquery())
    rows = db.session.scalars(select(ScheduleRun).join(
        latest, and_(latest.c.task == ScheduleRun.task, latest.c.due_at == ScheduleRun.due_at)))
    return {r.task: r for r in rows if not (prefix_free and ":" in r.task)}


def last_ok(task: str) -> ScheduleRun | None:
    """The latest successful run of ``task``, or None."""
    return db.session.scalar(select(ScheduleRun).where(ScheduleRun.task == task, ScheduleRun.status == "ok")
                             .order_by(ScheduleRun.due_at.desc()).limit(1))
