"""Link state for the tracking endpoints (CONTRACT §1, §2): what a redirect needs to know about a
link, its campaign, client and partner, and the per-process cache of it.

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
"""

from __future__ import annotations

import logging
import time
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
