"""API: bearer keys, error shapes, pagination, and the clients calls (CONTRACT §5)."""

from __future__ import annotations

from partnernet.auth.keys import revoke_key
from partnernet.extensions import db
from partnernet.models import ApiKey, User
from tests.factories import make_client, make_partner
from tests.web.test_api_support import Api, assert_error, client_api, new_key, partner_api, staff_api

CLIENT_BODY = {"name": "Acme Shoes", "currency": "EUR", "website_url": "https://acme.example/"}


# ---------------------------------------------------------------- authentication


def test_no_key_answers_401(client):
    resp = client.get("/api/v1/clients")
    assert_error(resp, 401, "unauthorized")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_wrong_scheme_or_unknown_key_answers_401(client):
    key, _ = new_key("staff")
    assert_error(
        client.get("/api/v1/clients", headers={"Authorization": f"Basic {key}"}), 401, "unauthorized"
    )
    assert_error(Api(client, key + "x").get("/clients"), 401, "unauthorized")
    assert_error(Api(client, "pn_nope").get("/clients"), 401, "unauthorized")
    # the scheme is case-insensitive
    assert client.get("/api/v1/clients", headers={"Authorization": f"bearer {key}"}).status_code == 200


def test_revoked_key_answers_401(client):
    key, user_id = new_key("staff")
    api = Api(client, key)
    assert api.get("/clients").status_code == 200
    row = db.session.query(ApiKey).filter_by(user_id=user_id).one()
    revoke_key(row.id, db.session.get(User, user_id))
    assert_error(api.get("/clients"), 401, "unauthorized")


def test_unknown_api_route_is_json_404(client):
    api = staff_api(client)
    assert_error(api.get("/nothing-here"), 404, "not_found")


# ---------------------------------------------------------------- POST /clients


def test_create_client(client):
    api = staff_api(client)
    resp = api.post("/clients", CLIENT_BODY)
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert isinstance(body["id"], str) and body["id"].isdigit()
    assert body["name"] == "Acme Shoes" and body["currency"] == "EUR"
    assert body["website_url"] == "https://acme.example/"
    assert body["require_signature"] is False
    assert body["postback_key"].startswith("pk_") and len(body["postback_secret"]) >= 32
    assert body["created_at"].endswith("Z")
    # require_signature can be set
    resp = api.post("/clients", {**CLIENT_BODY, "require_signature": True})
    assert resp.get_json()["require_signature"] is True
    assert resp.get_json()["postback_key"] != body["postback_key"]


def test_create_client_validation(client):
    api = staff_api(client)
    assert_error(
        api.post("/clients", {**CLIENT_BODY, "currency": "XXX"}), 400, "unknown_currency", "currency"
    )
    assert_error(
        api.post("/clients", {**CLIENT_BODY, "currency": "eur"}), 400, "unknown_currency", "currency"
    )
    assert_error(
        api.post("/clients", {k: v for k, v in CLIENT_BODY.items() if k != "name"}),
        400,
        "missing_field",
        "name",
    )
    assert_error(
        api.post("/clients", {**CLIENT_BODY, "website_url": "javascript:alert(1)"}),
        400,
        "bad_url",
        "website_url",
    )
    assert_error(
        api.post("/clients", {**CLIENT_BODY, "require_signature": "yes"}), 400, "invalid", "require_signature"
    )
    assert_error(api.post("/clients", {**CLIENT_BODY, "colour": "red"}), 400, "unknown_field", "colour")
    assert_error(api.post("/clients", {**CLIENT_BODY, "timezone": "Mars/Olympus"}), 400, "unknown_timezone")


def test_malformed_json_answers_bad_json(client):
    api = staff_api(client)
    for data in (b"{not json", b"[1, 2]", b'{"name": NaN}', b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000):
        resp = api.post("/clients", data=data, headers={"Content-Type": "application/json"})
        assert_error(resp, 400, "bad_json")


def test_only_staff_creates_clients(client):
    partner = make_partner()
    c = make_client()
    assert_error(partner_api(client, partner).post("/clients", CLIENT_BODY), 403, "forbidden")
    assert_error(client_api(client, c).post("/clients", CLIENT_BODY), 403, "forbidden")


# ---------------------------------------------------------------- GET /clients


def test_list_clients_filters_and_client_scope(client):
    api = staff_api(client)
    a = make_client(name="Alpha Shoes")
    b = make_client(name="Beta Bikes")
    # a user tied to b, found by its email
    new_key("client", client_id=b.id)
    from partnernet.models import User

    email_b = db.session.query(User).filter_by(client_id=b.id).one().email
    names = [c["name"] for c in api.get("/clients").get_json()["items"]]
    assert names == [a.name, b.name]
    got = api.get("/clients", query_string={"name": "alpha"}).get_json()["items"]
    assert [c["id"] for c in got] == [str(a.id)]
    got = api.get("/clients", query_string={"email": email_b.upper()}).get_json()["items"]
    assert [c["id"] for c in got] == [str(b.id)]
    assert api.get("/clients", query_string={"email": "nobody@example.com"}).get_json() == {
        "items": [],
        "next": None,
    }

    # a client's key sees its own record only
    capi = client_api(client, a)
    got = capi.get("/clients").get_json()["items"]
    assert [c["id"] for c in got] == [str(a.id)]
    assert got[0]["postback_secret"] == a.postback_secret
    # a partner key may not list clients
    assert_error(partner_api(client, make_partner()).get("/clients"), 403, "forbidden")


def test_get_client_and_tenant_isolation(client):
    a, b = make_client(), make_client()
    api = staff_api(client)
    resp = api.get(f"/clients/{a.id}")
    assert resp.status_code == 200 and resp.get_json()["id"] == str(a.id)
    assert_error(api.get("/clients/999999"), 404, "not_found")
    assert_error(api.get("/clients/abc"), 404, "not_found")
    assert_error(api.get("/clients/99999999999999999999999"), 404, "not_found")
    capi = client_api(client, a)
    assert capi.get(f"/clients/{a.id}").status_code == 200
    assert_error(capi.get(f"/clients/{b.id}"), 404, "not_found")


# ---------------------------------------------------------------- pagination


def test_pagination_keyset(client):
    api = staff_api(client)
    ids = [str(make_client().id) for _ in range(7)]
    seen, cursor, pages = [], None, 0
    while True:
        q = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        body = api.get("/clients", query_string=q).get_json()
        seen += [c["id"] for c in body["items"]]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert seen == ids and pages == 3
    # exactly a page's worth: no next
    body = api.get("/clients", query_string={"limit": 7}).get_json()
    assert len(body["items"]) == 7 and body["next"] is None
    # default limit is 50, so all 7 here
    assert len(api.get("/clients").get_json()["items"]) == 7


def test_pagination_bad_values(client):
    api = staff_api(client)
    for limit in ("0", "501", "-1", "ten", "1.5"):
        assert_error(api.get("/clients", query_string={"limit": limit}), 400, "bad_limit", "limit")
    assert api.get("/clients", query_string={"limit": "500"}).status_code == 200
    assert_error(api.get("/clients", query_string={"cursor": "abc"}), 400, "bad_cursor", "cursor")
