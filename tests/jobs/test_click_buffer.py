"""The click buffer on real Redis with a real ``flask worker``: clicks made through the
tracking link end up as exactly one row each, with their rollups and CPC conversions, and a
writer killed before or after its commit loses nothing and doubles nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from partnernet.extensions import db
from partnernet.models import Campaign, Click, Conversion, LinkCounter, TrafficRollup
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


class Killed(BaseException):
    """Stands for the writer process dying (SIGKILL): nothing after it runs."""


def _clicks_and_impressions(redis_app, tok):
    http = redis_app.test_client()
    for i in range(4):
        get(redis_app.test_client(), f"/c/{tok}", ip=f"198.51.100.{i}")
    get(http, f"/i/{tok}")
    get(http, f"/i/{tok}", method="HEAD")


def test_a_writer_killed_after_its_commit_adds_nothing_the_second_time(redis_app, monkeypatch):
    """The writer commits a batch and dies before acknowledging it in the stream; the next
    writer reads the same entries again (they are pending) and adds nothing: the producers'
    batch numbers, committed with the clicks, skip them."""
    _, camp, _, link = setup_link(campaign_kw={"events": CPC_EVENTS, "default_event": "install"})
    tok = token_of(redis_app, link)
    _clicks_and_impressions(redis_app, tok)
    assert buffer.buffered_count() == 6

    def die(_r, _ids):
        raise Killed
    monkeypatch.setattr(buffer, "_ack", die)
    with pytest.raises(Killed):
        buffer.flush_clicks()
    db.session.rollback()
    first = totals()
    assert (first["rows"], first["impressions"], first["bot_impressions"], first["conversions"]) == (4, 1, 1, 4)
    assert buffer.buffered_count() == 6  # still in the stream, pending for the writer
    monkeypatch.undo()

    get(redis_app.test_client(), f"/c/{tok}", ip="198.51.100.99")  # one more click arrives meanwhile
    assert buffer.flush_clicks() == 1  # the pending entries are skipped, the new click written
    assert totals() == {**first, "clicks": 5, "unique_clicks": 5, "rows": 5, "conversions": 5}
    assert buffer.buffered_count() == 0
    db.session.expire_all()
    assert db.session.get(Campaign, camp.id).spent_minor == 60


def test_a_writer_killed_before_its_commit_loses_nothing(redis_app, monkeypatch):
    """The writer dies mid-batch, after inserting rows but before committing: the next writer
    reads the pending entries again and writes each record once."""
    from partnernet.tracking import writer

    _, camp, _, link = setup_link(campaign_kw={"events": CPC_EVENTS, "default_event": "install"})
    tok = token_of(redis_app, link)
    _clicks_and_impressions(redis_app, tok)
    real_commit = db.session.commit

    def die():
        raise Killed
    monkeypatch.setattr(db.session, "commit", die)
    with pytest.raises(Killed):
        buffer.flush_clicks()
    monkeypatch.setattr(db.session, "commit", real_commit)
    db.session.rollback()
    assert totals()["rows"] == 0
    assert buffer.flush_clicks() == 6
    assert totals() == {"clicks": 4, "unique_clicks": 4, "bot_clicks": 0, "fallback_clicks": 0, "impressions": 1,
                        "bot_impressions": 1, "rows": 4, "conversions": 4}
    assert writer.IMPRESSIONS_PER_CONVERSION == 1000 and db.session.get(LinkCounter, link.id).impressions == 1
