"""Payout batch calls (CONTRACT §5), staff only (403 for other keys). The use cases live in
:mod:`partnernet.payouts.services` (the batch's life), :mod:`partnernet.payouts.exports` (CSV
files) and :mod:`partnernet.payouts.sepa` (SEPA XML), imported when a call needs them."""

from __future__ import annotations

from flask import Response, jsonify
from sqlalchemy import select

from .. import money
from ..catalog.services import parse_money
from ..errors import NotFound, ValidationError
from ..extensions import db
from ..models import BATCH_STATUSES, PayoutBatch
from . import serialize
from .auth import require
from .params import arg, json_body, page, path_id
from .views import bp

BATCH_FIELDS = ("currency", "min_amount")


def _batch_id(value: str) -> int:
    bid = path_id(value)
    if bid is None:
        raise NotFound(f"no payout batch {value}")
    return bid


def _render(result) -> dict:
    """Serialize the batch a payout service returned (a PayoutBatch or its id), read fresh."""
    bid = result if isinstance(result, int) else result.id
    db.session.expire_all()
    batch = db.session.get(PayoutBatch, bid)
    if batch is None:  # pragma: no cover - it was just written
        raise NotFound(f"no payout batch {bid}")
    return serialize.payout_batch(batch)


@bp.post("/payout-batches")
def create_payout_batch():
    who = require("staff")
    body = json_body()
    for name in body:
        if name not in BATCH_FIELDS:
            raise ValidationError(f"unknown field {name!r}", code="unknown_field", field=name)
    currency = body.get("currency")
    if currency is None:
        raise ValidationError("currency is required", code="missing_field", field="currency")
    if not money.is_currency(currency):
        raise ValidationError(
            f"unknown currency code {currency!r}", code="unknown_currency", field="currency"
        )
    min_amount = body.get("min_amount")
    min_minor = 0 if min_amount is None else parse_money(min_amount, currency, "min_amount")
    from ..payouts.services import create_batch

    return jsonify(_render(create_batch(currency, min_minor, who.user_id))), 201


@bp.get("/payout-batches")
def list_payout_batches():
    require("staff")
    stmt = select(PayoutBatch).order_by(PayoutBatch.id)
    status, currency = arg("status"), arg("currency")
    if status is not None:
        if status not in BATCH_STATUSES:
            raise ValidationError(
                f"status must be one of {', '.join(BATCH_STATUSES)}", code="bad_status", field="status"
            )
        stmt = stmt.where(PayoutBatch.status == status)
    if currency is not None:
        stmt = stmt.where(PayoutBatch.currency == currency)
    return jsonify(page(stmt, PayoutBatch.id, serialize.payout_batch))


@bp.get("/payout-batches/<batch_id>")
def get_payout_batch(batch_id: str):
    require("staff")
    batch = db.session.get(PayoutBatch, _batch_id(batch_id))
    if batch is None:
        raise NotFound(f"no payout batch {batch_id}")
    return jsonify(serialize.payout_batch(batch))


@bp.post("/payout-batches/<batch_id>/approve")
def approve_payout_batch(batch_id: str):
    who = require("staff")
    from ..payouts.services import approve_batch

    return jsonify(_render(approve_batch(_batch_id(batch_id), who.user_id)))


@bp.post("/payout-batches/<batch_id>/cancel")
def cancel_payout_batch(batch_id: str):
    who = require("staff")
    from ..payouts.services import cancel_batch

    return jsonify(_render(cancel_batch(_batch_id(batch_id), who.user_id)))


@bp.post("/payout-batches/<batch_id>/mark-paid")
def mark_payout_batch_paid(batch_id: str):
    who = require("staff")
    from ..payouts.services import mark_batch_paid

    return jsonify(_render(mark_batch_paid(_batch_id(batch_id), who.user_id)))


def _file(body, mimetype: str, filename: str) -> Response:
    return Response(body, mimetype=mimetype,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@bp.get("/payout-batches/<batch_id>/export.csv")
def export_payout_batch(batch_id: str):
    """The bank CSV (CONTRACT v2 §5): approved or paid batches only (409 batch_not_approved)."""
    require("staff")
    bid = _batch_id(batch_id)
    from ..payouts.exports import export_csv

    return _file(export_csv(bid), "text/csv", f"payout-batch-{bid}.csv")


@bp.get("/payout-batches/<batch_id>/paypal.csv")
def export_payout_batch_paypal(batch_id: str):
    """PayPal Payouts CSV rows of the items paid by PayPal (CONTRACT v2 §5); 409 on a draft."""
    require("staff")
    bid = _batch_id(batch_id)
    from ..payouts.exports import export_paypal_csv

    return _file(export_paypal_csv(bid), "text/csv", f"paypal-payouts-{bid}.csv")


@bp.get("/payout-batches/<batch_id>/sepa.xml")
def export_payout_batch_sepa(batch_id: str):
    """The pain.001.001.03 SEPA credit-transfer file of an approved or paid EUR batch (CONTRACT v2
    §5); 409 batch_not_approved, sepa_eur_only, sepa_not_configured, no_sepa_items."""
    require("staff")
    bid = _batch_id(batch_id)
    from ..payouts.sepa import export_sepa_xml

    return _file(export_sepa_xml(bid), "application/xml", f"sepa-payout-batch-{bid}.xml")
