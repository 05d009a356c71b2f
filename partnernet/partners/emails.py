"""Outgoing email: every message goes to the ``outbox_emails`` table and the log; with
``PARTNERNET_SMTP_HOST`` set, a job sends it over SMTP after commit."""

from __future__ import annotations

import logging

from flask import current_app, has_app_context

from .. import queue
from ..clock import utcnow
from ..extensions import db
from ..models import OutboxEmail

log = logging.getLogger(__name__)

SEND_JOB = "partnernet.partners.emails.send_outbox_email"


def queue_email(to_addr: str, subject: str, body: str, *, kind: str = "") -> OutboxEmail:
    """Add an email to the outbox (no commit) and log it; queue its SMTP send for after commit
    when SMTP is configured. Returns the (flushed) row."""
    row = OutboxEmail(to_addr=to_addr, subject=subject, body=body, kind=kind)
    db.session.add(row)
    db.session.flush()
    log.info("email %s to %s: %s", kind or "-", to_addr, subject)
    if has_app_context() and current_app.config.get("PARTNERNET_SMTP_HOST"):
        queue.enqueue(SEND_JOB, row.id, job_id=f"email-{row.id}")
    else:
        log.info("no SMTP configured; email %s stays in the outbox:\n%s", row.id, body)
    return row


def send_outbox_email(email_id: int) -> bool:
    """Job: send outbox email ``email_id`` over SMTP once (a sent row is skipped). Returns True
    when it was sent now. Settings: PARTNERNET_SMTP_HOST, _PORT (25), PARTNERNET_MAIL_FROM."""
    import smtplib
    from email.message import EmailMessage

    row = db.session.get(OutboxEmail, email_id)
    if row is None or row.sent_at is not None:
        return False
    cfg = current_app.config
    msg = EmailMessage()
    msg["From"] = cfg.get("PARTNERNET_MAIL_FROM", "partnernet@localhost")
    msg["To"] = row.to_addr
    msg["Subject"] = row.subject
    msg.set_content(row.body)
    try:
        with smtplib.SMTP(cfg["PARTNERNET_SMTP_HOST"], int(cfg.get("PARTNERNET_SMTP_PORT", 25)), timeout=10) as s:
            s.send_message(msg)
    except (OSError, smtplib.SMTPException) as err:
        row.error = str(err)[:500]
        db.session.commit()
        raise
    row.sent_at = utcnow()
    row.error = None
    db.session.commit()
    return True
