"""Pure postback parameter rules (CONTRACT §3): signature base string, duplicates, macros, shapes."""

import hashlib
import hmac

import pytest

from partnernet.money import is_currency, is_plain_positive_decimal
from partnernet.postbacks import params as P
from partnernet.postbacks.params import RawParams, Refusal


def _hmac(secret: str, text: str) -> str:
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


# --- signature -------------------------------------------------------------------------------

def test_signature_base_sorts_by_name_and_skips_sig():
    pairs = [("ts", "1700000000"), ("sig", "abc"), ("key", "pk_1"), ("click_id", "C1"), ("amount", "9.90")]
    assert P.signature_base(pairs) == "amount=9.90&click_id=C1&key=pk_1&ts=1700000000"


@pytest.mark.parametrize("value", [
    "a b",              # space (sent as + or %20: decoded as sent)
    "a&b=c",            # & and = inside a value are not escaped
    "1+1",              # a literal plus (sent as %2B)
    "Grüße – 東京 🎉",   # unicode, UTF-8 in the HMAC
    "%41",              # a percent sign stays as decoded: no re-encoding
    "",                 # an empty value still counts
])
def test_signature_uses_decoded_values_as_sent(value):
    pairs = [("key", "pk_1"), ("ts", "5"), ("txn_id", value)]
    base = P.signature_base(pairs)
    assert base == f"key=pk_1&ts=5&txn_id={value}"
    assert P.sign("s3cret", pairs) == _hmac("s3cret", base)
    assert P.signature_ok("s3cret", pairs + [("sig", _hmac("s3cret", base))], _hmac("s3cret", base))


def test_signature_accepts_either_case_and_refuses_the_rest():
    pairs = [("key", "pk_1"), ("ts", "5"), ("click_id", "x")]
    good = P.sign("k", pairs)
    assert P.signature_ok("k", pairs, good)
    assert P.signature_ok("k", pairs, good.upper())
    assert not P.signature_ok("k", pairs, good[:-1])
    assert not P.signature_ok("k", pairs, good[:-1] + ("0" if good[-1] != "0" else "1"))
    assert not P.signature_ok("other", pairs, good)
    assert not P.signature_ok("k", pairs + [("extra", "1")], good)
    assert not P.signature_ok("k", pairs, "")
    assert not P.signature_ok("k", pairs, "ü" * 64)  # non-ASCII text never raises
    assert not P.signature_ok("k", pairs, " " + good)


def test_signature_sort_is_by_name_only_and_stable():
    # names compare by code point: "Z" < "a" < "é"; a repeated name keeps the order sent
    pairs = [("é", "1"), ("a", "2"), ("Z", "3"), ("a", "1")]
    assert P.signature_base(pairs) == "Z=3&a=2&a=1&é=1"


# --- ts and IP allow-list --------------------------------------------------------------------

@pytest.mark.parametrize("ts,ok", [
    ("1000", True), ("1300", True), ("700", True), ("1301", False), ("699", False),
    ("", False), ("1000.5", False), ("abc", False), (" 1000", False), ("1e3", False),
])
def test_ts_fresh(ts, ok):
    assert P.ts_fresh(ts, 1000, 300) is ok


@pytest.mark.parametrize("ip,allow,ok", [
    ("1.2.3.4", "", True),
    ("1.2.3.4", "  ", True),
    (None, "", True),
    ("1.2.3.4", "1.2.3.4", True),
    ("1.2.3.5", "1.2.3.4", False),
    ("10.0.5.9", "192.168.0.1, 10.0.0.0/16", True),
    ("10.1.5.9", "192.168.0.1, 10.0.0.0/16", False),
    ("2001:db8::1", "2001:db8::/32", True),
    ("::ffff:10.0.0.1", "10.0.0.0/8", True),
    ("1.2.3.4", "garbage, 1.2.3.0/24", True),
    ("not-an-ip", "1.2.3.4", False),
    (None, "1.2.3.4", False),
])
def test_ip_allowed(ip, allow, ok):
    assert P.ip_allowed(ip, allow) is ok


# --- collection ------------------------------------------------------------------------------

def test_duplicate_names():
    assert P.duplicate_names(["a", "b", "a", "c", "b", "a"]) == ["a", "b"]
    assert P.duplicate_names(["a", "b"]) == []


def test_single_value():
    assert P.single([("k", "1")], "k") == (True, "1")
    assert P.single([("k", "1"), ("k", "1")], "k") == (True, "1")
    assert P.single([("k", "1"), ("k", "2")], "k") == (False, None)
    assert P.single([], "k") == (True, None)


def test_parse_json_body():
    raw = P.parse_json_body(b'{"key": "pk", "amount": 12.5, "n": null, "s": "x", "key": "pk"}')
    assert raw.pairs == [("key", "pk"), ("s", "x"), ("key", "pk")]
    assert raw.nonstring == ["amount", "n"]
    assert raw.unreadable is None
    assert P.parse_json_body(b"").pairs == []
    assert P.parse_json_body("  ").unreadable is None
    for bad in (b"{", b"[1, 2]", b'"str"', b"\xff\xfe", b"nul", b"[]", b"{'a': 'b'}"):
        assert P.parse_json_body(bad).unreadable, bad
    assert P.parse_json_body('{"a": {"b": "c"}}').nonstring == ["a"]
    assert P.parse_json_body("{}").pairs == []


@pytest.mark.parametrize("value,macro", [
    ("{click_id}", "{click_id}"),
    ("abc{SUB_1}def", "{SUB_1}"),
    ("{a}", "{a}"),
    ("{}", None),
    ("{click-id}", None),
    ("{ click_id }", None),
    ("{é}", None),
    ("{{x}}", "{x}"),
    ("plain", None),
])
def test_macro_regex(value, macro):
    found = P.find_macro([("x", "1"), ("sub1", value)])
    assert (found[1] if found else None) == macro
    if macro:
        assert found[0] == "sub1"


@pytest.mark.parametrize("value,ok", [
    ("0", True), ("180", True), ("0180", True), ("1.5", False), ("-3", False), (" 5", False),
    ("1e3", False), ("", False), ("٣", False), (str(2**31), False),
])
def test_whole_seconds(value, ok):
    assert P.is_whole_seconds(value) is ok


# --- step 2 of CONTRACT §3, in its order -----------------------------------------------------

def _shape(pairs, nonstring=()):
    return P.check_shape(RawParams(list(pairs), list(nonstring)), is_plain_positive_decimal=is_plain_positive_decimal,
                         is_currency=is_currency)


BASE = [("key", "pk"), ("click_id", "C")]


@pytest.mark.parametrize("pairs,nonstring,code", [
    (BASE + [("event", "a"), ("event", "a")], (), "duplicate_parameter"),
    (BASE + [("click_id", "C")], (), "duplicate_parameter"),
    (BASE, ("amount",), "bad_json"),
    (BASE, ("click_id",), "duplicate_parameter"),  # a name given as string and non-string
    ([("key", "pk")], (), "missing_click_id"),
    ([("key", "pk"), ("click_id", "")], (), "missing_click_id"),
    (BASE + [("coupon", "X")], (), "missing_click_id"),
    ([("key", "pk"), ("coupon", "X"), ("number", "+1415")], (), "missing_click_id"),
    ([("key", "pk"), ("click_id", "{click_id}")], (), "unreplaced_macro"),
    (BASE + [("sub1", "{aff_sub}")], (), "unreplaced_macro"),
    (BASE + [("status", "refunded")], (), "bad_status"),
    (BASE + [("status", "Approved")], (), "bad_status"),
    (BASE + [("amount", "0")], (), "bad_amount"),
    (BASE + [("amount", "-5.00")], (), "bad_amount"),
    (BASE + [("amount", "1,299.00")], (), "bad_amount"),
    (BASE + [("amount", "abc")], (), "bad_amount"),
    (BASE + [("amount", "1e3")], (), "bad_amount"),
    (BASE + [("duration", "12.5")], (), "bad_duration"),
    (BASE + [("currency", "XYZ")], (), "unknown_currency"),
    (BASE + [("currency", "usd")], (), "unknown_currency"),
    (BASE + [("txn_id", "x" * 256)], (), "bad_txn_id"),
    # order: the earlier check answers
    ([("key", "pk"), ("status", "x"), ("status", "y")], (), "duplicate_parameter"),
    ([("key", "pk"), ("sub1", "{m}")], (), "missing_click_id"),
    (BASE + [("status", "{status}")], (), "unreplaced_macro"),
    (BASE + [("status", "bogus"), ("amount", "0")], (), "bad_status"),
    (BASE + [("amount", "0"), ("duration", "x"), ("currency", "XYZ")], (), "bad_amount"),
    (BASE + [("duration", "x"), ("currency", "XYZ")], (), "bad_duration"),
])
def test_check_shape_refusals(pairs, nonstring, code):
    got = _shape(pairs, nonstring)
    assert isinstance(got, Refusal)
    assert (got.status, got.code) == (400, code)
    assert got.message


def test_check_shape_fields():
    got = _shape([("key", "pk"), ("coupon", "Spring10"), ("click_id", ""), ("amount", "19.999"),
                  ("duration", "180"), ("currency", "EUR"), ("txn_id", "T1"), ("event", "")])
    assert got == P.Fields(click_id=None, coupon="Spring10", number=None, event=None, txn_id="T1",
                           amount="19.999", currency="EUR", duration_s=180, status="pending")
    assert _shape(BASE + [("status", "reversed")]).status == "reversed"


def test_loggable_hides_the_signature_and_keeps_repeats():
    raw = RawParams([("key", "pk"), ("sig", "a" * 64), ("e", "1"), ("e", "2"), ("z", "x\x00y" + "q" * 2000)],
                    ["amount"])
    out = P.loggable(raw)
    assert out["sig"] == "aaaaaaaa…"
    assert out["e"] == ["1", "2"]
    assert out["amount"] == "<non-string>"
    assert len(out["z"]) == P.LOG_VALUE_CHARS and out["z"].endswith("…") and "\x00" not in out["z"]


def test_loggable_is_bounded_whatever_was_sent():
    raw = RawParams([("n" * 500, "v")] + [(f"p{i}", "x" * 5000) for i in range(300)], ["j" * 300])
    out = P.loggable(raw)
    kept = {k: v for k, v in out.items() if k != P.OMITTED}
    assert len(kept) <= P.LOG_MAX_PARAMS and all(len(k) <= P.LOG_NAME_CHARS for k in kept)
    assert all(len(v) <= P.LOG_VALUE_CHARS for v in kept.values())
    assert sum(len(k) + len(v) for k, v in kept.items()) <= P.LOG_MAX_CHARS
    assert out[P.OMITTED].endswith("more parameters not kept") and ("n" * 63 + "…") in out


def test_refusal_messages_cut_long_names():
    raw = RawParams([("k" * 10_000, "1"), ("k" * 10_000, "2"), ("key", "pk")])
    refusal = P.check_shape(raw, is_plain_positive_decimal=lambda v: True, is_currency=lambda v: True)
    assert refusal.code == "duplicate_parameter" and len(refusal.message) < 120
