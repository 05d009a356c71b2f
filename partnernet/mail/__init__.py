"""Outgoing email (CONTRACT §6, last paragraph).

- :mod:`.settings`: the SMTP settings (``PARTNERNET_SMTP_*``, ``PARTNERNET_MAIL_FROM``);
- :mod:`.messages`: the text of every kind of email;
- :mod:`.notify`: the moments that send one (one-line hooks in the use cases);
- :mod:`.alerts`: budget and cap alerts, run by the split job;
- :mod:`.outbox`: the outbox and the send job (after commit, retried, sent once, never logged);
- :mod:`.smtp`: one SMTP delivery.
"""

from .outbox import queue_email, send_email_job

__all__ = ["queue_email", "send_email_job"]
