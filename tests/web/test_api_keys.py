"""API keys a user lists, creates and revokes (CONTRACT §5 v2 ``/api-keys``), from the API
and the pages.

Attacks tried: a revoked key used again (at once, and from another process), a partner
revoking or listing another user's keys, a key read back after creation, a revoke POST
without its CSRF token.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from partnernet import create_app
from partnernet.auth import keys
from partnernet.extensions import db
from partnernet.models import ApiKey, AuditLog
from tests.factories import make_partner, make_user

PW = "correct horse battery"


def _h(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def people(app):
    staff = make_user("boss@example.com", role="staff")
    p = make_partner()
    partner = make_user(p.email, role="partner", password=PW, partner_id=p.id)
    other_p = make_partner()
    other = make_user(other_p.email, role="partner", password=PW, partner_id=other_p.id)
    return {"staff": staff, "partner": partner, "other": other,
            "staff_key": keys.create_key(staff.id)[1], "partner_key": keys.create_key(partner.id)[1],
            "other_key": keys.create_key(other.id)[1]}


def test_create_shows_the_key_once_and_lists_without_it(client, people):
    r = client.post("/api/v1/api-keys", json={"label": "reporting script"}, headers=_h(people["partner_key"]))
    assert r.status_code == 201
    body = r.get_json()
    new_key = body["key"]
    assert new_key.startswith("pn_") and body["prefix"] == new_key[:10] and body["label"] == "reporting script"
    assert body["active"] is True and body["revoked_at"] is None and body["user_id"] == str(people["partner"].id)
    assert client.get("/api/v1/links", headers=_h(new_key)).status_code == 200
    listed = client.get("/api/v1/api-keys", headers=_h(new_key)).get_json()
    assert len(listed["items"]) == 2 and listed["next"] is None
    assert new_key not in str(listed) and all("key" not in k for k in listed["items"])
    assert db.session.scalar(select(ApiKey.key_hash).where(ApiKey.id == int(body["id"]))) != new_key


def test_a_revoked_key_answers_401_at_once(client, people):
    key = people["partner_key"]
    kid = client.get("/api/v1/api-keys", headers=_h(key)).get_json()["items"][0]["id"]
    r = client.delete(f"/api/v1/api-keys/{kid}", headers=_h(key))  # a key may revoke itself
    assert r.status_code == 200 and r.get_json()["active"] is False and r.get_json()["revoked_at"]
    r = client.get("/api/v1/links", headers=_h(key))
    assert r.status_code == 401 and r.get_json()["error"] == "unauthorized"
    row = db.session.scalar(select(AuditLog).where(AuditLog.action == "api_key.revoke"))
    assert row.target_id == kid and row.actor_user_id == people["partner"].id


def test_revocation_holds_in_another_process_at_once(app, people):
    """Another web process (its own app, engine and connection pool) refuses the key from the
    next request on: nothing about keys is cached per process."""
    other_process = create_app({**{k: app.config[k] for k in ("SQLALCHEMY_DATABASE_URI", "SECRET_KEY",
                                                              "PARTNERNET_BASE_URL")},
                                "TESTING": True, "WTF_CSRF_ENABLED": False, "REDIS_URL": None})
    key = people["partner_key"]
    with other_process.app_context():
        assert other_process.test_client().get("/api/v1/links", headers=_h(key)).status_code == 200
    kid = db.session.scalar(select(ApiKey.id).where(ApiKey.user_id == people["partner"].id))
    keys.revoke_key(kid, people["partner"])
    with other_process.app_context():
        assert other_process.test_client().get("/api/v1/links", headers=_h(key)).status_code == 401
        db.session.remove()
        db.engine.dispose()


def test_partners_cannot_touch_other_users_keys(client, people):
    theirs = db.session.scalar(select(ApiKey.id).where(ApiKey.user_id == people["other"].id))
    r = client.delete(f"/api/v1/api-keys/{theirs}", headers=_h(people["partner_key"]))
    assert r.status_code == 404 and r.get_json()["error"] == "not_found"
    assert client.get("/api/v1/links", headers=_h(people["other_key"])).status_code == 200
    r = client.get(f"/api/v1/api-keys?user_id={people['other'].id}", headers=_h(people["partner_key"]))
    assert r.status_code == 403
    own = client.get(f"/api/v1/api-keys?user_id={people['partner'].id}", headers=_h(people["partner_key"]))
    assert own.status_code == 200 and len(own.get_json()["items"]) == 1
    for bad in ("abc", "0", "99999999999", "999999"):
        assert client.delete(f"/api/v1/api-keys/{bad}", headers=_h(people["partner_key"])).status_code == 404


def test_staff_lists_and_revokes_any_key(client, people):
    staff_h = _h(people["staff_key"])
    mine = client.get("/api/v1/api-keys", headers=staff_h).get_json()["items"]
    assert [k["user_id"] for k in mine] == [str(people["staff"].id)]
    theirs = client.get(f"/api/v1/api-keys?user_id={people['other'].id}", headers=staff_h).get_json()["items"]
    assert len(theirs) == 1
    r = client.delete(f"/api/v1/api-keys/{theirs[0]['id']}", headers=staff_h)
    assert r.status_code == 200
    assert client.get("/api/v1/links", headers=_h(people["other_key"])).status_code == 401
    again = client.delete(f"/api/v1/api-keys/{theirs[0]['id']}", headers=staff_h)  # harmless repeat
    assert again.status_code == 200 and again.get_json()["revoked_at"] == r.get_json()["revoked_at"]
    assert len(db.session.scalars(select(AuditLog).where(AuditLog.action == "api_key.revoke")).all()) == 1
    assert client.get("/api/v1/api-keys?user_id=x", headers=staff_h).status_code == 400


def test_bad_bodies_are_refused(client, people):
    h = _h(people["partner_key"])
    assert client.post("/api/v1/api-keys", json={"owner": "x"}, headers=h).get_json()["error"] == "unknown_field"
    assert client.post("/api/v1/api-keys", json={"label": "x" * 101}, headers=h).get_json()["error"] == "bad_label"
    assert client.post("/api/v1/api-keys", json={"label": 5}, headers=h).get_json()["error"] == "bad_label"
    assert client.post("/api/v1/api-keys", data="[", headers=h).status_code == 400
    for _ in range(keys.MAX_ACTIVE_KEYS - 1):
        assert client.post("/api/v1/api-keys", headers=h).status_code == 201
    r = client.post("/api/v1/api-keys", headers=h)
    assert r.status_code == 400 and r.get_json()["error"] == "too_many_keys"


def test_account_page_creates_and_revokes_keys(client, people):
    assert client.post("/login", data={"email": "boss@example.com", "password": PW}).status_code == 302
    r = client.post("/account", data={"action": "api_key", "k-label": "ci"})
    key = re.search(r'id="new-key">(pn_[^<]+)<', r.data.decode()).group(1)
    assert client.get("/api/v1/users", headers=_h(key)).status_code == 200
    page = client.get("/account").data.decode()
    assert key not in page and "Revoke" in page and "ci" in page
    kid = db.session.scalar(select(ApiKey.id).where(ApiKey.prefix == key[:10]))
    r = client.post(f"/account/keys/{kid}/revoke", data={"next": "https://evil.example/"})
    assert r.status_code == 303 and r.headers["Location"] == "/account"
    assert client.get("/api/v1/users", headers=_h(key)).status_code == 401


def test_partner_profile_revokes_own_keys_only(client, people):
    assert client.post("/login", data={"email": people["partner"].email, "password": PW}).status_code == 302
    page = client.get("/partner/profile").data.decode()
    mine = db.session.scalar(select(ApiKey.id).where(ApiKey.user_id == people["partner"].id))
    theirs = db.session.scalar(select(ApiKey.id).where(ApiKey.user_id == people["other"].id))
    assert f"/account/keys/{mine}/revoke" in page
    assert client.post(f"/account/keys/{theirs}/revoke").status_code == 404
    assert client.get("/api/v1/links", headers=_h(people["other_key"])).status_code == 200
    r = client.post(f"/account/keys/{mine}/revoke", data={"next": "/partner/profile"})
    assert r.status_code == 303 and r.headers["Location"] == "/partner/profile"
    assert client.get("/api/v1/links", headers=_h(people["partner_key"])).status_code == 401


def test_staff_revokes_a_users_key_from_the_user_page(client, people):
    assert client.post("/login", data={"email": "boss@example.com", "password": PW}).status_code == 302
    theirs = db.session.scalar(select(ApiKey.id).where(ApiKey.user_id == people["other"].id))
    page = client.get(f"/staff/users/{people['other'].id}").data.decode()
    assert f"/account/keys/{theirs}/revoke" in page
    back = f"/staff/users/{people['other'].id}"
    assert client.post(f"/account/keys/{theirs}/revoke", data={"next": back}).headers["Location"] == back
    assert client.get("/api/v1/links", headers=_h(people["other_key"])).status_code == 401


def test_revoke_needs_the_csrf_token(app, client, people):
    assert client.post("/login", data={"email": people["partner"].email, "password": PW}).status_code == 302
    mine = db.session.scalar(select(ApiKey.id).where(ApiKey.user_id == people["partner"].id))
    app.config["WTF_CSRF_ENABLED"] = True
    try:
        assert client.post(f"/account/keys/{mine}/revoke").status_code == 400
    finally:
        app.config["WTF_CSRF_ENABLED"] = False
    assert client.get("/api/v1/links", headers=_h(people["partner_key"])).status_code == 200
