"""Every state change leaves an audit row, whatever the surface (JSON API, staff console, client
and partner portals, CLI, sign-up), with who did it and the fields before and after; refused
changes and changes that change nothing leave none. SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from partnernet.extensions import db
from partnernet.models import AuditLog, Campaign, Client, Link, Partner, User
from tests.factories import make_campaign, make_client, make_partner, make_user
from tests.web.test_api_support import Api, campaign_body, new_key

PW = "correct horse battery"


def audit_rows(action=None, target_type=None):
    db.session.expire_all()
    stmt = select(AuditLog).order_by(AuditLog.id)
    if action:
        stmt = stmt.where(AuditLog.action == action)
    if target_type:
        stmt = stmt.where(AuditLog.target_type == target_type)
    return list(db.session.scalars(stmt))


def one(action, target_id=None):
    rows = [r for r in audit_rows(action) if target_id is None or r.target_id == str(target_id)]
    assert len(rows) == 1, [(r.action, r.target_id) for r in audit_rows()]
    return rows[0]


def login(http, email):
    assert http.post("/login", data={"email": email, "password": PW}).status_code == 302


def test_api_creates_and_changes_are_audited(app, client):
    key, staff_id = new_key("staff")
    api = Api(client, key)
    r = api.post("/clients", {"name": "Shop", "currency": "EUR", "website_url": "https://shop.example"})
    assert r.status_code == 201
    cid = r.get_json()["id"]
    row = one("client.create", cid)
    assert row.actor_user_id == staff_id and row.before is None
    assert row.after["name"] == "Shop" and row.after["currency"] == "EUR"
    assert r.get_json()["postback_secret"] not in str(row.after)  # never a secret

    r = api.post("/campaigns", campaign_body(cid))
    assert r.status_code == 201
    camp_id = r.get_json()["id"]
    created = one("campaign.create", camp_id)
    assert created.actor_user_id == staff_id and created.after["budget_minor"] == 50000
    assert [e["key"] for e in created.after["events"]] == ["sale", "lead", "call"]

    r = api.patch(f"/campaigns/{camp_id}", {"budget": "750.00", "fallback_url": "https://shop.example/x"})
    assert r.status_code == 200
    upd = one("campaign.update", camp_id)
    assert upd.before == {"budget_minor": 50000, "fallback_url": "https://shop.example.com/"}
    assert upd.after == {"budget_minor": 75000, "fallback_url": "https://shop.example/x"}
    assert api.patch(f"/campaigns/{camp_id}", {"budget": "750.00"}).status_code == 200  # no change: no row
    assert api.patch(f"/campaigns/{camp_id}", {"budget": "-1"}).status_code == 400  # refused: no row
    assert len(audit_rows("campaign.update")) == 1

    # a client's key pauses and resumes its own campaign
    ckey, client_user = new_key("client", client_id=int(cid))
    capi = Api(client, ckey)
    assert capi.patch(f"/campaigns/{camp_id}", {"status": "paused"}).status_code == 200
    assert capi.patch(f"/campaigns/{camp_id}", {"status": "active"}).status_code == 200
    pause, resume = one("campaign.pause", camp_id), one("campaign.resume", camp_id)
    assert (pause.actor_user_id, pause.before, pause.after) == (client_user, {"status": "active"}, {"status": "paused"})
    assert (resume.before, resume.after) == ({"status": "paused"}, {"status": "active"})
    assert capi.patch(f"/campaigns/{camp_id}", {"budget": "1.00"}).status_code == 403
    assert len(audit_rows(target_type="campaign")) == 4

    r = api.post("/partners", {"email": "ann@example.com", "name": "Ann", "kind": "affiliate"})
    assert r.status_code == 201
    pid = r.get_json()["id"]
    p = one("partner.create", pid)
    assert p.actor_user_id == staff_id and p.after["email"] == "ann@example.com" and p.after["status"] == "pending"
    assert api.post("/partners", {"email": "ann@example.com", "name": "Ann", "kind": "affiliate"}).status_code == 409
    assert len(audit_rows("partner.create")) == 1
    assert api.post(f"/partners/{pid}/approve").status_code == 200

    r = api.post("/links", {"partner_id": pid, "campaign_id": camp_id, "coupon_code": "ANN10"})
    assert r.status_code == 201
    link = one("link.create", r.get_json()["id"])
    assert link.actor_user_id == staff_id
    assert link.after == {"partner_id": int(pid), "campaign_id": int(camp_id), "channel": None, "deep_link": None,
                          "coupon_code": "ANN10", "tracking_number": None}
    pkey, partner_user = new_key("partner", partner_id=int(pid))
    r = Api(client, pkey).post("/links", {"campaign_id": camp_id})
    assert r.status_code == 201
    assert one("link.create", r.get_json()["id"]).actor_user_id == partner_user
    assert Api(client, pkey).post("/links", {"campaign_id": camp_id, "coupon_code": "X"}).status_code == 403
    assert len(audit_rows("link.create")) == 2


def test_staff_console_changes_are_audited_once(app, client):
    staff = make_user("boss@example.com")
    login(client, "boss@example.com")
    r = client.post("/staff/clients/new", data={"name": "Shop", "currency": "EUR", "website_url": "https://shop.example",
                                                "ip_allowlist": "", "timezone": "UTC"})
    assert r.status_code == 303
    c = db.session.scalars(select(Client).where(Client.name == "Shop")).one()
    assert one("client.create", c.id).actor_user_id == staff.id
    data = {"client_id": str(c.id), "name": "Spring", "status": "active", "destination_url": "https://acme.example/p",
            "fallback_url": "", "deep_link_hosts": "acme.example", "events": "sale | Sale | 8% | 50%",
            "default_event": "sale", "budget": "500.00", "hold_days": "14", "attribution_window_days": "7",
            "attribution_model": "linear"}
    assert client.post("/staff/campaigns/new", data=data).status_code == 303
    camp = db.session.scalars(select(Campaign).where(Campaign.name == "Spring")).one()
    created = one("campaign.create", camp.id)
    assert created.actor_user_id == staff.id and created.after["budget_minor"] == 50000
    assert client.post(f"/staff/campaigns/{camp.id}", data=dict(data, status="paused")).status_code == 303
    pause = one("campaign.pause", camp.id)
    assert (pause.before, pause.after) == ({"status": "active"}, {"status": "paused"})
    assert client.post(f"/staff/campaigns/{camp.id}", data=dict(data, budget="900.00")).status_code == 303
    upd = one("campaign.update", camp.id)
    assert (upd.before, upd.after) == ({"budget_minor": 50000, "status": "paused"},
                                       {"budget_minor": 90000, "status": "active"})
    assert client.post(f"/staff/campaigns/{camp.id}", data=dict(data, budget="-5")).status_code == 400
    assert len(audit_rows(target_type="campaign")) == 3


def test_client_portal_pause_resume_budget_and_caps_are_audited(app, client):
    adv = make_client()
    camp = make_campaign(adv, budget_minor=50000)
    user = make_user("ads@example.com", role="client", client_id=adv.id)
    login(client, "ads@example.com")
    assert client.post(f"/client/campaigns/{camp.id}/status", data={"status": "paused"}).status_code == 302
    assert client.post(f"/client/campaigns/{camp.id}/status", data={"status": "active"}).status_code == 302
    assert one("campaign.pause", camp.id).actor_user_id == user.id
    assert one("campaign.resume", camp.id).actor_user_id == user.id
    r = client.post(f"/client/campaigns/{camp.id}", data={"budget": "750.00", "daily_cap": "20", "monthly_cap": ""})
    assert r.status_code == 302
    limits = one("campaign.limits", camp.id)
    assert limits.actor_user_id == user.id
    assert (limits.before, limits.after) == ({"budget_minor": 50000, "daily_cap_minor": None},
                                             {"budget_minor": 75000, "daily_cap_minor": 2000})
    assert client.post(f"/client/campaigns/{camp.id}", data={"budget": "abc"}).status_code == 400
    r = client.post(f"/client/campaigns/{camp.id}", data={"budget": "750.00", "daily_cap": "20", "monthly_cap": ""})
    assert r.status_code == 302  # unchanged: no second row
    assert len(audit_rows("campaign.limits")) == 1


def test_partner_portal_link_and_signup_are_audited(app, client):
    from tests.web.test_partner_portal import _signup_data

    camp = make_campaign(make_client())
    partner = make_partner()
    user = make_user(partner.email, role="partner", partner_id=partner.id)
    login(client, partner.email)
    r = client.post("/partner/links/new", data={"campaign_id": camp.id, "channel": "social"})
    assert r.status_code == 302
    link = db.session.scalars(select(Link).where(Link.partner_id == partner.id)).one()
    row = one("link.create", link.id)
    assert row.actor_user_id == user.id and row.after["channel"] == "social"
    client.post("/logout")
    r = client.post("/signup", data=_signup_data())
    assert r.status_code == 200
    new = db.session.scalars(select(Partner).where(Partner.email == "new.partner@example.com")).one()
    row = one("partner.create", new.id)
    new_user = db.session.scalars(select(User).where(User.partner_id == new.id)).one()
    assert row.actor_user_id == new_user.id and row.after["status"] == "pending"
    assert "iban" not in str(row.after).lower()


def test_cli_users_create_audits_the_new_client_and_partner(app):
    runner = app.test_cli_runner()
    out = runner.invoke(args=["users", "create", "--email", "adv@example.com", "--password", PW, "--role", "client"])
    assert out.exit_code == 0, out.output
    user = db.session.scalars(select(User).where(User.email == "adv@example.com")).one()
    row = one("client.create", user.client_id)
    assert row.actor_user_id is None and row.after["name"] == "adv@example.com" and row.after["currency"] == "USD"
    out = runner.invoke(args=["users", "create", "--email", "aff@example.com", "--password", PW, "--role", "partner"])
    assert out.exit_code == 0, out.output
    user = db.session.scalars(select(User).where(User.email == "aff@example.com")).one()
    assert one("partner.create", user.partner_id).actor_user_id is None
    out = runner.invoke(args=["users", "create", "--email", "x@example.com", "--password", "short", "--role", "client"])
    assert out.exit_code != 0 and len(audit_rows("client.create")) == 1  # refused: nothing written
