"""Time zones of the reports (CONTRACT §5 ``tz``): the zone by its IANA name, local midnights,
the zone's UTC offsets over a range, and the SQL for a timestamp's local date on both backends
(see the time-zone notes of :mod:`partnernet.reporting.services`)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Date, Integer, Interval, case, cast, func, literal, literal_column

from ..errors import ValidationError


def zone(tz: str) -> ZoneInfo:
    """The IANA zone ``tz``; raises ValidationError ``unknown_timezone`` (400)."""
    if not isinstance(tz, str) or not tz or len(tz) > 64:
        raise ValidationError("tz must be an IANA time zone name", code="unknown_timezone", field="tz")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"unknown time zone {tz!r}", code="unknown_timezone", field="tz") from None


def local_midnight_utc(day: date, tz: ZoneInfo) -> datetime:
    """The UTC instant of local midnight starting ``day`` in ``tz``."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def offset_segments(start: datetime, end: datetime, tz: ZoneInfo) -> list[tuple[datetime, int]]:
    """The UTC offsets of ``tz`` over ``[start, end)``: ``[(from_utc, offset_seconds), ...]``, the
    first from ``start``, then one per transition (DST or a change of the zone's rules), each at the
    exact second it takes effect. Found by checking once a day and bisecting to the second where
    the offset changed, so a ten-year range costs a few thousand look-ups."""

    def off(epoch: int) -> int:
        return int(datetime.fromtimestamp(epoch, tz).utcoffset().total_seconds())

    lo_s, end_s = int(start.timestamp()), int(end.timestamp())
    segments = [(start, off(lo_s))]
    t = lo_s
    while t < end_s:
        nxt = min(t + 86400, end_s)
        if off(nxt) == segments[-1][1]:
            t = nxt
            continue
        lo, hi = t, nxt  # off(lo) is the current offset, off(hi) is not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if off(mid) == segments[-1][1]:
                lo = mid
            else:
                hi = mid
        if hi < end_s:
            segments.append((datetime.fromtimestamp(hi, UTC), off(hi)))
        t = hi
    return segments


def local_date_expr(col, segments: list[tuple[datetime, int]], dialect: str):
    """SQL for the local date of the UTC timestamp column ``col``, given the zone's offsets over the
    report's range (:func:`offset_segments`): the offset is picked by a short CASE over the
    transitions, added to the UTC time, and the date taken. PostgreSQL gives a ``date``,
    SQLite a ``YYYY-MM-DD`` string."""
    if len(segments) == 1:
        offset = literal(segments[0][1], Integer)
    else:
        offset = case(
            *[(col < segments[i + 1][0], literal(segments[i][1], Integer)) for i in range(len(segments) - 1)],
            else_=literal(segments[-1][1], Integer),
        )
    if dialect == "postgresql":
        one_second = literal_column("INTERVAL '1 second'", type_=Interval)
        return cast(func.timezone("UTC", col) + offset * one_second, Date)
    return func.date(col, func.printf("%+d seconds", offset))
