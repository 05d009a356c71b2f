"""Refused postbacks are throttled per IP and bounded before they are stored: a flood answers
429 with Retry-After and adds nothing to the postback log past the limit; good postbacks from
the same address are never limited; a real integration's pace of mistakes passes; a refused
postback's parameters are cut before they are logged. In-process (memory) counts on SQLite
and PostgreSQL, and Redis counts shared by the web processes."""

import types

import pytest
from sqlalchemy import func, select

from partnernet.extensions import db
from partnernet.models import PostbackLog
from partnernet.postbacks import flood
from tests.factories import make_campaign, make_client, make_link, make_partner


@pytest.fixture
def fresh_limits(app):
    app.extensions.pop(flood._EXT, None)  # new in-memory counts for this test
    yield app
    app.extensions.pop(flood._EXT, None)


def _world():
    client = make_client()
    camp = make_campaign(client)
    make_link(make_partner(), camp, coupon_code="FLOOD10")
    return client.postback_key


def _post(http, ip, **params):
    return http.get("/postback", query_string=params, environ_base={"REMOTE_ADDR": ip})


def _logged() -> int:
    return db.session.scalar(select(func.count(PostbackLog.id)))


def test_a_burst_of_refusals_is_cut_at_60_and_good_postbacks_still_pass(fresh_limits, client):
    key = _world()
    ip = "198.51.100.7"
    codes = [_post(client, ip, key="pk_wrong", click_id="x").status_code for _ in range(70)]
    assert codes == [401] * 60 + [429] * 10
    r = _post(client, ip, key="pk_wrong", click_id="x")
    assert r.status_code == 429 and r.get_json()["error"] == "too_many_refusals"
    assert 1 <= int(r.headers["Retry-After"]) <= 10 and r.headers["Cache-Control"] == "no-store"
    assert _logged() == 60  # the 429s are only counted
    assert flood.throttled_count(ip) == 11
    # a good postback from the same address is never limited, and is logged
    r = _post(client, ip, key=key, coupon="flood10", txn_id="T-1")
    assert r.status_code == 201 and _logged() == 61
    # another address has its own count
    assert _post(client, "198.51.100.8", key="pk_wrong", click_id="x").status_code == 401


def test_successful_postbacks_never_count(fresh_limits, client):
    key = _world()
    ip = "198.51.100.9"
    for i in range(70):
        assert _post(client, ip, key=key, coupon="flood10", txn_id=f"T-{i}").status_code == 201
    assert _post(client, ip, key=key, coupon="flood10", txn_id="T-0").status_code == 200  # a duplicate
    assert _post(client, ip, key="pk_wrong", click_id="x").status_code == 401


def test_a_real_integrations_pace_of_mistakes_passes(fresh_limits, monkeypatch):
    """A day's replay: about a hundred refusals among a thousand postbacks from one address over
    three minutes (a clock the test moves), none throttled; the same hundred in two seconds are."""
    import limits.storage.memory as memory

    now = [1_000_000.0]
    monkeypatch.setattr(memory, "time", types.SimpleNamespace(time=lambda: now[0]))
    monkeypatch.setattr(flood, "time", types.SimpleNamespace(time=lambda: now[0]))
    for i in range(100):
        now[0] += 1.8  # 100 refusals spread over 180 s
        assert flood.admit_refusal("203.0.113.5") is None, i
    now[0] += 700
    throttled = []
    for _ in range(100):
        now[0] += 0.02
        throttled.append(flood.admit_refusal("203.0.113.5"))
    assert throttled[:60] == [None] * 60 and all(w is not None and 1 <= w <= 10 for w in throttled[60:])


def test_the_ten_minute_limit(fresh_limits, monkeypatch):
    import limits.storage.memory as memory

    now = [2_000_000.0]
    monkeypatch.setattr(memory, "time", types.SimpleNamespace(time=lambda: now[0]))
    monkeypatch.setattr(flood, "time", types.SimpleNamespace(time=lambda: now[0]))
    admitted = 0
    for _ in range(700):  # 50 refusals every 10 s: under the burst limit, over 600 in 10 minutes
        now[0] += 0.2
        admitted += flood.admit_refusal("203.0.113.6") is None
    assert admitted == 600
    wait = flood.admit_refusal("203.0.113.6")
    assert wait is not None and 400 < wait <= 600


def test_refused_postbacks_are_logged_bounded(fresh_limits, client):
    params = {f"p{i:03d}": "v" * 2000 for i in range(200)}
    params["N" * 500] = "x"
    r = client.post("/postback?key=pk_wrong", data=params, environ_base={"REMOTE_ADDR": "198.51.100.20"})
    assert r.status_code == 401
    row = db.session.scalar(select(PostbackLog))
    kept = {k: v for k, v in row.params.items() if k != "…"}
    assert len(kept) <= 50 and all(len(k) <= 64 and len(v) <= 256 for k, v in kept.items())
    assert sum(len(k) + len(v) for k, v in kept.items()) <= 8192
    assert row.params["…"].endswith("more parameters not kept")
    assert row.params["key"] == "pk_wrong"
    # a long name in a message is cut too
    r = client.get("/postback", query_string=[("key", "pk_wrong"), ("Z" * 5000, "1"), ("Z" * 5000, "2")],
                   environ_base={"REMOTE_ADDR": "198.51.100.20"})
    assert r.status_code == 401 and len(r.get_data()) < 1000


def test_ten_anonymous_large_requests_add_little_to_the_log(fresh_limits, client):
    body = {"key": "pk_wrong", "click_id": "c" * (1024 * 1024 - 100)}
    for _ in range(10):
        assert client.post("/postback", data=body, environ_base={"REMOTE_ADDR": "198.51.100.21"}).status_code == 401
    rows = db.session.scalars(select(PostbackLog)).all()
    assert len(rows) == 10 and all(len(str(r.params)) < 1000 for r in rows)


def test_with_redis_the_counts_are_shared_and_a_redis_outage_lets_refusals_through(redis_app, monkeypatch):
    redis_app.extensions.pop(flood._EXT, None)
    http = redis_app.test_client()
    ip = "198.51.100.30"
    codes = [_post(http, ip, key="pk_wrong", click_id="x").status_code for _ in range(62)]
    assert codes == [401] * 60 + [429] * 2
    # another web process (a new limiter on the same Redis) sees the same counts
    redis_app.extensions.pop(flood._EXT, None)
    assert _post(http, ip, key="pk_wrong", click_id="x").status_code == 429
    assert flood.throttled_count(ip) == 3
    # Redis unreachable: the refusal is answered and logged as usual, never a 500
    monkeypatch.setitem(redis_app.config, "REDIS_URL", "redis://127.0.0.1:1/0")
    redis_app.extensions.pop(flood._EXT, None)
    assert flood.admit_refusal(ip) is None
    redis_app.extensions.pop(flood._EXT, None)
