"""Conversion calls (CONTRACT §5): list and read (staff; a partner key its conversions as
converter, touch or recruiter, with only its own split lines; a client key the conversions of its campaigns),
and staff approval or rejection, one conversion or up to 1,000 at once (CONTRACT v2 §5), through
:mod:`partnernet.conversions.review`."""

from __future__ import annotations

from flask import jsonify

from ..errors import NotFound, ValidationError
from ..extensions import db
from ..ids import MAX_BIG_ID
from ..models import Conversion
from ..reporting import services as reporting
from . import serialize
from .auth import Principal, require
from .params import arg, id_arg, json_body, page, path_id
from .views import bp


def _scope(who: Principal) -> dict:
    return {
        "scope_partner_id": who.partner_id if who.is_partner else None,
        "scope_client_id": who.client_id if who.is_client else None,
    }


def _render(who: Principal):
    only = who.partner_id if who.is_partner else None
    return lambda c: serialize.conversion(c, only_partner_id=only)


def _conversion_id(value: str) -> int:
    cid = path_id(value, max_id=MAX_BIG_ID)  # conversions have 64-bit keys
    if cid is None:
        raise NotFound(f"no conversion {value}")
    return cid


@bp.get("/conversions")
def list_conversions():
    who = require("staff", "partner", "client")
    stmt = reporting.conversions_query(
        campaign_id=id_arg("campaign_id"),
        partner_id=id_arg("partner_id"),
        status=arg("status"),
        reason=arg("reason"),
        **_scope(who),
    )
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
    for name in body:
        if name != "reason":
            raise ValidationError(f"unknown field {name!r}", code="unknown_field", field=name)
    reason = body.get("reason")  # text of at most 32 characters; blank or absent: "rejected_by_staff"
    from ..conversions.review import reject_conversion as reject

    reject(cid, who.user_id, reason)
    return jsonify(serialize.conversion(_fresh(cid)))


#: The most ids one bulk review call takes (CONTRACT v2 §5).
BULK_MAX_IDS = 1000


def _bulk_ids(body: dict, allowed: tuple[str, ...]) -> tuple[list[str], list[int | None]]:
    """The ``ids`` of a bulk review body: ``(as given, as ids or None when malformed)``.

    Raises ValidationError: ``unknown_field`` for a field outside ``allowed``,
    ``missing_field`` without ``ids``, ``bad_ids`` when it is not a non-empty list,
    ``too_many_ids`` past :data:`BULK_MAX_IDS`, ``bad_id`` (field ``ids[i]``) for an element
    that is neither a string nor a whole number. A string that is no conversion id is kept: its
    item answers ``not_found``."""
    for name in body:
        if name not in allowed:
            raise ValidationError(f"unknown field {name!r}", code="unknown_field", field=name)
    if "ids" not in body:
        raise ValidationError("ids is required", code="missing_field", field="ids")
    raw = body["ids"]
    if not isinstance(raw, list) or not raw:
        raise ValidationError("ids must be a non-empty list of conversion ids", code="bad_ids", field="ids")
    if len(raw) > BULK_MAX_IDS:
        raise ValidationError(f"at most {BULK_MAX_IDS} ids at once", code="too_many_ids", field="ids")
    given: list[str] = []
    for i, value in enumerate(raw):
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        elif not isinstance(value, str):
            raise ValidationError("ids must be strings", code="bad_id", field=f"ids[{i}]")
        given.append(value)
    return given, [path_id(v, max_id=MAX_BIG_ID) for v in given]


def _bulk(action: str, allowed: tuple[str, ...]):
    who = require("staff")
    body = json_body()
    given, ids = _bulk_ids(body, allowed)
    from ..conversions.review import review_many

    results = review_many(ids, action, who.user_id, body.get("reason"))
    items = []
    for text, (status, error) in zip(given, results):
        item = {"id": text, "status": status}
        if error:
            item["error"] = error
        items.append(item)
    return jsonify(items=items)


@bp.post("/conversions/approve")
def approve_conversions():
    """Staff approves many conversions, each as ``POST /conversions/<id>/approve`` (CONTRACT v2 §5)."""
    return _bulk("approve", ("ids",))


@bp.post("/conversions/reject")
def reject_conversions():
    """Staff rejects many conversions with one ``reason``, each as ``POST /conversions/<id>/reject``
    (CONTRACT v2 §5)."""
    return _bulk("reject", ("ids", "reason"))
