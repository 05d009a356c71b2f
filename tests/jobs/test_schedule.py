"""Periodic work runs by itself with a real ``flask --app wsgi worker`` (CONTRACT v2 §6): nobody
calls a task; RQ's cron scheduler in the worker queues them, and at start every task whose last
run is older than its interval catches up, on PostgreSQL and Redis."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from partnernet import clock
from partnernet.extensions import db
from partnernet.models import Conversion, Invoice, PostbackLog, ScheduleRun
from partnernet.schedule.rules import slot_at
from partnernet.schedule.tasks import BY_NAME
from tests.factories import make_campaign, make_client, make_link, make_partner
from tests.services.test_ledger_helpers import record


def _wait(predicate, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        db.session.rollback()
        db.session.expire_all()
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def world(redis_app):
    """A hold-0 campaign with a clean and a flagged pending conversion, a client with a sale last
    month, postback log rows old and new, and run rows: retention last ran two days ago (missed),
    email retries ran in the current slot."""
    client = make_client()
    camp = make_campaign(client, hold_days=0)
    link = make_link(make_partner(), camp)
    clean, flagged = record(camp, link, run_jobs=False), record(camp, link, run_jobs=False)
    conv = db.session.get(Conversion, flagged)
    conv.flags = ["self_referral"]
    last_month = clock.utcnow().replace(day=1) - timedelta(days=3)
    late = db.session.get(Conversion, record(camp, link, run_jobs=False))
    late.created_at, late.hold_until = last_month, last_month + timedelta(days=365)
    now = clock.utcnow()
    for days in (120, 1):
        db.session.add(PostbackLog(received_at=now - timedelta(days=days), method="GET", params={}, http_status=200,
                                   outcome="created", message=str(days)))
    retention = BY_NAME["retention"]
    db.session.add(ScheduleRun(task="retention", due_at=slot_at(now, retention.every, retention.offset)
                               - timedelta(days=2), status="ok"))
    email = BY_NAME["email_retries"]
    db.session.add(ScheduleRun(task="email_retries", due_at=slot_at(now, email.every, email.offset), status="ok"))
    db.session.commit()
    return {"clean": clean, "flagged": flagged, "client": client}


def test_the_worker_runs_the_schedule_by_itself(world, request):
    request.getfixturevalue("worker")  # started after the data: nobody calls a task
    status = lambda cid: db.session.get(Conversion, cid).status  # noqa: E731
    assert _wait(lambda: status(world["clean"]) == "approved"), "approve_matured did not run"
    assert status(world["flagged"]) == "pending"  # flagged ones wait for staff
    # retention's last run was two days ago: it catches up at start and prunes only old rows
    assert _wait(lambda: db.session.scalar(select(PostbackLog.message).where(PostbackLog.message == "120")) is None)
    assert list(db.session.scalars(select(PostbackLog.message))) == ["1"]
    runs = list(db.session.scalars(select(ScheduleRun).where(ScheduleRun.task == "retention")
                                   .order_by(ScheduleRun.due_at)))
    assert len(runs) == 2 and runs[1].status == "ok"
    # last month's invoice is built for the client (due since the 1st in its time zone)
    assert _wait(lambda: db.session.scalar(select(Invoice).where(Invoice.client_id == world["client"].id)) is not None)
    inv = db.session.scalar(select(Invoice).where(Invoice.client_id == world["client"].id))
    assert (inv.status, len(inv.lines)) == ("draft", 1)
    # email retries already ran in this slot: not again
    assert len(list(db.session.scalars(select(ScheduleRun).where(ScheduleRun.task == "email_retries")))) == 1
    assert _wait(lambda: {r.task for r in db.session.scalars(select(ScheduleRun).where(ScheduleRun.status == "ok"))}
                 >= {"approve_matured", "requeue_stuck", "partner_postback_retries", "monthly_invoices",
                     "payout_batches", "retention"})
