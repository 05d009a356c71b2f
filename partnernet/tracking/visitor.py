"""Who the visitor of a tracking request is (CONTRACT §1 "unique", v2 "the visitor cookie").

The visitor is the server-signed first-party cookie (``PARTNERNET_VISITOR_COOKIE``, default
``pn_vid``), else a keyed daily hash of the IP and user agent. A cookie value the server did
not issue, or whose signature fails under ``SECRET_KEY`` and every ``SECRET_KEY_FALLBACKS``
key, is ignored: the visitor is then the IP and user agent, as for a browser without cookies,
and a freshly signed cookie is issued. A client that makes up a new cookie on every request
therefore stays one visitor (its IP and user agent) and gets no new unique clicks.

The tracker never issues a random visitor id: the cookie it sets carries the IP-and-agent hash
of the visitor's first click, so the cookie only keeps that visitor the same on later days and
from other networks. Signing: :class:`partnernet.signing.VisitorCookieSigner`.
"""

from __future__ import annotations

import hashlib

from flask import current_app

from ..clock import utcnow
from ..signing import VisitorCookieSigner


def _visitor_key(app) -> bytes:
    ext = app.extensions
    key = ext.get("partnernet_visitor_key")
    if key is None:
        secret = app.config["SECRET_KEY"]
        secret = secret.encode() if isinstance(secret, str) else secret
        key = ext["partnernet_visitor_key"] = hashlib.sha256(secret + b"partnernet.visitor").digest()
    return key


def visitor_signer(app=None) -> VisitorCookieSigner:
    """The app's visitor cookie signer (``[SECRET_KEY, *SECRET_KEY_FALLBACKS]``), made once per
    app (``app``: default the current app)."""
    app = app or current_app
    signer = app.extensions.get("partnernet_visitor_signer")
    if signer is None:
        keys = [app.config["SECRET_KEY"], *(app.config.get("SECRET_KEY_FALLBACKS") or [])]
        signer = app.extensions["partnernet_visitor_signer"] = VisitorCookieSigner(keys)
    return signer


def visitor_hash(ip: str | None, user_agent: str | None, *, app=None) -> str:
    """The visitor of a request without a valid cookie: 32 hex characters, a BLAKE2b of
    (UTC date, IP, User-Agent) keyed with a secret derived from ``SECRET_KEY``, so a
    cookie-less visitor cannot be followed across days and nobody can compute it from outside."""
    day = utcnow().date().isoformat()
    body = f"{day}\n{ip or ''}\n{user_agent or ''}".encode("utf-8", "replace")
    return hashlib.blake2b(body, key=_visitor_key(app or current_app), digest_size=16).hexdigest()


def visitor_for(cookie: str | None, ip: str | None, user_agent: str | None, *,
                app=None) -> tuple[str, str | None]:
    """The visitor of a request and the cookie value to set, if any (CONTRACT §1).

    ``cookie``: the visitor cookie's value as sent (None: none). A cookie we signed gives its
    visitor id, and no cookie to set (or the same id signed with the newest key, when it
    verified under a fallback key). Anything else (no cookie, a made-up or altered one)
    gives :func:`visitor_hash` and that id's signed cookie. ``app``: the current app
    (default: looked up). Returns (visitor id, cookie value to set or None)."""
    app = app or current_app
    signer = visitor_signer(app)
    if cookie:
        verified = signer.verify(cookie)
        if verified is not None:
            visitor, newest = verified
            return visitor, None if newest else signer.sign(visitor)
    visitor = visitor_hash(ip, user_agent, app=app)
    return visitor, signer.sign(visitor)


def cookie_visitor(cookie: str | None, ip: str | None, user_agent: str | None, *, app=None) -> str:
    """The visitor only (the impression pixel, which sets no cookie): as :func:`visitor_for`."""
    if cookie:
        verified = visitor_signer(app).verify(cookie)
        if verified is not None:
            return verified[0]
    return visitor_hash(ip, user_agent, app=app)
