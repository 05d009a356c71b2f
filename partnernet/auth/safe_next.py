"""Where to go after login: only our own relative paths (pure)."""

from __future__ import annotations

from urllib.parse import urlsplit


def safe_next(target: str | None, default: str = "/") -> str:
    """``target`` when it is a path on this site, else ``default``.

    Accepted: ``/partner/links?x=1``. Refused: absolute URLs (``https://evil``), scheme-only
    (``https:x``), protocol-relative (``//x``), backslash tricks (``/\\x``), and control or
    white-space characters anywhere (``/%09/x`` decoded as a tab, browsers strip them).
    """
    if not target or not isinstance(target, str):
        return default
    if any(ord(c) < 33 or c in "\\\x7f" for c in target):
        return default
    if not target.startswith("/") or target.startswith("//"):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target
