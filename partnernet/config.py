"""Default settings (no secrets). :func:`partnernet.create_app` layers the
environment and explicit overrides on top of these.

Environment (CONTRACT §6): DATABASE_URL, REDIS_URL, SECRET_KEY,
SECRET_KEY_FALLBACKS (comma-separated), PARTNERNET_BASE_URL,
PARTNERNET_PROXY_HOPS.
"""

from __future__ import annotations

import os

DEFAULTS = {
    "SQLALCHEMY_DATABASE_URI": None,  # filled in create_app: SQLite under instance/
    "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
    "REDIS_URL": None,  # unset: jobs run in-process after the request commits, clicks go straight to the DB
    "SECRET_KEY": None,
    "SECRET_KEY_FALLBACKS": [],
    "PARTNERNET_BASE_URL": "http://127.0.0.1:5000",
    "PARTNERNET_PROXY_HOPS": 0,
    # How long (seconds) a web process trusts its cached link/campaign state before
    # re-checking the state version in Redis. 0 = check on every redirect.
    "PARTNERNET_STATE_TTL_S": 0,
    # Click buffer: flush when this many clicks wait, and at the latest after this many seconds.
    "PARTNERNET_CLICK_BATCH": 500,
    "PARTNERNET_CLICK_FLUSH_S": 1.0,
    "PARTNERNET_POSTBACK_MAX_SKEW_S": 300,
    "PARTNERNET_UNIQUE_WINDOW_S": 24 * 3600,
    "PARTNERNET_VISITOR_COOKIE": "pn_vid",
    "WTF_CSRF_TIME_LIMIT": None,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "REMEMBER_COOKIE_HTTPONLY": True,
    "JSON_SORT_KEYS": False,
    # Request size limits (werkzeug answers 413 beyond them; the postback answers 413 too_large):
    # a whole body of at most 1 MiB, and at most 1,000 parts in a multipart form (werkzeug applies
    # MAX_FORM_PARTS to multipart only; a url-encoded form is bounded by the 1 MiB).
    "MAX_CONTENT_LENGTH": 1024 * 1024,
    "MAX_FORM_PARTS": 1000,
    # Partner postbacks (partnernet.partners.postbacks): tries, backoff base in seconds (doubling),
    # and whether 127.0.0.1 may receive them (tests only).
    "PARTNERNET_PARTNER_POSTBACK_ATTEMPTS": 5,
    "PARTNERNET_PARTNER_POSTBACK_BACKOFF_S": 30.0,
    "PARTNERNET_ALLOW_LOOPBACK_POSTBACKS": False,
}


def from_environment(env: os._Environ | dict | None = None) -> dict:
    """The settings the environment gives, parsed (only the keys that are set)."""
    env = os.environ if env is None else env
    out: dict = {}
    if env.get("DATABASE_URL"):
        url = env["DATABASE_URL"]
        # SQLAlchemy 2 needs an explicit driver name for psycopg 3.
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://"):]
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        out["SQLALCHEMY_DATABASE_URI"] = url
    if env.get("REDIS_URL"):
        out["REDIS_URL"] = env["REDIS_URL"]
    if env.get("SECRET_KEY"):
        out["SECRET_KEY"] = env["SECRET_KEY"]
    if env.get("SECRET_KEY_FALLBACKS"):
        out["SECRET_KEY_FALLBACKS"] = [k.strip() for k in env["SECRET_KEY_FALLBACKS"].split(",") if k.strip()]
    if env.get("PARTNERNET_BASE_URL"):
        out["PARTNERNET_BASE_URL"] = env["PARTNERNET_BASE_URL"].rstrip("/")
    if env.get("PARTNERNET_PROXY_HOPS"):
        out["PARTNERNET_PROXY_HOPS"] = int(env["PARTNERNET_PROXY_HOPS"])
    if env.get("PARTNERNET_STATE_TTL_S"):
        out["PARTNERNET_STATE_TTL_S"] = float(env["PARTNERNET_STATE_TTL_S"])
    if env.get("PARTNERNET_ALLOW_LOOPBACK_POSTBACKS"):
        out["PARTNERNET_ALLOW_LOOPBACK_POSTBACKS"] = env["PARTNERNET_ALLOW_LOOPBACK_POSTBACKS"] in ("1", "true", "yes")
    if env.get("PARTNERNET_PARTNER_POSTBACK_BACKOFF_S"):
        out["PARTNERNET_PARTNER_POSTBACK_BACKOFF_S"] = float(env["PARTNERNET_PARTNER_POSTBACK_BACKOFF_S"])
    return out
