"""PURE: when periodic work is due. Only the standard library is imported.

A task's rule is an interval ``every`` (seconds) and an ``offset`` (seconds after the UTC epoch
boundary of each interval), like cron's "every 15 minutes" or "daily at 03:30 UTC". Its due
times are ``k * every + offset``; the *slot* at an instant is the latest due time at or before
it. A run is recorded per (task, slot), so a task runs once per slot, and a task whose last run
is in an earlier slot (the process was down) is due at once: it catches up with one run.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def slot_at(now: datetime, every: int, offset: int = 0) -> datetime:
    """The latest due time ``k * every + offset`` (UTC, whole seconds since the epoch) at or
    before ``now`` (aware). Raises ValueError for ``every`` < 1 or a naive ``now``."""
    if every < 1:
        raise ValueError("every must be at least 1 second")
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    seconds = int((now - EPOCH).total_seconds()) - offset
    return EPOCH + timedelta(seconds=(seconds // every) * every + offset)


def next_slot(now: datetime, every: int, offset: int = 0) -> datetime:
    """The first due time strictly after ``now``."""
    return slot_at(now, every, offset) + timedelta(seconds=every)


def month_first_local(now: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of local midnight on the 1st of the local month of ``tz`` containing
    ``now``: when that month's invoices for the previous month are due (a client's time zone)."""
    local = now.astimezone(tz).date()
    return datetime(local.year, local.month, 1, tzinfo=tz).astimezone(UTC)


def previous_month(day: date) -> tuple[int, int]:
    """(year, month) of the calendar month before the month of ``day``."""
    return (day.year - 1, 12) if day.month == 1 else (day.year, day.month - 1)


def payout_due(now: datetime, day_of_month: int) -> datetime | None:
    """The UTC midnight of ``day_of_month`` in the UTC month of ``now`` (the month's last day
    when it is shorter), or None when that moment is still ahead of ``now``."""
    now = now.astimezone(UTC)
    last = calendar.monthrange(now.year, now.month)[1]
    due = datetime(now.year, now.month, min(day_of_month, last), tzinfo=UTC)
    return due if due <= now else None
