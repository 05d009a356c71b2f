"""Daily and monthly spend caps of a campaign (issue 5), in the client's time zone.

A cap is money, in minor units of the campaign's currency (``Campaign.daily_cap_minor``,
``Campaign.monthly_cap_minor``; None = no cap). The spend a cap counts is the client fees of
the campaign's live conversions (neither rejected nor reversed, as CONTRACT §5 ``spent``)
*created* in the current local day / calendar month of ``Client.timezone``.

Enforcement, race-safe: :func:`partnernet.conversions.services.record_conversion` holds the
campaign row lock (the same lock as the budget) while it calls :func:`cap_rejection`, so
concurrent postbacks see each other's spend and a cap is never overshot. A conversion whose
fee would take a window's spend past its cap is recorded ``rejected`` with reason
``over_daily_cap`` or ``over_monthly_cap`` (checked right after ``over_budget``; these codes
are not in CONTRACT §3's list, which predates caps).

The redirect: once a window's spend has reached its cap, :func:`refresh_cap_state` (called under
the same lock after every change of spend) stores ``cap_reached_reason`` and
``cap_reached_until`` (the window's end, UTC) on the campaign and bumps the state version; the
redirect sends clicks to the fallback with that reason until then (CONTRACT §1 fallback, by
analogy with ``over_budget``). The state expires on its own at local midnight / month start.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select

from ..extensions import db
from ..models import Campaign, Client, Conversion
from .periods import day_bounds, month_bounds_at

LIVE_STATUSES = ("pending", "approved")


def client_zone(campaign: Campaign) -> ZoneInfo:
    """The time zone of the campaign's client (UTC when unset or unknown)."""
    name = db.session.scalar(select(Client.timezone).where(Client.id == campaign.client_id)) or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def has_caps(campaign: Campaign) -> bool:
    """True when the campaign has a daily or a monthly cap."""
    return campaign.daily_cap_minor is not None or campaign.monthly_cap_minor is not None


def window_spend(campaign_id: int, start: datetime, end: datetime) -> int:
    """Client fees (minor units) of the campaign's live conversions created in ``[start, end)`` UTC."""
    return int(
        db.session.scalar(
            select(func.coalesce(func.sum(Conversion.client_fee_minor), 0)).where(
                Conversion.campaign_id == campaign_id,
                Conversion.status.in_(LIVE_STATUSES),
                Conversion.created_at >= start,
                Conversion.created_at < end,
            )
        )
        or 0
    )


def cap_usage(campaign: Campaign, now: datetime) -> dict:
    """Spend against the caps at ``now``: ``{"day": (spent, cap, start, end), "month": (...)}``
    in minor units and UTC instants; a window without a cap has cap None."""
    tz = client_zone(campaign)
    d0, d1 = day_bounds(now, tz)
    m0, m1 = month_bounds_at(now, tz)
    return {
        "day": (window_spend(campaign.id, d0, d1), campaign.daily_cap_minor, d0, d1),
        "month": (window_spend(campaign.id, m0, m1), campaign.monthly_cap_minor, m0, m1),
    }


def cap_rejection(campaign: Campaign, fee: int, now: datetime) -> str | None:
    """``over_daily_cap`` / ``over_monthly_cap`` when a conversion of client fee ``fee`` created at
    ``now`` would take that window's spend past its cap, else None. The caller holds the
    campaign row lock (:func:`partnernet.conversions.services.lock_campaign`)."""
    if not has_caps(campaign):
        return None
    usage = cap_usage(campaign, now)
    for window, reason in (("day", "over_daily_cap"), ("month", "over_monthly_cap")):
        spent, cap, _start, _end = usage[window]
        if cap is not None and spent + fee > cap:
            return reason
    return None


def refresh_cap_state(campaign: Campaign, now: datetime) -> bool:
    """Bring ``cap_reached_reason`` / ``cap_reached_until`` level with the spend at ``now``: the
    window whose spend reached its cap (the one that lasts longer when both did), else cleared.
    Bumps the redirect state version when they change. The caller holds the campaign lock and
    commits. Returns True when something changed."""
    reason, until = None, None
    if has_caps(campaign):
        usage = cap_usage(campaign, now)
        for window, code in (("month", "over_monthly_cap"), ("day", "over_daily_cap")):
            spent, cap, _start, end = usage[window]
            if cap is not None and spent >= cap:
                reason, until = code, end
                break
    if (campaign.cap_reached_reason, campaign.cap_reached_until) == (reason, until):
        return False
    if reason is None and campaign.cap_reached_reason is None:
        return False
    campaign.cap_reached_reason = reason
    campaign.cap_reached_until = until
    from ..tracking.state import bump_state_version

    bump_state_version()
    return True
