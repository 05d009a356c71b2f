"""The tracking redirect and the impression pixel (CONTRACT §1, §2): from token to answer.

The view parses the request into plain values and calls :func:`handle_click` or
:func:`handle_impression`; these never touch ``request``.

State. Link, campaign, client and partner state (:class:`LinkState`) lives in an
in-process cache per app, keyed by link id. With ``REDIS_URL`` set, every
redirect reads the state version (:data:`partnernet.tracking.state.STATE_KEY`)
in the same pipelined round trip as its uniqueness check and reloads an entry
whose version is not the current one; a change that calls
:func:`~partnernet.tracking.state.bump_state_version` (pause, budget reached,
partner suspended, link edits) is therefore seen by the very next click in
every process. When the database is unreachable on a reload, the stale entry
is served. Without Redis the state is read fresh from the database on every
redirect (several processes may share one SQLite file), falling back to the
cached entry when the database fails.

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

import hashlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import current_app
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from sqlalchemy import select

from ..clock import utcnow
from ..extensions import db
from ..models import Campaign, CampaignEvent, Click, Client, Link, Partner
from . import buffer
from .bots import is_bot
from .state import STATE_KEY, ensure_version
from .urls import SUB_NAMES, build_destination, choose_destination, clip_sub

log = logging.getLogger(__name__)

UNIQUE_KEY_PREFIX = "partnernet:uniq:"
# An entry is reloaded after this long even when the version did not move (defence in depth).
MAX_ENTRY_AGE_S = 60.0
MAX_ENTRIES = 200_000
_VISITOR_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
# json.dumps(record, separators=(",", ":")) without building an encoder per click: same text.
_RECORD_JSON = json.JSONEncoder(separators=(",", ":"))
_UA_MAX = 1000
_REFERER_MAX = 2000
_IP_MAX = 64


class StateUnavailable(Exception):
    """The link's state could not be read (database down) and no cached copy exists."""


@dataclass(frozen=True)
class LinkState:
    """What the redirect needs to know about one link (ids, money in minor units).

    ``fallback_reason`` applies CONTRACT §1 in this order: campaign paused → ``paused``;
    spend reached the budget → ``over_budget``; a daily or monthly cap reached, until the
    window ends → ``over_daily_cap`` / ``over_monthly_cap``; partner suspended → ``partner_suspended``;
    any other partner status but approved → ``partner_not_approved``; else None.
    """

    link_id: int
    partner_id: int
    campaign_id: int
    campaign_status: str
    budget_minor: int | None
    spent_minor: int
    destination_url: str
    fallback_url: str | None
    click_param: str
    deep_link_hosts: tuple[str, ...]
    has_click_event: bool
    has_impression_event: bool
    website_url: str | None
    partner_status: str
    deep_link: str | None
    channel: str | None
    cap_reason: str | None = None
    cap_until: datetime | None = None

    @property
    def over_budget(self) -> bool:
        """True once spend has reached the budget (spent >= budget)."""
        return self.budget_minor is not None and self.spent_minor >= self.budget_minor

    @property
    def fallback_reason(self) -> str | None:
        """Why a click now goes to the fallback, or None (see the class docstring)."""
        if self.campaign_status != "active":
            return "paused"
        if self.over_budget:
            return "over_budget"
        if self.cap_reason and self.cap_until is not None and utcnow() < self.cap_until:
            return self.cap_reason  # over_daily_cap / over_monthly_cap (partnernet.clients.caps)
        if self.partner_status == "suspended":
            return "partner_suspended"
        if self.partner_status != "approved":
            return "partner_not_approved"
        return None

    def fallback_destination(self, unavailable_url: str) -> str:
        """The campaign's fallback URL as it is, else the client's website, else ours."""
        return self.fallback_url or self.website_url or unavailable_url


@dataclass
class _Entry:
    state: LinkState
    version: bytes | None
    loaded_at: float


@dataclass
class StateCache:
    """The per-app, per-process cache of :class:`LinkState` by link id."""

    entries: dict[int, _Entry] = field(default_factory=dict)
    version: bytes | None = None
    checked_at: float = 0.0

    def clear(self) -> None:
        """Forget every entry (tests, and when the cache grows past its bound)."""
        self.entries.clear()
        self.version = None
        self.checked_at = 0.0


def state_cache(app=None) -> StateCache:
    """The state cache of ``app`` (default: the current app)."""
    app = app or current_app
    cache = app.extensions.get("partnernet_state_cache")
    if cache is None:
        cache = app.extensions["partnernet_state_cache"] = StateCache()
    return cache


def load_state(link_id: int) -> LinkState | None:
    """Read the state of link ``link_id`` from the database in one query (None: no such link).
    Raises SQLAlchemy errors when the database fails."""
    click_ev = (
        select(CampaignEvent.id)
        .where(CampaignEvent.campaign_id == Campaign.id, CampaignEvent.key == "click")
        .exists()
    )
    imp_ev = (
        select(CampaignEvent.id)
        .where(CampaignEvent.campaign_id == Campaign.id, CampaignEvent.key == "impression")
        .exists()
    )
    stmt = (
        select(
            Link.id, Link.partner_id, Link.campaign_id, Link.deep_link, Link.channel,
            Campaign.status, Campaign.budget_minor, Campaign.spent_minor, Campaign.destination_url,
            Campaign.fallback_url, Campaign.click_param, Campaign.deep_link_hosts,
            Client.website_url, Partner.status, click_ev, imp_ev,
            Campaign.cap_reached_reason, Campaign.cap_reached_until,
        )
        .join(Campaign, Campaign.id == Link.campaign_id)
        .join(Client, Client.id == Campaign.client_id)
        .join(Partner, Partner.id == Link.partner_id)
        .where(Link.id == link_id)
    )
    row = db.session.execute(stmt).first()
    if row is None:
        return None
    (lid, partner_id, campaign_id, deep_link, channel, c_status, budget, spent, dest, fallback, click_param,
     hosts, website, p_status, has_click, has_imp, cap_reason, cap_until) = row
    return LinkState(
        link_id=lid, partner_id=partner_id, campaign_id=campaign_id, campaign_status=c_status,
        budget_minor=budget, spent_minor=spent or 0, destination_url=dest, fallback_url=fallback or None,
        click_param=click_param or "click_id",
        deep_link_hosts=tuple(h for h in (hosts or []) if isinstance(h, str)),
        has_click_event=bool(has_click), has_impression_event=bool(has_imp), website_url=website or None,
        partner_status=p_status, deep_link=deep_link or None, channel=channel,
        cap_reason=cap_reason, cap_until=cap_until,
    )


def get_state(link_id: int, version: bytes | None, *, trust_cache: bool) -> LinkState | None:
    """The state of ``link_id``: from the cache when ``trust_cache`` (Redis answered) and the
    entry was loaded under ``version`` less than :data:`MAX_ENTRY_AGE_S` ago, else from the
    database. A database failure serves the stale entry when there is one, else raises
    :class:`StateUnavailable`. None: no such link."""
    cache = state_cache()
    entry = cache.entries.get(link_id)
    now = time.monotonic()
    fresh = entry is not None and entry.version == version and now - entry.loaded_at < MAX_ENTRY_AGE_S
    if trust_cache and fresh:
        return entry.state
    try:
        state = load_state(link_id)
        db.session.rollback()  # end the read transaction; the redirect holds no connection
    except Exception as exc:
        db.session.rollback()
        if entry is not None:
            log.warning("state reload of link %s failed (%s); serving the cached state", link_id, exc)
            return entry.state
        raise StateUnavailable(str(exc)) from exc
    if state is None:
        cache.entries.pop(link_id, None)
        return None
    if len(cache.entries) >= MAX_ENTRIES:
        cache.entries.clear()
    cache.entries[link_id] = _Entry(state, version, now)
    return state


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


def _visitor_key(app=None) -> bytes:
    app = app or current_app
    ext = app.extensions
    key = ext.get("partnernet_visitor_key")
    if key is None:
        secret = app.config["SECRET_KEY"]
        secret = secret.encode() if isinstance(secret, str) else secret
        key = ext["partnernet_visitor_key"] = hashlib.sha256(secret + b"partnernet.visitor").digest()
    return key


def visitor_for(cookie: str | None, ip: str | None, user_agent: str | None, *, app=None) -> tuple[str, bool]:
    """The visitor of a request and whether the cookie must be set (CONTRACT §1).

    A well-formed first-party cookie (16-64 of ``A-Z a-z 0-9 _ -``) is the visitor. Without
    one the visitor is a salted daily hash of (IP, User-Agent): keyed with a secret derived
    from ``SECRET_KEY`` and salted with the UTC date, 32 hex characters (issue 6 item 1: a
    cookie-less visitor cannot be followed across days). The cookie is set to that same
    value, so the next click of a cookie-keeping browser stays the same visitor on later
    days too (the cookie keeps the value of its first click). ``app``: the current app
    (default: looked up). Returns (visitor, set_cookie)."""
    if cookie and _VISITOR_RE.match(cookie):
        return cookie, False
    day = utcnow().date().isoformat()
    body = f"{day}\n{ip or ''}\n{user_agent or ''}".encode("utf-8", "replace")
    return hashlib.blake2b(body, key=_visitor_key(app), digest_size=16).hexdigest(), True


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


def _compose(state: LinkState, *, link_id: int, now, bot: bool, visitor: str, method: str,
             user_agent: str | None, ip: str | None, referer: str | None, args: dict[str, str],
             unavailable_url: str, app=None) -> tuple[str, str, str | None, dict]:
    """The answer and the buffered record of one click on ``state`` (CONTRACT §1), without the
    ``unique`` flag. ``app``: the current app (default: looked up). Returns (location,
    click_id, fallback_reason, record)."""
    reason = state.fallback_reason
    click_id = (app or current_app).extensions["partnernet_click_signer"].make(
        link_id, int(now.timestamp()), bot=bot, fallback=reason is not None
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
        "bot": bot,
        "fb": reason,
        "dest": location,
    }
    return location, click_id, reason, record


@dataclass
class ClickOutcome:
    """What the view answers for a verified token: a 302 to ``location``; ``set_cookie``
    says whether the visitor cookie must be (re)set to ``visitor``."""

    location: str
    visitor: str
    set_cookie: bool
    click_id: str
    is_bot: bool
    is_unique: bool
    fallback_reason: str | None


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


class LeanScript:
    """A Lua script run with ``EVALSHA`` over a Redis connection of the calling thread's own.

    redis-py's ``Script`` goes through the client's connection pool on every call (lock,
    liveness poll, metrics, retry wrapper, release): on the redirect that bookkeeping cost
    more CPU than the round trip itself (~45 us against ~20 us per call, bench/RESULTS.md
    §1). Here each thread keeps one connection, made with the client's own settings (host,
    db, password, timeouts); before reuse it is checked the way the pool checks its
    connections (a reply nobody read, or the server's EOF, waiting on it: reconnect). After
    a fork the child makes its own. ``NOSCRIPT`` (Redis restarted or its scripts flushed)
    is answered with ``SCRIPT LOAD`` and one more ``EVALSHA``, as redis-py does.

    Calling it returns the script's reply (raw, as the parser gives it). Raises redis
    errors (ConnectionError, TimeoutError, ResponseError); after any error the connection is
    closed and the next call makes a new one. Never retried blindly: a command that may
    have run is not sent twice.
    """

    def __init__(self, client, source: str):
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()
        self._pool = client.connection_pool
        self._local = threading.local()

    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None and conn.pid == os.getpid():
            try:
                stale = conn.can_read(timeout=0)
            except RedisConnectionError:
                stale = True
            if stale:
                conn.disconnect()  # connects again when the command is sent
            return conn
        pool = self._pool
        conn = self._local.conn = pool.connection_class(**pool.connection_kwargs)
        return conn

    @staticmethod
    def _command(conn, *args):
        conn.send_packed_command(conn.pack_command(*args), check_health=False)
        return conn.read_response()

    def __call__(self, keys: list, args: list):
        conn = self._connection()
        try:
            try:
                return self._command(conn, "EVALSHA", self.sha, len(keys), *keys, *args)
            except NoScriptError:
                self._command(conn, "SCRIPT", "LOAD", self.source)
                return self._command(conn, "EVALSHA", self.sha, len(keys), *keys, *args)
        except BaseException:
            self._local.conn = None
            conn.disconnect()
            raise


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


def _click_in_one_trip(app, cache: StateCache, entry: _Entry, *, link_id: int, now, bot: bool, visitor: str,
                       set_cookie: bool, method: str, user_agent: str | None, ip: str | None,
                       referer: str | None, args: dict[str, str], unavailable_url: str) -> ClickOutcome | None:
    """The click on a cached link in one Redis round trip (:data:`_ONE_TRIP_LUA` through
    :class:`LeanScript`): same answer and same buffered record as the long way. Returns None,
    having written nothing, when the state version moved since ``entry`` was loaded. Raises
    redis errors."""
    location, click_id, reason, record = _compose(
        entry.state, link_id=link_id, now=now, bot=bot, visitor=visitor, method=method, user_agent=user_agent,
        ip=ip, referer=referer, args=args, unavailable_url=unavailable_url, app=app,
    )
    head = _RECORD_JSON.encode(record)[:-1] + ',"unique":'
    window = int(app.config.get("PARTNERNET_UNIQUE_WINDOW_S") or 86400)
    flush_ms = buffer.flush_window_ms()
    matched, unique, due = _one_trip_script(app)(
        keys=[STATE_KEY, f"{UNIQUE_KEY_PREFIX}{link_id}:{visitor}", buffer.BUFFER_KEY, buffer.FLUSH_SCHEDULED_KEY],
        args=[entry.version, "0" if bot else "1", window, head, flush_ms],
    )
    if not matched:
        return None
    cache.version, cache.checked_at = entry.version, time.monotonic()
    if due:
        buffer.enqueue_flush(flush_ms)
    return ClickOutcome(location, visitor, set_cookie, click_id, bot, bool(unique), reason)


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
) -> ClickOutcome | None:
    """One click through a tracking link (CONTRACT §1). ``args``: the first value of each
    query parameter (``sub1``..``sub5``, ``url``); ``unavailable_url``: our offer-unavailable
    page. Returns None when the token does not verify or names no link (the view answers
    404). Raises :class:`StateUnavailable` when the state cannot be read at all.

    The click is buffered in Redis (or written directly, see the module docstring) with its
    click ID, visitor, sub IDs (first 255 code points), bot/unique flags, fallback reason
    and destination.
    """
    app = current_app._get_current_object()
    link_id = link_id_of(token, app=app)
    if link_id is None:
        return None
    now = utcnow()
    bot = is_bot(method, user_agent)
    visitor, set_cookie = visitor_for(cookie, ip, user_agent, app=app)

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
                    app, cache, entry, link_id=link_id, now=now, bot=bot, visitor=visitor,
                    set_cookie=set_cookie, method=method, user_agent=user_agent, ip=ip, referer=referer,
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
        state, link_id=link_id, now=now, bot=bot, visitor=visitor, method=method, user_agent=user_agent,
        ip=ip, referer=referer, args=args, unavailable_url=unavailable_url,
    )
    record["unique"] = bool(unique)
    _record(record, use_redis=redis_ok)
    return ClickOutcome(location, visitor, set_cookie, click_id, bot, bool(unique), reason)


def handle_impression(
    token: str,
    *,
    method: str,
    user_agent: str | None,
    args: dict[str, str],
) -> bool:
    """One impression through the pixel (CONTRACT §2). Returns False when the token does not
    verify or names no link (404). Counts the impression (bot ones flagged) through the
    buffer like a click; an impression while the link is in fallback (paused, over budget,
    partner not approved) is counted in the traffic figures but never billed."""
    link_id = link_id_of(token)
    if link_id is None:
        return False
    now = utcnow()
    bot = is_bot(method, user_agent)
    r = _redis()
    version = None
    redis_ok = False
    if r is not None:
        try:
            version, _ = _version_and_unique(r, link_id, "", check_unique=False)
            redis_ok = True
        except Exception as exc:  # noqa: BLE001
            log.warning("redis unavailable on the pixel (%s); reading state from the database", exc)
    state = get_state(link_id, version, trust_cache=redis_ok)
    if state is None:
        return False
    record = {
        "t": "i",
        "link_id": link_id,
        "campaign_id": state.campaign_id,
        "partner_id": state.partner_id,
        "at": now.isoformat(),
        "sub1": clip_sub(args.get("sub1")),
        "bot": bot,
        "fb": state.fallback_reason,
    }
    _record(record, use_redis=redis_ok)
    return True


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
