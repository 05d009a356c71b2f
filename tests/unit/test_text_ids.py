"""partnernet.text, partnernet.ids and the money maximum (pure helpers)."""

from __future__ import annotations

import pytest

from partnernet.ids import MAX_BIG_ID, MAX_ID, parse_id_text
from partnernet.money import MAX_MINOR, MoneyError, parse_amount
from partnernet.postbacks.params import RawParams, check_shape, loggable
from partnernet.money import is_currency, is_plain_positive_decimal
from partnernet.text import find_unclean, is_clean, scrub


def test_is_clean_and_scrub():
    assert is_clean("héllo 👋") and is_clean("")
    for bad in ("a\x00b", "\ud800", "x\udfff", "\udc00\ud800"):
        assert not is_clean(bad)
        assert is_clean(scrub(bad)) and "\ufffd" in scrub(bad)
    assert scrub("a\x00b\ud800") == "a\ufffdb\ufffd"


def test_find_unclean_paths():
    assert find_unclean({"a": ["ok", {"b": 1, "c": None}]}) is None
    assert find_unclean({"a": ["ok", {"b": "x\x00"}]}) == "a[1].b"
    assert find_unclean({"events": [{}, {"k\ud800": 1}]}) == "events[1]"
    assert find_unclean({"\ud800": 1}) == ""
    assert find_unclean("\x00") == ""


def test_parse_id_text():
    assert parse_id_text("1") == 1 and parse_id_text(str(MAX_ID)) == MAX_ID
    for bad in ("0", "-1", " 1", "1.0", "²", "١", str(MAX_ID + 1), "9" * 40, ""):
        assert parse_id_text(bad) is None, bad
    assert parse_id_text(str(MAX_BIG_ID), max_id=MAX_BIG_ID) == MAX_BIG_ID
    assert parse_id_text(str(MAX_BIG_ID + 1), max_id=MAX_BIG_ID) is None


@pytest.mark.parametrize("text,currency", [
    ("1000000000000.01", "USD"), ("100000000000001", "JPY"), ("99999999999999999999", "USD"),
    ("92233720368547758.07", "USD"), ("1" + "0" * 5000, "USD"), ("100000000000.0001", "KWD"),
])
def test_parse_amount_refuses_above_max_minor(text, currency):
    with pytest.raises(MoneyError) as err:
        parse_amount(text, currency)
    assert err.value.code == "bad_amount"


def test_parse_amount_at_the_maximum():
    assert MAX_MINOR == 10**14
    assert parse_amount("1000000000000.00", "USD") == MAX_MINOR
    assert parse_amount("100000000000000", "JPY") == MAX_MINOR
    assert parse_amount("-1000000000000", "USD", allow_negative=True) == -MAX_MINOR
    with pytest.raises(MoneyError):
        parse_amount("-1000000000000.01", "USD", allow_negative=True)
    assert parse_amount("000000000000000000000001.00", "USD") == 100


def test_postback_step_two_bad_encoding_first():
    raw = RawParams(pairs=[("key", "k"), ("coupon", "A"), ("coupon", "B\x00")])
    refusal = check_shape(raw, is_plain_positive_decimal=is_plain_positive_decimal, is_currency=is_currency)
    assert (refusal.status, refusal.code) == (400, "bad_encoding") and is_clean(refusal.message)
    raw = RawParams(pairs=[("k\ud800", "v"), ("click_id", "c")])
    refusal = check_shape(raw, is_plain_positive_decimal=is_plain_positive_decimal, is_currency=is_currency)
    assert refusal.code == "bad_encoding" and is_clean(refusal.message)
    assert loggable(raw) == {"k\ufffd": "v", "click_id": "c"}
