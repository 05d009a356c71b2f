"""The audit trail (issue 4): :func:`record` adds one append-only row per state change.

Every use case that changes state (staff actions, and the catalog's creates and campaign changes
from any surface: API, staff console, client and partner portals, CLI; see
:mod:`partnernet.catalog.audit_states`) calls :func:`record` inside its own transaction, before
its single commit, so the change and its audit row are written together or not at all.
``record`` never commits. Read helpers (:func:`audit_query`) serve the audit log page.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, false, select

from .clock import utcnow
from .extensions import db
from .ids import parse_id_text
from .models import AuditLog, User

MAX_JSON_TEXT = 2000


def _plain(value: Any) -> Any:
    """A JSON-safe copy of ``value``: datetimes as ISO 8601, Decimals and other objects as
    strings, long strings cut to :data:`MAX_JSON_TEXT` characters."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, str):
        return value[:MAX_JSON_TEXT]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def record(
    actor_user_id: int | None,
    action: str,
    target_type: str,
    target_id: str | int,
    before: dict | None,
    after: dict | None,
) -> AuditLog:
    """Add one audit row to the session, without committing (the caller's use case commits).

    ``actor_user_id``: the acting user, staff, client or partner (None: the system, e.g. a
    cron job or the CLI).
    ``action``: a dotted verb, e.g. ``"partner.approve"``. ``target_type``/``target_id``: the
    object acted on. ``before``/``after``: JSON-able dicts of the fields that changed
    (datetimes become ISO 8601 strings, Decimals strings; money stays int minor units).
    The time is :func:`partnernet.clock.utcnow`. Returns the (pending) row."""
    row = AuditLog(
        at=utcnow(),
        actor_user_id=actor_user_id,
        action=action[:64],
        target_type=target_type[:32],
        target_id=str(target_id)[:64],
        before=_plain(before),
        after=_plain(after),
    )
    db.session.add(row)
    return row


def audit_query(
    *,
    actor: str | None = None,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
) -> Select:
    """Audit rows, newest first, filtered by ``actor`` (a user id as digits, or an email,
    compared lower-case; ``"system"`` for rows without an actor; an id beyond
    :data:`partnernet.ids.MAX_ID` matches nobody), ``action`` (exact, or a
    prefix ending in ``.`` such as ``"payout_batch."``), ``target_type``, ``target_id`` and
    the UTC dates ``date_from``..``date_to`` (inclusive)."""
    stmt = select(AuditLog).order_by(AuditLog.at.desc(), AuditLog.id.desc())
    if actor:
        actor = actor.strip()
        if actor == "system":
            stmt = stmt.where(AuditLog.actor_user_id.is_(None))
        elif actor.isascii() and actor.isdigit():
            user_id = parse_id_text(actor)  # beyond the users' id range: nobody
            stmt = stmt.where(AuditLog.actor_user_id == user_id) if user_id else stmt.where(false())
        else:
            ids = select(User.id).where(User.email == actor.lower())
            stmt = stmt.where(AuditLog.actor_user_id.in_(ids))
    if action:
        if action.endswith("."):
            stmt = stmt.where(AuditLog.action.startswith(action, autoescape=True))
        else:
            stmt = stmt.where(AuditLog.action == action)
    if target_type:
        stmt = stmt.where(AuditLog.target_type == target_type)
    if target_id:
        stmt = stmt.where(AuditLog.target_id == str(target_id))
    if date_from:
        stmt = stmt.where(AuditLog.at >= datetime.combine(date_from, time.min).replace(tzinfo=utcnow().tzinfo))
    if date_to and date_to < date.max:  # up to the last day there is: no upper bound at all
        end = datetime.combine(date_to + timedelta(days=1), time.min).replace(tzinfo=utcnow().tzinfo)
        stmt = stmt.where(AuditLog.at < end)
    return stmt


def actions() -> list[str]:
    """The distinct actions recorded so far, sorted (for the filter's choices)."""
    return list(db.session.scalars(select(AuditLog.action).distinct().order_by(AuditLog.action)))
