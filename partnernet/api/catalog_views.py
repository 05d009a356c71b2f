"""Catalog calls: clients, campaigns, partners, links and partner earnings (CONTRACT §5).

Who may call what (403 for a role that may never make the call, 404 for an
object outside the key's scope):

==================================  =====================  ======================  ==================
call                                staff                  partner key             client key
==================================  =====================  ======================  ==================
POST /clients                       yes                    403                     403
GET /clients, /clients/<id>         all                    403                     its own record
POST /campaigns                     yes                    403                     403
GET /campaigns, /campaigns/<id>     all                    403                     its campaigns
PATCH /campaigns/<id>               every field            403                     its own, status only
POST /campaigns/<id>/partners       yes                    403                     403
POST /partners, .../approve etc.    yes                    403                     403
GET /partners, /partners/<id>       all                    itself                  403
GET /partners/<id>/earnings         all                    itself                  403
POST /links                         any approved partner   itself, see below       403
GET /links, /links/<id>             all                    its links               403
==================================  =====================  ======================  ==================

(v2) A partner key creates links only on campaigns it may promote (403
``campaign_not_available``), never with ``coupon_code`` or ``tracking_number`` and never for
another partner (403 ``forbidden``): :mod:`partnernet.catalog.links`.
"""

from __future__ import annotations

from flask import jsonify

from ..catalog import access
from ..catalog import links as catalog_links
from ..catalog import services as catalog
from ..errors import NotFound, ValidationError
from ..models import Campaign, Client, Link, Partner
from . import serialize
from .auth import require
from .params import arg, id_arg, json_body, page, path_id
from .views import bp


def _id(value: str, what: str) -> int:
    oid = path_id(value)
    if oid is None:
        raise NotFound(f"no {what} {value}")
    return oid


# ---------------------------------------------------------------- clients


@bp.post("/clients")
def create_client():
    who = require("staff")
    client = catalog.create_client(json_body(), actor_user_id=who.user_id)
    return jsonify(serialize.client(client)), 201


@bp.get("/clients")
def list_clients():
    who = require("staff", "client")
    stmt = catalog.clients_query(
        name=arg("name"), email=arg("email"), only_id=who.client_id if who.is_client else None
    )
    return jsonify(page(stmt, Client.id, serialize.client))


@bp.get("/clients/<client_id>")
def get_client(client_id: str):
    who = require("staff", "client")
    cid = _id(client_id, "client")
    if who.is_client and cid != who.client_id:
        raise NotFound(f"no client {client_id}")
    return jsonify(serialize.client(catalog.get_client(cid)))


# ---------------------------------------------------------------- campaigns


@bp.post("/campaigns")
def create_campaign():
    who = require("staff")
    camp = catalog.create_campaign(json_body(), actor_user_id=who.user_id)
    return jsonify(serialize.campaign(camp)), 201


@bp.get("/campaigns")
def list_campaigns():
    who = require("staff", "client")
    client_id = id_arg("client_id")
    stmt = catalog.campaigns_query(client_id=client_id, status=arg("status"))
    if who.is_client:
        stmt = stmt.where(Campaign.client_id == who.client_id)
    return jsonify(page(stmt, Campaign.id, serialize.campaign))


@bp.get("/campaigns/<campaign_id>")
def get_campaign(campaign_id: str):
    who = require("staff", "client")
    camp = catalog.get_campaign(
        _id(campaign_id, "campaign"), client_id=who.client_id if who.is_client else None
    )
    return jsonify(serialize.campaign(camp))


@bp.patch("/campaigns/<campaign_id>")
def update_campaign(campaign_id: str):
    who = require("staff", "client")
    cid = _id(campaign_id, "campaign")
    body = json_body()
    camp = catalog.update_campaign(cid, body, as_client_id=who.client_id if who.is_client else None,
                                   actor_user_id=who.user_id)
    return jsonify(serialize.campaign(camp))


@bp.post("/campaigns/<campaign_id>/partners")
def grant_campaign_access(campaign_id: str):
    """Staff grant a partner access to a campaign (CONTRACT §5 (v2)): 201, or 200 when it had it."""
    who = require("staff")
    cid = _id(campaign_id, "campaign")
    body = json_body()
    catalog.check_unknown_fields(body, ("partner_id",))
    catalog.get_campaign(cid)
    raw = body.get("partner_id")
    if raw is None:
        raise ValidationError("partner_id is required", code="missing_field", field="partner_id")
    pid = catalog.parse_id(raw, "partner_id", code="unknown_partner")
    app, created = access.grant_access(cid, pid, who.user_id)
    return jsonify({
        "id": serialize.sid(app.id), "campaign_id": serialize.sid(app.campaign_id),
        "partner_id": serialize.sid(app.partner_id), "status": app.status,
        "created_at": serialize.ts(app.created_at), "decided_at": serialize.ts(app.decided_at),
    }), (201 if created else 200)


# ---------------------------------------------------------------- partners


@bp.post("/partners")
def create_partner():
    who = require("staff")
    partner = catalog.create_partner(json_body(), actor_user_id=who.user_id)
    return jsonify(serialize.partner(partner)), 201


@bp.get("/partners")
def list_partners():
    who = require("staff", "partner")
    stmt = catalog.partners_query(
        email=arg("email"),
        status=arg("status"),
        kind=arg("kind"),
        only_id=who.partner_id if who.is_partner else None,
    )
    return jsonify(page(stmt, Partner.id, serialize.partner))


@bp.get("/partners/<partner_id>")
def get_partner(partner_id: str):
    who = require("staff", "partner")
    partner = catalog.get_partner(
        _id(partner_id, "partner"), only_id=who.partner_id if who.is_partner else None
    )
    return jsonify(serialize.partner(partner))


def _partner_action(partner_id: str, action: str):
    who = require("staff")
    partner = catalog.set_partner_status(_id(partner_id, "partner"), action, who.user_id)
    return jsonify(serialize.partner(partner))


@bp.post("/partners/<partner_id>/approve")
def approve_partner(partner_id: str):
    return _partner_action(partner_id, "approve")


@bp.post("/partners/<partner_id>/reject")
def reject_partner(partner_id: str):
    return _partner_action(partner_id, "reject")


@bp.post("/partners/<partner_id>/suspend")
def suspend_partner(partner_id: str):
    return _partner_action(partner_id, "suspend")


@bp.get("/partners/<partner_id>/earnings")
def partner_earnings(partner_id: str):
    who = require("staff", "partner")
    partner = catalog.get_partner(
        _id(partner_id, "partner"), only_id=who.partner_id if who.is_partner else None
    )
    from ..ledger.services import partner_earnings as earnings_of

    items = earnings_of(partner.id)
    return jsonify({"items": [serialize.earnings(i) for i in items], "next": None})


# ---------------------------------------------------------------- links


@bp.post("/links")
def create_link():
    who = require("staff", "partner")
    if who.is_partner:
        link = catalog_links.create_link(json_body(), as_partner_id=who.partner_id, actor_user_id=who.user_id)
    else:
        link = catalog_links.create_link(json_body(), staff_user_id=who.user_id)
    return jsonify(serialize.link(link)), 201


@bp.get("/links")
def list_links():
    who = require("staff", "partner")
    stmt = catalog_links.links_query(partner_id=id_arg("partner_id"), campaign_id=id_arg("campaign_id"))
    if who.is_partner:
        stmt = stmt.where(Link.partner_id == who.partner_id)
    return jsonify(page(stmt, Link.id, serialize.link))


@bp.get("/links/<link_id>")
def get_link(link_id: str):
    who = require("staff", "partner")
    link = catalog_links.get_link(_id(link_id, "link"), partner_id=who.partner_id if who.is_partner else None)
    return jsonify(serialize.link(link))
