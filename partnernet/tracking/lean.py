"""The lean tracking handler: ``/c/<token>`` and ``/i/<token>`` served in front of Flask
(CONTRACT §1, §2; ARCHITECTURE, the hot path).

:class:`LeanTracking` wraps the app's WSGI callable (inside ``ProxyFix``, so the client
address and scheme are already those of the trusted proxy hops). A click or pixel hit on a
link whose state is in the process's trusted cache (:func:`.linkstate.cached_state`: Redis
mode, subscription live, entry current) is answered here: no request context, no session,
no login or CSRF hook, no database. Everything else goes on to the Flask views unchanged: a
token that does not verify (their 404 page), the first click of a link in a process (which
loads and caches its state), no Redis, the subscription down, other methods and paths. The
answer is the Flask view's: same status, body and headers, the same cookie attributes (a test
compares them).
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from werkzeug.http import parse_cookie

import werkzeug.urls  # noqa: F401  (registers the "werkzeug.url_quote" codec error handler)

from . import answers
from .hotpath import link_id_of, record_click
from .impressions import record_impression
from .linkstate import cached_state, state_cache

log = logging.getLogger(__name__)

_CLICK_ARGS = frozenset(("sub1", "sub2", "sub3", "sub4", "sub5", "url"))
_PIXEL_ARGS = frozenset(("sub1",))
_PIXEL_HEADERS = [("Content-Type", "image/gif"), ("Content-Length", str(len(answers.PIXEL_GIF))),
                  ("Cache-Control", "no-store"), ("Vary", "Cookie"), ("X-Content-Type-Options", "nosniff")]


def _first_args(environ, names: frozenset) -> dict[str, str]:
    """The first value of each named query parameter, parsed as werkzeug's ``request.args`` does."""
    qs = environ.get("QUERY_STRING")
    if not qs:
        return {}
    out: dict[str, str] = {}
    for key, value in parse_qsl(qs.encode("latin1").decode(), keep_blank_values=True,
                                errors="werkzeug.url_quote"):
        if key in names and key not in out:
            out[key] = value
    return out


class LeanTracking:
    """WSGI middleware: answer cached-state tracking requests, pass the rest to ``inner``.

    ``app``: the Flask app (config, cache, batch); ``inner``: the WSGI callable to pass on to
    (Flask's own ``wsgi_app``). Never raises for a tracking request it takes: once the click
    is recorded the answer is a 302 (or the GIF)."""

    def __init__(self, app, inner):
        self.app = app
        self.inner = inner
        self.cookie_name = app.config["PARTNERNET_VISITOR_COOKIE"]
        self.enabled = bool(app.config.get("REDIS_URL")) and app.config.get("PARTNERNET_LEAN_TRACKING", True)

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO") or ""
        if self.enabled and len(path) > 3 and path[0] == "/" and path[2] == "/" and path[1] in "ci":
            try:
                answer = self._try(environ, start_response, path)
            except Exception:  # noqa: BLE001 - nothing recorded yet: the Flask view answers
                log.exception("lean tracking handler failed before recording; passing to the view")
                answer = None
            if answer is not None:
                return answer
        return self.inner(environ, start_response)

    def _try(self, environ, start_response, path: str):
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return None
        token = path[3:]
        if "/" in token:
            return None
        app = self.app
        link_id = link_id_of(token, app=app)
        if link_id is None:
            return None
        state = cached_state(state_cache(app), link_id)
        if state is None:
            return None
        cookie = None
        raw_cookie = environ.get("HTTP_COOKIE")
        if raw_cookie:
            cookie = parse_cookie(raw_cookie).get(self.cookie_name)
        ip = environ.get("REMOTE_ADDR")
        ua = environ.get("HTTP_USER_AGENT")
        if path[1] == "i":
            record_impression(app, link_id, state, method=method, user_agent=ua, ip=ip, cookie=cookie,
                              args=_first_args(environ, _PIXEL_ARGS))
            start_response("200 OK", list(_PIXEL_HEADERS))
            return [] if method == "HEAD" else [answers.PIXEL_GIF]
        secure = environ.get("wsgi.url_scheme") == "https" or bool(app.extensions.get("partnernet_base_https"))
        outcome = record_click(
            app, link_id, state, method=method, user_agent=ua, ip=ip, referer=environ.get("HTTP_REFERER"),
            cookie=cookie, args=_first_args(environ, _CLICK_ARGS),
            unavailable_url=(environ.get("SCRIPT_NAME") or "").rstrip("/") + "/offer-unavailable",
            fetch_dest=environ.get("HTTP_SEC_FETCH_DEST"),
        )
        headers = [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", "0"),
                   ("Location", outcome.location), ("Cache-Control", "no-store")]
        if outcome.cookie is not None:
            header = answers.visitor_cookie_header(self.cookie_name, outcome.cookie, secure=secure)
            if header is None:  # a value werkzeug would quote: let werkzeug write it
                from werkzeug.http import dump_cookie

                header = dump_cookie(self.cookie_name, outcome.cookie, max_age=answers.VISITOR_COOKIE_MAX_AGE_S,
                                     path="/", httponly=True, samesite="Lax", secure=secure)
            headers.append(("Set-Cookie", header))
        headers.append(("Vary", "Cookie"))  # as Flask's answer (the visitor cookie shapes it)
        headers.append(("X-Content-Type-Options", "nosniff"))
        start_response("302 FOUND", headers)
        return []


def install(app) -> None:
    """Put :class:`LeanTracking` in front of ``app``'s own WSGI callable (call before wrapping it
    in ``ProxyFix``, so the lean handler sees the corrected address and scheme)."""
    app.wsgi_app = LeanTracking(app, app.wsgi_app)
