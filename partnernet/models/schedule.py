"""Periodic work (CONTRACT v2 §6 "Periodic work runs by itself"): run rows and payout schedules."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import BigId, MinorUnits, UTCDateTime, now_utc

RUN_STATUSES = ("running", "ok", "failed")


class ScheduleRun(db.Model):
    """One run of a periodic task for one due time (:mod:`partnernet.schedule`).

    ``task`` is the task's name, or a task's per-item name (``monthly_invoices:client:7``,
    ``payout_batch:EUR``); ``due_at`` the UTC instant the run was due. (``task``, ``due_at``) is
    unique: the runner whose ``INSERT ... ON CONFLICT`` takes the row runs the work, so a due run
    runs once however many workers or web processes look. ``status`` running → ok, or failed
    (taken again at the next look, up to a few ``attempts``); a running row older than the lease
    (its runner died) may be taken again too. ``result`` is a one-line summary."""

    __tablename__ = "schedule_runs"
    __table_args__ = (UniqueConstraint("task", "due_at", name="uq_schedule_runs_task_due"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    task: Mapped[str] = mapped_column(String(96))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default="running")
    runner: Mapped[str] = mapped_column(String(128), default="")
    attempts: Mapped[int] = mapped_column(default=1)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    result: Mapped[str | None] = mapped_column(Text)


class PayoutSchedule(db.Model):
    """A scheduled payout batch for one currency: on ``day_of_month`` (1-31; a shorter month uses
    its last day), at 00:00 UTC, a draft batch is created for every partner whose available
    balance is at least ``min_amount_minor`` (minor units), counting only earnings credited at
    least ``net_days`` days before that day (NET terms). The draft then waits for the usual
    maker-checker approval by a staff user (CONTRACT §5)."""

    __tablename__ = "payout_schedules"
    __table_args__ = (
        CheckConstraint("day_of_month BETWEEN 1 AND 31", name="day"),
        CheckConstraint("min_amount_minor >= 0", name="min"),
        CheckConstraint("net_days >= 0", name="net"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), unique=True)
    day_of_month: Mapped[int] = mapped_column()
    min_amount_minor: Mapped[int] = mapped_column(MinorUnits, default=0)
    net_days: Mapped[int] = mapped_column(default=0)
    active: Mapped[bool] = mapped_column(default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc, onupdate=now_utc)
