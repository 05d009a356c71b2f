"""SMTP settings of outgoing email, read from the app config (CONTRACT §6: ``PARTNERNET_SMTP_HOST``,
``_PORT``, ``_USER``, ``_PASSWORD``, ``_TLS``, ``PARTNERNET_MAIL_FROM``; the environment is parsed in
:mod:`partnernet.config`).

Choices (documented in the README):

- No ``PARTNERNET_SMTP_HOST``: no SMTP; emails stay in the outbox unsent.
- ``PARTNERNET_SMTP_TLS`` is ``starttls``, ``ssl`` (implicit TLS, "SMTPS") or ``none``. Unset, it
  is ``ssl`` on port 465, else ``starttls`` when a user is set (a password never travels in the
  clear), else ``none`` (a relay on the local network, e.g. the host's own MTA on port 25).
- Unset port: 465 for ``ssl``, 587 for ``starttls``, 25 for ``none``.
- A user with ``none`` is refused unless the host is the loopback interface: the password would
  cross the network in the clear.
- Certificates are verified against the system's trust store (``ssl.create_default_context``).
- ``PARTNERNET_MAIL_FROM`` unset: ``PartnerNet <partnernet@<host of PARTNERNET_BASE_URL>>``
  (``localhost`` when that host is an IP address or has no dot).
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from email.headerregistry import Address
from email.utils import parseaddr
from urllib.parse import urlsplit

TLS_MODES = ("starttls", "ssl", "none")
DEFAULT_PORTS = {"ssl": 465, "starttls": 587, "none": 25}
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


class MailConfigError(ValueError):
    """The SMTP settings cannot work (bad TLS mode, a password over a plain connection, a bad
    sender address). Sending stops with a clear log line; nothing is retried."""


@dataclass(frozen=True)
class SmtpSettings:
    """Resolved SMTP settings: ``tls`` one of :data:`TLS_MODES`, ``port`` an int, ``mail_from``
    an RFC 5322 address (``"PartnerNet <partnernet@example.com>"``), ``timeout_s`` seconds."""

    host: str
    port: int
    tls: str
    user: str | None
    password: str | None
    mail_from: str
    timeout_s: float

    @property
    def sender_domain(self) -> str:
        """The domain of :attr:`mail_from` (used in Message-ID headers)."""
        return parseaddr(self.mail_from)[1].rpartition("@")[2] or "localhost"


def parse_tls(value: str | None) -> str | None:
    """``PARTNERNET_SMTP_TLS`` checked: one of :data:`TLS_MODES` (any case, spaces trimmed) or None
    when unset/blank. Raises MailConfigError for anything else."""
    if value is None or not str(value).strip():
        return None
    mode = str(value).strip().lower()
    if mode not in TLS_MODES:
        raise MailConfigError(f"PARTNERNET_SMTP_TLS must be one of {', '.join(TLS_MODES)}, not {value!r}")
    return mode


def default_mail_from(base_url: str | None) -> str:
    """``PartnerNet <partnernet@<host of base_url>>``; ``localhost`` for an IP or a dotless host."""
    host = (urlsplit(base_url or "").hostname or "").lower()
    try:
        ipaddress.ip_address(host)
        host = ""
    except ValueError:
        pass
    if "." not in host:
        host = "localhost"
    return str(Address("PartnerNet", "partnernet", host))


def smtp_settings(config) -> SmtpSettings | None:
    """The SMTP settings of ``config`` (a Flask config or dict), or None when
    ``PARTNERNET_SMTP_HOST`` is not set. Raises MailConfigError (see the module docstring)."""
    host = (config.get("PARTNERNET_SMTP_HOST") or "").strip()
    if not host:
        return None
    user = config.get("PARTNERNET_SMTP_USER") or None
    password = config.get("PARTNERNET_SMTP_PASSWORD") or None
    port = config.get("PARTNERNET_SMTP_PORT")
    port = int(port) if port not in (None, "") else None
    tls = parse_tls(config.get("PARTNERNET_SMTP_TLS"))
    if tls is None:
        tls = "ssl" if port == 465 else ("starttls" if user else "none")
    if port is None:
        port = DEFAULT_PORTS[tls]
    if not 0 < port < 65536:
        raise MailConfigError(f"PARTNERNET_SMTP_PORT {port} is not a TCP port")
    if user and tls == "none" and host.lower() not in _LOOPBACK:
        raise MailConfigError("PARTNERNET_SMTP_USER is set with PARTNERNET_SMTP_TLS=none: the password would "
                              "cross the network in the clear; use starttls or ssl")
    mail_from = (config.get("PARTNERNET_MAIL_FROM") or "").strip() or default_mail_from(
        config.get("PARTNERNET_BASE_URL"))
    if "@" not in parseaddr(mail_from)[1] or any(c in mail_from for c in "\r\n"):
        raise MailConfigError("PARTNERNET_MAIL_FROM is not an email address")
    return SmtpSettings(host=host, port=port, tls=tls, user=user, password=password, mail_from=mail_from,
                        timeout_s=float(config.get("PARTNERNET_SMTP_TIMEOUT_S") or 30.0))


def tls_context() -> ssl.SSLContext:
    """The TLS context of SMTP connections: the system trust store, host names checked."""
    return ssl.create_default_context()
