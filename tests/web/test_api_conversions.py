"""API: conversions list/read with tenant scope, and staff approve/reject (CONTRACT §5)."""

from __future__ import annotations

from partnernet.extensions import db
from partnernet.models import Conversion
from tests.factories import make_campaign, make_client, make_link, make_partner
from tests.web.test_api_support import assert_error, client_api, make_conversion, partner_api, staff_api


def _world():
    """Two clients (X with campaign cx, Y with cy), partners A and B, and conversions:
    A on cx (pending, split), B on cx (pending, split), A on cy (rejected), B on cy (approved)."""
    x, y = make_client(currency="USD"), make_client(currency="USD")
    cx = make_campaign(
        x,
        events=[
            {"key": "sale", "client_fee_percent": "10", "payout_percent": "50"},
            {"key": "lead", "client_fee_minor": 300, "payout_minor": 200},
        ],
    )
    cy = make_campaign(y, events=[{"key": "lead", "client_fee_minor": 500, "payout_percent": "40"}])
    a, b = make_partner(), make_partner()
    la, lb, la_y, lb_y = make_link(a, cx), make_link(b, cx), make_link(a, cy), make_link(b, cy)
    convs = {
        "a_x": make_conversion(la, event="sale", amount_minor=12990, txn_id="order-1"),
        "b_x": make_conversion(lb, event="lead"),
        "a_y": make_conversion(la_y, event="lead", status="rejected"),
        "b_y": make_conversion(lb_y, event="lead", status="approved"),
    }
    return {"x": x, "y": y, "cx": cx, "cy": cy, "a": a, "b": b, **convs}


def ids(resp):
    assert resp.status_code == 200, resp.get_json()
    return [c["id"] for c in resp.get_json()["items"]]


def test_conversion_item_shape(client):
    w = _world()
    api = staff_api(client)
    got = api.get(f"/conversions/{w['a_x'].id}").get_json()
    a = w["a"]
    assert got["id"] == str(w["a_x"].id) and got["campaign_id"] == str(w["cx"].id)
    assert got["partner_id"] == str(a.id) and got["event"] == "sale" and got["txn_id"] == "order-1"
    assert got["click_id"] is None and got["status"] == "pending" and got["reason"] is None
    assert got["amount"] == "129.90" and got["client_fee"] == "12.99" and got["currency"] == "USD"
    assert got["created_at"].endswith("Z")
    # 12.99 fee, 50% payout = 6.495 -> 6.50 half up; margin 6.49
    assert sorted(got["splits"], key=lambda s: s["role"]) == [
        {"party": f"partner:{a.id}", "role": "converter", "amount": "6.50", "rule": "event: 50%"},
        {"party": "agency", "role": "margin", "amount": "6.49", "rule": "fee minus partner amounts"},
    ]
    rejected = api.get(f"/conversions/{w['a_y'].id}").get_json()
    assert rejected["status"] == "rejected" and rejected["reason"] == "client_rejected"
    assert rejected["splits"] == [] and rejected["amount"] is None
    assert_error(api.get("/conversions/999999"), 404, "not_found")


def test_list_conversions_filters(client):
    w = _world()
    api = staff_api(client)
    all_ids = [str(w[k].id) for k in ("a_x", "b_x", "a_y", "b_y")]
    assert ids(api.get("/conversions")) == all_ids
    assert ids(api.get("/conversions", query_string={"campaign_id": w["cy"].id})) == all_ids[2:]
    assert ids(api.get("/conversions", query_string={"partner_id": w["a"].id})) == [all_ids[0], all_ids[2]]
    assert ids(api.get("/conversions", query_string={"status": "approved"})) == [all_ids[3]]
    assert ids(api.get("/conversions", query_string={"reason": "client_rejected"})) == [all_ids[2]]
    assert (
        ids(api.get("/conversions", query_string={"status": "pending", "campaign_id": w["cx"].id}))
        == all_ids[:2]
    )
    assert_error(api.get("/conversions", query_string={"status": "won"}), 400, "bad_status", "status")
    assert_error(api.get("/conversions", query_string={"partner_id": "-1"}), 400, "bad_id", "partner_id")
    page1 = api.get("/conversions", query_string={"limit": 3}).get_json()
    page2 = api.get("/conversions", query_string={"limit": 3, "cursor": page1["next"]}).get_json()
    assert [c["id"] for c in page1["items"] + page2["items"]] == all_ids and page2["next"] is None


def test_partner_key_sees_its_conversions_and_its_lines(client):
    w = _world()
    a, b = w["a"], w["b"]
    papi = partner_api(client, a)
    assert ids(papi.get("/conversions")) == [str(w["a_x"].id), str(w["a_y"].id)]
    assert ids(papi.get("/conversions", query_string={"partner_id": b.id})) == []
    got = papi.get(f"/conversions/{w['a_x'].id}").get_json()
    # CONTRACT v2 §5: its own lines only, no client fee; the rule without its percent of the client fee
    assert got["splits"] == [{"party": f"partner:{a.id}", "role": "converter", "amount": "6.50",
                              "rule": "event"}]
    assert "client_fee" not in got and got["amount"] == "129.90"
    assert_error(papi.get(f"/conversions/{w['b_x'].id}"), 404, "not_found")
    assert_error(papi.get(f"/conversions/{w['b_y'].id}"), 404, "not_found")


def test_client_key_sees_its_campaigns_conversions(client):
    w = _world()
    capi = client_api(client, w["x"])
    assert ids(capi.get("/conversions")) == [str(w["a_x"].id), str(w["b_x"].id)]
    assert ids(capi.get("/conversions", query_string={"campaign_id": w["cy"].id})) == []
    got = capi.get(f"/conversions/{w['b_x'].id}").get_json()
    assert {s["role"] for s in got["splits"]} == {"converter", "margin"}
    assert_error(capi.get(f"/conversions/{w['a_y'].id}"), 404, "not_found")


def test_approve_conversion(client):
    w = _world()
    api = staff_api(client)
    resp = api.post(f"/conversions/{w['a_x'].id}/approve")
    assert resp.status_code == 200, resp.get_json()
    got = resp.get_json()
    assert got["id"] == str(w["a_x"].id) and got["status"] == "approved" and got["approved_at"].endswith("Z")
    assert len(got["splits"]) == 2
    # not pending any more
    assert_error(api.post(f"/conversions/{w['a_x'].id}/approve"), 409, "invalid_state")
    assert_error(api.post(f"/conversions/{w['a_y'].id}/approve"), 409, "invalid_state")
    assert_error(api.post("/conversions/999999/approve"), 404, "not_found")
    # the partner's earnings moved before the answer (CONTRACT §6)
    earn = api.get(f"/partners/{w['a'].id}/earnings").get_json()["items"][0]
    assert earn["approved"] == "6.50" and earn["balance"] == "6.50"


def test_reject_conversion(client):
    w = _world()
    api = staff_api(client)
    resp = api.post(f"/conversions/{w['b_x'].id}/reject", {"reason": "fraud_suspected"})
    assert resp.status_code == 200, resp.get_json()
    got = resp.get_json()
    assert got["status"] == "rejected" and got["reason"] == "fraud_suspected"
    assert_error(api.post(f"/conversions/{w['b_x'].id}/reject", {"reason": "again"}), 409, "invalid_state")
    # default reason, and bad bodies
    got = api.post(f"/conversions/{w['a_x'].id}/reject", {}).get_json()
    assert got["status"] == "rejected" and got["reason"] == "rejected_by_staff"
    conv = make_conversion(make_link(w["a"], w["cx"]), event="lead")
    assert_error(api.post(f"/conversions/{conv.id}/reject", {"reason": "x" * 33}), 400, "invalid", "reason")
    assert_error(api.post(f"/conversions/{conv.id}/reject", {"reason": 7}), 400, "invalid", "reason")
    assert_error(api.post(f"/conversions/{conv.id}/reject", {"why": "x"}), 400, "unknown_field", "why")
    assert_error(
        api.post(
            f"/conversions/{conv.id}/reject", data=b"nope", headers={"Content-Type": "application/json"}
        ),
        400,
        "bad_json",
    )
    db.session.expire_all()
    assert db.session.get(Conversion, conv.id).status == "pending"


def test_only_staff_reviews_conversions(client):
    w = _world()
    conv = w["a_x"]
    assert_error(partner_api(client, w["a"]).post(f"/conversions/{conv.id}/approve"), 403, "forbidden")
    assert_error(
        client_api(client, w["x"]).post(f"/conversions/{conv.id}/reject", {"reason": "no"}), 403, "forbidden"
    )
    db.session.expire_all()
    assert db.session.get(Conversion, conv.id).status == "pending"
