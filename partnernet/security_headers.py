"""Browser defences on every answer: security headers and hardened cookies.

Headers (added by an ``after_request`` hook, :func:`init_app`):

- HTML pages: a Content-Security-Policy (:data:`HTML_CSP`: scripts, styles, images, fonts and
  form targets from our own origin only, no inline script or ``style=`` attribute, no plugins,
  no ``<base>``, and ``frame-ancestors 'none'``), ``X-Frame-Options: DENY`` (the same framing
  refusal for browsers without CSP level 2: OWASP Clickjacking Defense), ``X-Content-Type-Options:
  nosniff``, ``Referrer-Policy: strict-origin-when-cross-origin``, ``Cross-Origin-Opener-Policy:
  same-origin`` and a ``Permissions-Policy`` that turns off camera, microphone and geolocation.
- Every other answer (JSON, CSV, redirects, files): the same, with :data:`STRICT_CSP`
  (``default-src 'none'``: a JSON body opened as a document can run or load nothing).
- The tracking redirect ``/c/`` and pixel ``/i/`` (the hot path): ``nosniff`` only. Their
  ``Referrer-Policy`` is left to the browser's default on purpose: the advertiser's landing page
  may expect the referrer of the click (CONTRACT §1 leaves it alone).
- Served over HTTPS (:func:`served_over_https`): ``Strict-Transport-Security`` (RFC 6797),
  :data:`HSTS_VALUE`, without ``includeSubDomains`` (other hosts of the operator's domain are
  not ours to pin).

Cookies. Every cookie we set (the session, which also holds the CSRF token; the remember-me
cookie; the visitor cookie ``pn_vid``) carries ``SameSite=Lax`` and ``HttpOnly``, and
``Secure`` when served over HTTPS. The session cookie's attributes come from
:class:`HardenedSessionInterface`; any other ``Set-Cookie`` of the answer missing ``Secure``
over HTTPS gets it in :meth:`HardenedSessionInterface.save_session`, the last step of every
answer (it runs after every ``after_request`` hook, Flask-Login's remember-me cookie included).

HTTPS means: ``PARTNERNET_BASE_URL`` is ``https://...`` (the public origin: a TLS proxy in front
serves it), or the request itself is secure (``wsgi.url_scheme``, which ``ProxyFix`` takes from
``X-Forwarded-Proto`` through ``PARTNERNET_PROXY_HOPS`` trusted hops). Over plain http (local
development) cookies are not ``Secure``, or the browser would drop them.
"""

from __future__ import annotations

from flask import Flask, current_app, request
from flask.sessions import SecureCookieSessionInterface

HTML_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
STRICT_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
REFERRER_POLICY = "strict-origin-when-cross-origin"
HSTS_VALUE = "max-age=31536000"  # one year
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=()"
#: Endpoints of the tracking hot path: they get ``nosniff`` only (see the module notes).
LEAN_ENDPOINTS = frozenset({"tracking.click", "tracking.impression"})
_BASE_HTTPS = "partnernet_base_https"


def served_over_https(app: Flask | None = None) -> bool:
    """True when this answer travels over HTTPS: the configured ``PARTNERNET_BASE_URL`` is https,
    or the current request is secure (behind the configured proxy hops, ``X-Forwarded-Proto``).
    Call inside a request context."""
    app = app or current_app
    return bool(app.extensions.get(_BASE_HTTPS)) or request.is_secure


def _common(headers, csp: str, https: bool) -> None:
    headers.setdefault("Content-Security-Policy", csp)
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", REFERRER_POLICY)
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
    if https:
        headers.setdefault("Strict-Transport-Security", HSTS_VALUE)


def add_security_headers(response):
    """The ``after_request`` hook: the headers of the module notes on ``response``; a header a
    view set itself is kept. Returns ``response``."""
    headers = response.headers
    if request.endpoint in LEAN_ENDPOINTS and response.status_code in (200, 302):
        headers["X-Content-Type-Options"] = "nosniff"
        return response
    html = response.mimetype == "text/html"
    _common(headers, HTML_CSP if html else STRICT_CSP, served_over_https())
    return response


def harden_set_cookies(headers, *, secure: bool) -> None:
    """Give every ``Set-Cookie`` of ``headers`` (werkzeug Headers) ``SameSite=Lax`` when it has
    no SameSite, and ``Secure`` when ``secure`` and it has none. Deleting cookies included."""
    values = headers.getlist("Set-Cookie")
    if not values:
        return
    changed = []
    for value in values:
        attrs = {part.strip().split("=", 1)[0].lower() for part in value.split(";")[1:]}
        if "samesite" not in attrs:
            value += "; SameSite=Lax"
        if secure and "secure" not in attrs:
            value += "; Secure"
        changed.append(value)
    if changed != values:
        del headers["Set-Cookie"]
        for value in changed:
            headers.add("Set-Cookie", value)


class HardenedSessionInterface(SecureCookieSessionInterface):
    """The signed-cookie session with ``Secure`` decided per request (:func:`served_over_https`)
    and ``SameSite=Lax`` unless configured otherwise; its ``save_session`` also hardens every
    other cookie of the answer (:func:`harden_set_cookies`)."""

    def get_cookie_secure(self, app: Flask) -> bool:  # noqa: D102 - Flask's hook
        return bool(app.config.get("SESSION_COOKIE_SECURE")) or served_over_https(app)

    def get_cookie_samesite(self, app: Flask) -> str | None:  # noqa: D102 - Flask's hook
        return app.config.get("SESSION_COOKIE_SAMESITE") or "Lax"

    def save_session(self, app, session, response) -> None:  # noqa: D102 - Flask's hook
        super().save_session(app, session, response)
        if "Set-Cookie" in response.headers:
            harden_set_cookies(response.headers, secure=served_over_https(app))


def init_app(app: Flask) -> None:
    """Install the headers hook and the hardened session on ``app``; set the remember-me cookie's
    ``SameSite=Lax`` and ``HttpOnly`` (and ``Secure`` when the base URL is https) unless
    configured. Call once, in the application factory."""
    base_https = str(app.config.get("PARTNERNET_BASE_URL") or "").lower().startswith("https://")
    app.extensions[_BASE_HTTPS] = base_https
    app.config.setdefault("REMEMBER_COOKIE_SAMESITE", "Lax")
    app.config.setdefault("REMEMBER_COOKIE_HTTPONLY", True)
    app.config["SESSION_COOKIE_SAMESITE"] = app.config.get("SESSION_COOKIE_SAMESITE") or "Lax"
    if base_https:
        app.config.setdefault("REMEMBER_COOKIE_SECURE", True)
        if not app.config.get("SESSION_COOKIE_SECURE"):
            app.config["SESSION_COOKIE_SECURE"] = True
    app.session_interface = HardenedSessionInterface()
    app.after_request(add_security_headers)
