"""The ``money`` and ``dt`` Jinja filters."""

from datetime import UTC, date, datetime

import pytest

from partnernet.filters import dt, money


@pytest.mark.parametrize("minor,cur,want", [
    (210, "USD", "$2.10"), (-164, "EUR", "-€1.64"), (300, "JPY", "¥300"), (1250, "CHF", "12.50 CHF"),
    (123456789, "USD", "$1,234,567.89"), (0, "GBP", "£0.00"), (1234, "BHD", "1.234 BHD"), (None, "USD", "–"),
])
def test_money(minor, cur, want):
    assert money(minor, cur) == want


def test_money_with_code_and_unknown_currency():
    assert money(210, "USD", code=True) == "$2.10 USD"
    assert money(5, "XXX") == "5 XXX"


def test_dt_in_zone():
    t = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    assert dt(t, "Asia/Tokyo") == "2026-03-02 08:30"
    assert dt(t, "Nowhere/Bad") == "2026-03-01 23:30"
    assert dt(t.replace(tzinfo=None)) == "2026-03-01 23:30"
    assert dt(date(2026, 1, 2)) == "2026-01-02" and dt(None) == "–"


def test_filters_registered(app):
    assert app.jinja_env.filters["money"] is money and app.jinja_env.filters["dt"] is dt
