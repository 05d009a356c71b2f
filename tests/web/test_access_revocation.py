"""Access that can be taken back (CONTRACT §5 v2): sessions and remember-me cookies end at once
on logout, password change or reset and deactivation; deactivated users' keys stop; staff
users pages; payout details need the password.

Attacks tried: an old session or remember-me cookie replayed from another browser after each
of those events, a deactivated user's key, a staff user deactivating itself, a payout change
from a stolen session without the password.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from partnernet.auth import keys
from partnernet.auth.sessions import load_user
from partnernet.extensions import db
from partnernet.models import AuditLog, OutboxEmail, Partner, User
from tests.factories import make_partner, make_user

PW = "correct horse battery"
NEW_PW = "Better-Pass-99"


class Browser:
    """A test client whose every request runs in a fresh app context, as in production: no
    ``g`` (where Flask-Login keeps the loaded user) and no database session carry over from
    one request to the next."""

    def __init__(self, app, cookies: dict | None = None):
        self.app, self.http = app, app.test_client()
        for name, value in (cookies or {}).items():
            self.http.set_cookie(name, value)

    def get(self, path, **kw):
        with self.app.app_context():
            return self.http.get(path, **kw)

    def post(self, path, **kw):
        with self.app.app_context():
            return self.http.post(path, **kw)

    def cookies(self, *names) -> dict:
        """The values of the cookies ``names`` (what a thief would copy)."""
        return {n: self.http.get_cookie(n).value for n in names}


def _login(browser, email, password=PW, remember=False):
    data = {"email": email, "password": password, **({"remember": "y"} if remember else {})}
    r = browser.post("/login", data=data)
    assert r.status_code == 302, r.data[:300]
    return r


def _replay(app, cookies: dict, path: str):
    """GET ``path`` from a fresh browser that holds only the copied ``cookies``."""
    return Browser(app, cookies).get(path)


def _fresh(model, oid):
    """Row ``oid`` of ``model`` as the database has it now (the requests wrote in other sessions)."""
    db.session.expire_all()
    return db.session.get(model, oid)


def _signed_in(resp) -> bool:
    return resp.status_code == 200


def _refused(resp) -> bool:
    return resp.status_code == 302 and "/login" in resp.headers["Location"]


@pytest.fixture
def staff(app):
    return make_user("boss@example.com", role="staff")


@pytest.fixture
def partner_user(app):
    p = make_partner()
    return make_user(p.email, role="partner", password=PW, partner_id=p.id)


# --------------------------------------------------------------------------- logout


def test_session_cookie_replayed_after_logout_is_refused(app, staff):
    client = Browser(app)
    _login(client, "boss@example.com")
    cookies = client.cookies("session")
    assert _signed_in(_replay(app, cookies, "/staff/"))
    client.post("/logout")
    assert _refused(_replay(app, cookies, "/staff/"))


def test_remember_me_cookie_replayed_after_logout_is_refused(app, staff):
    client = Browser(app)
    _login(client, "boss@example.com", remember=True)
    cookies = client.cookies("remember_token")
    assert _signed_in(_replay(app, cookies, "/staff/"))  # the cookie alone signs in
    client.post("/logout")
    assert _refused(_replay(app, cookies, "/staff/"))


def test_logout_ends_the_other_devices_too(app, staff):
    laptop, phone = Browser(app), Browser(app)
    _login(laptop, "boss@example.com")
    _login(phone, "boss@example.com", remember=True)
    laptop.post("/logout")
    assert _refused(phone.get("/staff/"))


# --------------------------------------------------------------------------- password change


def test_password_change_ends_other_sessions_and_keeps_this_one(app, partner_user):
    mine, other = Browser(app), Browser(app)
    _login(mine, partner_user.email)
    _login(other, partner_user.email, remember=True)
    stolen = other.cookies("session", "remember_token")
    r = mine.post("/partner/profile", data={"action": "password", "w-current_password": PW,
                                            "w-new_password": NEW_PW})
    assert r.status_code == 302
    assert _signed_in(mine.get("/partner/profile"))  # the browser that changed it stays in
    assert _refused(other.get("/partner/profile"))
    assert _refused(_replay(app, stolen, "/partner/profile"))
    assert _refused(_replay(app, {"remember_token": stolen["remember_token"]}, "/partner/profile"))


def test_account_page_password_change_for_staff(app, staff):
    mine, other = Browser(app), Browser(app)
    _login(mine, "boss@example.com")
    _login(other, "boss@example.com")
    r = mine.post("/account", data={"action": "password", "w-current_password": "wrong-wrong",
                                    "w-new_password": NEW_PW})
    assert r.status_code == 400 and b"current password is wrong" in r.data
    assert _signed_in(other.get("/staff/"))  # a refused change ends nothing
    r = mine.post("/account", data={"action": "password", "w-current_password": PW, "w-new_password": NEW_PW})
    assert r.status_code == 302
    assert _signed_in(mine.get("/staff/")) and _refused(other.get("/staff/"))


def test_password_reset_ends_every_session(app, partner_user):
    client = Browser(app)
    _login(client, partner_user.email, remember=True)
    stolen = client.cookies("session", "remember_token")
    anon = Browser(app)
    anon.post("/password-reset", data={"email": partner_user.email})
    body = db.session.scalar(select(OutboxEmail.body).where(OutboxEmail.kind == "password_reset"))
    token = re.search(r"/password-reset/(\S+)", body).group(1)
    assert anon.post(f"/password-reset/{token}", data={"password": NEW_PW}).status_code == 302
    assert _refused(_replay(app, stolen, "/partner/profile"))
    assert _refused(_replay(app, {"remember_token": stolen["remember_token"]}, "/partner/profile"))


def test_ids_without_the_current_token_are_refused(app, staff):
    assert load_user(staff.get_id()) is not None
    for forged in (str(staff.id), f"{staff.id}:", f"{staff.id}:{'x' * 32}", "x:y", "", f"{2**40}:a"):
        assert load_user(forged) is None


# --------------------------------------------------------------------------- deactivation


def test_deactivation_stops_sessions_remember_cookies_and_keys_at_once(app, staff, partner_user):
    victim = Browser(app)
    _login(victim, partner_user.email, remember=True)
    stolen = victim.cookies("session", "remember_token")
    _, key = keys.create_key(partner_user.id)
    _, staff_key = keys.create_key(staff.id)
    bearer = {"Authorization": f"Bearer {key}"}
    assert Browser(app).get("/api/v1/links", headers=bearer).status_code == 200

    api = Browser(app)
    r = api.post(f"/api/v1/users/{partner_user.id}/deactivate", headers={"Authorization": f"Bearer {staff_key}"})
    assert r.status_code == 200 and r.get_json()["active"] is False

    assert _refused(victim.get("/partner/profile"))
    assert _refused(_replay(app, stolen, "/partner/profile"))
    assert _refused(_replay(app, {"remember_token": stolen["remember_token"]}, "/partner/profile"))
    assert Browser(app).get("/api/v1/links", headers=bearer).status_code == 401
    assert Browser(app).post("/login", data={"email": partner_user.email, "password": PW}).status_code == 401

    r = api.post(f"/api/v1/users/{partner_user.id}/activate", headers={"Authorization": f"Bearer {staff_key}"})
    assert r.status_code == 200 and r.get_json()["active"] is True
    assert Browser(app).get("/api/v1/links", headers=bearer).status_code == 200  # unrevoked key again
    assert _refused(_replay(app, stolen, "/partner/profile"))  # old sessions stay ended
    actions = [a.action for a in db.session.scalars(select(AuditLog).order_by(AuditLog.id))]
    assert actions[-2:] == ["user.deactivate", "user.activate"]
    row = db.session.scalar(select(AuditLog).where(AuditLog.action == "user.deactivate"))
    assert row.actor_user_id == staff.id and row.target_id == str(partner_user.id)


def test_staff_cannot_deactivate_itself(app, staff):
    _, staff_key = keys.create_key(staff.id)
    r = Browser(app).post(f"/api/v1/users/{staff.id}/deactivate", headers={"Authorization": f"Bearer {staff_key}"})
    assert r.status_code == 409 and r.get_json()["error"] == "cannot_deactivate_self"
    assert _fresh(User, staff.id).active
    web = Browser(app)
    _login(web, "boss@example.com")
    assert web.post(f"/staff/users/{staff.id}/deactivate").status_code == 409
    assert _signed_in(web.get("/staff/"))


def test_users_calls_are_staff_only_and_list_with_filters(app, staff, partner_user):
    client_user = make_user("shop@example.com", role="client")
    _, staff_key = keys.create_key(staff.id)
    _, partner_key = keys.create_key(partner_user.id)
    http = Browser(app)
    h = {"Authorization": f"Bearer {staff_key}"}
    body = http.get("/api/v1/users", headers=h).get_json()
    assert [u["email"] for u in body["items"]] == ["boss@example.com", partner_user.email, "shop@example.com"]
    assert body["next"] is None
    by_email = {u["email"]: u for u in body["items"]}
    assert by_email[partner_user.email]["partner_id"] == str(partner_user.partner_id)
    assert by_email["shop@example.com"]["client_id"] == str(client_user.client_id)
    assert "partner_id" not in by_email["boss@example.com"] and "client_id" not in by_email["boss@example.com"]
    assert set(by_email["boss@example.com"]) >= {"id", "email", "role", "active"}
    assert [u["role"] for u in http.get("/api/v1/users?role=client", headers=h).get_json()["items"]] == ["client"]
    assert len(http.get("/api/v1/users?email=SHOP@example.com", headers=h).get_json()["items"]) == 1
    page1 = http.get("/api/v1/users?limit=2", headers=h).get_json()
    page2 = http.get(f"/api/v1/users?limit=2&cursor={page1['next']}", headers=h).get_json()
    assert len(page1["items"]) == 2 and [u["email"] for u in page2["items"]] == ["shop@example.com"]
    assert http.get("/api/v1/users?role=root", headers=h).get_json()["error"] == "bad_role"
    ph = {"Authorization": f"Bearer {partner_key}"}
    assert http.get("/api/v1/users", headers=ph).status_code == 403
    assert http.post(f"/api/v1/users/{staff.id}/deactivate", headers=ph).status_code == 403
    assert http.post("/api/v1/users/999999/deactivate", headers=h).status_code == 404
    assert http.post("/api/v1/users/abc/activate", headers=h).status_code == 404


def test_staff_users_pages_deactivate_and_activate(app, staff, partner_user):
    web = Browser(app)
    _login(web, "boss@example.com")
    page = web.get("/staff/users?role=partner").data.decode()
    assert partner_user.email in page and "boss@example.com" not in page.split("<table", 1)[1]
    assert web.get("/staff/users?role=root").status_code == 400
    victim = Browser(app)
    _login(victim, partner_user.email)
    r = web.post(f"/staff/users/{partner_user.id}/deactivate")
    assert r.status_code == 303
    assert _refused(victim.get("/partner/profile"))
    assert "deactivated" in web.get(f"/staff/users/{partner_user.id}").data.decode()
    assert web.post(f"/staff/users/{partner_user.id}/activate").status_code == 303
    assert _fresh(User, partner_user.id).active
    assert web.post(f"/staff/users/{partner_user.id}/delete").status_code == 404
    assert web.get("/staff/users/999999").status_code == 404
    partner_web = Browser(app)
    _login(partner_web, partner_user.email)
    assert partner_web.get("/staff/users").status_code == 404
    assert partner_web.post(f"/staff/users/{staff.id}/deactivate").status_code == 404


def test_staff_pages_need_csrf(app, staff, partner_user):
    web = Browser(app)
    _login(web, "boss@example.com")
    app.config["WTF_CSRF_ENABLED"] = True
    try:
        assert web.post(f"/staff/users/{partner_user.id}/deactivate").status_code == 400
    finally:
        app.config["WTF_CSRF_ENABLED"] = False
    assert _fresh(User, partner_user.id).active


# --------------------------------------------------------------------------- payout details


def test_payout_change_needs_the_password_and_emails_the_partner(app, partner_user):
    client = Browser(app)
    _login(client, partner_user.email)
    change = {"action": "payout", "p-payout_method": "bank", "p-payout_iban": "GB82 WEST 1234 5698 7654 32",
              "p-timezone": "UTC"}
    for password in ("", "wrong-password"):
        r = client.post("/partner/profile", data={**change, "p-current_password": password})
        assert r.status_code == 400 and b"current password" in r.data
        assert _fresh(Partner, partner_user.partner_id).iban is None
        assert db.session.scalar(select(OutboxEmail)) is None
    r = client.post("/partner/profile", data={**change, "p-current_password": PW})
    assert r.status_code == 302
    db.session.expire_all()
    assert _fresh(Partner, partner_user.partner_id).iban == "GB82WEST12345698765432"
    mail = db.session.scalar(select(OutboxEmail).where(OutboxEmail.kind == "payout_details_changed"))
    assert mail.to_addr == partner_user.email
    # the time zone alone needs no password and sends nothing
    r = client.post("/partner/profile", data={**change, "p-timezone": "Asia/Tokyo"})
    assert r.status_code == 302
    assert len(db.session.scalars(select(OutboxEmail)).all()) == 1
