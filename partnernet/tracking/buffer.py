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
2. writes it with :func:`write_records` in one transaction: clicks inserted
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
import random
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from .. import queue
from ..clock import utcnow
from ..extensions import db
from ..models import TRAFFIC_COLUMNS, BufferBatch, CampaignEvent, Click, Link, LinkCounter, TrafficRollup
from ..reporting.rollup import apply_traffic_counts, upsert_add
from ..reporting.rollup import dialect_insert as _insert

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
IMPRESSIONS_PER_CONVERSION = 1000
BATCH_MARKER_KEEP = timedelta(days=2)

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


@dataclass
class WriteResult:
    """What :func:`write_records` wrote: new click rows, impressions counted, conversions made."""

    clicks: int = 0
    impressions: int = 0
    conversions: int = 0


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


def _at(rec: dict) -> datetime:
    at = datetime.fromisoformat(rec["at"])
    if at.tzinfo is None:
        raise ValueError("naive timestamp in a buffered record")
    return at


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def _s(value, limit: int | None = None) -> str | None:
    if value is None:
        return None
    value = str(value).replace("\x00", "")
    return value[:limit] if limit else value


def _click_row(rec: dict) -> dict:
    return {
        "click_id": str(rec["click_id"])[:40],
        "link_id": int(rec["link_id"]),
        "campaign_id": int(rec["campaign_id"]),
        "partner_id": int(rec["partner_id"]),
        "created_at": _at(rec),
        "ip": _s(rec.get("ip"), 64),
        "user_agent": _s(rec.get("ua")),
        "referer": _s(rec.get("referer")),
        "visitor": _s(rec.get("visitor"), 64) or "",
        **{f"sub{i}": _s(rec.get(f"sub{i}"), 255) for i in range(1, 6)},
        "method": _s(rec.get("method"), 8) or "GET",
        "is_bot": bool(rec.get("bot")),
        "is_unique": bool(rec.get("unique")),
        "fallback_reason": _s(rec.get("fb"), 32),
        "destination": _s(rec.get("dest")),
    }


_ROLLUP_COLS = TRAFFIC_COLUMNS  # clicks, unique_clicks, bot_clicks, fallback_clicks, impressions, bot_impressions


def write_records(records: list[dict], *, batch_id: str | None = None) -> WriteResult:
    """Write click and impression records to the database and commit once (CONTRACT §1, §2, §5).

    Clicks: inserted ``ON CONFLICT (click_id) DO NOTHING``; for the rows actually inserted,
    the hourly :class:`TrafficRollup` of (hour, link, sub1) (and with it the daily and campaign
    rollups of :func:`partnernet.reporting.rollup.apply_traffic_counts`) gains ``clicks`` (every click),
    ``unique_clicks``, ``bot_clicks`` and ``fallback_clicks``, and a unique, non-bot,
    non-fallback click on a campaign with a ``click`` event becomes a pending ``click``
    conversion (:func:`partnernet.conversions.services.record_conversion`, which rejects it
    ``over_budget`` when its fee would pass the budget).

    Impressions: ``impressions`` (non-bot impressions, what reports show, CONTRACT §5) and
    ``bot_impressions`` (bot ones, kept apart) in the rollup, sub1 as given; each non-bot impression of a link that is
    not in fallback raises ``LinkCounter.impressions``, and every 1,000th becomes an
    ``impression`` conversion (dedup key ``i:<link_id>:<n>``, n = 1000, 2000, ...) when the
    campaign has that event. With ``batch_id`` given, impressions are counted only the
    first time that batch id is written (:class:`BufferBatch`).

    Records of links that no longer exist are skipped. Raises SQLAlchemy errors (the caller
    rolls back) and ``KeyError``/``ValueError`` for malformed records.
    """
    from ..conversions.services import record_conversion

    result = WriteResult()
    if not records:
        return result
    link_ids = {int(rec["link_id"]) for rec in records}
    known = dict(db.session.execute(select(Link.id, Link.campaign_id).where(Link.id.in_(link_ids))).all())
    clicks = [rec for rec in records if rec.get("t", "c") == "c" and int(rec["link_id"]) in known]
    imps = [rec for rec in records if rec.get("t") == "i" and int(rec["link_id"]) in known]
    now = utcnow()

    if imps and batch_id:
        stmt = (_insert(BufferBatch).values(batch_id=batch_id[:40], written_at=now)
                .on_conflict_do_nothing(index_elements=["batch_id"]).returning(BufferBatch.batch_id))
        if db.session.execute(stmt).first() is None:
            imps = []  # this batch was committed before: its impressions are counted
        elif random.random() < 0.02:
            db.session.execute(delete(BufferBatch).where(BufferBatch.written_at < now - BATCH_MARKER_KEEP))

    rollups: dict[tuple, list[int]] = defaultdict(lambda: [0] * len(_ROLLUP_COLS))
    todo: list[tuple] = []  # (campaign_id, at, kind, data): conversions, made in campaign order

    if clicks:
        rows = [_click_row(rec) for rec in clicks]
        stmt = _insert(Click).on_conflict_do_nothing(index_elements=["click_id"]).returning(Click.click_id)
        new_ids = set(db.session.scalars(stmt, rows))
        result.clicks = len(new_ids)
        for row in rows:
            if row["click_id"] not in new_ids:
                continue
            new_ids.discard(row["click_id"])  # a click id twice in one batch counts once
            counts = rollups[(_hour(row["created_at"]), row["link_id"], row["sub1"] or "")]
            counts[0] += 1
            counts[1] += int(row["is_unique"])
            counts[2] += int(row["is_bot"])
            counts[3] += int(row["fallback_reason"] is not None)
            if row["is_unique"] and not row["is_bot"] and row["fallback_reason"] is None:
                todo.append((row["campaign_id"], row["created_at"], "click", row))

    billable: dict[int, list] = {}
    for rec in imps:
        at = _at(rec)
        bot = bool(rec.get("bot"))
        link_id = int(rec["link_id"])
        counts = rollups[(_hour(at), link_id, _s(rec.get("sub1"), 255) or "")]
        counts[4] += int(not bot)
        counts[5] += int(bot)
        result.impressions += 1
        if not bot and not rec.get("fb"):
            entry = billable.setdefault(link_id, [0, int(rec["campaign_id"]), int(rec["partner_id"]), at])
            entry[0] += 1
            entry[3] = max(entry[3], at)

    if rollups:
        upsert_add(TrafficRollup, ("hour", "link_id", "sub1"), _ROLLUP_COLS, rollups)
        apply_traffic_counts(rollups, known)  # the daily and campaign rollups (reports)

    for link_id in sorted(billable):
        n, campaign_id, partner_id, at = billable[link_id]
        ins = _insert(LinkCounter)
        counter = LinkCounter.__table__.c.impressions
        stmt = (ins.values(link_id=link_id, impressions=n)
                .on_conflict_do_update(index_elements=["link_id"],
                                       set_={"impressions": counter + ins.excluded.impressions})
                .returning(LinkCounter.impressions))
        total = int(db.session.execute(stmt).scalar_one())
        before = total - n
        for k in range(before // IMPRESSIONS_PER_CONVERSION + 1, total // IMPRESSIONS_PER_CONVERSION + 1):
            todo.append((campaign_id, at, "impression",
                         {"link_id": link_id, "partner_id": partner_id, "n": k * IMPRESSIONS_PER_CONVERSION}))

    if todo:
        campaign_ids = {t[0] for t in todo}
        events = {
            (ev.campaign_id, ev.key): ev
            for ev in db.session.scalars(
                select(CampaignEvent).where(CampaignEvent.campaign_id.in_(campaign_ids),
                                            CampaignEvent.key.in_(("click", "impression")))
            )
        }
        for campaign_id, at, kind, data in sorted(todo, key=lambda t: (t[0], t[1], t[2])):
            event = events.get((campaign_id, kind))
            if event is None:
                continue
            common = {"campaign_id": campaign_id, "event": event, "link_id": data["link_id"],
                      "partner_id": data["partner_id"], "txn_id": None, "amount_minor": None,
                      "duration_s": None, "status": "pending", "reason": None}
            if kind == "click":
                rec = record_conversion(**common, click_id=data["click_id"], click_at=data["created_at"])
            else:
                rec = record_conversion(**common, click_id=None, click_at=None,
                                        key=f"i:{data['link_id']}:{data['n']}")
            result.conversions += int(rec.created)

    db.session.commit()
    return result
