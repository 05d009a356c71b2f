"""API: bulk approve and reject (CONTRACT v2 §5 ``POST /conversions/approve``, ``/reject``):
each id handled as the single call would, atomically per conversion, one item per id in order."""

from __future__ import annotations

from sqlalchemy import func, select

from partnernet.extensions import db
from partnernet.models import AuditLog, Campaign, Conversion
from tests.factories import make_campaign, make_client, make_link, make_partner
from tests.web.test_api_support import assert_error, client_api, make_conversion, partner_api, staff_api


def _world():
    """Clients X (campaign cx) and Y (campaign cy), partners A and B; conversions on both."""
    x, y = make_client(currency="USD"), make_client(currency="USD")
    cx = make_campaign(x, events=[{"key": "lead", "client_fee_minor": 300, "payout_minor": 200}])
    cy = make_campaign(y, events=[{"key": "lead", "client_fee_minor": 500, "payout_minor": 100}])
    a, b = make_partner(), make_partner()
    la, lb = make_link(a, cx), make_link(b, cy)
    return {
        "x": x, "cx": cx, "cy": cy, "a": a, "b": b, "la": la, "lb": lb,
        "p1": make_conversion(la, event="lead"),
        "p2": make_conversion(lb, event="lead"),  # another client's campaign: staff sees all
        "done": make_conversion(la, event="lead", status="approved"),
        "gone": make_conversion(lb, event="lead", status="rejected", reason="client_rejected"),
    }


def _items(resp):
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["items"]


def _status(conv_id):
    return db.session.scalar(select(Conversion.status).where(Conversion.id == conv_id))


def test_bulk_approve_mixed_ids(client):
    w = _world()
    api = staff_api(client)
    p1, p2, done, gone = (str(w[k].id) for k in ("p1", "p2", "done", "gone"))
    done_by = w["done"].approved_by
    given = [p1, "999999", done, "abc", p2, gone, p1, "-3", "99999999999999999999"]
    items = _items(api.post("/conversions/approve", {"ids": given}))
    assert items == [
        {"id": p1, "status": "approved"},
        {"id": "999999", "status": None, "error": "not_found"},
        {"id": done, "status": "approved", "error": "invalid_state"},
        {"id": "abc", "status": None, "error": "not_found"},
        {"id": p2, "status": "approved"},
        {"id": gone, "status": "rejected", "error": "invalid_state"},
        {"id": p1, "status": "approved", "error": "invalid_state"},  # a repeat: already done
        {"id": "-3", "status": None, "error": "not_found"},
        {"id": "99999999999999999999", "status": None, "error": "not_found"},
    ]
    db.session.expire_all()
    # as the single call: approved_by the user, ledger posted, audit row, before the answer
    c1 = db.session.get(Conversion, w["p1"].id)
    assert c1.approved_by.startswith("user:") and c1.ledger_status == "approved"
    earn = api.get(f"/partners/{w['a'].id}/earnings").get_json()["items"][0]
    assert earn["approved"] == "4.00" and earn["balance"] == "4.00"  # p1 and the earlier approved one
    assert db.session.scalar(select(func.count()).select_from(AuditLog)
                             .where(AuditLog.action == "conversion.approve")) == 2
    # what was not pending is untouched
    assert _status(w["gone"].id) == "rejected"
    assert db.session.get(Conversion, w["done"].id).approved_by == done_by


def test_bulk_reject_with_reason_moves_spend_and_ledger(client):
    w = _world()
    api = staff_api(client)
    spent_before = db.session.get(Campaign, w["cx"].id).spent_minor
    extra = make_conversion(w["la"], event="lead")
    ids = [str(w["p1"].id), str(extra.id), str(w["done"].id)]
    items = _items(api.post("/conversions/reject", {"ids": ids, "reason": "fraud_suspected"}))
    assert [(i["status"], i.get("error")) for i in items] == [
        ("rejected", None), ("rejected", None), ("approved", "invalid_state")]
    db.session.expire_all()
    for conv_id in ids[:2]:
        conv = db.session.get(Conversion, int(conv_id))
        assert conv.reason == "fraud_suspected" and conv.ledger_status == "rejected"
    # the rejected ones left the campaign's spend (the single call's rule); the split was reversed
    assert db.session.get(Campaign, w["cx"].id).spent_minor == spent_before - 300  # p1 and extra left
    earn = api.get(f"/partners/{w['a'].id}/earnings").get_json()["items"][0]
    assert earn["pending"] == "0.00" and earn["approved"] == "2.00"
    # default reason; a bad reason refuses the whole call before anything changes
    blank = _items(api.post("/conversions/reject", {"ids": [str(w["p2"].id)], "reason": " "}))
    assert blank == [{"id": str(w["p2"].id), "status": "rejected"}]
    db.session.expire_all()
    assert db.session.get(Conversion, w["p2"].id).reason == "rejected_by_staff"
    fresh = make_conversion(w["la"], event="lead")
    for bad in ("x" * 33, 7):
        resp = api.post("/conversions/reject", {"ids": [str(fresh.id)], "reason": bad})
        assert_error(resp, 400, "invalid", "reason")
    db.session.expire_all()
    assert _status(fresh.id) == "pending"


def test_bulk_bad_bodies(client):
    w = _world()
    api = staff_api(client)
    pid = str(w["p1"].id)
    assert_error(api.post("/conversions/approve", {"ids": [pid] * 1001}), 400, "too_many_ids", "ids")
    assert_error(api.post("/conversions/approve", {"ids": []}), 400, "bad_ids", "ids")
    assert_error(api.post("/conversions/approve", {"ids": pid}), 400, "bad_ids", "ids")
    assert_error(api.post("/conversions/approve", {}), 400, "missing_field", "ids")
    assert_error(api.post("/conversions/approve", {"ids": [pid, None]}), 400, "bad_id", "ids[1]")
    assert_error(api.post("/conversions/approve", {"ids": [pid, True]}), 400, "bad_id", "ids[1]")
    assert_error(api.post("/conversions/approve", {"ids": [pid], "reason": "x"}),
                 400, "unknown_field", "reason")
    assert_error(api.post("/conversions/reject", {"ids": [pid], "why": "x"}), 400, "unknown_field", "why")
    assert_error(api.post("/conversions/reject", data=b"[1]", headers={"Content-Type": "application/json"}),
                 400, "bad_json")
    db.session.expire_all()
    assert _status(w["p1"].id) == "pending"
    # exactly the limit is taken (1,000 repeats of one id: approved once, then invalid_state)
    items = _items(api.post("/conversions/approve", {"ids": [pid] * 1000}))
    assert len(items) == 1000 and items[0] == {"id": pid, "status": "approved"}
    assert {i.get("error") for i in items[1:]} == {"invalid_state"}


def test_only_staff_bulk_reviews(client):
    w = _world()
    body = {"ids": [str(w["p1"].id)]}
    assert_error(partner_api(client, w["a"]).post("/conversions/approve", body), 403, "forbidden")
    assert_error(partner_api(client, w["a"]).post("/conversions/reject", body), 403, "forbidden")
    assert_error(client_api(client, w["x"]).post("/conversions/approve", body), 403, "forbidden")
    assert_error(client_api(client, w["x"]).post("/conversions/reject", {**body, "reason": "no"}),
                 403, "forbidden")
    db.session.expire_all()
    assert _status(w["p1"].id) == "pending"


def test_bulk_is_atomic_per_conversion(client):
    """A refused id among good ones (a test conversion, not money: 409 ``test_conversion`` on the
    single call) undoes nothing of the others, before or after it."""
    from partnernet.conversions.services import record_conversion

    w = _world()
    camp = db.session.get(Campaign, w["cx"].id)
    rec = record_conversion(campaign_id=camp.id, event=camp.event("lead"), link_id=w["la"].id,
                            partner_id=w["a"].id, click_id=None, click_at=None, txn_id="test-1",
                            amount_minor=None, duration_s=None, status="pending", reason=None, is_test=True)
    db.session.commit()
    test_id = rec.conversion.id
    api = staff_api(client)
    ids = [str(w["p1"].id), str(test_id), str(w["p2"].id)]
    items = _items(api.post("/conversions/approve", {"ids": ids}))
    assert items == [{"id": ids[0], "status": "approved"},
                     {"id": ids[1], "status": "pending", "error": "test_conversion"},
                     {"id": ids[2], "status": "approved"}]
    db.session.expire_all()
    assert [_status(int(i)) for i in ids] == ["approved", "pending", "approved"]


def test_flagged_conversion_is_approved_by_staff_in_bulk(client):
    from partnernet.conversions.review import approve_matured

    w = _world()
    conv = db.session.get(Conversion, w["p1"].id)
    conv.flags = ["self_referral"]
    conv.hold_until = conv.created_at
    db.session.commit()
    approve_matured()  # its hold has ended, but a flagged conversion waits for staff
    db.session.expire_all()
    assert _status(w["p1"].id) == "pending"
    items = _items(staff_api(client).post("/conversions/approve", {"ids": [str(w["p1"].id)]}))
    assert items == [{"id": str(w["p1"].id), "status": "approved"}]
    db.session.expire_all()
    assert db.session.get(Conversion, w["p1"].id).ledger_status == "approved"


def test_bulk_review_with_the_worker_keeps_the_ledger_level(redis_app, worker):
    """With Redis and a real worker: the postings are made before the answer, as by the single
    call (CONTRACT §6), and the jobs the status changes queue leave the ledger balanced."""
    from partnernet.ledger.reading import verify_ledger
    from tests.conftest import drain_jobs

    w = _world()
    drain_jobs()  # the splits of the recorded conversions
    api = staff_api(redis_app.test_client())
    approved = _items(api.post("/conversions/approve", {"ids": [str(w["p1"].id), "0"]}))
    rejected = _items(api.post("/conversions/reject", {"ids": [str(w["p2"].id)], "reason": "dup"}))
    assert approved == [{"id": str(w["p1"].id), "status": "approved"},
                        {"id": "0", "status": None, "error": "not_found"}]
    assert rejected == [{"id": str(w["p2"].id), "status": "rejected"}]
    db.session.expire_all()
    assert db.session.get(Conversion, w["p1"].id).ledger_status == "approved"  # before any job ran
    assert db.session.get(Conversion, w["p2"].id).ledger_status == "rejected"
    drain_jobs()
    assert verify_ledger() == []
