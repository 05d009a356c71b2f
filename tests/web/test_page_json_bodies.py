"""A JSON body posted to a server-rendered page (request_guards.page_json_problem).

Flask-WTF reads a JSON body as the page's form data, so a JSON value that is not a string (a
number, null, a list, an object) or a top-level array used to reach a WTForms validator as a
non-string and answer 500 (found by tests/web/test_fuzz_post_routes.py: ``{"name": 0}`` on
``/staff/clients/new``; ``/login`` is open to anyone). Such bodies now answer 400 before any
view runs and nothing is written; a JSON object of strings is still read as the form."""

import json

import pytest
from sqlalchemy import func, select

from partnernet.extensions import db
from partnernet.models import Client
from tests.factories import make_user

PASSWORD = "Sunny-Meadow-42"
BAD = {
    "number": {"email": 1, "password": "x"},
    "null": {"name": None},
    "list": {"name": ["a", "b"]},
    "object": {"name": {"a": "b"}},
    "bool": {"remember": True},
    "top-level array": [["email", "a@b.c"]],
    "NUL in a string": {"name": "a\x00b"},
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_json_body_that_is_not_an_object_of_strings_answers_400_on_a_page(app, client, kind):
    make_user("staff@example.com", role="staff", password=PASSWORD)
    body = json.dumps(BAD[kind])
    assert client.post("/login", data=body, content_type="application/json").status_code == 400
    r = client.post("/login", data={"email": "staff@example.com", "password": PASSWORD})
    assert r.status_code == 302
    r = client.post("/staff/clients/new", data=body, content_type="application/json")
    assert r.status_code == 400 and b"<html" in r.data
    assert db.session.scalar(select(func.count()).select_from(Client)) == 0


def test_a_json_object_of_strings_is_still_read_as_the_form(app, client):
    make_user("staff@example.com", role="staff", password=PASSWORD)
    r = client.post("/login", json={"email": "staff@example.com", "password": PASSWORD})
    assert r.status_code == 302 and r.headers["Location"].endswith("/staff/")
    r = client.post("/staff/clients/new", json={"name": 7})
    assert r.status_code == 400
    r = client.post("/staff/clients/new", json={"name": "Acme JSON", "currency": "EUR", "timezone": "UTC"})
    assert r.status_code in (302, 303)
    assert db.session.scalar(select(Client.currency).where(Client.name == "Acme JSON")) == "EUR"


def test_the_api_keeps_its_own_json_errors(app, client):
    r = client.post("/api/v1/clients", json={"name": 1})
    assert r.status_code == 401 and r.get_json()["error"] == "unauthorized"  # not the page guard's HTML
