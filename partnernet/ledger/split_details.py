"""The split of conversions' client fees, computed from the database (CONTRACT §4; v2 terms fixed
at recording): payout rule, touches of the attribution model and recruiter overrides of two tiers,
for a whole batch in a handful of queries. Reads, never writes; the ledger posts the result
(:mod:`partnernet.ledger.services`)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select

from ..extensions import db
from ..models import Campaign, Conversion, Partner
from .splits import SplitLine, split


@dataclass(frozen=True)
class SplitDetail:
    """A computed split and why: ``lines`` (:class:`SplitLine`), the payout ``rule_text``
    (:mod:`partnernet.ledger.payout_rules`), the recruiter ids paid at tier 1 and at tier 2."""

    lines: list[SplitLine]
    rule_text: str
    tier1: frozenset
    tier2: frozenset


@dataclass(frozen=True)
class _CampaignInfo:
    client_id: int
    model: str


def _campaign_infos(campaign_ids) -> dict[int, _CampaignInfo]:
    return {
        cid: _CampaignInfo(client_id, model)
        for cid, client_id, model in db.session.execute(
            select(Campaign.id, Campaign.client_id, Campaign.attribution_model)
            .where(Campaign.id.in_(sorted(set(campaign_ids))))
        ).all()
    }


def _recruiters_of(partner_ids: list[int], percent_col) -> dict[int, tuple[int, Decimal]]:
    """``{partner id: (its recruiter's id, percent)}`` for those of ``partner_ids`` that have a
    recruiter other than themselves and a percent in ``percent_col`` (``recruiter_percent`` for
    tier 1, the recruiter's ``tier2_percent`` for tier 2). One query."""
    if not partner_ids:
        return {}
    return {
        pid: (rid, pct)
        for pid, rid, pct in db.session.execute(
            select(Partner.id, Partner.recruiter_id, percent_col).where(Partner.id.in_(partner_ids))
        ).all()
        if rid is not None and pct is not None and rid != pid
    }


def compute_split_details(convs: list[Conversion],
                          campaigns: dict[int, _CampaignInfo] | None = None) -> dict[int, SplitDetail]:
    """The splits of ``convs``, ``{conversion id: SplitDetail}`` (CONTRACT §4; issue 6): the
    payout from the rule that applies (event, tier, per-partner override, performance bonus;
    :func:`partnernet.ledger.payout_rules.resolve_payouts`), shared by the touches of the
    campaign's attribution model (:mod:`partnernet.ledger.attribution`), recruiter overrides of
    two tiers out of the margin (tier 1: the touch partner's recruiter at ``recruiter_percent``;
    tier 2: that recruiter's own recruiter at the recruiter's ``tier2_percent``).

    Terms fixed at recording (CONTRACT v2 §4): the payout rule and the converter's recruiters of
    a conversion recorded with its terms (``payout_rule`` set) are the stored ones, never
    re-resolved, however late this runs and whoever asks (the split job, a staff approval or
    reversal, a partner postback). The recruiters of the other touches of a multi-touch
    conversion are read here (touches are only known once the clicks are written). A conversion
    recorded before terms were stored is resolved here entirely, as before.

    Set-based: campaigns, payout rules and recruiters of the whole batch are read in a handful of
    queries. Under ``last_click`` only the converter can earn (the other touches weigh 0, and so
    do their recruiters' overrides), so no touch is looked up; the other models read each
    conversion's touches. Reads, never writes."""
    from .attribution import weighted_touches
    from .payout_rules import resolve_payouts
    from .splits import ATTRIBUTION_MODELS

    if not convs:
        return {}
    campaigns = campaigns if campaigns is not None else _campaign_infos(c.campaign_id for c in convs)
    touches: dict[int, list[tuple[int, Decimal]]] = {}
    for conv in convs:
        model = campaigns[conv.campaign_id].model
        if model not in ATTRIBUTION_MODELS or model == "last_click":
            touches[conv.id] = [(conv.partner_id, Decimal(1))]
        else:
            touches[conv.id] = weighted_touches(conv, model)
    # The converter's recruiters were fixed when the conversion was recorded (payout_rule set);
    # other touches' recruiters, and a conversion recorded before terms were stored, are read now.
    live = sorted({pid for conv in convs for pid, _ in touches[conv.id]
                   if conv.payout_rule is None or pid != conv.partner_id})
    recruiters = _recruiters_of(live, Partner.recruiter_percent)
    up = _recruiters_of(sorted({rid for rid, _ in recruiters.values()}), Partner.tier2_percent)
    resolved = resolve_payouts(convs)
    out: dict[int, SplitDetail] = {}
    for conv in convs:
        ts = touches[conv.id]
        recorded = conv.payout_rule is not None
        mine = {pid: recruiters[pid] for pid, _ in ts
                if pid in recruiters and not (recorded and pid == conv.partner_id)}
        second_tier = {pid: up[rid] for pid, (rid, _pct) in mine.items() if rid in up and up[rid][0] != pid}
        if recorded:
            _recorded_recruiters(conv, mine, second_tier)
        rule = resolved[conv.id]
        lines = split(int(conv.client_fee_minor or 0), rule.rule, ts, mine, second_tier)
        out[conv.id] = SplitDetail(lines, rule.text, frozenset(rid for rid, _ in mine.values()),
                                   frozenset(r for r, _ in second_tier.values()))
    return out


def _recorded_recruiters(conv: Conversion, mine: dict, second_tier: dict) -> None:
    """Add the converter's recruiters fixed on ``conv`` when it was recorded (CONTRACT v2 §4) to
    ``mine`` (tier 1) and ``second_tier`` (tier 2), keyed by the converter's id."""
    if conv.terms_recruiter_id is not None and conv.terms_recruiter_percent is not None:
        mine[conv.partner_id] = (conv.terms_recruiter_id, Decimal(conv.terms_recruiter_percent))
        if conv.terms_recruiter2_id is not None and conv.terms_recruiter2_percent is not None:
            second_tier[conv.partner_id] = (conv.terms_recruiter2_id, Decimal(conv.terms_recruiter2_percent))


def compute_split_detail(conv: Conversion) -> SplitDetail:
    """The split of one conversion (see :func:`compute_split_details`). Reads, never writes."""
    return compute_split_details([conv])[conv.id]


def compute_split(conv: Conversion) -> list[SplitLine]:
    """The split lines of ``conv`` (see :func:`compute_split_details`). Reads, never writes."""
    return compute_split_detail(conv).lines


def _rule_text(detail: SplitDetail, line: SplitLine) -> str:
    if line.role in ("converter", "touch"):
        return detail.rule_text
    if line.role == "recruiter":
        t1, t2 = line.partner_id in detail.tier1, line.partner_id in detail.tier2
        if t1 and t2:
            return "recruiter override tiers 1+2"
        return "recruiter override tier 2" if t2 else "recruiter override"
    return "fee minus partner amounts"

