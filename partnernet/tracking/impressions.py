"""The impression pixel (CONTRACT §2): from token to a recorded impression.

Like a click, an impression is buffered in Redis (or, without Redis or when Redis fails,
written directly) by :func:`partnernet.tracking.hotpath.submit_record`; the writer
(:func:`partnernet.tracking.buffer.write_records`) counts it and decides whether it is
billable.

Billable impressions (v2). The first non-bot impression of a visitor on a link in one UTC
clock hour (``12:00:00``-``12:59:59``) is billable; the other hits of that visitor in that hour
are recorded (they count in the reports' ``impressions``) but never billed. The visitor is
the one of §1 (the signed visitor cookie when the browser sends it, else the keyed hash of
IP and user agent, :mod:`.visitor`); the pixel itself sets no cookie (an ``<img>`` on a
partner's page is a third-party load, where a ``SameSite=Lax`` cookie is neither sent nor
reliably stored).

Where the once-per-visitor-hour check lives: in the writer, not here. The pixel only puts
the visitor id into the record; :func:`~partnernet.tracking.buffer.write_records` inserts one
:class:`~partnernet.models.tracking.ImpressionVisit` row per (link, hour, visitor) with
``ON CONFLICT DO NOTHING`` and bills only the impressions whose row it inserted. So the rule
is enforced by a primary key in the database, the same way on both paths (buffered with
Redis, written directly without it or during a Redis outage) and across concurrent requests
and processes; the pixel costs no extra Redis command and no database write of its own.

``Sec-Fetch-Dest`` is not judged here: an ``<img>`` pixel legitimately sends ``image``.
"""

from __future__ import annotations

import logging

from flask import current_app

from ..clock import utcnow
from .bots import is_bot
from .hotpath import get_state, link_id_of, submit_record
from .linkstate import LinkState
from .urls import clip_sub
from .visitor import cookie_visitor

log = logging.getLogger(__name__)


def handle_impression(
    token: str,
    *,
    method: str,
    user_agent: str | None,
    ip: str | None = None,
    cookie: str | None = None,
    args: dict[str, str],
) -> bool:
    """One impression through the pixel (CONTRACT §2). ``cookie``: the visitor cookie as sent
    (None: none); ``ip``: the client's IP; ``args``: the first value of each query parameter
    (``sub1``). Returns False when the token does not verify or names no link (404). Raises
    :class:`partnernet.tracking.hotpath.StateUnavailable` when the link's state cannot be read.

    Records the impression (bot ones flagged) through the buffer like a click, with its
    visitor (non-bot impressions only; see the module notes for what is billed); an
    impression while the link is in fallback (paused, over budget, partner not approved) is
    counted in the traffic figures but never billed."""
    app = current_app._get_current_object()
    link_id = link_id_of(token, app=app)
    if link_id is None:
        return False
    state = get_state(link_id, app=app)
    if state is None:
        return False
    record_impression(app, link_id, state, method=method, user_agent=user_agent, ip=ip, cookie=cookie, args=args)
    return True


def record_impression(app, link_id: int, state: LinkState, *, method: str, user_agent: str | None,
                      ip: str | None, cookie: str | None, args: dict[str, str]) -> None:
    """Build the record of one impression on ``state`` and hand it on
    (:func:`partnernet.tracking.hotpath.submit_record`); see :func:`handle_impression`."""
    bot = is_bot(method, user_agent)
    record = {
        "t": "i",
        "link_id": link_id,
        "campaign_id": state.campaign_id,
        "partner_id": state.partner_id,
        "at": utcnow().isoformat(),
        "sub1": clip_sub(args.get("sub1")),
        "bot": bot,
        "fb": state.fallback_reason,
    }
    if not bot:
        record["visitor"] = cookie_visitor(cookie, ip, user_agent, app=app)
    submit_record(app, record)
