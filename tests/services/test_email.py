"""Outgoing email (CONTRACT §6, last paragraph), delivered to a real local SMTP server (aiosmtpd)
in-process right after commit: every kind at its moment, the outbox row sent once and its
sign-in link removed, retries, refusals, no token in any log line. SQLite and PostgreSQL.
STARTTLS, implicit TLS and AUTH: tests/services/test_email_smtp.py; the RQ worker:
tests/jobs/test_email_job.py."""

from __future__ import annotations

import email
import email.policy
import logging
import re
import socket
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from partnernet import queue
from partnernet.catalog.services import set_partner_status
from partnernet.clock import utcnow
from partnernet.extensions import db
from partnernet.mail import outbox
from partnernet.mail.smtp import SmtpFailure
from partnernet.models import CampaignApplication, OutboxEmail, Partner, User
from partnernet.partners import accounts, applications
from tests.factories import make_campaign, make_client, make_partner, make_user

PW = "Sunny-Meadow-42"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SmtpSink:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 and a free port. ``answers``: replies to the
    first DATA commands (e.g. ``"451 4.3.0 try again later"``), then it accepts. ``messages``:
    what arrived, parsed. Extra keyword arguments go to aiosmtpd's Controller (TLS, AUTH)."""

    def __init__(self, answers=(), **controller_kwargs):
        from aiosmtpd.controller import Controller

        self.answers = list(answers)
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, **controller_kwargs)
        self.controller.start()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook
        if self.answers:
            return self.answers.pop(0)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(email.message_from_bytes(envelope.original_content or envelope.content,
                                                      policy=email.policy.default))
        return "250 2.0.0 OK"

    def to(self, addr: str) -> list:
        return [m for m in self.messages if m["To"] == addr]

    def stop(self):
        self.controller.stop()


@pytest.fixture
def sink(app, monkeypatch):
    server = SmtpSink()
    monkeypatch.setitem(app.config, "PARTNERNET_SMTP_HOST", "127.0.0.1")
    monkeypatch.setitem(app.config, "PARTNERNET_SMTP_PORT", server.port)
    monkeypatch.setitem(app.config, "PARTNERNET_MAIL_FROM", "PartnerNet <noreply@partnernet.example>")
    yield server
    server.stop()


def commit_and_send():
    db.session.commit()
    queue.run_pending()
    db.session.expire_all()


def body(msg) -> str:
    return msg.get_content()


def row_of(kind: str) -> OutboxEmail:
    return db.session.scalars(select(OutboxEmail).where(OutboxEmail.kind == kind)).one()


def signup(email_addr="new.partner@example.com"):
    return accounts.signup_partner(accounts.SignupData(
        email=email_addr, password=PW, name="Ann's Deals", kind="affiliate", website="https://ann.example/",
        channels=["content"], payout_method="paypal", paypal_email="pay@ann.example", accept_terms=True))


# --------------------------------------------------------------------------- kinds


def test_signup_confirmation_is_delivered_with_headers_and_its_row_redacted(sink):
    signup()
    queue.run_pending()
    db.session.expire_all()
    [msg] = sink.to("new.partner@example.com")
    assert msg["From"] == "PartnerNet <noreply@partnernet.example>" and msg["Subject"] == "Confirm your PartnerNet email"
    assert msg["Date"] and re.fullmatch(r"<[^@>]+@partnernet\.example>", msg["Message-ID"])
    assert msg["Auto-Submitted"] == "auto-generated" and msg.get_content_type() == "text/plain"
    token = re.search(r"/signup/confirm/(\S+)", body(msg)).group(1)
    row = row_of("confirm_email")
    assert row.sent_at is not None and row.attempts == 1 and row.message_id == msg["Message-ID"]
    assert token not in row.body and row.body == outbox.REDACTED_BODY  # no live link left in the outbox
    accounts.confirm_email(token)  # the delivered link works, once
    with pytest.raises(Exception):
        accounts.confirm_email(token)


def test_password_reset_is_delivered_and_the_link_dies_once_used(sink):
    make_user("ann@example.com", role="staff", password=PW)
    accounts.request_password_reset("ANN@example.com")
    queue.run_pending()
    [msg] = sink.to("ann@example.com")
    token = re.search(r"/password-reset/(\S+)", body(msg)).group(1)
    db.session.expire_all()
    assert token not in row_of("password_reset").body
    accounts.reset_password(token, "Brand-New-Pass-77")
    with pytest.raises(Exception):  # bound to the password hash: dead once used
        accounts.reset_password(token, "Another-Pass-8899")


def test_partner_decisions_are_delivered(sink):
    staff = make_user("boss@example.com")
    p = make_partner(status="pending", name="Bea")
    set_partner_status(p.id, "approve", staff.id)
    set_partner_status(p.id, "suspend", staff.id, reason="spam traffic")
    set_partner_status(p.id, "approve", staff.id)  # reinstated
    q = make_partner(status="pending")
    from partnernet.staff.services import change_partner_status

    change_partner_status(q.id, "reject", staff.id, "No website")
    queue.run_pending()
    subjects = [m["Subject"] for m in sink.to(p.email)]
    assert subjects == ["Your PartnerNet account is approved", "Your PartnerNet account is suspended",
                        "Your PartnerNet account is active again"]
    assert "Reason: spam traffic" in body(sink.to(p.email)[1]) and "Hello Bea" in body(sink.to(p.email)[0])
    [rejected] = sink.to(q.email)
    assert "No website" in body(rejected)
    kinds = db.session.scalars(select(OutboxEmail.kind).order_by(OutboxEmail.id)).all()
    assert kinds == ["partner_approved", "partner_suspended", "partner_reinstated", "partner_rejected"]


def test_a_refused_decision_sends_nothing(sink):
    staff = make_user("boss@example.com")
    p = make_partner(status="approved")
    with pytest.raises(Exception):
        set_partner_status(p.id, "reject", staff.id)  # approved → rejected is not a transition: 409
    db.session.rollback()
    queue.run_pending()
    assert sink.messages == [] and db.session.scalar(select(OutboxEmail)) is None


def test_application_decisions_are_delivered(sink):
    staff = make_user("boss@example.com")
    camp = make_campaign(make_client())
    p = make_partner(name="Cal")
    app_row = CampaignApplication(partner_id=p.id, campaign_id=camp.id, status="pending")
    db.session.add(app_row)
    db.session.commit()
    applications.approve_application(app_row.id, staff.id)
    applications.reject_application(app_row.id, staff.id, reason="audience does not fit")
    queue.run_pending()
    approved, rejected = sink.to(p.email)
    assert approved["Subject"] == f"Your application to {camp.name} was approved"
    assert rejected["Subject"] == f"Your application to {camp.name} was not approved"
    assert "audience does not fit" in body(rejected)


def test_payout_sent_one_email_per_partner_in_the_batch(sink):
    from partnernet.conversions.review import approve_conversion
    from partnernet.payouts.services import approve_batch, create_batch, mark_batch_paid
    from tests.factories import make_link
    from tests.services.test_ledger_helpers import record

    maker, checker = make_user("maker@example.com"), make_user("checker@example.com")
    camp = make_campaign(make_client(currency="EUR"), events=[{"key": "sale", "client_fee_minor": 1000,
                                                               "payout_minor": 600}])
    a, b = make_partner(name="Ava"), make_partner(name="Bo")
    b.payout_method, b.iban = "bank", "DE89370400440532013000"
    db.session.commit()
    link_a, link_b = make_link(a, camp), make_link(b, camp)
    for link in (link_a, link_b, link_b):
        approve_conversion(record(camp, link), maker.id)
    batch = create_batch("EUR", 0, maker.id)
    approve_batch(batch.id, checker.id)
    queue.run_pending()
    assert sink.messages == []  # nothing before the batch is paid
    mark_batch_paid(batch.id, checker.id)
    queue.run_pending()
    [to_a], [to_b] = sink.to(a.email), sink.to(b.email)
    assert "6.00" in to_a["Subject"] and "EUR" in to_a["Subject"] and f"payout batch {batch.id}" in body(to_a)
    assert "12.00" in to_b["Subject"] and "bank transfer" in body(to_b)
    assert len(sink.messages) == 2


# --------------------------------------------------------------------------- budget and caps


def _spend(camp, link, n=1, status="pending"):
    from tests.services.test_ledger_helpers import record

    return [record(camp, link, status=status) for _ in range(n)]


def test_budget_alerts_at_80_and_100_once_each_per_budget_value(sink):
    from tests.factories import make_link
    from tests.services.test_ledger_helpers import postback_status

    client = make_client()
    make_user("buyer@acme.example", role="client", client_id=client.id)
    gone = make_user("gone@acme.example", role="client", client_id=client.id)
    gone.active = False  # a deactivated client user gets no alert
    db.session.commit()
    camp = make_campaign(client, budget_minor=1000, events=[{"key": "sale", "client_fee_minor": 200,
                                                             "payout_minor": 100}])
    link = make_link(make_partner(), camp)
    _spend(camp, link, 3)  # 60%
    assert sink.messages == []
    ids = _spend(camp, link, 1)  # 80%
    [at80] = sink.to("buyer@acme.example")
    assert at80["Subject"] == f"{camp.name}: 80% of the budget used" and "$8.00 USD of $10.00 USD" in body(at80)
    postback_status(ids[0], "reversed")  # back to 60% ...
    _spend(camp, link, 1)  # ... and 80% again: no second alert for the same budget
    assert len(sink.messages) == 1
    _spend(camp, link, 1)  # 100%
    assert [m["Subject"] for m in sink.messages][1] == f"{camp.name}: budget used up"
    _spend(camp, link, 1)  # rejected over_budget; spend stays at 100%
    assert len(sink.messages) == 2 and sink.to("gone@acme.example") == []
    db.session.execute(update(type(camp)).where(type(camp).id == camp.id).values(budget_minor=1200))
    db.session.commit()
    from partnernet.ledger.tasks import sync_lagging_job

    sync_lagging_job()  # a new budget value (1000 of 1200 = 83%): alerts again, once
    sync_lagging_job()
    queue.run_pending()
    assert [m["Subject"] for m in sink.messages][2:] == [f"{camp.name}: 80% of the budget used"]


def test_budget_jump_past_100_sends_only_the_100_alert(sink):
    from tests.factories import make_link

    client = make_client()
    make_user("buyer@acme.example", role="client", client_id=client.id)
    camp = make_campaign(client, budget_minor=1000, events=[{"key": "sale", "client_fee_minor": 1000,
                                                             "payout_minor": 100}])
    _spend(camp, make_link(make_partner(), camp), 1)
    assert [m["Subject"] for m in sink.messages] == [f"{camp.name}: budget used up"]


def test_cap_reached_alert_once_per_window(sink):
    from tests.factories import make_link

    client = make_client()
    make_user("buyer@acme.example", role="client", client_id=client.id)
    camp = make_campaign(client, events=[{"key": "sale", "client_fee_minor": 500, "payout_minor": 100}])
    camp.daily_cap_minor = 1000
    db.session.commit()
    link = make_link(make_partner(), camp)
    _spend(camp, link, 1)
    assert sink.messages == []
    _spend(camp, link, 1)  # the daily cap reached
    _spend(camp, link, 1)  # rejected over_daily_cap
    [msg] = sink.messages
    assert msg["Subject"] == f"{camp.name}: daily cap reached" and "$10.00 USD" in body(msg)


# --------------------------------------------------------------------------- sending rules


def test_without_smtp_the_row_stays_unsent_and_the_log_names_only_id_and_kind(app, caplog):
    caplog.set_level(logging.DEBUG)
    make_user("ann@example.com", role="staff", password=PW)
    accounts.request_password_reset("ann@example.com")
    queue.run_pending()
    row = row_of("password_reset")
    token = re.search(r"/password-reset/(\S+)", row.body).group(1)
    assert row.sent_at is None and row.attempts == 0  # kept, with its link, for the operator
    assert f"email {row.id} (password_reset) not sent: no SMTP configured" in caplog.messages
    assert token not in caplog.text and "ann@example.com" not in caplog.text and "Reset your" not in caplog.text


def test_no_token_body_or_address_in_any_log_line_when_sent(sink, caplog):
    caplog.set_level(logging.DEBUG)
    make_user("ann@example.com", role="staff", password=PW)
    accounts.request_password_reset("ann@example.com")
    signup()
    queue.run_pending()
    tokens = [re.search(r"https?://\S+/([\w.-]+)\s", body(m)).group(1) for m in sink.messages]
    assert len(tokens) == 2
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("mail.log")]  # not the test server's
    for line in ours:
        for secret in (*tokens, "ann@example.com", "new.partner@example.com", "Set a new password"):
            assert secret not in line, (secret, line)
    assert any(re.fullmatch(r"email \d+ \(password_reset\) sent to example\.com", m) for m in ours)


def test_a_sent_row_is_never_sent_twice(sink):
    make_user("ann@example.com", role="staff", password=PW)
    accounts.request_password_reset("ann@example.com")
    queue.run_pending()
    row = row_of("password_reset")
    assert outbox.send_email_job(row.id) == "skipped"  # the same job again (RQ retry, requeue, a twin)
    db.session.execute(update(OutboxEmail).where(OutboxEmail.id == row.id).values(sent_at=None))
    db.session.commit()  # even were it unsent: a fresh claim by another sender blocks a second send
    db.session.execute(update(OutboxEmail).where(OutboxEmail.id == row.id).values(claimed_at=utcnow()))
    db.session.commit()
    assert outbox.send_email_job(row.id) == "skipped"
    assert outbox.requeue_unsent() == 0
    assert len(sink.messages) == 1


def test_an_abandoned_claim_is_taken_again_after_its_ttl(sink):
    make_user("ann@example.com", role="staff", password=PW)
    row = outbox.queue_email("ann@example.com", "Hi", "text", kind="test")
    db.session.commit()
    queue.discard_pending()
    stale = utcnow() - timedelta(seconds=outbox.CLAIM_TTL_S + 1)
    db.session.execute(update(OutboxEmail).where(OutboxEmail.id == row.id).values(claimed_at=stale, attempts=1))
    db.session.commit()
    assert outbox.send_email_job(row.id) == "sent" and len(sink.messages) == 1
    assert db.session.get(OutboxEmail, row.id).attempts == 2


def test_a_451_is_retried_and_a_550_is_final(sink):
    sink.answers = ["451 4.3.0 try again later"]
    row = outbox.queue_email("ann@example.com", "Hi", "text", kind="test")
    db.session.commit()
    queue.discard_pending()
    with pytest.raises(SmtpFailure) as err:
        outbox.send_email_job(row.id)
    assert not err.value.permanent and err.value.code == 451
    db.session.expire_all()
    row = db.session.get(OutboxEmail, row.id)
    assert (row.sent_at, row.claimed_at, row.attempts) == (None, None, 1) and "451" in row.error
    assert outbox.requeue_unsent() == 1  # in-process mode has no RQ retry: the sweep queues it again
    queue.run_pending()
    db.session.expire_all()
    assert db.session.get(OutboxEmail, row.id).sent_at is not None and len(sink.messages) == 1
    sink.answers = ["550 5.1.1 no such user"]
    bad = outbox.queue_email("nobody@example.com", "Hi", "text", kind="test")
    commit_and_send()
    bad = db.session.get(OutboxEmail, bad.id)
    assert bad.failed_at is not None and bad.sent_at is None and "550" in bad.error
    assert outbox.send_email_job(bad.id) == "skipped" and outbox.requeue_unsent() == 0


def test_a_rolled_back_email_is_never_sent(sink):
    outbox.queue_email("ann@example.com", "Hi", "text", kind="test")
    db.session.rollback()
    queue.run_pending()
    assert sink.messages == [] and db.session.scalar(select(OutboxEmail)) is None


def test_subject_header_injection_is_neutralised(sink):
    outbox.queue_email("ann@example.com", "Hello\r\nBcc: victim@example.com", "text", kind="test")
    commit_and_send()
    [msg] = sink.messages
    assert msg["Subject"] == "Hello Bcc: victim@example.com" and msg["Bcc"] is None
    assert sink.envelopes[0][1] == ["ann@example.com"]


def test_unsent_sign_in_links_are_removed_once_dead(app):
    make_user("ann@example.com", role="staff", password=PW)
    accounts.request_password_reset("ann@example.com")
    queue.run_pending()
    row = row_of("password_reset")
    assert "/password-reset/" in row.body
    assert outbox.SECRET_LINK_LIFETIME_S >= accounts.CONFIRM_MAX_AGE_S >= accounts.RESET_MAX_AGE_S
    assert outbox.redact_expired(utcnow() + timedelta(seconds=outbox.SECRET_LINK_LIFETIME_S + 1)) == 1
    db.session.expire_all()
    assert db.session.get(OutboxEmail, row.id).body == outbox.REDACTED_BODY


def test_other_rows_keep_their_body_once_sent(sink):
    staff = make_user("boss@example.com")
    p = make_partner(status="pending")
    set_partner_status(p.id, "approve", staff.id)
    queue.run_pending()
    db.session.expire_all()
    assert "approved" in row_of("partner_approved").body
    assert db.session.scalar(select(User.id)) and db.session.get(Partner, p.id).status == "approved"
