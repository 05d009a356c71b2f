"""Which payout rule applies to a conversion (issue 6 item 6: payout priority, made explicit).

In this order, each later rule acting on the result of the earlier ones:

1. ``event``: the campaign event's payout, copied onto the conversion when it was recorded
   (``Conversion.payout_minor`` fixed or ``payout_percent`` of the client fee);
2. ``tier``: the partner's :class:`~partnernet.models.PartnerTier`: its ``payout_percent``
   replaces the payout; its ``bonus_points`` are added to the percent (to a fixed payout:
   that percent of the client fee, rounded half up, is added);
3. ``override``: a :class:`~partnernet.models.PartnerPayoutOverride` of (campaign, partner,
   event), else of (campaign, partner, every event): replaces the payout (fixed or percent);
4. ``bonus``: a :class:`~partnernet.models.PerformanceBonus` of the campaign (for the event, or
   every event) whose ``threshold`` the partner has reached: at least that many of its
   conversions on the campaign (of that event, when the bonus names one) created in the same
   UTC calendar month as this one are approved. Its points are added like a tier's bonus; of
   several reached bonuses the one with the most points applies.

A percent never goes past 100 and a payout never past the client fee (CONTRACT §4). The payout
is the converter payout that the touches then share. The result names the rule that applied
last (``Resolved.text``, stored on the conversion's split lines as ``ConversionSplit.rule``).
Reads only; the split job calls it once, when the split is posted, so the rule is fixed then.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import func, select

from ..extensions import db
from ..models import Conversion, Partner, PartnerPayoutOverride, PartnerTier, PerformanceBonus
from ..money import format_minor, percent_of
from .splits import PayoutRule

_HUNDRED = Decimal(100)


@dataclass(frozen=True)
class Resolved:
    """The payout rule that applies: ``rule`` (for :func:`partnernet.ledger.splits.split`),
    ``source`` (``event``, ``tier``, ``override`` or ``bonus``: the last step that changed it)
    and ``text`` (at most 64 characters, e.g. ``"tier Gold: 60%"``, ``"bonus +5 (10 approved): 55%"``)."""

    rule: PayoutRule
    source: str
    text: str


def _pct(value) -> str:
    return f"{Decimal(value).normalize():f}"


def _add_points(fixed: int | None, percent: Decimal | None, points: Decimal, fee: int):
    if percent is not None:
        return None, min(_HUNDRED, Decimal(percent) + points)
    return int(fixed or 0) + percent_of(fee, points), None


def _describe(fixed: int | None, percent: Decimal | None, currency: str) -> str:
    if percent is not None:
        return f"{_pct(percent)}%"
    return f"{format_minor(int(fixed or 0), currency)} {currency}"


def month_bounds(at: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar month holding ``at``: ``[start, next start)``."""
    at = at.astimezone(UTC)
    start = datetime(at.year, at.month, 1, tzinfo=UTC)
    nxt = datetime(at.year + (at.month == 12), at.month % 12 + 1, 1, tzinfo=UTC)
    return start, nxt


def approved_in_month(partner_id: int, campaign_id: int, event_key: str | None, at: datetime,
                      *, exclude_id: int | None = None) -> int:
    """How many of the partner's conversions on the campaign (of ``event_key`` when given) created
    in ``at``'s UTC calendar month are approved, ``exclude_id`` left out."""
    start, end = month_bounds(at)
    stmt = select(func.count(Conversion.id)).where(
        Conversion.partner_id == partner_id, Conversion.campaign_id == campaign_id,
        Conversion.status == "approved", Conversion.created_at >= start, Conversion.created_at < end,
    )
    if event_key is not None:
        stmt = stmt.where(Conversion.event_key == event_key)
    if exclude_id is not None:
        stmt = stmt.where(Conversion.id != exclude_id)
    return int(db.session.scalar(stmt) or 0)


def resolve_payout(conv: Conversion) -> Resolved:
    """The payout rule of ``conv`` by the priority above. Reads only."""
    return resolve_payouts([conv])[conv.id]


def resolve_payouts(convs: list[Conversion]) -> dict[int, Resolved]:
    """The payout rule of each conversion in ``convs`` by the priority above, ``{conversion id:
    Resolved}``. Set-based: tiers, overrides and bonuses of the whole batch are read in three
    queries; only a conversion whose campaign has a performance bonus costs one count query per
    bonus tried. Reads only."""
    if not convs:
        return {}
    partner_ids = sorted({c.partner_id for c in convs})
    campaign_ids = sorted({c.campaign_id for c in convs})
    tiers = {
        pid: tier
        for pid, tier in db.session.execute(
            select(Partner.id, PartnerTier).join(PartnerTier, Partner.tier_id == PartnerTier.id)
            .where(Partner.id.in_(partner_ids))
        ).all()
    }
    overrides: dict[tuple[int, int], list[PartnerPayoutOverride]] = {}
    for ov in db.session.scalars(
        select(PartnerPayoutOverride).where(
            PartnerPayoutOverride.campaign_id.in_(campaign_ids), PartnerPayoutOverride.partner_id.in_(partner_ids)
        )
    ):
        overrides.setdefault((ov.campaign_id, ov.partner_id), []).append(ov)
    bonuses: dict[int, list[PerformanceBonus]] = {}
    for b in db.session.scalars(
        select(PerformanceBonus).where(PerformanceBonus.campaign_id.in_(campaign_ids))
        .order_by(PerformanceBonus.bonus_points.desc(), PerformanceBonus.id)
    ):
        bonuses.setdefault(b.campaign_id, []).append(b)
    return {
        c.id: _resolve(c, tiers.get(c.partner_id), overrides.get((c.campaign_id, c.partner_id), ()),
                       bonuses.get(c.campaign_id, ()))
        for c in convs
    }


def _resolve(conv: Conversion, tier: PartnerTier | None, overrides, bonuses) -> Resolved:
    fee = int(conv.client_fee_minor or 0)
    cur = conv.currency
    fixed = conv.payout_minor
    percent = Decimal(conv.payout_percent) if conv.payout_percent is not None else None
    source, label = "event", "event"

    if tier is not None:
        if tier.payout_percent is not None:
            fixed, percent = None, Decimal(tier.payout_percent)
            source, label = "tier", f"tier {tier.name}"
        elif tier.bonus_points:
            fixed, percent = _add_points(fixed, percent, Decimal(tier.bonus_points), fee)
            source, label = "tier", f"tier {tier.name} +{_pct(tier.bonus_points)}"

    overrides = [o for o in overrides if o.event_key is None or o.event_key == conv.event_key]
    if overrides:
        ov = min(overrides, key=lambda o: o.event_key is None)  # the exact event first
        if ov.payout_percent is not None:
            fixed, percent = None, Decimal(ov.payout_percent)
        else:
            fixed, percent = int(ov.payout_minor or 0), None
        source, label = "override", "override"

    at = conv.created_at or datetime.now(UTC)
    for b in bonuses:
        if b.event_key is not None and b.event_key != conv.event_key:
            continue
        n = approved_in_month(conv.partner_id, conv.campaign_id, b.event_key, at, exclude_id=conv.id)
        if n >= b.threshold:
            fixed, percent = _add_points(fixed, percent, Decimal(b.bonus_points), fee)
            source, label = "bonus", f"{label} bonus +{_pct(b.bonus_points)} ({n} approved)"
            break

    if percent is not None:
        percent = min(_HUNDRED, max(Decimal(0), percent))
    text = f"{label}: {_describe(fixed, percent, cur)}"[:64]
    return Resolved(PayoutRule(fixed_minor=fixed, percent=percent), source, text)
