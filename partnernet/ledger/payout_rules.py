"""Which payout rule applies to a conversion, and when it is fixed (CONTRACT §4; v2: terms
fixed at recording).

In this order, each later rule acting on the result of the earlier ones:

1. ``event``: the campaign event's payout, copied onto the conversion when it is recorded
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

When the rule is decided (CONTRACT v2 §4). :func:`recording_terms` resolves it when the
conversion is recorded, in one query, from the tier, overrides and bonuses in force at that
moment, together with the converter's recruiters (tier 1 and tier 2 percents) and the partner's
status; the result is stored on the conversion (:meth:`Terms.columns`). The split job then uses
the stored terms however late it runs (:func:`resolve_payouts` reads them back), so an override,
tier change or bonus created after the postback changes nothing. "In force" for a performance
bonus means: the bonus exists, and the partner has reached its threshold, at the moment the
conversion is recorded, counting the approvals made up to that moment; approvals made later
never lift a conversion already recorded (nor does a later reversal lower it). A conversion
recorded before terms were stored (``payout_rule`` None) is resolved when its split is posted,
as before, counting the approvals made by then.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import NamedTuple

from sqlalchemy import and_, bindparam, case, func, or_, select
from sqlalchemy.orm import aliased

from ..extensions import db
from ..models import Campaign, Conversion, Partner, PartnerPayoutOverride, PartnerTier, PerformanceBonus
from ..money import format_minor, percent_of
from .splits import PayoutRule

_HUNDRED = Decimal(100)


@dataclass(frozen=True)
class Resolved:
    """The payout rule that applies: ``rule`` (for :func:`partnernet.ledger.splits.split`),
    ``source`` (``event``, ``tier``, ``override`` or ``bonus``: the last step that changed it;
    ``recorded`` when read back from the terms stored on the conversion) and ``text`` (at most 64
    characters, e.g. ``"tier Gold: 60%"``, ``"bonus +5 (10 approved): 55%"``)."""

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


def recorded_payout(conv: Conversion) -> Resolved | None:
    """The payout rule fixed on ``conv`` when it was recorded (CONTRACT v2 §4), or None for a
    conversion recorded before terms were stored (``payout_rule`` None)."""
    if conv.payout_rule is None:
        return None
    percent = Decimal(conv.terms_payout_percent) if conv.terms_payout_percent is not None else None
    fixed = int(conv.terms_payout_minor) if conv.terms_payout_minor is not None else None
    return Resolved(PayoutRule(fixed_minor=fixed, percent=percent), "recorded", conv.payout_rule)


def resolve_payouts(convs: list[Conversion]) -> dict[int, Resolved]:
    """The payout rule of each conversion in ``convs``, ``{conversion id: Resolved}``: the terms
    fixed when it was recorded (:func:`recorded_payout`, no query), else (a conversion recorded
    before terms were stored) resolved now by the priority above. Set-based: tiers, overrides and
    bonuses of the whole batch are read in three queries; only a conversion whose campaign has a
    performance bonus costs one count query per bonus tried. Reads only."""
    out: dict[int, Resolved] = {}
    legacy = []
    for c in convs:
        recorded = recorded_payout(c)
        if recorded is None:
            legacy.append(c)
        else:
            out[c.id] = recorded
    if not legacy:
        return out
    partner_ids = sorted({c.partner_id for c in legacy})
    campaign_ids = sorted({c.campaign_id for c in legacy})
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
    for c in legacy:
        at = c.created_at or datetime.now(UTC)

        def approved(b, c=c, at=at) -> int:
            return approved_in_month(c.partner_id, c.campaign_id, b.event_key, at, exclude_id=c.id)

        out[c.id] = _resolve(
            fee=int(c.client_fee_minor or 0), currency=c.currency, event_key=c.event_key,
            fixed=c.payout_minor, percent=c.payout_percent, tier=tiers.get(c.partner_id),
            overrides=overrides.get((c.campaign_id, c.partner_id), ()), bonuses=bonuses.get(c.campaign_id, ()),
            approved=approved)
    return out


def _resolve(*, fee: int, currency: str, event_key: str, fixed: int | None, percent, tier, overrides, bonuses,
             approved: Callable[[object], int]) -> Resolved:
    """The priority above, on plain values: ``tier`` (``name``, ``payout_percent``,
    ``bonus_points``) or None; ``overrides`` (``event_key``, ``payout_minor``, ``payout_percent``);
    ``bonuses`` (``event_key``, ``threshold``, ``bonus_points``), most points first;
    ``approved(bonus)``: the partner's approved conversions that count for that bonus."""
    percent = Decimal(percent) if percent is not None else None
    source, label = "event", "event"

    if tier is not None:
        if tier.payout_percent is not None:
            fixed, percent = None, Decimal(tier.payout_percent)
            source, label = "tier", f"tier {tier.name}"
        elif tier.bonus_points:
            fixed, percent = _add_points(fixed, percent, Decimal(tier.bonus_points), fee)
            source, label = "tier", f"tier {tier.name} +{_pct(tier.bonus_points)}"

    overrides = [o for o in overrides if o.event_key is None or o.event_key == event_key]
    if overrides:
        ov = min(overrides, key=lambda o: o.event_key is None)  # the exact event first
        if ov.payout_percent is not None:
            fixed, percent = None, Decimal(ov.payout_percent)
        else:
            fixed, percent = int(ov.payout_minor or 0), None
        source, label = "override", "override"

    for b in bonuses:
        if b.event_key is not None and b.event_key != event_key:
            continue
        n = approved(b)
        if n >= b.threshold:
            fixed, percent = _add_points(fixed, percent, Decimal(b.bonus_points), fee)
            source, label = "bonus", f"{label} bonus +{_pct(b.bonus_points)} ({n} approved)"
            break

    if percent is not None:
        percent = min(_HUNDRED, max(Decimal(0), percent))
    text = f"{label}: {_describe(fixed, percent, currency)}"[:64]
    return Resolved(PayoutRule(fixed_minor=fixed, percent=percent), source, text)


# --------------------------------------------------------------------------- terms at recording


@dataclass(frozen=True)
class Terms:
    """What :func:`recording_terms` read: the partner's ``partner_status`` now (``approved``,
    ``suspended`` ...), the payout rule in force (:class:`Resolved`), and the converter's
    recruiters: ``recruiter`` ``(partner id, percent)`` of tier 1 and ``recruiter2`` of tier 2
    (the recruiter's recruiter at the recruiter's ``tier2_percent``), or None."""

    partner_status: str
    resolved: Resolved
    recruiter: tuple[int, Decimal] | None
    recruiter2: tuple[int, Decimal] | None

    def columns(self) -> dict:
        """The :class:`~partnernet.models.Conversion` columns that store these terms."""
        rule = self.resolved.rule
        r1, r2 = self.recruiter or (None, None), self.recruiter2 or (None, None)
        return {
            "payout_rule": self.resolved.text,
            "terms_payout_minor": rule.fixed_minor if rule.percent is None else None,
            "terms_payout_percent": rule.percent,
            "terms_recruiter_id": r1[0], "terms_recruiter_percent": r1[1],
            "terms_recruiter2_id": r2[0], "terms_recruiter2_percent": r2[1],
        }


class _Tier(NamedTuple):
    name: str
    payout_percent: Decimal | None
    bonus_points: Decimal | None


class _Override(NamedTuple):
    event_key: str | None
    payout_minor: int | None
    payout_percent: Decimal | None


class _Bonus(NamedTuple):
    id: int
    event_key: str | None
    threshold: int
    bonus_points: Decimal
    approved: int


def _terms_statement():
    """One SELECT for everything :func:`recording_terms` needs, with bound parameters ``pid``,
    ``cid``, ``ev``, ``m0``, ``m1``: one row per (override, bonus) pair that applies (usually one
    row of NULLs for both). Built once: building a statement costs more than running it."""
    tier = aliased(PartnerTier)
    rec = aliased(Partner)
    ov = aliased(PartnerPayoutOverride)
    bonus = aliased(PerformanceBonus)
    done = aliased(Conversion)
    pid, cid, ev = bindparam("pid"), bindparam("cid"), bindparam("ev")
    approved = (
        select(func.count(done.id)).where(
            done.partner_id == pid, done.campaign_id == cid, done.status == "approved",
            done.created_at >= bindparam("m0", type_=Conversion.created_at.type),
            done.created_at < bindparam("m1", type_=Conversion.created_at.type),
            or_(bonus.event_key.is_(None), done.event_key == bonus.event_key))
        .correlate(bonus).scalar_subquery()
    )
    return (
        select(Partner.status, Campaign.currency, tier.name, tier.payout_percent, tier.bonus_points,
               Partner.recruiter_id, Partner.recruiter_percent, rec.recruiter_id, rec.tier2_percent,
               ov.id, ov.event_key, ov.payout_minor, ov.payout_percent,
               bonus.id, bonus.event_key, bonus.threshold, bonus.bonus_points,
               case((bonus.id.is_(None), None), else_=approved))
        .select_from(Partner)
        .join(Campaign, Campaign.id == cid)
        .outerjoin(tier, tier.id == Partner.tier_id)
        .outerjoin(rec, rec.id == Partner.recruiter_id)
        .outerjoin(ov, and_(ov.partner_id == Partner.id, ov.campaign_id == cid,
                            or_(ov.event_key.is_(None), ov.event_key == ev)))
        .outerjoin(bonus, and_(bonus.campaign_id == cid, or_(bonus.event_key.is_(None), bonus.event_key == ev)))
        .where(Partner.id == pid)
    )


_TERMS = _terms_statement()


def recording_terms(*, campaign_id: int, partner_id: int, event_key: str, payout_minor: int | None,
                    payout_percent: Decimal | None, fee_minor: int, at: datetime) -> Terms | None:
    """The payout terms in force at ``at`` (the moment a conversion is recorded) for a conversion of
    ``event_key`` on ``campaign_id`` credited to ``partner_id`` (CONTRACT v2 §4): the event payout
    (``payout_minor`` fixed minor units or ``payout_percent`` of the client fee, as copied from the
    event) with the partner's tier, its override and a performance bonus reached by then, resolved
    by the priority of this module on ``fee_minor`` (the conversion's client fee, minor units); the
    converter's recruiters (tier 1 and 2); and the partner's status as committed now (CONTRACT v2
    §3 rule 6 ``partner_suspended`` reads it here, never from a cache). One query, in the caller's
    transaction. Returns None when the partner or the campaign does not exist."""
    m0, m1 = month_bounds(at)
    rows = db.session.connection().execute(
        _TERMS, {"pid": partner_id, "cid": campaign_id, "ev": event_key, "m0": m0, "m1": m1}).all()
    if not rows:
        return None
    return terms_from_rows(rows, partner_id=partner_id, event_key=event_key, payout_minor=payout_minor,
                           payout_percent=payout_percent, fee_minor=fee_minor)


def terms_from_rows(rows, *, partner_id: int, event_key: str, payout_minor: int | None,
                    payout_percent: Decimal | None, fee_minor: int) -> Terms:
    """The :class:`Terms` of a conversion from ``rows``: the non-empty result of :data:`_TERMS`
    (one row per applicable override and bonus pair, columns in its order), however it was read
    (:func:`recording_terms`, or inside the postback fast path's own statement,
    :mod:`partnernet.postbacks.fastpath`). Arguments as :func:`recording_terms`. Raises
    IndexError on no rows."""
    first = rows[0]
    status, currency = first[0], first[1]
    tier = _Tier(first[2], first[3], first[4]) if first[2] is not None else None
    overrides = [_Override(*r[10:13]) for r in {r[9]: r for r in rows if r[9] is not None}.values()]
    bonuses = sorted({_Bonus(r[13], r[14], r[15], r[16], int(r[17] or 0)) for r in rows if r[13] is not None},
                     key=lambda b: (-b.bonus_points, b.id))
    resolved = _resolve(fee=fee_minor, currency=currency, event_key=event_key, fixed=payout_minor,
                        percent=payout_percent, tier=tier, overrides=overrides, bonuses=bonuses,
                        approved=lambda b: b.approved)
    rid, rpct, rid2, rpct2 = first[5], first[6], first[7], first[8]
    recruiter = (rid, Decimal(rpct)) if rid is not None and rpct is not None and rid != partner_id else None
    recruiter2 = None
    if recruiter is not None and rid2 is not None and rpct2 is not None and rid2 not in (rid, partner_id):
        recruiter2 = (rid2, Decimal(rpct2))
    return Terms(status, resolved, recruiter, recruiter2)
