"""The staff audit trail: one append-only row per staff action (issue 4)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Index, String, event
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import BigId, UTCDateTime, now_utc


class AuditLog(db.Model):
    """Who did what, when, to which object, with the object's state before and after.

    ``actor_user_id`` is the staff user (None for the system: cron jobs, the CLI).
    ``action`` is a dotted verb such as ``"partner.approve"`` or ``"payout_batch.mark_paid"``;
    ``target_type``/``target_id`` name the object (``"partner"``, ``"7"``); ``before`` and
    ``after`` are small JSON dicts of the fields that changed (None when there is no state).
    Rows are append-only: the ORM refuses to update or delete them."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_target", "target_type", "target_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc, index=True)
    actor_user_id: Mapped[int | None] = mapped_column(index=True)  # no FK: the trail outlives users
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[dict | None] = mapped_column(JSON)
    after: Mapped[dict | None] = mapped_column(JSON)


@event.listens_for(AuditLog, "before_update")
def _refuse_update(_mapper, _conn, target):  # pragma: no cover - exercised by a test
    raise RuntimeError("audit log rows are append-only")


@event.listens_for(AuditLog, "before_delete")
def _refuse_delete(_mapper, _conn, target):  # pragma: no cover - exercised by a test
    raise RuntimeError("audit log rows are append-only")
