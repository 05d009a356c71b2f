"""Compatibility: the outbox moved to :mod:`partnernet.mail` (``queue_email``; the send job,
also under its old name ``send_outbox_email`` for jobs queued before the move)."""

from __future__ import annotations

from ..mail.outbox import SEND_JOB, queue_email
from ..mail.outbox import send_email_job as send_outbox_email

__all__ = ["SEND_JOB", "queue_email", "send_outbox_email"]
