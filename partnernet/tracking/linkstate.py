"""Link state for the tracking endpoints (CONTRACT §1, §2): what a redirect needs to know about a
link, its campaign, client and partner, and the per-process cache of it.

State. Link, campaign, client and partner state (:class:`LinkState`) lives in an
in-process cache per app, keyed by link id. With ``REDIS_URL`` set, the cache is
invalidated by Redis pub/sub (:mod:`.invalidation`): a change that calls
:func:`~partnernet.tracking.state.bump_state_version` (pause, budget reached,
partner suspended, link edits) raises the cache's ``generation`` in every process
within milliseconds, and an entry loaded under an older generation is reloaded on
its next click. The redirect sends nothing to Redis to learn this. While the
subscription is down the cache is not trusted and the state is read from the
database on every click. When the database is unreachable on a reload, the stale
entry is served. Without Redis the state is read fresh from the database on every
redirect (several processes may share one SQLite file), falling back to the
cached entry when the database fails.
"""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import dataclass, field
from datetime import datetime

from flask import current_app
from sqlalchemy import select

from ..clock import utcnow
from ..extensions import db
from ..models import Campaign, CampaignEvent, Client, Link, Partner

log = logging.getLogger(__name__)

# An entry is reloaded after this long even when the version did not move (defence in depth).
MAX_ENTRY_AGE_S = 60.0
MAX_ENTRIES = 200_000


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
    generation: int
    loaded_at: float


@dataclass(eq=False)
class StateCache:
    """The per-app, per-process cache of :class:`LinkState` by link id. ``generation`` rises
    on every state change published in Redis (:mod:`.invalidation`); an entry is current
    while its generation is the cache's. ``subscriber``: the app's
    :class:`~partnernet.tracking.invalidation.StateSubscriber` (None without Redis)."""

    entries: dict[int, _Entry] = field(default_factory=dict)
    generation: int = 0
    subscriber: object | None = None

    def invalidate(self) -> None:
        """Make every entry stale (called by the subscriber on each published change)."""
        self.generation += 1

    @property
    def trusted(self) -> bool:
        """True while the Redis subscription is live: a current entry is then the truth."""
        sub = self.subscriber
        return sub is not None and sub.healthy

    def clear(self) -> None:
        """Forget every entry (tests, and when the cache grows past its bound)."""
        self.entries.clear()
        self.generation += 1


_caches: weakref.WeakSet = weakref.WeakSet()
#: How long the first click of a process waits for the subscription to be live (once).
FIRST_SUBSCRIBE_WAIT_S = 1.0


def invalidate_local() -> None:
    """Make every entry of every state cache of this process stale (the process that made a
    change sees it at once, before its own pub/sub message comes back)."""
    for cache in list(_caches):
        cache.invalidate()


def state_cache(app=None) -> StateCache:
    """The state cache of ``app`` (default: the current app); with ``REDIS_URL`` its
    subscriber thread is started in this process on first use."""
    app = app or current_app
    cache = app.extensions.get("partnernet_state_cache")
    if cache is None:
        cache = app.extensions.setdefault("partnernet_state_cache", StateCache())
        _caches.add(cache)
        url = app.config.get("REDIS_URL")
        if url and cache.subscriber is None:
            from .invalidation import StateSubscriber

            cache.subscriber = StateSubscriber(url, cache.invalidate)
    sub = cache.subscriber
    if sub is not None and sub.start():
        sub.wait_healthy(FIRST_SUBSCRIBE_WAIT_S)
    return cache


def cached_state(cache: StateCache, link_id: int) -> LinkState | None:
    """The cached state of ``link_id`` when the cache is trusted (the subscription is live),
    the entry is of the current generation and younger than :data:`MAX_ENTRY_AGE_S`; else
    None (the caller reads the database)."""
    entry = cache.entries.get(link_id)
    if (entry is None or entry.generation != cache.generation or not cache.trusted
            or time.monotonic() - entry.loaded_at >= MAX_ENTRY_AGE_S):
        return None
    return entry.state


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


def get_state(link_id: int, *, app=None) -> LinkState | None:
    """The state of ``link_id``: the cached entry when :func:`cached_state` gives it, else
    read from the database and cached under the generation seen before the read (a change
    published during the read makes the new entry stale at once). A database failure serves
    the stale entry when there is one, else raises :class:`StateUnavailable`. None: no such
    link."""
    cache = state_cache(app)
    state = cached_state(cache, link_id)
    if state is not None:
        return state
    entry = cache.entries.get(link_id)
    generation = cache.generation
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
    cache.entries[link_id] = _Entry(state, generation, time.monotonic())
    return state
