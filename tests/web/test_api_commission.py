"""The commission-rule API calls (issue 6): tiers, overrides, bonuses and the rule on split
lines; recruiter chains with invite links and the recruiter's view of its conversions; vanity
coupon requests; the tracking-number pool; reports grouped by coupon and number."""

from __future__ import annotations

from datetime import date

from partnernet.partners.recruiting import make_invite_token, recruiter_from_token
from tests.factories import make_campaign, make_client, make_link, make_partner
from tests.services.test_ledger_helpers import record
from tests.web.test_api_support import assert_error, partner_api, staff_api

EVENTS = [{"key": "sale", "client_fee_minor": 1000, "payout_percent": "50"}]


def test_payout_rules_through_the_api_show_on_split_lines(client):
    api = staff_api(client)
    camp = make_campaign(make_client(), events=EVENTS)
    p = make_partner()
    link = make_link(p, camp)
    tier = api.post("/partner-tiers", json={"name": "Gold", "payout_percent": "60"})
    assert tier.status_code == 201 and tier.get_json()["payout_percent"] == "60"
    assert_error(api.post("/partner-tiers", json={"name": "Gold", "bonus_points": "5"}), 409, "duplicate_tier")
    assert_error(api.post("/partner-tiers", json={"name": "X"}), 400, "invalid")
    assert api.post(f"/partners/{p.id}/tier", json={"tier_id": tier.get_json()["id"]}).status_code == 200
    cid = record(camp, link)
    splits = api.get(f"/conversions/{cid}").get_json()["splits"]
    assert splits[0] == {"party": f"partner:{p.id}", "role": "converter", "amount": "6.00", "rule": "tier Gold: 60%"}

    ov = api.post("/payout-overrides", json={"campaign_id": str(camp.id), "partner_id": str(p.id), "payout": "7.25"})
    assert ov.status_code == 201 and ov.get_json()["payout"] == "7.25"
    assert_error(api.post("/payout-overrides", json={"campaign_id": str(camp.id), "partner_id": str(p.id),
                                                     "event": "nope", "payout": "1.00"}), 400, "unknown_event")
    cid = record(camp, link)
    assert api.get(f"/conversions/{cid}").get_json()["splits"][0]["amount"] == "7.25"

    b = api.post("/performance-bonuses", json={"campaign_id": str(camp.id), "threshold": 1, "bonus_points": "5"})
    assert b.status_code == 201
    assert api.get("/performance-bonuses").get_json()["items"][0]["bonus_points"] == "5"
    gone = api.client.delete(f"/api/v1/payout-overrides/{ov.get_json()['id']}", headers=api._headers())
    assert gone.status_code == 204
    assert api.get("/payout-overrides").get_json()["items"] == []
    # a partner key may not set rules
    assert partner_api(client, p).post("/partner-tiers", json={"name": "Mine", "payout_percent": "99"}).status_code == 403


def test_recruiter_chain_invites_and_the_recruiters_view(client, app):
    api = staff_api(client)
    camp = make_campaign(make_client(), events=EVENTS)
    top, mid, leaf = make_partner(), make_partner(), make_partner()
    assert api.post(f"/partners/{mid.id}/recruiter", json={"recruiter_id": str(top.id), "recruiter_percent": "10",
                                                           "tier2_percent": "5"}).status_code == 200
    # mid invites leaf: the signup token names mid
    inv = partner_api(client, mid).get(f"/partners/{mid.id}/invite").get_json()
    assert inv["url"].endswith("/signup?recruiter=" + inv["token"])
    assert recruiter_from_token(inv["token"]) == mid.id
    assert recruiter_from_token(inv["token"][:-1] + ("A" if inv["token"][-1] != "A" else "B")) is None
    assert partner_api(client, leaf).get(f"/partners/{mid.id}/invite").status_code == 404
    api.post(f"/partners/{leaf.id}/recruiter", json={"recruiter_id": str(mid.id), "recruiter_percent": "20"})
    # loops are refused
    assert_error(api.post(f"/partners/{top.id}/recruiter", json={"recruiter_id": str(leaf.id),
                                                                 "recruiter_percent": "1"}), 400, "bad_recruiter")

    cid = record(camp, make_link(leaf, camp))
    full = api.get(f"/conversions/{cid}").get_json()["splits"]
    assert [(s["party"], s["role"], s["amount"]) for s in full] == [
        (f"partner:{leaf.id}", "converter", "5.00"), (f"partner:{mid.id}", "recruiter", "1.00"),
        (f"partner:{top.id}", "recruiter", "0.25"), ("agency", "margin", "3.75")]
    # the top recruiter sees the conversion, with only its own line, and it counts in its earnings
    papi = partner_api(client, top)
    items = papi.get("/conversions").get_json()["items"]
    assert [c["id"] for c in items] == [str(cid)]
    assert items[0]["splits"] == [{"party": f"partner:{top.id}", "role": "recruiter", "amount": "0.25",
                                   "rule": "recruiter override tier 2"}]
    assert papi.get(f"/partners/{top.id}/earnings").get_json()["items"][0]["pending"] == "0.25"


def test_invite_token_of_an_unknown_partner_is_refused(app):
    assert recruiter_from_token(make_invite_token(999999)) is None
    assert recruiter_from_token("garbage") is None and recruiter_from_token(None) is None


def test_vanity_coupon_requests(client):
    api = staff_api(client)
    camp = make_campaign(make_client(), events=EVENTS)
    p, q = make_partner(), make_partner()
    link, other = make_link(p, camp, coupon_code="P-AUTO-1"), make_link(q, camp, coupon_code="TAKEN")
    papi = partner_api(client, p)
    assert_error(papi.post(f"/links/{link.id}/coupon-requests", json={"code": "taken"}), 409, "duplicate_coupon_code")
    assert_error(papi.post(f"/links/{link.id}/coupon-requests", json={"code": "no spaces"}), 400, "bad_coupon_code")
    assert papi.post(f"/links/{other.id}/coupon-requests", json={"code": "MINE"}).status_code == 404
    r = papi.post(f"/links/{link.id}/coupon-requests", json={"code": "Anna10"})
    assert r.status_code == 201 and r.get_json()["status"] == "pending"
    # another partner cannot ask for the same code in another case while it is pending
    assert_error(partner_api(client, q).post(f"/links/{other.id}/coupon-requests", json={"code": "ANNA10"}),
                 409, "duplicate_coupon_code")
    assert [x["code"] for x in papi.get("/coupon-requests").get_json()["items"]] == ["Anna10"]
    assert partner_api(client, q).get("/coupon-requests").get_json()["items"] == []
    ok = api.post(f"/coupon-requests/{r.get_json()['id']}/approve", json={})
    assert ok.status_code == 200 and ok.get_json()["status"] == "approved"
    assert api.get(f"/links/{link.id}").get_json()["coupon_code"] == "Anna10"
    assert_error(api.post(f"/coupon-requests/{r.get_json()['id']}/reject", json={}), 409, "invalid_state")
    r2 = papi.post(f"/links/{link.id}/coupon-requests", json={"code": "Anna20"})
    assert api.post(f"/coupon-requests/{r2.get_json()['id']}/reject", json={"note": "no"}).get_json()["status"] \
        == "rejected"
    assert api.get(f"/links/{link.id}").get_json()["coupon_code"] == "Anna10"


def test_tracking_number_pool(client):
    api = staff_api(client)
    camp = make_campaign(make_client(), events=EVENTS)
    links = [make_link(make_partner(), camp) for _ in range(3)]
    assert_error(api.post("/tracking-numbers", json={"numbers": ["0800"]}), 400, "bad_tracking_number")
    added = api.post("/tracking-numbers", json={"numbers": ["+14155550101", "+14155550102", "+14155550103"]})
    assert added.status_code == 201 and len(added.get_json()["items"]) == 3
    assert_error(api.post("/tracking-numbers", json={"numbers": ["+14155550101"]}), 409, "duplicate_tracking_number")
    one = api.post(f"/links/{links[0].id}/tracking-number", json={"number": "+14155550103"})
    assert one.status_code == 200 and one.get_json()["tracking_number"] == "+14155550103"
    assert_error(api.post(f"/links/{links[1].id}/tracking-number", json={"number": "+14155550103"}), 409,
                 "number_assigned")
    assert_error(api.post(f"/links/{links[1].id}/tracking-number", json={"number": "+14155550999"}), 404,
                 "unknown_number")
    bulk = api.post("/tracking-numbers/assign", json={"link_ids": [str(links[1].id), str(links[2].id)]})
    assert [x["tracking_number"] for x in bulk.get_json()["items"]] == ["+14155550101", "+14155550102"]
    assert api.get("/tracking-numbers", query_string={"free": "true"}).get_json()["items"] == []
    assert_error(api.post(f"/links/{make_link(make_partner(), camp).id}/tracking-number", json={}), 409,
                 "pool_exhausted")
    assert_error(api.post("/tracking-numbers/assign", json={"link_ids": [str(links[0].id)]}), 409, "pool_exhausted")


def test_reports_group_coupon_and_number_conversions(client):
    api = staff_api(client)
    camp = make_campaign(make_client(), events=EVENTS)
    coupon_link = make_link(make_partner(), camp, coupon_code="Anna10")
    phone_link = make_link(make_partner(), camp, tracking_number="+14155550123")
    record(camp, coupon_link)
    record(camp, coupon_link)
    record(camp, phone_link)
    today = date.today().isoformat()
    q = {"from": today, "to": today}
    rows = {r["key"]: r for r in api.get("/reports", query_string={"group_by": "coupon", **q}).get_json()["items"]}
    assert rows["Anna10"]["conversions"] == 2 and rows["Anna10"]["revenue"] == "20.00"
    assert rows[""]["conversions"] == 1
    rows = {r["key"]: r for r in api.get("/reports", query_string={"group_by": "number", **q}).get_json()["items"]}
    assert rows["+14155550123"]["conversions"] == 1 and rows["+14155550123"]["payout"] == "5.00"
