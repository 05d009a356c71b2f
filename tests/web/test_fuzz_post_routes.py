"""Fuzz: no 5xx from ``/postback`` or from any POST route, whatever is sent (property-based).

Hardening rule (house rules; CONTRACT §3 answers; :mod:`partnernet.request_guards`): bad input
gives a 4xx with a code, never a 5xx.

1. ``/postback`` (CONTRACT §3) by GET query, POST form (query and body together), POST JSON,
   POST multipart, and raw bodies under content types that lie: random parameter names
   (repeats, empty, non-ASCII, control characters, very long), random values (NUL, JSON
   ``\\ud800`` escapes, bytes that are not UTF-8), mixed with a real client's key (signed or
   not), real, bot, fallback, old and tampered click IDs, coupon, number, and awkward amounts
   (``1e5``, ``0x10``, Arabic digits, ``NaN``, ``-0``, huge), events, statuses and currencies,
   so that many reach the deep checks and some record conversions. Every answer is below 500,
   JSON of CONTRACT §3's shape (``ok``, ``error`` and ``message`` on a 4xx), ``no-store``, and
   has its postback log row with its status. The refusal throttle
   (:mod:`partnernet.postbacks.flood`) is turned off for the fuzz so it reaches the deep checks;
   :func:`test_postback_throttle_answers_429_json_not_5xx` shows its 429 is no 5xx either.
2. Every POST rule of ``app.url_map``, URL variables filled with existing ids or junk, as a
   stranger and as a signed-in staff, partner and client user (session cookie, API key or
   both): random form fields (the app's own form field names mixed in), multipart parts
   (nameless, files, odd content types), JSON documents and raw bytes. Every answer is below
   500 (an unhandled error raises here, the app being in TESTING), and an ``/api/`` refusal is
   the JSON error of CONTRACT §5.

Bounded and reproducible for CI: ``derandomize=True`` (the same examples on every run) and a
fixed ``max_examples`` per test (the file takes well under a minute on both backends). A longer
run: ``PARTNERNET_FUZZ_EXAMPLES=N`` multiplies every ``max_examples`` by N, e.g.
``PARTNERNET_FUZZ_EXAMPLES=20 pytest tests/web/test_fuzz_post_routes.py``.
"""

from __future__ import annotations

import json
import random
import time
from urllib.parse import quote, quote_from_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select
from werkzeug.datastructures import MultiDict

from partnernet.extensions import db
from partnernet.models import PostbackLog
from partnernet.postbacks import params as P
from tests.factories import make_campaign, make_client, make_link, make_partner
from tests.web.fuzz_world import (
    API_KEYS,
    CONTROL,
    JUNK,
    LONG,
    LYING_TYPES,
    ROLES,
    TEXT,
    RouteWorld,
    act_as,
    fuzz_settings,
    mostly,
    multipart,
    multipart_parts,
    plausible,
    plausible_json,
    restore_access,
    route_world,  # noqa: F401 - fixture
)

PB_NAMES = ["key", "sig", "ts", "click_id", "coupon", "number", "event", "txn_id", "amount", "currency",
            "duration", "status", "customer_id"]
AMOUNTS = ["129.90", "1", "0.5", "1e5", "1E-3", "0x10", "\u0661\u0662\u0663", "\u06f1\u06f2", "NaN", "nan",
           "Infinity", "-0", "-1", "0", "0.00", "+5", ".5", "5.", "1,5", "1_000", " 12", "12 ", "12.345",
           "9" * 40, "1" + "0" * 30, "99999999999999999.99", "\U0001d7d9\U0001d7da", "\u00b2"]
EVENTS = ["lead", "sale", "call", "install", "click", "impression", "LEAD", "nope", "lead\x00"]
STATUSES = ["pending", "approved", "rejected", "reversed", "adjusted", "APPROVED", "pending "]
CURRENCIES = ["USD", "usd", "EUR", "JPY", "XXX", "US", "USDD", "\u00dcSD"]
DURATIONS = ["0", "180", "179", "1.5", "-3", "1e3", "99999999999", "2147483647", "2147483648",
             "\u0661\u0668\u0660"]
IPS = ["198.51.100.7", "203.0.113.9", "2001:db8::1", "10.0.0.3", "127.0.0.1"]


# --- 1. /postback ---------------------------------------------------------------------------

class PbWorld:
    """A client (USD) with a campaign of five events and a link (coupon, number), a suspended
    partner's link, a client that requires signatures, another client's (JPY) link, and click
    IDs: fresh, bot, fallback, 40 days old, tampered, and one of the other client."""

    def __init__(self, app):
        signer = app.extensions["partnernet_click_signer"]
        now = int(time.time())
        self.adv = make_client(currency="USD")
        camp = make_campaign(self.adv, default_event="lead", events=[
            {"key": "lead", "client_fee_minor": 1250, "payout_minor": 900, "one_per_click": True},
            {"key": "sale", "client_fee_percent": "10", "payout_percent": "50", "min_amount_minor": 500},
            {"key": "call", "client_fee_minor": 300, "payout_percent": "70", "min_duration_s": 180},
            {"key": "install", "client_fee_minor": 450, "payout_minor": 300},
            {"key": "click", "client_fee_minor": 12, "payout_minor": 8},
        ])
        link = make_link(make_partner(), camp, coupon_code="Spring10", tracking_number="+14155550123")
        frozen = make_link(make_partner(status="suspended"), camp, coupon_code="Frozen5")
        self.signed_adv = make_client(currency="EUR", require_signature=True)
        signed_link = make_link(make_partner(), make_campaign(self.signed_adv), coupon_code="Signed1")
        other = make_client(currency="JPY")
        other_link = make_link(make_partner(), make_campaign(other), coupon_code="Other1")
        self.secrets = {self.adv.postback_key: self.adv.postback_secret,
                        self.signed_adv.postback_key: self.signed_adv.postback_secret,
                        other.postback_key: other.postback_secret}
        fresh = signer.make(link.id, now)
        self.click_ids = [fresh, fresh, signer.make(link.id, now - 5), signer.make(link.id, now, bot=True),
                          signer.make(link.id, now, fallback=True), signer.make(link.id, now - 40 * 86400),
                          signer.make(frozen.id, now), signer.make(signed_link.id, now),
                          signer.make(other_link.id, now), fresh[:-1] + ("A" if fresh[-1] != "A" else "B"),
                          fresh.upper(), fresh + "x", "c" * 41]
        keys = list(self.secrets)
        self.key = mostly(st.just(self.adv.postback_key), tenths=9, bad=st.one_of(
            st.sampled_from(keys), st.sampled_from(["", "pk_nope", self.adv.postback_key.upper(),
                                                    self.adv.postback_key + " ", self.adv.postback_key + "\x00"]),
            JUNK))
        self.values = {
            "click_id": mostly(st.sampled_from(self.click_ids), JUNK),
            "coupon": mostly(st.sampled_from(["Spring10", "spring10", "SPRING10", " Spring10", "Frozen5", "Signed1",
                                              "Other1", "nope", "x" * 65]), JUNK),
            "number": mostly(st.sampled_from(["+14155550123", " 14155550123", "14155550123", "+1 415 555 0123",
                                              "+\u0661\u0664"]), JUNK),
            "customer_id": mostly(st.sampled_from(["cust-1", "cust-2", "x" * 256]), JUNK),
            "event": mostly(st.sampled_from(EVENTS), JUNK),
            "txn_id": mostly(st.sampled_from(["ORD-1", "ORD-2", "ORD-3", "x" * 255, "x" * 256]), JUNK),
            "amount": mostly(st.sampled_from(AMOUNTS), JUNK),
            "currency": mostly(st.sampled_from(CURRENCIES), JUNK),
            "duration": mostly(st.sampled_from(DURATIONS), JUNK),
            "status": mostly(st.sampled_from(STATUSES), JUNK),
        }


@pytest.fixture
def pb_world(app, monkeypatch):
    monkeypatch.setitem(app.config, "PARTNERNET_POSTBACK_REFUSAL_LIMITS", "")  # reach the deep checks
    return PbWorld(app)


NAMES = st.one_of(st.sampled_from(PB_NAMES), st.sampled_from(PB_NAMES), TEXT, CONTROL, LONG, st.just(""))


@st.composite
def postback_pairs(draw, w: PbWorld):
    """The parameters of one postback: mostly a real key, one identifier, some of the other
    parameters, random extra pairs (repeats included), in a random order; sometimes signed."""
    pairs = []
    if draw(st.integers(0, 39)):
        pairs.append(("key", draw(w.key)))
    idents = ["click_id", "click_id", "click_id", "coupon", "number", "customer_id"]
    for ident in draw(mostly(st.lists(st.sampled_from(idents), min_size=1, max_size=1),
                             st.lists(st.sampled_from(idents), max_size=3))):
        pairs.append((ident, draw(w.values[ident])))
    for name in ("event", "txn_id", "amount", "currency", "duration", "status"):
        if draw(st.integers(0, 2)) == 0:
            pairs.append((name, draw(w.values[name])))
    if draw(st.integers(0, 3)) == 0:
        pairs += draw(st.lists(st.tuples(NAMES, st.one_of(JUNK, *w.values.values())), min_size=1, max_size=3))
    pairs = list(draw(st.permutations(pairs)))
    mode = draw(st.sampled_from(["plain"] * 5 + ["signed"] * 3 + ["bad_sig", "ts"]))
    key = next((v for n, v in pairs if n == "key"), None)
    if mode == "signed" and key in w.secrets:
        pairs.append(("ts", str(int(time.time()))))
        pairs.append(("sig", draw(st.sampled_from([str.lower, str.upper]))(P.sign(w.secrets[key], pairs))))
    elif mode == "bad_sig":
        pairs += [("ts", str(int(time.time()))), ("sig", draw(st.sampled_from(["00" * 32, "zz", "", "\u0661"])))]
    elif mode == "ts":  # a fresh ts alone, or one that is stale or not unix seconds
        pairs.append(("ts", draw(st.sampled_from([str(int(time.time())), "0", "-1", "1e9", "9" * 30,
                                                  str(int(time.time()) - 301)]))))
    return pairs


def _json_text(draw, pairs) -> str:
    items = []
    for name, value in pairs:
        choice = draw(st.integers(0, 19))
        if choice == 0:
            v = draw(st.sampled_from(["12.5", "1", "null", "true", "[]", "{}", '"\\ud800"', '"\\udfff x"', "1e400"]))
        else:
            v = json.dumps(value, ensure_ascii=bool(choice % 2))
        items.append(f"{json.dumps(name)}: {v}")
    return "{" + ", ".join(items) + "}"


def send_postback(draw, http, w: PbWorld):
    """Send one fuzzed postback with ``http`` by a transport drawn here; returns the response."""
    pairs = draw(postback_pairs(w))
    how = draw(st.sampled_from(["GET", "GET_RAW", "FORM", "JSON", "MULTIPART", "RAW"]))
    env = {"REMOTE_ADDR": draw(st.sampled_from(IPS))}
    if how == "GET":
        return http.get("/postback", query_string=MultiDict(pairs), environ_base=env)
    if how == "GET_RAW":  # percent-encoded bytes that are not UTF-8 in names and values
        raw = draw(st.binary(max_size=24))
        qs = "&".join(f"{quote(n)}={quote(v)}" for n, v in pairs)
        qs += f"&{quote_from_bytes(raw)}={quote_from_bytes(raw[::-1])}&txn_id%FF=%FE%FA"
        return http.get("/postback", query_string=qs, environ_base=env)
    cut = draw(st.integers(0, len(pairs)))
    query, body_pairs = MultiDict(pairs[:cut]), pairs[cut:]
    if how == "FORM":
        return http.post("/postback", data=MultiDict(body_pairs), query_string=query, environ_base=env)
    if how == "JSON":
        text = _json_text(draw, body_pairs)
        body = text.encode(draw(mostly(st.just("utf-8"), st.sampled_from(["utf-16", "latin-1"]))), "replace")
        ctype = draw(mostly(st.sampled_from(["application/json", ""]), st.sampled_from(LYING_TYPES), 7))
        return http.post("/postback", data=body, content_type=ctype, query_string=query, environ_base=env)
    if how == "MULTIPART":
        parts = draw(multipart_parts(st.just(""), st.just(""))) if not body_pairs else [
            (n, v.encode("utf-8"), None, None) for n, v in body_pairs]
        if body_pairs and draw(st.integers(0, 3)) == 0:
            parts += draw(multipart_parts(NAMES, JUNK))
        ctype = draw(mostly(st.just("multipart/form-data; boundary=pnFuzz"), st.sampled_from(LYING_TYPES)))
        return http.post("/postback", data=multipart(parts), content_type=ctype, query_string=query,
                         environ_base=env)
    body = draw(st.one_of(st.binary(max_size=200),
                          st.binary(max_size=16).map(
                              lambda b: "&".join(f"{n}={v}" for n, v in body_pairs).encode("utf-8") + b"&x=" + b)))
    return http.post("/postback", data=body, content_type=draw(st.sampled_from(LYING_TYPES)),
                     query_string=query, environ_base=env)


def _log_state() -> tuple[int, int | None, str | None]:
    count = db.session.scalar(select(func.count()).select_from(PostbackLog))
    last = db.session.execute(select(PostbackLog.http_status, PostbackLog.outcome)
                              .order_by(PostbackLog.id.desc()).limit(1)).first()
    db.session.rollback()
    return count, *(last or (None, None))


def test_postback_fuzz_never_answers_5xx_and_logs_every_answer(app, client, pb_world):
    """Every fuzzed postback answers below 500 in CONTRACT §3's JSON shape and is logged with its
    status; the run reaches past the key check (404s, step 4 refusals and recorded conversions
    among the answers), or the fuzz would be worth little."""
    seen: set = set()

    @fuzz_settings(150)
    @given(data=st.data())
    def one(data):
        before, _, _ = _log_state()
        with app.app_context():  # a request of its own (own ``g`` and session), as in production
            resp = send_postback(data.draw, client, pb_world)
        assert resp.status_code < 500, resp.data[:500]
        assert resp.is_json and resp.headers["Cache-Control"] == "no-store", resp.data[:200]
        body = resp.get_json()
        if resp.status_code >= 400:
            assert body["ok"] is False and isinstance(body["error"], str) and body["message"], body
        else:
            assert resp.status_code in (200, 201) and body["ok"] is True and body["conversion_id"], body
        after, status, outcome = _log_state()
        assert after == before + 1 and status == resp.status_code, (before, after, status, body)
        if resp.status_code >= 400:
            assert outcome == body["error"]
        seen.add(body.get("error") or ("duplicate" if body["duplicate"] else body["status"]))

    one()
    assert {"unauthorized", "duplicate_parameter", "bad_encoding", "bad_json"} <= seen, seen
    assert seen & {"unknown_click", "unknown_coupon", "unknown_number", "unknown_customer"}, seen
    assert seen & {"unknown_event", "currency_mismatch", "missing_txn_id", "missing_amount"}, seen
    assert seen & {"pending", "approved", "rejected", "duplicate"}, seen


def test_postback_throttle_answers_429_json_not_5xx(app, client, monkeypatch):
    monkeypatch.setitem(app.config, "PARTNERNET_POSTBACK_REFUSAL_LIMITS", "3 per minute")
    env = {"REMOTE_ADDR": "198.51.100.99"}
    answers = [client.post("/postback?key=pk_nope", data=b"\xff{", content_type="application/json",
                           environ_base=env) for _ in range(5)]
    assert [r.status_code for r in answers] == [400, 400, 400, 429, 429]
    assert answers[-1].get_json()["error"] == "too_many_refusals" and answers[-1].headers["Retry-After"]
    assert db.session.scalar(select(func.count()).select_from(PostbackLog)) == 3  # 429s are counted, not logged


# --- 2. every POST route --------------------------------------------------------------------

def _url_values(draw, rule, w: RouteWorld) -> str:
    """The path of ``rule`` with its variables filled with existing ids, junk ids and junk text."""
    values = {}
    for arg in sorted(rule.arguments):
        kind = type(rule._converters[arg]).__name__
        if arg == "action":
            values[arg] = draw(st.one_of(st.sampled_from(w.actions), JUNK.filter(bool)))
        elif kind in ("IdConverter", "BigIdConverter", "IntegerConverter"):
            values[arg] = draw(st.one_of(st.sampled_from(w.ids), st.sampled_from(w.ids),
                                         st.sampled_from([0, 2**31, 2**63, 10**30])))
        else:
            values[arg] = draw(st.one_of(st.sampled_from([str(i) for i in w.ids]),
                                         st.sampled_from(["0", "-1", "1e3", "0x10", "\u0661", "9" * 30, " 1",
                                                          "1.0", "null"]), JUNK.filter(bool)))
    try:
        return rule.build(values, append_unknown=False)[1]
    except Exception:  # noqa: BLE001 - a converter that refuses the junk: plain text instead
        return rule.build({a: "x" for a in rule.arguments}, append_unknown=False)[1]


JUNK_SAMPLES = ["", " ", "\x00", "a\x00b", "\x1b[31m", "\r\nSet-Cookie: x=1", "\u202egnp.exe", "n" * 5000,
                "{click_id}", "%00", "\u0661\u0662", "\U0001f600", "-1", "1e309", "NaN", "null", "[]", "<script>"]


def _coherent_pairs(rnd: random.Random, names: list[str], w: RouteWorld, *, as_json: bool = False) -> list:
    """Most of ``names`` (a few dropped), each with a value that fits its name, a few with junk:
    forms and documents that often pass validation and reach the use case. ``rnd`` is drawn from
    hypothesis (``st.randoms``), so the run stays reproducible and cheap to generate."""
    drop = set(rnd.sample(names, rnd.randint(0, 4)))
    spoilt = set(rnd.sample(names, rnd.choice([0, 0, 0, 1, 2])))
    pairs = []
    for name in names:
        if name in drop:
            continue
        if name in spoilt:
            pairs.append((name, rnd.choice(JUNK_SAMPLES)))
        elif as_json:
            pairs.append((name, plausible_json(name, w.ids, rnd)))
        else:
            pairs.append((name, rnd.choice(plausible(name, w.ids))))
    return pairs


class RouteStrategies:
    """The strategies of one route-fuzz test, built once from its world."""

    def __init__(self, w: RouteWorld):
        self.names = st.one_of(st.sampled_from(w.field_names), st.sampled_from(w.field_names), TEXT, CONTROL, LONG)
        self.values = st.one_of(st.sampled_from(w.field_values), st.sampled_from(w.field_values), JUNK)
        scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), self.values,
                            st.sampled_from(w.ids))
        doc = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(
            st.one_of(st.sampled_from(API_KEYS), TEXT), c, max_size=4), max_leaves=10)
        self.json_doc = st.one_of(st.dictionaries(st.sampled_from(API_KEYS), doc, max_size=6), doc)
        self.kinds = st.sampled_from(["fitting_form", "fitting_json", "fitting_form", "fitting_json", "none", "form",
                                      "multipart", "json", "raw"])


def _route_request(draw, rule, w: RouteWorld, s: RouteStrategies) -> tuple[str, dict]:
    """A fuzzed POST to ``rule``: ``(path, keyword arguments of the test client's post)``."""
    path = _url_values(draw, rule, w)
    kw: dict = {}
    if draw(st.integers(0, 3)) == 0:
        kw["query_string"] = MultiDict(draw(st.lists(st.tuples(s.names, s.values), max_size=3)))
    kind = draw(s.kinds)
    if kind.startswith("fitting"):
        rnd = draw(st.randoms(use_true_random=False))
        if kind == "fitting_json":
            kw["data"] = json.dumps(dict(_coherent_pairs(rnd, API_KEYS, w, as_json=True))).encode()
            kw["content_type"] = "application/json"
        elif rnd.random() < 0.25:
            pairs = _coherent_pairs(rnd, w.field_names, w)
            kw["data"] = multipart([(n, v.encode("utf-8"), None, None) for n, v in pairs])
            kw["content_type"] = "multipart/form-data; boundary=pnFuzz"
        else:
            kw["data"] = MultiDict(_coherent_pairs(rnd, w.field_names, w))
    elif kind == "form":
        kw["data"] = MultiDict(draw(st.lists(st.tuples(s.names, s.values), max_size=8)))
    elif kind == "multipart":
        kw["data"] = multipart(draw(multipart_parts(s.names, s.values)))
        kw["content_type"] = draw(mostly(st.just("multipart/form-data; boundary=pnFuzz"), st.sampled_from(LYING_TYPES)))
    elif kind == "json":
        kw["data"] = json.dumps(draw(s.json_doc), ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
        kw["content_type"] = draw(mostly(st.just("application/json"), st.sampled_from(LYING_TYPES)))
    elif kind == "raw":
        kw["data"] = draw(st.binary(max_size=200))
        kw["content_type"] = draw(st.sampled_from(LYING_TYPES))
    return path, kw


@pytest.mark.parametrize("who", ROLES)
def test_every_post_route_fuzz_never_answers_5xx(app, client, route_world, who):
    """Every POST rule in turn gets its own fuzz run as ``who``; access is put back before each
    request."""
    w: RouteWorld = route_world
    assert len(w.rules) > 30 and any(r.rule == "/postback" for r in w.rules)
    strategies = RouteStrategies(w)

    for rule in w.rules:
        @fuzz_settings(2)
        @given(rule=st.just(rule), data=st.data())
        def fuzz_rule(rule, data):
            restore_access(w)
            headers = act_as(client, w, who, data.draw(st.sampled_from(["cookie", "key", "both", "junk_key"])))
            path, kw = _route_request(data.draw, rule, w, strategies)
            with app.app_context():  # own ``g`` (Flask-Login keeps the user there) and session
                resp = client.post(path, headers=headers, **kw)
            assert resp.status_code < 500, (path, resp.status_code, resp.data[:500])
            if path.startswith("/api/") and resp.status_code >= 400:
                assert resp.is_json and isinstance(resp.get_json().get("error"), str), (path, resp.data[:300])

        fuzz_rule()
