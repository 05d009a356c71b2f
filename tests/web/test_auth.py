"""Sign in and out: sessions, remember-me, `next`, rate limits, case-insensitive emails."""

import pytest

from partnernet.auth import throttle
from tests.factories import make_user

PASSWORD = "correct horse battery"


@pytest.fixture
def user(app):
    return make_user("Alice@Example.com", role="staff")


def _login(client, email, password=PASSWORD, **extra):
    return client.post("/login", data={"email": email, "password": password, **extra})


def test_login_page_renders(client):
    r = client.get("/login?next=/x")
    assert r.status_code == 200 and b"Sign in" in r.data and b'value="/x"' in r.data


def test_login_with_other_case_email_and_safe_next(client, user):
    r = _login(client, "alice@EXAMPLE.com", next="/api/v1/openapi.json")
    assert r.status_code == 302 and r.headers["Location"] == "/api/v1/openapi.json"


@pytest.mark.parametrize("nxt", ["//evil.example/x", "/\\evil.example", "https:evil.example", "https://evil.example"])
def test_unsafe_next_goes_home(client, user, nxt):
    r = _login(client, "alice@example.com", next=nxt)
    assert r.status_code == 302 and r.headers["Location"] == "/staff/"  # the staff landing page


def test_wrong_password_is_refused_and_form_shows_error(client, user):
    r = _login(client, "alice@example.com", password="nope-nope")
    assert r.status_code == 401 and b"wrong email or password" in r.data


def test_invalid_form_is_400(client):
    r = client.post("/login", data={"email": "not-an-email", "password": ""})
    assert r.status_code == 400


def test_account_is_rate_limited_after_five_failures(client, user):
    for _ in range(throttle.MAX_PER_ACCOUNT_IP):
        assert _login(client, "alice@example.com", password="bad-password").status_code == 401
    r = _login(client, "alice@example.com")  # even the right password is refused while locked
    assert r.status_code == 429


def test_session_is_renewed_at_login_and_logout_clears_remember_cookie(client, user):
    with client.session_transaction() as s:
        s["planted"] = "x"
    _login(client, "alice@example.com", remember="y")
    with client.session_transaction() as s:
        assert "planted" not in s and s.get("_user_id") is not None
    assert client.get_cookie("remember_token") is not None
    r = client.post("/logout")
    assert r.status_code == 302
    assert client.get_cookie("remember_token") is None
    with client.session_transaction() as s:
        assert s.get("_user_id") is None
