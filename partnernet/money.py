"""Money as integer minor units plus an ISO 4217 currency code (CONTRACT §4).

Pure module: standard library only. Every rounding rule of the product lives
here, so that the rest of the code never touches a fraction of a minor unit.

- Amounts are ``int`` minor units (cents for USD, yen for JPY).
- Rates (percents) are ``decimal.Decimal`` values, never binary floats.
- JSON carries amounts as decimal strings with exactly the currency's minor
  digits (``"3.00"``, ``"1000"`` for JPY): see :func:`format_minor`.
"""

from __future__ import annotations

import re
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation

# ISO 4217 minor digits. Codes not listed here are refused as unknown
# (``unknown_currency``); the list covers every active code.
_ZERO = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE = "BHD IQD JOD KWD LYD OMR TND"
_FOUR = "CLF UYW"
_TWO = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD "
    "CAD CDF CHE CHF CHW CNY COP COU CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL "
    "GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD "
    "LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN "
    "PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL "
    "THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD YER ZAR ZMW ZWL"
)

MINOR_DIGITS: dict[str, int] = {}
for _codes, _digits in ((_ZERO, 0), (_TWO, 2), (_THREE, 3), (_FOUR, 4)):
    for _code in _codes.split():
        MINOR_DIGITS[_code] = _digits

# The largest amount accepted anywhere, in minor units (10**12 dollars at 2 digits): far above any
# real sale, budget or fee, and small enough that sums of millions of them stay inside the
# signed 64-bit money columns (2**63 - 1 is about 9.2 * 10**18).
MAX_MINOR = 10**14

_PLAIN_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_SIGNED_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


class MoneyError(ValueError):
    """A money value or currency code that cannot be used.

    ``code`` is the machine-readable error code the HTTP layer answers with
    (``unknown_currency`` or ``bad_amount``, CONTRACT §3).
    """

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def is_currency(code: str | None) -> bool:
    """True when ``code`` is an ISO 4217 alphabetic code we know (upper case, exact)."""
    return isinstance(code, str) and code in MINOR_DIGITS


def minor_digits(currency: str) -> int:
    """Number of minor digits of ``currency`` (2 for USD, 0 for JPY).

    Raises MoneyError(``unknown_currency``) for an unknown code.
    """
    try:
        return MINOR_DIGITS[currency]
    except (KeyError, TypeError):
        raise MoneyError("unknown_currency", f"unknown currency code {currency!r}") from None


def parse_amount(text: str, currency: str, *, allow_zero: bool = False, allow_negative: bool = False) -> int:
    """Parse a plain decimal string into integer minor units of ``currency``.

    ``"129.90"`` in USD gives ``12990``; ``"5"`` and ``"19.9"`` are valid EUR
    amounts; ``"19.999"`` (more digits than the currency has), ``"1,299.00"``,
    ``"1e3"``, ``" 5"`` and ``"abc"`` are not. Zero is refused unless
    ``allow_zero``; a leading ``-`` unless ``allow_negative``. An amount above
    :data:`MAX_MINOR` minor units (either sign) is refused as too large.

    Raises MoneyError(``bad_amount``) for any refused text, and
    MoneyError(``unknown_currency``) for an unknown currency.
    """
    digits = minor_digits(currency)
    pattern = _SIGNED_DECIMAL if allow_negative else _PLAIN_DECIMAL
    if not isinstance(text, str) or not pattern.fullmatch(text):
        raise MoneyError("bad_amount", f"{str(text)[:40]!r} is not a plain decimal amount")
    whole, _, frac = text.lstrip("-").partition(".")
    if len(frac) > digits:
        raise MoneyError("bad_amount", f"{text[:40]!r} has more than {digits} decimal digits for {currency}")
    too_large = MoneyError("bad_amount", f"the amount is too large (at most {format_minor(MAX_MINOR, currency)})")
    if len(whole.lstrip("0")) > len(str(MAX_MINOR)):  # refuse huge texts before any arithmetic
        raise too_large
    value = int((Decimal(text).scaleb(digits)).to_integral_exact())
    if abs(value) > MAX_MINOR:
        raise too_large
    if value == 0 and not allow_zero:
        raise MoneyError("bad_amount", "the amount must be positive")
    return value


def is_plain_positive_decimal(text: str) -> bool:
    """True for ``"5"``, ``"19.90"``, ``"0.001"``: digits with an optional fraction, above zero.

    This is CONTRACT §3 check 2 (``bad_amount`` without the campaign); the
    currency's digit count is checked later, once the campaign is known.
    """
    return isinstance(text, str) and bool(_PLAIN_DECIMAL.fullmatch(text)) and Decimal(text) > 0


def format_minor(minor: int, currency: str) -> str:
    """Integer minor units as a decimal string with exactly the currency's digits.

    ``format_minor(300, "USD") == "3.00"``, ``format_minor(-164, "EUR") == "-1.64"``,
    ``format_minor(1000, "JPY") == "1000"`` (CONTRACT §4).
    """
    if not isinstance(minor, int) or isinstance(minor, bool):
        raise TypeError("money amounts are int minor units")
    digits = minor_digits(currency)
    if digits == 0:
        return str(minor)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**digits)
    return f"{sign}{whole}.{frac:0{digits}d}"


def parse_percent(text: str | int | Decimal) -> Decimal:
    """A percent given as a decimal string (``"8"``, ``"12.5"``) as a Decimal in [0, 100].

    Raises ValueError for anything else (negative, over 100, not a number, a float).
    """
    if isinstance(text, float):
        raise ValueError("percents are decimal strings, not floats")
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a percent") from None
    if not value.is_finite() or value < 0 or value > 100:
        raise ValueError(f"percent {text!r} must be between 0 and 100")
    return value


def percent_of(minor: int, percent: Decimal | str | int) -> int:
    """``minor × percent / 100`` rounded half up to a whole minor unit (CONTRACT §4).

    ``percent_of(1999, "8") == 160`` (159.92 rounds to 160); ``percent_of(5, "50") == 3``.
    Works on negative amounts symmetrically (half away from zero).
    """
    value = Decimal(minor) * Decimal(str(percent)) / Decimal(100)
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def allocate(total: int, weights: list[Decimal]) -> list[int]:
    """Share ``total`` minor units by ``weights`` so that the shares add up exactly.

    Each share is ``total × weight / sum(weights)`` rounded down; the minor units
    left over go one each to the largest remainders, ties to the later position
    first (CONTRACT §4, multi-touch attribution: the later touch wins a tie).

    ``allocate(100, [1, 1, 1]) == [33, 33, 34]``. ``total`` must be >= 0 and
    the weights non-negative with a positive sum; raises ValueError otherwise.
    """
    if total < 0:
        raise ValueError("allocate takes a non-negative total")
    ws = [Decimal(str(w)) for w in weights]
    if not ws or any(w < 0 for w in ws) or sum(ws) <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    wsum = sum(ws)
    exact = [Decimal(total) * w / wsum for w in ws]
    shares = [int(e.to_integral_value(rounding=ROUND_DOWN)) for e in exact]
    left = total - sum(shares)
    order = sorted(range(len(ws)), key=lambda i: (exact[i] - shares[i], i), reverse=True)
    for i in order[:left]:
        shares[i] += 1
    return shares
