"""Destination building for the tracking redirect (CONTRACT §1). PURE: standard library only.

Everything a redirect needs to turn a campaign's or link's URL into the
``Location`` it answers with:

* :func:`deep_link_allowed` / :func:`host_allowed`: may the ``url`` query
  parameter be used (http/https only; host equal to, or a sub-domain of, an
  entry of the campaign's ``deep_link_hosts``; compared lower-case; userinfo
  ignored). Anything else is ignored, so the endpoint is never an open redirect.
* :func:`choose_destination`: the ``url`` deep link when allowed, else the
  link's own ``deep_link``, else the campaign's ``destination_url``.
* :func:`expand_macros`: ``{click_id}``, ``{sub1}``..``{sub5}``,
  ``{partner_id}`` and ``{campaign_id}`` replaced by URL-encoded values.
* :func:`set_query_param`: sets one query parameter, keeping the other
  parameters in their order and encoding and keeping the ``#fragment``.
* :func:`build_destination`: the three together.
* :func:`clip_sub`: a sub ID cut to its first 255 code points.

URLs are parsed with :mod:`urllib.parse`; user-supplied values only ever enter
a URL through :func:`urllib.parse.quote`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, unquote_plus, urlsplit

SUB_NAMES = ("sub1", "sub2", "sub3", "sub4", "sub5")
SUB_MAX_CHARS = 255
MACRO_RE = re.compile(r"\{(click_id|sub[1-5]|partner_id|campaign_id)\}")
DEEP_LINK_SCHEMES = ("http", "https")

# C0 controls, space, DEL and backslash: browsers strip or reinterpret these
# (a backslash acts as a slash in http URLs), so a deep link holding any of
# them is refused rather than guessed at.
_UNSAFE_RE = re.compile(r"[\x00-\x1f\x7f\\]")
_HOST_LABELS_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*$")


# Control characters dropped from sub IDs: C0 (NUL..US) except tab and the line breaks, which
# are ordinary text that partners send and expect back, DEL and C1 (U+0080..U+009F). Lone UTF-16
# surrogates cannot be stored as UTF-8: they become U+FFFD.
_SUB_DROP_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def clip_sub(value: str | None) -> str | None:
    """A partner sub ID as stored and reported (CONTRACT §1: they never cause an error page):
    control characters (C0 with NUL, but not tab, LF and CR; DEL; C1) dropped, a lone UTF-16
    surrogate replaced by U+FFFD (bytes that are not UTF-8 already arrive as U+FFFD or as their
    ``%XX`` text), then cut to the first 255 characters (Unicode code points); None stays None.
    ``clip_sub("a\\x00b\\x7f") == "ab"``."""
    if value is None:
        return None
    if not value.isprintable():  # the common case (printable text) needs no regular expression
        value = _SURROGATE_RE.sub("\ufffd", _SUB_DROP_RE.sub("", value))
    return value[:SUB_MAX_CHARS]


def normalize_host(host: str | None) -> str | None:
    """``host`` lower-cased, one trailing dot dropped, IDNA-encoded to ASCII; None when it is
    empty or not a plain DNS name (percent signs, spaces, brackets, ...)."""
    if not host:
        return None
    host = host.strip().lower()
    if host.endswith("."):
        host = host[:-1]
    if not host:
        return None
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            return None
    if len(host) > 253 or not _HOST_LABELS_RE.match(host):
        return None
    return host


def normalize_allowed_host(entry: str) -> str | None:
    """One ``deep_link_hosts`` entry as a bare lower-case host. Accepts ``shop.example``,
    ``*.shop.example``, ``.shop.example`` and ``https://shop.example/`` spellings."""
    if not isinstance(entry, str):
        return None
    entry = entry.strip()
    if "://" in entry:
        try:
            entry = urlsplit(entry).hostname or ""
        except ValueError:
            return None
    while entry.startswith("*."):
        entry = entry[2:]
    entry = entry.lstrip(".")
    return normalize_host(entry)


def host_allowed(host: str | None, allowed_hosts: Iterable[str]) -> bool:
    """True when ``host`` equals an allowed host or is a sub-domain of one (``m.shop.example``
    for ``shop.example``; never ``evilshop.example`` nor ``shop.example.evil.example``)."""
    host = normalize_host(host)
    if host is None:
        return False
    for entry in allowed_hosts or ():
        allowed = normalize_allowed_host(entry)
        if allowed and (host == allowed or host.endswith("." + allowed)):
            return True
    return False


def deep_link_allowed(url: str | None, allowed_hosts: Iterable[str]) -> bool:
    """May the ``url`` query parameter be the destination (CONTRACT §1)?

    Only an absolute ``http``/``https`` URL with a host on the campaign's allow-list
    (equal or sub-domain, lower-case, userinfo ignored). Refused: other schemes
    (``javascript:``, ``data:``, ``ftp:``), protocol-relative ``//host``, a missing host,
    backslashes or control characters anywhere, a bad port, and any host when the
    allow-list is empty.
    """
    if not url or not isinstance(url, str) or len(url) > 4096:
        return False
    url = url.strip(" ")
    if _UNSAFE_RE.search(url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    if parts.scheme.lower() not in DEEP_LINK_SCHEMES:
        return False
    if not url[len(parts.scheme):].startswith("://") or not parts.netloc:
        return False
    return host_allowed(parts.hostname, allowed_hosts)


def choose_destination(
    url_param: str | None,
    link_deep_link: str | None,
    destination_url: str,
    allowed_hosts: Iterable[str],
) -> tuple[str, str]:
    """The destination template and where it came from (CONTRACT §1, in this order):
    ``("url", <the url parameter, trimmed>)`` when allowed, else ``("link", link_deep_link)``
    when the link has one, else ``("campaign", destination_url)``. Returns (source, template)."""
    if url_param and deep_link_allowed(url_param, allowed_hosts):
        return "url", url_param.strip(" ")
    if link_deep_link:
        return "link", link_deep_link
    return "campaign", destination_url


def expand_macros(template: str, values: Mapping[str, str | int | None]) -> str:
    """``template`` with every ``{click_id}``, ``{sub1}``..``{sub5}``, ``{partner_id}`` and
    ``{campaign_id}`` replaced by its value, percent-encoded (``quote(value, safe="")``);
    a missing or None value gives ``""``. One pass: a value is never expanded again."""

    def repl(m: re.Match) -> str:
        value = values.get(m.group(1))
        return "" if value is None else quote(str(value), safe="")

    return MACRO_RE.sub(repl, template)


def has_click_id_macro(template: str) -> bool:
    """True when ``template`` holds the ``{click_id}`` macro."""
    return "{click_id}" in template


def _split_query_fragment(url: str) -> tuple[str, str | None, str | None]:
    """(everything before the query, the raw query or None, the raw fragment or None).

    Cut where :func:`urllib.parse.urlsplit` cuts (the fragment at the first ``#``, the
    query at the first ``?`` before it), but without re-assembling the rest through
    ``urlunsplit``, which would rewrite ``myapp:///path`` as ``myapp:/path`` and drop
    an empty ``?``/``#``: the part before the query is kept byte for byte.
    """
    before, hash_, fragment = url.partition("#")
    head, qmark, query = before.partition("?")
    return head, (query if qmark else None), (fragment if hash_ else None)


def set_query_param(url: str, name: str, value: str) -> str:
    """``url`` with query parameter ``name`` set to ``value`` exactly once (CONTRACT §1).

    The other parameters keep their order and their encoding (they are not decoded and
    re-encoded), the ``#fragment`` stays, and a parameter already named ``name`` (compared
    after decoding) is replaced where its first occurrence was; later ones are dropped.
    Otherwise it goes last. Works the same for app schemes (``myapp://open?x=1``).
    """
    head, query, fragment = _split_query_fragment(url)
    pair = quote(name, safe="") + "=" + quote(value, safe="")
    pieces = query.split("&") if query else []
    out: list[str] = []
    placed = False
    for piece in pieces:
        raw_name = piece.split("=", 1)[0]
        if piece and unquote_plus(raw_name) == name:
            if not placed:
                out.append(pair)
                placed = True
            continue
        out.append(piece)
    if not placed:
        out.append(pair)
    result = head + "?" + "&".join(out)
    if fragment is not None:
        result += "#" + fragment
    return result


def build_destination(
    template: str,
    *,
    click_id: str,
    subs: Mapping[str, str | None],
    partner_id: int,
    campaign_id: int,
    click_param: str = "click_id",
) -> str:
    """The redirect target for a (non-fallback) click (CONTRACT §1).

    ``subs`` maps ``sub1``..``sub5`` to the (clipped) values or None. Macros are replaced,
    URL-encoded; when ``template`` has no ``{click_id}`` macro, ``click_param`` (default
    ``click_id``) is set to ``click_id`` in the query string by :func:`set_query_param`.
    """
    values: dict[str, str | int | None] = {name: subs.get(name) for name in SUB_NAMES}
    values.update(click_id=click_id, partner_id=partner_id, campaign_id=campaign_id)
    url = expand_macros(template, values)
    if not has_click_id_macro(template):
        url = set_query_param(url, click_param or "click_id", click_id)
    return url
