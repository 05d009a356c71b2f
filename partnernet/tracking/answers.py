"""What the tracking endpoints answer with, shared by the Flask views (:mod:`.views`) and the lean
handler (:mod:`.lean`): the pixel GIF and the visitor cookie header (CONTRACT §1, §2)."""

from __future__ import annotations

import time

from werkzeug.http import http_date

# A 1x1 transparent GIF (43 bytes).
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
VISITOR_COOKIE_MAX_AGE_S = 365 * 24 * 3600


_COOKIE_VALUE_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_expires: tuple[int, str] = (-1, "")  # (unix second, its Expires value), replaced whole


def visitor_cookie_header(name: str, value: str, *, secure: bool, now: float | None = None) -> str | None:
    """The ``Set-Cookie`` value of the visitor cookie, byte for byte what werkzeug's
    ``set_cookie(name, value, max_age=VISITOR_COOKIE_MAX_AGE_S, path="/", httponly=True,
    samesite="Lax", secure=secure)`` writes at unix time ``now`` (default: the clock), built
    from a template (the ``Expires`` date is formatted once per second). None when ``name``
    or ``value`` would need werkzeug's quoting (not ASCII, or ``value`` outside
    ``A-Z a-z 0-9 _ -``): the caller then uses ``set_cookie``."""
    if not value or not name.isascii() or not _COOKIE_VALUE_OK.issuperset(value):
        return None
    global _expires
    second = int(time.time() if now is None else now)
    cached = _expires
    if cached[0] != second:
        cached = _expires = (second, http_date(second + VISITOR_COOKIE_MAX_AGE_S))
    secure_attr = "Secure; " if secure else ""
    return (f"{name}={value}; Expires={cached[1]}; Max-Age={VISITOR_COOKIE_MAX_AGE_S}; {secure_attr}"
            "HttpOnly; Path=/; SameSite=Lax")
