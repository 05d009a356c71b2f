"""Writing click and impression records to the database (CONTRACT §1, §2, §5): the one
writer behind both recording paths, the Redis buffer's flush (:mod:`.buffer`) and the
redirect's direct write (no Redis, or Redis failing). Records are the dicts the redirect
and the pixel build (:mod:`.hotpath`, :mod:`.impressions`).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import delete, select

from ..clock import utcnow
from ..extensions import db
from ..models import TRAFFIC_COLUMNS, BufferBatch, CampaignEvent, Click, Link, LinkCounter, TrafficRollup
from ..models.tracking import ImpressionVisit
from ..reporting.rollup import apply_traffic_counts, upsert_add
from ..reporting.rollup import dialect_insert as _insert
from .copyload import insert_clicks

IMPRESSIONS_PER_CONVERSION = 1000
# BufferBatch markers and ImpressionVisit rows are kept this long, then pruned.
BATCH_MARKER_KEEP = timedelta(days=2)


@dataclass
class WriteResult:
    """What :func:`write_records` wrote: new click rows, impressions counted (bot ones included),
    billable impressions among them, conversions made."""

    clicks: int = 0
    impressions: int = 0
    billable_impressions: int = 0
    conversions: int = 0


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
        "flag": _s(rec.get("flag"), 32),
        "is_unique": bool(rec.get("unique")),
        "fallback_reason": _s(rec.get("fb"), 32),
        "destination": _s(rec.get("dest")),
    }


def _visit_key(rec: dict, at: datetime) -> str | None:
    """The :class:`ImpressionVisit` key of an impression record, or None for a record without a
    visitor (written by a version that did not record one: billed as before)."""
    visitor = _s(rec.get("visitor"), 64)
    if not visitor:
        return None
    return f"{int(rec['link_id'])}:{at.astimezone(UTC):%Y%m%d%H}:{visitor}"


def _billable(candidates: list[tuple[dict, datetime]], now: datetime) -> list[tuple[dict, datetime]]:
    """The billable ones among non-bot, non-fallback impressions ``[(record, at), ...]`` (in
    buffer order): each visitor's first on a link in a UTC hour (CONTRACT §2, v2). Inserts an
    :class:`ImpressionVisit` per (link, hour, visitor) with ``ON CONFLICT DO NOTHING
    RETURNING``, in the caller's transaction: an impression is billable when its key is new
    in this batch and its row was inserted here, so a key taken by an earlier batch or by a
    concurrent writer (who commits first; PostgreSQL makes this insert wait for it) bills
    nothing. Now and then prunes rows older than :data:`BATCH_MARKER_KEEP`."""
    if not candidates:
        return []
    firsts: dict[str, tuple[dict, datetime]] = {}
    out: list[tuple[dict, datetime]] = []
    for rec, at in candidates:
        key = _visit_key(rec, at)
        if key is None:
            out.append((rec, at))
        elif key not in firsts:
            firsts[key] = (rec, at)
    if firsts:
        rows = [{"key": key, "hour": _hour(at)} for key, (_rec, at) in firsts.items()]
        stmt = (_insert(ImpressionVisit).on_conflict_do_nothing(index_elements=["key"])
                .returning(ImpressionVisit.key))
        inserted = set(db.session.scalars(stmt, rows))
        out.extend(pair for key, pair in firsts.items() if key in inserted)
        if random.random() < 0.02:
            db.session.execute(delete(ImpressionVisit).where(ImpressionVisit.hour < now - BATCH_MARKER_KEEP))
    return out


def _decide_unique_in_db(clicks: list[dict]) -> None:
    """Set ``unique`` on click records that have none (written directly: no Redis, or Redis
    failing), in order (CONTRACT §1): a non-bot click is unique when its visitor has no unique
    click on the link in the ``PARTNERNET_UNIQUE_WINDOW_S`` before it, in the database or
    earlier in this batch. (With Redis the stream writer decides, :mod:`.buffer`.)"""
    window = timedelta(seconds=int(current_app.config.get("PARTNERNET_UNIQUE_WINDOW_S") or 86400))
    last: dict[tuple[int, str], datetime] = {}
    for rec in clicks:
        if "unique" in rec:
            continue
        if rec.get("bot"):
            rec["unique"] = False
            continue
        at = _at(rec)
        key = (int(rec["link_id"]), _s(rec.get("visitor"), 64) or "")
        seen = last.get(key)
        if seen is None:
            stmt = (select(Click.created_at)
                    .where(Click.link_id == key[0], Click.visitor == key[1], Click.is_unique.is_(True),
                           Click.created_at > at - window, Click.created_at <= at)
                    .order_by(Click.created_at.desc()).limit(1))
            seen = db.session.scalar(stmt)
        unique = seen is None or at - seen >= window
        rec["unique"] = unique
        if unique:
            last[key] = at
        elif seen is not None:
            last.setdefault(key, seen)


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

    Impressions: ``impressions`` (every recorded non-bot impression, what reports show,
    CONTRACT §5) and ``bot_impressions`` (bot ones, kept apart) in the rollup, sub1 as given.
    Billable impressions (CONTRACT §2, v2) are the non-bot impressions of a link not in
    fallback that are their visitor's first on that link in that UTC hour (:func:`_billable`,
    an :class:`ImpressionVisit` row each); each raises ``LinkCounter.impressions``, and every
    1,000th becomes an ``impression`` conversion (dedup key ``i:<link_id>:<n>``, n = 1000,
    2000, ...) when the campaign has that event. With ``batch_id`` given, impressions are
    counted only the first time that batch id is written (:class:`BufferBatch`).

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
        _decide_unique_in_db(clicks)
        rows = [_click_row(rec) for rec in clicks]
        new_ids = insert_clicks(rows)  # COPY on PostgreSQL (.copyload); ON CONFLICT skips those stored
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
    candidates: list[tuple[dict, datetime]] = []
    for rec in imps:
        at = _at(rec)
        bot = bool(rec.get("bot"))
        link_id = int(rec["link_id"])
        counts = rollups[(_hour(at), link_id, _s(rec.get("sub1"), 255) or "")]
        counts[4] += int(not bot)
        counts[5] += int(bot)
        result.impressions += 1
        if not bot and not rec.get("fb"):
            candidates.append((rec, at))
    for rec, at in _billable(candidates, now):
        link_id = int(rec["link_id"])
        entry = billable.setdefault(link_id, [0, int(rec["campaign_id"]), int(rec["partner_id"]), at])
        entry[0] += 1
        entry[3] = max(entry[3], at)
        result.billable_impressions += 1

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
