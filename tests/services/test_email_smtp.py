"""SMTP settings and transport: the defaults of PARTNERNET_SMTP_TLS and the port, bad settings
refused, STARTTLS with AUTH and implicit TLS against a real aiosmtpd server with a test
certificate, a password never sent over a plain connection, and two senders racing for one
row (PostgreSQL) delivering it once."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading

import pytest
from sqlalchemy import select

from partnernet import queue
from partnernet.config import from_environment
from partnernet.extensions import db
from partnernet.mail import outbox
from partnernet.mail.settings import MailConfigError, default_mail_from, smtp_settings
from partnernet.models import OutboxEmail
from tests.services.test_email import SmtpSink


@pytest.mark.parametrize("given,expected", [
    ({}, ("none", 25)),
    ({"PARTNERNET_SMTP_USER": "u", "PARTNERNET_SMTP_PASSWORD": "p"}, ("starttls", 587)),
    ({"PARTNERNET_SMTP_PORT": 465}, ("ssl", 465)),
    ({"PARTNERNET_SMTP_TLS": "ssl"}, ("ssl", 465)),
    ({"PARTNERNET_SMTP_TLS": "starttls", "PARTNERNET_SMTP_PORT": 2525}, ("starttls", 2525)),
    ({"PARTNERNET_SMTP_TLS": "none", "PARTNERNET_SMTP_PORT": 2525}, ("none", 2525)),
])
def test_tls_mode_and_port_defaults(given, expected):
    s = smtp_settings({"PARTNERNET_SMTP_HOST": "mail.example", "PARTNERNET_BASE_URL": "https://track.example", **given})
    assert (s.tls, s.port) == expected and s.mail_from == "PartnerNet <partnernet@track.example>"


def test_no_host_means_no_smtp_and_bad_settings_are_refused():
    assert smtp_settings({"PARTNERNET_SMTP_HOST": "  "}) is None
    with pytest.raises(MailConfigError):  # a password over a plain connection to another host
        smtp_settings({"PARTNERNET_SMTP_HOST": "mail.example", "PARTNERNET_SMTP_USER": "u",
                       "PARTNERNET_SMTP_TLS": "none"})
    with pytest.raises(MailConfigError):
        smtp_settings({"PARTNERNET_SMTP_HOST": "mail.example", "PARTNERNET_MAIL_FROM": "nobody"})
    with pytest.raises(MailConfigError):
        smtp_settings({"PARTNERNET_SMTP_HOST": "mail.example", "PARTNERNET_SMTP_TLS": "tls1.3"})
    assert default_mail_from("http://127.0.0.1:5000") == "PartnerNet <partnernet@localhost>"


def test_environment_is_parsed_and_checked():
    got = from_environment({"PARTNERNET_SMTP_HOST": " mail.example ", "PARTNERNET_SMTP_PORT": "2525",
                            "PARTNERNET_SMTP_USER": "u", "PARTNERNET_SMTP_PASSWORD": "p w",
                            "PARTNERNET_SMTP_TLS": "STARTTLS", "PARTNERNET_MAIL_FROM": "Ops <ops@x.example>"})
    assert {k: v for k, v in got.items() if "SMTP" in k or "MAIL" in k} == {
        "PARTNERNET_SMTP_HOST": "mail.example", "PARTNERNET_SMTP_PORT": 2525, "PARTNERNET_SMTP_USER": "u",
        "PARTNERNET_SMTP_PASSWORD": "p w", "PARTNERNET_SMTP_TLS": "starttls",
        "PARTNERNET_MAIL_FROM": "Ops <ops@x.example>"}
    for bad in ({"PARTNERNET_SMTP_TLS": "yes"}, {"PARTNERNET_SMTP_PORT": "0"}, {"PARTNERNET_SMTP_PORT": "smtp"}):
        with pytest.raises(ValueError):
            from_environment(bad)


# --------------------------------------------------------------------------- TLS and AUTH


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (openssl CLI): (cert path, key path)."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")], check=True, capture_output=True)
    return str(d / "cert.pem"), str(d / "key.pem")


def _server_context(cert):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*cert)
    return ctx


class Logins:
    def __init__(self):
        self.seen = []

    def __call__(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult

        self.seen.append((mechanism, auth_data.login, auth_data.password, session.ssl is not None))
        return AuthResult(success=auth_data.login == b"mailer" and auth_data.password == b"s3cret pass")


@pytest.fixture
def trust(monkeypatch, cert):
    """Sends trust the test certificate (production uses the system trust store)."""
    monkeypatch.setattr("partnernet.mail.smtp.tls_context", lambda: ssl.create_default_context(cafile=cert[0]))


def _configure(app, monkeypatch, server, **settings):
    values = {"PARTNERNET_SMTP_HOST": "127.0.0.1", "PARTNERNET_SMTP_PORT": server.port, **settings}
    for key, value in values.items():
        monkeypatch.setitem(app.config, key, value)


def _send_one(to="ann@example.com"):
    row = outbox.queue_email(to, "Hello", "text body", kind="test")
    db.session.commit()
    queue.run_pending()
    db.session.expire_all()
    return db.session.get(OutboxEmail, row.id)


def test_starttls_then_auth(app, monkeypatch, cert, trust):
    logins = Logins()
    server = SmtpSink(tls_context=_server_context(cert), require_starttls=True, authenticator=logins,
                      auth_require_tls=True)
    try:
        _configure(app, monkeypatch, server, PARTNERNET_SMTP_USER="mailer", PARTNERNET_SMTP_PASSWORD="s3cret pass")
        row = _send_one()  # no PARTNERNET_SMTP_TLS: a user makes it starttls
        assert row.sent_at is not None and len(server.messages) == 1
        assert logins.seen and all(tls for *_rest, tls in logins.seen)  # the login went over TLS
        monkeypatch.setitem(app.config, "PARTNERNET_SMTP_PASSWORD", "wrong")
        monkeypatch.setitem(app.config, "PARTNERNET_SMTP_TIMEOUT_S", 2)  # aiosmtpd goes quiet after a bad login
        row = _send_one()  # a refused login is a transient failure: kept for a retry
        assert row.sent_at is None and row.failed_at is None and row.error and len(server.messages) == 1
    finally:
        server.stop()


def test_starttls_refused_by_a_server_without_it(app, monkeypatch, trust):
    server = SmtpSink()  # plain server: no STARTTLS offered
    try:
        _configure(app, monkeypatch, server, PARTNERNET_SMTP_TLS="starttls")
        row = _send_one()
        assert row.sent_at is None and "STARTTLS" in row.error and server.messages == []
    finally:
        server.stop()


def test_implicit_tls(app, monkeypatch, cert, trust):
    server = SmtpSink(ssl_context=_server_context(cert))
    try:
        _configure(app, monkeypatch, server, PARTNERNET_SMTP_TLS="ssl")
        assert _send_one().sent_at is not None and len(server.messages) == 1
    finally:
        server.stop()


def test_an_untrusted_certificate_is_refused(app, monkeypatch, cert):
    server = SmtpSink(ssl_context=_server_context(cert))
    try:
        _configure(app, monkeypatch, server, PARTNERNET_SMTP_TLS="ssl")  # system trust store only
        row = _send_one()
        assert row.sent_at is None and server.messages == [] and row.error
    finally:
        server.stop()


def test_a_password_over_a_plain_connection_is_never_sent(app, monkeypatch, caplog):
    logins = Logins()
    server = SmtpSink(authenticator=logins, auth_require_tls=False)
    try:
        _configure(app, monkeypatch, server, PARTNERNET_SMTP_HOST="127.0.0.2", PARTNERNET_SMTP_TLS="none",
                   PARTNERNET_SMTP_USER="mailer", PARTNERNET_SMTP_PASSWORD="s3cret pass")
        row = _send_one()
        assert row.sent_at is None and logins.seen == [] and server.messages == []
        assert "s3cret" not in caplog.text and "in the clear" in caplog.text
    finally:
        server.stop()


# --------------------------------------------------------------------------- racing senders


def test_two_senders_racing_for_one_row_deliver_it_once(pg_app, monkeypatch):
    server = SmtpSink()
    try:
        _configure(pg_app, monkeypatch, server)
        ids = []
        for i in range(5):
            ids.append(outbox.queue_email(f"r{i}@example.com", "Hi", "text", kind="test").id)
        db.session.commit()
        queue.discard_pending()
        barrier = threading.Barrier(8)
        results, errors = [], []

        def run(email_id):
            try:
                with pg_app.app_context():
                    barrier.wait(timeout=30)
                    results.append(outbox.send_email_job(email_id))
                    db.session.remove()
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        for email_id in ids:
            threads = [threading.Thread(target=run, args=(email_id,)) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            barrier.reset()
        assert not errors, errors
        assert sorted(m["To"] for m in server.messages) == [f"r{i}@example.com" for i in range(5)]
        assert results.count("sent") == 5 and results.count("skipped") == 35
        db.session.expire_all()
        assert all(r.attempts == 1 for r in db.session.scalars(select(OutboxEmail)))
    finally:
        server.stop()
