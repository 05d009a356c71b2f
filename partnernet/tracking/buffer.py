"""The click buffer: clicks and impressions wait in Redis and are written in batches
(CONTRACT §1 "the redirect does not wait on the database"; ARCHITECTURE, the hot path).

Records are JSON objects: ``{"t": "c", ...}`` for a click (see
:func:`partnernet.tracking.hotpath.handle_click`) and ``{"t": "i", ...}`` for an
impression. The redirect :func:`push` es a record onto :data:`BUFFER_KEY` and,
at most once per ``PARTNERNET_CLICK_FLUSH_S``, enqueues :func:`flush_clicks_job`
on the clicks queue; the worker also calls :func:`flush_clicks` every second and
``flask drain`` calls it until the buffer is empty.

:func:`flush_clicks`, under a Redis lock (one flusher at a time):

1. atomically moves a batch from the buffer to the processing list (Lua), or
   takes up the batch a crashed flusher left there;
2. writes it with :func:`write_records` (:mod:`.writer`) in one transaction: clicks inserted
   with ``ON CONFLICT (click_id) DO NOTHING RETURNING``; only the rows actually
   inserted move the hourly :class:`~partnernet.models.TrafficRollup` counts and
   make CPC ``click`` conversions; impressions count once per batch thanks to a
   :class:`~partnernet.models.BufferBatch` row inserted in the same transaction;
3. commits, then deletes the processing list (only if it still holds this batch).

A crash between 2 and 3 re-reads the batch, which then adds nothing. A batch
that fails for a reason other than a database outage is retried one record at
a time; records that still fail go to :data:`DEAD_KEY` for inspection.

Without ``REDIS_URL`` nothing is buffered: the redirect calls
:func:`write_records` itself, and :func:`flush_clicks` / :func:`buffered_count`
return 0.
"""

from __future__ import annotations

import json
import logging
import secrets
import time

from flask import current_app
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from .. import queue
from ..extensions import db
from .writer import BATCH_MARKER_KEEP, IMPRESSIONS_PER_CONVERSION, WriteResult, write_records

__all__ = ["BATCH_MARKER_KEEP", "IMPRESSIONS_PER_CONVERSION", "WriteResult", "write_records", "push",
           "flush_clicks", "flush_clicks_job", "buffered_count", "enqueue_flush", "flush_window_ms"]

log = logging.getLogger(__name__)

# One hash tag, so the keys live in one slot on a Redis Cluster (the Lua scripts touch several).
BUFFER_KEY = "partnernet:{clicks}:buffer"
PROCESSING_KEY = "partnernet:{clicks}:processing"
PROCESSING_BATCH_KEY = "partnernet:{clicks}:processing_batch"
LOCK_KEY = "partnernet:{clicks}:flush_lock"
FLUSH_SCHEDULED_KEY = "partnernet:{clicks}:flush_scheduled"
DEAD_KEY = "partnernet:{clicks}:dead"

FLUSH_JOB = "partnernet.tracking.buffer.flush_clicks_job"
LOCK_TTL_MS = 60_000
MAX_BATCH = 5000

_CLAIM_LUA = """
local items = redis.call('LRANGE', KEYS[2], 0, -1)
if #items > 0 then
  local bid = redis.call('GET', KEYS[3])
  if not bid then
    bid = ARGV[2]
    redis.call('SET', KEYS[3], bid)
  end
  return {bid, items}
end
items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #items == 0 then
  redis.call('DEL', KEYS[3])
  return {'', items}
end
for i = 1, #items, 500 do
  redis.call('RPUSH', KEYS[2], unpack(items, i, math.min(i + 499, #items)))
end
redis.call('LTRIM', KEYS[1], #items, -1)
redis.call('SET', KEYS[3], ARGV[2])
return {ARGV[2], items}
"""

_DONE_LUA = """
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
"""

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_EXTEND_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


def _redis():
    return queue.get_redis()


def _has_redis() -> bool:
    return bool(current_app.config.get("REDIS_URL"))


def push(record: dict) -> None:
    """Append ``record`` (a click or impression dict, JSON-serialisable) to the buffer and make
    sure a flush follows: the first push after ``PARTNERNET_CLICK_FLUSH_S`` seconds enqueues
    :func:`flush_clicks_job` (deterministic job id per second). One round trip, plus the
    enqueue when it is due. Raises redis errors (the caller then writes directly)."""
    r = _redis()
    window_ms = flush_window_ms()
    pipe = r.pipeline(transaction=False)
    pipe.rpush(BUFFER_KEY, json.dumps(record, separators=(",", ":")))
    pipe.set(FLUSH_SCHEDULED_KEY, b"1", nx=True, px=window_ms)
    _length, due = pipe.execute()
    if due:
        enqueue_flush(window_ms)


def flush_window_ms() -> int:
    """``PARTNERNET_CLICK_FLUSH_S`` in milliseconds (at least 100): at most one flush job is
    enqueued per window (the :data:`FLUSH_SCHEDULED_KEY` expiry)."""
    return max(100, int(float(current_app.config.get("PARTNERNET_CLICK_FLUSH_S") or 1.0) * 1000))


def enqueue_flush(window_ms: int) -> None:
    """Enqueue :func:`flush_clicks_job` on the clicks queue (job id deterministic per window);
    called by whoever set :data:`FLUSH_SCHEDULED_KEY`. Never raises: the worker's timer
    flushes every second anyway."""
    try:
        job_id = f"partnernet-flush-clicks-{int(time.time() * 1000) // window_ms}"
        queue.get_queue(queue.QUEUE_CLICKS).enqueue(
            FLUSH_JOB, job_id=job_id, result_ttl=0, failure_ttl=86400
        )
    except Exception:  # noqa: BLE001 - the worker flushes every second anyway
        log.exception("could not enqueue the click flush; the worker's timer will flush")


def buffered_count() -> int:
    """Clicks and impressions waiting in Redis (buffer plus the batch being written); 0
    without ``REDIS_URL``. Raises redis errors."""
    if not _has_redis():
        return 0
    pipe = _redis().pipeline(transaction=False)
    pipe.llen(BUFFER_KEY)
    pipe.llen(PROCESSING_KEY)
    return sum(int(n) for n in pipe.execute())


def flush_clicks(*, time_budget_s: float = 60.0) -> int:
    """Write buffered clicks and impressions to the database, batch after batch, until the
    buffer is empty (or ``time_budget_s`` seconds have passed; the next call goes on).

    Returns how many records were processed (0 when another process holds the flush lock,
    or without ``REDIS_URL``). Raises database errors of an outage (the batch stays in
    Redis and is retried) and redis errors.
    """
    if not _has_redis():
        return 0
    r = _redis()
    token = secrets.token_hex(16)
    if not r.set(LOCK_KEY, token, nx=True, px=LOCK_TTL_MS):
        return 0
    batch_size = max(1, min(MAX_BATCH, int(current_app.config.get("PARTNERNET_CLICK_BATCH") or 500)))
    claim = r.register_script(_CLAIM_LUA)
    extend = r.register_script(_EXTEND_LUA)
    total = 0
    deadline = time.monotonic() + time_budget_s
    try:
        while True:
            batch_id, items = claim(keys=[BUFFER_KEY, PROCESSING_KEY, PROCESSING_BATCH_KEY],
                                    args=[batch_size, "b" + secrets.token_hex(12)])
            if not items:
                break
            batch_id = batch_id.decode() if isinstance(batch_id, bytes) else str(batch_id)
            _write_batch(r, batch_id, items)
            total += len(items)
            if not extend(keys=[LOCK_KEY], args=[token, LOCK_TTL_MS]) or time.monotonic() > deadline:
                break
    finally:
        try:
            r.register_script(_RELEASE_LUA)(keys=[LOCK_KEY], args=[token])
        except Exception:  # noqa: BLE001 - the lock expires on its own
            log.exception("could not release the click flush lock")
    return total


def flush_clicks_job() -> int:
    """RQ job (queue ``partnernet-clicks``): :func:`flush_clicks`. Never fails the job: on an
    error the clicks stay buffered and the worker's timer flushes them later."""
    try:
        return flush_clicks()
    except Exception:  # noqa: BLE001
        db.session.rollback()
        log.exception("click flush failed; clicks stay in the buffer")
        return 0


def _is_outage(exc: Exception) -> bool:
    """True for a database error that says the database is unreachable, not that the data is bad."""
    return isinstance(exc, (OperationalError, InterfaceError)) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def _write_batch(r, batch_id: str, items: list[bytes]) -> None:
    records: list[dict] = []
    dead: list[bytes] = []
    for raw in items:
        try:
            rec = json.loads(raw)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
            records.append(rec)
        except ValueError:
            dead.append(raw)
    try:
        write_records(records, batch_id=batch_id)
    except Exception as exc:  # noqa: BLE001
        db.session.rollback()
        if _is_outage(exc):
            raise
        log.exception("click batch %s failed; retrying its %d records one by one", batch_id, len(records))
        for i, rec in enumerate(records):
            try:
                write_records([rec], batch_id=f"{batch_id}:{i}")
            except Exception as exc2:  # noqa: BLE001
                db.session.rollback()
                if _is_outage(exc2):
                    raise
                log.exception("dropping unwritable %s record into %s", rec.get("t"), DEAD_KEY)
                dead.append(json.dumps(rec).encode())
    if dead:
        r.rpush(DEAD_KEY, *dead)
    r.register_script(_DONE_LUA)(keys=[PROCESSING_KEY, PROCESSING_BATCH_KEY], args=[batch_id])
