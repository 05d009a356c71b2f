"""money.py: parsing, formatting, percent rounding and allocation (CONTRACT §4)."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from partnernet.money import (
    MoneyError,
    allocate,
    format_minor,
    is_currency,
    is_plain_positive_decimal,
    minor_digits,
    parse_amount,
    parse_percent,
    percent_of,
)


@pytest.mark.parametrize("text,cur,minor", [
    ("129.90", "USD", 12990), ("5", "EUR", 500), ("19.9", "EUR", 1990), ("1000", "JPY", 1000),
    ("0.01", "USD", 1), ("1.234", "KWD", 1234),
])
def test_parse_amount_valid(text, cur, minor):
    assert parse_amount(text, cur) == minor


@pytest.mark.parametrize("text,cur", [
    ("19.999", "EUR"), ("0", "EUR"), ("-5.00", "EUR"), ("abc", "EUR"), ("1,299.00", "EUR"), ("1e3", "USD"),
    (" 5", "USD"), ("5.", "USD"), (".5", "USD"), ("1.5", "JPY"), ("", "USD"), ("0.00", "USD"),
])
def test_parse_amount_refused(text, cur):
    with pytest.raises(MoneyError) as exc:
        parse_amount(text, cur)
    assert exc.value.code == "bad_amount"


def test_parse_amount_zero_and_negative_when_allowed():
    assert parse_amount("0", "USD", allow_zero=True) == 0
    assert parse_amount("-1.64", "EUR", allow_negative=True) == -164


def test_unknown_currency():
    assert not is_currency("XYZ") and not is_currency("usd") and is_currency("JPY")
    with pytest.raises(MoneyError) as exc:
        minor_digits("ABC")
    assert exc.value.code == "unknown_currency"


@pytest.mark.parametrize("minor,cur,text", [
    (300, "USD", "3.00"), (-164, "EUR", "-1.64"), (1000, "JPY", "1000"), (5, "USD", "0.05"), (0, "EUR", "0.00"),
    (-5, "USD", "-0.05"), (1234, "BHD", "1.234"),
])
def test_format_minor(minor, cur, text):
    assert format_minor(minor, cur) == text


def test_format_refuses_non_int():
    with pytest.raises(TypeError):
        format_minor(1.5, "USD")  # type: ignore[arg-type]


def test_plain_positive_decimal():
    assert is_plain_positive_decimal("0.001")
    assert not is_plain_positive_decimal("0")
    assert not is_plain_positive_decimal("+5")
    assert not is_plain_positive_decimal("5e2")


@pytest.mark.parametrize("minor,pct,out", [
    (1999, "8", 160), (5, "50", 3), (300, "70", 210), (15, "50", 8), (25, "10", 3), (24, "10", 2),
    (-5, "50", -3), (0, "12.5", 0), (999, "33.3333", 333),
])
def test_percent_of_half_up(minor, pct, out):
    assert percent_of(minor, pct) == out


def test_parse_percent():
    assert parse_percent("12.5") == Decimal("12.5")
    for bad in ("-1", "100.01", "x", 1.5):
        with pytest.raises(ValueError):
            parse_percent(bad)


def test_allocate_ties_go_to_the_later_share():
    assert allocate(100, [1, 1, 1]) == [33, 33, 34]
    assert allocate(101, [1, 1, 1]) == [33, 34, 34]
    assert allocate(10, [Decimal("0.4"), Decimal("0.2"), Decimal("0.4")]) == [4, 2, 4]
    assert allocate(0, [1, 2]) == [0, 0]


def test_allocate_refuses_bad_input():
    with pytest.raises(ValueError):
        allocate(-1, [1])
    with pytest.raises(ValueError):
        allocate(5, [0, 0])


@given(total=st.integers(min_value=0, max_value=10**12),
       weights=st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=12).filter(lambda w: sum(w) > 0))
def test_allocate_is_exact_and_fair(total, weights):
    shares = allocate(total, weights)
    assert sum(shares) == total
    assert all(s >= 0 for s in shares)
    wsum = sum(weights)
    for s, w in zip(shares, weights):
        exact = Decimal(total) * w / wsum
        assert exact - 1 < s < exact + 1
        if w == 0:
            assert s == 0


@given(minor=st.integers(min_value=-10**12, max_value=10**12), cur=st.sampled_from(["USD", "JPY", "KWD", "EUR"]))
def test_format_parse_roundtrip(minor, cur):
    assert parse_amount(format_minor(minor, cur), cur, allow_zero=True, allow_negative=True) == minor
