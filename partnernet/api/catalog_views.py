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
POST /partners, .../approve etc.    yes                    403                     403
GET /partners, /partners/<id>       all                    itself                  403
GET /partners/<id>/earnings         all                    itself                  403
POST /links                         any approved partner   itself (no partner_id)  403
GET /links, /links/<id>             all                    its links               403
==================================  =====================  ======================  ==================
"""

from __future__ import annotations

from flask import jsonify

from ..catalog import services as catalog
from ..errors import NotFound
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
    require("staff")
    client = catalog.create_client(json_body())
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
    require("staff")
    camp = catalog.create_campaign(json_body())
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
    camp = catalog.update_campaign(cid, body, as_client_id=who.client_id if who.is_client else None)
    return jsonify(serialize.campaign(camp))


# ---------------------------------------------------------------- partners


@bp.post("/partners")
def create_partner():
    require("staff")
    partner = catalog.create_partner(json_body())
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
    link = catalog.create_link(json_body(), as_partner_id=who.partner_id if who.is_partner else None)
    return jsonify(serialize.link(link)), 201


@bp.get("/links")
def list_links():
    who = require("staff", "partner")
    stmt = catalog.links_query(partner_id=id_arg("partner_id"), campaign_id=id_arg("campaign_id"))
    if who.is_partner:
        stmt = stmt.where(Link.partner_id == who.partner_id)
    return jsonify(page(stmt, Link.id, serialize.link))


@bp.get("/links/<link_id>")
def get_link(link_id: str):
    who = require("staff", "partner")
    link = catalog.get_link(_id(link_id, "link"), partner_id=who.partner_id if who.is_partner else None)
    return jsonify(serialize.link(link))
