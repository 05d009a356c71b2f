"""What a postback reads before it writes, in as few queries as possible, cached per process.

A postback needs the client of its ``key``, the link of its click ID, coupon or number
(with the campaign's client), the campaign's terms and events, and whether the converting
partner has a postback URL of its own. All of it is read-mostly: it changes when staff, a client
or a partner edits something, never because of a postback.

Not cached, on purpose: the partner's status and the payout terms (tier, override, bonus,
recruiters). A new conversion reads them in its own transaction
(:func:`partnernet.ledger.payout_rules.recording_terms`, one query), so a partner suspended a
moment ago is rejected ``partner_suspended`` by the very next postback (CONTRACT v2 §3 rule 6),
whatever the cache, the state version or ``PARTNERNET_STATE_TTL_S`` say, and an override or tier
change applies to the conversions recorded after it and to no earlier one (CONTRACT v2 §4).

Snapshots. Each is a frozen value object (:class:`ClientAuth`, :class:`LinkInfo`,
:class:`CampaignTerms` with its :class:`EventTerms`), read in one query (two for a campaign
and its events), never an ORM object, so no lazy load can follow.

Cache and invalidation (the redirect's mechanism, :mod:`partnernet.tracking.state`). With
``REDIS_URL`` set, a postback reads the state version (``partnernet:state_version``) once, at
its start (:func:`begin`); an entry is used only when it was loaded under that same version and
less than :data:`MAX_ENTRY_AGE_S` ago. Every change that a cached value depends on bumps the
version after its commit: the listener below (:func:`_note_changes`) calls
:func:`~partnernet.tracking.state.bump_state_version` in any transaction that flushes such a
change through the ORM (a client's key, secret, signature requirement or IP allow-list; a
campaign's client, currency, default event, attribution window or hold days; any event; a
link's campaign, partner, coupon or number; a partner postback URL added or removed; and any
of those rows deleted). A revoked secret or a new allow-list is therefore seen by the very next
postback in every process. The version is read
before the database, so an entry can never be labelled with a version newer than its data.
Only hits are cached: an unknown key, click, coupon or number is looked up every time.

Without Redis (the embedded default, where several processes may share one SQLite file) or when
Redis fails, nothing is cached: every postback reads the database, with the same lean queries.

Money columns are minor units (int); percents are :class:`~decimal.Decimal`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from decimal import Decimal

from flask import current_app, g, has_app_context
from sqlalchemy import bindparam, event, inspect, select
from sqlalchemy.orm import Session

from ..extensions import db
from ..models import Campaign, CampaignEvent, Client, Link, PartnerPostback
from ..tracking.state import STATE_KEY, bump_state_version, start_value

log = logging.getLogger(__name__)

#: An entry is reloaded after this long even when the version did not move (defence in depth:
#: a change made by plain SQL, or a bump lost while Redis was down).
MAX_ENTRY_AGE_S = 60.0
#: Bound on the entries of one kind per process; past it the kind is emptied.
MAX_ENTRIES = 100_000
_EXT = "partnernet_postback_lookups"
_G = "partnernet_postback_lookups"


@dataclass(frozen=True)
class ClientAuth:
    """What CONTRACT §3 step 1 needs of a client: its id, postback secret, whether it requires
    signatures, and its IP allow-list (comma-separated IPs or networks; empty: any)."""

    id: int
    postback_secret: str
    require_signature: bool
    ip_allowlist: str


@dataclass(frozen=True)
class LinkInfo:
    """A link with what step 3 needs: its campaign, that campaign's client and its partner.
    (The partner's status is not here: it is read fresh when a conversion is recorded.)"""

    id: int
    campaign_id: int
    partner_id: int
    client_id: int


@dataclass(frozen=True)
class EventTerms:
    """One campaign event's pricing and rules, with the attribute names of
    :class:`~partnernet.models.CampaignEvent` (fees and payouts in minor units of the campaign's
    currency, percents as Decimal), so that the conversion code takes either."""

    key: str
    client_fee_minor: int | None
    client_fee_percent: Decimal | None
    payout_minor: int | None
    payout_percent: Decimal | None
    min_duration_s: int | None
    min_amount_minor: int | None
    one_per_click: bool
    recurring_months: int | None = 0  # CONTRACT v2 §3: 0 not recurring, None lifetime


@dataclass(frozen=True)
class CampaignTerms:
    """What steps 4 and 6 need of a campaign: its client, currency, default event, attribution
    window (days) and its events by key. Spend, budget and caps are not here: they are read and
    moved under the campaign's row lock when a conversion is recorded."""

    id: int
    client_id: int
    currency: str
    default_event: str
    attribution_window_days: int
    events: tuple[EventTerms, ...]

    def event(self, key: str) -> EventTerms | None:
        """The event with ``key``, or None."""
        for ev in self.events:
            if ev.key == key:
                return ev
        return None


#: The state version, created at a random start value when missing (what
#: :func:`partnernet.tracking.state.ensure_version` does), in one round trip.
_READ_VERSION = """
local v = redis.call('GET', KEYS[1])
if not v then
    redis.call('SET', KEYS[1], ARGV[1], 'NX')
    v = redis.call('GET', KEYS[1])
end
return v
"""


class _Store:
    """One process's entries, per app: ``kinds[name][key] = (value, version, loaded_at)``."""

    def __init__(self) -> None:
        self.kinds: dict[str, dict] = {}
        self.version: bytes | None = None  # the last version read from Redis, and when
        self.checked_at = 0.0
        self.reader = None  # (Redis URL, the version script on a connection per thread: tracking.leanscript)

    def get(self, kind: str, key, version: bytes):
        hit = self.kinds.get(kind, {}).get(key)
        if hit is None or hit[1] != version or time.monotonic() - hit[2] >= MAX_ENTRY_AGE_S:
            return None
        return hit[0]

    def put(self, kind: str, key, value, version: bytes) -> None:
        entries = self.kinds.setdefault(kind, {})
        if len(entries) >= MAX_ENTRIES:
            entries.clear()
        entries[key] = (value, version, time.monotonic())

    def clear(self) -> None:
        self.kinds.clear()
        self.version, self.checked_at = None, 0.0


def _store() -> _Store:
    ext = current_app.extensions
    store = ext.get(_EXT)
    if store is None:
        store = ext[_EXT] = _Store()
    return store


def clear_cache(app=None) -> None:
    """Forget every cached entry of ``app`` (default: the current app), for tests."""
    store = (app or current_app).extensions.get(_EXT)
    if store is not None:
        store.clear()


def _current_version() -> bytes | None:
    """The state version in Redis, or None without Redis or when Redis fails (then nothing is
    cached or served from the cache). Like the redirect, the version read last is trusted for
    ``PARTNERNET_STATE_TTL_S`` seconds (default 0: read on every postback). The read is one
    ``EVALSHA`` on a Redis connection of the calling thread's own
    (:class:`partnernet.tracking.leanscript.LeanScript`: no pool bookkeeping per call)."""
    config = current_app.config
    if not config.get("REDIS_URL"):
        return None
    store = _store()
    ttl = float(config.get("PARTNERNET_STATE_TTL_S") or 0)
    now = time.monotonic()
    if ttl > 0 and store.version is not None and now - store.checked_at < ttl:
        return store.version
    try:
        url = config["REDIS_URL"]
        if store.reader is None or store.reader[0] != url:
            from ..queue import get_redis
            from ..tracking.leanscript import LeanScript

            store.reader = (url, LeanScript(get_redis(), _READ_VERSION))
        version = store.reader[1]([STATE_KEY], [start_value()])
    except Exception as exc:  # noqa: BLE001 - a postback never fails for its cache
        log.warning("state version unavailable (%s); postback lookups read the database", exc)
        return None
    store.version, store.checked_at = version, now
    return version


_CLIENT_BY_KEY = select(Client.id, Client.postback_secret, Client.require_signature, Client.ip_allowlist).where(
    Client.postback_key == bindparam("key"))
_LINK = (select(Link.id, Link.campaign_id, Link.partner_id, Campaign.client_id)
         .join(Campaign, Campaign.id == Link.campaign_id).where(Link.id == bindparam("link_id")))
_LINK_BY_COUPON = (select(Link.id).join(Campaign, Campaign.id == Link.campaign_id)
                   .where(Link.coupon_code_lower == bindparam("coupon"), Campaign.client_id == bindparam("client_id")))
_LINK_BY_NUMBER = (select(Link.id).join(Campaign, Campaign.id == Link.campaign_id)
                   .where(Link.tracking_number == bindparam("number"), Campaign.client_id == bindparam("client_id")))
_CAMPAIGN = select(Campaign.id, Campaign.client_id, Campaign.currency, Campaign.default_event,
                   Campaign.attribution_window_days).where(Campaign.id == bindparam("campaign_id"))
_EVENTS = (select(CampaignEvent.key, CampaignEvent.client_fee_minor, CampaignEvent.client_fee_percent,
                  CampaignEvent.payout_minor, CampaignEvent.payout_percent, CampaignEvent.min_duration_s,
                  CampaignEvent.min_amount_minor, CampaignEvent.one_per_click, CampaignEvent.recurring_months)
           .where(CampaignEvent.campaign_id == bindparam("campaign_id")).order_by(CampaignEvent.id))
_PARTNER_POSTBACKS = select(PartnerPostback.campaign_id).where(PartnerPostback.partner_id == bindparam("partner_id"))


class Lookups:
    """The reads of one postback. ``version`` is the state version read at its start (None: no
    cache). Every method answers from the cache when it can, else reads the database (one
    query) and caches a hit. ``read(statement, params)``: runs a read elsewhere than the session
    and returns its rows (the fast path's own connection, :func:`partnernet.postbacks.fastpath.read`);
    None: the session. Raises SQLAlchemy (or psycopg) errors when the database fails."""

    def __init__(self, version: bytes | None, read=None) -> None:
        self.version = version
        self._store = _store() if version is not None else None
        self._read = read

    def _rows(self, stmt, params: dict) -> list:
        if self._read is not None:
            return self._read(stmt, params)
        return db.session.execute(stmt, params).all()

    def _cached(self, kind: str, key, load):
        if self._store is None:
            return load()
        value = self._store.get(kind, key, self.version)
        if value is None:
            value = load()
            if value is not None:
                self._store.put(kind, key, value, self.version)
        return value

    def client_by_key(self, key: str) -> ClientAuth | None:
        """The client whose postback key is exactly ``key``, or None."""
        def load():
            rows = self._rows(_CLIENT_BY_KEY, {"key": key})
            row = rows[0] if rows else None
            return ClientAuth(row[0], row[1], bool(row[2]), row[3] or "") if row else None
        return self._cached("client", key, load)

    def link(self, link_id: int) -> LinkInfo | None:
        """Link ``link_id`` with its campaign's client, or None."""
        def load():
            rows = self._rows(_LINK, {"link_id": link_id})
            return LinkInfo(*rows[0]) if rows else None
        return self._cached("link", link_id, load)

    def _first(self, stmt, params: dict):
        rows = self._rows(stmt, params)
        return rows[0][0] if rows else None

    def link_by_coupon(self, client_id: int, coupon_lower: str) -> LinkInfo | None:
        """The link of one of the client's campaigns whose coupon is ``coupon_lower`` (already
        lower case), or None."""
        link_id = self._cached("coupon", (client_id, coupon_lower), lambda: self._first(
            _LINK_BY_COUPON, {"coupon": coupon_lower, "client_id": client_id}))
        return self.link(link_id) if link_id is not None else None

    def link_by_number(self, client_id: int, number: str) -> LinkInfo | None:
        """The link of one of the client's campaigns whose tracking number is ``number`` (E.164),
        or None."""
        link_id = self._cached("number", (client_id, number), lambda: self._first(
            _LINK_BY_NUMBER, {"number": number, "client_id": client_id}))
        return self.link(link_id) if link_id is not None else None

    def campaign(self, campaign_id: int) -> CampaignTerms | None:
        """The campaign's terms and events (two queries when not cached), or None."""
        def load():
            rows = self._rows(_CAMPAIGN, {"campaign_id": campaign_id})
            if not rows:
                return None
            row = rows[0]
            events = tuple(EventTerms(*r[:7], bool(r[7]), r[8])
                           for r in self._rows(_EVENTS, {"campaign_id": campaign_id}))
            return CampaignTerms(row[0], row[1], row[2], row[3], row[4] or 0, events)
        return self._cached("campaign", campaign_id, load)

    def partner_postback_campaigns(self, partner_id: int) -> frozenset:
        """The campaign ids for which partner ``partner_id`` has its own postback URL, None
        standing for its global URL (empty: no URL at all)."""
        return self._cached("partner_postbacks", partner_id, lambda: frozenset(
            r[0] for r in self._rows(_PARTNER_POSTBACKS, {"partner_id": partner_id})))


def begin(read=None) -> Lookups:
    """Start the reads of one postback: read the state version once and make the
    :class:`Lookups` the active one of this app context (see :func:`active`) until :func:`end`.
    ``read``: see :class:`Lookups`."""
    lookups = Lookups(_current_version(), read)
    setattr(g, _G, lookups)
    return lookups


def end() -> None:
    """Forget the active :class:`Lookups` (the postback is answered)."""
    g.pop(_G, None)


def active() -> Lookups | None:
    """The :class:`Lookups` of the postback being handled in this app context, or None outside
    one (jobs, staff actions: they read the database)."""
    return g.get(_G) if has_app_context() else None


# -- invalidation -------------------------------------------------------------------------------

#: Per model, the columns that cached values depend on (None: any change, creation included).
_WATCHED: dict[type, tuple[str, ...] | None] = {
    Client: ("postback_key", "postback_secret", "require_signature", "ip_allowlist"),
    Campaign: ("client_id", "currency", "default_event", "attribution_window_days"),
    CampaignEvent: None,
    Link: ("campaign_id", "partner_id", "coupon_code_lower", "tracking_number"),
    PartnerPostback: ("partner_id", "campaign_id"),
}
#: Models whose new rows change a cached value (an event added to a campaign, a postback URL).
_WATCH_NEW = (CampaignEvent, PartnerPostback)


def _changes_cached_state(session: Session) -> bool:
    for obj in session.new:
        if isinstance(obj, _WATCH_NEW):
            return True
    for obj in session.deleted:
        if type(obj) in _WATCHED:
            return True
    for obj in session.dirty:
        cols = _WATCHED.get(type(obj), ())
        if cols is None:
            return True
        if cols:
            attrs = inspect(obj).attrs
            if any(attrs[c].history.has_changes() for c in cols):
                return True
    return False


@event.listens_for(Session, "before_flush")
def _note_changes(session: Session, flush_context, instances) -> None:
    """Bump the state version after commit when this flush changes something a postback caches."""
    if _changes_cached_state(session):
        bump_state_version()
