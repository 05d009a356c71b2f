"""PURE: local days and calendar months of an IANA time zone as UTC instants.

A day runs from local midnight to the next local midnight, so a daylight-saving day is
23 or 25 hours long; a month from local midnight of its 1st to local midnight of the
next month's 1st. Only the standard library is imported.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The UTC instant of local midnight at the start of ``day`` in ``tz``."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def day_bounds(now_utc: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """``[start, end)`` in UTC of the local day of ``tz`` that contains ``now_utc``."""
    today = now_utc.astimezone(tz).date()
    return local_midnight(today, tz), local_midnight(today + timedelta(days=1), tz)


def month_start(year: int, month: int) -> date:
    """The first day of ``year``-``month``."""
    return date(year, month, 1)


def next_month(d: date) -> date:
    """The first day of the month after the month of ``d``."""
    return date(d.year + (d.month == 12), d.month % 12 + 1, 1)


def month_bounds(year: int, month: int, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """``[start, end)`` in UTC of the calendar month ``year``-``month`` in ``tz``."""
    first = month_start(year, month)
    return local_midnight(first, tz), local_midnight(next_month(first), tz)


def month_bounds_at(now_utc: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """``[start, end)`` in UTC of the local calendar month of ``tz`` that contains ``now_utc``."""
    local = now_utc.astimezone(tz).date()
    return month_bounds(local.year, local.month, tz)


def parse_month(text: str) -> tuple[int, int]:
    """``"YYYY-MM"`` as (year, month); raises ValueError for anything else."""
    if not isinstance(text, str) or len(text) != 7 or text[4] != "-":
        raise ValueError(f"month must be YYYY-MM, not {text!r}")
    year, month = text[:4], text[5:]
    if not (year.isdigit() and month.isdigit()) or not 1 <= int(month) <= 12 or int(year) < 1970:
        raise ValueError(f"month must be YYYY-MM, not {text!r}")
    return int(year), int(month)
