"""What a partner may do (CONTRACT §5 (v2) "What a partner may do and see"): a partner key or
portal session creates links only on campaigns it may promote, never sets a coupon code or a
tracking number, never acts for another partner; each attack is refused with nothing stored,
and a postback naming the refused code or number credits no one."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from partnernet.catalog import access
from partnernet.extensions import db
from partnernet.models import (
    AuditLog,
    CampaignApplication,
    Conversion,
    CouponRequest,
    Link,
    PostbackLog,
    TrackingNumber,
)
from partnernet.partners import applications
from tests.factories import make_campaign, make_client, make_link, make_partner, make_user
from tests.web.test_api_support import Api, assert_error, new_key, partner_api, staff_api

PW = "Sunny-Meadow-42"


def _count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


@pytest.fixture
def net(app):
    """A client with one campaign of each visibility, an approved affiliate ``p`` (with a key
    and a portal user), an approved influencer ``q`` and a staff user."""
    acme = make_client()
    camps = {}
    for vis in access.VISIBILITIES:
        camp = make_campaign(acme, deep_link_hosts=["acme.example"])
        camp.visibility = vis
        camps[vis] = camp
    db.session.commit()
    p, q = make_partner(), make_partner(kind="influencer")
    staff = make_user("boss@example.com")
    return {"client": acme, **camps, "p": p, "q": q, "staff": staff}


def _snapshot() -> tuple[int, ...]:
    """Row counts of everything a refused link call could leave behind."""
    free = db.session.scalar(select(func.count()).select_from(TrackingNumber)
                             .where(TrackingNumber.link_id.is_(None)))
    return (_count(Link), _count(CampaignApplication), _count(CouponRequest), free, _count(AuditLog))


# --------------------------------------------------------------------------- the rule itself


@pytest.mark.parametrize("partner_status,visibility,app_status,expected", [
    ("approved", "public", None, None),
    ("approved", "public", "pending", None),
    ("approved", "public", "approved", None),
    ("approved", "public", "rejected", "campaign_not_available"),  # staff's decision stands
    ("approved", None, None, None),  # a row without visibility is public
    ("approved", "approval", None, "campaign_not_available"),
    ("approved", "approval", "pending", "campaign_not_available"),
    ("approved", "approval", "rejected", "campaign_not_available"),
    ("approved", "approval", "approved", None),
    ("approved", "invite_only", None, "campaign_not_available"),
    ("approved", "invite_only", "pending", "campaign_not_available"),
    ("approved", "invite_only", "approved", None),
    ("pending", "public", None, "partner_not_approved"),
    ("suspended", "invite_only", "approved", "partner_not_approved"),
    ("rejected", "approval", "approved", "partner_not_approved"),
])
def test_promotion_rule(partner_status, visibility, app_status, expected):
    assert access.promotion_refusal(partner_status, visibility, app_status) == expected


# --------------------------------------------------------------------------- partner key attacks


def test_partner_key_link_on_public_campaign_works(client, net):
    r = partner_api(client, net["p"]).post("/links", {"campaign_id": str(net["public"].id)})
    assert r.status_code == 201 and r.get_json()["partner_id"] == str(net["p"].id)
    assert _count(CampaignApplication) == 0  # public: no application needed, none written


@pytest.mark.parametrize("which", ["invite_only", "approval"])
def test_partner_key_link_on_campaign_without_access_is_refused(client, net, which):
    papi = partner_api(client, net["p"])
    before = _snapshot()
    assert_error(papi.post("/links", {"campaign_id": str(net[which].id)}), 403, "campaign_not_available",
                 "campaign_id")
    # the answer for a campaign that does not exist is the same, to the byte: an invite-only one stays hidden
    hidden = papi.post("/links", {"campaign_id": str(net[which].id)})
    missing = papi.post("/links", {"campaign_id": "999999"})
    assert (missing.status_code, missing.get_json()) == (hidden.status_code, hidden.get_json())
    assert _snapshot() == before


def test_partner_key_link_after_application_rejected_is_refused(client, net):
    p, staff = net["p"], net["staff"]
    papi = partner_api(client, p)
    app = applications.apply_to_campaign(p.id, net["approval"].id)
    assert app.status == "pending"
    assert_error(papi.post("/links", {"campaign_id": str(net["approval"].id)}), 403, "campaign_not_available")
    applications.reject_application(app.id, staff.id, "not a fit")
    before = _snapshot()
    assert_error(papi.post("/links", {"campaign_id": str(net["approval"].id)}), 403, "campaign_not_available")
    assert _snapshot() == before
    # approved: it works; staff revoke it (approved → rejected): refused again
    applications.approve_application(app.id, staff.id)
    assert papi.post("/links", {"campaign_id": str(net["approval"].id)}).status_code == 201
    applications.reject_application(app.id, staff.id, "revoked")
    assert_error(papi.post("/links", {"campaign_id": str(net["approval"].id)}), 403, "campaign_not_available")
    # a rejection keeps the partner off a public campaign too
    pub = CampaignApplication(partner_id=p.id, campaign_id=net["public"].id, status="rejected")
    db.session.add(pub)
    db.session.commit()
    assert_error(papi.post("/links", {"campaign_id": str(net["public"].id)}), 403, "campaign_not_available")
    assert _count(Link) == 1


@pytest.mark.parametrize("field,value", [
    ("coupon_code", "MYOWN10"),
    ("coupon_code", "not a valid code!"),  # refused for who sends it, before its shape
    ("tracking_number", "+14155550177"),
])
def test_partner_key_may_not_set_coupon_or_number(client, net, field, value):
    papi = partner_api(client, net["p"])
    before = _snapshot()
    assert_error(papi.post("/links", {"campaign_id": str(net["public"].id), field: value}), 403, "forbidden",
                 field)
    assert _snapshot() == before
    # null is the same as leaving it out
    assert papi.post("/links", {"campaign_id": str(net["public"].id), field: None}).status_code == 201


def test_partner_key_may_not_take_a_pool_number_or_a_requested_code_and_postbacks_credit_no_one(client, net):
    p, q, acme = net["p"], net["q"], net["client"]
    sapi = staff_api(client)
    assert sapi.post("/tracking-numbers", {"numbers": ["+14155550123"]}).status_code == 201
    # q (an influencer) asked for a vanity code on its link; staff have not decided yet
    ql = make_link(q, net["public"])
    r = partner_api(client, q).post(f"/links/{ql.id}/coupon-requests", {"code": "SUMMER50"})
    assert r.status_code == 201, r.get_json()
    papi = partner_api(client, p)
    before = _snapshot()
    pub = str(net["public"].id)
    assert_error(papi.post("/links", {"campaign_id": pub, "tracking_number": "+14155550123"}),
                 403, "forbidden", "tracking_number")
    assert_error(papi.post("/links", {"campaign_id": str(net["public"].id), "coupon_code": "summer50"}),
                 403, "forbidden", "coupon_code")
    assert _snapshot() == before
    assert db.session.scalar(select(TrackingNumber.link_id)) is None  # still free in the pool
    assert db.session.scalar(select(CouponRequest.status)) == "pending"  # still q's request
    # the client's postbacks with that code or number find no link: nothing is credited to p
    for ident in ({"coupon": "SUMMER50"}, {"number": "+14155550123"}):
        r = client.get("/postback", query_string={"key": acme.postback_key, "txn_id": "ord-1", **ident})
        assert r.status_code == 404 and r.get_json()["error"] in ("unknown_coupon", "unknown_number")
    assert _count(Conversion) == 0 and _count(PostbackLog) == 2


def test_partner_key_may_not_name_another_partner(client, net):
    p, q = net["p"], net["q"]
    papi = partner_api(client, p)
    before = _snapshot()
    for other in (str(q.id), "999999", "not-an-id"):
        assert_error(papi.post("/links", {"partner_id": other, "campaign_id": str(net["public"].id)}), 403,
                     "forbidden", "partner_id")
    assert _snapshot() == before
    ok = papi.post("/links", {"partner_id": str(p.id), "campaign_id": str(net["public"].id)})
    assert ok.status_code == 201


def test_partner_key_of_a_partner_not_approved(client, net):
    pending = make_partner(status="pending")
    for campaign_id in (str(net["public"].id), str(net["invite_only"].id), "999999"):  # existence not told
        assert_error(partner_api(client, pending).post("/links", {"campaign_id": campaign_id}), 409,
                     "partner_not_approved")
    assert _count(Link) == 0


# --------------------------------------------------------------------------- staff grants


def test_grant_access_call(client, net):
    p, camp = net["p"], net["invite_only"]
    key, staff_id = new_key("staff")
    sapi = Api(client, key)
    papi = partner_api(client, p)
    assert_error(papi.post("/links", {"campaign_id": str(camp.id)}), 403, "campaign_not_available")
    r = sapi.post(f"/campaigns/{camp.id}/partners", {"partner_id": str(p.id)})
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    assert body["status"] == "approved"
    assert body["partner_id"] == str(p.id) and body["campaign_id"] == str(camp.id)
    again = sapi.post(f"/campaigns/{camp.id}/partners", {"partner_id": p.id})
    assert again.status_code == 200 and again.get_json()["id"] == body["id"]
    assert _count(CampaignApplication) == 1
    grant = db.session.scalar(select(AuditLog).where(AuditLog.action == "application.grant"))
    assert grant.actor_user_id == staff_id and grant.after == {"status": "approved"}
    assert papi.post("/links", {"campaign_id": str(camp.id)}).status_code == 201
    # a rejected application is approved by a grant (201: access is new)
    app = applications.apply_to_campaign(net["q"].id, net["approval"].id)
    applications.reject_application(app.id, net["staff"].id)
    r = sapi.post(f"/campaigns/{net['approval'].id}/partners", {"partner_id": str(net["q"].id)})
    assert r.status_code == 201
    assert access.may_promote(net["q"].id, net["approval"].id)


def test_grant_access_refusals(client, net):
    camp = net["invite_only"]
    sapi, papi = staff_api(client), partner_api(client, net["p"])
    before = _snapshot()
    assert_error(sapi.post(f"/campaigns/{camp.id}/partners", {"partner_id": "999999"}), 400,
                 "unknown_partner")
    assert_error(sapi.post(f"/campaigns/{camp.id}/partners", {"partner_id": "x"}), 400, "unknown_partner")
    assert_error(sapi.post(f"/campaigns/{camp.id}/partners", {}), 400, "missing_field", "partner_id")
    assert_error(sapi.post(f"/campaigns/{camp.id}/partners", {"partner_id": "1", "note": "x"}), 400,
                 "unknown_field")
    assert_error(sapi.post("/campaigns/999999/partners", {"partner_id": str(net["p"].id)}), 404, "not_found")
    assert_error(papi.post(f"/campaigns/{camp.id}/partners", {"partner_id": str(net["p"].id)}), 403,
                 "forbidden")
    assert _snapshot() == before


def test_staff_link_keeps_v1_and_grants_access_where_needed(client, net):
    p, q = net["p"], net["q"]
    key, staff_id = new_key("staff")
    sapi = Api(client, key)
    # v1: a coupon code and a number on a public campaign; no access row is needed or written
    r = sapi.post("/links", {"partner_id": str(p.id), "campaign_id": str(net["public"].id),
                             "coupon_code": "STAFF10", "tracking_number": "+14155550188"})
    assert r.status_code == 201 and r.get_json()["coupon_code"] == "STAFF10"
    assert _count(CampaignApplication) == 0
    # a staff link on an invite-only campaign assigns the partner to it: access is granted
    r = sapi.post("/links", {"partner_id": str(q.id), "campaign_id": str(net["invite_only"].id)})
    assert r.status_code == 201
    app = db.session.scalar(select(CampaignApplication))
    assert (app.partner_id, app.campaign_id, app.status, app.decided_by) == (q.id, net["invite_only"].id,
                                                                             "approved", staff_id)
    r = partner_api(client, q).post("/links", {"campaign_id": str(net["invite_only"].id)})
    assert r.status_code == 201
    # a refused staff link grants nothing
    before = _snapshot()
    assert_error(sapi.post("/links", {"partner_id": str(p.id), "campaign_id": str(net["approval"].id),
                                      "coupon_code": "staff10"}), 409, "duplicate_coupon_code")
    assert_error(sapi.post("/links", {"partner_id": str(p.id), "campaign_id": str(net["approval"].id),
                                      "channel": "tv"}), 400, "bad_channel")
    assert _snapshot() == before
    assert not access.may_promote(p.id, net["approval"].id)


def test_staff_link_with_a_pool_number_takes_it_from_the_pool(client, net):
    sapi = staff_api(client)
    sapi.post("/tracking-numbers", {"numbers": ["+14155550150"]})
    r = sapi.post("/links", {"partner_id": str(net["p"].id), "campaign_id": str(net["public"].id),
                             "tracking_number": "+14155550150"})
    assert r.status_code == 201
    assert db.session.scalar(select(TrackingNumber.link_id)) == int(r.get_json()["id"])
    # a code a partner's vanity request waits for is taken for staff too
    ql = make_link(net["q"], net["public"])
    r = partner_api(client, net["q"]).post(f"/links/{ql.id}/coupon-requests", {"code": "Q-DEAL"})
    assert r.status_code == 201
    assert_error(sapi.post("/links", {"partner_id": str(net["p"].id), "campaign_id": str(net["public"].id),
                                      "coupon_code": "q-deal"}), 409, "duplicate_coupon_code")


# --------------------------------------------------------------------------- the portal


def _login_partner(client, partner):
    make_user(partner.email, role="partner", password=PW, partner_id=partner.id)
    r = client.post("/login", data={"email": partner.email, "password": PW})
    assert r.status_code == 302


def test_portal_marketplace_and_link_builder_follow_the_rule(client, net):
    p = net["p"]
    _login_partner(client, p)
    page = client.get("/partner/campaigns").data.decode()
    assert net["public"].name in page and net["approval"].name in page and net["invite_only"].name not in page
    assert f'/partner/links/new?campaign={net["public"].id}' in page
    assert f'/partner/links/new?campaign={net["approval"].id}' not in page
    builder = client.get("/partner/links/new").data.decode()
    assert net["public"].name in builder
    assert net["approval"].name not in builder and net["invite_only"].name not in builder
    before = _snapshot()
    for which in ("approval", "invite_only"):
        r = client.post("/partner/links/new", data={"campaign_id": net[which].id, "channel": "social"})
        assert r.status_code == 400
    assert client.post(f"/partner/campaigns/{net['invite_only'].id}/apply").status_code == 404
    # a public campaign needs no application: none is written
    assert client.post(f"/partner/campaigns/{net['public'].id}/apply").status_code == 303
    assert _snapshot() == before
    r = client.post("/partner/links/new", data={"campaign_id": net["public"].id, "channel": "social"})
    assert r.status_code == 302
    # once staff grant the invite-only campaign, it shows and works
    access.grant_access(net["invite_only"].id, p.id, net["staff"].id)
    assert net["invite_only"].name in client.get("/partner/campaigns").data.decode()
    r = client.post("/partner/links/new", data={"campaign_id": net["invite_only"].id, "channel": "social"})
    assert r.status_code == 302


def test_portal_rejected_application_closes_the_link_builder(client, net):
    p = net["p"]
    _login_partner(client, p)
    assert client.post(f"/partner/campaigns/{net['approval'].id}/apply").status_code == 302
    app = db.session.scalar(select(CampaignApplication))
    applications.approve_application(app.id, net["staff"].id)
    assert net["approval"].name in client.get("/partner/links/new").data.decode()
    applications.reject_application(app.id, net["staff"].id, "revoked")
    assert net["approval"].name not in client.get("/partner/links/new").data.decode()
    r = client.post("/partner/links/new", data={"campaign_id": net["approval"].id, "channel": "social"})
    assert r.status_code == 400 and _count(Link) == 0


def test_portal_never_assigns_a_coupon_code(client, net):
    p, q = net["p"], net["q"]
    # an affiliate's form has no code field; a posted one is ignored
    _login_partner(client, p)
    r = client.post("/partner/links/new", data={"campaign_id": net["public"].id, "channel": "social",
                                                "coupon_code": "FREE100"})
    assert r.status_code == 302
    assert db.session.scalar(select(Link.coupon_code)) is None and _count(CouponRequest) == 0
    client.post("/logout")
    # an influencer's code is a request for staff, filed with the link in one transaction
    _login_partner(client, q)
    r = client.post("/partner/links/new", data={"campaign_id": net["public"].id, "channel": "social",
                                                "coupon_code": "QUEEN20"})
    assert r.status_code == 302
    link = db.session.scalar(select(Link).where(Link.partner_id == q.id))
    assert link.coupon_code is None
    assert db.session.scalar(select(CouponRequest.code).where(CouponRequest.link_id == link.id)) == "QUEEN20"
    # a code already requested (or a link's) refuses the whole form: no link without its request
    before = _snapshot()
    r = client.post("/partner/links/new", data={"campaign_id": net["public"].id, "channel": "social",
                                                "coupon_code": "queen20"})
    assert r.status_code == 409 and b"taken" in r.data
    r = client.post("/partner/links/new", data={"campaign_id": net["public"].id, "channel": "social",
                                                "coupon_code": "no spaces!"})
    assert r.status_code == 400
    assert _snapshot() == before
    # and the refused code credits no one
    r = client.get("/postback", query_string={"key": net["client"].postback_key, "coupon": "QUEEN20",
                                              "txn_id": "o-9"})
    assert r.status_code == 404 and _count(Conversion) == 0


# --------------------------------------------------------------------------- the staff console


def test_staff_console_sets_approval_and_grants_access(client, net):
    from partnernet.models import Campaign

    r = client.post("/login", data={"email": "boss@example.com", "password": "correct horse battery"})
    assert r.status_code == 302
    data = {"client_id": str(net["client"].id), "name": "On application", "status": "active",
            "destination_url": "https://acme.example/p", "fallback_url": "", "deep_link_hosts": "",
            "events": "impression | Impression | 4.00 | 50%", "default_event": "impression", "budget": "",
            "hold_days": "30", "attribution_window_days": "30", "attribution_model": "last_click",
            "visibility": "approval"}
    assert client.post("/staff/campaigns/new", data=data).status_code == 303
    camp = db.session.scalar(select(Campaign).where(Campaign.name == "On application"))
    assert camp.visibility == "approval" and not camp.auto_approve_partners
    page = client.get(f"/staff/campaigns/{camp.id}").data.decode()
    assert "Partners with access" in page and "Grant access" in page
    r = client.post(f"/staff/campaigns/{camp.id}/partners", data={"partner_id": net["p"].id})
    assert r.status_code == 303 and access.may_promote(net["p"].id, camp.id)
    assert net["p"].name in client.get(f"/staff/campaigns/{camp.id}").data.decode()
    assert client.post(f"/staff/campaigns/{camp.id}/partners", data={"partner_id": "x"}).status_code == 400
    r = client.post("/staff/campaigns/999999/partners", data={"partner_id": net["p"].id})
    assert r.status_code == 404
    assert _count(CampaignApplication) == 1
    # the partner's marketplace states the CPM price per 1,000 impressions
    client.post("/logout")
    _login_partner(client, net["p"])
    page = client.get("/partner/campaigns").data.decode()
    assert "$2.00 per 1,000 impressions" in page and "per impression" not in page
