"""Sign-in throttling and answers that reveal no account (CONTRACT §5 v2; README "Sign-in and access").

Attacks tried: concurrent wrong tries racing the limit, a stranger locking staff out, probing
which emails have accounts through the login, sign-up and password-reset answers and timing.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import func, select

from partnernet import clock
from partnernet.auth import throttle
from partnernet.extensions import db
from partnernet.models import OutboxEmail, Partner, User
from tests.factories import make_user

PW = "correct horse battery"
STRANGER = "198.51.100.7"
OFFICE = "203.0.113.20"


def _login(http, email, password=PW, ip="192.0.2.1"):
    return http.post("/login", data={"email": email, "password": password}, environ_base={"REMOTE_ADDR": ip})


def _concurrent_logins(app, n, email_of, password, ip):
    """POST /login from ``n`` threads released together; returns the status codes."""
    barrier = threading.Barrier(n)
    codes, errors = [None] * n, []

    def run(i):
        try:
            with app.app_context():
                http = app.test_client()
                barrier.wait(timeout=60)
                codes[i] = _login(http, email_of(i), password, ip).status_code
                db.session.remove()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    return codes


def test_twenty_concurrent_wrong_tries_get_five_password_checks(pg_app):
    make_user("boss@example.com", role="staff")
    codes = _concurrent_logins(pg_app, 20, lambda i: "boss@example.com", "wrong-password", STRANGER)
    assert sorted(codes) == [401] * throttle.MAX_PER_ACCOUNT_IP + [429] * (20 - throttle.MAX_PER_ACCOUNT_IP)
    http = pg_app.test_client()
    assert _login(http, "boss@example.com", ip=STRANGER).status_code == 429  # the right password too
    assert _login(http, "boss@example.com", ip=OFFICE).status_code == 302  # the owner, elsewhere


def test_concurrent_tries_at_many_accounts_hold_the_per_ip_limit(pg_app):
    n = throttle.MAX_PER_IP + 6
    codes = _concurrent_logins(pg_app, n, lambda i: f"guess{i}@example.com", "wrong-password", STRANGER)
    assert codes.count(401) == throttle.MAX_PER_IP and codes.count(429) == 6


def test_a_strangers_failures_never_lock_staff_out(client):
    make_user("boss@example.com", role="staff")
    for _ in range(40):  # far past both limits, from the stranger's IP
        assert _login(client, "boss@example.com", "guess-guess", ip=STRANGER).status_code in (401, 429)
    assert _login(client, "boss@example.com", "guess-guess", ip=STRANGER).status_code == 429
    other = client.application.test_client()
    assert _login(other, "boss@example.com", ip=OFFICE).status_code == 302


def test_a_block_ends_with_its_window(client):
    make_user("boss@example.com", role="staff")
    for _ in range(throttle.MAX_PER_ACCOUNT_IP):
        assert _login(client, "boss@example.com", "nope-nope", ip=STRANGER).status_code == 401
    r = _login(client, "boss@example.com", ip=STRANGER)
    assert r.status_code == 429 and r.headers.get("Retry-After")
    clock.set_now(clock.utcnow() + timedelta(seconds=throttle.WINDOW_S + 1))
    assert _login(client, "boss@example.com", ip=STRANGER).status_code == 302


def test_a_success_gives_its_tries_back(client):
    make_user("boss@example.com", role="staff")
    for _ in range(3):
        for _ in range(throttle.MAX_PER_ACCOUNT_IP - 1):
            assert _login(client, "boss@example.com", "nope-nope", ip=OFFICE).status_code == 401
        assert _login(client, "boss@example.com", ip=OFFICE).status_code == 302
        client.post("/logout")


def test_throttle_counts_hold_no_email(client):
    from partnernet.models import LoginThrottle

    _login(client, "secret.person@example.com", "nope-nope", ip=STRANGER)
    keys = list(db.session.scalars(select(LoginThrottle.key)))
    assert len(keys) == 2 and not any("secret" in k for k in keys)


def test_rows_of_past_windows_are_pruned(client, monkeypatch):
    from partnernet.models import LoginThrottle

    _login(client, "a@example.com", "nope-nope", ip=STRANGER)
    clock.set_now(clock.utcnow() + timedelta(seconds=throttle.WINDOW_S + 1))
    monkeypatch.setattr(throttle, "PRUNE_RATE", 1.0)
    assert _login(client, "b@example.com", "nope-nope", ip=OFFICE).status_code == 401
    keys = list(db.session.scalars(select(LoginThrottle.key)))
    assert len(keys) == 2 and all(OFFICE in k for k in keys)


def test_login_answers_the_same_for_known_unknown_and_deactivated(client, monkeypatch):
    import partnernet.auth.services as services

    make_user("known@example.com", role="staff")
    make_user("gone@example.com", role="partner")
    gone = db.session.scalar(select(User).where(User.email == "gone@example.com"))
    gone.active = False
    db.session.commit()
    checks = []
    real = services.check_password_hash
    monkeypatch.setattr(services, "check_password_hash", lambda h, p: checks.append(h) or real(h, p))
    bodies = {}
    for email, password in (("known@example.com", "wrong-password"), ("nobody@example.com", "wrong-password"),
                            ("gone@example.com", PW)):
        r = _login(client, email, password, ip=f"192.0.2.{len(bodies) + 10}")
        assert r.status_code == 401
        bodies[email] = r.data.decode().replace(email, "EMAIL")
    assert len(set(bodies.values())) == 1 and "wrong email or password" in bodies["nobody@example.com"]
    assert len(checks) == 3  # one password hash checked each time, a dummy one for the unknown email
    assert not db.session.scalar(select(func.count()).select_from(User).where(User.email == "nobody@example.com"))


def test_signup_answers_the_same_for_a_known_email_and_tells_the_owner(client):
    from tests.web.test_partner_portal import _signup_data

    make_user("taken@example.com", role="client")
    fresh = client.post("/signup", data=_signup_data(email="fresh@example.com"))
    taken = client.post("/signup", data=_signup_data(email="Taken@Example.com"))
    assert fresh.status_code == taken.status_code == 200
    norm = [r.data.decode().replace(e, "EMAIL") for r, e in ((fresh, "fresh@example.com"), (taken, "taken@example.com"))]
    assert norm[0] == norm[1]
    kinds = dict(db.session.execute(select(OutboxEmail.to_addr, OutboxEmail.kind)).all())
    assert kinds == {"fresh@example.com": "confirm_email", "taken@example.com": "signup_existing"}
    assert db.session.scalar(select(func.count()).select_from(Partner)) == 1  # nothing made for the taken email


def test_password_reset_answers_the_same_for_known_and_unknown(client):
    make_user("known@example.com", role="staff")
    known = client.post("/password-reset", data={"email": "known@example.com"})
    unknown = client.post("/password-reset", data={"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 200 and known.data == unknown.data
    assert [e.to_addr for e in db.session.scalars(select(OutboxEmail))] == ["known@example.com"]
