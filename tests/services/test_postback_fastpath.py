"""The postback's fast path on PostgreSQL (partnernet.postbacks.fastpath) gives the same answers
and writes the same rows as the plain path it stands for (CONTRACT §3): one day of mixed traffic
is replayed twice on an emptied database with the clock frozen, once with
``PARTNERNET_POSTBACK_FASTPATH`` off and once on, and everything is compared: every answer, every
conversion (terms, flags, hold period, status, reason), every postback log row, the campaigns'
spend and the customer bindings. Also: which statements each way sends, the terms read from
rows against ``recording_terms``, and concurrent twins."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import event, insert, select, text, update

from partnernet import clock
from partnernet.commission import services as commission
from partnernet.extensions import db
from partnernet.ledger.payout_rules import _TERMS, month_bounds, recording_terms
from partnernet.models import Campaign, Click, User
from partnernet.postbacks import fastpath, lookups
from partnernet.ledger.payout_rules import terms_from_rows
from tests.conftest import empty_tables
from tests.factories import make_campaign, make_client, make_link, make_partner

T0 = datetime(2031, 3, 14, 9, 30, tzinfo=UTC)
SETTING = fastpath.SETTING


def _world():
    """Two campaigns of one client: ``shop`` (sale fixed fee, order percent of sale with a
    minimum, lead one-per-click, call with a minimum duration; a budget that a few sales reach)
    and ``capped`` (a daily cap); partners with a tier, an override, a bonus, recruiters, one
    suspended, one whose user signs in from a click's IP; clicks with IPs (ip_flood)."""
    clock.set_now(T0)
    adv = make_client()
    shop = make_campaign(adv, budget_minor=9500, hold_days=7, events=[
        {"key": "sale", "client_fee_minor": 1000, "payout_percent": "50"},
        {"key": "order", "client_fee_percent": "10", "payout_percent": "40", "min_amount_minor": 500},
        {"key": "lead", "client_fee_minor": 300, "payout_minor": 100, "one_per_click": True},
        {"key": "call", "client_fee_minor": 700, "payout_minor": 350, "min_duration_s": 60},
    ])
    capped = make_campaign(adv, events=[{"key": "sale", "client_fee_minor": 1000, "payout_minor": 500}])
    db.session.execute(update(Campaign).where(Campaign.id == capped.id).values(daily_cap_minor=2500))
    db.session.commit()
    recruiter2 = make_partner(name="Recruiter two")
    recruiter = make_partner(name="Recruiter", recruiter=recruiter2, recruiter_percent="5")
    commission.set_recruiter(recruiter.id, recruiter_id=recruiter2.id, recruiter_percent="5", tier2_percent="2")
    plain, gold, recruited, suspended, insider = (make_partner(name=n) for n in
                                                  ("Plain", "Gold", "Recruited", "Suspended", "Insider"))
    tier = commission.create_tier("Gold", payout_percent="60")
    commission.set_partner_tier(gold.id, tier.id)
    commission.set_payout_override(shop.id, gold.id, event_key="call", payout="4.00")
    commission.set_performance_bonus(shop.id, threshold=1, bonus_points="3")
    commission.set_recruiter(recruited.id, recruiter_id=recruiter.id, recruiter_percent="10")
    user = User(email="insider@example.com", password_hash="x", role="partner", partner_id=insider.id,
                last_login_ip="203.0.113.9")
    db.session.add(user)
    db.session.commit()
    links = {name: make_link(p, shop, coupon_code=f"{name}10", tracking_number=f"+1415555{i:04d}")
             for i, (name, p) in enumerate((("plain", plain), ("gold", gold), ("recruited", recruited),
                                            ("suspended", suspended), ("insider", insider)))}
    links["capped"] = make_link(plain, capped)
    ids = {name: link.id for name, link in links.items()}
    suspended.status = "suspended"
    db.session.commit()
    return adv.postback_key, ids, {"shop": shop.id, "capped": capped.id}


def _clicks(app, ids: dict, signed: dict) -> dict:
    """Signed click IDs (some bot, fallback or too old) and their rows, with IPs: ``flood`` shares
    one IP with 25 other clicks, ``insider`` comes from the partner user's sign-in IP. ``signed``:
    the click IDs made by an earlier replay (they hold random bits), filled in when empty."""
    signer = app.extensions["partnernet_click_signer"]
    ts = int(T0.timestamp())
    made = {}
    for name, link, age, bot, fallback in (
            ("c1", "plain", 600, False, False), ("c2", "plain", 5, False, False), ("c3", "gold", 900, False, False),
            ("c4", "recruited", 1200, False, False), ("c5", "suspended", 300, False, False),
            ("bot", "plain", 100, True, False), ("fb", "plain", 100, False, True),
            ("old", "plain", 40 * 86400, False, False), ("flood", "gold", 700, False, False),
            ("insider", "insider", 800, False, False), ("lead1", "plain", 400, False, False),
            ("k1", "capped", 500, False, False), ("k2", "capped", 500, False, False),
            ("k3", "capped", 500, False, False)):
        if name not in signed:
            signed[name] = signer.make(ids[link], ts - age, bot=bot, fallback=fallback)
        made[name] = (ids[link], signed[name], age)
    campaigns = dict(db.session.execute(select(text("id"), text("campaign_id")).select_from(text("links"))).all())
    partners = dict(db.session.execute(select(text("id"), text("partner_id")).select_from(text("links"))).all())
    rows = []
    for name, (link_id, cid, age) in made.items():
        ip = {"flood": "198.51.100.77", "insider": "203.0.113.9"}.get(name, f"192.0.2.{len(rows) + 1}")
        rows.append({"click_id": cid, "link_id": link_id, "campaign_id": campaigns[link_id],
                     "partner_id": partners[link_id], "created_at": T0 - timedelta(seconds=age), "ip": ip,
                     "visitor": f"v-{name}", "method": "GET", "is_bot": False, "is_unique": True})
    gold = made["flood"][0]
    for n in range(25):
        rows.append({"click_id": f"flood-{n}", "link_id": gold, "campaign_id": campaigns[gold],
                     "partner_id": partners[gold], "created_at": T0 - timedelta(seconds=60 + n), "ip": "198.51.100.77",
                     "visitor": f"v-flood-{n}", "method": "GET", "is_bot": False, "is_unique": True})
    db.session.execute(insert(Click.__table__), rows)
    db.session.commit()
    return {name: cid for name, (_l, cid, _a) in made.items()}


def _traffic(key: str, c: dict) -> list[dict]:
    """One day's postbacks, in order: new, repeats, status changes, every rejection, terms, flags."""
    k = {"key": key}
    return [
        {**k, "click_id": c["c1"], "txn_id": "A1"},                                   # 201 pending (sale)
        {**k, "click_id": c["c1"], "txn_id": "A1"},                                   # 200 repeat
        {**k, "click_id": c["c1"], "txn_id": "A1", "status": "pending"},              # 200 repeat
        {**k, "click_id": c["c1"], "txn_id": "A1", "status": "approved"},             # pending -> approved
        {**k, "click_id": c["c1"], "txn_id": "A1", "status": "pending"},              # unchanged after approved
        {**k, "click_id": c["c1"], "txn_id": "A1", "status": "approved"},             # approved again: unchanged
        {**k, "click_id": c["c2"], "txn_id": "A2", "status": "approved"},             # 201 approved (fast_conversion)
        {**k, "click_id": c["c2"], "txn_id": "A2", "status": "reversed"},             # approved -> reversed
        {**k, "click_id": c["c2"], "txn_id": "A2", "status": "reversed"},             # unchanged
        {**k, "click_id": c["c1"]},                                                   # no txn_id: dedup by click
        {**k, "click_id": c["c1"]},                                                   # repeat of it
        {**k, "click_id": c["c3"], "txn_id": "G1", "event": "call", "duration": "61"},  # override 4.00
        {**k, "click_id": c["c3"], "txn_id": "G2", "event": "call", "duration": "59"},  # below_min_duration
        {**k, "click_id": c["c3"], "txn_id": "G3", "event": "order", "amount": "129.90"},  # tier, bonus
        {**k, "click_id": c["c3"], "txn_id": "G4", "event": "order", "amount": "4.99"},   # below_min_amount
        {**k, "click_id": c["c4"], "txn_id": "R1", "event": "order", "amount": "80.00", "currency": "USD"},
        {**k, "click_id": c["c5"], "txn_id": "S1"},                                   # partner_suspended
        {**k, "click_id": c["bot"], "txn_id": "B1"},                                  # bot_click
        {**k, "click_id": c["fb"], "txn_id": "F1"},                                   # fallback_click
        {**k, "click_id": c["old"], "txn_id": "O1"},                                  # outside_window
        {**k, "click_id": c["flood"], "txn_id": "FL1"},                               # ip_flood
        {**k, "click_id": c["insider"], "txn_id": "IN1"},                             # self_referral
        {**k, "click_id": c["lead1"], "event": "lead"},                               # one_per_click, first
        {**k, "click_id": c["lead1"], "event": "lead", "txn_id": "LD2"},              # duplicate_click
        {**k, "click_id": c["c1"], "txn_id": "X1", "status": "rejected"},             # client_rejected
        {**k, "click_id": c["c1"], "txn_id": "X2", "status": "reversed"},             # client_rejected
        {**k, "click_id": c["c1"], "txn_id": "X1", "status": "rejected"},             # repeat of a rejection
        {**k, "coupon": "PLAIN10", "txn_id": "CP1"},                                  # coupon
        {**k, "number": "+14155550001", "txn_id": "NB1", "event": "call", "duration": "300"},  # number
        {**k, "click_id": c["c1"], "txn_id": "CU1", "customer_id": "cust-9"},         # customer (plain way)
        {**k, "customer_id": "cust-9", "txn_id": "CU2"},                              # customer only: 400
        {**k, "click_id": c["c3"], "txn_id": "G3", "event": "order", "amount": "100.00", "status": "adjusted"},
        {**k, "click_id": c["k1"], "txn_id": "K1"},                                   # capped campaign
        {**k, "click_id": c["k2"], "txn_id": "K2"},
        {**k, "click_id": c["k3"], "txn_id": "K3"},                                   # over_daily_cap
        *({**k, "click_id": c["c1"], "txn_id": f"BUD{n}"} for n in range(5)),        # reaches the budget
        {**k, "click_id": c["c1"], "txn_id": "BUD0"},                                 # repeat after the budget
        {**k, "click_id": "not-a-click", "txn_id": "N1"},                             # 404
        {**k, "click_id": c["c1"], "txn_id": "E1", "event": "nope"},                  # 400 unknown_event
    ]


def _replay(app, fast: bool, signed: dict) -> tuple[list, dict]:
    """Empty every table, build the world, replay the traffic with the fast path on or off;
    returns the answers and a snapshot of every row the postbacks wrote."""
    db.session.remove()  # no read of the last replay may hold a table lock against the TRUNCATE
    empty_tables(app)
    lookups.clear_cache(app)
    app.config[SETTING] = fast
    try:
        key, ids, camps = _world()
        c = _clicks(app, ids, signed)
        http = app.test_client()
        answers = []
        for n, params in enumerate(_traffic(key, c)):
            clock.set_now(T0 + timedelta(seconds=n))
            resp = http.get("/postback", query_string=params)
            answers.append((resp.status_code, resp.get_json(), resp.headers.get("Cache-Control")))
    finally:
        app.config.pop(SETTING, None)
        clock.set_now(None)
    db.session.expire_all()
    snap = {}
    for table, extra in (("conversions", ", flags::text AS flags_text, flag_evidence::text AS evidence_text"),
                         ("postback_log", ", params::text AS params_text"), ("campaigns", ""),
                         ("customer_bindings", "")):
        rows = db.session.execute(text(f"SELECT *{extra} FROM {table} ORDER BY id")).mappings().all()
        snap[table] = [dict(r) for r in rows]
    for row in snap["postback_log"]:  # the client's key and the names hold a factory counter
        row["params_text"] = row["params_text"].replace(key, "<key>")
        row["params"] = {k: ("<key>" if k == "key" else v) for k, v in row["params"].items()}
    for row in snap["campaigns"]:
        row.pop("name")
    db.session.commit()
    return answers, snap


def test_a_day_of_traffic_gives_the_same_answers_and_rows_both_ways(pg_app):
    signed: dict = {}
    plain_answers, plain_rows = _replay(pg_app, fast=False, signed=signed)
    fast_answers, fast_rows = _replay(pg_app, fast=True, signed=signed)
    assert fast_answers == plain_answers
    for table in plain_rows:
        assert len(fast_rows[table]) == len(plain_rows[table]), table
        for fast_row, plain_row in zip(fast_rows[table], plain_rows[table], strict=True):
            differ = {k: (plain_row[k], fast_row[k]) for k in plain_row if plain_row[k] != fast_row[k]}
            assert not differ, (table, plain_row["id"], differ)
    # the day covered what it should: created, repeats, every rejection kind, flags, terms
    codes = [a[0] for a in plain_answers]
    assert codes.count(201) >= 10 and codes.count(200) >= 15 and 404 in codes and 400 in codes
    reasons = {r["reason"] for r in plain_rows["conversions"]}
    assert {"bot_click", "fallback_click", "partner_suspended", "outside_window", "duplicate_click",
            "below_min_duration", "below_min_amount", "over_budget", "client_rejected",
            "over_daily_cap"} <= reasons
    flags = {f for r in plain_rows["conversions"] for f in r["flags"]}
    assert {"ip_flood", "self_referral", "fast_conversion"} <= flags
    assert {r["payout_rule"] for r in plain_rows["conversions"]} > {"event: 50%"}


def test_fast_path_sends_one_statement_per_repeat_and_two_per_new(redis_app, monkeypatch):
    monkeypatch.setitem(redis_app.config, SETTING, True)
    pg_app = redis_app  # lookups cached under the state version, jobs queued in Redis (not run here)
    lookups.clear_cache(pg_app)
    key, ids, _camps = _world()
    clock.set_now(None)
    signer = pg_app.extensions["partnernet_click_signer"]
    cid = signer.make(ids["plain"], int(datetime.now(UTC).timestamp()))
    seen, real = [], fastpath.fastdb.connection

    class Counting:
        def __init__(self, conn):
            self.conn = conn

        def execute(self, sql, *a, **kw):
            seen.append(sql.split("(", 1)[0].split()[0:2])
            return self.conn.execute(sql, *a, **kw)

    orm = []

    def on_execute(conn, cursor, statement, *a):
        orm.append(statement)

    fastpath.fastdb.connection = lambda: Counting(real())
    event.listen(db.engine, "before_cursor_execute", on_execute)
    try:
        http = pg_app.test_client()
        assert http.get("/postback", query_string={"key": key, "click_id": cid, "txn_id": "W1"}).status_code == 201
        seen.clear()
        orm.clear()
        assert http.get("/postback", query_string={"key": key, "click_id": cid, "txn_id": "W2"}).status_code == 201
        new, new_orm = len(seen), list(orm)
        seen.clear()
        orm.clear()
        assert http.get("/postback", query_string={"key": key, "click_id": cid, "txn_id": "W2"}).status_code == 200
        repeat, repeat_orm = len(seen), list(orm)
    finally:
        event.remove(db.engine, "before_cursor_execute", on_execute)
        fastpath.fastdb.connection = real
    assert (new, repeat) == (2, 1)
    assert (new_orm, repeat_orm) == ([], [])  # warm: nothing through the session at all


def test_terms_from_rows_are_what_recording_terms_reads(pg_app):
    key, ids, camps = _world()
    at = T0
    partner_of = dict(db.session.execute(select(text("id"), text("partner_id")).select_from(text("links"))).all())
    m0, m1 = month_bounds(at)
    for link in ("plain", "gold", "recruited", "suspended", "insider"):
        for event_key, fixed, percent, fee in (("sale", None, Decimal("50"), 1000), ("call", 350, None, 700),
                                               ("order", None, Decimal("40"), 1299)):
            pid = partner_of[ids[link]]
            expected = recording_terms(campaign_id=camps["shop"], partner_id=pid, event_key=event_key,
                                       payout_minor=fixed, payout_percent=percent, fee_minor=fee, at=at)
            rows = db.session.connection().execute(_TERMS, {"pid": pid, "cid": camps["shop"], "ev": event_key,
                                                            "m0": m0, "m1": m1}).all()
            got = terms_from_rows(rows, partner_id=pid, event_key=event_key, payout_minor=fixed,
                                  payout_percent=percent, fee_minor=fee)
            assert got == expected, (link, event_key)
    clock.set_now(None)


def test_concurrent_twins_record_one_conversion_and_move_the_spend_once(pg_app, monkeypatch):
    monkeypatch.setitem(pg_app.config, SETTING, True)
    key, ids, camps = _world()
    clock.set_now(None)
    signer = pg_app.extensions["partnernet_click_signer"]
    cid = signer.make(ids["plain"], int(datetime.now(UTC).timestamp()) - 60)
    answers, barrier = [], threading.Barrier(6)

    def post():
        with pg_app.app_context():
            barrier.wait()
            resp = pg_app.test_client().get("/postback", query_string={"key": key, "click_id": cid, "txn_id": "TW"})
            answers.append((resp.status_code, resp.get_json()["conversion_id"]))
            fastpath.fastdb.discard_connections()

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a[0] for a in answers) == [200] * 5 + [201]
    assert len({a[1] for a in answers}) == 1
    db.session.expire_all()
    assert db.session.get(Campaign, camps["shop"]).spent_minor == 1000
    assert db.session.scalar(text("SELECT count(*) FROM conversions")) == 1
    assert db.session.scalar(text("SELECT count(*) FROM postback_log WHERE http_status = 201")) == 1


def test_not_used_on_sqlite_or_for_uncommitted_work(app, monkeypatch):
    monkeypatch.setitem(app.config, SETTING, True)
    key, ids, _camps = _world()
    with app.test_request_context():
        usable = fastpath.usable(is_test=False, status="pending", customer_id=None, session_was_clean=True)
    assert usable is (db.engine.dialect.name == "postgresql")
    make_partner(name="Pending")  # committed: clean
    assert fastpath.session_is_clean() is True
    db.session.add(User(email="x@example.com", password_hash="x", role="staff"))
    assert fastpath.session_is_clean() is False
    db.session.flush()  # written in the open transaction: the fast path's own connection would miss it
    assert fastpath.session_is_clean() is False
    db.session.rollback()
    clock.set_now(None)


@pytest.fixture(autouse=True)
def _close_fast_connections():
    yield
    fastpath.fastdb.discard_connections()
