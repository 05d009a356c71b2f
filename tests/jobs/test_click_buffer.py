"""The click buffer on real Redis with a real ``flask worker``: clicks made through the
tracking link end up as exactly one row each, with their rollups and CPC conversions, and a
batch written twice (a flusher that died between its commit and its clean-up) adds nothing."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from partnernet.extensions import db
from partnernet.models import BufferBatch, Campaign, Click, Conversion, LinkCounter, TrafficRollup
from partnernet.queue import get_redis
from partnernet.tracking import buffer
from tests.conftest import drain_jobs
from tests.services.test_redirect import CPC_EVENTS, get, setup_link, token_of


def totals() -> dict:
    db.session.expire_all()
    cols = ("clicks", "unique_clicks", "bot_clicks", "fallback_clicks", "impressions", "bot_impressions")
    row = db.session.execute(select(*[func.coalesce(func.sum(getattr(TrafficRollup, c)), 0) for c in cols])).one()
    out = dict(zip(cols, (int(v) for v in row), strict=True))
    out["rows"] = db.session.scalar(select(func.count()).select_from(Click))
    out["conversions"] = db.session.scalar(select(func.count()).select_from(Conversion))
    return out


def test_clicks_through_the_buffer_are_written_exactly_once(redis_app, worker):
    _, camp, _, link = setup_link(campaign_kw={"events": CPC_EVENTS, "default_event": "install"})
    *_, paused_link = setup_link(campaign_kw={"events": CPC_EVENTS, "default_event": "install", "status": "paused"})
    tok, paused_tok = token_of(redis_app, link), token_of(redis_app, paused_link)
    locations = []
    for i in range(10):  # ten people, two clicks each: 10 unique, 10 CPC conversions
        http = redis_app.test_client()
        for sub in ("a", "b"):
            locations.append(get(http, f"/c/{tok}", ip=f"198.51.100.{i}", query_string={"sub1": sub}))
    for _ in range(3):
        locations.append(get(redis_app.test_client(), f"/c/{tok}", method="HEAD"))
    for _ in range(2):
        locations.append(get(redis_app.test_client(), f"/c/{tok}", ua="curl/8.5.0"))
    for i in range(5):  # paused campaign: fallback clicks, unique, never billed
        locations.append(get(redis_app.test_client(), f"/c/{paused_tok}", ip=f"192.0.2.{i}"))
    for ua in ("Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0", "Twitterbot/1.0"):
        assert get(redis_app.test_client(), f"/i/{tok}", ua=ua).status_code == 200
    assert all(r.status_code == 302 for r in locations) and len(locations) == 30

    drain_jobs()
    expected = {"clicks": 30, "unique_clicks": 15, "bot_clicks": 5, "fallback_clicks": 5, "impressions": 1,
                "bot_impressions": 1, "rows": 30, "conversions": 10}
    assert totals() == expected
    convs = list(db.session.scalars(select(Conversion)))
    assert {(c.event_key, c.status, c.client_fee_minor, c.link_id) for c in convs} == {("click", "pending", 12, link.id)}
    assert {c.ledger_status for c in convs} == {"pending"}  # every ledger job ran after its conversion committed
    assert db.session.get(Campaign, camp.id).spent_minor == 120
    assert db.session.get(LinkCounter, link.id).impressions == 1
    # every click ID handed out is a stored click
    stored = set(db.session.scalars(select(Click.click_id)))
    handed_out = {r.headers["Location"].split("click_id=")[1].split("&")[0] for r in locations
                  if "click_id=" in r.headers["Location"]}
    assert len(handed_out) == 25 and handed_out <= stored

    # flushing again, twice, changes nothing
    assert buffer.flush_clicks() == 0
    assert buffer.flush_clicks() == 0
    drain_jobs()
    assert totals() == expected


def test_a_batch_written_twice_counts_once(redis_app):
    """A flusher commits a batch and dies before removing it from Redis; the next flush
    takes the same batch up again and adds nothing (clicks by click_id, impressions by the
    batch marker)."""
    _, camp, _, link = setup_link(campaign_kw={"events": CPC_EVENTS, "default_event": "install"})
    tok = token_of(redis_app, link)
    http = redis_app.test_client()
    for i in range(4):
        get(redis_app.test_client(), f"/c/{tok}", ip=f"198.51.100.{i}")
    get(http, f"/i/{tok}")
    get(http, f"/i/{tok}", method="HEAD")
    r = get_redis()

    # the crashed flusher: holds the lock, claims the batch, commits it, never cleans up
    r.set(buffer.LOCK_KEY, "crashed", px=buffer.LOCK_TTL_MS)
    batch_id, items = r.register_script(buffer._CLAIM_LUA)(
        keys=[buffer.BUFFER_KEY, buffer.PROCESSING_KEY, buffer.PROCESSING_BATCH_KEY], args=[500, "bcrashed"])
    assert batch_id == b"bcrashed" and len(items) == 6
    result = buffer.write_records([json.loads(x) for x in items], batch_id="bcrashed")
    assert (result.clicks, result.impressions, result.conversions) == (4, 2, 4)
    first = totals()
    assert buffer.flush_clicks() == 0  # the lock is still held: nobody else flushes
    assert buffer.buffered_count() == 6

    r.delete(buffer.LOCK_KEY)  # the dead flusher's lock expires
    get(http, f"/c/{tok}", ip="198.51.100.99")  # one more click arrives meanwhile
    assert buffer.flush_clicks() == 7  # the stale batch again, then the new click
    after = totals()
    assert after == {**first, "clicks": 5, "unique_clicks": 5, "rows": 5, "conversions": 5}
    assert buffer.buffered_count() == 0
    assert db.session.get(BufferBatch, "bcrashed") is not None
    db.session.expire_all()
    assert db.session.get(Campaign, camp.id).spent_minor == 60
