"""Staff and partner use cases for the commission rules (issue 6). Each state-changing
function commits once, at its end, and records an audit row for staff actions
(:func:`partnernet.audit.record`). Money arguments are decimal strings in the campaign's
currency; percents decimal strings in [0, 100]. Errors: ValidationError (400, with ``code``
and ``field``), NotFound (404), InvalidState / Duplicate (409).

Payout priority (:mod:`partnernet.ledger.payout_rules`): event payout, then partner tier, then
per-partner override, then performance bonus. The rules apply to conversions split after the
change; splits already posted are never rewritten.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..catalog.services import COUPON_RE, E164_RE, parse_money, parse_percent_text
from ..clock import utcnow
from ..errors import Duplicate, InvalidState, NotFound, ValidationError
from ..extensions import db
from ..models import (
    Campaign,
    CouponRequest,
    Link,
    Partner,
    PartnerPayoutOverride,
    PartnerTier,
    PerformanceBonus,
    TrackingNumber,
)

MAX_BULK = 1000


def _audit(actor: int | None, action: str, target_type: str, target_id, before, after) -> None:
    try:
        from ..audit import record
    except ImportError:  # pragma: no cover - the audit module is optional
        return
    record(actor, action, target_type, target_id, before, after)


def _opt_percent(value: Any, field: str) -> Decimal | None:
    return None if value is None else parse_percent_text(value, field)


def _partner(partner_id: int) -> Partner:
    p = db.session.get(Partner, partner_id)
    if p is None:
        raise NotFound(f"no partner {partner_id}")
    return p


def _campaign(campaign_id: int) -> Campaign:
    c = db.session.get(Campaign, campaign_id)
    if c is None:
        raise NotFound(f"no campaign {campaign_id}")
    return c


def _event_key(campaign: Campaign, key: Any) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or campaign.event(key) is None:
        raise ValidationError(f"campaign {campaign.id} has no event {key!r}", code="unknown_event", field="event")
    return key


# --------------------------------------------------------------------------- tiers


def create_tier(name: str, *, payout_percent: str | None = None, bonus_points: str | None = None,
                actor_user_id: int | None = None) -> PartnerTier:
    """Create a partner tier: exactly one of ``payout_percent`` (replaces the payout) or
    ``bonus_points`` (percentage points added). Raises ValidationError (``invalid``,
    ``bad_percent``), Duplicate ``duplicate_tier`` for a name in use."""
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 100:
        raise ValidationError("name must be 1-100 characters", field="name")
    pct, pts = _opt_percent(payout_percent, "payout_percent"), _opt_percent(bonus_points, "bonus_points")
    if (pct is None) == (pts is None):
        raise ValidationError("give exactly one of payout_percent or bonus_points", field="payout_percent")
    name = name.strip()
    if db.session.scalar(select(PartnerTier.id).where(PartnerTier.name == name)):
        raise Duplicate(f"a tier named {name!r} exists", code="duplicate_tier", field="name")
    tier = PartnerTier(name=name, payout_percent=pct, bonus_points=pts)
    db.session.add(tier)
    db.session.flush()
    _audit(actor_user_id, "tier.create", "partner_tier", tier.id, None,
           {"name": name, "payout_percent": pct, "bonus_points": pts})
    db.session.commit()
    return tier


def list_tiers() -> list[PartnerTier]:
    """Every tier, by id."""
    return list(db.session.scalars(select(PartnerTier).order_by(PartnerTier.id)))


def set_partner_tier(partner_id: int, tier_id: int | None, *, actor_user_id: int | None = None) -> Partner:
    """Put a partner in a tier (None: no tier). Raises NotFound (partner), ValidationError
    ``unknown_tier``."""
    p = _partner(partner_id)
    if tier_id is not None and db.session.get(PartnerTier, tier_id) is None:
        raise ValidationError(f"no tier {tier_id}", code="unknown_tier", field="tier_id")
    before = p.tier_id
    p.tier_id = tier_id
    _audit(actor_user_id, "partner.set_tier", "partner", p.id, {"tier_id": before}, {"tier_id": tier_id})
    db.session.commit()
    return p


# --------------------------------------------------------------------------- overrides


def set_payout_override(campaign_id: int, partner_id: int, *, event_key: str | None = None,
                        payout: str | None = None, payout_percent: str | None = None,
                        actor_user_id: int | None = None) -> PartnerPayoutOverride:
    """Set (create or replace) the partner's payout on the campaign, for one event or (None)
    every event: exactly one of ``payout`` (fixed, money string in the campaign's currency) or
    ``payout_percent``. Raises NotFound, ValidationError (``unknown_event``, ``bad_amount``,
    ``bad_percent``, ``invalid``)."""
    camp = _campaign(campaign_id)
    _partner(partner_id)
    key = _event_key(camp, event_key)
    if (payout is None) == (payout_percent is None):
        raise ValidationError("give exactly one of payout or payout_percent", field="payout")
    fixed = parse_money(payout, camp.currency, "payout") if payout is not None else None
    pct = _opt_percent(payout_percent, "payout_percent")
    stmt = select(PartnerPayoutOverride).where(
        PartnerPayoutOverride.campaign_id == camp.id, PartnerPayoutOverride.partner_id == partner_id,
        PartnerPayoutOverride.event_key.is_(None) if key is None else PartnerPayoutOverride.event_key == key,
    )
    ov = db.session.scalar(stmt)
    before = None if ov is None else {"payout_minor": ov.payout_minor, "payout_percent": ov.payout_percent}
    if ov is None:
        ov = PartnerPayoutOverride(campaign_id=camp.id, partner_id=partner_id, event_key=key)
        db.session.add(ov)
    ov.payout_minor, ov.payout_percent = fixed, pct
    db.session.flush()
    _audit(actor_user_id, "payout_override.set", "payout_override", ov.id, before,
           {"campaign_id": camp.id, "partner_id": partner_id, "event_key": key, "payout_minor": fixed,
            "payout_percent": pct})
    db.session.commit()
    return ov


def delete_payout_override(override_id: int, *, actor_user_id: int | None = None) -> None:
    """Remove an override. Raises NotFound."""
    ov = db.session.get(PartnerPayoutOverride, override_id)
    if ov is None:
        raise NotFound(f"no payout override {override_id}")
    _audit(actor_user_id, "payout_override.delete", "payout_override", ov.id,
           {"payout_minor": ov.payout_minor, "payout_percent": ov.payout_percent}, None)
    db.session.delete(ov)
    db.session.commit()


def payout_overrides_query(*, campaign_id: int | None = None, partner_id: int | None = None):
    """Overrides by id, optionally of one campaign and/or partner."""
    stmt = select(PartnerPayoutOverride).order_by(PartnerPayoutOverride.id)
    if campaign_id is not None:
        stmt = stmt.where(PartnerPayoutOverride.campaign_id == campaign_id)
    if partner_id is not None:
        stmt = stmt.where(PartnerPayoutOverride.partner_id == partner_id)
    return stmt


# --------------------------------------------------------------------------- performance bonus


def set_performance_bonus(campaign_id: int, *, threshold: int, bonus_points: str, event_key: str | None = None,
                          actor_user_id: int | None = None) -> PerformanceBonus:
    """Set the bonus of a campaign (one event, or None: every event) at ``threshold`` approved
    conversions in a calendar month: ``bonus_points`` more percentage points (replaces the
    points of an existing bonus with the same campaign, event and threshold). Raises NotFound,
    ValidationError (``unknown_event``, ``bad_percent``, ``invalid`` for a threshold not a
    positive int)."""
    camp = _campaign(campaign_id)
    key = _event_key(camp, event_key)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 1 <= threshold <= 10**9:
        raise ValidationError("threshold must be a positive whole number", field="threshold")
    pts = parse_percent_text(bonus_points, "bonus_points")
    stmt = select(PerformanceBonus).where(
        PerformanceBonus.campaign_id == camp.id, PerformanceBonus.threshold == threshold,
        PerformanceBonus.event_key.is_(None) if key is None else PerformanceBonus.event_key == key,
    )
    b = db.session.scalar(stmt)
    before = None if b is None else {"bonus_points": b.bonus_points}
    if b is None:
        b = PerformanceBonus(campaign_id=camp.id, event_key=key, threshold=threshold)
        db.session.add(b)
    b.bonus_points = pts
    db.session.flush()
    _audit(actor_user_id, "performance_bonus.set", "performance_bonus", b.id, before,
           {"campaign_id": camp.id, "event_key": key, "threshold": threshold, "bonus_points": pts})
    db.session.commit()
    return b


def delete_performance_bonus(bonus_id: int, *, actor_user_id: int | None = None) -> None:
    """Remove a performance bonus. Raises NotFound."""
    b = db.session.get(PerformanceBonus, bonus_id)
    if b is None:
        raise NotFound(f"no performance bonus {bonus_id}")
    _audit(actor_user_id, "performance_bonus.delete", "performance_bonus", b.id,
           {"threshold": b.threshold, "bonus_points": b.bonus_points}, None)
    db.session.delete(b)
    db.session.commit()


def bonuses_query(*, campaign_id: int | None = None):
    """Performance bonuses by id, optionally of one campaign."""
    stmt = select(PerformanceBonus).order_by(PerformanceBonus.id)
    if campaign_id is not None:
        stmt = stmt.where(PerformanceBonus.campaign_id == campaign_id)
    return stmt


# --------------------------------------------------------------------------- recruiters


def set_recruiter(partner_id: int, *, recruiter_id: int | None, recruiter_percent: str | None = None,
                  tier2_percent: str | None = None, actor_user_id: int | None = None) -> Partner:
    """Staff set a partner's recruiter (None: none) and the first-tier percent its recruiter
    earns; ``tier2_percent`` is what the partner's own recruiter earns on the amounts of the
    partners this partner recruited (the second tier). A partner cannot recruit itself, and
    the chain may not loop (400 ``bad_recruiter``). Raises NotFound, ValidationError
    (``unknown_recruiter``, ``bad_percent``)."""
    p = _partner(partner_id)
    if recruiter_id is not None:
        if db.session.get(Partner, recruiter_id) is None:
            raise ValidationError(f"no partner {recruiter_id}", code="unknown_recruiter", field="recruiter_id")
        seen, cur = {p.id}, recruiter_id
        while cur is not None:
            if cur in seen:
                raise ValidationError("a partner cannot be its own (indirect) recruiter", code="bad_recruiter",
                                      field="recruiter_id")
            seen.add(cur)
            cur = db.session.scalar(select(Partner.recruiter_id).where(Partner.id == cur))
    before = {"recruiter_id": p.recruiter_id, "recruiter_percent": p.recruiter_percent,
              "tier2_percent": p.tier2_percent}
    p.recruiter_id = recruiter_id
    p.recruiter_percent = _opt_percent(recruiter_percent, "recruiter_percent") if recruiter_id else None
    if tier2_percent is not None:
        p.tier2_percent = parse_percent_text(tier2_percent, "tier2_percent")
    _audit(actor_user_id, "partner.set_recruiter", "partner", p.id, before,
           {"recruiter_id": p.recruiter_id, "recruiter_percent": p.recruiter_percent,
            "tier2_percent": p.tier2_percent})
    db.session.commit()
    return p


# --------------------------------------------------------------------------- vanity coupons


def _code_taken(code_lower: str, *, except_request: int | None = None) -> bool:
    if db.session.scalar(select(Link.id).where(Link.coupon_code_lower == code_lower)):
        return True
    stmt = select(CouponRequest.id).where(CouponRequest.code_lower == code_lower, CouponRequest.status == "pending")
    if except_request is not None:
        stmt = stmt.where(CouponRequest.id != except_request)
    return db.session.scalar(stmt) is not None


def request_vanity_code(partner_id: int, link_id: int, code: str) -> CouponRequest:
    """A partner asks for the vanity coupon ``code`` on its link ``link_id``. Codes are 1-64 of
    ``A-Z a-z 0-9 _ -`` (400 ``bad_coupon_code``), compare case-insensitively and are unique
    across the network: taken by a link or by another pending request → 409
    ``duplicate_coupon_code``. A second pending request on the same link → 409
    ``invalid_state``. Raises NotFound for a link that is not the partner's."""
    link = db.session.get(Link, link_id)
    if link is None or link.partner_id != partner_id:
        raise NotFound(f"no link {link_id}")
    if not isinstance(code, str) or not COUPON_RE.fullmatch(code):
        raise ValidationError("code must be 1-64 of A-Z a-z 0-9 _ -", code="bad_coupon_code", field="code")
    if db.session.scalar(select(CouponRequest.id).where(CouponRequest.link_id == link_id,
                                                        CouponRequest.status == "pending")):
        raise InvalidState("this link already has a pending code request", field="code")
    if _code_taken(code.lower()):
        raise Duplicate("this coupon code is taken (codes compare case-insensitively)",
                        code="duplicate_coupon_code", field="code")
    req = CouponRequest(link_id=link_id, partner_id=partner_id, code=code, code_lower=code.lower(),
                        status="pending", created_at=utcnow())
    db.session.add(req)
    db.session.commit()
    return req


def decide_vanity_code(request_id: int, *, approve: bool, actor_user_id: int | None,
                       note: str | None = None) -> CouponRequest:
    """Staff approve (the link's coupon code becomes the requested code, replacing the old one)
    or reject a pending request. Raises NotFound, InvalidState (not pending), Duplicate
    ``duplicate_coupon_code`` when the code was taken meanwhile (the unique
    ``links.coupon_code_lower`` is the race-safe backstop)."""
    req = db.session.get(CouponRequest, request_id)
    if req is None:
        raise NotFound(f"no coupon request {request_id}")
    if req.status != "pending":
        raise InvalidState(f"coupon request {request_id} is {req.status}, not pending")
    link = db.session.get(Link, req.link_id)
    before = {"status": req.status, "coupon_code": link.coupon_code}
    if approve:
        other = db.session.scalar(select(Link.id).where(Link.coupon_code_lower == req.code_lower,
                                                        Link.id != link.id))
        if other:
            raise Duplicate("this coupon code is taken", code="duplicate_coupon_code", field="code")
        link.coupon_code, link.coupon_code_lower = req.code, req.code_lower
    req.status = "approved" if approve else "rejected"
    req.decided_at, req.decided_by = utcnow(), actor_user_id
    req.note = (note or None) and str(note)[:255]
    _audit(actor_user_id, f"coupon_request.{'approve' if approve else 'reject'}", "coupon_request", req.id,
           before, {"status": req.status, "coupon_code": link.coupon_code})
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Duplicate("this coupon code is taken", code="duplicate_coupon_code", field="code") from None
    return req


def coupon_requests_query(*, status: str | None = None, partner_id: int | None = None):
    """Coupon requests by id, optionally by status and partner."""
    stmt = select(CouponRequest).order_by(CouponRequest.id)
    if status is not None:
        stmt = stmt.where(CouponRequest.status == status)
    if partner_id is not None:
        stmt = stmt.where(CouponRequest.partner_id == partner_id)
    return stmt


# --------------------------------------------------------------------------- tracking-number pool


def _check_number(number: Any, field: str = "number") -> str:
    if not isinstance(number, str) or not E164_RE.fullmatch(number):
        raise ValidationError(f"{field} must be E.164, e.g. +14155550123", code="bad_tracking_number", field=field)
    return number


def add_pool_numbers(numbers: list[str], *, actor_user_id: int | None = None) -> list[TrackingNumber]:
    """Add E.164 numbers to the pool (1 to 1000 at once, all or nothing). A number already in
    the pool or on a link → 409 ``duplicate_tracking_number``; a bad one → 400
    ``bad_tracking_number``. Returns the new pool rows."""
    if not isinstance(numbers, list) or not 1 <= len(numbers) <= MAX_BULK:
        raise ValidationError(f"numbers must be a list of 1-{MAX_BULK} numbers", field="numbers")
    clean = [_check_number(n, "numbers") for n in numbers]
    if len(set(clean)) != len(clean):
        raise Duplicate("a number is given twice", code="duplicate_tracking_number", field="numbers")
    taken = set(db.session.scalars(select(TrackingNumber.number).where(TrackingNumber.number.in_(clean))))
    taken |= set(db.session.scalars(select(Link.tracking_number).where(Link.tracking_number.in_(clean))))
    if taken:
        raise Duplicate(f"already in use: {', '.join(sorted(taken))}", code="duplicate_tracking_number",
                        field="numbers")
    rows = [TrackingNumber(number=n, created_at=utcnow()) for n in clean]
    db.session.add_all(rows)
    db.session.flush()
    _audit(actor_user_id, "tracking_number.add", "tracking_number_pool", len(rows), None, {"numbers": clean})
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Duplicate("a number is already in use", code="duplicate_tracking_number", field="numbers") from None
    return rows


def _free_numbers(n: int) -> list[TrackingNumber]:
    stmt = select(TrackingNumber).where(TrackingNumber.link_id.is_(None)).order_by(TrackingNumber.id).limit(n)
    if db.session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return list(db.session.scalars(stmt))


def _assign(link: Link, tn: TrackingNumber) -> None:
    if link.tracking_number:
        raise InvalidState(f"link {link.id} already has number {link.tracking_number}", field="link_id")
    tn.link_id, tn.assigned_at = link.id, utcnow()
    link.tracking_number = tn.number


def assign_number(link_id: int, number: str | None = None, *, actor_user_id: int | None = None) -> Link:
    """Give link ``link_id`` a tracking number from the pool: ``number`` (it must be in the
    pool and free), else the free pool number added first. Raises NotFound (link; ``number`` not
    in the pool → 404 ``unknown_number``), InvalidState (the link has a number already;
    ``pool_exhausted``; the number is assigned already: ``number_assigned``)."""
    link = db.session.get(Link, link_id)
    if link is None:
        raise NotFound(f"no link {link_id}")
    if number is not None:
        _check_number(number)
        tn = db.session.scalar(select(TrackingNumber).where(TrackingNumber.number == number))
        if tn is None:
            raise NotFound(f"{number} is not in the pool", code="unknown_number")
        if tn.link_id is not None:
            raise InvalidState(f"{number} is assigned to link {tn.link_id}", code="number_assigned", field="number")
    else:
        free = _free_numbers(1)
        if not free:
            raise InvalidState("the number pool is empty", code="pool_exhausted")
        tn = free[0]
    _assign(link, tn)
    _audit(actor_user_id, "tracking_number.assign", "link", link.id, None, {"tracking_number": tn.number})
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise InvalidState("the number was taken meanwhile; try again", code="number_assigned") from None
    return link


def assign_numbers_bulk(link_ids: list[int], *, actor_user_id: int | None = None) -> list[Link]:
    """Give each link of ``link_ids`` (1-1000, distinct, none with a number yet) the next free
    pool number, in the order given; all or nothing. Raises ValidationError, NotFound (a link),
    InvalidState (a link already has a number; ``pool_exhausted`` when the pool has too few)."""
    if not isinstance(link_ids, list) or not 1 <= len(link_ids) <= MAX_BULK or len(set(link_ids)) != len(link_ids):
        raise ValidationError(f"link_ids must be 1-{MAX_BULK} distinct link ids", field="link_ids")
    links = []
    for lid in link_ids:
        link = db.session.get(Link, lid)
        if link is None:
            raise NotFound(f"no link {lid}")
        links.append(link)
    free = _free_numbers(len(links))
    if len(free) < len(links):
        raise InvalidState(f"the pool has {len(free)} free number(s), {len(links)} needed", code="pool_exhausted")
    for link, tn in zip(links, free, strict=True):
        _assign(link, tn)
    _audit(actor_user_id, "tracking_number.assign_bulk", "links", len(links), None,
           {str(lk.id): lk.tracking_number for lk in links})
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise InvalidState("a number was taken meanwhile; try again", code="number_assigned") from None
    return links


def pool_query(*, free: bool | None = None):
    """Pool numbers by id; ``free`` True: unassigned only, False: assigned only."""
    stmt = select(TrackingNumber).order_by(TrackingNumber.id)
    if free is True:
        stmt = stmt.where(TrackingNumber.link_id.is_(None))
    elif free is False:
        stmt = stmt.where(TrackingNumber.link_id.is_not(None))
    return stmt
