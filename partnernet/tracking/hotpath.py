"""The tracking redirect (CONTRACT §1): from token to answer.

Two doors lead here: the lean WSGI handler (:mod:`.lean`, in front of Flask) for a click on a
link whose state is cached, and the Flask view (:mod:`.views`) for everything else (first
click of a link in a process, Redis subscription down, no Redis, bad tokens). Both call
:func:`record_click` with plain values; nothing here touches ``request``.

State. Link, campaign, client and partner state comes from :mod:`.linkstate` (an in-process
cache that Redis pub/sub invalidates, or read fresh without Redis).

No round trip of its own. The click record goes to the process's batch (:mod:`.batcher`),
which sends the clicks of concurrent requests to the Redis stream in one call; the writer
(:mod:`.stream`) decides which clicks are unique, in stream order, and writes them to the
database. Without Redis (or when Redis fails) the record is written directly by
:func:`partnernet.tracking.writer.write_records`, which then decides uniqueness from the
database. A failure to record never turns the redirect into an error page.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from flask import current_app

from ..clock import utcnow
from ..extensions import db
from .batcher import get_batcher
from .bots import is_bot
from .linkstate import (MAX_ENTRIES, MAX_ENTRY_AGE_S, LinkState, StateCache, StateUnavailable, _Entry,  # noqa: F401
                        cached_state, get_state, load_state, state_cache)
from .urls import SUB_NAMES, build_destination, choose_destination, clip_sub
from .visitor import visitor_for
from .writer import write_records

__all__ = ["visitor_for", "handle_click", "record_click", "submit_record", "link_id_of", "get_state",
           "cached_state", "load_state", "state_cache", "StateUnavailable", "LinkState", "StateCache", "_Entry",
           "MAX_ENTRIES", "MAX_ENTRY_AGE_S"]

log = logging.getLogger(__name__)
_UA_MAX = 1000
_REFERER_MAX = 2000
_IP_MAX = 64


MAX_TOKENS = 100_000


def link_id_of(token: str, *, app=None) -> int | None:
    """The link id of ``token`` (CONTRACT §1 token rules, via the app's LinkSigner), or None.
    ``app``: the current app (default: looked up).

    Verified tokens are remembered per process (a token is deterministic for its link and
    key, and the keys are fixed for the life of the process), so a popular link's token is
    checked once, not on every click. The cache is keyed by the exact token string, so
    another spelling of a valid token is verified (and refused) on its own. Unverified
    tokens are never remembered."""
    ext = (app or current_app).extensions
    tokens = ext.get("partnernet_token_cache")
    if tokens is None:
        tokens = ext.setdefault("partnernet_token_cache", {})
    link_id = tokens.get(token)
    if link_id is not None:
        return link_id
    link_id = ext["partnernet_link_signer"].loads(token)
    if link_id is not None:
        if len(tokens) >= MAX_TOKENS:
            tokens.clear()
        tokens[token] = link_id
    return link_id


def _clean(value: str | None, limit: int) -> str | None:
    """A header value fit for storage: NULs dropped, cut to ``limit`` characters, valid UTF-8."""
    if value is None:
        return None
    value = value.replace("\x00", "")[:limit]
    return value.encode("utf-8", "replace").decode("utf-8")


MAX_DESTINATION_SPLITS = 10_000
_destination_splits: dict[tuple[str, str], tuple[str, str] | None] = {}


def destination_split(template: str, click_param: str) -> tuple[str, str] | None:
    """(prefix, suffix) such that ``build_destination(template, click_id=c, ...)`` equals
    ``prefix + c + suffix`` for every click ID ``c`` (click IDs are URL-safe base64, which
    the click parameter's percent-encoding leaves as it is), or None when ``template`` holds
    a macro (then the sub IDs and ids enter the URL too) and the URL must be built per click.

    Remembered per template and click parameter (a link's or campaign's own URL, never the
    ``url`` query parameter), up to :data:`MAX_DESTINATION_SPLITS` entries; worked out by
    building the destination for two probe click IDs, and None unless both agree."""
    key = (template, click_param)
    try:
        return _destination_splits[key]
    except KeyError:
        pass
    split = None
    if "{" not in template:
        a, b = (build_destination(template, click_id=probe, subs={}, partner_id=0, campaign_id=0,
                                  click_param=click_param) for probe in ("A", "B"))
        prefix = os.path.commonprefix([a, b])
        suffix = a[len(prefix) + 1:]
        if a == prefix + "A" + suffix and b == prefix + "B" + suffix:
            split = (prefix, suffix)
    if len(_destination_splits) >= MAX_DESTINATION_SPLITS:
        _destination_splits.clear()
    _destination_splits[key] = split
    return split


def _compose(state: LinkState, *, link_id: int, now, flag: str | None, visitor: str, method: str,
             user_agent: str | None, ip: str | None, referer: str | None, args: dict[str, str],
             unavailable_url: str, app=None) -> tuple[str, str, str | None, dict]:
    """The answer and the buffered record of one click on ``state`` (CONTRACT §1), without the
    ``unique`` flag. ``flag``: None for a human click, else why it is a bot click
    (:func:`click_flag`); the click ID carries the bot bit, so a postback on it is rejected
    ``bot_click`` even before the row is written. ``app``: the current app (default: looked
    up). Returns (location, click_id, fallback_reason, record)."""
    reason = state.fallback_reason
    click_id = (app or current_app).extensions["partnernet_click_signer"].make(
        link_id, int(now.timestamp()), bot=flag is not None, fallback=reason is not None
    )
    subs = {name: clip_sub(args.get(name)) for name in SUB_NAMES}
    if reason:
        location = state.fallback_destination(unavailable_url)
    else:
        source, template = choose_destination(
            args.get("url"), state.deep_link, state.destination_url, state.deep_link_hosts
        )
        split = destination_split(template, state.click_param) if source != "url" else None
        if split is not None:
            location = split[0] + click_id + split[1]
        else:
            location = build_destination(
                template, click_id=click_id, subs=subs, partner_id=state.partner_id,
                campaign_id=state.campaign_id, click_param=state.click_param,
            )
    record = {
        "t": "c",
        "click_id": click_id,
        "link_id": link_id,
        "campaign_id": state.campaign_id,
        "partner_id": state.partner_id,
        "at": now.isoformat(),
        "ip": _clean(ip, _IP_MAX),
        "ua": _clean(user_agent, _UA_MAX),
        "referer": _clean(referer, _REFERER_MAX),
        "visitor": visitor,
        **subs,
        "method": (method or "GET").upper()[:8],
        "bot": flag is not None,
        "flag": flag,
        "fb": reason,
        "dest": location,
    }
    return location, click_id, reason, record


FLAG_NON_NAVIGATION = "non_navigation"
FLAG_BOT = "bot"


def click_flag(method: str, user_agent: str | None, fetch_dest: str | None) -> str | None:
    """Why a click is a bot click, or None for a human one (CONTRACT §1):

    - ``non_navigation`` (v2): ``Sec-Fetch-Dest`` is present and is not ``document``: the
      link was loaded by an ``<img>``, ``<iframe>``, ``<script>``, fetch or prefetch (the
      cookie-stuffing pattern), whatever the agent;
    - ``bot``: a ``HEAD`` request, no or a blank ``User-Agent``, or a known bot, preview,
      mail-scanner or command-line agent (:func:`partnernet.tracking.bots.is_bot`).

    Requests without ``Sec-Fetch-Dest`` (older browsers, in-app views) are judged by the
    second rule alone."""
    if fetch_dest is not None and fetch_dest != "document" and fetch_dest.strip().lower() != "document":
        return FLAG_NON_NAVIGATION
    return FLAG_BOT if is_bot(method, user_agent) else None


@dataclass
class ClickOutcome:
    """What the view answers for a verified token: a 302 to ``location``; ``cookie``: the
    signed visitor cookie value to set (None: the request's own cookie is valid and current).
    ``flag``: None for a human click, ``non_navigation`` or ``bot`` (:func:`click_flag`).
    Whether the click is unique is decided later, by the writer (:mod:`.stream`)."""

    location: str
    visitor: str
    cookie: str | None
    click_id: str
    is_bot: bool
    fallback_reason: str | None
    flag: str | None = None


def record_click(app, link_id: int, state: LinkState, *, method: str, user_agent: str | None, ip: str | None,
                 referer: str | None, cookie: str | None, args: dict[str, str], unavailable_url: str,
                 fetch_dest: str | None = None) -> ClickOutcome:
    """Compose the answer and the record of one click on ``state`` (CONTRACT §1) and hand the
    record on (:func:`submit_record`). ``cookie``: the visitor cookie as sent (verified here,
    :mod:`.visitor`); ``fetch_dest``: ``Sec-Fetch-Dest`` (None when absent); ``args``: the
    first value of each query parameter (``sub1``..``sub5``, ``url``). Never raises for a
    recording failure (logged)."""
    now = utcnow()
    flag = click_flag(method, user_agent, fetch_dest)
    visitor, new_cookie = visitor_for(cookie, ip, user_agent, app=app)
    location, click_id, reason, record = _compose(
        state, link_id=link_id, now=now, flag=flag, visitor=visitor, method=method, user_agent=user_agent,
        ip=ip, referer=referer, args=args, unavailable_url=unavailable_url, app=app,
    )
    submit_record(app, record)
    return ClickOutcome(location, visitor, new_cookie, click_id, flag is not None, reason, flag)


def handle_click(
    token: str,
    *,
    method: str,
    user_agent: str | None,
    ip: str | None,
    referer: str | None,
    cookie: str | None,
    args: dict[str, str],
    unavailable_url: str,
    fetch_dest: str | None = None,
) -> ClickOutcome | None:
    """One click through a tracking link (CONTRACT §1), inside an app context (the Flask
    view). Returns None when the token does not verify or names no link (the view answers
    404). Raises :class:`StateUnavailable` when the state cannot be read at all.

    The click goes to the batch (or is written directly, see the module docstring) with its
    click ID, visitor, sub IDs (first 255 code points), the bot ``flag``
    (:func:`click_flag`), fallback reason and destination. A bot click (non-navigation ones
    included) is never unique and never uses up the visitor's unique click."""
    app = current_app._get_current_object()
    link_id = link_id_of(token, app=app)
    if link_id is None:
        return None
    state = get_state(link_id, app=app)
    if state is None:
        return None
    return record_click(app, link_id, state, method=method, user_agent=user_agent, ip=ip, referer=referer,
                        cookie=cookie, args=args, unavailable_url=unavailable_url, fetch_dest=fetch_dest)


def submit_record(app, record: dict) -> None:
    """Hand a click or impression record on: to the process's batch with ``REDIS_URL``, else
    written to the database at once (inside the caller's app context). Never raises."""
    if app.config.get("REDIS_URL"):
        get_batcher(app).submit(record)
        return
    try:
        write_records([record])
    except Exception:
        db.session.rollback()
        log.exception("could not record %s on link %s", record.get("t"), record.get("link_id"))
