"""Tracking links: creating one (CONTRACT §5 ``POST /links``), reading and listing them.

Who may create what (CONTRACT §5 and its (v2) "What a partner may do and see"):

- staff create links for any approved partner on any campaign, with a coupon code and a
  tracking number (v1). On an ``approval`` or ``invite_only`` campaign the partner has no
  access to, or one whose access staff revoked, the staff link also grants that access (the
  link is staff assigning the partner to the campaign), in the same transaction.
- a partner key creates links for itself only, on campaigns it may promote
  (:func:`partnernet.catalog.access.promotion_refusal`), and never sets a coupon code or a
  tracking number: staff assign those (the tracking-number pool, a vanity-code request that
  staff approve).

Errors: ValidationError 400, Forbidden 403, InvalidState/Duplicate 409; nothing is written
when a call is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError

from ..clock import utcnow
from ..errors import Duplicate, Forbidden, InvalidState, NotFound, ValidationError
from ..extensions import db
from ..models import CHANNELS, Campaign, CouponRequest, Link, Partner, TrackingNumber
from . import access, audit_states
from .services import (
    COUPON_RE,
    E164_RE,
    MAX_URL,
    _bad,
    _require,
    check_unknown_fields,
    deep_link_allowed,
    parse_id,
)

LINK_FIELDS = ("partner_id", "campaign_id", "channel", "deep_link", "coupon_code", "tracking_number")
#: Fields only staff set on a link (CONTRACT §5 (v2): a partner key gets 403 ``forbidden``).
STAFF_ONLY_FIELDS = ("coupon_code", "tracking_number")

__all__ = ["LINK_FIELDS", "create_link", "get_link", "links_query"]


def _partner_for_call(data: Mapping[str, Any], as_partner_id: int | None) -> int:
    raw = data.get("partner_id")
    if raw is None:
        if as_partner_id is None:
            raise _bad("missing_field", "partner_id is required", "partner_id")
        return as_partner_id
    if as_partner_id is None:
        return parse_id(raw, "partner_id", code="unknown_partner")
    try:
        named = parse_id(raw, "partner_id", code="unknown_partner")
    except ValidationError:
        named = None
    if named != as_partner_id:
        raise Forbidden("a partner key creates links for its own partner only", code="forbidden",
                        field="partner_id")
    return as_partner_id


def create_link(data: Mapping[str, Any], *, as_partner_id: int | None = None,
                staff_user_id: int | None = None, commit: bool = True, actor_user_id: int | None = None) -> Link:
    """Create a tracking link (CONTRACT §5 ``POST /links``) and commit.

    ``data``: ``{partner_id, campaign_id, channel?, deep_link?, coupon_code?, tracking_number?}``.
    ``as_partner_id``: the call comes from that partner's key (or its portal session); else it
    is staff's, by ``staff_user_id`` (recorded on an access grant). ``commit=False`` leaves the
    link flushed but uncommitted, for a caller that adds to the same transaction. Audited as
    ``link.create`` in the same transaction, by ``actor_user_id`` (default: ``staff_user_id``).

    A partner's call, checked first and in this order: ``coupon_code`` or ``tracking_number``
    given (not null) → 403 ``forbidden``; ``partner_id`` naming another partner (or no
    partner) → 403 ``forbidden``; ``campaign_id`` missing or not an id → 400; the partner not
    approved → 409 ``partner_not_approved``; a campaign it may not promote, or none with that
    id (so invite-only campaigns stay hidden) → 403 ``campaign_not_available``.

    Then for every caller: the partner exists (400 ``unknown_partner``) and the campaign
    (400 ``unknown_campaign``); ``channel`` one of :data:`partnernet.models.CHANNELS`
    (400 ``bad_channel``); ``deep_link`` passes the campaign's allow-list (400
    ``deep_link_not_allowed``); ``coupon_code`` is 1-64 of ``A-Z a-z 0-9 _ -`` (400
    ``bad_coupon_code``), unique case-insensitively and not waiting in a partner's vanity-code
    request (409 ``duplicate_coupon_code``); ``tracking_number`` is E.164 (400
    ``bad_tracking_number``) and unique (409 ``duplicate_tracking_number``); the partner is
    approved (409 ``partner_not_approved``). A staff link on a campaign the partner has no
    access to grants that access (:func:`partnernet.catalog.access.grant_in_session`). A
    tracking number that is a free number of the pool is marked as assigned to the new link.
    A concurrent insert of the same coupon or number is caught by the unique constraints and
    answers the same 409.
    """
    check_unknown_fields(data, LINK_FIELDS)
    is_partner = as_partner_id is not None
    if is_partner:
        for name in STAFF_ONLY_FIELDS:
            if data.get(name) is not None:
                raise Forbidden(f"{name} is assigned by staff; a partner may request a vanity code on its "
                                "link, which staff review", code="forbidden", field=name)
    partner_id = _partner_for_call(data, as_partner_id)
    campaign_id = parse_id(_require(data, "campaign_id"), "campaign_id", code="unknown_campaign")
    partner = db.session.get(Partner, partner_id)
    if partner is None:
        if is_partner:
            raise Forbidden("no partner is tied to this key", code="forbidden", field="partner_id")
        raise _bad("unknown_partner", f"no partner {partner_id}", "partner_id")
    campaign = db.session.get(Campaign, campaign_id)
    if is_partner:
        access.check_promotion(partner, campaign)
    elif campaign is None:
        raise _bad("unknown_campaign", f"no campaign {campaign_id}", "campaign_id")

    channel = data.get("channel")
    if channel is not None and channel not in CHANNELS:
        raise _bad("bad_channel", f"channel must be one of {', '.join(CHANNELS)}", "channel")
    deep_link = data.get("deep_link")
    if deep_link is not None:
        if not isinstance(deep_link, str) or len(deep_link) > MAX_URL:
            raise _bad("deep_link_not_allowed", "deep_link must be a URL", "deep_link")
        if not deep_link_allowed(deep_link, campaign.deep_link_hosts or []):
            raise _bad("deep_link_not_allowed", "deep_link is not on the campaign's deep-link allow-list",
                       "deep_link")
    coupon = data.get("coupon_code")
    if coupon is not None and (not isinstance(coupon, str) or not COUPON_RE.fullmatch(coupon)):
        raise _bad("bad_coupon_code", "coupon_code must be 1-64 of A-Z a-z 0-9 _ -", "coupon_code")
    number = data.get("tracking_number")
    if number is not None and (not isinstance(number, str) or not E164_RE.fullmatch(number)):
        raise _bad("bad_tracking_number", "tracking_number must be E.164, e.g. +14155550123",
                   "tracking_number")

    if partner.status != "approved":
        raise InvalidState(f"partner {partner.id} is {partner.status}, not approved",
                           code=access.NOT_APPROVED, field="partner_id")
    coupon_lower = coupon.lower() if coupon else None
    _check_unique_codes(coupon_lower, number)
    if not is_partner and not access.may_promote(partner.id, campaign.id):
        access.grant_in_session(partner.id, campaign.id, staff_user_id)
    link = Link(partner_id=partner.id, campaign_id=campaign.id, channel=channel, deep_link=deep_link,
                coupon_code=coupon, coupon_code_lower=coupon_lower, tracking_number=number)
    db.session.add(link)
    try:
        db.session.flush()
        if number:
            _take_pool_number(number, link)
        audit_states.record_created(actor_user_id if actor_user_id is not None else staff_user_id, "link", link)
        if commit:
            db.session.commit()
    except IntegrityError:
        db.session.rollback()
        _check_unique_codes(coupon_lower, number)
        raise
    return link


def _take_pool_number(number: str, link: Link) -> None:
    """Mark ``number`` as assigned to ``link`` when it is a free number of the pool."""
    tn = db.session.scalar(select(TrackingNumber).where(TrackingNumber.number == number,
                                                        TrackingNumber.link_id.is_(None)))
    if tn is not None:
        tn.link_id, tn.assigned_at = link.id, utcnow()


def _check_unique_codes(coupon_lower: str | None, number: str | None) -> None:
    if coupon_lower and db.session.scalar(select(Link.id).where(Link.coupon_code_lower == coupon_lower)):
        raise Duplicate("this coupon code is taken (codes compare case-insensitively)",
                        code="duplicate_coupon_code", field="coupon_code")
    if coupon_lower and db.session.scalar(select(CouponRequest.id).where(
            CouponRequest.code_lower == coupon_lower, CouponRequest.status == "pending")):
        raise Duplicate("a partner has requested this coupon code; it waits for staff review",
                        code="duplicate_coupon_code", field="coupon_code")
    if number and db.session.scalar(select(Link.id).where(Link.tracking_number == number)):
        raise Duplicate("this tracking number is taken", code="duplicate_tracking_number",
                        field="tracking_number")


def get_link(link_id: int, *, partner_id: int | None = None) -> Link:
    """The link ``link_id``; with ``partner_id`` it must be that partner's. Raises NotFound."""
    link = db.session.get(Link, link_id)
    if link is None or (partner_id is not None and link.partner_id != partner_id):
        raise NotFound(f"no link {link_id}")
    return link


def links_query(*, partner_id: int | None = None, campaign_id: int | None = None) -> Select:
    """Links ordered by id, optionally of one partner and/or one campaign."""
    stmt = select(Link).order_by(Link.id)
    if partner_id is not None:
        stmt = stmt.where(Link.partner_id == partner_id)
    if campaign_id is not None:
        stmt = stmt.where(Link.campaign_id == campaign_id)
    return stmt
