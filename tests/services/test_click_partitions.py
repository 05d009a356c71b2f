"""Clicks partitioned by month on PostgreSQL, a plain table on SQLite, and the click retention
(issue 14 item 5; periodic tasks of CONTRACT v2 §6). Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.dialects import postgresql, sqlite

from partnernet import clock
from partnernet.extensions import db
from partnernet.models import Click, TrafficRollup
from partnernet.models.tracking import PARTITION_MONTHS_AHEAD, add_months, month_start, partition_name
from partnernet.schedule.runner import run_task
from partnernet.tracking import partitions
from tests.factories import make_campaign, make_client, make_link, make_partner

NOW = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)  # before the months create_all made


def _only_create_all_partitions() -> None:
    """Drop every monthly partition but those ``db.create_all()`` made (PostgreSQL; the tables
    are empty), whoever made them (a schedule run in another test, say)."""
    db.session.rollback()
    start = month_start(clock.utcnow())
    keep = {partition_name(add_months(start, ahead)) for ahead in range(PARTITION_MONTHS_AHEAD + 1)}
    for name, month in partitions.partitions().items():
        if month is not None and name not in keep:
            db.session.execute(text(f"DROP TABLE {name}"))
    db.session.commit()


@pytest.fixture
def made_here(app):
    """Every test starts and ends with the partitions ``db.create_all()`` made."""
    _only_create_all_partitions()
    yield
    clock.set_now(None)
    _only_create_all_partitions()


@pytest.fixture
def link(app, made_here):
    return make_link(make_partner(), make_campaign(make_client()))


def add_click(link, at: datetime, click_id: str | None = None) -> str:
    click_id = click_id or secrets.token_urlsafe(24)
    db.session.add(Click(click_id=click_id, link_id=link.id, campaign_id=link.campaign_id,
                         partner_id=link.partner_id, created_at=at, visitor="v1"))
    db.session.commit()
    return click_id


def where_is(click_id: str) -> str | None:
    """The partition holding ``click_id`` (PostgreSQL), else None."""
    if db.session.get_bind().dialect.name != "postgresql":
        return None
    return db.session.scalar(text("SELECT tableoid::regclass::text FROM clicks WHERE click_id = :c"),
                             {"c": click_id})


def click_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Click))


def test_create_all_makes_the_default_and_the_next_months_partitions(app, backend):
    names = partitions.partitions()
    if backend == "sqlite":
        assert names == {} and partitions.is_partitioned() is False
        assert partitions.ensure_partitions() == []
        return
    start = month_start(clock.utcnow())
    assert partitions.is_partitioned()
    assert names["clicks_default"] is None
    for ahead in range(PARTITION_MONTHS_AHEAD + 1):
        assert names[partition_name(add_months(start, ahead))] == add_months(start, ahead)
    assert partitions.ensure_partitions() == []  # nothing missing: no DDL
    pk = db.session.scalar(text("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'pk_clicks'"))
    assert pk == "PRIMARY KEY (id, created_at)"


def test_a_click_in_a_month_without_partition_waits_in_default_and_then_moves(app, backend, link):
    clock.set_now(NOW)
    early = add_click(link, NOW - timedelta(days=3))
    late = add_click(link, add_months(month_start(NOW), 1) + timedelta(hours=5))
    ids_before = dict(db.session.execute(select(Click.click_id, Click.id)).all())
    if backend == "postgresql":
        assert where_is(early) == where_is(late) == "clicks_default"

    made = partitions.ensure_partitions(months_ahead=1)

    assert dict(db.session.execute(select(Click.click_id, Click.id)).all()) == ids_before  # nothing lost
    if backend == "sqlite":
        assert made == []
        return
    assert made == ["clicks_y2024m06", "clicks_y2024m07"]
    assert (where_is(early), where_is(late)) == ("clicks_y2024m06", "clicks_y2024m07")
    assert db.session.scalar(text("SELECT count(*) FROM clicks_default")) == 0
    # the moved partition has every index of the parent (attach builds them)
    idx = set(db.session.scalars(text("SELECT indexname FROM pg_indexes WHERE tablename = 'clicks_y2024m06'")))
    parent = set(db.session.scalars(text("SELECT indexname FROM pg_indexes WHERE tablename = 'clicks'")))
    assert len(idx) == len(parent) == 7
    add_click(link, NOW)  # the next insert goes to the new partition, ids go on
    assert where_is(db.session.scalar(select(Click.click_id).order_by(Click.id.desc()).limit(1))) == "clicks_y2024m06"
    assert partitions.ensure_partitions(months_ahead=1) == []


def test_retention_drops_old_months_and_keeps_rollups_and_newer_clicks(app, backend, link):
    clock.set_now(NOW)
    old = add_click(link, datetime(2024, 2, 10, tzinfo=UTC))          # its month ends 1 Mar: past the cut
    straddling = add_click(link, datetime(2024, 3, 20, tzinfo=UTC))   # 87 days old, its month ends 1 Apr
    recent = add_click(link, NOW - timedelta(days=1))
    partitions.ensure_partitions(months_ahead=0, now=datetime(2024, 2, 1, tzinfo=UTC))
    partitions.ensure_partitions(months_ahead=0, now=datetime(2024, 3, 1, tzinfo=UTC))
    partitions.ensure_partitions(months_ahead=0, now=NOW)
    db.session.add(TrafficRollup(hour=datetime(2024, 2, 10, tzinfo=UTC), link_id=link.id, sub1="", clicks=1))
    db.session.commit()

    assert partitions.drop_old_partitions(0).partitions == []  # 0 keeps for ever
    dropped = partitions.drop_old_partitions(100, now=NOW)  # cut: 2024-03-07 12:00

    left = set(db.session.scalars(select(Click.click_id)))
    assert old not in left and recent in left
    if backend == "postgresql":
        assert dropped.partitions == ["clicks_y2024m02"] and dropped.rows == 0
        assert straddling in left  # its month holds rows younger than the cut: kept whole
        assert "clicks_y2024m02" not in partitions.partitions()
    else:
        assert dropped.partitions == [] and dropped.rows == 1 and straddling in left
    assert db.session.scalar(select(func.sum(TrafficRollup.clicks))) == 1  # rollups stay


def test_retention_deletes_old_rows_waiting_in_the_default_partition(app, backend, link):
    clock.set_now(NOW)
    old = add_click(link, datetime(2023, 1, 5, tzinfo=UTC))  # no partition for that month
    recent = add_click(link, NOW)
    dropped = partitions.drop_old_partitions(30, now=NOW)
    assert dropped.rows == 1 and set(db.session.scalars(select(Click.click_id))) == {recent}
    assert old != recent


def test_the_same_click_id_and_time_inserted_twice_is_one_row(app, backend, link):
    at = datetime(2024, 6, 1, 8, 30, 15, 123456, tzinfo=UTC)
    row = {"click_id": "c" * 32, "link_id": link.id, "campaign_id": link.campaign_id,
           "partner_id": link.partner_id, "created_at": at, "visitor": "v1", "method": "GET",
           "is_bot": False, "is_unique": True}
    insert = postgresql.insert if backend == "postgresql" else sqlite.insert
    stmt = insert(Click).on_conflict_do_nothing(index_elements=list(Click.CONFLICT_COLUMNS)).returning(Click.click_id)
    first = db.session.scalars(stmt, [row, dict(row)]).all()
    again = db.session.scalars(stmt, [dict(row)]).all()
    db.session.commit()
    assert (first, again, click_count()) == (["c" * 32], [], 1)
    assert Click.CONFLICT_COLUMNS == ("click_id", "created_at")


def test_the_schedule_runs_both_tasks(app, backend, link):
    clock.set_now(NOW)
    add_click(link, datetime(2023, 1, 5, tzinfo=UTC))
    made = run_task("click_partitions", NOW)
    if backend == "postgresql":
        assert made == "made clicks_y2024m06, clicks_y2024m07, clicks_y2024m08"
    else:
        assert made == "clicks not partitioned (SQLite): nothing to do"
    assert run_task("click_retention", NOW) == "click retention off (PARTNERNET_CLICK_RETENTION_DAYS=0)"
    app.config["PARTNERNET_CLICK_RETENTION_DAYS"] = 30
    try:
        summary = run_task("click_retention", NOW + timedelta(days=1))
    finally:
        app.config["PARTNERNET_CLICK_RETENTION_DAYS"] = 0
    assert summary == "clicks older than 30 days: dropped 0 partition(s), deleted 1 row(s)"
    assert click_count() == 0
