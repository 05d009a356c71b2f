"""Browser defences (README "Browser defences"): security headers on every kind of answer, framing
refused, a CSP the pages satisfy, and Secure + SameSite cookies over HTTPS only.

Attacks tried: framing a staff page (clickjacking on payout approval and secret rotation), an
inline script or handler in a page, MIME sniffing of a JSON answer, session and remember-me
cookies sent over plain http once the site is served over TLS."""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

import pytest

from partnernet import create_app
from partnernet.extensions import db
from partnernet.security_headers import HSTS_VALUE
from tests.factories import make_campaign, make_client, make_link, make_partner, make_user

PW = "correct horse battery"
ROOT = Path(__file__).resolve().parents[2]
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"


def _login(http, email, remember=True):
    data = {"email": email, "password": PW, **({"remember": "y"} if remember else {})}
    r = http.post("/login", data=data)
    assert r.status_code == 302, r.get_data(as_text=True)[:300]
    return r


def _cookies(resp) -> dict[str, str]:
    """Set-Cookie values of ``resp`` by cookie name."""
    return {v.split("=", 1)[0]: v for v in resp.headers.getlist("Set-Cookie")}


def _attrs(set_cookie: str) -> set[str]:
    return {p.strip().lower() for p in set_cookie.split(";")[1:]}


def _assert_defences(resp, *, html: bool):
    h = resp.headers
    csp = h["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and h["X-Frame-Options"] == "DENY"
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    if html:
        assert "script-src 'self'" in csp and "object-src 'none'" in csp and "base-uri 'none'" in csp
    else:
        assert csp.startswith("default-src 'none'")


class _Https:
    """A test client whose requests arrive over https (``wsgi.url_scheme``)."""

    def __init__(self, http):
        self.http = http

    def get(self, path, **kw):
        return self.http.get(path, base_url="https://testserver", **kw)

    def post(self, path, **kw):
        return self.http.post(path, base_url="https://testserver", **kw)


@contextmanager
def _app_with(app, **config):
    """Another app on the same database with ``config`` on top (proxy hops, base URL)."""
    other = create_app({**{k: app.config[k] for k in ("SQLALCHEMY_DATABASE_URI", "SECRET_KEY")},
                        "TESTING": True, "WTF_CSRF_ENABLED": False, "REDIS_URL": None,
                        "PARTNERNET_BASE_URL": "http://testserver", **config})
    with other.app_context():
        try:
            yield other
        finally:
            db.session.remove()
            db.engine.dispose()


def test_every_kind_of_page_has_the_headers_and_refuses_framing(app, client):
    make_user("boss@example.com")
    partner = make_partner()
    make_user("p@example.com", role="partner", partner_id=partner.id)
    login_page = client.get("/login")
    assert login_page.status_code == 200
    _assert_defences(login_page, html=True)
    _assert_defences(client.get("/api/v1/openapi.json"), html=False)
    _assert_defences(client.get("/api/v1/clients"), html=False)  # a JSON error (401)
    _assert_defences(client.get("/no-such-page"), html=True)  # the HTML 404
    _login(client, "boss@example.com")
    staff_page = client.get("/staff/payouts")
    assert staff_page.status_code == 200
    _assert_defences(staff_page, html=True)
    client.post("/logout")
    _login(client, "p@example.com")
    partner_page = client.get("/partner/")
    assert partner_page.status_code == 200
    _assert_defences(partner_page, html=True)
    out = client.post("/logout")  # a redirect (werkzeug's small HTML body)
    assert out.status_code == 302
    _assert_defences(out, html=True)
    # plain http (local development): no HSTS
    assert "Strict-Transport-Security" not in staff_page.headers


def test_templates_and_pages_hold_no_inline_script_handler_or_style():
    """The CSP allows scripts and styles from our origin only: a page with an inline <script>, an
    on...= handler, a javascript: URL or a style= attribute would silently break."""
    bad = re.compile(r"<script(?![^>]*\bsrc=)|\son[a-z]+\s*=|javascript:|\sstyle\s*=|<style", re.I)
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in (ROOT / "templates").rglob("*.html")
             for m in bad.finditer(p.read_text())]
    assert found == []
    js = (ROOT / "static" / "app.js").read_text()
    assert "data-copy" in js and "data-confirm" in js and "data-check-all" in js


def test_rendered_staff_and_client_pages_use_the_script_file(app, client):
    make_user("boss@example.com")
    camp = make_campaign(make_client(), budget_minor=50000)
    _login(client, "boss@example.com")
    for url in (f"/staff/clients/{camp.client_id}", "/staff/conversions"):
        page = client.get(url).get_data(as_text=True)
        assert '<script src="/static/app.js" defer></script>' in page
        assert not re.search(r"\son[a-z]+=|\sstyle=", page), url
    assert "data-confirm=" in client.get(f"/staff/clients/{camp.client_id}").get_data(as_text=True)
    client.post("/logout")
    make_user("c@example.com", role="client", client_id=camp.client_id)
    _login(client, "c@example.com")
    home = client.get("/client/").get_data(as_text=True)
    assert 'class="spend-bar"' in home and not re.search(r"\sstyle=", home)
    static = client.get("/static/app.js")
    assert static.status_code == 200 and static.headers["X-Content-Type-Options"] == "nosniff"


def test_cookies_secure_and_samesite_over_https_with_hsts(app):
    make_user("boss@example.com")
    http = app.test_client()
    r = _login(http, "boss@example.com")
    plain = _cookies(r)
    assert {"session", "remember_token"} <= set(plain)
    for name in ("session", "remember_token"):
        attrs = _attrs(plain[name])
        assert "samesite=lax" in attrs and "httponly" in attrs and "secure" not in attrs, plain[name]

    tls = _Https(app.test_client())  # the request itself is secure
    r = _login(tls, "boss@example.com")
    cookies = _cookies(r)
    for name in ("session", "remember_token"):
        attrs = _attrs(cookies[name])
        assert {"secure", "httponly", "samesite=lax"} <= attrs, cookies[name]
    assert r.headers["Strict-Transport-Security"] == HSTS_VALUE
    page = tls.get("/staff/")
    assert page.status_code == 200 and page.headers["Strict-Transport-Security"] == HSTS_VALUE
    out = tls.post("/logout")  # the deleted cookies keep the attributes
    assert {"session", "remember_token"} <= set(_cookies(out))
    for value in out.headers.getlist("Set-Cookie"):
        assert {"secure", "samesite=lax"} <= _attrs(value), value


def test_behind_a_tls_proxy_the_forwarded_proto_decides(app):
    make_user("boss@example.com")
    with _app_with(app, PARTNERNET_PROXY_HOPS=1) as proxied:
        http = proxied.test_client()
        r = http.post("/login", data={"email": "boss@example.com", "password": PW, "remember": "y"},
                      headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.4"})
        assert r.status_code == 302 and {"session", "remember_token"} <= set(_cookies(r))
        for name, value in _cookies(r).items():
            assert {"secure", "samesite=lax"} <= _attrs(value), value
        assert "Strict-Transport-Security" in r.headers
        r = http.get("/login", headers={"X-Forwarded-Proto": "http"})
        assert "Strict-Transport-Security" not in r.headers
    # without trusted hops the header is the client's word: ignored
    r = app.test_client().post("/login", data={"email": "boss@example.com", "password": PW},
                               headers={"X-Forwarded-Proto": "https"})
    assert all("secure" not in _attrs(v) for v in r.headers.getlist("Set-Cookie"))
    assert "Strict-Transport-Security" not in r.headers


def test_an_https_base_url_makes_every_cookie_secure(app):
    make_user("boss@example.com")
    camp = make_campaign(make_client())
    link = make_link(make_partner(), camp)
    with _app_with(app, PARTNERNET_BASE_URL="https://track.example") as tls_app:
        http = tls_app.test_client()  # the TLS proxy in front speaks http to us
        r = _login(http, "boss@example.com")
        for name in ("session", "remember_token"):
            assert {"secure", "samesite=lax", "httponly"} <= _attrs(_cookies(r)[name])
        assert r.headers["Strict-Transport-Security"] == HSTS_VALUE
        token = tls_app.extensions["partnernet_link_signer"].dumps(link.id)
        click = http.get(f"/c/{token}", headers={"User-Agent": CHROME})
        assert click.status_code == 302
        vid = _cookies(click)["pn_vid"]
        assert {"secure", "samesite=lax", "httponly"} <= _attrs(vid)


def test_tracking_redirect_stays_lean_and_keeps_the_referrer(app, client):
    link = make_link(make_partner(), make_campaign(make_client()))
    token = app.extensions["partnernet_link_signer"].dumps(link.id)
    r = client.get(f"/c/{token}?sub1=x", headers={"User-Agent": CHROME})
    assert r.status_code == 302 and r.headers["X-Content-Type-Options"] == "nosniff"
    # the advertiser's landing page may expect the referrer of the click: no policy set here
    for name in ("Referrer-Policy", "Content-Security-Policy", "Strict-Transport-Security"):
        assert name not in r.headers
    assert _attrs(_cookies(r)["pn_vid"]) >= {"samesite=lax", "httponly"}
    assert "secure" not in _attrs(_cookies(r)["pn_vid"])  # plain http in development
    pixel = client.get(f"/i/{token}", headers={"User-Agent": CHROME})
    assert pixel.status_code == 200 and pixel.headers["X-Content-Type-Options"] == "nosniff"
    bad = client.get("/c/not-a-token", headers={"User-Agent": CHROME})
    assert bad.status_code == 404 and bad.headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize("path", ["/offer-unavailable", "/healthz"])
def test_other_public_answers_have_the_headers(client, path):
    r = client.get(path)
    assert r.status_code == 200
    _assert_defences(r, html=r.mimetype == "text/html")
