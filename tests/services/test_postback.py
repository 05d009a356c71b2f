"""The postback endpoint end to end through the Flask test client, on SQLite and PostgreSQL
(CONTRACT §3): every answer code, the order of the checks, GET / form POST / JSON POST, status
changes, the coupon and number paths, each business-rule rejection, and the postback log."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from werkzeug.datastructures import MultiDict

from partnernet import clock
from partnernet.clock import utcnow
from partnernet.extensions import db
from partnernet.models import Campaign, Conversion, PostbackLog
from partnernet.postbacks import params as P
from tests.factories import make_campaign, make_client, make_link, make_partner

NUMBER = "+14155550123"


@dataclass
class World:
    adv: object
    camp: object
    partner: object
    link: object
    key: str
    secret: str


@pytest.fixture
def world(app):
    adv = make_client(currency="USD")
    camp = make_campaign(adv, default_event="lead", events=[
        {"key": "lead", "client_fee_minor": 1250, "payout_minor": 900, "one_per_click": True},
        {"key": "sale", "client_fee_percent": "10", "payout_percent": "50", "min_amount_minor": 500},
        {"key": "call", "client_fee_minor": 300, "payout_percent": "70", "min_duration_s": 180},
        {"key": "install", "client_fee_minor": 450, "payout_minor": 300},
        {"key": "click", "client_fee_minor": 12, "payout_minor": 8},
    ])
    partner = make_partner()
    link = make_link(partner, camp, coupon_code="Spring10", tracking_number=NUMBER)
    return World(adv, camp, partner, link, adv.postback_key, adv.postback_secret)


def click_id(app, link, *, age_s: int = 0, bot: bool = False, fallback: bool = False) -> str:
    ts = int(utcnow().timestamp()) - age_s
    return app.extensions["partnernet_click_signer"].make(link.id, ts, bot=bot, fallback=fallback)


def send(http, params, how: str = "GET", *, query=None, remote_addr: str | None = None):
    """Send a postback. ``params``: dict or list of pairs; ``how``: GET, FORM or JSON.
    Returns ``(status, body)``."""
    pairs = list(params.items()) if isinstance(params, dict) else list(params)
    env = {"REMOTE_ADDR": remote_addr} if remote_addr else {}
    if how == "GET":
        resp = http.get("/postback", query_string=MultiDict(pairs), environ_base=env)
    elif how == "FORM":
        resp = http.post("/postback", data=MultiDict(pairs), query_string=MultiDict(query or []), environ_base=env)
    elif how == "JSON":
        resp = http.post("/postback", json=dict(pairs), query_string=MultiDict(query or []), environ_base=env)
    else:  # pragma: no cover
        raise ValueError(how)
    assert resp.is_json, resp.data
    assert resp.headers["Cache-Control"] == "no-store"
    return resp.status_code, resp.get_json()


def signed(w: World, params: dict, *, ts: int | None = None, secret: str | None = None) -> list:
    pairs = [("key", w.key), ("ts", str(ts if ts is not None else int(time.time()))), *params.items()]
    return pairs + [("sig", P.sign(secret or w.secret, pairs))]


def conversions():
    return db.session.scalars(select(Conversion).order_by(Conversion.id)).all()


def last_log() -> PostbackLog:
    return db.session.scalar(select(PostbackLog).order_by(PostbackLog.id.desc()).limit(1))


def refused(status_body, status, code):
    st, body = status_body
    assert (st, body.get("error")) == (status, code), body
    assert body["ok"] is False and body["message"]


# --- created, three ways ---------------------------------------------------------------------

@pytest.mark.parametrize("how", ["GET", "FORM", "JSON"])
def test_created_by_get_form_and_json(app, client, world, how):
    cid = click_id(app, world.link)
    st, body = send(client, {"key": world.key, "click_id": cid, "txn_id": "ORD-1"}, how)
    assert st == 201
    assert body == {"ok": True, "conversion_id": body["conversion_id"], "status": "pending", "duplicate": False}
    assert isinstance(body["conversion_id"], str)
    (conv,) = conversions()
    assert str(conv.id) == body["conversion_id"]
    assert (conv.event_key, conv.status, conv.reason, conv.txn_id, conv.click_id) == ("lead", "pending", None,
                                                                                       "ORD-1", cid)
    assert (conv.link_id, conv.partner_id, conv.client_fee_minor, conv.currency) == (world.link.id,
                                                                                    world.partner.id, 1250, "USD")
    assert conv.click_at is not None
    log = last_log()
    assert (log.method, log.http_status, log.outcome, log.conversion_id) == (
        "GET" if how == "GET" else "POST", 201, "created", conv.id)
    assert (log.client_id, log.campaign_id) == (world.adv.id, world.camp.id)
    assert log.params["click_id"] == cid and log.remote_ip == "127.0.0.1"
    assert db.session.get(Campaign, world.camp.id).spent_minor == 1250


def test_approved_on_first_postback_and_amount_fee(app, client, world):
    cid = click_id(app, world.link)
    st, body = send(client, {"key": world.key, "click_id": cid, "event": "sale", "amount": "129.90",
                             "currency": "USD", "status": "approved", "txn_id": "S1"})
    assert (st, body["status"]) == (201, "approved")
    (conv,) = conversions()
    assert (conv.amount_minor, conv.client_fee_minor, conv.status, conv.approved_by) == (12990, 1299, "approved",
                                                                                       "postback")


@pytest.mark.parametrize("how", ["FORM", "JSON"])
def test_post_query_and_body_are_one_set(app, client, world, how):
    cid = click_id(app, world.link)
    st, _ = send(client, {"click_id": cid}, how, query=[("key", world.key)])
    assert st == 201
    refused(send(client, {"key": world.key, "click_id": cid}, how, query=[("key", world.key)]),
            400, "duplicate_parameter")
    refused(send(client, {"key": world.key, "click_id": cid, "txn_id": "a"}, how, query=[("txn_id", "a")]),
            400, "duplicate_parameter")


def test_repeated_query_parameter_is_duplicate(app, client, world):
    cid = click_id(app, world.link)
    refused(send(client, [("key", world.key), ("click_id", cid), ("event", "lead"), ("event", "lead")]),
            400, "duplicate_parameter")
    refused(send(client, [("key", world.key), ("click_id", cid), ("click_id", cid)], "FORM"),
            400, "duplicate_parameter")
    assert conversions() == []


def test_json_body_values_must_be_strings(app, client, world):
    cid = click_id(app, world.link)
    resp = client.post("/postback", json={"key": world.key, "click_id": cid, "amount": 12.5, "event": "sale"})
    assert (resp.status_code, resp.get_json()["error"]) == (400, "bad_json")
    resp = client.post("/postback", json={"key": "nope", "click_id": cid, "amount": 12.5})
    assert (resp.status_code, resp.get_json()["error"]) == (401, "unauthorized")  # 401 first
    for body in (b'{"key": "x", ', b"[1, 2]", b'"key"'):
        resp = client.post("/postback", data=body, content_type="application/json")
        assert (resp.status_code, resp.get_json()["error"]) == (400, "bad_json"), body
    assert conversions() == []
    assert last_log().outcome == "bad_json"


def test_json_without_json_content_type_and_form_without_content_type(app, client, world):
    cid = click_id(app, world.link)
    resp = client.post("/postback", data=json.dumps({"key": world.key, "click_id": cid, "txn_id": "A"}),
                       content_type="text/plain")
    assert resp.status_code == 201
    resp = client.post("/postback", data=f"key={world.key}&click_id={cid}&txn_id=B&event=install", content_type="")
    assert resp.status_code == 201, resp.get_json()


# --- 401 ---------------------------------------------------------------------------------------

def test_unknown_or_missing_key(app, client, world):
    cid = click_id(app, world.link)
    refused(send(client, {"key": "pk_nope", "click_id": cid}), 401, "unauthorized")
    refused(send(client, {"click_id": cid}), 401, "unauthorized")
    refused(send(client, {"key": "", "click_id": cid}), 401, "unauthorized")
    refused(send(client, [("key", world.key), ("key", "other"), ("click_id", cid)]), 401, "unauthorized")
    log = last_log()
    assert (log.http_status, log.outcome, log.client_id) == (401, "unauthorized", None)
    assert conversions() == []


@pytest.mark.parametrize("how", ["GET", "FORM", "JSON"])
def test_signed_postback_with_awkward_values(app, client, world, how):
    cid = click_id(app, world.link)
    pairs = signed(world, {"click_id": cid, "txn_id": "Ord 1&2+3=Grüße/東京", "event": "sale", "amount": "19.90",
                           "sub1": "a b%20c"})
    st, body = send(client, pairs, how)
    assert st == 201, body
    assert conversions()[0].txn_id == "Ord 1&2+3=Grüße/東京"
    logged = last_log().params["sig"]
    assert logged.endswith("…") and len(logged) < 16


def test_signature_hex_in_upper_case(app, client, world):
    pairs = signed(world, {"click_id": click_id(app, world.link)})
    pairs[-1] = ("sig", pairs[-1][1].upper())
    assert send(client, pairs)[0] == 201


def test_bad_signatures(app, client, world):
    cid = click_id(app, world.link)
    now = int(time.time())
    refused(send(client, signed(world, {"click_id": cid}, secret="wrong")), 401, "unauthorized")
    refused(send(client, signed(world, {"click_id": cid}, ts=now - 3600)), 401, "unauthorized")  # stale
    refused(send(client, signed(world, {"click_id": cid}, ts=now + 3600)), 401, "unauthorized")  # future
    tampered = signed(world, {"click_id": cid, "txn_id": "A"})
    tampered[3] = ("txn_id", "B")
    refused(send(client, tampered), 401, "unauthorized")
    # sig without ts
    no_ts = [("key", world.key), ("click_id", cid)]
    refused(send(client, no_ts + [("sig", P.sign(world.secret, no_ts))]), 401, "unauthorized")
    # a stale ts without sig is refused too
    refused(send(client, {"key": world.key, "click_id": cid, "ts": str(now - 3600)}), 401, "unauthorized")
    assert conversions() == []
    # within 300 s passes (clock frozen: no timing in the assertion)
    clock.set_now(datetime.fromtimestamp(now, UTC))
    assert send(client, signed(world, {"click_id": cid}, ts=now - 300))[0] == 201
    refused(send(client, signed(world, {"click_id": cid, "txn_id": "T"}, ts=now - 301)), 401, "unauthorized")


def test_require_signature(app, client, world):
    world.adv.require_signature = True
    db.session.commit()
    cid = click_id(app, world.link)
    refused(send(client, {"key": world.key, "click_id": cid}), 401, "unauthorized")
    refused(send(client, {"key": world.key, "click_id": cid, "sig": ""}), 401, "unauthorized")
    assert send(client, signed(world, {"click_id": cid}))[0] == 201


def test_ip_allowlist(app, client, world):
    world.adv.ip_allowlist = "203.0.113.7, 198.51.100.0/24"
    db.session.commit()
    cid = click_id(app, world.link)
    refused(send(client, {"key": world.key, "click_id": cid}, remote_addr="192.0.2.1"), 401, "unauthorized")
    assert last_log().remote_ip == "192.0.2.1"
    assert send(client, {"key": world.key, "click_id": cid}, remote_addr="198.51.100.42")[0] == 201


# --- 400 without lookup --------------------------------------------------------------------------

@pytest.mark.parametrize("extra,code", [
    ({"status": "refunded"}, "bad_status"),
    ({"amount": "0"}, "bad_amount"),
    ({"amount": "-5.00"}, "bad_amount"),
    ({"amount": "1,299.00"}, "bad_amount"),
    ({"amount": "abc"}, "bad_amount"),
    ({"duration": "3.5"}, "bad_duration"),
    ({"currency": "XXY"}, "unknown_currency"),
    ({"sub2": "{aff_sub2}"}, "unreplaced_macro"),
])
def test_no_lookup_refusals(app, client, world, extra, code):
    refused(send(client, {"key": world.key, "click_id": click_id(app, world.link), **extra}), 400, code)
    log = last_log()
    assert (log.http_status, log.outcome, log.client_id, log.campaign_id) == (400, code, world.adv.id, None)
    assert conversions() == []


def test_missing_click_id(app, client, world):
    refused(send(client, {"key": world.key, "txn_id": "A"}), 400, "missing_click_id")
    refused(send(client, {"key": world.key, "click_id": click_id(app, world.link), "coupon": "spring10",
                          "txn_id": "A"}), 400, "missing_click_id")
    refused(send(client, {"key": world.key, "coupon": "spring10", "number": NUMBER, "txn_id": "A"}),
            400, "missing_click_id")


# --- 404 -------------------------------------------------------------------------------------------

def test_unknown_click(app, client, world):
    other = make_client()
    other_camp = make_campaign(other)
    other_link = make_link(world.partner, other_camp)
    signer = app.extensions["partnernet_click_signer"]
    good = click_id(app, world.link)
    tampered = good[:-1] + ("A" if good[-1] != "A" else "B")
    for cid in ("random-string-123", tampered, signer.make(999_999, int(time.time())),
                click_id(app, other_link)):
        refused(send(client, {"key": world.key, "click_id": cid}), 404, "unknown_click")
    assert conversions() == []
    assert (last_log().campaign_id, last_log().client_id) == (None, world.adv.id)


def test_unknown_coupon_and_number(app, client, world):
    other = make_client()
    other_link = make_link(world.partner, make_campaign(other), coupon_code="THEIRS", tracking_number="+14155550999")
    assert other_link.id
    refused(send(client, {"key": world.key, "coupon": "nope", "txn_id": "A"}), 404, "unknown_coupon")
    refused(send(client, {"key": world.key, "coupon": "theirs", "txn_id": "A"}), 404, "unknown_coupon")
    refused(send(client, {"key": world.key, "number": "+14155550000", "txn_id": "A"}), 404, "unknown_number")
    refused(send(client, {"key": world.key, "number": "+14155550999", "txn_id": "A"}), 404, "unknown_number")
    refused(send(client, {"key": world.key, "number": "14155550123", "txn_id": "A"}), 404, "unknown_number")


# --- 400 with the campaign ------------------------------------------------------------------------

@pytest.mark.parametrize("extra,code", [
    ({"event": "purchase"}, "unknown_event"),
    ({"event": "click"}, "unknown_event"),
    ({"event": "impression"}, "unknown_event"),
    ({"event": "sale", "amount": "19.999"}, "bad_amount"),
    ({"event": "sale", "amount": "1000000000000.01"}, "bad_amount"),  # above money.MAX_MINOR
    ({"event": "sale", "amount": "19.99", "currency": "EUR"}, "currency_mismatch"),
    ({"event": "sale"}, "missing_amount"),
])
def test_campaign_refusals(app, client, world, extra, code):
    refused(send(client, {"key": world.key, "click_id": click_id(app, world.link), **extra}), 400, code)
    assert last_log().campaign_id == world.camp.id
    assert conversions() == []


def test_missing_txn_id_with_coupon_or_number(app, client, world):
    refused(send(client, {"key": world.key, "coupon": "SPRING10"}), 400, "missing_txn_id")
    refused(send(client, {"key": world.key, "number": NUMBER}), 400, "missing_txn_id")


def test_amount_digits_follow_the_campaign_currency(app, client, world):
    jpy = make_client(currency="JPY")
    camp = make_campaign(jpy, events=[{"key": "sale", "client_fee_percent": "10", "payout_percent": "50"}])
    link = make_link(world.partner, camp)
    refused(send(client, {"key": jpy.postback_key, "click_id": click_id(app, link), "amount": "1.5"}),
            400, "bad_amount")
    st, _ = send(client, {"key": jpy.postback_key, "click_id": click_id(app, link), "amount": "1500",
                          "currency": "JPY"})
    assert st == 201
    assert conversions()[0].client_fee_minor == 150


# --- the order of the checks ---------------------------------------------------------------------

def test_check_order(app, client, world):
    cid = click_id(app, world.link)
    # a bad key and a missing click_id: 401
    refused(send(client, {"key": "bad"}), 401, "unauthorized")
    # a bad signature and a bad status: 401
    refused(send(client, signed(world, {"click_id": cid, "status": "x"}, secret="nope")), 401, "unauthorized")
    # a macro and an unknown click: 400
    refused(send(client, {"key": world.key, "click_id": "nope", "txn_id": "{order_id}"}), 400, "unreplaced_macro")
    # an unknown click and an unknown event: 404
    refused(send(client, {"key": world.key, "click_id": "nope", "event": "purchase"}), 404, "unknown_click")
    # an unknown coupon and no txn_id: 404
    refused(send(client, {"key": world.key, "coupon": "nope"}), 404, "unknown_coupon")
    # a bad amount (no lookup) before an unknown click
    refused(send(client, {"key": world.key, "click_id": "nope", "amount": "0"}), 400, "bad_amount")
    # unknown event before a currency mismatch
    refused(send(client, {"key": world.key, "click_id": cid, "event": "x", "currency": "EUR"}), 400, "unknown_event")
    # too many decimals before a currency mismatch
    refused(send(client, {"key": world.key, "click_id": cid, "event": "sale", "amount": "1.001",
                          "currency": "EUR"}), 400, "bad_amount")
    assert conversions() == []


def test_existing_answers_before_business_rules(app, client, world):
    st, body = send(client, {"key": world.key, "coupon": "spring10", "txn_id": "T1"})
    assert (st, body["status"]) == (201, "pending")
    world.partner.status = "suspended"
    db.session.commit()
    st, body2 = send(client, {"key": world.key, "coupon": "spring10", "txn_id": "T1", "status": "approved"})
    assert (st, body2) == (200, {"ok": True, "conversion_id": body["conversion_id"], "status": "approved",
                                 "duplicate": True})
    # a new txn of the suspended partner's coupon is rejected
    st, body3 = send(client, {"key": world.key, "coupon": "spring10", "txn_id": "T2"})
    assert (st, body3["reason"]) == (200, "partner_suspended")


# --- 200 existing: status changes ------------------------------------------------------------------

@pytest.mark.parametrize("first,then,now", [
    ("pending", "approved", "approved"),
    ("pending", "rejected", "rejected"),
    ("pending", "reversed", "reversed"),
    ("approved", "reversed", "reversed"),
    ("approved", "pending", "approved"),
    ("approved", "rejected", "approved"),
    ("pending", "pending", "pending"),
    ("approved", "approved", "approved"),
])
def test_status_changes_by_postback(app, client, world, first, then, now):
    cid = click_id(app, world.link)
    st, body = send(client, {"key": world.key, "click_id": cid, "status": first})
    assert st == 201
    st, again = send(client, {"key": world.key, "click_id": cid, "status": then}, "FORM")
    assert (st, again) == (200, {"ok": True, "conversion_id": body["conversion_id"], "status": now,
                                 "duplicate": True})
    (conv,) = conversions()
    assert conv.status == now
    if now == "rejected":
        assert conv.reason == "client_rejected"
    spent = db.session.get(Campaign, world.camp.id).spent_minor
    assert spent == (1250 if now in ("pending", "approved") else 0)
    log = last_log()
    assert (log.http_status, log.outcome, log.conversion_id) == (200, "existing", conv.id)


def test_reversed_repeat_is_a_duplicate(app, client, world):
    cid = click_id(app, world.link)
    send(client, {"key": world.key, "click_id": cid, "txn_id": "R"})
    assert send(client, {"key": world.key, "click_id": cid, "txn_id": "R", "status": "reversed"})[1]["status"] == \
        "reversed"
    st, body = send(client, {"key": world.key, "click_id": cid, "txn_id": "R", "status": "reversed"})
    assert (st, body["status"], body["duplicate"]) == (200, "reversed", True)
    st, body = send(client, {"key": world.key, "click_id": cid, "txn_id": "R", "status": "approved"})
    assert (st, body["status"]) == (200, "reversed")
    assert db.session.get(Campaign, world.camp.id).spent_minor == 0


def test_dedup_key_txn_id_else_click(app, client, world):
    cid = click_id(app, world.link)
    cid2 = click_id(app, world.link)
    # same txn_id from another click of the campaign: one conversion
    assert send(client, {"key": world.key, "click_id": cid, "event": "install", "txn_id": "X"})[0] == 201
    assert send(client, {"key": world.key, "click_id": cid2, "event": "install", "txn_id": "X"})[0] == 200
    # the same txn_id for another event: its own conversion
    assert send(client, {"key": world.key, "click_id": cid, "event": "lead", "txn_id": "X"})[0] == 201
    # without txn_id: (click, event)
    assert send(client, {"key": world.key, "click_id": cid2, "event": "install"})[0] == 201
    assert send(client, {"key": world.key, "click_id": cid2, "event": "install"})[0] == 200
    assert len(conversions()) == 3


# --- coupon and number paths -------------------------------------------------------------------------

def test_coupon_is_case_insensitive(app, client, world):
    st, body = send(client, {"key": world.key, "coupon": "sPrInG10", "txn_id": "C1", "event": "sale",
                             "amount": "50.00"})
    assert st == 201
    (conv,) = conversions()
    assert (conv.link_id, conv.partner_id, conv.click_id, conv.click_at) == (world.link.id, world.partner.id,
                                                                            None, None)
    assert send(client, {"key": world.key, "coupon": "SPRING10", "txn_id": "C1", "event": "sale",
                         "amount": "50.00"})[1]["duplicate"] is True


def test_number_path(app, client, world):
    st, body = send(client, {"key": world.key, "number": NUMBER, "txn_id": "CALL-1", "event": "call",
                             "duration": "180"})
    assert (st, body["status"]) == (201, "pending")
    assert conversions()[0].duration_s == 180
    # an unencoded + in a query string arrives as a space: still the number
    resp = client.get(f"/postback?key={world.key}&number={NUMBER}&txn_id=CALL-2&event=call&duration=200")
    assert resp.status_code == 201, resp.get_json()


# --- 200 rejected: each business rule -----------------------------------------------------------------

def _rejected(result, reason):
    st, body = result
    assert (st, body["status"], body.get("reason"), body["duplicate"]) == (200, "rejected", reason, False), body
    conv = db.session.get(Conversion, int(body["conversion_id"]))
    assert (conv.status, conv.reason) == ("rejected", reason)
    log = last_log()
    assert (log.http_status, log.outcome, log.conversion_id) == (200, "rejected", conv.id)


def test_bot_and_fallback_clicks(app, client, world):
    _rejected(send(client, {"key": world.key, "click_id": click_id(app, world.link, bot=True)}), "bot_click")
    _rejected(send(client, {"key": world.key, "click_id": click_id(app, world.link, fallback=True)}),
              "fallback_click")
    _rejected(send(client, {"key": world.key, "click_id": click_id(app, world.link, bot=True, fallback=True)}),
              "bot_click")
    assert db.session.get(Campaign, world.camp.id).spent_minor == 0


def test_partner_suspended(app, client, world):
    cid = click_id(app, world.link)  # a click made before the suspension
    world.partner.status = "suspended"
    db.session.commit()
    _rejected(send(client, {"key": world.key, "coupon": "spring10", "txn_id": "C"}), "partner_suspended")
    _rejected(send(client, {"key": world.key, "number": NUMBER, "txn_id": "N", "event": "call",
                            "duration": "500"}), "partner_suspended")
    # v2 (CONTRACT §3 rule 6, clicks included): a click made before the suspension, posted after it
    _rejected(send(client, {"key": world.key, "click_id": cid}), "partner_suspended")
    assert db.session.get(Campaign, world.camp.id).spent_minor == 0


def test_outside_window(app, client, world):
    day = 86400
    _rejected(send(client, {"key": world.key, "click_id": click_id(app, world.link, age_s=30 * day + 60)}),
              "outside_window")
    assert send(client, {"key": world.key, "click_id": click_id(app, world.link, age_s=29 * day)})[0] == 201


def test_duplicate_click(app, client, world):
    cid = click_id(app, world.link)
    assert send(client, {"key": world.key, "click_id": cid, "txn_id": "L1"})[0] == 201
    _rejected(send(client, {"key": world.key, "click_id": cid, "txn_id": "L2"}), "duplicate_click")
    # events without one_per_click are not limited
    assert send(client, {"key": world.key, "click_id": cid, "event": "install", "txn_id": "I1"})[0] == 201
    assert send(client, {"key": world.key, "click_id": cid, "event": "install", "txn_id": "I2"})[0] == 201
    # a rejected conversion does not use the click up
    cid2 = click_id(app, world.link)
    assert send(client, {"key": world.key, "click_id": cid2, "txn_id": "L3", "status": "rejected"})[1]["reason"] \
        == "client_rejected"
    assert send(client, {"key": world.key, "click_id": cid2, "txn_id": "L4"})[0] == 201


def test_below_min_duration(app, client, world):
    base = {"key": world.key, "click_id": click_id(app, world.link), "event": "call"}
    _rejected(send(client, {**base, "txn_id": "A", "duration": "179"}), "below_min_duration")
    _rejected(send(client, {**base, "txn_id": "B"}), "below_min_duration")  # no duration
    assert send(client, {**base, "txn_id": "C", "duration": "180"})[0] == 201  # equal qualifies


def test_below_min_amount(app, client, world):
    base = {"key": world.key, "click_id": click_id(app, world.link), "event": "sale"}
    _rejected(send(client, {**base, "txn_id": "A", "amount": "4.99"}), "below_min_amount")
    assert send(client, {**base, "txn_id": "B", "amount": "5"})[0] == 201  # equal qualifies
    assert conversions()[-1].client_fee_minor == 50


def test_rule_precedence(app, client, world):
    # bot before fallback before window before duration
    _rejected(send(client, {"key": world.key, "event": "call", "duration": "1",
                            "click_id": click_id(app, world.link, bot=True, age_s=90 * 86400)}), "bot_click")
    _rejected(send(client, {"key": world.key, "event": "call", "duration": "1",
                            "click_id": click_id(app, world.link, fallback=True, age_s=90 * 86400)}),
              "fallback_click")
    _rejected(send(client, {"key": world.key, "event": "call", "duration": "1",
                            "click_id": click_id(app, world.link, age_s=90 * 86400)}), "outside_window")
    # a business rule before client_rejected
    _rejected(send(client, {"key": world.key, "event": "call", "duration": "1", "status": "rejected",
                            "click_id": click_id(app, world.link)}), "below_min_duration")


def test_client_rejected_first_postback(app, client, world):
    _rejected(send(client, {"key": world.key, "click_id": click_id(app, world.link), "status": "rejected"}),
              "client_rejected")
    _rejected(send(client, {"key": world.key, "click_id": click_id(app, world.link), "status": "reversed"}),
              "client_rejected")
    assert db.session.get(Campaign, world.camp.id).spent_minor == 0


def test_over_budget_with_a_budget_of_exactly_one_conversion(app, client, world):
    world.camp.budget_minor = 1250
    db.session.commit()
    assert send(client, {"key": world.key, "click_id": click_id(app, world.link)})[0] == 201
    assert db.session.get(Campaign, world.camp.id).spent_minor == 1250
    _rejected(send(client, {"key": world.key, "click_id": click_id(app, world.link)}), "over_budget")
    _rejected(send(client, {"key": world.key, "coupon": "spring10", "txn_id": "Z", "event": "install"}),
              "over_budget")
    assert db.session.get(Campaign, world.camp.id).spent_minor == 1250
    assert [c.status for c in conversions()] == ["pending", "rejected", "rejected"]


def test_paused_campaign_still_records_postbacks(app, client, world):
    world.camp.status = "paused"
    db.session.commit()
    assert send(client, {"key": world.key, "click_id": click_id(app, world.link)})[0] == 201
    assert send(client, {"key": world.key, "coupon": "spring10", "txn_id": "P"})[0] == 201


# --- the log, and failures ---------------------------------------------------------------------------

def test_every_postback_is_logged(app, client, world):
    cid = click_id(app, world.link)
    send(client, {"key": "bad", "click_id": cid})
    send(client, {"key": world.key})
    send(client, {"key": world.key, "click_id": "nope"})
    send(client, {"key": world.key, "click_id": cid})
    send(client, {"key": world.key, "click_id": cid})
    rows = db.session.scalars(select(PostbackLog).order_by(PostbackLog.id)).all()
    assert [(r.http_status, r.outcome) for r in rows] == [
        (401, "unauthorized"), (400, "missing_click_id"), (404, "unknown_click"), (201, "created"),
        (200, "existing")]
    assert rows[0].client_id is None and rows[1].client_id == world.adv.id
    assert rows[3].conversion_id == rows[4].conversion_id is not None
    assert all(r.message for r in rows)


def test_nul_characters_never_fail(app, client, world):
    """NUL cannot be stored: 401 in key, else 400 bad_encoding (step 2, before any lookup)."""
    cid = click_id(app, world.link)
    refused(send(client, {"key": world.key + "\x00", "click_id": cid}), 401, "unauthorized")
    refused(send(client, {"key": world.key, "coupon": "a\x00b", "txn_id": "T"}), 400, "bad_encoding")
    refused(send(client, {"key": world.key, "click_id": cid, "txn_id": "a\x00b"}), 400, "bad_encoding")
    refused(send(client, {"key": world.key, "click_id": cid, "sub1": "x\x00y"}), 400, "bad_encoding")
    assert last_log().params["sub1"] == "x\ufffdy"
    assert send(client, {"key": world.key, "click_id": cid, "sub1": "xy"})[0] == 201


def test_database_failure_answers_503_and_is_logged(app, client, world, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from partnernet.postbacks import services

    def broken(**_kw):
        db.session.add(Conversion(campaign_id=world.camp.id, event_key="lead", link_id=world.link.id,
                                  partner_id=world.partner.id, dedup_key="c:x", currency="USD"))
        db.session.flush()
        raise OperationalError("INSERT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(services, "record_conversion", broken)
    st, body = send(client, {"key": world.key, "click_id": click_id(app, world.link)})
    assert (st, body["ok"], body["error"]) == (503, False, "temporarily_unavailable")
    assert db.session.scalar(select(func.count()).select_from(Conversion)) == 0
    log = last_log()
    assert (log.http_status, log.outcome, log.conversion_id, log.client_id) == (503, "temporarily_unavailable", None,
                                                                                world.adv.id)


def test_other_methods_are_not_allowed(app, client, world):
    resp = client.put("/postback", query_string={"key": world.key})
    assert (resp.status_code, resp.is_json) == (405, True)
