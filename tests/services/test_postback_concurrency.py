"""Concurrent identical postbacks on PostgreSQL are one conversion (CONTRACT §3 step 5:
"however often and however concurrently it is posted")."""

from __future__ import annotations

import threading
import time
from collections import Counter

from sqlalchemy import func, select

from partnernet.extensions import db
from partnernet.models import Campaign, Conversion, PostbackLog
from tests.concurrency import fire_postbacks
from tests.factories import make_campaign, make_client, make_link, make_partner

N = 10


def _fire(app, params, n: int = N) -> list[tuple[int, dict]]:
    """``n`` identical (or per-thread) GET postbacks at once: see tests.concurrency.fire_postbacks."""
    return fire_postbacks(app, params, n, timeout=120)


def _setup(pg_app, *, budget_minor=None):
    adv = make_client()
    camp = make_campaign(adv, budget_minor=budget_minor,
                         events=[{"key": "sale", "client_fee_minor": 1000, "payout_percent": "50"},
                                 {"key": "lead", "client_fee_minor": 100, "payout_minor": 50, "one_per_click": True}])
    link = make_link(make_partner(), camp, coupon_code="RACE")
    return adv, camp, link


def test_ten_identical_postbacks_at_once_make_one_conversion(pg_app):
    adv, camp, link = _setup(pg_app)
    cid = pg_app.extensions["partnernet_click_signer"].make(link.id, int(time.time()))
    answers = _fire(pg_app, {"key": adv.postback_key, "click_id": cid, "txn_id": "ORD-RACE"})
    by_status = Counter(st for st, _ in answers)
    assert by_status == {201: 1, 200: N - 1}
    ids = {body["conversion_id"] for _, body in answers}
    assert len(ids) == 1
    assert all(body["duplicate"] is True for st, body in answers if st == 200)
    db.session.expire_all()
    assert db.session.scalar(select(func.count()).select_from(Conversion)) == 1
    assert db.session.get(Campaign, camp.id).spent_minor == 1000
    outcomes = Counter(db.session.scalars(select(PostbackLog.outcome)).all())
    assert outcomes == {"created": 1, "existing": N - 1}


def test_concurrent_reversals_move_spend_once(pg_app):
    adv, camp, link = _setup(pg_app)
    base = {"key": adv.postback_key, "coupon": "race", "txn_id": "ORD-R"}
    http = pg_app.test_client()
    assert http.get("/postback", query_string=base).status_code == 201
    answers = _fire(pg_app, {**base, "status": "reversed"})
    assert {(st, body["status"], body["duplicate"]) for st, body in answers} == {(200, "reversed", True)}
    db.session.expire_all()
    assert db.session.get(Campaign, camp.id).spent_minor == 0
    (conv,) = db.session.scalars(select(Conversion)).all()
    assert conv.status == "reversed"


def test_concurrent_postbacks_never_pass_the_budget(pg_app):
    adv, camp, link = _setup(pg_app, budget_minor=1000)
    signer = pg_app.extensions["partnernet_click_signer"]
    link_id, key = link.id, adv.postback_key  # read here: the main session is not for threads
    barrier = threading.Barrier(N)
    answers: list = []
    lock = threading.Lock()

    def run(i: int) -> None:
        with pg_app.app_context():
            http = pg_app.test_client()
            cid = signer.make(link_id, int(time.time()))
            barrier.wait(timeout=30)
            resp = http.get("/postback", query_string={"key": key, "click_id": cid})
            with lock:
                answers.append((resp.status_code, resp.get_json()))
            db.session.remove()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert Counter(st for st, _ in answers) == {201: 1, 200: N - 1}
    assert {body.get("reason") for st, body in answers if st == 200} == {"over_budget"}
    db.session.expire_all()
    assert db.session.get(Campaign, camp.id).spent_minor == 1000


def test_one_per_click_holds_under_concurrency(pg_app):
    adv, camp, link = _setup(pg_app)
    cid = pg_app.extensions["partnernet_click_signer"].make(link.id, int(time.time()))
    key = adv.postback_key
    answers = _fire(pg_app, lambda i: {"key": key, "click_id": cid, "event": "lead", "txn_id": f"L-{i}"})
    assert Counter(st for st, _ in answers) == {201: 1, 200: N - 1}
    assert {body.get("reason") for st, body in answers if st == 200} == {"duplicate_click"}
    db.session.expire_all()
    assert db.session.get(Campaign, camp.id).spent_minor == 100
