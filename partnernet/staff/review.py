"""The staff conversion review: the queue with its stored fraud flags, and bulk review.

Fraud flags are decided when a conversion is recorded and stored on it
(:mod:`partnernet.conversions.flags`; CONTRACT v2 §5 ``flags``): this page reads them, with
their evidence, and never recomputes them. Staff may approve or reject a flagged conversion
like any other; the scheduled approval never approves one (CONTRACT v2 §6), so the two paths
agree on what waits for staff.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import String, cast, func, select

from ..conversions.flags import FLAG_CODES, FLAG_LABELS
from ..errors import DomainError, ValidationError
from ..extensions import db
from ..models import Campaign, Conversion, Partner

#: The review page's flag filter: one flag code, or ``flagged`` (any flag).
FLAG_FILTERS = {"flagged": "any flag", **{code: FLAG_LABELS[code] for code in FLAG_CODES}}
BULK_MAX = 500


@dataclass
class ReviewQueue:
    """One page of the review queue: conversions (each with its stored ``flags`` and
    ``flag_evidence``), whether more matched than shown, and campaign and partner names
    (``names["campaign"][id]``, ``names["partner"][id]``)."""

    items: list[Conversion]
    truncated: bool = False
    names: dict = field(default_factory=dict)


def _has_flag(code: str):
    """SQL condition: the conversion's stored ``flags`` list holds ``code`` (a code of
    :data:`FLAG_CODES`: letters and ``_`` only, so the quoted match in the JSON text is exact)."""
    return cast(Conversion.flags, String).like(f'%"{code}"%')


def review_queue(*, campaign_id: int | None = None, partner_id: int | None = None, status: str | None = "pending",
                 reason: str | None = None, flag: str | None = None, limit: int = 200) -> ReviewQueue:
    """Conversions for review, oldest first (test conversions left out), by campaign, partner,
    status (default ``pending``; ``""`` or None: all), reason and fraud flag (a key of
    :data:`FLAG_FILTERS`: one flag code, or ``flagged`` for any). At most ``limit`` rows.
    Raises ValidationError (400 ``bad_status``, ``bad_flag``)."""
    from ..models import CONVERSION_STATUSES

    if status and status not in CONVERSION_STATUSES:
        raise ValidationError("unknown status", code="bad_status", field="status")
    if flag and flag not in FLAG_FILTERS:
        raise ValidationError("unknown flag", code="bad_flag", field="flag")
    stmt = select(Conversion).where(Conversion.is_test.is_(False)).order_by(Conversion.id)
    if campaign_id:
        stmt = stmt.where(Conversion.campaign_id == campaign_id)
    if partner_id:
        stmt = stmt.where(Conversion.partner_id == partner_id)
    if status:
        stmt = stmt.where(Conversion.status == status)
    if reason:
        stmt = stmt.where(Conversion.reason == reason)
    if flag == "flagged":
        stmt = stmt.where(func.json_array_length(Conversion.flags) > 0)
    elif flag:
        stmt = stmt.where(_has_flag(flag))
    convs = list(db.session.scalars(stmt.limit(limit + 1)))
    truncated = len(convs) > limit
    convs = convs[:limit]
    names = {
        "campaign": dict(db.session.execute(select(Campaign.id, Campaign.name).where(
            Campaign.id.in_({c.campaign_id for c in convs}))).all()),
        "partner": dict(db.session.execute(select(Partner.id, Partner.name).where(
            Partner.id.in_({c.partner_id for c in convs}))).all()),
    }
    return ReviewQueue(convs, truncated, names)


@dataclass
class BulkResult:
    """Outcome of a bulk review: ids done, and ``{id: message}`` for those refused."""

    done: list[int]
    failed: dict[int, str]


def review_many(conversion_ids: list[int], action: str, user_id: int, reason: str | None = None) -> BulkResult:
    """Approve or reject (``action``) each conversion through :mod:`partnernet.conversions.review`
    (each its own transaction, audited there), flagged ones included: a staff decision is the one
    a flagged conversion waits for. A refusal (not pending, unknown, a test conversion) is
    collected, not raised, so one bad row does not stop the rest. Raises ValidationError for an
    unknown action, no ids, or more than :data:`BULK_MAX` ids, and a bad ``reason`` at once."""
    from ..conversions.review import approve_conversion, reject_conversion

    if action not in ("approve", "reject"):
        raise ValidationError("action must be approve or reject", code="bad_action", field="action")
    ids = list(dict.fromkeys(conversion_ids))
    if not ids:
        raise ValidationError("select at least one conversion", code="missing_field", field="ids")
    if len(ids) > BULK_MAX:
        raise ValidationError(f"at most {BULK_MAX} conversions at once", code="too_many", field="ids")
    result = BulkResult([], {})
    for cid in ids:
        try:
            if action == "approve":
                approve_conversion(cid, user_id)
            else:
                reject_conversion(cid, user_id, reason)
            result.done.append(cid)
        except DomainError as err:
            db.session.rollback()
            result.failed[cid] = err.message
            if err.field == "reason":  # the same reason fails every row: stop here
                raise
    return result
