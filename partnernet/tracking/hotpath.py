"""The tracking redirect (CONTRACT §1): from token to answer.

The view parses the request into plain values and calls :func:`handle_click` (the pixel:
:func:`partnernet.tracking.impressions.handle_impression`); these never touch ``request``.

State. Link, campaign, client and partner state comes from :mod:`.linkstate` (an
in-process cache checked against the Redis state version, or read fresh without Redis).

One round trip. A click on a link whose cached entry is younger than
:data:`MAX_ENTRY_AGE_S` makes a single Redis call (a Lua script): the version
still matches → the unique key is set and the record pushed, atomically; the
version moved → nothing is written and the click takes the long way above.

Lean call. The one-trip script is sent by :class:`LeanScript` over a Redis connection
that each thread keeps for itself (no pool bookkeeping per click); a Redis that lost the
script (restart, ``SCRIPT FLUSH``) is answered with ``SCRIPT LOAD`` and a second try.

Recording. With Redis the click goes to the buffer (:mod:`.buffer`); when
Redis fails, or without Redis, it is written directly to the database by
:func:`partnernet.tracking.buffer.write_records`. A failure to record never
turns the redirect into an error page.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import select

from ..clock import utcnow
from ..extensions import db
from ..models import Click
from . import buffer
from .bots import is_bot
from .leanscript import LeanScript
from .linkstate import (MAX_ENTRIES, MAX_ENTRY_AGE_S, LinkState, StateCache, StateUnavailable, _Entry,  # noqa: F401
                        get_state, load_state, state_cache)
from .state import STATE_KEY, ensure_version
from .urls import SUB_NAMES, build_destination, choose_destination, clip_sub
from .visitor import visitor_for

__all__ = ["LeanScript", "visitor_for", "handle_click", "link_id_of", "get_state", "load_state", "state_cache",
           "StateUnavailable", "LinkState", "StateCache", "_Entry", "MAX_ENTRIES", "MAX_ENTRY_AGE_S"]

log = logging.getLogger(__name__)

UNIQUE_KEY_PREFIX = "partnernet:uniq:"
# json.dumps(record, separators=(",", ":")) without building an encoder per click: same text.
_RECORD_JSON = json.JSONEncoder(separators=(",", ":"))
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


def _redis():
    if not current_app.config.get("REDIS_URL"):
        return None
    from ..queue import get_redis

    return get_redis()


def _version_and_unique(
    r, link_id: int, visitor: str, check_unique: bool
) -> tuple[bytes | None, bool | None]:
    """One pipelined round trip: the state version (unless the cache is trusted for
    PARTNERNET_STATE_TTL_S) and, for a non-bot click, SET NX of the visitor's unique key.
    Returns (version, unique or None when not asked). Raises redis errors."""
    cache = state_cache()
    ttl = float(current_app.config.get("PARTNERNET_STATE_TTL_S") or 0)
    now = time.monotonic()
    want_version = not (ttl > 0 and cache.version is not None and now - cache.checked_at < ttl)
    pipe = r.pipeline(transaction=False)
    if want_version:
        pipe.get(STATE_KEY)
    if check_unique:
        window = int(current_app.config.get("PARTNERNET_UNIQUE_WINDOW_S") or 86400)
        pipe.set(f"{UNIQUE_KEY_PREFIX}{link_id}:{visitor}", b"1", nx=True, ex=window)
    results = pipe.execute() if (want_version or check_unique) else []
    version = cache.version
    if want_version:
        version = results.pop(0)
        if version is None:
            version = ensure_version(r)
        cache.version = version
        cache.checked_at = now
    unique = bool(results[0]) if check_unique else None
    return version, unique


def _seen_in_db(link_id: int, visitor: str, now) -> bool:
    """True when the visitor's last unique click on the link is inside the unique window.

    The same rule as the Redis key (SET NX with expiry at the unique click): a window opens
    at a unique click and lasts PARTNERNET_UNIQUE_WINDOW_S; repeats inside it do not extend it."""
    window = int(current_app.config.get("PARTNERNET_UNIQUE_WINDOW_S") or 86400)
    stmt = (
        select(Click.id)
        .where(Click.link_id == link_id, Click.visitor == visitor, Click.is_unique.is_(True),
               Click.created_at > now - timedelta(seconds=window))
        .limit(1)
    )
    return db.session.execute(stmt).first() is not None


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
    ``flag``: None for a human click, ``non_navigation`` or ``bot`` (:func:`click_flag`)."""

    location: str
    visitor: str
    cookie: str | None
    click_id: str
    is_bot: bool
    is_unique: bool
    fallback_reason: str | None
    flag: str | None = None


# One round trip for a click whose link state is cached: the version check, the unique key
# (SET NX with the unique window) and the buffer push, atomically. When the version moved,
# nothing is written and the caller takes the long way (reload, then push). The keys are not
# in one cluster hash slot: this needs a single Redis (or a primary with replicas), as
# deployed (README, Production).
_ONE_TRIP_LUA = """
local v = redis.call('GET', KEYS[1])
if v ~= ARGV[1] then
  return {0, 0, 0}
end
local u = 0
if ARGV[2] == '1' and redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then
  u = 1
end
redis.call('RPUSH', KEYS[3], ARGV[4] .. (u == 1 and 'true' or 'false') .. '}')
local due = 0
if redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[5]) then
  due = 1
end
return {1, u, due}
"""


def _one_trip_script(app) -> LeanScript:
    script = app.extensions.get("partnernet_one_trip_script")
    if script is None:
        script = app.extensions["partnernet_one_trip_script"] = LeanScript(_redis(), _ONE_TRIP_LUA)
    return script


def _usable_entry(cache: StateCache, link_id: int) -> _Entry | None:
    """The cached entry of ``link_id`` when it has a Redis version and is younger than
    :data:`MAX_ENTRY_AGE_S` (the entries :func:`get_state` would serve), else None."""
    entry = cache.entries.get(link_id)
    if entry is None or entry.version is None or time.monotonic() - entry.loaded_at >= MAX_ENTRY_AGE_S:
        return None
    return entry


def _click_in_one_trip(app, cache: StateCache, entry: _Entry, *, link_id: int, now, flag: str | None,
                       visitor: str, cookie: str | None, method: str, user_agent: str | None, ip: str | None,
                       referer: str | None, args: dict[str, str], unavailable_url: str) -> ClickOutcome | None:
    """The click on a cached link in one Redis round trip (:data:`_ONE_TRIP_LUA` through
    :class:`LeanScript`): same answer and same buffered record as the long way. Returns None,
    having written nothing, when the state version moved since ``entry`` was loaded. Raises
    redis errors."""
    location, click_id, reason, record = _compose(
        entry.state, link_id=link_id, now=now, flag=flag, visitor=visitor, method=method, user_agent=user_agent,
        ip=ip, referer=referer, args=args, unavailable_url=unavailable_url, app=app,
    )
    head = _RECORD_JSON.encode(record)[:-1] + ',"unique":'
    window = int(app.config.get("PARTNERNET_UNIQUE_WINDOW_S") or 86400)
    flush_ms = buffer.flush_window_ms()
    matched, unique, due = _one_trip_script(app)(
        keys=[STATE_KEY, f"{UNIQUE_KEY_PREFIX}{link_id}:{visitor}", buffer.BUFFER_KEY, buffer.FLUSH_SCHEDULED_KEY],
        args=[entry.version, "0" if flag else "1", window, head, flush_ms],
    )
    if not matched:
        return None
    cache.version, cache.checked_at = entry.version, time.monotonic()
    if due:
        buffer.enqueue_flush(flush_ms)
    return ClickOutcome(location, visitor, cookie, click_id, flag is not None, bool(unique), reason, flag)


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
    """One click through a tracking link (CONTRACT §1). ``cookie``: the visitor cookie as sent
    (verified here, :mod:`.visitor`); ``fetch_dest``: the ``Sec-Fetch-Dest`` header (None when
    absent); ``args``: the first value of each query parameter (``sub1``..``sub5``, ``url``);
    ``unavailable_url``: our offer-unavailable page. Returns None when the token does not
    verify or names no link (the view answers 404). Raises :class:`StateUnavailable` when the
    state cannot be read at all.

    The click is buffered in Redis (or written directly, see the module docstring) with its
    click ID, visitor, sub IDs (first 255 code points), bot/unique flags, the bot ``flag``
    (:func:`click_flag`), fallback reason and destination. A bot click (non-navigation ones
    included) is never unique and never uses up the visitor's unique click.
    """
    app = current_app._get_current_object()
    link_id = link_id_of(token, app=app)
    if link_id is None:
        return None
    now = utcnow()
    flag = click_flag(method, user_agent, fetch_dest)
    bot = flag is not None
    visitor, new_cookie = visitor_for(cookie, ip, user_agent, app=app)

    use_redis = bool(app.config.get("REDIS_URL"))
    version: bytes | None = None
    unique: bool | None = None
    redis_ok = False
    if use_redis:
        cache = state_cache(app)
        entry = _usable_entry(cache, link_id)
        if entry is not None:
            try:
                outcome = _click_in_one_trip(
                    app, cache, entry, link_id=link_id, now=now, flag=flag, visitor=visitor,
                    cookie=new_cookie, method=method, user_agent=user_agent, ip=ip, referer=referer,
                    args=args, unavailable_url=unavailable_url,
                )
            except Exception as exc:  # noqa: BLE001 - Redis down: state from the DB, click written directly
                log.warning("redis unavailable on the redirect (%s); reading state from the database", exc)
                use_redis = False
            else:
                if outcome is not None:
                    return outcome
    r = _redis() if use_redis else None
    if r is not None:
        try:
            version, unique = _version_and_unique(r, link_id, visitor, check_unique=not bot)
            redis_ok = True
        except Exception as exc:  # noqa: BLE001 - Redis down: state from the DB, click written directly
            log.warning("redis unavailable on the redirect (%s); reading state from the database", exc)
    state = get_state(link_id, version, trust_cache=redis_ok)
    if state is None:
        return None

    if bot:
        unique = False
    elif unique is None:
        try:
            unique = not _seen_in_db(link_id, visitor, now)
        except Exception:
            db.session.rollback()
            log.exception("unique check failed; click counted as not unique")
            unique = False

    location, click_id, reason, record = _compose(
        state, link_id=link_id, now=now, flag=flag, visitor=visitor, method=method, user_agent=user_agent,
        ip=ip, referer=referer, args=args, unavailable_url=unavailable_url,
    )
    record["unique"] = bool(unique)
    _record(record, use_redis=redis_ok)
    return ClickOutcome(location, visitor, new_cookie, click_id, bot, bool(unique), reason, flag)


def _record(record: dict, *, use_redis: bool) -> None:
    """Buffer ``record`` in Redis, else write it to the database; never raises."""
    if use_redis:
        try:
            buffer.push(record)
            return
        except Exception as exc:  # noqa: BLE001 - Redis failed: write it directly
            log.warning("click buffer unavailable (%s); writing the click directly", exc)
    try:
        buffer.write_records([record])
    except Exception:
        db.session.rollback()
        log.exception("could not record %s on link %s", record.get("t"), record.get("link_id"))
