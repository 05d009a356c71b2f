"""The outbound client against real sockets on loopback (the test switch on): DNS rebinding,
one deadline for a server that drips, the size limit, no redirects, Host header, and https
pinned to the checked address with SNI and the certificate checked against the name."""

import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from flask import Flask

from partnernet import outbound


@pytest.fixture
def loop_ctx():
    app = Flask("outbound-http-test")
    app.config.update(TESTING=True, PARTNERNET_OUTBOUND_ALLOW_LOOPBACK=True)
    with app.app_context():
        yield app


class Server:
    """A loopback HTTP server recording (path, Host header); ``answer(handler)`` writes the reply."""

    def __init__(self, answer=None, tls_context=None):
        self.seen: list[tuple[str, str]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.seen.append((self.path, self.headers.get("Host")))
                if answer:
                    answer(self)
                else:
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        if tls_context is not None:
            self.server.socket = tls_context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Drip:
    """A tiny threaded socket server that answers one byte per ``every`` seconds, forever."""

    def __init__(self, payload: bytes, every: float = 1.0):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.sent = 0

        def serve_one(conn):
            with conn:
                conn.recv(65536)
                try:
                    for i in range(len(payload)):
                        if self.stop.wait(every):
                            return
                        conn.sendall(payload[i:i + 1])
                        self.sent += 1
                except OSError:
                    return

        def accept():
            while not self.stop.is_set():
                try:
                    conn, _ = self.sock.accept()
                except OSError:
                    return
                threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()

    def close(self):
        self.stop.set()
        self.sock.close()


def test_dns_rebinding_cannot_reach_loopback(loop_ctx):
    """The resolver answers a public address first and 127.0.0.1 on any later call: the client
    asks once and connects only to the address it checked, so the loopback server hears nothing."""
    srv = Server()
    calls = []

    def rebinding(host, port):
        calls.append(host)
        return ["93.184.215.14"] if len(calls) == 1 else ["127.0.0.1"]

    try:
        out = outbound.get(f"http://rebind.example:{srv.port}/steal", resolver=rebinding, deadline_s=1.0)
        assert calls == ["rebind.example"]
        assert out.address == "93.184.215.14" and out.kind in ("failed", "timeout")
        assert srv.seen == []
        # and a name that answers loopback at the check is refused outright without the switch
        loop_ctx.config["PARTNERNET_OUTBOUND_ALLOW_LOOPBACK"] = False
        out = outbound.get(f"http://rebind.example:{srv.port}/steal", resolver=lambda h, p: ["127.0.0.1"])
        assert out.kind == "refused" and "loopback" in out.error and srv.seen == []
    finally:
        srv.close()


def test_connects_to_the_checked_address_with_the_name_as_host(loop_ctx):
    srv = Server()
    try:
        out = outbound.get(f"http://tracker.example:{srv.port}/pb?a=1&b=%20", resolver=lambda h, p: ["127.0.0.1"])
        assert (out.kind, out.status, out.body, out.address) == ("answered", 200, b"ok", "127.0.0.1")
        assert srv.seen == [("/pb?a=1&b=%20", f"tracker.example:{srv.port}")]
    finally:
        srv.close()


def test_a_server_that_drips_is_cut_at_the_deadline(loop_ctx):
    drip = Drip(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100)
    try:
        start = time.monotonic()
        out = outbound.get(f"http://127.0.0.1:{drip.port}/", deadline_s=outbound.DEADLINE_S)
        took = time.monotonic() - start
        assert out.kind == "timeout" and "within 5 s" in out.error
        assert 4.5 <= took < 6.0 and drip.sent >= 3  # bytes kept coming: a per-read timeout never fired
    finally:
        drip.close()


def test_a_body_that_drips_is_cut_at_the_deadline_too(loop_ctx):
    drip = Drip(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100, every=0.02)
    try:
        start = time.monotonic()
        out = outbound.get(f"http://127.0.0.1:{drip.port}/", deadline_s=1.5)
        assert out.kind == "timeout" and time.monotonic() - start < 2.5
    finally:
        drip.close()


def test_at_most_max_bytes_are_read(loop_ctx):
    def big(h):
        h.send_response(200)
        h.send_header("Content-Length", str(4 * 1024 * 1024))
        h.end_headers()
        try:
            h.wfile.write(b"z" * (4 * 1024 * 1024))
        except OSError:
            pass

    srv = Server(big)
    try:
        out = outbound.get(f"http://127.0.0.1:{srv.port}/")
        assert out.status == 200 and len(out.body) == outbound.MAX_BYTES and out.truncated
    finally:
        srv.close()


def test_redirects_are_not_followed(loop_ctx):
    target = Server()

    def redirect(h):
        h.send_response(302)
        h.send_header("Location", f"http://127.0.0.1:{target.port}/inside")
        h.send_header("Content-Length", "0")
        h.end_headers()

    srv = Server(redirect)
    try:
        out = outbound.get(f"http://127.0.0.1:{srv.port}/")
        assert (out.kind, out.status, out.ok) == ("answered", 302, False) and target.seen == []
    finally:
        srv.close()
        target.close()


def test_connection_refused_is_a_failure_not_a_timeout(loop_ctx):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    out = outbound.get(f"http://127.0.0.1:{port}/")
    assert out.kind == "failed" and "refused" in out.error.lower()


def test_https_is_pinned_to_the_checked_address_with_sni_and_the_certificate_of_the_name(loop_ctx, tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    names = []

    def serve(cert_name):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(cert_name).configure_cert(ctx)
        ctx.sni_callback = lambda sock, name, _ctx: names.append(name)
        return Server(tls_context=ctx)

    good, wrong = serve("tracker.example"), serve("other.example")
    try:
        out = outbound.get(f"https://tracker.example:{good.port}/pb", resolver=lambda h, p: ["127.0.0.1"],
                           ca_certs=str(ca_file))
        assert (out.kind, out.status, out.address) == ("answered", 200, "127.0.0.1")
        assert names == ["tracker.example"] and good.seen == [("/pb", f"tracker.example:{good.port}")]
        out = outbound.get(f"https://tracker.example:{wrong.port}/pb", resolver=lambda h, p: ["127.0.0.1"],
                           ca_certs=str(ca_file))
        assert out.kind == "failed" and "certificate" in out.error.lower() and wrong.seen == []
        out = outbound.get(f"https://tracker.example:{good.port}/pb", resolver=lambda h, p: ["127.0.0.1"])
        assert out.kind == "failed" and "certificate" in out.error.lower()  # not in the system trust store
    finally:
        good.close()
        wrong.close()
