"""Default settings (no secrets). :func:`partnernet.create_app` layers the
environment and explicit overrides on top of these.

Environment (CONTRACT §6): DATABASE_URL, REDIS_URL, SECRET_KEY,
SECRET_KEY_FALLBACKS (comma-separated), PARTNERNET_BASE_URL,
PARTNERNET_PROXY_HOPS, PARTNERNET_SMTP_HOST/_PORT/_USER/_PASSWORD/_TLS, PARTNERNET_MAIL_FROM,
PARTNERNET_SEPA_NAME/_IBAN/_BIC (the debtor account of SEPA payout files);
the project's own settings below, the fraud flag thresholds (``PARTNERNET_FLAG_*``) and
``PARTNERNET_CLICK_RETENTION_DAYS`` among them. A malformed value raises ValueError at start-up.
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
    # How long (seconds) a web process trusts its cached postback lookups before re-checking the
    # state version in Redis. 0 = check on every postback. (The redirect's cache is invalidated
    # by Redis pub/sub instead: partnernet.tracking.invalidation.)
    "PARTNERNET_STATE_TTL_S": 0,
    # Click writer: the pause after a failed pass, and how often a pass starts at most (group
    # commit: many clicks per transaction).
    "PARTNERNET_CLICK_FLUSH_S": 1.0,
    "PARTNERNET_CLICK_WRITE_S": 0.2,
    # When a redirect answers (partnernet.tracking.batcher): "memory" = at once, a thread sends the
    # batch (a hard crash of a web process loses the clicks of its last few milliseconds, never
    # sent, so only ever under-counted); "redis" = after its click is in Redis (no answered click
    # lost when a web process dies; about 40 % of memory's redirects per second on one core).
    "PARTNERNET_CLICK_ACK": "memory",
    # Serve /c/ and /i/ on cached state in front of Flask (partnernet.tracking.lean).
    "PARTNERNET_LEAN_TRACKING": True,
    # "production": refuse to start on a Redis that cannot keep clicks (no AOF); else only warn.
    "PARTNERNET_ENV": "development",
    "PARTNERNET_POSTBACK_MAX_SKEW_S": 300,
    "PARTNERNET_UNIQUE_WINDOW_S": 24 * 3600,
    # Raw clicks are kept this many days (0 = for ever); rollups are kept for ever. On PostgreSQL
    # whole monthly partitions go once every row is past it (partnernet.tracking.partitions).
    "PARTNERNET_CLICK_RETENTION_DAYS": 0,
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
    # Partner postbacks (partnernet.partners.postbacks): tries, backoff base in seconds (doubling).
    "PARTNERNET_PARTNER_POSTBACK_ATTEMPTS": 5,
    "PARTNERNET_PARTNER_POSTBACK_BACKOFF_S": 30.0,
    # Outbound HTTP (partnernet.outbound) may reach loopback: a test switch, honoured only in a
    # TESTING app and never read from the environment.
    "PARTNERNET_OUTBOUND_ALLOW_LOOPBACK": False,
    # Outgoing email (partnernet.mail.settings has the rules): no host = emails stay in the outbox.
    # TLS None: ssl on port 465, starttls when a user is set, else none; port None: 465 / 587 / 25.
    "PARTNERNET_SMTP_HOST": None,
    "PARTNERNET_SMTP_PORT": None,
    "PARTNERNET_SMTP_USER": None,
    "PARTNERNET_SMTP_PASSWORD": None,
    "PARTNERNET_SMTP_TLS": None,
    "PARTNERNET_MAIL_FROM": None,  # None: PartnerNet <partnernet@<host of PARTNERNET_BASE_URL>>
    "PARTNERNET_SMTP_TIMEOUT_S": 30.0,
    # Waits (seconds) before each retry of an email the SMTP server did not take (RQ Retry).
    "PARTNERNET_MAIL_RETRY_S": (60, 300, 1800, 7200, 21600),
    # Fraud flags (partnernet.conversions.flags; a flagged conversion waits for staff, CONTRACT v2 §6).
    # Counts and seconds; 0 turns a rule off.
    "PARTNERNET_FLAG_IP_FLOOD_CLICKS": 20,
    "PARTNERNET_FLAG_IP_FLOOD_CONVERSIONS": 5,
    "PARTNERNET_FLAG_IP_FLOOD_WINDOW_S": 24 * 3600,
    "PARTNERNET_FLAG_FAST_SALE_S": 30,
    "PARTNERNET_FLAG_FAST_LEAD_S": 3,
    "PARTNERNET_FLAG_FAST_EVENT_S": {},  # {event key: seconds}, wins over the two above
    # The agency's account a SEPA payout file pays from (partnernet.payouts.sepa): the debtor's name,
    # IBAN and BIC. Unset: sepa.xml answers 409 sepa_not_configured.
    "PARTNERNET_SEPA_NAME": None,
    "PARTNERNET_SEPA_IBAN": None,
    "PARTNERNET_SEPA_BIC": None,
}

#: Whole-number settings read from the environment as they are (the fraud flag thresholds, the
#: click retention in days).
_INT_SETTINGS = ("PARTNERNET_FLAG_IP_FLOOD_CLICKS", "PARTNERNET_FLAG_IP_FLOOD_CONVERSIONS",
                 "PARTNERNET_FLAG_IP_FLOOD_WINDOW_S", "PARTNERNET_FLAG_FAST_SALE_S",
                 "PARTNERNET_FLAG_FAST_LEAD_S", "PARTNERNET_CLICK_RETENTION_DAYS")


def _event_seconds(text: str) -> dict[str, int]:
    """``"sale=60,install=20"`` -> ``{"sale": 60, "install": 20}`` (PARTNERNET_FLAG_FAST_EVENT_S).
    Raises ValueError for an item that is not ``key=whole seconds``."""
    out: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, seconds = item.partition("=")
        if not sep or not key.strip() or not seconds.strip().isdigit():
            raise ValueError(f"PARTNERNET_FLAG_FAST_EVENT_S: {item!r} is not event=seconds")
        out[key.strip()] = int(seconds)
    return out


def _smtp_from_environment(env) -> dict:
    """PARTNERNET_SMTP_HOST, _PORT (1-65535), _USER, _PASSWORD, _TLS (starttls | ssl | none) and
    PARTNERNET_MAIL_FROM, as set. Raises ValueError for a bad port or TLS mode."""
    out: dict = {}
    for name in ("PARTNERNET_SMTP_HOST", "PARTNERNET_SMTP_USER", "PARTNERNET_MAIL_FROM"):
        if env.get(name, "").strip():
            out[name] = env[name].strip()
    if env.get("PARTNERNET_SMTP_PASSWORD"):
        out["PARTNERNET_SMTP_PASSWORD"] = env["PARTNERNET_SMTP_PASSWORD"]
    if env.get("PARTNERNET_SMTP_PORT", "").strip():
        port = int(env["PARTNERNET_SMTP_PORT"])
        if not 0 < port < 65536:
            raise ValueError("PARTNERNET_SMTP_PORT must be a TCP port (1-65535)")
        out["PARTNERNET_SMTP_PORT"] = port
    if env.get("PARTNERNET_SMTP_TLS", "").strip():
        mode = env["PARTNERNET_SMTP_TLS"].strip().lower()
        if mode not in ("starttls", "ssl", "none"):
            raise ValueError("PARTNERNET_SMTP_TLS must be starttls, ssl or none")
        out["PARTNERNET_SMTP_TLS"] = mode
    return out


def _sepa_from_environment(env) -> dict:
    """PARTNERNET_SEPA_NAME, _IBAN and _BIC as set; the IBAN and BIC compact upper case. Raises
    ValueError for an IBAN or BIC that fails its check (schwifty: IBAN country, length and check
    digits; BIC length and country)."""
    out: dict = {}
    if env.get("PARTNERNET_SEPA_NAME", "").strip():
        out["PARTNERNET_SEPA_NAME"] = env["PARTNERNET_SEPA_NAME"].strip()
    for name, kind in (("PARTNERNET_SEPA_IBAN", "IBAN"), ("PARTNERNET_SEPA_BIC", "BIC")):
        if env.get(name, "").strip():
            import schwifty

            try:
                out[name] = getattr(schwifty, kind)(env[name].strip()).compact
            except ValueError as exc:
                raise ValueError(f"{name} is not a valid {kind}: {exc}") from None
    return out


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
    if env.get("PARTNERNET_CLICK_WRITE_S"):
        out["PARTNERNET_CLICK_WRITE_S"] = float(env["PARTNERNET_CLICK_WRITE_S"])
    if env.get("PARTNERNET_CLICK_ACK"):
        out["PARTNERNET_CLICK_ACK"] = env["PARTNERNET_CLICK_ACK"].strip().lower()
    if env.get("PARTNERNET_LEAN_TRACKING"):
        out["PARTNERNET_LEAN_TRACKING"] = env["PARTNERNET_LEAN_TRACKING"].strip().lower() not in ("0", "false", "no")
    if env.get("PARTNERNET_ENV"):
        out["PARTNERNET_ENV"] = env["PARTNERNET_ENV"].strip().lower()
    if env.get("PARTNERNET_STATE_TTL_S"):
        out["PARTNERNET_STATE_TTL_S"] = float(env["PARTNERNET_STATE_TTL_S"])
    if env.get("PARTNERNET_PARTNER_POSTBACK_BACKOFF_S"):
        out["PARTNERNET_PARTNER_POSTBACK_BACKOFF_S"] = float(env["PARTNERNET_PARTNER_POSTBACK_BACKOFF_S"])
    out.update(_smtp_from_environment(env))
    out.update(_sepa_from_environment(env))
    for name in _INT_SETTINGS:
        if env.get(name):
            value = int(env[name])
            if value < 0:
                raise ValueError(f"{name} must be 0 or more")
            out[name] = value
    if env.get("PARTNERNET_FLAG_FAST_EVENT_S"):
        out["PARTNERNET_FLAG_FAST_EVENT_S"] = _event_seconds(env["PARTNERNET_FLAG_FAST_EVENT_S"])
    if env.get("PARTNERNET_FLAG_LEAD_EVENTS"):
        out["PARTNERNET_FLAG_LEAD_EVENTS"] = [k.strip() for k in env["PARTNERNET_FLAG_LEAD_EVENTS"].split(",")
                                              if k.strip()]
    return out
