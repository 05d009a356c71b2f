"""The lean tracking handler (partnernet.tracking.lean) answers exactly as the Flask views do, and
the state cache follows changes through Redis pub/sub (partnernet.tracking.invalidation)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from partnernet.extensions import db
from partnernet.models import Click
from partnernet.queue import get_redis
from partnernet.tracking import buffer, hotpath, lean
from partnernet.tracking.invalidation import channel_for
from tests.services.test_redirect import CHROME, CPC_EVENTS, get, setup_link, token_of
from tests.services.test_redirect_redis import other_process  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[2]

CASES = [
    ("/c/{tok}", "GET", {}, {}),
    ("/c/{tok}", "HEAD", {}, {}),
    ("/c/{tok}", "GET", {"sub1": "a b", "sub2": "\u00e9t\u00e9", "url": "https://evil.example/x"}, {}),
    ("/c/{tok}", "GET", {"sub1": "x"}, {"Sec-Fetch-Dest": "image"}),
    ("/c/{tok}", "GET", {}, {"User-Agent": "curl/8.5.0"}),
    ("/i/{tok}", "GET", {"sub1": "p"}, {}),
    ("/i/{tok}", "HEAD", {}, {}),
]


def _answer(app, path, method, query, headers, ip):
    with app.app_context():
        try:
            headers = dict(headers)
            ua = headers.pop("User-Agent", CHROME)
            resp = get(app.test_client(use_cookies=False), path, method=method, query_string=query,
                       headers=headers, ip=ip, ua=ua)
            return resp.status_code, resp.get_data(), dict(resp.headers)
        finally:
            db.session.remove()


def _normalise(headers: dict) -> dict:
    out = dict(headers)
    if "Location" in out:
        out["Location"] = out["Location"].split("click_id=")[0]
    if "Set-Cookie" in out:
        name, rest = out["Set-Cookie"].split("=", 1)
        out["Set-Cookie"] = (name, sorted(p.strip().split("=")[0] for p in rest.split(";")[1:]))
    return out


def test_the_lean_answer_is_the_views_answer(redis_app, other_process, monkeypatch):  # noqa: F811
    """Each request of :data:`CASES` answered by the lean handler (another process, its cache
    warm) and by the Flask view (a process with the lean handler off): same status, body,
    headers and cookie attributes, and the same stored click."""
    *_, link = setup_link(campaign_kw={"events": CPC_EVENTS})
    tok = token_of(redis_app, link)
    viewed = other_process(PARTNERNET_LEAN_TRACKING=False)
    leaned = other_process()
    served = []
    inner = leaned.wsgi_app.inner
    monkeypatch.setattr(leaned.wsgi_app, "inner", lambda env, sr: served.append(env["PATH_INFO"]) or inner(env, sr))
    _answer(leaned, f"/c/{tok}", "GET", {}, {}, "198.51.100.200")  # first click: the view loads the state
    assert len(served) == 1
    buffer.flush_clicks()
    for n, (path, method, query, headers) in enumerate(CASES):
        path = path.format(tok=tok)
        a = _answer(leaned, path, method, query, headers, f"198.51.100.{n + 1}")
        b = _answer(viewed, path, method, query, headers, f"198.51.100.{n + 101}")
        assert len(served) == 1, path  # the lean handler answered, Flask never saw the request
        assert (a[0], a[1]) == (b[0], b[1]), (path, method)
        assert _normalise(a[2]) == _normalise(b[2]), (path, method)
        before = {c.id for c in db.session.scalars(select(Click))}
        buffer.flush_clicks()
        db.session.expire_all()
        rows = [c for c in db.session.scalars(select(Click).order_by(Click.id)) if c.id not in before]
        if path.startswith("/c/"):
            lean_row, view_row = sorted(rows, key=lambda c: c.ip != f"198.51.100.{n + 1}")
            for col in ("link_id", "sub1", "sub2", "sub3", "method", "is_bot", "flag", "fallback_reason",
                        "user_agent"):
                assert getattr(lean_row, col) == getattr(view_row, col), (path, col)
            assert lean_row.destination.split("click_id=")[0] == view_row.destination.split("click_id=")[0]


def test_bad_tokens_and_other_paths_go_to_flask(redis_app):
    *_, link = setup_link()
    tok = token_of(redis_app, link)
    http = redis_app.test_client()
    assert get(http, f"/c/{tok}").status_code == 302
    resp = get(http, f"/c/{tok[:-1]}{'A' if tok[-1] != 'A' else 'B'}")
    assert resp.status_code == 404 and b"<html" in resp.get_data().lower()  # the view's HTML page
    assert get(http, f"/c/{tok}/extra").status_code == 404
    assert http.post(f"/c/{tok}").status_code == 405
    assert isinstance(redis_app.wsgi_app, lean.LeanTracking) or isinstance(redis_app.wsgi_app.app, lean.LeanTracking)


def test_a_change_in_another_process_reaches_the_cache_by_pubsub(redis_app):
    """A pause committed by another OS process is seen by this process's cache through the
    published message, with no Redis call on the click."""
    _, camp, _, link = setup_link()
    tok = token_of(redis_app, link)
    assert get(redis_app.test_client(), f"/c/{tok}").headers["Location"].startswith("https://acme.example/landing")
    cache = hotpath.state_cache(redis_app)
    assert hotpath.cached_state(cache, link.id) is not None
    before = cache.generation
    script = (
        "from partnernet import create_app\n"
        "from partnernet.extensions import db\n"
        "from partnernet.models import Campaign\n"
        "from partnernet.tracking.state import bump_state_version\n"
        f"app = create_app({{'SQLALCHEMY_DATABASE_URI': {redis_app.config['SQLALCHEMY_DATABASE_URI']!r},"
        f" 'REDIS_URL': {redis_app.config['REDIS_URL']!r}, 'SECRET_KEY': 'x', 'TESTING': True}})\n"
        "with app.app_context():\n"
        f"    db.session.get(Campaign, {camp.id}).status = 'paused'\n"
        "    bump_state_version()\n"
        "    db.session.commit()\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=60)
    end = time.monotonic() + 5
    while cache.generation == before and time.monotonic() < end:
        time.sleep(0.01)
    assert cache.generation > before
    assert get(redis_app.test_client(), f"/c/{tok}").headers["Location"] == "https://acme.example/fallback"


def test_without_a_live_subscription_the_cache_is_not_trusted(redis_app):
    _, camp, _, link = setup_link()
    tok = token_of(redis_app, link)
    get(redis_app.test_client(), f"/c/{tok}")
    cache = hotpath.state_cache(redis_app)
    cache.subscriber.stop()
    try:
        assert hotpath.cached_state(cache, link.id) is None
        camp.destination_url = "https://acme.example/other"  # no bump: only a database read sees it
        db.session.commit()
        assert get(redis_app.test_client(), f"/c/{tok}").headers["Location"].startswith("https://acme.example/other")
    finally:
        cache.subscriber.start()
        assert cache.subscriber.wait_healthy(5)
    get_redis().publish(channel_for(get_redis()), b"1")
