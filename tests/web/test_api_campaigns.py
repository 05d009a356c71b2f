"""API: campaigns (CONTRACT §5 POST/GET/PATCH /campaigns)."""

from __future__ import annotations

from partnernet.extensions import db
from partnernet.models import Campaign
from partnernet.tracking import state
from tests.factories import make_campaign, make_client, make_partner
from tests.web.test_api_support import assert_error, campaign_body, client_api, partner_api, staff_api


def test_create_campaign_answers_everything_given(client):
    acme = make_client(currency="EUR")
    api = staff_api(client)
    resp = api.post("/campaigns", campaign_body(acme.id))
    assert resp.status_code == 201, resp.get_json()
    c = resp.get_json()
    assert c["id"].isdigit() and c["client_id"] == str(acme.id)
    assert c["status"] == "active" and c["currency"] == "EUR"
    assert c["name"] == "Spring sale"
    assert c["destination_url"] == "https://shop.example.com/landing?src=pn"
    assert c["fallback_url"] == "https://shop.example.com/"
    assert c["deep_link_hosts"] == ["shop.example.com", "blog.example.org"]  # stored lower-case
    assert c["click_param"] == "click_id"  # defaults
    assert c["attribution_window_days"] == 30 and c["hold_days"] == 30
    assert c["attribution_model"] == "linear"
    assert c["budget"] == "500.00" and c["spent"] == "0.00"
    assert c["default_event"] == "sale"
    assert c["events"] == [
        {
            "key": "sale",
            "label": "Sale",
            "client_fee": None,
            "client_fee_percent": "8",
            "payout": None,
            "payout_percent": "75",
            "min_duration_s": None,
            "min_amount": "10.00",
            "one_per_click": False,
            "recurring_months": 0,
        },
        {
            "key": "lead",
            "label": "Lead",
            "client_fee": "3.00",
            "client_fee_percent": None,
            "payout": "2.50",
            "payout_percent": None,
            "min_duration_s": None,
            "min_amount": None,
            "one_per_click": True,
            "recurring_months": 0,
        },
        {
            "key": "call",
            "label": "Call",
            "client_fee": "12.00",
            "client_fee_percent": None,
            "payout": None,
            "payout_percent": "50",
            "min_duration_s": 90,
            "min_amount": None,
            "one_per_click": False,
            "recurring_months": 0,
        },
    ]
    # what GET answers is what POST answered
    assert api.get(f"/campaigns/{c['id']}").get_json() == c
    row = db.session.get(Campaign, int(c["id"]))
    assert row.budget_minor == 50000 and row.event("lead").payout_minor == 250


def test_create_campaign_defaults_and_jpy_money(client):
    yen = make_client(currency="JPY")
    api = staff_api(client)
    body = {
        "client_id": str(yen.id),
        "name": "App",
        "destination_url": "myapp://open?c={click_id}",
        "default_event": "install",
        "events": [
            {"key": "install", "label": "Install", "client_fee": "1000", "payout": "700"},
            {"key": "click", "label": "Click", "client_fee": "5", "payout_percent": "60"},
        ],
    }
    resp = api.post("/campaigns", body)
    assert resp.status_code == 201, resp.get_json()
    c = resp.get_json()
    assert c["destination_url"] == "myapp://open?c={click_id}"
    assert c["budget"] is None and c["spent"] == "0" and c["fallback_url"] is None
    assert c["deep_link_hosts"] == [] and c["attribution_model"] == "last_click"
    assert c["events"][0]["client_fee"] == "1000" and c["events"][0]["payout"] == "700"


def _events(*events):
    return {"events": list(events), "default_event": events[0]["key"] if events else "sale"}


FEE = {"key": "sale", "label": "Sale", "client_fee": "10.00", "payout": "5.00"}

BAD_CAMPAIGNS = [
    ({"client_id": "999999"}, "unknown_client", "client_id"),
    ({"client_id": "abc"}, "unknown_client", "client_id"),
    ({"name": ""}, "invalid", "name"),
    ({"name": None}, "missing_field", "name"),
    ({"destination_url": "ftp://x.example/"}, "bad_url", "destination_url"),
    ({"destination_url": "javascript://alert(1)"}, "bad_url", "destination_url"),
    ({"destination_url": "https:///nohost"}, "bad_url", "destination_url"),
    ({"destination_url": "https://shop.example.com/a b"}, "bad_url", "destination_url"),
    ({"fallback_url": "data:text/html,hi"}, "bad_url", "fallback_url"),
    ({"deep_link_hosts": ["https://shop.example.com"]}, "bad_host", "deep_link_hosts[0]"),
    ({"deep_link_hosts": ["*.example.com"]}, "bad_host", "deep_link_hosts[0]"),
    ({"deep_link_hosts": "shop.example.com"}, "invalid", "deep_link_hosts"),
    ({"attribution_model": "time_decay"}, "bad_attribution_model", "attribution_model"),
    ({"attribution_window_days": 0}, "invalid", "attribution_window_days"),
    ({"hold_days": "30"}, "invalid", "hold_days"),
    ({"hold_days": -1}, "invalid", "hold_days"),
    ({"budget": 100}, "bad_amount", "budget"),
    ({"budget": "100.001"}, "bad_amount", "budget"),
    ({"budget": "1e3"}, "bad_amount", "budget"),
    ({"budget": "-5.00"}, "bad_amount", "budget"),
    ({"currency": "USD"}, "currency_mismatch", "currency"),
    ({"default_event": "refund"}, "unknown_default_event", "default_event"),
    ({"events": []}, "invalid", "events"),
    ({"events": None}, "missing_field", "events"),
    (_events(FEE, FEE), "duplicate_event_key", "events[1].key"),
    (_events({**FEE, "key": "bad key"}), "bad_event_key", "events[0].key"),
    (_events({**FEE, "client_fee_percent": "5"}), "bad_event_pricing", "events[0].client_fee"),
    (_events({"key": "sale", "payout": "1.00"}), "bad_event_pricing", "events[0].client_fee"),
    (_events({**FEE, "payout_percent": "5"}), "bad_event_pricing", "events[0].payout"),
    (_events({"key": "sale", "client_fee": "1.00"}), "bad_event_pricing", "events[0].payout"),
    (_events({**FEE, "payout": "10.01"}), "payout_above_fee", "events[0].payout"),
    (_events({**FEE, "client_fee": 10}), "bad_amount", "events[0].client_fee"),
    (
        _events({"key": "sale", "client_fee_percent": "100.5", "payout": "1"}),
        "bad_percent",
        "events[0].client_fee_percent",
    ),
    (
        _events({"key": "sale", "client_fee": "1", "payout_percent": "12.34567"}),
        "bad_percent",
        "events[0].payout_percent",
    ),
    (
        _events({"key": "click", "client_fee_percent": "5", "payout": "0"}),
        "bad_event_pricing",
        "events[0].client_fee_percent",
    ),
    (_events({**FEE, "min_duration_s": -1}), "invalid", "events[0].min_duration_s"),
    (_events({**FEE, "min_duration_s": 1.5}), "invalid", "events[0].min_duration_s"),
    (_events({**FEE, "min_amount": "ten"}), "bad_amount", "events[0].min_amount"),
    (_events({**FEE, "one_per_click": 1}), "invalid", "events[0].one_per_click"),
    (_events({**FEE, "payuot": "1"}), "unknown_field", "events[0].payuot"),
    ({"colour": "red"}, "unknown_field", "colour"),
]


def test_create_campaign_validation(app, client):
    acme = make_client(currency="EUR")
    api = staff_api(client)
    for change, code, field in BAD_CAMPAIGNS:
        body = campaign_body(acme.id)
        body.update(change)
        assert_error(api.post("/campaigns", body), 400, code, field)
    assert db.session.query(Campaign).count() == 0


def test_only_staff_creates_campaigns(client):
    acme = make_client()
    assert_error(client_api(client, acme).post("/campaigns", campaign_body(acme.id)), 403, "forbidden")
    assert_error(
        partner_api(client, make_partner()).post("/campaigns", campaign_body(acme.id)), 403, "forbidden"
    )


def test_list_campaigns_filters_and_client_scope(client):
    x, y = make_client(), make_client()
    x1 = make_campaign(x)
    x2 = make_campaign(x, status="paused")
    y1 = make_campaign(y)
    api = staff_api(client)
    ids = lambda resp: [c["id"] for c in resp.get_json()["items"]]
    assert ids(api.get("/campaigns")) == [str(x1.id), str(x2.id), str(y1.id)]
    assert ids(api.get("/campaigns", query_string={"client_id": x.id})) == [str(x1.id), str(x2.id)]
    assert ids(api.get("/campaigns", query_string={"status": "paused"})) == [str(x2.id)]
    assert_error(api.get("/campaigns", query_string={"status": "gone"}), 400, "bad_status", "status")
    assert_error(api.get("/campaigns", query_string={"client_id": "x1"}), 400, "bad_id", "client_id")
    capi = client_api(client, x)
    assert ids(capi.get("/campaigns")) == [str(x1.id), str(x2.id)]
    assert ids(capi.get("/campaigns", query_string={"client_id": y.id})) == []
    assert_error(partner_api(client, make_partner()).get("/campaigns"), 403, "forbidden")


def test_get_campaign_spent_and_tenants(client):
    x, y = make_client(), make_client()
    cx, cy = make_campaign(x, budget_minor=10000), make_campaign(y)
    cx.spent_minor = 1234
    db.session.commit()
    got = staff_api(client).get(f"/campaigns/{cx.id}").get_json()
    assert got["spent"] == "12.34" and got["budget"] == "100.00"
    capi = client_api(client, x)
    assert capi.get(f"/campaigns/{cx.id}").status_code == 200
    assert_error(capi.get(f"/campaigns/{cy.id}"), 404, "not_found")
    assert_error(capi.get("/campaigns/424242"), 404, "not_found")


def test_patch_campaign_staff(client):
    acme = make_client()
    api = staff_api(client)
    c = api.post("/campaigns", campaign_body(acme.id)).get_json()
    before = state.local_version()
    resp = api.patch(
        f"/campaigns/{c['id']}",
        {"status": "paused", "budget": None, "fallback_url": "https://shop.example.com/sorry"},
    )
    assert resp.status_code == 200, resp.get_json()
    got = resp.get_json()
    assert got["status"] == "paused" and got["budget"] is None
    assert got["fallback_url"] == "https://shop.example.com/sorry"
    assert state.local_version() > before  # the redirect sees it on the next click
    before = state.local_version()
    got = api.patch(f"/campaigns/{c['id']}", {"status": "active", "budget": "75.50"}).get_json()
    assert got["status"] == "active" and got["budget"] == "75.50"
    assert state.local_version() > before


def test_patch_campaign_replaces_event_pricing(client):
    acme = make_client()
    api = staff_api(client)
    c = api.post("/campaigns", campaign_body(acme.id)).get_json()
    new_events = [
        {"key": "sale", "label": "Sale", "client_fee": "20.00", "payout_percent": "40"},
        {"key": "signup", "label": "Signup", "client_fee": "1.00", "payout": "0.50"},
    ]
    resp = api.patch(f"/campaigns/{c['id']}", {"events": new_events})
    assert resp.status_code == 200, resp.get_json()
    events = resp.get_json()["events"]
    assert [e["key"] for e in events] == ["sale", "signup"]
    assert events[0]["client_fee"] == "20.00" and events[0]["client_fee_percent"] is None
    assert events[0]["payout_percent"] == "40" and events[0]["min_amount"] is None
    # dropping the default event needs a new default_event
    assert_error(
        api.patch(f"/campaigns/{c['id']}", {"events": [new_events[1]]}),
        400,
        "unknown_default_event",
        "default_event",
    )
    got = api.patch(
        f"/campaigns/{c['id']}", {"events": [new_events[1]], "default_event": "signup"}
    ).get_json()
    assert got["default_event"] == "signup" and [e["key"] for e in got["events"]] == ["signup"]


def test_patch_campaign_validation(client):
    acme = make_client()
    camp = make_campaign(acme)
    api = staff_api(client)
    assert_error(api.patch(f"/campaigns/{camp.id}", {"status": "archived"}), 400, "bad_status", "status")
    assert_error(api.patch(f"/campaigns/{camp.id}", {"budget": "12.345"}), 400, "bad_amount", "budget")
    assert_error(api.patch(f"/campaigns/{camp.id}", {"status": None}), 400, "invalid", "status")
    assert_error(api.patch(f"/campaigns/{camp.id}", {"client_id": "3"}), 400, "unknown_field", "client_id")
    assert_error(
        api.patch(f"/campaigns/{camp.id}", {"events": [{"key": "sale", "client_fee": "1.00"}]}),
        400,
        "bad_event_pricing",
        "events[0].payout",
    )
    assert_error(api.patch("/campaigns/999999", {"status": "paused"}), 404, "not_found")
    resp = api.patch(f"/campaigns/{camp.id}", data=b"{", headers={"Content-Type": "application/json"})
    assert_error(resp, 400, "bad_json")
    db.session.expire_all()
    assert db.session.get(Campaign, camp.id).status == "active"


def test_client_key_pauses_and_resumes_only_its_campaigns(client):
    x, y = make_client(), make_client()
    cx, cy = make_campaign(x), make_campaign(y)
    capi = client_api(client, x)
    resp = capi.patch(f"/campaigns/{cx.id}", {"status": "paused"})
    assert resp.status_code == 200 and resp.get_json()["status"] == "paused"
    assert capi.patch(f"/campaigns/{cx.id}", {"status": "active"}).get_json()["status"] == "active"
    assert_error(capi.patch(f"/campaigns/{cx.id}", {"budget": "1.00"}), 403, "forbidden", "budget")
    assert_error(capi.patch(f"/campaigns/{cy.id}", {"status": "paused"}), 404, "not_found")
    db.session.expire_all()
    assert db.session.get(Campaign, cy.id).status == "active"
    assert db.session.get(Campaign, cx.id).budget_minor is None
    assert_error(
        partner_api(client, make_partner()).patch(f"/campaigns/{cx.id}", {"status": "paused"}),
        403,
        "forbidden",
    )


def test_refused_patch_leaves_nothing_behind(client):
    """A PATCH refused half-way (valid budget, then a bad status) changes nothing, also when a
    later request in the same session commits."""
    camp = make_campaign(make_client(), budget_minor=1000)
    api = staff_api(client)
    assert_error(
        api.patch(f"/campaigns/{camp.id}", {"budget": "5.00", "status": "closed"}), 400, "bad_status"
    )
    assert api.patch(f"/campaigns/{camp.id}", {"fallback_url": None}).status_code == 200
    db.session.expire_all()
    got = db.session.get(Campaign, camp.id)
    assert got.budget_minor == 1000 and got.fallback_url is None


# --------------------------------------------------------------------------- (v2) visibility


def test_campaign_visibility_defaults_to_public_and_is_settable(client):
    acme = make_client()
    api = staff_api(client)
    v1 = api.post("/campaigns", campaign_body(acme.id)).get_json()  # a v1 body: no visibility
    assert v1["visibility"] == "public" and v1["auto_approve_partners"] is False
    for vis in ("public", "approval", "invite_only"):
        resp = api.post("/campaigns", campaign_body(acme.id, visibility=vis, auto_approve_partners=True))
        assert resp.status_code == 201, resp.get_json()
        got = api.get(f"/campaigns/{resp.get_json()['id']}").get_json()
        assert got["visibility"] == vis and got["auto_approve_partners"] is True
    resp = api.patch(f"/campaigns/{v1['id']}", {"visibility": "invite_only"})
    assert resp.status_code == 200 and resp.get_json()["visibility"] == "invite_only"
    assert db.session.get(Campaign, int(v1["id"])).visibility == "invite_only"


def test_campaign_visibility_refusals_change_nothing(client):
    acme = make_client()
    api = staff_api(client)
    for bad in ("secret", "", None, 1):
        assert_error(api.post("/campaigns", campaign_body(acme.id, visibility=bad)), 400, "bad_visibility",
                     "visibility")
    assert_error(api.post("/campaigns", campaign_body(acme.id, auto_approve_partners="yes")), 400, "invalid",
                 "auto_approve_partners")
    assert db.session.query(Campaign).count() == 0
    camp = make_campaign(acme)
    assert_error(api.patch(f"/campaigns/{camp.id}", {"visibility": "hidden"}), 400, "bad_visibility")
    # a client may pause and resume, not hide its campaign from partners
    assert_error(client_api(client, acme).patch(f"/campaigns/{camp.id}", {"visibility": "invite_only"}), 403,
                 "forbidden", "visibility")
    db.session.expire_all()
    assert db.session.get(Campaign, camp.id).visibility == "public"


def test_openapi_documents_visibility_and_the_grant_call(client):
    doc = client.get("/api/v1/openapi.json").get_json()
    schemas = doc["components"]["schemas"]
    for name in ("CampaignCreate", "CampaignPatch", "Campaign"):
        assert schemas[name]["properties"]["visibility"]["enum"] == ["public", "approval", "invite_only"]
    grant = doc["paths"]["/campaigns/{campaign_id}/partners"]["post"]
    assert {"201", "400", "403", "404"} <= set(grant["responses"])
    assert "campaign_not_available" in doc["paths"]["/links"]["post"]["description"]
