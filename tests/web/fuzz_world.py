"""Settings, shared strategies and the route world of the fuzz (tests/web/test_fuzz_post_routes.py).

- :func:`fuzz_settings`: bounded and derandomized; ``PARTNERNET_FUZZ_EXAMPLES=N`` multiplies
  every ``max_examples`` by N for a longer run.
- Strategies for junk text, control characters, very long text, lying content types and
  multipart bodies (:func:`multipart`, :func:`multipart_parts`).
- The route world: signed-in users of every role with API keys, a client, campaigns (public and
  by application), a link with a coupon, a conversion, a payout batch; the POST rules of the URL
  map; field names and values that the app's own forms and the JSON API use (:func:`plausible`),
  so random requests reach the views' deeper checks.

Fuzzed requests may deactivate users, revoke keys, suspend the partner or sign out:
:func:`restore_access` puts access back before each example, and :func:`act_as` signs the test
client in with the user's current session token (no password check: one per example would cost
a password hash and trip the login throttle).
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field

import pytest
from flask_wtf import FlaskForm
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from sqlalchemy import select, update
from wtforms.fields.core import UnboundField

from partnernet.auth.keys import create_key
from partnernet.extensions import db
from partnernet.models import ApiKey, Partner, User
from tests.factories import make_campaign, make_client, make_link, make_partner, make_user

FACTOR = max(1, int(os.environ.get("PARTNERNET_FUZZ_EXAMPLES", "1") or 1))


def fuzz_settings(n: int):
    """Bounded, reproducible hypothesis settings: ``n`` examples times PARTNERNET_FUZZ_EXAMPLES."""
    return settings(max_examples=n * FACTOR, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.large_base_example])


# --- strategies shared by the fuzz tests ------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=24)  # NUL and controls included
CONTROL = st.text(st.sampled_from("\x00\x01\x08\t\n\r\x1b\x7f\x85\u200b\u202e\ufeff\u2028"), min_size=1, max_size=4)
LONG = st.sampled_from([257, 4097, 70_000]).map(lambda n: "n" * n)
ODD = st.sampled_from(["", " ", "{click_id}", "{sub1}", "%00", "%FF", "&", "=", "a&b=c", "+", "a b", "\u00e9t\u00e9",
                       "\u0661\u0662\u0663", "\U0001f600", "'; drop table x; --", "=cmd|' /C calc'!A0", "null"])
JUNK = st.one_of(TEXT, TEXT, CONTROL, ODD, LONG)

LYING_TYPES = ["application/json", "application/json; charset=utf-8", "application/vnd.pn+json",
               "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=latin-1",
               "multipart/form-data; boundary=pnFuzz", "multipart/form-data", "text/plain", "",
               "application/octet-stream", "text/html; charset=utf-16", "*/*"]


def multipart(parts, boundary="pnFuzz") -> bytes:
    """A multipart body of ``parts``: ``(name | None, value, filename | None, content_type | None)``."""
    out = b""
    for name, value, filename, ctype in parts:
        disp = "form-data"
        if name is not None:
            disp += f'; name="{name.replace(chr(34), "%22").replace(chr(13), "").replace(chr(10), "")}"'
        if filename is not None:
            disp += f'; filename="{filename.replace(chr(34), "").replace(chr(13), "").replace(chr(10), "")}"'
        head = f"Content-Disposition: {disp}\r\n" + (f"Content-Type: {ctype}\r\n" if ctype else "")
        out += f"--{boundary}\r\n{head}\r\n".encode("utf-8", "replace") + value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


@st.composite
def multipart_parts(draw, names, values):
    """Parts for :func:`multipart` from ``(name, value)`` pairs, some with filenames, odd content
    types, or no name at all."""
    parts = []
    for name, value in draw(st.lists(st.tuples(names, values), max_size=6)):
        filename = draw(st.sampled_from([None, None, None, "a.txt", "", "../../etc/passwd", "\u00e9.csv"]))
        ctype = draw(st.sampled_from([None, None, "text/plain", "application/json", "text/plain; charset=latin-1",
                                      "image/png", "multipart/mixed; boundary=x", "\x00"]))
        parts.append((name, value.encode("utf-8", "surrogatepass"), filename, ctype))
    if draw(st.integers(0, 9)) == 0:
        parts.append((None, b"nameless", draw(st.sampled_from([None, "f.bin"])), None))
    return draw(st.permutations(parts))


def mostly(good: st.SearchStrategy, bad: st.SearchStrategy, tenths: int = 8) -> st.SearchStrategy:
    """``good`` in ``tenths`` of ten draws, else ``bad`` (one_of would split them evenly)."""
    return st.integers(0, 9).flatmap(lambda i: good if i < tenths else bad)


# --- the route fuzz's world -------------------------------------------------------------------

ROLES = ["stranger", "staff", "partner", "client"]
PASSWORD = "Sunny-Meadow-42"
#: Body keys of the JSON API (CONTRACT §5) and of the forms that read request.form by hand.
API_KEYS = ["name", "currency", "website_url", "require_signature", "client_id", "destination_url", "fallback_url",
            "click_param", "deep_link_hosts", "attribution_window_days", "hold_days", "attribution_model", "budget",
            "default_event", "events", "key", "label", "client_fee", "client_fee_percent", "payout",
            "payout_percent", "min_duration_s", "min_amount", "one_per_click", "recurring_months", "visibility",
            "email", "kind", "recruiter_id", "recruiter_percent", "payout_method", "payout_email", "iban", "bic",
            "account_holder", "partner_id", "campaign_id", "channel", "deep_link", "coupon_code",
            "tracking_number", "tracking_numbers", "numbers", "code", "reason", "ids", "min_amount", "status",
            "tier_id", "percent", "amount", "threshold", "starts_at", "ends_at", "role", "password", "action"]
ACTIONS = ["approve", "reject", "suspend", "reinstate", "cancel", "mark-paid", "issue", "deactivate", "activate",
           "paid", "delete", "APPROVE"]


_AMOUNTS = ["2.50", "100", "0", "0.00", "-1", "1e5", "0x10", "\u0661\u0662\u0663", "NaN", "60%", "150%", "-0",
            "9" * 30, "12.345", ""]
_RULES = [  # (substrings of a field name, plausible values), first match wins
    (("email",), ["staff@example.com", "client@example.com", "new.partner@example.com", "not-an-email", "a@b",
                  "\u00e9@example.com"]),
    (("password",), [PASSWORD, "Correct-Horse-Battery-9", "short", "password123", "x" * 201]),
    (("url", "website", "deep_link"), ["https://acme.example/landing?c={click_id}", "http://127.0.0.1/pb",
                                       "https://acme.example/x?{nope}", "javascript:alert(1)", "ftp://acme.example/",
                                       "https://[::1/", "https://acme.example:99999/", "acme.example"]),
    (("hosts",), ["acme.example, shop.acme.example", "*.acme.example", "http://acme.example/", ","]),
    (("currency",), ["USD", "EUR", "JPY", "usd", "XXX", "US", "\u00dcSD"]),
    (("events",), ["sale | Sale | 8% | 50% | min_amount=5.00\nlead | Lead | 2.00 | 1.20 | one_per_click",
                   "call | Call | 3.00 | 70% | min_duration_s=180", "x | | |", "lead | Lead | 2.00 | 3.00",
                   "sale | Sale | NaN% | 1e5", "click | Click | 0.10 | 0.05\nclick | Click | 1 | 1"]),
    (("event",), ["sale", "lead", "", "click", "impression", "nope"]),
    (("days", "audience", "size", "months"), ["30", "0", "-1", "3651", "1.5", "99999999999999999999", "\u0663"]),
    (("status",), ["active", "paused", "approved", "pending", "rejected", "deleted"]),
    (("model",), ["last_click", "first_click", "linear", "position_based", "random"]),
    (("visibility",), ["public", "approval", "invite_only", "secret"]),
    (("kind",), ["affiliate", "influencer", "bot"]),
    (("channel",), ["affiliate", "social", "email", "video", "blog", "nope"]),
    (("method",), ["paypal", "bank", "cheque"]),
    (("iban",), ["DE89370400440532013000", "DE00370400440532013000", "GB82WEST12345698765432", "XX"]),
    (("bic",), ["COBADEFFXXX", "NOTABIC", "DEUTDEFF"]),
    (("timezone",), ["UTC", "Europe/Berlin", "Mars/Olympus", "../../etc/passwd"]),
    (("require", "remember", "accept", "auto_", "one_per_click"), ["y", "on", "true", "false", ""]),
    (("budget", "amount", "cap", "payout", "fee", "percent"), _AMOUNTS),
    (("allowlist",), ["10.0.0.0/8, 203.0.113.5", "::1/200", "nonsense", ""]),
    (("code", "coupon"), ["Spring10", "VANITY-1", "bad code!", "x" * 65]),
    (("number",), ["+14155550123", "+14155550124", "14155550123", "+1 415"]),
    (("next",), ["/staff", "https://evil.example/", "//evil.example", "/\\evil.example"]),
    (("action",), ACTIONS),
    (("role",), ["staff", "partner", "client", "root"]),
]


def plausible(name: str, ids: list[int]) -> list[str]:
    """Values that fit a field called ``name`` (ids for ``*_id``, emails for ``email``, ...),
    right and wrong ones, so that some fuzzed forms pass validation and reach the use case."""
    if name.endswith("_id") or name in ("ids", "recruiter"):
        return [str(i) for i in ids] + ["0", "-1", "x", "9" * 20]
    for needles, values in _RULES:
        if any(n in name for n in needles):
            return values
    return ["fuzz", "Fuzz Co", "", "a" * 201, "=HYPERLINK(\"x\")", "\u00e9t\u00e9 \U0001f600"]


def plausible_json(name: str, ids: list[int], rnd: random.Random):
    """A JSON value for API field ``name``, chosen with ``rnd``: :func:`plausible` text, and
    numbers, lists, objects and null where the API takes them (and where it does not)."""
    def text():
        return rnd.choice(plausible(name, ids))

    if name.endswith("_id") or name.endswith("_days") or name in ("recruiter_percent", "min_duration_s",
                                                                  "recurring_months"):
        return rnd.choice([text(), rnd.choice(ids), rnd.choice([0, -1, 2**63, 1.5, None, True])])
    if name == "ids":
        return [rnd.choice([rnd.choice(ids), text()]) for _ in range(rnd.randint(0, 4))]
    if name == "events":
        opts = ("label", "client_fee", "client_fee_percent", "payout", "payout_percent", "min_amount",
                "one_per_click")
        events = [{"key": rnd.choice(["sale", "lead", "click", ""]),
                   **{k: plausible_json(k, ids, rnd) for k in opts if rnd.random() < 0.5}}
                  for _ in range(rnd.randint(0, 3))]
        return rnd.choice([events, events, text()])
    if name in ("deep_link_hosts", "tracking_numbers", "numbers"):
        return rnd.choice([[text() for _ in range(rnd.randint(0, 3))], text()])
    if any(n in name for n in ("require", "one_per_click")):
        return rnd.choice([True, False, text()])
    return rnd.choice([text(), text(), None, rnd.randint(-1, 100)])


@dataclass
class RouteWorld:
    """What the route fuzz draws from (ids of every table, URL rules, field names and values)."""

    users: dict  # role -> user id
    keys: dict  # role -> API key text
    key_ids: list
    partner_id: int
    rules: list
    ids: list
    actions: list = field(default_factory=lambda: list(ACTIONS))
    field_names: list = field(default_factory=list)
    field_values: list = field(default_factory=list)


def post_rules(app) -> list:
    """Every rule of ``app.url_map`` that takes POST, in a stable order."""
    return sorted((r for r in app.url_map.iter_rules() if "POST" in (r.methods or ())), key=lambda r: r.rule)


def form_field_names() -> list[str]:
    """The field names of every FlaskForm of the app (imported by then), plus the names views
    read by hand."""
    names: set[str] = {"csrf_token", "next", "ids", "action", "reason", "events-0-key", "events-0-client_fee"}
    todo = list(FlaskForm.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        names.update(n for n in dir(cls) if isinstance(getattr(cls, n, None), UnboundField))
    return sorted(names)


def _all_ids() -> list[int]:
    ids: set[int] = set()
    for table in db.metadata.sorted_tables:
        if "id" in table.c and str(table.c.id.type).upper() in ("INTEGER", "BIGINT"):
            ids.update(db.session.scalars(select(table.c.id).limit(4)))
    db.session.rollback()
    return sorted(ids) or [1]


@pytest.fixture
def route_world(app, client) -> RouteWorld:
    from partnernet.partners.applications import apply_to_campaign

    staff = make_user("staff@example.com", role="staff", password=PASSWORD)
    staff2 = make_user("staff2@example.com", role="staff", password=PASSWORD)
    adv = make_client(currency="USD")
    partner = make_partner()
    puser = make_user(partner.email, role="partner", password=PASSWORD, partner_id=partner.id)
    cuser = make_user("client@example.com", role="client", password=PASSWORD, client_id=adv.id)
    camp = make_campaign(adv, events=[{"key": "sale", "client_fee_percent": "10", "payout_percent": "50"},
                                      {"key": "lead", "client_fee_minor": 1000, "payout_minor": 600}])
    by_application = make_campaign(adv)
    by_application.visibility = "approval"
    db.session.commit()
    apply_to_campaign(partner.id, by_application.id, "hello")
    link = make_link(partner, camp, coupon_code="Spring10")
    users = {"staff": staff.id, "staff2": staff2.id, "partner": puser.id, "client": cuser.id}
    keys, key_ids = {}, []
    for role in ("staff", "partner", "client"):
        row, keys[role] = create_key(users[role], "fuzz")
        key_ids.append(row.id)
    cid = app.extensions["partnernet_click_signer"].make(link.id, int(time.time()))
    r = client.get("/postback", query_string={"key": adv.postback_key, "click_id": cid, "event": "sale",
                                              "amount": "100.00", "txn_id": "ORD-1", "status": "approved"})
    assert r.status_code == 201, r.data
    r = client.post("/api/v1/payout-batches", json={"currency": "USD"},
                    headers={"Authorization": f"Bearer {keys['staff']}"})
    assert r.status_code == 201, r.data
    ids = _all_ids()
    emails = ["staff@example.com", "staff2@example.com", partner.email, "client@example.com", "nobody@example.com"]
    values = [str(i) for i in ids] + emails + [
        "USD", "EUR", "JPY", "https://acme.example/landing", "http://127.0.0.1/pb?c={click_id}", "acme.example",
        "approved", "pending", "paused", "active", "public", "approval", "invite_only", "affiliate", "influencer",
        "bank", "paypal", "last_click", "linear", "lead", "sale", "10", "12.50", "1e5", "0x10", "-1", "0", "",
        "y", "on", "true", "false", "2024-01-01", "DE89370400440532013000", "DE00000000000000000000",
        "COBADEFFXXX", "Spring10", "+14155550123", "staff", "partner", "client", "Correct-Horse-Battery-9"]
    return RouteWorld(users=users, keys=keys, key_ids=key_ids, partner_id=partner.id, rules=post_rules(app),
                      ids=ids, field_names=sorted(set(form_field_names() + API_KEYS)), field_values=values)


def restore_access(w: RouteWorld) -> None:
    """Undo what earlier examples may have done to the fuzzing users: every user active, the
    world's API keys unrevoked, the partner approved."""
    db.session.execute(update(User).values(active=True))
    db.session.execute(update(ApiKey).where(ApiKey.id.in_(w.key_ids)).values(revoked_at=None))
    db.session.execute(update(Partner).where(Partner.id == w.partner_id).values(status="approved"))
    db.session.commit()


def act_as(http, w: RouteWorld, who: str, how: str) -> dict:
    """Sign ``http`` (a Flask test client) in as ``who``'s user with its current session token
    (``how``: ``cookie``, ``key`` (API key only), ``both``, ``junk_key`` (cookie and a key that
    does not exist)), or out for the stranger. Returns the request headers to send."""
    user_id = w.users.get(who)
    with http.session_transaction() as sess:
        sess.clear()
        if user_id is not None and how != "key":
            token = db.session.scalar(select(User.session_token).where(User.id == user_id))
            sess["_user_id"] = f"{user_id}:{token}"
            sess["_fresh"] = True
    db.session.rollback()
    if how == "junk_key" or (user_id is None and how != "cookie"):
        return {"Authorization": "Bearer pn_" + "0" * 40}
    if user_id is not None and how in ("key", "both"):
        return {"Authorization": f"Bearer {w.keys[who]}"}
    return {}
