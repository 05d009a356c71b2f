"""Multi-touch attribution: which partners touched a conversion, and with what weight
(CONTRACT §4 "Touches"; issue 6 item 2).

Touches are the visitor's non-bot, non-fallback clicks on the campaign's links (any partner's
link of the same campaign; "bot" is ``Click.is_bot``, which every flagged click carries: bot
agents and, v2, ``non_navigation`` loads of a link by an ``<img>`` or ``<iframe>``, so a
stuffed click never becomes a touch) whose time is inside the attribution window (``created_at`` of the
conversion minus ``campaign.attribution_window_days`` days, inclusive) and not after the
converting click (ties on the timestamp are broken by the click row id). Clicks of one partner
count as one touch, placed at that partner's latest click; the converting click's partner is
always the last touch (the converter). The weights come from the campaign's
``attribution_model`` (:func:`partnernet.ledger.splits.touch_weights`).

The visitor is read from the converting click's row (``Click.visitor``: the id in the
server-signed visitor cookie, else the salted daily hash of IP and user agent). Conversions without a click (coupon and
tracking-number conversions) and conversions whose click row cannot be found have one touch:
the converter.

Buffered clicks: with Redis the redirect only buffers the click, so the split job may run
before the converting click row (or an earlier touch) is written. :func:`ensure_click_written`
is therefore called by the split job (:func:`partnernet.ledger.services.sync_conversion`)
before it locks the conversion: when the converting click row is missing it flushes the click
buffer itself (waiting, at most ``PARTNERNET_ATTRIBUTION_FLUSH_WAIT_S`` seconds, default 10,
for a flush already running in another process), so every click buffered before the postback
is in the database when the touches are read. If the row is still missing after that (the
click was lost), the split falls back to the converter alone (logged).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from flask import current_app
from sqlalchemy import and_, or_, select

from ..extensions import db
from ..models import Campaign, Click, Conversion
from .splits import ATTRIBUTION_MODELS, touch_weights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Touch:
    """One partner's touch: its latest click (``click_id``, ``at`` UTC) before the conversion.
    ``click_id`` is None for the converter of a conversion without a click."""

    partner_id: int
    click_id: str | None
    at: datetime | None


def click_row(click_id: str | None) -> Click | None:
    """The stored click with public id ``click_id``, or None."""
    if not click_id:
        return None
    return db.session.scalar(select(Click).where(Click.click_id == click_id))


def ensure_click_written(click_id: str | None) -> bool:
    """Make sure the click ``click_id`` is in the database before attribution reads it.

    Without Redis clicks are written by the redirect itself: nothing to do. With Redis, when
    the row is missing, flush the click buffer (:func:`partnernet.tracking.buffer.flush_clicks`,
    which commits its own batches); when another process holds the flush lock, wait for it,
    polling, at most ``PARTNERNET_ATTRIBUTION_FLUSH_WAIT_S`` seconds. Returns True when the
    row exists afterwards. Never raises for a Redis or flush error (logged; the split then
    uses what is in the database). When it flushes, it ends the session's transaction (the
    flush commits its batches; the reads after it are rolled back)."""
    if not click_id:
        return False
    try:
        if click_row(click_id) is not None:
            return True
        if not current_app.config.get("REDIS_URL"):
            return False
        from ..tracking.buffer import flush_clicks, has_buffered

        wait = float(current_app.config.get("PARTNERNET_ATTRIBUTION_FLUSH_WAIT_S") or 10.0)
        deadline = time.monotonic() + wait
        while True:
            flushed = flush_clicks(time_budget_s=wait)
            db.session.rollback()
            found = click_row(click_id) is not None
            db.session.rollback()
            if found:
                return True
            if flushed == 0 and not has_buffered():
                return False  # nothing left to write: the click is not coming
            if time.monotonic() > deadline:
                log.warning("click %s still not written after %.1f s", click_id, wait)
                return False
            if flushed == 0:
                time.sleep(0.05)  # another process is flushing
    except Exception:
        db.session.rollback()
        log.exception("could not flush the click buffer before attributing click %s", click_id)
        return False


def touches(conv: Conversion) -> list[Touch]:
    """The touches of ``conv``, oldest first, the converter last (see the module notes).
    Reads only."""
    converter = Touch(conv.partner_id, conv.click_id, conv.click_at)
    cc = click_row(conv.click_id)
    if cc is None:
        return [converter]
    window_days = db.session.scalar(
        select(Campaign.attribution_window_days).where(Campaign.id == conv.campaign_id)
    )
    start = (conv.created_at or cc.created_at) - timedelta(days=int(window_days or 0))
    rows = db.session.execute(
        select(Click.partner_id, Click.click_id, Click.created_at, Click.id)
        .where(
            Click.campaign_id == conv.campaign_id,
            Click.visitor == cc.visitor,
            Click.is_bot.is_(False),
            Click.fallback_reason.is_(None),
            Click.created_at >= start,
            or_(Click.created_at < cc.created_at, and_(Click.created_at == cc.created_at, Click.id <= cc.id)),
        )
        .order_by(Click.created_at, Click.id)
    ).all()
    latest: dict[int, tuple] = {}
    for pid, cid, at, rid in rows:
        latest[pid] = (at, rid, cid)  # rows are in time order: the last one wins
    others = sorted(
        ((at, rid, pid, cid) for pid, (at, rid, cid) in latest.items() if pid != conv.partner_id),
    )
    out = [Touch(pid, cid, at) for at, _rid, pid, cid in others]
    out.append(Touch(conv.partner_id, cc.click_id, cc.created_at))
    return out


def weighted_touches(conv: Conversion, model: str | None) -> list[tuple[int, Decimal]]:
    """``[(partner_id, weight), ...]`` oldest first for :func:`partnernet.ledger.splits.split`,
    under ``model`` (an unknown or missing model counts as ``last_click``)."""
    ts = touches(conv)
    if model not in ATTRIBUTION_MODELS:
        model = "last_click"
    weights = touch_weights(model, len(ts))
    return [(t.partner_id, w) for t, w in zip(ts, weights, strict=True)]
