"""The one HTTP client for the product's outbound calls (partner postbacks and their tests).

Built on ``urllib3``'s connection classes, used directly rather than through a pool: one
request per delivery, no connection reuse, no retries (RQ retries a delivery) and no
redirects (a connection never follows one). urllib3 was taken over ``httpx`` because it is
already what the Python HTTP stack stands on, and its ``HTTPSConnection`` takes the address to
connect to (``host``) apart from the name for SNI and the certificate check
(``server_hostname``), which is exactly what pinning the checked address needs; over bare
``http.client`` for its tested response handling (chunked bodies, content length, header
parsing) and TLS set-up (the system trust store, TLS 1.2 at least, hostname check by OpenSSL).

One call, :func:`get`:

1. parses the URL (http or https only; anything else is refused);
2. resolves the host **once** (through a resolver function, so tests control it; bounded by the
   deadline) and refuses the call when any address it gets is not public
   (:func:`partnernet.outbound.addresses.refusal`);
3. connects to the **checked address itself** (never a second lookup, so a DNS-rebinding name
   cannot swap in 127.0.0.1 after the check), sends ``Host: <name>``, and for https does SNI and
   the certificate check against the name;
4. keeps one monotonic deadline for the whole call (connect, TLS, request, headers, body:
   default 5 s): every socket read and write gets the time left as its timeout, so a server
   that drips a byte a second is cut at the deadline, not kept alive by each byte;
5. reads at most ``max_bytes`` of the body (default 64 KiB) and closes the connection.

It never raises for anything the remote side does: the :class:`Outcome` says ``answered``
(with the HTTP status), ``refused`` (the address rule or a bad URL: not worth retrying),
``timeout`` or ``failed`` (connection, TLS or protocol error).
"""

from __future__ import annotations

import io
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from .addresses import parse_ip, refusal

log = logging.getLogger(__name__)

DEADLINE_S = 5.0
MAX_BYTES = 64 * 1024
USER_AGENT = "PartnerNet-postback/1"

#: ``resolver(host, port) -> [address text, ...]``; raises OSError when the name does not resolve.
Resolver = Callable[[str, int], list[str]]


@dataclass(frozen=True)
class Outcome:
    """What one outbound call came to.

    ``kind``: ``"answered"`` (an HTTP answer; ``status`` is its code), ``"refused"`` (not sent:
    a bad URL or an address that is not public), ``"timeout"`` (the deadline passed) or
    ``"failed"`` (no usable answer: connection refused, TLS, protocol). ``error``: short text
    for logs and the partner's delivery log (None when answered). ``body``: at most the
    ``max_bytes`` read; ``truncated`` when there was more. ``address``: the IP connected to.
    """

    kind: str
    status: int | None = None
    error: str | None = None
    body: bytes = b""
    truncated: bool = False
    address: str | None = None

    @property
    def ok(self) -> bool:
        """True for an answer with a 2xx status."""
        return self.kind == "answered" and self.status is not None and 200 <= self.status < 300


class Refused(ValueError):
    """The URL or its host may not be called; ``str(err)`` says why."""


class DeadlineExceeded(TimeoutError):
    """The call's deadline passed."""


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to for TCP (``socket.getaddrinfo``), in its order, without
    repeats. Raises OSError (``socket.gaierror``) when it does not resolve."""
    out: list[str] = []
    for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        addr = info[4][0]
        if addr not in out:
            out.append(addr)
    return out


def loopback_allowed() -> bool:
    """The test switch: True only when the current app is TESTING **and** has
    ``PARTNERNET_OUTBOUND_ALLOW_LOOPBACK`` set (so no environment variable can open loopback in
    production). False outside an app context."""
    from flask import current_app, has_app_context

    if not has_app_context():
        return False
    return bool(current_app.testing and current_app.config.get("PARTNERNET_OUTBOUND_ALLOW_LOOPBACK"))


def _resolve(host: str, port: int, resolver: Resolver, timeout_s: float) -> list[str]:
    """``resolver(host, port)`` in a daemon thread, waited for at most ``timeout_s`` (a slow
    DNS server must not outlive the deadline). Raises Refused (does not resolve) or
    DeadlineExceeded."""
    box: dict = {}

    def run():
        try:
            box["addrs"] = list(resolver(host, port))
        except Exception as exc:  # noqa: BLE001 - reported to the caller below
            box["error"] = exc

    t = threading.Thread(target=run, name="outbound-resolve", daemon=True)
    t.start()
    t.join(max(timeout_s, 0.0))
    if t.is_alive():
        raise DeadlineExceeded(f"resolving {host} took longer than the deadline")
    if "error" in box or not box.get("addrs"):
        raise Refused(f"{host} does not resolve")
    return box["addrs"]


def checked_addresses(host: str, port: int, *, resolver: Resolver | None = None,
                      timeout_s: float = DEADLINE_S) -> list[str]:
    """The addresses of ``host`` (an IP literal is its own), resolved once, after checking that
    **every** one is allowed (:func:`partnernet.outbound.addresses.refusal`; loopback only under
    the test switch, :func:`loopback_allowed`). Raises Refused with the reason (the first
    address refused, or no address), DeadlineExceeded when the resolver takes longer than
    ``timeout_s``."""
    allow_loopback = loopback_allowed()
    literal = parse_ip(host)
    if literal is not None:
        addrs = [str(literal)]
    else:
        addrs = _resolve(host, port, resolver or system_resolver, timeout_s)
    for addr in addrs:
        why = refusal(addr, allow_loopback=allow_loopback)
        if why:
            raise Refused(why)
    return addrs


class _DeadlineReader(io.RawIOBase):
    """A socket's read side where each read waits at most until the deadline."""

    def __init__(self, sock, deadline: float):
        self._sock, self._deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the deadline passed while reading the answer")
        self._sock.settimeout(left)
        return self._sock.recv_into(buf)


class _DeadlineSocket:
    """Wraps a connected (TLS or plain) socket: reads through :class:`_DeadlineReader`, writes
    with the time left as their timeout; everything else goes to the socket."""

    def __init__(self, sock, deadline: float):
        self._sock, self._deadline = sock, deadline

    def _left(self) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the deadline passed while sending the request")
        return left

    def makefile(self, mode: str = "rb", *args, **kwargs):
        if "r" not in mode:
            raise ValueError("only the read side is wrapped")
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def sendall(self, data, *args):
        self._sock.settimeout(self._left())
        return self._sock.sendall(data, *args)

    def send(self, data, *args):
        self._sock.settimeout(self._left())
        return self._sock.send(data, *args)

    def settimeout(self, _value):  # the deadline decides every timeout
        return None

    def close(self):  # http.client closes the connection before the body is read: the call closes the socket
        return None

    def __getattr__(self, name):
        return getattr(self._sock, name)


class _PinnedMixin:
    """Connect to the checked address (``host``) with the time left; wrap the socket so every
    later read and write obeys the deadline."""

    deadline: float = 0.0
    raw_sock = None

    def _new_conn(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the deadline passed before connecting")
        self.timeout = left
        sock = super()._new_conn()
        sock.settimeout(max(self.deadline - time.monotonic(), 0.001))  # the TLS handshake's share
        return sock

    def connect(self):
        super().connect()
        self.raw_sock = self.sock
        self.sock = _DeadlineSocket(self.sock, self.deadline)


class _PinnedHTTP(_PinnedMixin, HTTPConnection):
    pass


class _PinnedHTTPS(_PinnedMixin, HTTPSConnection):
    pass


def _host_header(host: str, port: int, default_port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port == default_port else f"{shown}:{port}"


def get(url: str, *, resolver: Resolver | None = None, deadline_s: float = DEADLINE_S,
        max_bytes: int = MAX_BYTES, ca_certs: str | None = None, headers: dict[str, str] | None = None) -> Outcome:
    """GET ``url`` under the rules of this module (see the module notes) and return its
    :class:`Outcome`; never raises for what the URL or the remote side does.

    ``resolver``: ``(host, port) -> [addresses]``, default :func:`system_resolver`, called once.
    ``deadline_s``: seconds for the whole call, resolution included. ``max_bytes``: body bytes
    read at most. Loopback is refused unless :func:`loopback_allowed` (the test switch).
    ``ca_certs``: a CA bundle file instead of the system trust store (tests). ``headers``: extra
    request headers (``Host`` is always the URL's host)."""
    deadline = time.monotonic() + deadline_s
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError:
        return Outcome("refused", error="not a valid URL")
    if parts.scheme not in ("http", "https") or not host:
        return Outcome("refused", error="not an http(s) URL")
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        return Outcome("refused", error="the host name is not valid")
    default_port = 443 if parts.scheme == "https" else 80
    port = port or default_port
    try:
        addrs = checked_addresses(host, port, resolver=resolver, timeout_s=deadline - time.monotonic())
    except Refused as exc:
        return Outcome("refused", error=str(exc))
    except DeadlineExceeded as exc:
        return Outcome("timeout", error=f"timeout: {exc}")
    address = addrs[0]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    send_headers = {"User-Agent": USER_AGENT, "Accept": "*/*", "Accept-Encoding": "identity",
                    "Connection": "close", **(headers or {}), "Host": _host_header(host, port, default_port)}
    if parts.scheme == "https":
        conn = _PinnedHTTPS(address, port, server_hostname=host, cert_reqs="CERT_REQUIRED", ca_certs=ca_certs)
    else:
        conn = _PinnedHTTP(address, port)
    conn.deadline = deadline
    late = f"timeout: no complete answer within {deadline_s:g} s"
    try:
        conn.request("GET", target, headers=send_headers, preload_content=False, decode_content=False)
        resp = conn.getresponse()
        body = resp.read(max_bytes + 1, decode_content=False) if max_bytes >= 0 else b""
        truncated = len(body) > max_bytes
        return Outcome("answered", status=resp.status, body=body[:max_bytes], truncated=truncated,
                       address=address)
    except NewConnectionError as exc:  # refused or unreachable (urllib3 files it under its timeouts)
        return Outcome("failed", error=_short(exc).split(": ", 1)[-1], address=address)
    except (TimeoutError, Urllib3Timeout):  # DeadlineExceeded too; urllib3 wraps it as ReadTimeoutError
        return Outcome("timeout", error=late, address=address)
    except (Urllib3Error, OSError, ValueError) as exc:  # refused connection, TLS, bad status line, bad URL
        if time.monotonic() >= deadline:
            return Outcome("timeout", error=late, address=address)
        return Outcome("failed", error=_short(exc), address=address)
    finally:
        for closer in (conn.close, getattr(conn.raw_sock, "close", None)):
            try:
                if closer is not None:
                    closer()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:300]
