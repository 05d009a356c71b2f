"""The click writer: clicks and impressions wait in a Redis stream and are written in batches
(CONTRACT §1 "the redirect does not wait on the database"; ARCHITECTURE, the hot path).

Web processes append batches of records to :data:`~partnernet.tracking.batcher.STREAM_KEY`
(:mod:`.batcher`). :func:`flush_clicks` is the consumer: one at a time (a Redis lock), as the
single consumer ``writer`` of the group :data:`GROUP`, so it sees every batch in stream order.
The worker runs it in a loop with a blocking read (a long-running consumer, ~1 ms behind the
redirect); ``flask drain`` and attribution call it too.

One pass, per read of up to :data:`READ_ENTRIES` entries:

1. entries a previous writer read but did not acknowledge (it was killed mid-batch) are read
   again first (``XREADGROUP ... 0``), then new ones (``>``);
2. :func:`partnernet.tracking.producers.account` skips entries already written and records
   gaps (lost batches) in the same transaction;
3. the unique-click decision (CONTRACT §1) is made here, in stream order, by one Lua call
   (:data:`_UNIQUE_LUA`): a click is unique when its visitor's last unique click on the link
   is at least ``PARTNERNET_UNIQUE_WINDOW_S`` older (click time, not write time); the key
   holds the click ID, so a batch written again decides the same;
4. :func:`~partnernet.tracking.writer.write_records` writes them (``COPY`` on PostgreSQL) and
   commits; then the entries are acknowledged and deleted.

A kill anywhere loses nothing and doubles nothing: before the commit, the entries are read
again; after it, the producers' ``last_seq`` (committed with the clicks) skips them. A batch
that fails for a reason other than a database outage is retried one record at a time; records
that still fail go to :data:`DEAD_KEY`. Without ``REDIS_URL`` nothing is buffered: the redirect
writes directly and :func:`flush_clicks` / :func:`buffered_count` return 0.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from datetime import datetime

from flask import current_app
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from .. import queue
from ..extensions import db
from ..models import BufferBatch
from .batcher import STREAM_KEY, batch_id
from .producers import Entry, account, check_epoch
from .writer import BATCH_MARKER_KEEP, IMPRESSIONS_PER_CONVERSION, WriteResult, write_records

__all__ = ["BATCH_MARKER_KEEP", "IMPRESSIONS_PER_CONVERSION", "WriteResult", "write_records", "STREAM_KEY",
           "flush_clicks", "flush_clicks_job", "buffered_count", "has_buffered", "UNIQUE_KEY_PREFIX"]

log = logging.getLogger(__name__)

GROUP = "partnernet-writers"
CONSUMER = "writer"
LOCK_KEY = "partnernet:{clicks}:flush_lock"
DEAD_KEY = "partnernet:{clicks}:dead"
# The list buffer of earlier versions: its records are moved into the stream on first start.
LEGACY_KEYS = ("partnernet:{clicks}:processing", "partnernet:{clicks}:buffer")
UNIQUE_KEY_PREFIX = "partnernet:uniq:"
LOCK_TTL_MS = 60_000
READ_ENTRIES = 500

# KEYS: one unique key per click; ARGV: window_ms, then (click_id, at_ms) per key. A click is
# unique when the key is absent, holds this very click (written before), or holds a unique
# click at least window_ms older; the key then holds "<click_id> <at_ms>".
_UNIQUE_LUA = """
local window = tonumber(ARGV[1])
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local out = {}
for i, key in ipairs(KEYS) do
  local cid = ARGV[2 * i]
  local at = tonumber(ARGV[2 * i + 1])
  local v = redis.call('GET', key)
  local unique = 0
  if not v then
    unique = 1
  else
    local sp = string.find(v, ' ', 1, true)
    if sp then
      local cid0 = string.sub(v, 1, sp - 1)
      local at0 = tonumber(string.sub(v, sp + 1))
      if cid0 == cid then
        out[i] = 1
      elseif at - at0 >= window then
        unique = 1
      end
    end
  end
  if unique == 1 then
    local pxat = math.max(at + window, now_ms + 60000)
    redis.call('SET', key, cid .. ' ' .. at, 'PXAT', string.format('%d', pxat))
    out[i] = 1
  elseif not out[i] then
    out[i] = 0
  end
end
return out
"""

_MOVE_LEGACY_LUA = """
local moved = 0
for _, key in ipairs({KEYS[1], KEYS[2]}) do
  local items = redis.call('LRANGE', key, 0, 999)
  while #items > 0 do
    redis.call('XADD', KEYS[3], '*', 'p', 'legacy-list', 's', '0', 'c', '0', 'n', #items,
               'd', '[' .. table.concat(items, ',') .. ']', 'legacy', '1')
    redis.call('LTRIM', key, #items, -1)
    moved = moved + #items
    items = redis.call('LRANGE', key, 0, 999)
  end
end
return moved
"""

_BUFFERED_LUA = """
local total = 0
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
  local f = e[2]
  for i = 1, #f, 2 do
    if f[i] == 'n' then total = total + tonumber(f[i + 1]) end
  end
end
return total + redis.call('LLEN', KEYS[2]) + redis.call('LLEN', KEYS[3])
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


def buffered_count() -> int:
    """Clicks and impressions waiting in Redis (records in the stream, acknowledged or not, plus
    any left in an earlier version's list buffer); 0 without ``REDIS_URL``. Raises redis errors."""
    if not _has_redis():
        return 0
    return int(_redis().eval(_BUFFERED_LUA, 3, STREAM_KEY, *LEGACY_KEYS))


def has_buffered() -> bool:
    """True when anything waits in the stream (one ``XLEN``); False without ``REDIS_URL``."""
    if not _has_redis():
        return False
    pipe = _redis().pipeline(transaction=False)
    pipe.xlen(STREAM_KEY)
    for key in LEGACY_KEYS:
        pipe.llen(key)
    return any(int(x) for x in pipe.execute())


def _ensure_group(r) -> None:
    try:
        r.xgroup_create(STREAM_KEY, GROUP, id="0", mkstream=True)
    except Exception as exc:  # noqa: BLE001 - BUSYGROUP: it exists
        if "BUSYGROUP" not in str(exc):
            raise


def _read(r, pending: bool, block_ms: int):
    """Up to :data:`READ_ENTRIES` entries: this consumer's unacknowledged ones (``pending``),
    else new ones, waiting at most ``block_ms`` (0: not at all)."""
    try:
        reply = r.xreadgroup(GROUP, CONSUMER, {STREAM_KEY: "0" if pending else ">"}, count=READ_ENTRIES,
                             block=None if pending or not block_ms else block_ms)
    except Exception as exc:  # noqa: BLE001
        if "NOGROUP" not in str(exc):
            raise
        _ensure_group(r)  # a new (or reset) Redis
        return []
    if not reply:
        return []
    gone = [eid for eid, fields in reply[0][1] if not fields]  # deleted while pending: nothing to write
    if gone:
        r.xack(STREAM_KEY, GROUP, *gone)
    return [(eid, fields) for eid, fields in reply[0][1] if fields]


def flush_clicks(*, time_budget_s: float = 60.0, block_ms: int = 0) -> int:
    """Write buffered clicks and impressions to the database until the stream is empty (or
    ``time_budget_s`` seconds have passed; the next call goes on). ``block_ms``: how long the
    first read may wait for new entries (the worker's loop).

    Returns how many records were written (0 when another process holds the lock, or without
    ``REDIS_URL``). Raises database errors of an outage (the entries stay in Redis and are
    read again) and redis errors."""
    if not _has_redis():
        return 0
    r = _redis()
    token = secrets.token_hex(16)
    if not r.set(LOCK_KEY, token, nx=True, px=LOCK_TTL_MS):
        return 0
    total = 0
    deadline = time.monotonic() + time_budget_s
    try:
        check_epoch(r)
        if r.exists(*LEGACY_KEYS):
            r.eval(_MOVE_LEGACY_LUA, 3, *LEGACY_KEYS, STREAM_KEY)
        pending = True
        while True:
            items = _read(r, pending, block_ms if total == 0 else 0)
            if not items:
                if pending:
                    pending = False
                    continue
                break
            total += _write_entries(r, items)
            if not r.eval(_EXTEND_LUA, 1, LOCK_KEY, token, LOCK_TTL_MS) or time.monotonic() > deadline:
                break
    finally:
        try:
            r.eval(_RELEASE_LUA, 1, LOCK_KEY, token)
        except Exception:  # noqa: BLE001 - the lock expires on its own
            log.exception("could not release the click writer's lock")
    return total


def flush_clicks_job() -> int:
    """RQ job (queue ``partnernet-clicks``, kept for jobs queued by earlier versions):
    :func:`flush_clicks`. Never fails: on an error the clicks stay in the stream."""
    try:
        return flush_clicks()
    except Exception:  # noqa: BLE001
        db.session.rollback()
        log.exception("click flush failed; clicks stay in the stream")
        return 0


def _is_outage(exc: Exception) -> bool:
    """True for a database error that says the database is unreachable, not that the data is bad."""
    return isinstance(exc, (OperationalError, InterfaceError)) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def _parse(eid, fields: dict) -> Entry:
    f = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}

    def text(name, default=""):
        v = f.get(name)
        return v.decode() if isinstance(v, bytes) else (default if v is None else str(v))

    records = json.loads(f["d"])
    if not isinstance(records, list) or not all(isinstance(x, dict) for x in records):
        raise ValueError("stream entry without a list of records")
    producer = text("p")
    if text("legacy") == "1":  # an earlier version's list buffer: no numbering, written as is
        producer = ""
    skipped = tuple(int(x) for x in text("k").split(",") if x)
    return Entry(eid, producer, int(text("s", "0")), int(text("c", "0")), int(text("n", "0")), records,
                 skipped, int(text("kn", "0")), int(text("l", "0")))


def _decide_unique(r, records: list[dict]) -> None:
    """Set ``unique`` on every click record that has none (see the module notes; bot clicks
    are never unique and take no key), in order, in one Lua call."""
    todo = [rec for rec in records if rec.get("t", "c") == "c" and "unique" not in rec]
    keys, args, asked = [], [], []
    for rec in todo:
        if rec.get("bot"):
            rec["unique"] = False
            continue
        try:
            at_ms = int(datetime.fromisoformat(rec["at"]).timestamp() * 1000)
            key = f"{UNIQUE_KEY_PREFIX}{int(rec['link_id'])}:{rec.get('visitor') or ''}"
            click_id = str(rec["click_id"])
        except (KeyError, ValueError, TypeError):
            continue  # malformed: the writer sets it aside
        keys.append(key)
        args += [click_id, at_ms]
        asked.append(rec)
    if not keys:
        return
    window_ms = int(current_app.config.get("PARTNERNET_UNIQUE_WINDOW_S") or 86400) * 1000
    flags = r.eval(_UNIQUE_LUA, len(keys), *keys, window_ms, *args)
    for rec, flag in zip(asked, flags, strict=True):
        rec["unique"] = bool(flag)


def _marked_again(entries: list[Entry]) -> set[str]:
    """Insert the impression marker of each entry holding impressions; the ids of those whose
    marker existed (written before, directly, by a producer that thought Redis failed)."""
    from ..reporting.rollup import dialect_insert

    ids = {batch_id(e.producer, e.seq): e for e in entries
           if e.producer and any(rec.get("t") == "i" for rec in e.records)}
    if not ids:
        return set()
    from ..clock import utcnow

    now = utcnow()
    stmt = (dialect_insert(BufferBatch).on_conflict_do_nothing(index_elements=["batch_id"])
            .returning(BufferBatch.batch_id))
    new = set(db.session.scalars(stmt, [{"batch_id": b, "written_at": now} for b in ids]))
    return set(ids) - new


def _write_entries(r, items) -> int:
    entries, dead = [], []
    for eid, fields in items:
        try:
            entries.append(_parse(eid, fields))
        except (KeyError, ValueError, TypeError):
            dead.append(json.dumps({k.decode() if isinstance(k, bytes) else k: (v.decode("utf-8", "replace") if
                                    isinstance(v, bytes) else v) for k, v in fields.items()}))
    todo = account([e for e in entries if e.producer]) + [e for e in entries if not e.producer]
    again = _marked_again(todo)
    records = []
    for e in todo:
        if batch_id(e.producer, e.seq) in again:
            records.extend(rec for rec in e.records if rec.get("t", "c") == "c")
        else:
            records.extend(e.records)
    _decide_unique(r, records)
    try:
        write_records(records)
    except Exception as exc:  # noqa: BLE001
        db.session.rollback()
        if _is_outage(exc):
            raise
        log.exception("click batch failed; retrying its %d records one by one", len(records))
        for rec in records:
            try:
                write_records([rec])
            except Exception as exc2:  # noqa: BLE001
                db.session.rollback()
                if _is_outage(exc2):
                    raise
                log.exception("setting an unwritable %s record aside in %s", rec.get("t"), DEAD_KEY)
                dead.append(json.dumps(rec))
        account([e for e in entries if e.producer])
        _marked_again(todo)
        db.session.commit()
    if dead:
        r.rpush(DEAD_KEY, *dead)
    _ack(r, [eid for eid, _ in items])
    return len(records)


def _ack(r, ids: list) -> None:
    """Acknowledge and delete written entries (after their commit)."""
    pipe = r.pipeline(transaction=True)
    pipe.xack(STREAM_KEY, GROUP, *ids)
    pipe.xdel(STREAM_KEY, *ids)
    pipe.execute()
