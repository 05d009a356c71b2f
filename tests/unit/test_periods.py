"""Local days and months as UTC instants (partnernet.clients.periods), DST included."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from partnernet.clients.periods import day_bounds, month_bounds, month_bounds_at, parse_month

CHI = ZoneInfo("America/Chicago")


def test_chicago_day_includes_0223_utc_of_the_next_day():
    start, end = day_bounds(datetime(2024, 3, 5, 2, 23, tzinfo=UTC), CHI)
    # 02:23 UTC on the 5th is 20:23 CST on the 4th: the local day is March 4th, 06:00Z .. 06:00Z.
    assert (start, end) == (datetime(2024, 3, 4, 6, tzinfo=UTC), datetime(2024, 3, 5, 6, tzinfo=UTC))


@pytest.mark.parametrize("when, hours", [
    (datetime(2024, 3, 10, 12, tzinfo=UTC), 23),  # spring forward
    (datetime(2024, 11, 3, 12, tzinfo=UTC), 25),  # fall back
    (datetime(2024, 7, 1, 12, tzinfo=UTC), 24),
])
def test_dst_days_have_23_or_25_hours(when, hours):
    start, end = day_bounds(when, CHI)
    assert (end - start).total_seconds() == hours * 3600


def test_month_bounds_in_the_client_zone():
    assert month_bounds(2024, 12, CHI) == (datetime(2024, 12, 1, 6, tzinfo=UTC), datetime(2025, 1, 1, 6, tzinfo=UTC))
    # 03:00Z on March 1st is still February in Chicago.
    assert month_bounds_at(datetime(2024, 3, 1, 3, tzinfo=UTC), CHI)[0] == datetime(2024, 2, 1, 6, tzinfo=UTC)


@pytest.mark.parametrize("text", ["2024-13", "2024-1", "24-01", "2024/01", "", "abcd-ef"])
def test_parse_month_refuses_bad_text(text):
    with pytest.raises(ValueError):
        parse_month(text)


def test_parse_month():
    assert parse_month("2024-02") == (2024, 2)
