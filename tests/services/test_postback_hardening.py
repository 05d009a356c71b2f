"""Postbacks with text that cannot be stored, huge amounts and too large bodies (CONTRACT §3 plus
the project's choices: 400 ``bad_encoding`` first in step 2, 401 for such a key, 413 ``too_large``),
on SQLite and PostgreSQL. Each case must answer its code, never 503 "retry later", and leave a
postback log row the staff page can show."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from partnernet.extensions import db
from partnernet.models import Conversion, PostbackLog
from partnernet.text import is_clean
from tests.factories import make_user
from tests.services.test_postback import click_id, last_log, refused, send, world  # noqa: F401


def post_raw_json(http, text: str):
    """POST ``text`` as a JSON body as sent (escapes such as ``\\ud800`` kept for the server)."""
    resp = http.post("/postback", data=text.encode("ascii"), content_type="application/json")
    assert resp.is_json, resp.data
    return resp.status_code, resp.get_json()


def test_lone_surrogate_in_a_value_is_bad_encoding(app, client, world):
    body = '{"key": "%s", "coupon": "Spring10", "txn_id": "NU-\\ud800", "amount": "30.00"}' % world.key
    refused(post_raw_json(client, body), 400, "bad_encoding")
    row = last_log()
    assert (row.http_status, row.outcome, row.client_id) == (400, "bad_encoding", world.adv.id)
    assert row.params["txn_id"] == "NU-\ufffd" and is_clean(row.message)
    assert db.session.scalar(select(func.count()).select_from(Conversion)) == 0


def test_lone_surrogate_in_the_key_is_unauthorized_without_a_lookup(app, client, world):
    body = '{"key": "%s\\udc00", "coupon": "Spring10", "txn_id": "NU-1"}' % world.key
    refused(post_raw_json(client, body), 401, "unauthorized")
    row = last_log()
    assert row.client_id is None and row.params["key"] == world.key + "\ufffd"


def test_surrogate_in_a_parameter_name_and_nul_in_json(app, client, world):
    cid = click_id(app, world.link)
    body = json.dumps({"key": world.key, "click_id": cid}).rstrip("}") + ', "sub\\ud83d": "x"}'
    refused(post_raw_json(client, body), 400, "bad_encoding")
    assert "sub\ufffd" in last_log().params
    body = json.dumps({"key": world.key, "click_id": cid, "event": "lead\u0000"})
    refused(post_raw_json(client, body), 400, "bad_encoding")


def test_bad_encoding_comes_after_step_one(app, client, world):
    refused(post_raw_json(client, '{"key": "nope", "coupon": "\\ud800"}'), 401, "unauthorized")


def test_staff_postback_log_page_shows_such_rows(app, client, world):
    post_raw_json(client, '{"key": "%s", "coupon": "\\ud800", "txn_id": "\\u0000"}' % world.key)
    make_user("boss@example.com")
    resp = client.post("/login", data={"email": "boss@example.com", "password": "correct horse battery"})
    assert resp.status_code == 302
    page = client.get("/staff/postback-log")
    assert page.status_code == 200 and b"bad_encoding" in page.data


@pytest.mark.parametrize("amount", ["1000000000000.01", "99999999999999999999", "92233720368547758.07"])
def test_amount_above_the_shared_maximum_is_bad_amount(app, client, world, amount):
    cid = click_id(app, world.link)
    refused(send(client, {"key": world.key, "click_id": cid, "event": "sale", "amount": amount}),
            400, "bad_amount")


def test_largest_amount_is_recorded(app, client, world):
    cid = click_id(app, world.link)
    st, body = send(client, {"key": world.key, "click_id": cid, "event": "sale", "amount": "1000000000000.00"})
    assert st == 201, body
    conv = db.session.get(Conversion, int(body["conversion_id"]))
    assert conv.amount_minor == 10**14 and conv.client_fee_minor == 10**13  # 10 % of the sale


@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded"])
def test_too_large_body_is_413_and_logged(app, client, world, content_type):
    filler = b"x" * (app.config["MAX_CONTENT_LENGTH"] + 1)
    resp = client.post(f"/postback?key={world.key}", data=filler, content_type=content_type)
    assert resp.status_code == 413, resp.data[:200]
    body = resp.get_json()
    assert body["ok"] is False and body["error"] == "too_large" and body["message"]
    row = last_log()
    assert (row.http_status, row.outcome) == (413, "too_large")
    assert row.params == {"key": world.key}


def test_too_many_multipart_fields_is_413(app, client, world):
    n = app.config["MAX_FORM_PARTS"] + 1
    data = {f"f{i}": "1" for i in range(n)}
    resp = client.post(f"/postback?key={world.key}", data=data, content_type="multipart/form-data")
    assert resp.status_code == 413 and resp.get_json()["error"] == "too_large"
    assert db.session.scalar(select(PostbackLog.outcome).order_by(PostbackLog.id.desc()).limit(1)) == "too_large"
