"""Commission rule calls (issue 6): partner tiers, recruiters and invite links, per-partner
payout overrides, performance bonuses, vanity coupon requests and the tracking-number pool.

==========================================  =========  ================================  =========
call                                        staff      partner key                       client
==========================================  =========  ================================  =========
GET/POST /partner-tiers                     yes        403                               403
POST /partners/<id>/tier                    yes        403                               403
POST /partners/<id>/recruiter               yes        403                               403
GET /partners/<id>/invite                   yes        itself                            403
GET/POST /payout-overrides, DELETE .../<id> yes        403                               403
GET/POST /performance-bonuses, DELETE       yes        403                               403
POST /links/<id>/coupon-requests            403        its own links                     403
GET /coupon-requests                        all        its own                           403
POST /coupon-requests/<id>/approve|reject   yes        403                               403
GET/POST /tracking-numbers                  yes        403                               403
POST /tracking-numbers/assign               yes        403                               403
POST /links/<id>/tracking-number            yes        403                               403
==========================================  =========  ================================  =========
"""

from __future__ import annotations

from typing import Any

from flask import jsonify
from sqlalchemy import select

from ..catalog.services import parse_id, percent_text
from ..commission import services as commission
from ..errors import NotFound, ValidationError
from ..extensions import db
from ..models import (
    COUPON_REQUEST_STATUSES,
    Campaign,
    CouponRequest,
    Link,
    PartnerPayoutOverride,
    PerformanceBonus,
    TrackingNumber,
)
from ..money import format_minor
from . import serialize
from .auth import require
from .params import arg, id_arg, json_body, page, path_id
from .views import bp


def _id(value: str, what: str) -> int:
    oid = path_id(value)
    if oid is None:
        raise NotFound(f"no {what} {value}")
    return oid


def _only(body: dict, allowed: set[str]) -> dict:
    for name in body:
        if name not in allowed:
            raise ValidationError(f"unknown field {name!r}", code="unknown_field", field=name)
    return body


def _need(body: dict, name: str) -> Any:
    if body.get(name) is None:
        raise ValidationError(f"{name} is required", code="missing_field", field=name)
    return body[name]


def _opt_id(body: dict, name: str) -> int | None:
    return None if body.get(name) is None else parse_id(body[name], name)


def _tier(t) -> dict:
    return {"id": str(t.id), "name": t.name, "payout_percent": percent_text(t.payout_percent),
            "bonus_points": percent_text(t.bonus_points), "created_at": serialize.ts(t.created_at)}


def _override(o: PartnerPayoutOverride) -> dict:
    cur = db.session.scalar(select(Campaign.currency).where(Campaign.id == o.campaign_id))
    return {"id": str(o.id), "campaign_id": str(o.campaign_id), "partner_id": str(o.partner_id),
            "event": o.event_key,
            "payout": format_minor(o.payout_minor, cur) if o.payout_minor is not None else None,
            "payout_percent": percent_text(o.payout_percent), "currency": cur}


def _bonus(b: PerformanceBonus) -> dict:
    return {"id": str(b.id), "campaign_id": str(b.campaign_id), "event": b.event_key, "threshold": b.threshold,
            "bonus_points": percent_text(b.bonus_points)}


def _coupon_request(r: CouponRequest) -> dict:
    return {"id": str(r.id), "link_id": str(r.link_id), "partner_id": str(r.partner_id), "code": r.code,
            "status": r.status, "note": r.note, "created_at": serialize.ts(r.created_at),
            "decided_at": serialize.ts(r.decided_at)}


def _number(n: TrackingNumber) -> dict:
    return {"id": str(n.id), "number": n.number, "link_id": serialize.sid(n.link_id),
            "assigned_at": serialize.ts(n.assigned_at), "created_at": serialize.ts(n.created_at)}


# ---------------------------------------------------------------- tiers and recruiters


@bp.get("/partner-tiers")
def list_partner_tiers():
    require("staff")
    return jsonify({"items": [_tier(t) for t in commission.list_tiers()], "next": None})


@bp.post("/partner-tiers")
def create_partner_tier():
    who = require("staff")
    body = _only(json_body(), {"name", "payout_percent", "bonus_points"})
    tier = commission.create_tier(_need(body, "name"), payout_percent=body.get("payout_percent"),
                                  bonus_points=body.get("bonus_points"), actor_user_id=who.user_id)
    return jsonify(_tier(tier)), 201


@bp.post("/partners/<partner_id>/tier")
def set_partner_tier(partner_id: str):
    who = require("staff")
    body = _only(json_body(), {"tier_id"})
    p = commission.set_partner_tier(_id(partner_id, "partner"), _opt_id(body, "tier_id"), actor_user_id=who.user_id)
    return jsonify({**serialize.partner(p), "tier_id": serialize.sid(p.tier_id)})


@bp.post("/partners/<partner_id>/recruiter")
def set_partner_recruiter(partner_id: str):
    who = require("staff")
    body = _only(json_body(), {"recruiter_id", "recruiter_percent", "tier2_percent"})
    p = commission.set_recruiter(
        _id(partner_id, "partner"), recruiter_id=_opt_id(body, "recruiter_id"),
        recruiter_percent=body.get("recruiter_percent"), tier2_percent=body.get("tier2_percent"),
        actor_user_id=who.user_id,
    )
    return jsonify({**serialize.partner(p), "tier2_percent": percent_text(p.tier2_percent)})


@bp.get("/partners/<partner_id>/invite")
def partner_invite(partner_id: str):
    who = require("staff", "partner")
    pid = _id(partner_id, "partner")
    if who.is_partner and who.partner_id != pid:
        raise NotFound(f"no partner {partner_id}")
    from ..models import Partner
    from ..partners.recruiting import invite_url, make_invite_token

    if db.session.get(Partner, pid) is None:
        raise NotFound(f"no partner {partner_id}")
    return jsonify({"partner_id": str(pid), "token": make_invite_token(pid), "url": invite_url(pid)})


# ---------------------------------------------------------------- overrides and bonuses


@bp.get("/payout-overrides")
def list_payout_overrides():
    require("staff")
    stmt = commission.payout_overrides_query(campaign_id=id_arg("campaign_id"), partner_id=id_arg("partner_id"))
    return jsonify(page(stmt, PartnerPayoutOverride.id, _override))


@bp.post("/payout-overrides")
def set_payout_override():
    who = require("staff")
    body = _only(json_body(), {"campaign_id", "partner_id", "event", "payout", "payout_percent"})
    ov = commission.set_payout_override(
        parse_id(_need(body, "campaign_id"), "campaign_id"), parse_id(_need(body, "partner_id"), "partner_id"),
        event_key=body.get("event"), payout=body.get("payout"), payout_percent=body.get("payout_percent"),
        actor_user_id=who.user_id,
    )
    return jsonify(_override(ov)), 201


@bp.delete("/payout-overrides/<override_id>")
def delete_payout_override(override_id: str):
    who = require("staff")
    commission.delete_payout_override(_id(override_id, "payout override"), actor_user_id=who.user_id)
    return "", 204


@bp.get("/performance-bonuses")
def list_performance_bonuses():
    require("staff")
    return jsonify(page(commission.bonuses_query(campaign_id=id_arg("campaign_id")), PerformanceBonus.id, _bonus))


@bp.post("/performance-bonuses")
def set_performance_bonus():
    who = require("staff")
    body = _only(json_body(), {"campaign_id", "event", "threshold", "bonus_points"})
    b = commission.set_performance_bonus(
        parse_id(_need(body, "campaign_id"), "campaign_id"), threshold=_need(body, "threshold"),
        bonus_points=_need(body, "bonus_points"), event_key=body.get("event"), actor_user_id=who.user_id,
    )
    return jsonify(_bonus(b)), 201


@bp.delete("/performance-bonuses/<bonus_id>")
def delete_performance_bonus(bonus_id: str):
    who = require("staff")
    commission.delete_performance_bonus(_id(bonus_id, "performance bonus"), actor_user_id=who.user_id)
    return "", 204


# ---------------------------------------------------------------- vanity coupons


@bp.post("/links/<link_id>/coupon-requests")
def request_coupon(link_id: str):
    who = require("partner")
    body = _only(json_body(), {"code"})
    req = commission.request_vanity_code(who.partner_id or 0, _id(link_id, "link"), _need(body, "code"))
    return jsonify(_coupon_request(req)), 201


@bp.get("/coupon-requests")
def list_coupon_requests():
    who = require("staff", "partner")
    status = arg("status")
    if status is not None and status not in COUPON_REQUEST_STATUSES:
        raise ValidationError(f"status must be one of {', '.join(COUPON_REQUEST_STATUSES)}", code="bad_status",
                              field="status")
    stmt = commission.coupon_requests_query(
        status=status, partner_id=who.partner_id if who.is_partner else id_arg("partner_id"))
    return jsonify(page(stmt, CouponRequest.id, _coupon_request))


def _decide(request_id: str, approve: bool):
    who = require("staff")
    body = _only(json_body(), {"note"})
    req = commission.decide_vanity_code(_id(request_id, "coupon request"), approve=approve,
                                        actor_user_id=who.user_id, note=body.get("note"))
    return jsonify(_coupon_request(req))


@bp.post("/coupon-requests/<request_id>/approve")
def approve_coupon_request(request_id: str):
    return _decide(request_id, True)


@bp.post("/coupon-requests/<request_id>/reject")
def reject_coupon_request(request_id: str):
    return _decide(request_id, False)


# ---------------------------------------------------------------- tracking-number pool


@bp.get("/tracking-numbers")
def list_tracking_numbers():
    require("staff")
    free = arg("free")
    if free not in (None, "true", "false"):
        raise ValidationError("free must be true or false", field="free")
    stmt = commission.pool_query(free=None if free is None else free == "true")
    return jsonify(page(stmt, TrackingNumber.id, _number))


@bp.post("/tracking-numbers")
def add_tracking_numbers():
    who = require("staff")
    body = _only(json_body(), {"numbers"})
    rows = commission.add_pool_numbers(_need(body, "numbers"), actor_user_id=who.user_id)
    return jsonify({"items": [_number(n) for n in rows], "next": None}), 201


@bp.post("/tracking-numbers/assign")
def assign_tracking_numbers():
    who = require("staff")
    body = _only(json_body(), {"link_ids"})
    ids = _need(body, "link_ids")
    if not isinstance(ids, list):
        raise ValidationError("link_ids must be a list of link ids", field="link_ids")
    links = commission.assign_numbers_bulk([parse_id(x, "link_ids") for x in ids], actor_user_id=who.user_id)
    return jsonify({"items": [serialize.link(lk) for lk in links], "next": None})


@bp.post("/links/<link_id>/tracking-number")
def assign_tracking_number(link_id: str):
    who = require("staff")
    body = _only(json_body(), {"number"})
    link: Link = commission.assign_number(_id(link_id, "link"), body.get("number"), actor_user_id=who.user_id)
    return jsonify(serialize.link(link))
