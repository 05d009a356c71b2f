"""Conversion calls (CONTRACT §5): list and read (staff; a partner key its conversions as
converter, with only its own split lines; a client key the conversions of its campaigns),
and staff approval or rejection through :mod:`partnernet.conversions.review`."""

from __future__ import annotations

import re

from flask import jsonify

from ..errors import NotFound, ValidationError
from ..extensions import db
from ..models import Conversion
from ..reporting import services as reporting
from . import serialize
from .auth import Principal, require
from .params import arg, id_arg, json_body, page, path_id
from .views import bp

#: A staff rejection reason: a short machine code (it is stored in ``conversions.reason``).
REASON_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
DEFAULT_REJECT_REASON = "rejected_by_staff"


def _scope(who: Principal) -> dict:
    return {"scope_partner_id": who.partner_id if who.is_partner else None,
            "scope_client_id": who.client_id if who.is_client else None}


def _render(who: Principal):
    only = who.partner_id if who.is_partner else None
    return lambda c: serialize.conversion(c, only_partner_id=only)


def _conversion_id(value: str) -> int:
    cid = path_id(value)
    if cid is None:
        raise NotFound(f"no conversion {value}")
    return cid


@bp.get("/conversions")
def list_conversions():
    who = require("staff", "partner", "client")
    stmt = reporting.conversions_query(campaign_id=id_arg("campaign_id"), partner_id=id_arg("partner_id"),
                                       status=arg("status"), reason=arg("reason"), **_scope(who))
    return jsonify(page(stmt, Conversion.id, _render(who)))


@bp.get("/conversions/<conversion_id>")
def get_conversion(conversion_id: str):
    who = require("staff", "partner", "client")
    conv = reporting.get_conversion(_conversion_id(conversion_id), **_scope(who))
    return jsonify(_render(who)(conv))


def _fresh(conversion_id: int) -> Conversion:
    db.session.expire_all()
    conv = db.session.get(Conversion, conversion_id)
    if conv is None:  # pragma: no cover - it was just changed
        raise NotFound(f"no conversion {conversion_id}")
    return conv


@bp.post("/conversions/<conversion_id>/approve")
def approve_conversion(conversion_id: str):
    who = require("staff")
    cid = _conversion_id(conversion_id)
    json_body()  # a body, when sent, must at least be JSON
    from ..conversions.review import approve_conversion as approve

    approve(cid, who.user_id)
    return jsonify(serialize.conversion(_fresh(cid)))


@bp.post("/conversions/<conversion_id>/reject")
def reject_conversion(conversion_id: str):
    who = require("staff")
    cid = _conversion_id(conversion_id)
    body = json_body()
    reason = body.get("reason", DEFAULT_REJECT_REASON)
    if not isinstance(reason, str) or not REASON_RE.fullmatch(reason):
        raise ValidationError("reason must be a code of 1-32 of a-z 0-9 _ starting with a letter",
                              code="bad_reason", field="reason")
    from ..conversions.review import reject_conversion as reject

    reject(cid, who.user_id, reason)
    return jsonify(serialize.conversion(_fresh(cid)))
