"""Email through a real RQ worker (``flask worker``) to a real local SMTP server (aiosmtpd): the
worker, configured by its environment, sends after commit; an SMTP 451 is retried by RQ's
``Retry`` (the worker's scheduler) and the email arrives once."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from partnernet.extensions import db
from partnernet.mail import outbox
from partnernet.models import OutboxEmail
from tests.conftest import drain_jobs
from tests.services.test_email import SmtpSink, signup


@pytest.fixture
def smtp_env(redis_app, monkeypatch):
    """An SMTP sink, and the worker's environment pointing at it (set after ``redis_app`` was
    built, so only the worker process reads it)."""
    server = SmtpSink()
    monkeypatch.setenv("PARTNERNET_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("PARTNERNET_SMTP_PORT", str(server.port))
    monkeypatch.setenv("PARTNERNET_MAIL_FROM", "PartnerNet <noreply@partnernet.example>")
    yield server
    server.stop()


def test_worker_sends_the_signup_confirmation(redis_app, smtp_env, worker):
    user = signup()  # commits: the send job goes to RQ
    drain_jobs()
    [msg] = smtp_env.messages
    assert msg["To"] == user.email and msg["From"] == "PartnerNet <noreply@partnernet.example>"
    assert re.search(r"/signup/confirm/[\w.-]+", msg.get_content())
    db.session.expire_all()
    row = db.session.scalars(select(OutboxEmail)).one()
    assert row.sent_at is not None and row.attempts == 1 and row.body == outbox.REDACTED_BODY


def test_worker_retries_after_a_451_and_sends_once(redis_app, smtp_env, worker, monkeypatch):
    smtp_env.answers = ["451 4.3.0 try again later"]
    monkeypatch.setitem(redis_app.config, "PARTNERNET_MAIL_RETRY_S", (1, 1))  # the Retry rides with the job
    row = outbox.queue_email("ann@example.com", "Payout news", "text", kind="payout_sent")
    db.session.commit()
    drain_jobs()  # waits for the scheduled retry too; fails if the job ended failed
    db.session.expire_all()
    row = db.session.get(OutboxEmail, row.id)
    assert row.sent_at is not None and row.attempts == 2 and row.error is None
    assert [m["Subject"] for m in smtp_env.messages] == ["Payout news"]
