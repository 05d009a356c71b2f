"""API: partners, their status changes and earnings, and links (CONTRACT §5)."""

from __future__ import annotations

from partnernet.extensions import db
from partnernet.models import Link, Partner
from partnernet.tracking import state
from tests.factories import make_campaign, make_client, make_link, make_partner
from tests.web.test_api_support import (
    assert_error,
    client_api,
    make_conversion,
    partner_api,
    staff_api,
)

PARTNER_BODY = {"email": "Jane@Example.com", "name": "Jane's Deals", "kind": "influencer"}


# ---------------------------------------------------------------- POST /partners


def test_create_partner(client):
    api = staff_api(client)
    resp = api.post("/partners", PARTNER_BODY)
    assert resp.status_code == 201, resp.get_json()
    p = resp.get_json()
    assert p["id"].isdigit() and p["status"] == "pending"
    assert p["email"] == "jane@example.com" and p["name"] == "Jane's Deals" and p["kind"] == "influencer"
    assert p["recruiter_id"] is None and p["recruiter_percent"] is None
    sub = api.post(
        "/partners",
        {
            "email": "sub@example.com",
            "name": "Sub",
            "kind": "affiliate",
            "recruiter_id": p["id"],
            "recruiter_percent": "10",
        },
    ).get_json()
    assert sub["recruiter_id"] == p["id"] and sub["recruiter_percent"] == "10" and sub["status"] == "pending"


def test_create_partner_validation(client):
    api = staff_api(client)
    assert api.post("/partners", PARTNER_BODY).status_code == 201
    assert_error(
        api.post("/partners", {**PARTNER_BODY, "email": "JANE@example.com"}), 409, "duplicate_email", "email"
    )
    fresh = {**PARTNER_BODY, "email": "new@example.com"}
    assert_error(api.post("/partners", {**fresh, "kind": "blogger"}), 400, "bad_kind", "kind")
    assert_error(api.post("/partners", {**fresh, "email": "not-an-email"}), 400, "bad_email", "email")
    assert_error(
        api.post("/partners", {k: v for k, v in fresh.items() if k != "name"}), 400, "missing_field", "name"
    )
    assert_error(
        api.post("/partners", {**fresh, "recruiter_id": "999999", "recruiter_percent": "5"}),
        400,
        "unknown_recruiter",
        "recruiter_id",
    )
    assert_error(
        api.post("/partners", {**fresh, "recruiter_id": "1"}), 400, "missing_field", "recruiter_percent"
    )
    recruiter = make_partner()
    assert_error(
        api.post("/partners", {**fresh, "recruiter_id": str(recruiter.id), "recruiter_percent": "101"}),
        400,
        "bad_percent",
        "recruiter_percent",
    )
    assert_error(partner_api(client, recruiter).post("/partners", fresh), 403, "forbidden")


# ---------------------------------------------------------------- GET /partners


def test_list_and_get_partners(client):
    a = make_partner(status="approved", kind="affiliate")
    b = make_partner(status="pending", kind="influencer")
    api = staff_api(client)
    ids = lambda resp: [p["id"] for p in resp.get_json()["items"]]
    assert ids(api.get("/partners")) == [str(a.id), str(b.id)]
    assert ids(api.get("/partners", query_string={"status": "pending"})) == [str(b.id)]
    assert ids(api.get("/partners", query_string={"kind": "affiliate"})) == [str(a.id)]
    assert ids(api.get("/partners", query_string={"email": a.email.upper()})) == [str(a.id)]
    assert_error(api.get("/partners", query_string={"status": "nope"}), 400, "bad_status", "status")
    assert_error(api.get("/partners", query_string={"kind": "nope"}), 400, "bad_kind", "kind")
    item = api.get(f"/partners/{a.id}").get_json()
    assert item == api.get("/partners", query_string={"email": a.email}).get_json()["items"][0]
    assert_error(api.get("/partners/777777"), 404, "not_found")
    # a partner key sees itself only
    papi = partner_api(client, a)
    assert ids(papi.get("/partners")) == [str(a.id)]
    assert papi.get(f"/partners/{a.id}").status_code == 200
    assert_error(papi.get(f"/partners/{b.id}"), 404, "not_found")
    assert_error(client_api(client, make_client()).get("/partners"), 403, "forbidden")


# ---------------------------------------------------------------- status changes


def test_partner_transitions(client):
    api = staff_api(client)
    pid = api.post("/partners", PARTNER_BODY).get_json()["id"]

    def act(action):
        return api.post(f"/partners/{pid}/{action}")

    assert_error(act("suspend"), 409, "invalid_state")  # pending cannot be suspended
    before = state.local_version()
    assert act("approve").get_json()["status"] == "approved"
    assert state.local_version() > before
    assert_error(act("approve"), 409, "invalid_state")
    assert_error(act("reject"), 409, "invalid_state")  # only pending can be rejected
    assert act("suspend").get_json()["status"] == "suspended"
    assert_error(act("suspend"), 409, "invalid_state")
    assert act("approve").get_json()["status"] == "approved"  # reinstated
    other = api.post("/partners", {**PARTNER_BODY, "email": "other@example.com"}).get_json()["id"]
    assert api.post(f"/partners/{other}/reject").get_json()["status"] == "rejected"
    for action in ("approve", "reject", "suspend"):
        assert_error(api.post(f"/partners/{other}/{action}"), 409, "invalid_state")
    assert_error(api.post("/partners/999999/approve"), 404, "not_found")


def test_only_staff_changes_partner_status(client):
    p = make_partner(status="pending")
    assert_error(partner_api(client, p).post(f"/partners/{p.id}/approve"), 403, "forbidden")
    assert_error(client_api(client, make_client()).post(f"/partners/{p.id}/approve"), 403, "forbidden")
    db.session.expire_all()
    assert db.session.get(Partner, p.id).status == "pending"


# ---------------------------------------------------------------- earnings


def test_earnings_happy_and_tenants(client):
    acme = make_client(currency="EUR")
    camp = make_campaign(acme, events=[{"key": "sale", "client_fee_minor": 1000, "payout_percent": "50"}])
    a, b = make_partner(), make_partner()
    link = make_link(a, camp)
    make_conversion(link)  # pending: 5.00 to a
    api = staff_api(client)
    resp = api.get(f"/partners/{a.id}/earnings")
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["items"] == [
        {"currency": "EUR", "pending": "5.00", "approved": "0.00", "paid": "0.00", "balance": "0.00"}
    ]
    assert api.get(f"/partners/{b.id}/earnings").get_json()["items"] == []
    assert_error(api.get("/partners/999999/earnings"), 404, "not_found")
    papi = partner_api(client, a)
    assert papi.get(f"/partners/{a.id}/earnings").get_json()["items"][0]["pending"] == "5.00"
    assert_error(papi.get(f"/partners/{b.id}/earnings"), 404, "not_found")
    assert_error(partner_api(client, b).get(f"/partners/{a.id}/earnings"), 404, "not_found")
    assert_error(client_api(client, acme).get(f"/partners/{a.id}/earnings"), 403, "forbidden")


# ---------------------------------------------------------------- links


def _campaign(**kw):
    return make_campaign(make_client(), deep_link_hosts=["shop.example.com"], **kw)


def test_create_link(app, client):
    camp = _campaign()
    p = make_partner()
    api = staff_api(client)
    resp = api.post(
        "/links",
        {
            "partner_id": str(p.id),
            "campaign_id": str(camp.id),
            "channel": "social",
            "deep_link": "https://www.shop.example.com/p/1",
            "coupon_code": "Spring_10",
            "tracking_number": "+14155550123",
        },
    )
    assert resp.status_code == 201, resp.get_json()
    link = resp.get_json()
    signer = app.extensions["partnernet_link_signer"]
    assert signer.loads(link["token"]) == int(link["id"])
    assert link["url"] == "http://testserver/c/" + link["token"]
    assert link["impression_url"] == "http://testserver/i/" + link["token"]
    assert link["partner_id"] == str(p.id) and link["campaign_id"] == str(camp.id)
    assert link["channel"] == "social" and link["deep_link"] == "https://www.shop.example.com/p/1"
    assert link["coupon_code"] == "Spring_10" and link["tracking_number"] == "+14155550123"
    assert link["created_at"].endswith("Z")
    row = db.session.get(Link, int(link["id"]))
    assert row.coupon_code_lower == "spring_10"
    # the bare minimum
    resp = api.post("/links", {"partner_id": p.id, "campaign_id": camp.id})
    assert resp.status_code == 201 and resp.get_json()["coupon_code"] is None
    assert api.get(f"/links/{link['id']}").get_json() == link


def test_create_link_validation(client):
    camp = _campaign()
    p = make_partner()
    api = staff_api(client)
    base = {"partner_id": str(p.id), "campaign_id": str(camp.id)}
    for change, code, field in [
        ({"deep_link": "https://evil.example.net/"}, "deep_link_not_allowed", "deep_link"),
        ({"deep_link": "https://notshop.example.com/"}, "deep_link_not_allowed", "deep_link"),
        ({"deep_link": "ftp://shop.example.com/"}, "deep_link_not_allowed", "deep_link"),
        ({"deep_link": "javascript:alert(1)"}, "deep_link_not_allowed", "deep_link"),
        ({"coupon_code": ""}, "bad_coupon_code", "coupon_code"),
        ({"coupon_code": "with space"}, "bad_coupon_code", "coupon_code"),
        ({"coupon_code": "X" * 65}, "bad_coupon_code", "coupon_code"),
        ({"coupon_code": "ÉTÉ"}, "bad_coupon_code", "coupon_code"),
        ({"tracking_number": "4155550123"}, "bad_tracking_number", "tracking_number"),
        ({"tracking_number": "+0155550123"}, "bad_tracking_number", "tracking_number"),
        ({"tracking_number": "+1234567890123456"}, "bad_tracking_number", "tracking_number"),
        ({"channel": "tv"}, "bad_channel", "channel"),
        ({"partner_id": "999999"}, "unknown_partner", "partner_id"),
        ({"campaign_id": "999999"}, "unknown_campaign", "campaign_id"),
        ({"campaign_id": None}, "missing_field", "campaign_id"),
        ({"partner_id": None}, "missing_field", "partner_id"),
        ({"url": "x"}, "unknown_field", "url"),
    ]:
        assert_error(api.post("/links", {**base, **change}), 400, code, field)
    assert db.session.query(Link).count() == 0


def test_create_link_uniqueness_and_partner_status(client):
    camp = _campaign()
    p = make_partner()
    api = staff_api(client)
    base = {"partner_id": str(p.id), "campaign_id": str(camp.id)}
    assert (
        api.post("/links", {**base, "coupon_code": "SAVE10", "tracking_number": "+4930123456"}).status_code
        == 201
    )
    assert_error(
        api.post("/links", {**base, "coupon_code": "save10"}), 409, "duplicate_coupon_code", "coupon_code"
    )
    assert_error(
        api.post("/links", {**base, "tracking_number": "+4930123456"}),
        409,
        "duplicate_tracking_number",
        "tracking_number",
    )
    for status in ("pending", "suspended", "rejected"):
        q = make_partner(status=status)
        assert_error(api.post("/links", {**base, "partner_id": str(q.id)}), 409, "partner_not_approved")
    assert_error(client_api(client, camp.client).post("/links", base), 403, "forbidden")


def test_partner_key_links(client):
    camp = _campaign()
    a, b = make_partner(), make_partner()
    papi = partner_api(client, a)
    resp = papi.post("/links", {"campaign_id": str(camp.id), "channel": "influencer"})
    assert resp.status_code == 201, resp.get_json()
    mine = resp.get_json()
    assert mine["partner_id"] == str(a.id)
    assert papi.post("/links", {"partner_id": str(a.id), "campaign_id": str(camp.id)}).status_code == 201
    # never for another partner (CONTRACT §5 (v2): 403)
    assert_error(
        papi.post("/links", {"partner_id": str(b.id), "campaign_id": str(camp.id)}),
        403,
        "forbidden",
        "partner_id",
    )
    theirs = make_link(b, camp)
    ids = [x["id"] for x in papi.get("/links").get_json()["items"]]
    assert len(ids) == 2 and str(theirs.id) not in ids
    assert papi.get(f"/links/{mine['id']}").status_code == 200
    assert_error(papi.get(f"/links/{theirs.id}"), 404, "not_found")
    # staff sees all and filters
    api = staff_api(client)
    assert len(api.get("/links").get_json()["items"]) == 3
    assert [x["id"] for x in api.get("/links", query_string={"partner_id": b.id}).get_json()["items"]] == [
        str(theirs.id)
    ]
    assert len(api.get("/links", query_string={"campaign_id": camp.id, "limit": 2}).get_json()["items"]) == 2
    assert_error(api.get("/links/0"), 404, "not_found")
    assert_error(client_api(client, camp.client).get("/links"), 403, "forbidden")
