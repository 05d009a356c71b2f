"""The demo (issue: a day's work in the browser, item 6): every login printed and working, a month
of traffic with quieter weekends, and a taken port refused before anything is seeded."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import click
import pytest
from sqlalchemy import func, select

from partnernet import demo
from partnernet.extensions import db
from partnernet.models import Click, Conversion, User
from partnernet.demo_history import simulate_history

# The demo runs on the embedded default (SQLite); its traffic goes through endpoints that every other
# test runs on both databases.
pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def test_every_printed_login_signs_in(app, capsys, monkeypatch):
    monkeypatch.setattr(demo, "HISTORY_DAYS", 2)
    demo.run_demo(app, host="127.0.0.1", port=5000, serve=False)
    out = capsys.readouterr().out
    for role, _who, email, password in demo.LOGINS:
        assert email in out and password in out
        user = db.session.scalar(select(User).where(User.email == email))
        assert user is not None and user.role == role
        http = app.test_client()
        resp = http.post("/login", data={"email": email, "password": password})
        assert resp.status_code == 302, email  # signed in: redirected to the role's home
    assert "things to try" in out


def test_a_month_of_traffic_with_quieter_weekends(app):
    rows = demo.seed()
    today = datetime(2026, 11, 30, tzinfo=UTC)  # a Monday: the 14 days before hold two weekends
    seen = simulate_history(app, rows, days=14, today=today)
    assert seen.get("click 302", 0) > 100 and not any(k.endswith(("400", "404", "500")) for k in seen)
    days = {}
    for at in db.session.scalars(select(Click.created_at)):
        days[at.date()] = days.get(at.date(), 0) + 1
    assert len(days) == 14 and max(days) < today.date()
    weekday = [n for d, n in days.items() if d.weekday() < 5]
    weekend = [n for d, n in days.items() if d.weekday() >= 5]
    assert sum(weekend) / len(weekend) < sum(weekday) / len(weekday)
    assert db.session.scalar(select(func.count()).select_from(Conversion)) > 10


def test_a_taken_port_is_refused_before_seeding(app):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        with pytest.raises(click.ClickException, match=f"port {port} .* already in use"):
            demo.run_demo(app, host="127.0.0.1", port=port, serve=True)
    assert db.session.scalar(select(func.count()).select_from(User)) == 0
