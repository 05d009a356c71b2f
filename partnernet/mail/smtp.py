"""One SMTP delivery with the standard library (:mod:`smtplib`), and what its failures mean.

A failure is *permanent* when the server refused this message for good (a 5xx answer to the
sender, a recipient or the data): trying again would get the same answer. Anything else (a
4xx answer such as 451, a refused or dropped connection, a timeout, a failed login or TLS
handshake) is *transient*: the send job raises and RQ tries again later.
"""

from __future__ import annotations

import smtplib
import socket
from email.message import EmailMessage

from .settings import SmtpSettings, tls_context


class SmtpFailure(Exception):
    """An SMTP delivery failed. ``permanent``: the server refused the message for good (5xx).
    ``code`` is the SMTP reply code (None without one); ``summary`` a short text without the
    message, its addresses or any credential (safe for logs)."""

    def __init__(self, summary: str, *, code: int | None, permanent: bool):
        super().__init__(summary)
        self.summary = summary
        self.code = code
        self.permanent = permanent


def _classify(err: Exception) -> SmtpFailure:
    if isinstance(err, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _msg in err.recipients.values()]
        code = max(codes) if codes else None
        return SmtpFailure(f"recipient refused ({code})", code=code, permanent=bool(code and code >= 500))
    if isinstance(err, smtplib.SMTPAuthenticationError):
        return SmtpFailure(f"login refused ({err.smtp_code})", code=err.smtp_code, permanent=False)
    if isinstance(err, (smtplib.SMTPSenderRefused, smtplib.SMTPDataError)):
        what = "sender refused" if isinstance(err, smtplib.SMTPSenderRefused) else "message refused"
        return SmtpFailure(f"{what} ({err.smtp_code})", code=err.smtp_code, permanent=err.smtp_code >= 500)
    if isinstance(err, smtplib.SMTPResponseException):
        return SmtpFailure(f"server answered {err.smtp_code}", code=err.smtp_code, permanent=False)
    if isinstance(err, smtplib.SMTPNotSupportedError):
        return SmtpFailure("the server does not offer STARTTLS or AUTH", code=None, permanent=False)
    if isinstance(err, (socket.timeout, TimeoutError)):
        return SmtpFailure("timed out", code=None, permanent=False)
    return SmtpFailure(f"{type(err).__name__}", code=None, permanent=False)


def deliver(msg: EmailMessage, settings: SmtpSettings) -> None:
    """Send ``msg`` through the server of ``settings``: implicit TLS (``ssl``), or a plain
    connection upgraded with STARTTLS (``starttls``, refused by smtplib when the server does not
    offer it) or left plain (``none``); then AUTH when a user is set. Raises :class:`SmtpFailure`."""
    try:
        if settings.tls == "ssl":
            conn = smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout_s,
                                    context=tls_context())
        else:
            conn = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_s)
        with conn:
            conn.ehlo()
            if settings.tls == "starttls":
                conn.starttls(context=tls_context())
                conn.ehlo()
            if settings.user:
                conn.login(settings.user, settings.password or "")
            conn.send_message(msg)
    except (OSError, smtplib.SMTPException) as err:
        raise _classify(err) from None
