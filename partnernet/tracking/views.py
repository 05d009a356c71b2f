"""Tracking endpoints (CONTRACT §1, §2): ``GET|HEAD /c/<token>`` (the tracking link),
``GET /i/<token>`` (the impression pixel) and ``GET /offer-unavailable`` (our own
fallback page). The views parse the request and call :mod:`.hotpath`.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, render_template, request, url_for

from . import hotpath

bp = Blueprint("tracking", __name__)

# A 1x1 transparent GIF (43 bytes).
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
VISITOR_COOKIE_MAX_AGE_S = 365 * 24 * 3600
_ARGS = ("sub1", "sub2", "sub3", "sub4", "sub5", "url")


def _first_args(names) -> dict[str, str]:
    """The first value of each named query parameter that is present."""
    out = {}
    for name in names:
        values = request.args.getlist(name)
        if values:
            out[name] = values[0]
    return out


def _unavailable() -> Response:
    resp = Response(render_template("tracking/temporarily_unavailable.html"), status=503)
    resp.headers["Retry-After"] = "5"
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.route("/c/<token>", methods=["GET", "HEAD"])
def click(token: str):
    """The tracking link (CONTRACT §1): 302 to the destination or fallback, ``Cache-Control:
    no-store``; 404 (HTML) for a token that is not exactly one we issued."""
    cookie_name = current_app.config["PARTNERNET_VISITOR_COOKIE"]
    try:
        outcome = hotpath.handle_click(
            token,
            method=request.method,
            user_agent=request.headers.get("User-Agent"),
            ip=request.remote_addr,
            referer=request.headers.get("Referer"),
            cookie=request.cookies.get(cookie_name),
            args=_first_args(_ARGS),
            unavailable_url=url_for("tracking.offer_unavailable"),
        )
    except hotpath.StateUnavailable:
        return _unavailable()
    if outcome is None:
        abort(404)
    resp = Response(status=302)
    resp.headers["Location"] = outcome.location
    resp.headers["Cache-Control"] = "no-store"
    if outcome.set_cookie:
        resp.set_cookie(cookie_name, outcome.visitor, max_age=VISITOR_COOKIE_MAX_AGE_S, path="/",
                        httponly=True, samesite="Lax", secure=request.is_secure)
    return resp


@bp.get("/i/<token>")
def impression(token: str):
    """The impression pixel (CONTRACT §2): a 1x1 transparent GIF, ``Cache-Control: no-store``;
    404 for a bad token. HEAD is answered too (counted as a bot impression)."""
    try:
        found = hotpath.handle_impression(
            token,
            method=request.method,
            user_agent=request.headers.get("User-Agent"),
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
