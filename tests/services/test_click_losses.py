"""No silent loss of clicks (partnernet.tracking.producers, .durability): a batch that never reaches
the writer, a Redis that lost its data, and a Redis that cannot keep clicks are found and
reported; ``flask drain`` exits non-zero for them. Real PostgreSQL and Redis."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from partnernet.extensions import db
from partnernet.models import Click, ClickLoss
from partnernet.queue import get_redis
from partnernet.tracking import buffer, durability
from partnernet.tracking.batcher import ACK_MEMORY, STREAM_KEY, ClickBatcher, get_batcher
from partnernet.worker import drain
from tests.services.test_redirect import get, setup_link, token_of


def stored() -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(Click))


def click(app, tok, i):
    return get(app.test_client(), f"/c/{tok}", ip=f"198.51.100.{i}")


def test_a_batch_lost_in_redis_is_found_and_drain_fails(redis_app):
    *_, link = setup_link()
    tok = token_of(redis_app, link)
    for i in range(3):
        click(redis_app, tok, i)
    r = get_redis()
    lost_id = r.xrange(STREAM_KEY)[1][0]
    r.xdel(STREAM_KEY, lost_id)  # batch 2 vanishes between the redirect and the writer
    click(redis_app, tok, 9)
    assert buffer.flush_clicks() == 3
    assert stored() == 3
    losses = list(db.session.scalars(select(ClickLoss)))
    assert [(x.kind, x.batches, x.records) for x in losses] == [("gap", 1, 1)]
    assert get_batcher(redis_app).producer in losses[0].detail
    code, message = drain(10)
    assert code == 3 and "1 click/impression record(s) lost" in message
    assert drain(10)[0] == 0  # reported once


def test_redis_losing_its_data_is_found(redis_app):
    *_, link = setup_link()
    tok = token_of(redis_app, link)
    click(redis_app, tok, 1)
    assert buffer.flush_clicks() == 1  # the writer's epoch is now in Redis and the database
    click(redis_app, tok, 2)
    click(redis_app, tok, 3)
    get_redis().flushdb()  # a restart without persistence: the two clicks are gone
    assert buffer.flush_clicks() == 0
    assert [x.kind for x in db.session.scalars(select(ClickLoss))] == ["redis_reset"]
    click(redis_app, tok, 4)  # this process's next batch tells how many of its own were lost
    assert buffer.flush_clicks() == 1
    kinds = {x.kind: x.records for x in db.session.scalars(select(ClickLoss))}
    assert kinds == {"redis_reset": None, "gap": 2}
    code, message = drain(10)
    assert code == 3 and "Redis lost its data" in message and "2 click/impression record(s) lost" in message


def test_a_batch_redis_refused_is_written_directly_and_not_counted_lost(redis_app, monkeypatch):
    *_, link = setup_link()
    tok = token_of(redis_app, link)
    click(redis_app, tok, 1)
    batcher = get_batcher(redis_app)

    class Refusing:
        def pack_command(self, *args):
            return b""

        def send_packed_command(self, *a, **k):
            raise ConnectionError("Redis is down")

        def disconnect(self):
            pass

    monkeypatch.setattr(batcher, "_connection", lambda: Refusing())
    click(redis_app, tok, 2)
    click(redis_app, tok, 3)
    monkeypatch.undo()
    assert stored() == 2  # written directly, during the "outage"
    click(redis_app, tok, 4)
    assert buffer.flush_clicks() == 2
    assert stored() == 4
    assert list(db.session.scalars(select(ClickLoss))) == []
    assert drain(10)[0] == 0


def test_memory_mode_sends_what_waits_at_close(redis_app):
    *_, link = setup_link()
    batcher = ClickBatcher(redis_app, ACK_MEMORY)
    state = {"t": "c", "link_id": link.id, "campaign_id": link.campaign_id, "partner_id": link.partner_id,
             "at": "2026-12-02T10:00:00+00:00", "visitor": "v", "bot": False, "fb": None, "dest": "x"}
    for i in range(50):
        batcher.submit({**state, "click_id": f"mem{i:04d}"})
    batcher.close()
    assert buffer.buffered_count() == 50
    assert buffer.flush_clicks() == 50 and stored() == 50


def test_the_durability_check_reads_the_redis_settings(redis_app):
    r = get_redis()
    found = durability.check(r)
    aof = r.config_get("appendonly")["appendonly"]
    assert found.known and found.ok == (aof == "yes")
    if aof != "yes":
        redis_app.config["PARTNERNET_ENV"] = "production"
        try:
            with pytest.raises(durability.RedisNotDurable):
                durability.check_at_start(redis_app)
        finally:
            redis_app.config["PARTNERNET_ENV"] = "development"
        assert durability.check_at_start(redis_app).ok is False  # development: a warning only
    unreachable = durability.check(__import__("redis").Redis(port=1, socket_connect_timeout=0.5))
    assert (unreachable.known, unreachable.ok) == (False, False)
