"""Periodic work that runs by itself (CONTRACT v2 §6): due times, one runner per due run, the
tasks (approvals, invoices on the 1st in each client's time zone, scheduled payout batches,
retention), ``flask schedule`` and the embedded runner. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from partnernet import clock
from partnernet.conversions.review import approve_conversion
from partnernet.errors import ValidationError
from partnernet.extensions import db
from partnernet.models import Conversion, Invoice, PayoutBatch, PostbackLog, ScheduleRun, User
from partnernet.payouts import scheduled
from partnernet.payouts.services import approve_batch
from partnernet.schedule import runs
from partnernet.schedule.jobs import postback_next_try
from partnernet.schedule.rules import month_first_local, next_slot, payout_due, previous_month, slot_at
from partnernet.schedule.runner import run_due, run_task, start_embedded
from partnernet.schedule.tasks import TASKS
from tests.factories import make_campaign, make_client, make_link, make_partner, make_user
from tests.services.test_ledger_helpers import record


def utc(*a):
    return datetime(*a, tzinfo=UTC)


# -- due times (pure) -------------------------------------------------------------------------

def test_slots_are_aligned_and_a_missed_slot_is_due_at_once():
    assert slot_at(utc(2025, 3, 4, 10, 17, 42), 900) == utc(2025, 3, 4, 10, 15)
    assert slot_at(utc(2025, 3, 4, 10, 15), 900) == utc(2025, 3, 4, 10, 15)  # exactly on time
    daily = 86400, 3 * 3600 + 1800
    assert slot_at(utc(2025, 3, 4, 3, 29), *daily) == utc(2025, 3, 3, 3, 30)  # before today's 03:30
    assert slot_at(utc(2025, 3, 4, 3, 30), *daily) == utc(2025, 3, 4, 3, 30)
    assert next_slot(utc(2025, 3, 4, 3, 30), *daily) == utc(2025, 3, 5, 3, 30)
    with pytest.raises(ValueError):
        slot_at(datetime(2025, 3, 4), 60)  # naive
    with pytest.raises(ValueError):
        slot_at(utc(2025, 3, 4), 0)


def test_invoices_are_due_at_local_midnight_of_the_first():
    auckland, la = ZoneInfo("Pacific/Auckland"), ZoneInfo("America/Los_Angeles")
    now = utc(2025, 1, 31, 12, 0)  # Auckland: Feb 1 01:00; Los Angeles: Jan 31 04:00
    assert month_first_local(now, auckland) == utc(2025, 1, 31, 11, 0)  # Feb 1 00:00 NZDT
    assert month_first_local(now, la) == utc(2025, 1, 1, 8, 0)  # Jan 1 00:00 PST
    assert previous_month(month_first_local(now, auckland).astimezone(auckland).date()) == (2025, 1)
    assert previous_month(datetime(2025, 1, 1).date()) == (2024, 12)


def test_payout_day_is_clamped_to_the_month():
    assert payout_due(utc(2025, 2, 27, 23, 59), 31) is None
    assert payout_due(utc(2025, 2, 28, 0, 0), 31) == utc(2025, 2, 28)
    assert payout_due(utc(2025, 3, 4), 5) is None and payout_due(utc(2025, 3, 5, 1), 5) == utc(2025, 3, 5)


def test_postback_retries_follow_the_doubling_backoff():
    t0 = utc(2025, 1, 1)
    assert [postback_next_try(t0, n, 30) - t0 for n in (0, 1, 2, 3)] == [
        timedelta(0), timedelta(seconds=30), timedelta(seconds=90), timedelta(seconds=210)]


# -- one runner per due run -------------------------------------------------------------------

def test_a_due_run_is_claimed_once_and_a_failed_or_dead_one_is_taken_over(app):
    due = utc(2025, 1, 1)
    first = runs.claim("t", due, now=due)
    assert first is not None and runs.claim("t", due, now=due) is None
    runs.finish(first, "ok", "done")
    assert runs.claim("t", due, now=due + timedelta(days=1)) is None  # finished: never again
    other = runs.claim("u", due, now=due)
    runs.finish(other, "failed", "boom")
    assert runs.claim("u", due, now=due) == other  # a failed run is tried again...
    runs.finish(other, "failed", "boom")
    assert runs.claim("u", due, now=due) == other
    runs.finish(other, "failed", "boom")
    assert runs.claim("u", due, now=due) is None  # ...up to MAX_ATTEMPTS
    dead = runs.claim("v", due, now=due)
    assert runs.claim("v", due, now=due + timedelta(seconds=runs.LEASE_S - 1)) is None  # still running
    assert runs.claim("v", due, now=due + timedelta(seconds=runs.LEASE_S + 1)) == dead  # its runner died


def test_two_runners_at_once_run_a_due_task_once(pg_app):
    """Two PostgreSQL sessions claim the same due run at the same moment: one runs it."""
    due = utc(2025, 1, 1)
    barrier = threading.Barrier(8)
    got = []

    def claim():
        with pg_app.app_context():
            barrier.wait()
            got.append(runs.claim("race", due, now=due))
            db.session.remove()

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len([g for g in got if g is not None]) == 1
    assert db.session.scalar(select(func.count(ScheduleRun.id)).where(ScheduleRun.task == "race")) == 1


def test_run_task_runs_once_per_slot_and_a_failure_is_recorded(app, monkeypatch):
    now = utc(2025, 3, 4, 10, 0, 30)
    assert run_task("requeue_stuck", now) == "nothing lagged"
    assert run_task("requeue_stuck", now + timedelta(seconds=20)) is None  # same minute: done
    assert run_task("requeue_stuck", now + timedelta(seconds=60)) == "nothing lagged"  # next slot

    def boom(now):
        raise RuntimeError("database on fire")

    monkeypatch.setattr("partnernet.schedule.jobs.requeue_stuck", boom)
    assert run_task("requeue_stuck", now + timedelta(seconds=120)) is None
    row = db.session.scalar(select(ScheduleRun).order_by(ScheduleRun.due_at.desc()).limit(1))
    assert (row.status, row.result) == ("failed", "RuntimeError: database on fire")
    with pytest.raises(KeyError):
        run_task("no_such_task", now)


# -- the tasks --------------------------------------------------------------------------------

def _hold0():
    camp = make_campaign(make_client(), hold_days=0)
    return camp, make_link(make_partner(), camp)


def test_matured_conversions_are_approved_by_the_schedule_but_flagged_ones_wait(app):
    camp, link = _hold0()
    clean, flagged = record(camp, link), record(camp, link)
    conv = db.session.get(Conversion, flagged)
    conv.flags = ["fast_conversion"]
    db.session.commit()
    assert run_task("approve_matured", clock.utcnow() + timedelta(seconds=1)) == "approved 1 conversion(s)"
    db.session.expire_all()
    assert db.session.get(Conversion, clean).status == "approved"
    assert db.session.get(Conversion, flagged).status == "pending"


def _client_with_january_sale(name, tz):
    client = make_client(name=name)
    client.timezone = tz
    db.session.commit()
    camp = make_campaign(client, hold_days=30)
    clock.set_now(utc(2025, 1, 20, 12))
    record(camp, make_link(make_partner(), camp))
    clock.set_now(None)
    return client


def _periods(client):
    return sorted(p.strftime("%Y-%m") for p in db.session.scalars(
        select(Invoice.period_start).where(Invoice.client_id == client.id)))


def test_invoices_are_built_on_the_first_in_each_clients_time_zone(app):
    nz = _client_with_january_sale("Kiwi", "Pacific/Auckland")
    la = _client_with_january_sale("Surf", "America/Los_Angeles")
    from partnernet.clients.invoices import build_due_invoices

    build_due_invoices(utc(2025, 1, 25))  # December's run for both (nothing to bill: no invoice)
    assert _periods(nz) == [] and _periods(la) == []
    # 2025-01-31 12:00 UTC: Feb 1 01:00 in Auckland, still Jan 31 in Los Angeles.
    assert "of 1 client(s)" in build_due_invoices(utc(2025, 1, 31, 12))
    assert _periods(nz) == ["2025-01"] and _periods(la) == []
    assert "of 0 client(s)" in build_due_invoices(utc(2025, 1, 31, 13))  # done once
    # Los Angeles midnight is 08:00 UTC; a look a day late catches up.
    assert "of 1 client(s)" in build_due_invoices(utc(2025, 2, 2, 9))
    assert _periods(la) == ["2025-01"]
    runs_ = dict(db.session.execute(select(ScheduleRun.task, ScheduleRun.result).where(
        ScheduleRun.due_at >= utc(2025, 1, 31))).all())
    assert runs_ == {f"monthly_invoices:client:{nz.id}": "2025-01", f"monthly_invoices:client:{la.id}": "2025-01"}


def test_partner_postbacks_are_retried_when_their_backoff_is_over(app, monkeypatch):
    from partnernet.models import PartnerPostbackDelivery

    monkeypatch.setitem(app.config, "PARTNERNET_PARTNER_POSTBACK_BACKOFF_S", 30)
    created = utc(2025, 3, 4, 10, 0, 0)
    row = PartnerPostbackDelivery(partner_id=make_partner().id, trigger="approved", url="http://127.0.0.1:9/pb",
                                  attempts=1, created_at=created)
    done = PartnerPostbackDelivery(partner_id=row.partner_id, trigger="test", url="http://127.0.0.1:9/pb",
                                   attempts=1, created_at=created - timedelta(days=1), status="delivered")
    db.session.add_all([row, done])
    db.session.commit()
    assert run_task("partner_postback_retries", created + timedelta(seconds=20)) == "queued 0 partner postback retries"
    assert db.session.get(PartnerPostbackDelivery, row.id).attempts == 1  # its 30 s are not over
    assert run_task("partner_postback_retries", created + timedelta(seconds=61)) == "queued 1 partner postback retry"
    db.session.expire_all()
    assert db.session.get(PartnerPostbackDelivery, row.id).attempts == 2  # the second try was made
    assert db.session.get(PartnerPostbackDelivery, done.id).attempts == 1


@pytest.fixture
def earners(app):
    """Two partners with approved EUR earnings of 60.00 (on Feb 20) and 5.00 (on Mar 2)."""
    staff = make_user("maker@example.com")
    camp = make_campaign(make_client(currency="EUR"), events=[
        {"key": "big", "client_fee_minor": 10000, "payout_minor": 6000},
        {"key": "small", "client_fee_minor": 1000, "payout_minor": 500}])
    big, small = make_partner(name="Big"), make_partner(name="Small")
    for partner, event, day in ((big, "big", 20), (small, "small", 30)):
        clock.set_now(utc(2025, 2, day) if day <= 28 else utc(2025, 3, 2))
        approve_conversion(record(camp, make_link(partner, camp), event=event), user_id=staff.id)
    clock.set_now(None)
    return {"staff": staff, "big": big, "small": small}


def test_scheduled_payout_batch_on_its_day_with_its_minimum(earners):
    scheduled.set_schedule("EUR", 5, min_amount_minor=1000)
    assert run_task("payout_batches", utc(2025, 3, 4, 23)) == "created no payout batch"  # not its day
    result = run_task("payout_batches", utc(2025, 3, 5, 0, 10))
    batch = db.session.scalar(select(PayoutBatch))
    assert result == f"created EUR #{batch.id}"
    system = db.session.get(User, batch.created_by)
    assert (system.email, system.role, batch.status) == (scheduled.SYSTEM_EMAIL, "staff", "draft")
    assert [(i.partner_id, i.amount_minor) for i in batch.items] == [(earners["big"].id, 6000)]  # 5.00 < 10.00
    assert run_task("payout_batches", utc(2025, 3, 5, 0, 30)) == "created no payout batch"  # once per day
    assert db.session.scalar(select(func.count(PayoutBatch.id))) == 1
    assert approve_batch(batch.id, earners["staff"].id).status == "approved"  # any staff user checks it
    from partnernet.auth.services import check_password

    assert check_password(scheduled.SYSTEM_EMAIL, "") is None and check_password(scheduled.SYSTEM_EMAIL, "!") is None


def test_net_terms_hold_back_recent_earnings(earners):
    scheduled.set_schedule("EUR", 5, min_amount_minor=0, net_days=10)  # cut-off Feb 23
    scheduled.create_due_batches(utc(2025, 3, 5, 1))
    batch = db.session.scalar(select(PayoutBatch))
    assert [(i.partner_id, i.amount_minor) for i in batch.items] == [(earners["big"].id, 6000)]


@pytest.mark.parametrize("args,code", [
    (("XXX", 5), "unknown_currency"), (("EUR", 0), "bad_day"), (("EUR", 32), "bad_day"),
    (("EUR", 5, -1), "bad_amount"), (("EUR", 5, 0, -3), "bad_net_days"), (("EUR", "5"), "bad_day")])
def test_bad_payout_schedules_are_refused(app, args, code):
    with pytest.raises(ValidationError) as err:
        scheduled.set_schedule(*args)
    assert err.value.code == code
    assert scheduled.schedules() == []


def test_retention_prunes_only_old_rows(app):
    now = clock.utcnow()
    for days in (200, 91, 89, 0):
        db.session.add(PostbackLog(received_at=now - timedelta(days=days), method="GET", params={}, http_status=200,
                                   outcome="created", message=f"{days}"))
    db.session.add(ScheduleRun(task="approve_matured", due_at=now - timedelta(days=30), status="ok"))
    db.session.add(ScheduleRun(task="payout_batch:EUR", due_at=now - timedelta(days=30), status="ok"))
    db.session.commit()
    assert run_task("retention", now).startswith("postback_log 2,")
    assert sorted(db.session.scalars(select(PostbackLog.message))) == ["0", "89"]
    assert sorted(db.session.scalars(select(ScheduleRun.task))) == ["payout_batch:EUR", "retention"]


# -- operators ----------------------------------------------------------------------------------

def test_flask_schedule_lists_every_task_and_runs_one(app):
    cli = app.test_cli_runner()
    out = cli.invoke(args=["schedule"]).output
    for task in TASKS:
        assert task.name in out
    assert "never" in out and "now (due)" in out and "daily at 03:30 UTC" in out
    res = cli.invoke(args=["schedule", "run", "approve_matured"])
    assert res.exit_code == 0 and "approve_matured: approved 0 conversion(s)" in res.output
    run_task("retention")
    line = next(ln for ln in cli.invoke(args=["schedule", "list"]).output.splitlines() if ln.startswith("retention"))
    assert " ok " in line and "now (due)" not in line
    bad = cli.invoke(args=["schedule", "run", "nope"])
    assert bad.exit_code == 2 and "no task 'nope'" in bad.output
    assert cli.invoke(args=["schedule", "payouts", "set", "--currency", "eur", "--day", "5", "--min", "50.00"]).exit_code == 0
    assert "payout schedule EUR: day 5 of each month (UTC), minimum 50.00, NET 0" in cli.invoke(args=["schedule"]).output
    refused = cli.invoke(args=["schedule", "payouts", "set", "--currency", "EUR", "--day", "5", "--min", "5.001"])
    assert refused.exit_code == 2 and "error:" in refused.output


def test_the_embedded_runner_runs_due_tasks_in_process(app):
    """Without Redis the web process runs the schedule in a thread of its own."""
    camp, link = _hold0()
    conv_id = record(camp, link)
    thread = start_embedded(app, interval=0.2)
    try:
        assert thread is not None and start_embedded(app, interval=0.2) is None  # once per process
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            db.session.expire_all()
            if db.session.get(Conversion, conv_id).status == "approved":
                break
            time.sleep(0.1)
        assert db.session.get(Conversion, conv_id).status == "approved"
        db.session.rollback()
    finally:
        app.extensions.pop("partnernet_schedule_stop").set()
        thread.join(10)
        app.extensions.pop("partnernet_schedule_thread")
    assert run_due() is not None
