"""Malformed form bodies answer 400 on every POST route, never 500: a multipart part with no
name, a bad or missing boundary, a truncated body, a form that is not UTF-8; as a stranger and
signed in (staff, partner). ``/postback`` answers its own 400 and logs the refusal."""

import pytest
from sqlalchemy import select

from partnernet.extensions import db
from partnernet.models import PostbackLog
from tests.factories import make_partner, make_user

B = "pnBoundary7"
NAMELESS = (f"--{B}\r\nContent-Disposition: form-data\r\n\r\nvalue\r\n"
            f"--{B}\r\nContent-Disposition: form-data; name=\"ok\"\r\n\r\n1\r\n--{B}--\r\n").encode()
NAMELESS_FILE = (f"--{B}\r\nContent-Disposition: form-data; filename=\"a.txt\"\r\n"
                 f"Content-Type: text/plain\r\n\r\nhello\r\n--{B}--\r\n").encode()
TRUNCATED = f"--{B}\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\nhalf a val".encode()
MULTIPART = f"multipart/form-data; boundary={B}"

BODIES = {
    "nameless part": (NAMELESS, MULTIPART),
    "nameless file part": (NAMELESS_FILE, MULTIPART),
    "truncated": (TRUNCATED, MULTIPART),
    "no boundary": (NAMELESS, "multipart/form-data"),
    "wrong boundary": (NAMELESS, "multipart/form-data; boundary=somethingElse"),
    "bad header": (f"--{B}\r\nno colon here\r\n\r\nx\r\n--{B}--\r\n".encode(), MULTIPART),
    "not utf-8 url-encoded": (b"email=\xff\xfe&password=x", "application/x-www-form-urlencoded"),
}


def _post_paths(app) -> list[str]:
    paths = []
    for rule in app.url_map.iter_rules():
        if "POST" not in (rule.methods or ()):
            continue
        values = {arg: 1 for arg in rule.arguments}
        if "token" in values:
            values["token"] = "x"
        try:
            paths.append(rule.build(values, append_unknown=False)[1])
        except Exception:  # a converter that takes no 1: give it text
            paths.append(rule.build({arg: "x" for arg in rule.arguments}, append_unknown=False)[1])
    return sorted(set(paths))


def _sign_in(client, role):
    if role == "staff":
        make_user("staff@example.com", role="staff", password="Sunny-Meadow-42")
        email = "staff@example.com"
    else:
        p = make_partner()
        make_user(p.email, role="partner", password="Sunny-Meadow-42", partner_id=p.id)
        email = p.email
    r = client.post("/login", data={"email": email, "password": "Sunny-Meadow-42"})
    assert r.status_code == 302


@pytest.mark.parametrize("who", ["stranger", "staff", "partner"])
def test_every_post_route_answers_400_to_a_nameless_multipart_part(app, client, who):
    if who != "stranger":
        _sign_in(client, who)
    paths = _post_paths(app)
    assert "/login" in paths and "/postback" in paths and "/api/v1/clients" in paths and len(paths) > 30
    answers = {}
    for path in paths:
        r = client.post(path, data=NAMELESS, content_type=MULTIPART)
        answers[path] = r.status_code
    assert [p for p, code in answers.items() if code >= 500] == []
    # before any view: no route reads a form with a None name
    assert {code for code in answers.values()} <= {400}, {p: c for p, c in answers.items() if c != 400}


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_malformed_bodies_answer_400_on_pages_api_and_postback(app, client, kind):
    body, ctype = BODIES[kind]
    for path in ("/login", "/signup", "/api/v1/clients", "/postback"):
        r = client.post(path, data=body, content_type=ctype)
        assert r.status_code == 400, (path, r.status_code)
        if path.startswith("/api/"):
            assert r.get_json()["error"] == "bad_form"
        if path == "/postback":
            assert r.get_json()["ok"] is False and r.get_json()["error"] == "bad_json"


def test_postback_logs_a_malformed_body_refusal(app, client):
    r = client.post("/postback?key=pk_nope&click_id=" + "c" * 5000, data=NAMELESS, content_type=MULTIPART)
    assert r.status_code == 400 and "no name" in r.get_json()["message"]
    row = db.session.scalar(select(PostbackLog))
    assert row.http_status == 400 and row.outcome == "bad_json" and "no name" in row.message
    assert row.params["key"] == "pk_nope" and len(row.params["click_id"]) == 256


def test_a_well_formed_multipart_form_still_works(app, client):
    make_user("staff@example.com", role="staff", password="Sunny-Meadow-42")
    body = (f"--{B}\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\nstaff@example.com\r\n"
            f"--{B}\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\nSunny-Meadow-42\r\n--{B}--\r\n")
    r = client.post("/login", data=body.encode(), content_type=MULTIPART)
    assert r.status_code == 302
