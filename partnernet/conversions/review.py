"""Conversion review use cases (CONTRACT §5 ``POST /conversions/<id>/approve``, ``/reject``).

Staff actions take effect before they answer (CONTRACT §6): the status change and its
ledger postings are made in the same database transaction, committed once at the end, so
a payout batch created right after sees the approval. The sync job queued by the status
change finds the ledger level and does nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import func, select

from ..audit import record as audit_record
from ..clock import utcnow
from ..errors import InvalidState, NotFound, ValidationError
from ..extensions import db
from ..ledger.services import post_conversion
from ..models import Conversion
from .flags import is_flagged
from .services import auto_approve, lock_conversion_for_change, staff_set_status

log = logging.getLogger(__name__)

REASON_MAX = 32
DEFAULT_REJECT_REASON = "rejected_by_staff"


def _refuse_test(conversion_id: int) -> None:
    """A test conversion (staff "send test postback") is never reviewed: 409 ``test_conversion``."""
    if db.session.scalar(select(Conversion.is_test).where(Conversion.id == conversion_id)):
        raise InvalidState(f"conversion {conversion_id} is a test conversion", code="test_conversion")


def approve_conversion(conversion_id: int, user_id: int) -> Conversion:
    """Staff approves a pending conversion, also before its hold period ends (CONTRACT §5):
    status ``approved``, ``approved_by`` ``"user:<id>"``, and the ledger's ``split`` and
    ``approve`` transactions, in one commit. Returns the conversion.

    Raises NotFound (404) for an unknown conversion, InvalidState (409) when it is not pending.
    """
    _refuse_test(conversion_id)
    conv = staff_set_status(conversion_id, "approved", user_id=user_id)
    post_conversion(conv)
    audit_record(user_id, "conversion.approve", "conversion", conv.id, {"status": "pending"},
                 {"status": "approved"})
    db.session.commit()
    return conv


def clean_reason(reason) -> str:
    """A staff rejection reason as stored: text of at most :data:`REASON_MAX` characters,
    stripped; None or blank gives ``rejected_by_staff`` (CONTRACT §5). Raises ValidationError
    (400, field ``reason``) for a reason that is not text or is too long."""
    if reason is not None and not isinstance(reason, str):
        raise ValidationError("reason must be a string", field="reason")
    reason = (reason or "").strip() or DEFAULT_REJECT_REASON
    if len(reason) > REASON_MAX:
        raise ValidationError(f"reason is limited to {REASON_MAX} characters", field="reason")
    return reason


def reject_conversion(conversion_id: int, user_id: int, reason: str | None) -> Conversion:
    """Staff rejects a pending conversion with ``reason`` (a short code or phrase, at most 32
    characters; blank means ``rejected_by_staff``). Its split, when posted, is reversed by
    the ledger's ``reject`` transaction in the same commit. Returns the conversion.

    Raises ValidationError (400, field ``reason``) for a reason that is not text or too long,
    NotFound (404) for an unknown conversion, InvalidState (409) when it is not pending.
    """
    reason = clean_reason(reason)
    _refuse_test(conversion_id)
    conv = staff_set_status(conversion_id, "rejected", user_id=user_id, reason=reason)
    post_conversion(conv)
    audit_record(user_id, "conversion.reject", "conversion", conv.id, {"status": "pending"},
                 {"status": "rejected", "reason": reason})
    db.session.commit()
    return conv


def review_many(conversion_ids: list[int | None], action: str, user_id: int,
                reason: str | None = None) -> list[tuple[str | None, str | None]]:
    """Staff approves (``action`` ``"approve"``) or rejects (``"reject"``, with ``reason`` as
    :func:`reject_conversion` takes it) many conversions: CONTRACT v2 §5 ``POST
    /conversions/approve``, ``/reject``. Each id is handled exactly as the single call
    (:func:`approve_conversion` / :func:`reject_conversion`: status, ``approved_by``, spend,
    ledger postings, audit row, queued jobs) in its own transaction, so one refused id never
    undoes another. ``None`` stands for an id that could not be read (malformed).

    Returns one ``(status, error)`` per given id, in order: ``(new status, None)`` when done;
    ``(None, "not_found")`` for a malformed or unknown id; ``(current status, code)`` when the
    single call would answer 409 with ``code`` (``invalid_state``: not pending;
    ``test_conversion``). Raises ValidationError (400, field ``reason``) for a bad reason,
    before anything is changed; ValueError for an unknown ``action`` (a bug).
    """
    if action not in ("approve", "reject"):
        raise ValueError(f"unknown review action {action!r}")
    if action == "reject":
        reason = clean_reason(reason)
    out: list[tuple[str | None, str | None]] = []
    for cid in conversion_ids:
        if cid is None:
            out.append((None, "not_found"))
            continue
        try:
            if action == "approve":
                conv = approve_conversion(cid, user_id)
            else:
                conv = reject_conversion(cid, user_id, reason)
        except (NotFound, InvalidState) as err:
            db.session.rollback()  # nothing of this id is kept; the ones before are committed
            status = db.session.scalar(select(Conversion.status).where(Conversion.id == cid))
            out.append((None, "not_found") if status is None else (status, err.code))
            continue
        out.append((conv.status, None))
    return out


def approve_matured(now: datetime | None = None, *, batch_size: int = 500) -> int:
    """Approve every pending conversion whose hold period has ended (``hold_until <= now``,
    UTC; default now) and that carries no fraud flag: ``approved_by`` ``"auto"``, ledger
    posted. A flagged conversion (``Conversion.flags``, :mod:`partnernet.conversions.flags`) is
    never approved here: it stays pending for staff (CONTRACT v2 §5, §6 "flagged ones
    excepted"), who approve or reject it like any other. Each conversion is its own
    transaction (locked, re-checked, approved, posted, committed), so a large backlog never
    holds locks for long and a run that stops half-way loses nothing. Idempotent: running it
    again approves nothing twice. Returns how many conversions it approved."""
    now = now or utcnow()
    approved = 0
    last_id = 0
    while True:
        ids = db.session.scalars(
            select(Conversion.id)
            .where(Conversion.status == "pending", Conversion.is_test.is_(False), Conversion.hold_until.is_not(None),
                   Conversion.hold_until <= now, Conversion.id > last_id,
                   func.json_array_length(Conversion.flags) == 0)
            .order_by(Conversion.id)
            .limit(batch_size)
        ).all()
        db.session.rollback()  # end the read; each conversion below is its own transaction
        if not ids:
            return approved
        for conversion_id in ids:
            last_id = conversion_id
            conv = lock_conversion_for_change(conversion_id)
            if (conv is None or conv.hold_until is None or conv.hold_until > now or is_flagged(conv)
                    or not auto_approve(conv)):
                db.session.rollback()
                continue
            post_conversion(conv)
            db.session.commit()
            approved += 1
    return approved  # pragma: no cover
