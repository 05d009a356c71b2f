"""RQ glue: enqueue after commit, deterministic job ids, and an in-process mode.

With ``REDIS_URL`` set, jobs go to RQ queues and ``flask --app wsgi worker`` runs
them. Without it (the embedded default), jobs run in-process right after the
request (or service call) that queued them has committed (CONTRACT §6).

Services call :func:`enqueue` before they commit; nothing is sent until the
session commits, and nothing at all if it rolls back. Jobs take ids only and
are safe to run twice (ARCHITECTURE: idempotency lives in the database).
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass, field

from flask import current_app, has_app_context
from sqlalchemy import event
from sqlalchemy.orm import Session

from .extensions import db

log = logging.getLogger(__name__)

QUEUE_CLICKS = "partnernet-clicks"
QUEUE_DEFAULT = "partnernet-default"
#: Calls to partners' own URLs (partnernet.partners.postbacks): slow by nature, never money.
QUEUE_PARTNER_POSTBACKS = "partnernet-partner-postbacks"
#: In the order a worker serves them: RQ takes the next job from the first non-empty queue, so
#: clicks and money (splits) always go before any partner postback.
QUEUES = (QUEUE_CLICKS, QUEUE_DEFAULT, QUEUE_PARTNER_POSTBACKS)

_KEY = "partnernet_pending_jobs"
_local = threading.local()


@dataclass
class JobSpec:
    """A job to run: ``func`` is a dotted path (``"partnernet.ledger.tasks.sync_conversion_job"``),
    ``args`` plain ids, ``job_id`` deterministic (same work, same id)."""

    func: str
    args: tuple = ()
    job_id: str | None = None
    queue: str = QUEUE_DEFAULT
    kwargs: dict = field(default_factory=dict)
    coalesce: str | None = None  # a marker key: see enqueue_coalesced
    force: bool = False
    retry: object | None = None  # an rq.Retry: RQ tries a failed job again (ignored in-process)


def redis_url() -> str | None:
    """The configured Redis URL, or None in the embedded (in-process) mode."""
    return current_app.config.get("REDIS_URL") if has_app_context() else None


def get_redis():
    """A Redis client for ``REDIS_URL`` (cached per app). Raises RuntimeError without one."""
    if not redis_url():
        raise RuntimeError("REDIS_URL is not set")
    return redis_client_for(current_app)


def redis_client_for(app):
    """The Redis client of ``app`` (its ``REDIS_URL``, cached per app), usable outside an app
    context (the lean tracking handler). Raises RuntimeError without ``REDIS_URL``."""
    url = app.config.get("REDIS_URL")
    if not url:
        raise RuntimeError("REDIS_URL is not set")
    ext = app.extensions.setdefault("partnernet_redis", {})
    client = ext.get(url)
    if client is None:
        import redis

        # Short timeouts: a Redis that hangs must not stall redirects or postbacks (the
        # redirect then writes the click directly). The worker uses its own connection.
        client = ext[url] = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=1.0)
    return client


def get_queue(name: str = QUEUE_DEFAULT):
    """The RQ queue ``name`` on the configured Redis."""
    from rq import Queue

    return Queue(name, connection=get_redis())


def enqueue(func: str, *args, job_id: str | None = None, queue: str = QUEUE_DEFAULT, retry=None,
            **kwargs) -> None:
    """Queue ``func(*args, **kwargs)`` to run once the current session commits.

    Dropped if the session rolls back. ``job_id`` should be deterministic so that
    the same work queued twice is one job in RQ. ``retry``: an ``rq.Retry`` (RQ mode only).
    """
    pending = db.session.info.setdefault(_KEY, [])
    pending.append(JobSpec(func, tuple(args), job_id, queue, kwargs, retry=retry))


#: Seconds a coalesced job's marker lives when its job never starts (then a new one may be sent).
COALESCE_TTL_S = 30


def enqueue_coalesced(func: str, marker: str, *, queue: str = QUEUE_DEFAULT, force: bool = False) -> None:
    """Queue ``func()`` (no arguments) to run once the current session commits, coalesced: however
    many commits ask for it before it starts, one job is sent. ``marker`` is a Redis key set (NX,
    :data:`COALESCE_TTL_S` s) by the first sender; the job calls :func:`clear_coalesced` when it
    starts, so work committed after that start sends a new job. The job therefore always finds
    every piece of work committed before it was asked for (it reads its work list from the
    database). ``force`` sends a job even when the marker is set (the sweeper). Without Redis
    the job joins the in-process list once."""
    pending = db.session.info.setdefault(_KEY, [])
    if not any(s.coalesce == marker and (s.force or not force) for s in pending):
        pending.append(JobSpec(func, (), None, queue, {}, coalesce=marker, force=force))


def clear_coalesced(marker: str) -> None:
    """Called by a coalesced job as it starts (see :func:`enqueue_coalesced`). No-op without Redis."""
    if redis_url():
        get_redis().delete(marker)


def send_now(spec: JobSpec) -> None:
    """Send ``spec`` to RQ at once (or, in-process mode, to the in-process list)."""
    if spec.coalesce is not None:
        _send_coalesced(spec)
        return
    if redis_url():
        q = get_queue(spec.queue)
        q.enqueue(spec.func, *spec.args, job_id=spec.job_id, result_ttl=600, failure_ttl=7 * 86400,
                  retry=spec.retry, **({"kwargs": spec.kwargs} if spec.kwargs else {}))
    else:
        _ready().append(spec)


def _send_coalesced(spec: JobSpec) -> None:
    if not redis_url():
        if not any(s.coalesce == spec.coalesce for s in _ready()):
            _ready().append(spec)
        return
    import uuid

    r = get_redis()
    first = r.set(spec.coalesce, "1", nx=True, ex=COALESCE_TTL_S)
    if first or spec.force:
        if not first:
            r.set(spec.coalesce, "1", ex=COALESCE_TTL_S)
        get_queue(spec.queue).enqueue(spec.func, job_id=f"{spec.coalesce.replace(':', '-')}-{uuid.uuid4().hex[:12]}",
                                      result_ttl=600, failure_ttl=7 * 86400)


def _ready() -> list:
    lst = getattr(_local, "ready", None)
    if lst is None:
        lst = _local.ready = []
    return lst


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    # SQLAlchemy fires after_commit / after_rollback for SAVEPOINTs too: only the
    # outermost transaction sends (or drops) the queued jobs.
    if session.in_nested_transaction():
        return
    pending = session.info.pop(_KEY, None)
    if not pending:
        return
    for spec in pending:
        try:
            send_now(spec)
        except Exception:  # noqa: BLE001 - the sweeper re-enqueues what was lost
            log.exception("could not enqueue %s %s; the sweeper will pick it up", spec.func, spec.args)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    if session.in_nested_transaction():
        return
    session.info.pop(_KEY, None)


def resolve(func: str):
    """Import the callable named by the dotted path ``func``."""
    module, _, name = func.rpartition(".")
    return getattr(importlib.import_module(module), name)


def run_pending(max_jobs: int = 1_000_000) -> int:
    """In-process mode: run every job queued by committed work, including jobs those jobs
    queue, until none is left. Returns how many ran. A failing job is logged and the
    rest still run (its row stays for the sweeper). No-op with Redis configured."""
    ran = 0
    ready = _ready()
    while ready and ran < max_jobs:
        spec = ready.pop(0)
        try:
            resolve(spec.func)(*spec.args, **spec.kwargs)
        except Exception:  # noqa: BLE001
            log.exception("in-process job %s%s failed", spec.func, spec.args)
            db.session.rollback()
        ran += 1
    return ran


def discard_pending() -> None:
    """Forget in-process jobs that were not run (tests)."""
    _ready().clear()
