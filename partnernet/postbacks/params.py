"""Postback parameters: collection, signature, and the checks that need no lookup (CONTRACT §3).

Pure module: standard library only. The view turns a request into a
:class:`RawParams` (every ``(name, value)`` pair as sent, query string first,
then the body); the service (:mod:`partnernet.postbacks.services`) runs the
checks of CONTRACT §3 in order, using the helpers here for steps 1 and 2.

Project choices, where the contract leaves room (documented in the README):

- A parameter name or value holding a NUL character or a lone UTF-16 surrogate (JSON
  ``"\\ud800"``) cannot be stored or looked up: it answers 400 ``bad_encoding``, the first
  check of step 2 (in ``key`` it answers 401, as no key holds one). The log keeps such
  characters as U+FFFD.

- A body that cannot be read at all (malformed JSON, or JSON that is not an
  object) answers 400 ``bad_json`` before any other check: there are no
  parameters to authenticate.
- ``key``, ``sig`` and ``ts`` given twice with *different* values are
  ambiguous credentials and answer 401; given twice with the same value they
  authenticate, and the repeat answers 400 ``duplicate_parameter`` (step 2).
- An empty value (``amount=``) counts as a given parameter for the signature,
  the duplicate check and the macro check, and as absent for everything else
  (so ``click_id=&coupon=X`` is a coupon postback).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
from dataclasses import dataclass, field

from ..text import is_clean, scrub

SIGNED_EXCLUDED = "sig"
MACRO_RE = re.compile(r"\{[A-Za-z0-9_]+\}")
# (v2) ``adjusted``: a new amount for an existing percent-of-sale conversion (CONTRACT v2 §3
# Adjustments; answered 400 ``bad_adjustment`` when it cannot apply, see postbacks.services).
STATUSES = ("pending", "approved", "rejected", "reversed", "adjusted")
LOOKUP_PARAMS = ("click_id", "coupon", "number")
_WHOLE = re.compile(r"[0-9]+")
_TS = re.compile(r"-?[0-9]+")
# Column limits: a bigger value is refused with a 400 rather than failing in the database.
MAX_DURATION_S = 2**31 - 1
MAX_TXN_ID_LEN = 255
MAX_CUSTOMER_ID_LEN = 255  # CONTRACT v2 §3: customer_id is 1-255 characters
# What the postback log keeps of a postback's parameters (the endpoint is unauthenticated, so
# nobody may store more than this per request): names cut to 64 characters, values to 256 (a
# txn_id or customer_id of 255 is kept whole), at most 50 parameters and 8,192 characters of
# names and values in all; what is left out is counted under the name "…".
LOG_NAME_CHARS = 64
LOG_VALUE_CHARS = 256
LOG_MAX_PARAMS = 50
LOG_MAX_CHARS = 8192
OMITTED = "…"


@dataclass
class RawParams:
    """Every parameter of one postback as sent.

    ``pairs``: ``(name, value)`` in the order sent, query string first, then the body; a name
    given twice appears twice. ``nonstring``: names of JSON body values that were not strings
    (CONTRACT §3 step 2 ``bad_json``; such values are not in ``pairs``). ``unreadable``: a
    message when the body could not be parsed at all (answered 400 ``bad_json`` at once).
    ``too_large``: the body was above the app's ``MAX_CONTENT_LENGTH`` or ``MAX_FORM_PARTS``
    and was not read (answered 413 ``too_large`` at once, a project choice).
    """

    pairs: list[tuple[str, str]] = field(default_factory=list)
    nonstring: list[str] = field(default_factory=list)
    unreadable: str | None = None
    too_large: bool = False

    def names(self) -> list[str]:
        """Every parameter name given, repeats included (string and non-string values)."""
        return [n for n, _ in self.pairs] + list(self.nonstring)


@dataclass(frozen=True)
class Refusal:
    """A refused postback: HTTP ``status`` (400/401/404), machine ``code`` and a ``message``."""

    status: int
    code: str
    message: str


@dataclass(frozen=True)
class Fields:
    """The typed parameters of a postback that passed CONTRACT §3 step 2.

    Empty strings are None. ``amount`` stays text (its minor units need the campaign's
    currency); ``duration_s`` is whole seconds; ``status`` defaults to ``pending``.
    """

    click_id: str | None
    coupon: str | None
    number: str | None
    event: str | None
    txn_id: str | None
    amount: str | None
    currency: str | None
    duration_s: int | None
    status: str
    customer_id: str | None = None  # CONTRACT v2 §3 (recurring commissions)


class _Pairs(list):
    """A JSON object as its ``(name, value)`` pairs, repeats kept."""


def parse_json_body(raw: bytes | str) -> RawParams:
    """Parameters of a JSON body (CONTRACT §3: a JSON object whose values are strings).

    Returns a :class:`RawParams` whose ``unreadable`` is set when the text is not JSON or not an
    object, and whose ``nonstring`` lists names whose value is not a string. An empty body is no
    parameters. Duplicate keys inside the object are kept as repeats.
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return RawParams(unreadable="the JSON body is not UTF-8")
    if not raw.strip():
        return RawParams()
    try:
        items = json.loads(raw, object_pairs_hook=_Pairs)
    except (ValueError, RecursionError):
        return RawParams(unreadable="the body is not valid JSON")
    if not isinstance(items, _Pairs):
        return RawParams(unreadable="the JSON body must be an object")
    out = RawParams()
    for name, value in items:
        if isinstance(value, str):
            out.pairs.append((name, value))
        else:
            out.nonstring.append(name)
    return out


def duplicate_names(names: list[str]) -> list[str]:
    """Names given more than once, in order of their first repeat (CONTRACT §3 ``duplicate_parameter``)."""
    seen: set[str] = set()
    dups: list[str] = []
    for n in names:
        if n in seen and n not in dups:
            dups.append(n)
        seen.add(n)
    return dups


def single(pairs: list[tuple[str, str]], name: str) -> tuple[bool, str | None]:
    """``(ok, value)`` of ``name``: ``(True, None)`` when absent, ``(True, v)`` when every
    occurrence has the same value ``v``, ``(False, None)`` when occurrences disagree."""
    values = {v for n, v in pairs if n == name}
    if not values:
        return True, None
    if len(values) > 1:
        return False, None
    return True, values.pop()


def signature_base(pairs: list[tuple[str, str]]) -> str:
    """The text a postback signature covers (CONTRACT §3 ``sig``).

    Every parameter except ``sig`` (``key`` and ``ts`` included), sorted by name (byte order of
    the UTF-8 names; a stable sort keeps repeats in the order sent), joined as
    ``name=value&name=value`` with the decoded values as sent and no re-encoding:
    ``[("ts","1"),("key","k"),("q","a b&c+d")]`` gives ``"key=k&q=a b&c+d&ts=1"``.
    """
    kept = [(n, v) for n, v in pairs if n != SIGNED_EXCLUDED]
    kept.sort(key=lambda nv: nv[0].encode("utf-8", "surrogatepass"))
    return "&".join(f"{n}={v}" for n, v in kept)


def sign(secret: str, pairs: list[tuple[str, str]]) -> str:
    """Lower-case hex HMAC-SHA256 of :func:`signature_base` keyed with ``secret`` (UTF-8)."""
    base = signature_base(pairs).encode("utf-8", "surrogatepass")
    return hmac.new(secret.encode("utf-8"), base, hashlib.sha256).hexdigest()


def signature_ok(secret: str, pairs: list[tuple[str, str]], sig: str) -> bool:
    """True when ``sig`` (hex, either case) is the HMAC of ``pairs`` under ``secret``.

    Constant-time comparison (:func:`hmac.compare_digest`); any non-hex text is simply wrong.
    """
    if not isinstance(sig, str) or not sig:
        return False
    given = sig.lower().encode("utf-8", "surrogatepass")
    return hmac.compare_digest(given, sign(secret, pairs).encode("ascii"))


def ts_fresh(ts: str, now_unix: int, max_skew_s: int) -> bool:
    """True when ``ts`` is whole unix seconds at most ``max_skew_s`` from ``now_unix`` (either way)."""
    if not isinstance(ts, str) or not _TS.fullmatch(ts) or len(ts) > 20:
        return False
    return abs(int(ts) - int(now_unix)) <= max_skew_s


def ip_allowed(ip: str | None, allowlist: str | None) -> bool:
    """True when ``ip`` matches an entry of ``allowlist`` (comma-separated IPs or CIDR networks;
    empty or blank: any IP). Entries that do not parse match nothing; an unknown ``ip`` matches
    only an empty list."""
    entries = [e.strip() for e in (allowlist or "").split(",") if e.strip()]
    if not entries:
        return True
    try:
        addr = ipaddress.ip_address((ip or "").strip())
    except ValueError:
        return False
    if getattr(addr, "ipv4_mapped", None):
        addr = addr.ipv4_mapped
    for entry in entries:
        try:
            net = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            continue
        if addr.version == net.version and addr in net:
            return True
    return False


def find_macro(pairs: list[tuple[str, str]]) -> tuple[str, str] | None:
    """``(name, macro)`` of the first value holding an unreplaced macro such as ``{click_id}``
    (CONTRACT §3 ``unreplaced_macro``: ``{``, ASCII letters, digits or ``_``, then ``}``), or None."""
    for name, value in pairs:
        m = MACRO_RE.search(value)
        if m:
            return name, m.group(0)
    return None


def is_status(value: str) -> bool:
    """True for ``pending``, ``approved``, ``rejected`` and ``reversed`` (exact, lower case)."""
    return value in STATUSES


def is_whole_seconds(value: str) -> bool:
    """True for a whole number of seconds in ASCII digits (``"0"``, ``"180"``), not ``"1.5"``,
    ``"-3"``, ``" 5"`` or ``"1e3"``; at most ``MAX_DURATION_S``."""
    return isinstance(value, str) and bool(_WHOLE.fullmatch(value)) and len(value) <= 12 \
        and int(value) <= MAX_DURATION_S


def find_unclean(raw: RawParams) -> str | None:
    """The name of the first parameter whose name or value holds a NUL or a lone surrogate
    (:func:`partnernet.text.is_clean`), else None."""
    for name, value in raw.pairs:
        if not is_clean(name) or not is_clean(value):
            return name
    for name in raw.nonstring:
        if not is_clean(name):
            return name
    return None


def check_shape(raw: RawParams, *, is_plain_positive_decimal, is_currency) -> Refusal | Fields:
    """CONTRACT §3 step 2, in its order: first ``bad_encoding`` (a project choice: a name or
    value with a NUL or a lone surrogate, which no lookup or log could take), then
    ``duplicate_parameter``, ``bad_json``,
    ``missing_click_id``, ``unreplaced_macro``, ``bad_status``, ``bad_amount``, ``bad_duration``,
    ``unknown_currency``; then a too long ``txn_id`` (400 ``bad_txn_id``, a project choice:
    the database keeps 255 characters), then a ``customer_id`` over 255 characters (400
    ``bad_customer_id``, CONTRACT v2 §3 says 1-255). ``missing_click_id`` (v2): exactly one of
    ``click_id``, ``coupon``, ``number``, or none of them and a ``customer_id`` (its binding is
    looked up in step 3).

    ``is_plain_positive_decimal`` and ``is_currency`` are the predicates of
    :mod:`partnernet.money` (passed in to keep this module free of project imports).
    Returns the first :class:`Refusal`, else the typed :class:`Fields`.
    """
    unclean = find_unclean(raw)
    if unclean is not None:
        return Refusal(400, "bad_encoding",
                       f"parameter {ascii(_cut(unclean))} holds a NUL character or an unpaired UTF-16 "
                       "surrogate")
    dups = duplicate_names(raw.names())
    if dups:
        return Refusal(400, "duplicate_parameter", f"parameter {_cut(dups[0])!r} is given more than once")
    if raw.nonstring:
        return Refusal(400, "bad_json", f"JSON value of {_cut(raw.nonstring[0])!r} is not a string")
    values = {n: v for n, v in raw.pairs}

    def get(name: str) -> str | None:
        v = values.get(name)
        return v if v else None

    given = [n for n in LOOKUP_PARAMS if get(n) is not None]
    # (v2) none of them is allowed with a customer_id: the customer's binding names the link (step 3).
    if len(given) != 1 and not (not given and get("customer_id") is not None):
        if not given:
            msg = "one of click_id, coupon or number (or a bound customer_id) is required"
        else:
            msg = "give exactly one of click_id, coupon or number, not " + " and ".join(given)
        return Refusal(400, "missing_click_id", msg)
    macro = find_macro(raw.pairs)
    if macro:
        return Refusal(400, "unreplaced_macro",
                       f"parameter {_cut(macro[0])!r} holds the unreplaced macro {_cut(macro[1])}")
    status = get("status") or "pending"
    if not is_status(status):
        return Refusal(400, "bad_status", "status must be pending, approved, rejected, reversed or adjusted")
    amount = get("amount")
    if amount is not None and not is_plain_positive_decimal(amount):
        return Refusal(400, "bad_amount", "amount must be a positive plain decimal such as 129.90")
    duration = get("duration")
    if duration is not None and not is_whole_seconds(duration):
        return Refusal(400, "bad_duration", "duration must be a whole number of seconds")
    currency = get("currency")
    if currency is not None and not is_currency(currency):
        return Refusal(400, "unknown_currency", f"unknown currency code {currency[:8]!r}")
    txn_id = get("txn_id")
    if txn_id is not None and (len(txn_id) > MAX_TXN_ID_LEN or "\x00" in txn_id):
        return Refusal(400, "bad_txn_id", f"txn_id must be at most {MAX_TXN_ID_LEN} characters, without NUL")
    customer_id = get("customer_id")
    if customer_id is not None and len(customer_id) > MAX_CUSTOMER_ID_LEN:
        return Refusal(400, "bad_customer_id", f"customer_id must be 1-{MAX_CUSTOMER_ID_LEN} characters")
    return Fields(
        click_id=get("click_id"),
        coupon=get("coupon"),
        number=get("number"),
        event=get("event"),
        txn_id=txn_id,
        amount=amount,
        currency=currency,
        duration_s=int(duration) if duration is not None else None,
        status=status,
        customer_id=customer_id,
    )


def _cut(text: str, limit: int = LOG_NAME_CHARS) -> str:
    """``text`` cut to ``limit`` characters, the last one ``…`` when something was cut (for
    messages and the log: a name can be as long as the body)."""
    return text if len(text) <= limit else text[:limit - 1] + OMITTED


def loggable(raw: RawParams, *, max_len: int = LOG_VALUE_CHARS, max_name: int = LOG_NAME_CHARS,
             max_params: int = LOG_MAX_PARAMS, max_total: int = LOG_MAX_CHARS) -> dict:
    """The parameters as the postback log keeps them, bounded whatever was sent: ``{name:
    value}``, a list of values for a repeated name, ``sig`` cut to its first 8 characters
    followed by ``…``, names cut to ``max_name`` and values to ``max_len`` characters (ending in
    ``…`` when cut), non-string JSON values as ``"<non-string>"``, NUL characters and lone
    surrogates as U+FFFD (:func:`partnernet.text.scrub`: PostgreSQL text cannot hold NUL, and no
    UTF-8 encoder takes a surrogate). At most ``max_params`` parameters (repeats counted) and
    ``max_total`` characters of names and values are kept, in the order sent; when some are left
    out, ``"…"`` says how many (``"3 more parameters not kept"``)."""
    out: dict = {}
    kept = total = omitted = 0

    def put(name: str, value: str) -> None:
        nonlocal kept, total, omitted
        name = scrub(_cut(name, max_name))
        if name == SIGNED_EXCLUDED and value:
            value = value[:8] + OMITTED
        value = scrub(_cut(value, max_len))
        if kept >= max_params or total + len(name) + len(value) > max_total:
            omitted += 1
            return
        kept += 1
        total += len(name) + len(value)
        if name in out:
            prev = out[name]
            out[name] = (prev if isinstance(prev, list) else [prev]) + [value]
        else:
            out[name] = value

    for name, value in raw.pairs:
        put(name, value)
    for name in raw.nonstring:
        put(name, "<non-string>")
    if omitted:
        out[OMITTED] = f"{omitted} more parameter{'s' if omitted != 1 else ''} not kept"
    return out
