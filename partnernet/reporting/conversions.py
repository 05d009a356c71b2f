"""Conversion reads of the API (CONTRACT §5 ``GET /conversions``), scoped to a partner key or a
client key. A partner's conversions are those it converted and those where it has a split line
of its own; what it sees of them is decided by :mod:`partnernet.reporting.visibility`."""

from __future__ import annotations

from sqlalchemy import or_, select

from ..errors import ValidationError
from ..extensions import db
from ..models import Campaign, Conversion, ConversionSplit


def conversions_query(
    *,
    campaign_id: int | None = None,
    partner_id: int | None = None,
    status: str | None = None,
    reason: str | None = None,
    scope_partner_id: int | None = None,
    scope_client_id: int | None = None,
):
    """Conversions ordered by id (CONTRACT §5 ``GET /conversions``), with the filters
    ``campaign_id``, ``partner_id`` (the converter), ``status`` (400 ``bad_status`` when unknown)
    and ``reason``; ``scope_partner_id`` keeps a partner key's conversions (as converter, and
    those where it earned as touch or recruiter),
    ``scope_client_id`` a client key's (its campaigns)."""
    from ..models import CONVERSION_STATUSES

    stmt = select(Conversion).order_by(Conversion.id)
    if campaign_id is not None:
        stmt = stmt.where(Conversion.campaign_id == campaign_id)
    if partner_id is not None:
        stmt = stmt.where(Conversion.partner_id == partner_id)
    if status is not None:
        if status not in CONVERSION_STATUSES:
            raise ValidationError(
                f"status must be one of {', '.join(CONVERSION_STATUSES)}", code="bad_status", field="status"
            )
        stmt = stmt.where(Conversion.status == status)
    if reason is not None:
        stmt = stmt.where(Conversion.reason == reason)
    if scope_partner_id is not None:
        # as converter, or as touch or recruiter (it has a split line of its own: issue 6)
        earned = select(ConversionSplit.conversion_id).where(ConversionSplit.partner_id == scope_partner_id)
        stmt = stmt.where(or_(Conversion.partner_id == scope_partner_id, Conversion.id.in_(earned)))
    if scope_client_id is not None:
        stmt = stmt.where(
            Conversion.campaign_id.in_(select(Campaign.id).where(Campaign.client_id == scope_client_id))
        )
    return stmt


def get_conversion(
    conversion_id: int, *, scope_partner_id: int | None = None, scope_client_id: int | None = None
) -> Conversion:
    """The conversion ``conversion_id`` inside the scope (see :func:`conversions_query`); raises NotFound."""
    from ..errors import NotFound

    conv = db.session.scalar(
        conversions_query(scope_partner_id=scope_partner_id, scope_client_id=scope_client_id).where(
            Conversion.id == conversion_id
        )
    )
    if conv is None:
        raise NotFound(f"no conversion {conversion_id}")
    return conv
