"""Tracking endpoints (CONTRACT §1, §2): ``GET|HEAD /c/<token>`` (the tracking link),
``GET /i/<token>`` (the impression pixel) and ``GET /offer-unavailable`` (our own
fallback page). The views parse the request and call :mod:`.hotpath`.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, render_template, request, url_for

from . import hotpath, impressions
from .answers import PIXEL_GIF, VISITOR_COOKIE_MAX_AGE_S, visitor_cookie_header  # noqa: F401

bp = Blueprint("tracking", __name__)

_ARGS = ("sub1", "sub2", "sub3", "sub4", "sub5", "url")


def _first_args(names, req=None) -> dict[str, str]:
    """The first value of each named query parameter that is present (``req``: the current
    request, default: looked up)."""
    args = (req or request).args
    if not args:
        return {}
    return {name: args[name] for name in names if name in args}  # MultiDict []: the first value


def _unavailable_url(app, req) -> str:
    """``url_for("tracking.offer_unavailable")``, computed once per script root (the path does
    not depend on anything else in the request)."""
    urls = app.extensions.get("partnernet_unavailable_url")
    if urls is None:
        urls = app.extensions["partnernet_unavailable_url"] = {}
    root = req.script_root
    url = urls.get(root)
    if url is None:
        if len(urls) >= 16:
            urls.clear()
        url = urls[root] = url_for("tracking.offer_unavailable")
    return url


def _unavailable() -> Response:
    resp = Response(render_template("tracking/temporarily_unavailable.html"), status=503)
    resp.headers["Retry-After"] = "5"
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.route("/c/<token>", methods=["GET", "HEAD"])
def click(token: str):
    """The tracking link (CONTRACT §1): 302 to the destination or fallback, ``Cache-Control:
    no-store``, and the signed visitor cookie when the request had no valid one; 404 (HTML)
    for a token that is not exactly one we issued. ``Sec-Fetch-Dest`` other than ``document``
    records a ``non_navigation`` bot click (:func:`.hotpath.click_flag`)."""
    app = current_app._get_current_object()
    req = request._get_current_object()
    cookie_name = app.config["PARTNERNET_VISITOR_COOKIE"]
    headers = req.headers
    try:
        outcome = hotpath.handle_click(
            token,
            method=req.method,
            user_agent=headers.get("User-Agent"),
            ip=req.remote_addr,
            referer=headers.get("Referer"),
            cookie=req.cookies.get(cookie_name) if "HTTP_COOKIE" in req.environ else None,
            args=_first_args(_ARGS, req),
            unavailable_url=_unavailable_url(app, req),
            fetch_dest=headers.get("Sec-Fetch-Dest"),
        )
    except hotpath.StateUnavailable:
        return _unavailable()
    if outcome is None:
        abort(404)
    resp = Response(status=302)
    resp_headers = resp.headers
    resp_headers["Location"] = outcome.location
    resp_headers["Cache-Control"] = "no-store"
    if outcome.cookie is not None:
        header = visitor_cookie_header(cookie_name, outcome.cookie, secure=req.is_secure)
        if header is not None:
            resp_headers.add("Set-Cookie", header)
        else:
            resp.set_cookie(cookie_name, outcome.cookie, max_age=VISITOR_COOKIE_MAX_AGE_S, path="/",
                            httponly=True, samesite="Lax", secure=req.is_secure)
    return resp


@bp.get("/i/<token>")
def impression(token: str):
    """The impression pixel (CONTRACT §2): a 1x1 transparent GIF, ``Cache-Control: no-store``;
    404 for a bad token. HEAD is answered too (counted as a bot impression)."""
    try:
        found = impressions.handle_impression(
            token,
            method=request.method,
            user_agent=request.headers.get("User-Agent"),
            ip=request.remote_addr,
            cookie=request.cookies.get(current_app.config["PARTNERNET_VISITOR_COOKIE"]),
            args=_first_args(("sub1",)),
        )
    except hotpath.StateUnavailable:
        found = True  # the link may well exist; a pixel never breaks a page
    if not found:
        abort(404)
    resp = Response(PIXEL_GIF, status=200, mimetype="image/gif")
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/offer-unavailable")
def offer_unavailable():
    """Our fallback page when a campaign has neither a fallback URL nor a client website."""
    resp = Response(render_template("tracking/unavailable.html"), status=200)
    resp.headers["Cache-Control"] = "no-store"
    return resp
