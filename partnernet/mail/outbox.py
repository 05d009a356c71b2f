"""The outbox and its send job (CONTRACT §6, last paragraph).

:func:`queue_email` writes an ``outbox_emails`` row in the caller's transaction and asks for
:func:`send_email_job` after commit (RQ with ``REDIS_URL``, with RQ ``Retry`` and backoff
``PARTNERNET_MAIL_RETRY_S``; in-process right after the commit without Redis). Nothing is sent
when the transaction rolls back.

The job:

- decides with the settings of the process that runs it: no ``PARTNERNET_SMTP_HOST`` leaves the
  row unsent and logs ``email <id> (<kind>) not sent: no SMTP configured``;
- claims the row with one conditional UPDATE (``sent_at IS NULL AND failed_at IS NULL AND
  (claimed_at IS NULL OR claimed_at < now - CLAIM_TTL_S)``) committed before it talks to the
  server, so two workers given the same row send it once; a sent row is never sent again;
- sends an :class:`email.message.EmailMessage` (From, To, Subject, Date, Message-ID; text body);
- on a transient failure (4xx, connection, timeout) records the error, releases the claim and
  raises, so RQ tries again; on a permanent one (5xx) sets ``failed_at`` and stops;
- after sending, replaces the body of a row that carries a sign-in link (:data:`SECRET_KINDS`).

Logs never carry a body, a link, a token, a subject or a full address: only the row id, its
kind and the recipient's domain.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from flask import current_app
from sqlalchemy import or_, select, update

from .. import queue
from ..clock import utcnow
from ..extensions import db
from ..models import OutboxEmail
from .settings import MailConfigError, default_mail_from, smtp_settings
from .smtp import SmtpFailure, deliver

log = logging.getLogger(__name__)

SEND_JOB = "partnernet.mail.outbox.send_email_job"
#: Kinds whose body holds a live sign-in link: replaced once sent (and, unsent, once expired).
SECRET_KINDS = frozenset({"confirm_email", "password_reset"})
#: What a sent secret row's body becomes.
REDACTED_BODY = "(removed once sent: this email held a personal sign-in link)"
#: The longest life of a link in a secret email (the sign-up confirmation's 3 days): an unsent
#: secret row older than this holds only dead links, and its body is replaced too.
SECRET_LINK_LIFETIME_S = 3 * 86400
#: Seconds after which a claim whose sender never finished (a killed worker) may be taken again.
CLAIM_TTL_S = 600
#: Unsent rows younger than this are queued again by :func:`requeue_unsent`.
REQUEUE_MAX_AGE_S = 3 * 86400


def recipient_domain(addr: str) -> str:
    """The domain of ``addr`` (``"ann@Example.com"`` → ``"example.com"``), the only part of an
    address that logs show; ``"?"`` when there is none."""
    return (addr or "").rpartition("@")[2].strip().lower() or "?"


def _one_line(text: str, limit: int) -> str:
    return " ".join((text or "").split())[:limit]


def retry_policy():
    """The RQ ``Retry`` of send jobs: one retry per wait in ``PARTNERNET_MAIL_RETRY_S`` (seconds)."""
    from rq import Retry

    waits = [int(w) for w in current_app.config.get("PARTNERNET_MAIL_RETRY_S") or ()]
    return Retry(max=len(waits), interval=waits) if waits else None


def queue_email(to_addr: str, subject: str, body: str, *, kind: str = "") -> OutboxEmail:
    """Add an email to the outbox (flushed, not committed) and ask for its send job after commit.

    ``to_addr``: one address; ``subject``: one line (line breaks become spaces, cut to 255
    characters: no header injection); ``body``: plain text; ``kind``: what it is (see
    :mod:`partnernet.mail.messages`). Returns the row. Raises nothing of its own."""
    row = OutboxEmail(to_addr=(to_addr or "").strip()[:254], subject=_one_line(subject, 255), body=body,
                      kind=(kind or "")[:32], attempts=0)
    row.message_id = make_msgid(domain=_msgid_domain())
    db.session.add(row)
    db.session.flush()
    queue.enqueue(SEND_JOB, row.id, job_id=f"email-{row.id}", retry=retry_policy())
    log.info("email %s (%s) queued for %s", row.id, row.kind or "-", recipient_domain(row.to_addr))
    return row


def _msgid_domain() -> str:
    cfg = current_app.config
    try:
        settings = smtp_settings(cfg)
    except MailConfigError:
        settings = None
    if settings is not None:
        return settings.sender_domain
    return default_mail_from(cfg.get("PARTNERNET_BASE_URL")).rpartition("@")[2].rstrip(">")


def build_message(row: OutboxEmail, mail_from: str, msgid_domain: str) -> EmailMessage:
    """The RFC 5322 message of an outbox row: From ``mail_from``, To, Subject, Date (the row's
    creation), Message-ID (the row's, or a new one at ``msgid_domain``), ``Auto-Submitted:
    auto-generated`` (RFC 3834: no auto-replies), and the body as UTF-8 text. Raises ValueError
    for an address or subject the email package refuses."""
    msg = EmailMessage()
    msg["From"] = mail_from
    msg["To"] = row.to_addr
    msg["Subject"] = row.subject
    msg["Date"] = format_datetime(row.created_at)
    msg["Message-ID"] = row.message_id or make_msgid(domain=msgid_domain)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(row.body)
    return msg


def _unclaimed(now):
    """SQL: the row has no claim, or one older than :data:`CLAIM_TTL_S` (its sender died)."""
    return or_(OutboxEmail.claimed_at.is_(None), OutboxEmail.claimed_at < now - timedelta(seconds=CLAIM_TTL_S))


def _claim(email_id: int) -> bool:
    """Take the row for sending (see the module docstring); commits. True when this call took it."""
    now = utcnow()
    result = db.session.execute(
        update(OutboxEmail)
        .where(OutboxEmail.id == email_id, OutboxEmail.sent_at.is_(None), OutboxEmail.failed_at.is_(None),
               _unclaimed(now))
        .values(claimed_at=now, attempts=OutboxEmail.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return result.rowcount == 1


def _finish(email_id: int, **values) -> None:
    db.session.execute(update(OutboxEmail).where(OutboxEmail.id == email_id).values(claimed_at=None, **values)
                       .execution_options(synchronize_session=False))
    db.session.commit()


def send_email_job(email_id: int) -> str:
    """Job: send outbox email ``email_id`` once (module docstring). Returns ``"sent"``,
    ``"skipped"`` (no such row, already sent, failed for good, or claimed by another sender),
    ``"no_smtp"`` or ``"failed"`` (refused for good, or the settings cannot work). Raises
    :class:`partnernet.mail.smtp.SmtpFailure` on a transient failure, for RQ to retry."""
    email_id = int(email_id)
    redact_expired()
    row = db.session.get(OutboxEmail, email_id)
    if row is None or row.sent_at is not None or row.failed_at is not None:
        db.session.rollback()
        return "skipped"
    kind, domain = row.kind or "-", recipient_domain(row.to_addr)
    try:
        settings = smtp_settings(current_app.config)
    except MailConfigError as err:
        log.error("email %s (%s) not sent: %s", email_id, kind, err)
        db.session.rollback()
        return "failed"
    if settings is None:
        log.info("email %s (%s) not sent: no SMTP configured", email_id, kind)
        db.session.rollback()
        return "no_smtp"
    db.session.rollback()
    if not _claim(email_id):
        log.info("email %s (%s) skipped: already sent or being sent", email_id, kind)
        return "skipped"
    row = db.session.get(OutboxEmail, email_id)
    try:
        msg = build_message(row, settings.mail_from, settings.sender_domain)
    except (ValueError, TypeError):
        _finish(email_id, failed_at=utcnow(), error="the address or subject is not valid in an email header")
        log.error("email %s (%s) to %s not sent: bad address or subject", email_id, kind, domain)
        return "failed"
    secret = row.kind in SECRET_KINDS
    attempt = row.attempts
    db.session.rollback()  # no transaction stays open while the server answers
    try:
        deliver(msg, settings)
    except SmtpFailure as err:
        if err.permanent:
            _finish(email_id, failed_at=utcnow(), error=err.summary)
            log.error("email %s (%s) to %s refused for good: %s", email_id, kind, domain, err.summary)
            return "failed"
        _finish(email_id, error=err.summary)
        log.warning("email %s (%s) to %s not sent (try %s): %s; retried later",
                    email_id, kind, domain, attempt, err.summary)
        raise
    values = {"sent_at": utcnow(), "error": None}
    if secret:
        values["body"] = REDACTED_BODY
    _finish(email_id, **values)
    log.info("email %s (%s) sent to %s", email_id, kind, domain)
    return "sent"


def redact_expired(now=None) -> int:
    """Replace the body of unsent secret rows older than :data:`SECRET_LINK_LIFETIME_S` (their
    links are dead). Commits. Returns how many rows changed. Run by every send job."""
    now = now or utcnow()
    result = db.session.execute(
        update(OutboxEmail)
        .where(OutboxEmail.kind.in_(SECRET_KINDS), OutboxEmail.sent_at.is_(None),
               OutboxEmail.created_at < now - timedelta(seconds=SECRET_LINK_LIFETIME_S),
               OutboxEmail.body != REDACTED_BODY)
        .values(body=REDACTED_BODY)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return result.rowcount or 0


def requeue_unsent(max_age_s: int = REQUEUE_MAX_AGE_S) -> int:
    """Queue the send job again for every unsent row younger than ``max_age_s`` that is neither
    failed for good nor claimed (in-process mode, where nothing retries; or a job lost with
    Redis). Commits. Returns how many were queued. For a schedule or a shell."""
    now = utcnow()
    ids = db.session.scalars(
        select(OutboxEmail.id).where(
            OutboxEmail.sent_at.is_(None), OutboxEmail.failed_at.is_(None),
            OutboxEmail.created_at >= now - timedelta(seconds=max_age_s),
            _unclaimed(now))
        .order_by(OutboxEmail.id)).all()
    for email_id in ids:
        queue.enqueue(SEND_JOB, email_id, job_id=f"email-{email_id}-requeue-{int(now.timestamp())}",
                      retry=retry_policy())
    db.session.commit()
    return len(ids)
