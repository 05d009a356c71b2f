"""The tracking link with Redis (PostgreSQL + real Redis, no worker): clicks are buffered, the
state cache follows the state version across processes, and the redirect survives a database
or Redis outage (CONTRACT §1)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select, text

from partnernet import create_app
from partnernet.extensions import db
from partnernet.models import Click, Conversion, TrafficRollup
from partnernet.queue import get_queue, get_redis
from partnernet.tracking import buffer, hotpath
from partnernet.tracking.state import STATE_KEY, bump_state_version, ensure_version
from tests.services.test_redirect import CHROME, CPC_EVENTS, get, setup_link, token_of

DEAD_PG = "postgresql+psycopg://127.0.0.1:1/nowhere"
DEAD_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
def other_process(redis_app):
    """Build extra apps standing for other web processes (own state cache, own engine);
    ``make(**overrides)`` on top of the Redis app's settings. Engines are disposed after."""
    made = []

    def make(**overrides):
        cfg = {key: redis_app.config[key] for key in
               ("TESTING", "SQLALCHEMY_DATABASE_URI", "SECRET_KEY", "REDIS_URL", "PARTNERNET_BASE_URL",
                    "PARTNERNET_CLICK_ACK")}
        cfg.update(overrides)
        other = create_app(cfg)
        made.append(other)
        return other

    yield make
    for other in made:
        with other.app_context():
            db.engine.dispose()


def click_in(app, path, **kw):
    """A click served by ``app`` (another process), in its own app context."""
    with app.app_context():
        try:
            return get(app.test_client(), path, **kw)
        finally:
            db.session.remove()


def count_clicks() -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(Click))


def test_click_is_buffered_then_flushed(redis_app):
    *_, link = setup_link(campaign_kw={"events": CPC_EVENTS})
    http = redis_app.test_client()
    tok = token_of(redis_app, link)
    resp = get(http, f"/c/{tok}", query_string={"sub1": "x"})
    get(http, f"/c/{tok}", query_string={"sub1": "x"})
    get(http, f"/i/{tok}")
    assert resp.status_code == 302
    assert count_clicks() == 0  # the redirect did not write to the database
    assert buffer.buffered_count() == 3
    assert buffer.flush_clicks() == 3
    assert buffer.buffered_count() == 0
    assert count_clicks() == 2
    rows = list(db.session.scalars(select(Click).order_by(Click.created_at)))
    assert [c.is_unique for c in rows] == [True, False]
    assert rows[0].click_id in resp.headers["Location"]
    roll = db.session.scalar(select(TrafficRollup).where(TrafficRollup.sub1 == "x"))
    assert (roll.clicks, roll.unique_clicks) == (2, 1)
    assert db.session.scalar(select(func.sum(TrafficRollup.impressions))) == 1
    assert db.session.scalar(select(func.count()).select_from(Conversion)) == 1
    assert buffer.flush_clicks() == 0


def test_unique_key_expires_after_the_window(redis_app):
    *_, link = setup_link()
    get(redis_app.test_client(), f"/c/{token_of(redis_app, link)}")
    assert get_redis().keys(buffer.UNIQUE_KEY_PREFIX + "*") == []  # the writer decides, not the redirect
    buffer.flush_clicks()
    keys = get_redis().keys(buffer.UNIQUE_KEY_PREFIX + "*")
    assert len(keys) == 1
    ttl = get_redis().ttl(keys[0])
    assert 0 < ttl <= redis_app.config["PARTNERNET_UNIQUE_WINDOW_S"]


def test_pause_is_seen_by_the_next_click_in_another_process(redis_app, other_process):
    _, camp, _, link = setup_link()
    tok = token_of(redis_app, link)
    worker2 = other_process()
    assert click_in(worker2, f"/c/{tok}").headers["Location"].startswith("https://acme.example/landing")

    # a change without a version bump is not seen: the other process serves its cache
    camp.destination_url = "https://acme.example/new-landing"
    db.session.commit()
    assert click_in(worker2, f"/c/{tok}").headers["Location"].startswith("https://acme.example/landing")

    # PATCH pause: status change and bump_state_version in one transaction
    camp.status = "paused"
    bump_state_version()
    db.session.commit()
    assert click_in(worker2, f"/c/{tok}").headers["Location"] == "https://acme.example/fallback"

    camp.status = "active"
    bump_state_version()
    db.session.commit()
    assert click_in(worker2, f"/c/{tok}").headers["Location"].startswith("https://acme.example/new-landing")


def test_spend_reaching_the_budget_sends_the_next_click_to_fallback(redis_app, other_process):
    _, camp, _, link = setup_link(campaign_kw={"events": CPC_EVENTS, "budget_minor": 12})
    tok = token_of(redis_app, link)
    worker2 = other_process()
    assert click_in(worker2, f"/c/{tok}").headers["Location"].startswith("https://acme.example/landing")
    buffer.flush_clicks()  # the CPC conversion spends 12 of 12: the version moves
    db.session.refresh(camp)
    assert camp.spent_minor == 12
    resp = click_in(worker2, f"/c/{tok}", ip="198.51.100.4")
    assert resp.headers["Location"] == "https://acme.example/fallback"
    buffer.flush_clicks()
    reasons = [c.fallback_reason for c in db.session.scalars(select(Click).order_by(Click.created_at))]
    assert reasons == [None, "over_budget"]


def test_database_outage_serves_cached_state_and_buffers(redis_app, other_process):
    _, camp, _, link = setup_link()
    *_, cold_link = setup_link()
    tok = token_of(redis_app, link)
    state = hotpath.load_state(link.id)
    version = ensure_version(get_redis())
    dead = other_process(SQLALCHEMY_DATABASE_URI=DEAD_PG)
    hotpath.state_cache(dead).entries[link.id] = hotpath._Entry(state, version, time.monotonic())

    assert click_in(dead, f"/c/{tok}").headers["Location"].startswith("https://acme.example/landing")
    # the version moves; the reload fails; the stale state is served
    camp.destination_url = "https://acme.example/moved"
    bump_state_version()
    db.session.commit()
    resp = click_in(dead, f"/c/{tok}", ip="198.51.100.5")
    assert resp.status_code == 302 and resp.headers["Location"].startswith("https://acme.example/landing")
    # a link it never saw cannot be resolved without the database
    assert click_in(dead, f"/c/{token_of(redis_app, cold_link)}").status_code == 503

    assert count_clicks() == 0
    assert buffer.flush_clicks() == 2  # written once the database is back
    assert count_clicks() == 2


def test_redis_outage_writes_clicks_directly(redis_app, other_process):
    *_, link = setup_link()
    no_redis = other_process(REDIS_URL=DEAD_REDIS)
    tok = token_of(redis_app, link)
    r1 = click_in(no_redis, f"/c/{tok}")
    click_in(no_redis, f"/c/{tok}", headers={"Cookie": r1.headers["Set-Cookie"].split(";")[0]})
    assert r1.status_code == 302
    rows = list(db.session.scalars(select(Click).order_by(Click.id)))
    assert [c.is_unique for c in rows] == [True, False]
    assert rows[0].user_agent == CHROME


def test_savepoints_in_the_flush_transaction_send_nothing_early(redis_app):
    """The flush records many conversions in one transaction, each inside a SAVEPOINT. Their
    ledger jobs and the state-version bump must leave only at the outer commit: a job sent
    at a SAVEPOINT release could run before its conversion is committed, and a bump sent
    early lets another process cache the uncommitted-before state under the new version."""
    from partnernet import queue

    r = get_redis()
    before = ensure_version(r)
    default_q = get_queue(queue.QUEUE_DEFAULT)
    db.session.execute(select(1))
    queue.enqueue("partnernet.tracking.buffer.flush_clicks_job", job_id="probe-job")
    bump_state_version()
    with db.session.begin_nested():
        db.session.execute(select(1))
    try:
        with db.session.begin_nested():
            db.session.execute(text("SELECT no_such_function()"))  # fails: the SAVEPOINT rolls back
    except Exception:  # noqa: BLE001
        pass
    assert default_q.count == 0 and r.get(STATE_KEY) == before
    db.session.commit()
    assert default_q.job_ids == ["probe-job"]
    assert int(r.get(STATE_KEY)) == int(before) + 1


def test_unwritable_records_are_set_aside_and_the_rest_written(redis_app):
    *_, link = setup_link()
    get(redis_app.test_client(), f"/c/{token_of(redis_app, link)}")
    r = get_redis()
    r.xadd(buffer.STREAM_KEY, {"p": "t:1", "s": 1, "c": 1, "n": 1, "d": "not json"})  # garbage
    r.xadd(buffer.STREAM_KEY, {"p": "t:2", "s": 1, "c": 1, "n": 1, "d": '[{"t": "c", "click_id": "x"}]'})  # no link
    get(redis_app.test_client(), f"/c/{token_of(redis_app, link)}", ip="198.51.100.8")
    assert buffer.flush_clicks() == 3
    assert count_clicks() == 2
    assert r.llen(buffer.DEAD_KEY) == 2
    assert buffer.buffered_count() == 0


# -- v2 result integrity on the buffered path (the one-trip script and the flush) -------------------


def test_buffered_path_ignores_forged_cookies_and_flags_non_navigation_loads(redis_app):
    """The same attacks as tests/services/test_tracking_integrity.py, through Redis: the one-trip
    script (cached state) and the flush keep the flag, the unique key is the IP-and-agent
    visitor, and impressions are billed once per visitor and hour by the writer."""
    from partnernet.models import LinkCounter
    from partnernet.tracking.visitor import visitor_for

    *_, link = setup_link(campaign_kw={"events": CPC_EVENTS + [{"key": "impression", "client_fee_minor": 250,
                                                               "payout_minor": 150}]})
    tok = token_of(redis_app, link)
    name = redis_app.config["PARTNERNET_VISITOR_COOKIE"]
    http = redis_app.test_client(use_cookies=False)
    get(http, f"/c/{tok}")  # loads the state: later clicks take the one-trip script
    assert hotpath.cached_state(hotpath.state_cache(redis_app), link.id) is not None
    for i in range(5):  # a made-up cookie each time
        get(http, f"/c/{tok}", headers={"Cookie": f"{name}={i:032x}"})
    for dest in ("image", "iframe"):
        resp = get(http, f"/c/{tok}", ip="198.51.100.77", headers={"Sec-Fetch-Dest": dest})
        assert resp.status_code == 302
    for _ in range(300):  # one browser reloading the pixel
        get(http, f"/i/{tok}", headers={"Sec-Fetch-Dest": "image"})
    assert count_clicks() == 0 and buffer.flush_clicks() == 308
    rows = list(db.session.scalars(select(Click).order_by(Click.id)))
    assert [c.is_unique for c in rows] == [True] + [False] * 7
    assert {c.visitor for c in rows[:6]} == {visitor_for(None, "203.0.113.7", CHROME)[0]}
    assert [(c.is_bot, c.flag) for c in rows[6:]] == [(True, "non_navigation")] * 2
    # one CPC conversion (the first click); the stuffed loads are not unique even on a new visitor
    assert db.session.scalar(select(func.count()).select_from(Conversion)) == 1
    assert db.session.get(LinkCounter, link.id).impressions == 1
    assert db.session.scalar(select(func.sum(TrafficRollup.impressions))) == 300
