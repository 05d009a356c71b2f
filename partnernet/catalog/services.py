"""Catalog use cases: clients, campaigns, partners (CONTRACT §5 staff calls); links are in
:mod:`partnernet.catalog.links`, who may promote what in :mod:`partnernet.catalog.access`.

Every state-changing function here is one use case: it validates its input
(shape and the rules that need the database), writes, and commits once at its
end. Input arrives as plain JSON-like values (strings for money and percents,
ints for counts), exactly as the API receives them, because money can only be
parsed once the currency is known (the client's). Errors raised:

- :class:`~partnernet.errors.ValidationError` (400) with a machine ``code`` and
  the offending ``field`` (``"events[1].payout"`` for nested values);
- :class:`~partnernet.errors.NotFound` (404) for the object the call is about;
- :class:`~partnernet.errors.Forbidden` (403) for a change the caller may not make;
- :class:`~partnernet.errors.Duplicate` (409) for a value that must be unique;
- :class:`~partnernet.errors.InvalidState` (409) for a transition the state forbids.

Money is stored as int minor units of the campaign's currency (the client's);
percents as :class:`~decimal.Decimal` with at most 4 decimals (``Numeric(9, 4)``).
Every change the redirect must see calls
:func:`partnernet.tracking.state.bump_state_version` inside its transaction.

Read helpers (``*_query``) return SQLAlchemy ``Select`` statements ordered by id,
which the API pages through with a keyset cursor.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Select, func, null, select
from sqlalchemy.exc import IntegrityError

from .. import money
from ..errors import Duplicate, Forbidden, InvalidState, NotFound, ValidationError
from ..extensions import db
from ..ids import parse_id_text
from ..models import (
    ATTRIBUTION_MODELS,
    CAMPAIGN_STATUSES,
    PARTNER_KINDS,
    PARTNER_STATUSES,
    Campaign,
    CampaignEvent,
    Client,
    Partner,
    User,
)
from ..payouts.details import check_partner_payout
from ..tracking.state import bump_state_version
from . import audit_states
from .access import VISIBILITIES

MAX_URL = 2048
MAX_NAME = 200
#: Events billed by the tracker, never by a postback (CONTRACT §5 ``POST /campaigns``).
TRACKER_EVENTS = ("click", "impression")
COUPON_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
E164_RE = re.compile(r"\+[1-9][0-9]{6,14}")
EVENT_KEY_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
CLICK_PARAM_RE = re.compile(r"[A-Za-z0-9_.~\-\[\]]{1,64}")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOST_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PERCENT_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,4})?")
_SCHEME_RE = re.compile(r"[a-z][a-z0-9+.-]*")
#: Schemes never accepted as an "app scheme" destination: they run code, read files, or are
#: network protocols other than the web's.
_UNSAFE_SCHEMES = frozenset(
    {
        "javascript",
        "data",
        "vbscript",
        "file",
        "about",
        "blob",
        "filesystem",
        "ftp",
        "ftps",
        "sftp",
        "ssh",
        "telnet",
        "gopher",
        "ws",
        "wss",
        "ldap",
        "smb",
        "view-source",
    }
)

# Partner status changes by staff (CONTRACT §5 ``POST /partners/<id>/approve|reject|suspend``).
PARTNER_ACTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "approve": (("pending", "suspended"), "approved"),
    "reject": (("pending",), "rejected"),
    "suspend": (("approved",), "suspended"),
}

CLIENT_FIELDS = ("name", "currency", "website_url", "require_signature", "ip_allowlist", "timezone")
CAMPAIGN_FIELDS = (
    "client_id",
    "name",
    "destination_url",
    "fallback_url",
    "click_param",
    "deep_link_hosts",
    "attribution_window_days",
    "hold_days",
    "attribution_model",
    "budget",
    "default_event",
    "events",
    "status",
    "currency",
    "visibility",
    "auto_approve_partners",
)
CAMPAIGN_PATCH_FIELDS = (
    "status",
    "budget",
    "fallback_url",
    "events",
    "name",
    "destination_url",
    "click_param",
    "deep_link_hosts",
    "attribution_window_days",
    "hold_days",
    "attribution_model",
    "default_event",
    "visibility",
    "auto_approve_partners",
)
#: What a client's own key may change on its campaigns (CONTRACT §5: pause and resume).
CLIENT_PATCH_FIELDS = ("status",)
EVENT_FIELDS = (
    "key",
    "label",
    "client_fee",
    "client_fee_percent",
    "payout",
    "payout_percent",
    "min_duration_s",
    "min_amount",
    "one_per_click",
    "recurring_months",  # CONTRACT v2 §3
)
PARTNER_FIELDS = ("email", "name", "kind", "recruiter_id", "recruiter_percent", "payout_email",
                  "payout_method", "iban", "bic", "account_holder")  # the last four: CONTRACT v2 §5


def new_postback_credentials() -> tuple[str, str]:
    """A fresh (postback_key, postback_secret) pair: URL-safe random strings (CONTRACT §3)."""
    return "pk_" + secrets.token_urlsafe(18), secrets.token_urlsafe(32)


# --------------------------------------------------------------------------- value checks


def _bad(code: str, message: str, field: str | None) -> ValidationError:
    return ValidationError(message, code=code, field=field)


def check_unknown_fields(data: Mapping[str, Any], allowed: tuple[str, ...], prefix: str = "") -> None:
    """Refuse keys of ``data`` outside ``allowed`` (400 ``unknown_field``): a typo must not pass silently."""
    for name in data:
        if name not in allowed:
            raise _bad("unknown_field", f"unknown field {prefix}{name!r}", f"{prefix}{name}")


def _require(data: Mapping[str, Any], name: str, field: str | None = None) -> Any:
    value = data.get(name)
    if value is None:
        raise _bad("missing_field", f"{field or name} is required", field or name)
    return value


def _string(value: Any, field: str, *, max_len: int = MAX_NAME, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise _bad("invalid", f"{field} must be a string", field)
    value = value.strip()
    if not value and not allow_empty:
        raise _bad("invalid", f"{field} must not be empty", field)
    if len(value) > max_len:
        raise _bad("invalid", f"{field} is longer than {max_len} characters", field)
    return value


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise _bad("invalid", f"{field} must be true or false", field)
    return value


def _int(value: Any, field: str, *, lo: int = 0, hi: int = 10**9) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad("invalid", f"{field} must be a whole number", field)
    if value < lo or value > hi:
        raise _bad("invalid", f"{field} must be between {lo} and {hi}", field)
    return value


def parse_id(value: Any, field: str, *, code: str = "bad_id") -> int:
    """An object id given as a string of digits (or an int): the int, else 400 ``code``.

    At most :data:`partnernet.ids.MAX_ID` (the ids it reads are of 32-bit keys: clients,
    campaigns, partners, links, users); a bigger one is refused like any other bad id."""
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise _bad(code, f"{field} must be an id (a string of digits)", field)
    parsed = parse_id_text(text)
    if parsed is None:
        raise _bad(code, f"{field} must be an id (a string of digits)", field)
    return parsed


def parse_percent_text(value: Any, field: str) -> Decimal:
    """A percent as a decimal string (``"8"``, ``"12.5"``, at most 4 decimals) in [0, 100];
    raises 400 ``bad_percent``."""
    if not isinstance(value, str) or not _PERCENT_RE.fullmatch(value):
        raise _bad("bad_percent", f'{field} must be a decimal string between 0 and 100, e.g. "12.5"', field)
    pct = Decimal(value)
    if pct > 100:
        raise _bad("bad_percent", f"{field} must not exceed 100", field)
    return pct


def parse_money(value: Any, currency: str, field: str, *, allow_zero: bool = True) -> int:
    """A money decimal string in ``currency`` as int minor units (400 ``bad_amount``, CONTRACT §4)."""
    if not isinstance(value, str):
        raise _bad("bad_amount", f'{field} must be a decimal string such as "12.50"', field)
    try:
        return money.parse_amount(value, currency, allow_zero=allow_zero)
    except money.MoneyError as err:
        raise _bad(err.code, f"{field}: {err.message}", field) from None


def check_url(value: Any, field: str, *, allow_app_scheme: bool = True) -> str:
    """An http(s) URL with a host, or (when ``allow_app_scheme``) an app-scheme URL such as
    ``myapp://path`` (never javascript:, data:, file: ...). Macros like ``{click_id}`` may appear.
    Raises 400 ``bad_url``."""
    if not isinstance(value, str) or not value or len(value) > MAX_URL:
        raise _bad("bad_url", f"{field} must be a URL of at most {MAX_URL} characters", field)
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise _bad("bad_url", f"{field} must not contain spaces or control characters", field)
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        raise _bad("bad_url", f"{field} is not a valid URL", field) from None
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if not host:
            raise _bad("bad_url", f"{field} needs a host", field)
        return value
    if (
        allow_app_scheme
        and _SCHEME_RE.fullmatch(scheme)
        and scheme not in _UNSAFE_SCHEMES
        and value[len(scheme) :].startswith("://")
    ):
        return value
    raise _bad(
        "bad_url",
        f"{field} must be an http(s) URL" + (" or an app-scheme URL" if allow_app_scheme else ""),
        field,
    )


def normalize_host(value: Any, field: str) -> str:
    """A host name, stored lower-case without a trailing dot (400 ``bad_host``). No scheme,
    port, path or wildcard; non-ASCII names must be given in their ``xn--`` form."""
    if not isinstance(value, str):
        raise _bad("bad_host", f"{field} must be a host name", field)
    host = value.strip().lower().rstrip(".")
    if len(host) > 253 or not host.isascii() or not HOST_RE.fullmatch(host):
        raise _bad("bad_host", f'{field}: {value!r} is not a host name (e.g. "shop.example.com")', field)
    return host


def deep_link_allowed(url: str, hosts: list[str]) -> bool:
    """CONTRACT §1 allow-list: ``url`` is http or https and its host equals an entry of
    ``hosts`` or is a sub-domain of one (compared lower-case)."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
    except ValueError:
        return False
    if parts.scheme.lower() not in ("http", "https") or not host:
        return False
    return any(host == h or host.endswith("." + h) for h in hosts or [])


def _timezone(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise _bad("unknown_timezone", f"{field} must be an IANA time zone name", field)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise _bad("unknown_timezone", f"{field}: unknown time zone {value!r}", field) from None
    return value


def _ip_allowlist(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise _bad("invalid", f"{field} must be a comma-separated list of IPs or networks", field)
    entries = [e.strip() for e in value.split(",") if e.strip()]
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise _bad("invalid", f"{field}: {entry!r} is not an IP address or network", field) from None
    return ",".join(entries)


# --------------------------------------------------------------------------- clients


def create_client(data: Mapping[str, Any], *, actor_user_id: int | None = None, audited: bool = True) -> Client:
    """Create a client (advertiser) from ``{name, currency, website_url, require_signature?
    (false), ip_allowlist? (""), timezone? ("UTC")}`` with fresh postback credentials, and commit.
    Audited as ``client.create`` by ``actor_user_id`` in the same transaction (``audited=False``:
    the caller records its own row before its commit).

    ``website_url`` is an http(s) URL or ``""``. Raises ValidationError (``missing_field``,
    ``invalid``, ``unknown_currency``, ``bad_url``, ``unknown_timezone``). CONTRACT §5 ``POST /clients``.
    """
    check_unknown_fields(data, CLIENT_FIELDS)
    name = _string(_require(data, "name"), "name")
    currency = _require(data, "currency")
    if not money.is_currency(currency):
        raise _bad("unknown_currency", f"unknown currency code {currency!r}", "currency")
    website_url = data.get("website_url")
    if website_url is None:
        raise _bad("missing_field", 'website_url is required ("" for none)', "website_url")
    if website_url != "":
        website_url = check_url(website_url, "website_url", allow_app_scheme=False)
    key, secret = new_postback_credentials()
    client = Client(
        name=name,
        currency=currency,
        website_url=website_url,
        require_signature=_bool(data.get("require_signature", False), "require_signature"),
        ip_allowlist=_ip_allowlist(data.get("ip_allowlist", ""), "ip_allowlist"),
        timezone=_timezone(data.get("timezone", "UTC"), "timezone"),
        postback_key=key,
        postback_secret=secret,
    )
    db.session.add(client)
    if audited:
        db.session.flush()
        audit_states.record_created(actor_user_id, "client", client)
    db.session.commit()
    return client


def get_client(client_id: int) -> Client:
    """The client ``client_id``; raises NotFound."""
    client = db.session.get(Client, client_id)
    if client is None:
        raise NotFound(f"no client {client_id}")
    return client


def clients_query(*, name: str | None = None, email: str | None = None, only_id: int | None = None) -> Select:
    """Clients ordered by id. ``name``: case-insensitive substring of the name; ``email``: a
    user with that email (compared lower-case) is tied to the client; ``only_id``: just that one
    (a client key's scope)."""
    stmt = select(Client).order_by(Client.id)
    if only_id is not None:
        stmt = stmt.where(Client.id == only_id)
    if name:
        stmt = stmt.where(func.lower(Client.name).contains(name.lower(), autoescape=True))
    if email:
        tied = select(User.client_id).where(User.email == email.strip().lower(), User.client_id.is_not(None))
        stmt = stmt.where(Client.id.in_(tied))
    return stmt


# --------------------------------------------------------------------------- campaigns


def _event_rows(events: Any, currency: str) -> list[dict]:
    """Validate the ``events`` list of a campaign and return column values per event."""
    if not isinstance(events, list) or not events:
        raise _bad(
            "missing_field" if events is None else "invalid", "events must be a non-empty list", "events"
        )
    rows: list[dict] = []
    seen: set[str] = set()
    for i, ev in enumerate(events):
        f = f"events[{i}]"
        if not isinstance(ev, dict):
            raise _bad("invalid", f"{f} must be an object", f)
        check_unknown_fields(ev, EVENT_FIELDS, prefix=f"{f}.")
        key = _require(ev, "key", f"{f}.key")
        if not isinstance(key, str) or not EVENT_KEY_RE.fullmatch(key):
            raise _bad("bad_event_key", f"{f}.key must be 1-64 of A-Z a-z 0-9 _ . -", f"{f}.key")
        if key in seen:
            raise _bad("duplicate_event_key", f"event key {key!r} is given twice", f"{f}.key")
        seen.add(key)
        label = ev.get("label")
        label = key if label is None else _string(label, f"{f}.label", allow_empty=True) or key
        has_fee, has_fee_pct = ev.get("client_fee") is not None, ev.get("client_fee_percent") is not None
        if has_fee == has_fee_pct:
            raise _bad(
                "bad_event_pricing",
                f"{f} needs exactly one of client_fee and client_fee_percent",
                f"{f}.client_fee",
            )
        has_pay, has_pay_pct = ev.get("payout") is not None, ev.get("payout_percent") is not None
        if has_pay == has_pay_pct:
            raise _bad(
                "bad_event_pricing", f"{f} needs exactly one of payout and payout_percent", f"{f}.payout"
            )
        row: dict[str, Any] = {
            "key": key,
            "label": label,
            "client_fee_minor": None,
            "client_fee_percent": None,
            "payout_minor": None,
            "payout_percent": None,
        }
        if has_fee:
            row["client_fee_minor"] = parse_money(ev["client_fee"], currency, f"{f}.client_fee")
        else:
            if key in TRACKER_EVENTS:
                raise _bad(
                    "bad_event_pricing",
                    f"a {key} event has no sale amount: give a fixed client_fee",
                    f"{f}.client_fee_percent",
                )
            row["client_fee_percent"] = parse_percent_text(
                ev["client_fee_percent"], f"{f}.client_fee_percent"
            )
        if has_pay:
            row["payout_minor"] = parse_money(ev["payout"], currency, f"{f}.payout")
            if row["client_fee_minor"] is not None and row["payout_minor"] > row["client_fee_minor"]:
                raise _bad("payout_above_fee", f"{f}.payout is above its client_fee", f"{f}.payout")
        else:
            row["payout_percent"] = parse_percent_text(ev["payout_percent"], f"{f}.payout_percent")
        mds = ev.get("min_duration_s")
        row["min_duration_s"] = (
            None if mds is None else _int(mds, f"{f}.min_duration_s", lo=0, hi=86400 * 365)
        )
        mam = ev.get("min_amount")
        row["min_amount_minor"] = None if mam is None else parse_money(mam, currency, f"{f}.min_amount")
        row["one_per_click"] = _bool(ev.get("one_per_click", False), f"{f}.one_per_click")
        # Recurring commissions (CONTRACT v2 §3): 0 (default) not recurring, null lifetime, else months.
        # null() and not None: the ORM leaves a None out of an INSERT when the column has a default.
        rm = ev.get("recurring_months", 0)
        row["recurring_months"] = null() if rm is None else _int(rm, f"{f}.recurring_months", lo=0, hi=1200)
        rows.append(row)
    return rows


def _deep_link_hosts(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise _bad("invalid", "deep_link_hosts must be a list of host names", "deep_link_hosts")
    out: list[str] = []
    for i, h in enumerate(value):
        host = normalize_host(h, f"deep_link_hosts[{i}]")
        if host not in out:
            out.append(host)
    return out


def _apply_campaign_fields(camp: Campaign, data: Mapping[str, Any], currency: str) -> None:
    """Validate and set the optional/changeable campaign fields present in ``data`` (not events)."""
    if "name" in data:
        camp.name = _string(data["name"], "name")
    if "destination_url" in data:
        camp.destination_url = check_url(data["destination_url"], "destination_url")
    if "fallback_url" in data:
        fb = data["fallback_url"]
        camp.fallback_url = None if fb in (None, "") else check_url(fb, "fallback_url")
    if "click_param" in data:
        cp = data["click_param"]
        if not isinstance(cp, str) or not CLICK_PARAM_RE.fullmatch(cp):
            raise _bad("invalid", "click_param must be 1-64 URL-safe characters", "click_param")
        camp.click_param = cp
    if "deep_link_hosts" in data:
        camp.deep_link_hosts = _deep_link_hosts(
            data["deep_link_hosts"] if data["deep_link_hosts"] is not None else []
        )
    if "attribution_window_days" in data:
        camp.attribution_window_days = _int(
            data["attribution_window_days"], "attribution_window_days", lo=1, hi=3650
        )
    if "hold_days" in data:
        camp.hold_days = _int(data["hold_days"], "hold_days", lo=0, hi=3650)
    if "attribution_model" in data:
        model = data["attribution_model"]
        if model not in ATTRIBUTION_MODELS:
            raise _bad(
                "bad_attribution_model",
                f"attribution_model must be one of {', '.join(ATTRIBUTION_MODELS)}",
                "attribution_model",
            )
        camp.attribution_model = model
    if "budget" in data:
        budget = data["budget"]
        camp.budget_minor = None if budget is None else parse_money(budget, currency, "budget")
    if "status" in data:
        status = data["status"]
        if status not in CAMPAIGN_STATUSES:
            raise _bad("bad_status", f"status must be one of {', '.join(CAMPAIGN_STATUSES)}", "status")
        camp.status = status
    if "visibility" in data:
        if data["visibility"] not in VISIBILITIES:
            raise _bad("bad_visibility", f"visibility must be one of {', '.join(VISIBILITIES)}", "visibility")
        camp.visibility = data["visibility"]
    if "auto_approve_partners" in data:
        camp.auto_approve_partners = _bool(data["auto_approve_partners"], "auto_approve_partners")


def create_campaign(data: Mapping[str, Any], *, actor_user_id: int | None = None,
                    audited: bool = True) -> Campaign:
    """Create a campaign of an existing client from the CONTRACT §5 ``POST /campaigns`` body and commit.
    Audited as ``campaign.create`` (its whole state) by ``actor_user_id`` in the same transaction
    (``audited=False``: the caller records its own row).

    Body: ``{client_id, name, destination_url, fallback_url?, click_param? ("click_id"),
    deep_link_hosts? ([]), attribution_window_days? (30), hold_days? (30), attribution_model?
    ("last_click"), budget? (decimal string or null), default_event, events: [...], status?
    ("active"), currency? (must equal the client's), visibility? ("public" | "approval" |
    "invite_only", default "public": CONTRACT §5 (v2), see :mod:`partnernet.catalog.access`),
    auto_approve_partners? (false: applications to an "approval" campaign wait for staff)}``.
    Each event: ``{key, label?, client_fee |
    client_fee_percent, payout | payout_percent, min_duration_s?, min_amount?, one_per_click?}``;
    money as decimal strings in the client's currency, percents as decimal strings.
    The campaign takes the client's currency. Raises ValidationError (``unknown_client``,
    ``bad_url``, ``bad_host``, ``bad_amount``, ``bad_percent``, ``bad_event_pricing``,
    ``payout_above_fee``, ``duplicate_event_key``, ``unknown_default_event``, ``bad_visibility``, ...).
    """
    check_unknown_fields(data, CAMPAIGN_FIELDS)
    client_id = parse_id(_require(data, "client_id"), "client_id", code="unknown_client")
    client = db.session.get(Client, client_id)
    if client is None:
        raise _bad("unknown_client", f"no client {client_id}", "client_id")
    currency = client.currency
    if data.get("currency") is not None and data["currency"] != currency:
        raise _bad("currency_mismatch", f"a campaign takes its client's currency ({currency})", "currency")
    camp = Campaign(
        client_id=client.id,
        currency=currency,
        click_param="click_id",
        deep_link_hosts=[],
        attribution_window_days=30,
        hold_days=30,
        attribution_model="last_click",
        status="active",
        spent_minor=0,
        visibility="public",
        auto_approve_partners=False,
    )
    _require(data, "name")
    _require(data, "destination_url")
    _apply_campaign_fields(camp, data, currency)
    rows = _event_rows(data.get("events"), currency)
    default_event = _require(data, "default_event")
    if not isinstance(default_event, str) or default_event not in {r["key"] for r in rows}:
        raise _bad(
            "unknown_default_event", "default_event must be the key of one of the events", "default_event"
        )
    camp.default_event = default_event
    for row in rows:
        camp.events.append(CampaignEvent(**row))
    db.session.add(camp)
    if audited:
        db.session.flush()
        audit_states.record_created(actor_user_id, "campaign", camp)
    db.session.commit()
    return camp


def get_campaign(campaign_id: int, *, client_id: int | None = None) -> Campaign:
    """The campaign ``campaign_id``; with ``client_id`` it must be that client's. Raises NotFound."""
    camp = db.session.get(Campaign, campaign_id)
    if camp is None or (client_id is not None and camp.client_id != client_id):
        raise NotFound(f"no campaign {campaign_id}")
    return camp


def campaigns_query(*, client_id: int | None = None, status: str | None = None) -> Select:
    """Campaigns ordered by id, optionally of one client and/or one status (400 ``bad_status``)."""
    stmt = select(Campaign).order_by(Campaign.id)
    if client_id is not None:
        stmt = stmt.where(Campaign.client_id == client_id)
    if status is not None:
        if status not in CAMPAIGN_STATUSES:
            raise _bad("bad_status", f"status must be one of {', '.join(CAMPAIGN_STATUSES)}", "status")
        stmt = stmt.where(Campaign.status == status)
    return stmt


def update_campaign(
    campaign_id: int, changes: Mapping[str, Any], *, as_client_id: int | None = None,
    actor_user_id: int | None = None, audited: bool = True,
) -> Campaign:
    """Change a campaign (CONTRACT §5 ``PATCH /campaigns/<id>``) and commit.

    ``changes`` holds any of ``status`` ("active" | "paused"), ``budget`` (decimal string or null),
    ``fallback_url`` (URL or null), ``events`` (the full new event list: events are matched by
    key, updated in place, added, or removed when absent; conversions already recorded keep
    their fixed fee, CONTRACT §4), and also ``name``, ``destination_url``, ``click_param``,
    ``deep_link_hosts``, ``attribution_window_days``, ``hold_days``, ``attribution_model``,
    ``default_event``, ``visibility``, ``auto_approve_partners`` (CONTRACT §5 (v2): access
    already granted stays). ``as_client_id``: the call comes from that client's key: the campaign
    must be its own (NotFound otherwise) and only ``status`` may change (Forbidden otherwise).

    Bumps the redirect state version in the same transaction, so the next click sees the change.
    Audited by ``actor_user_id`` in the same transaction, with the fields that changed:
    ``campaign.pause`` / ``campaign.resume`` when only the status changed, else ``campaign.update``;
    no row when nothing changed (``audited=False``: the caller records its own row).
    Raises NotFound, Forbidden, ValidationError (as :func:`create_campaign`).
    """
    check_unknown_fields(changes, CAMPAIGN_PATCH_FIELDS)
    camp = get_campaign(campaign_id, client_id=as_client_id)
    before = audit_states.campaign_state(camp) if audited else None
    if as_client_id is not None:
        for name in changes:
            if name not in CLIENT_PATCH_FIELDS:
                raise Forbidden(
                    f"a client may only pause and resume its campaigns, not change {name}",
                    code="forbidden",
                    field=name,
                )
    for name in (
        "name",
        "destination_url",
        "click_param",
        "attribution_window_days",
        "hold_days",
        "attribution_model",
        "status",
        "default_event",
        "events",
    ):
        if name in changes and changes[name] is None:
            raise _bad("invalid", f"{name} cannot be null", name)
    _apply_campaign_fields(camp, changes, camp.currency)
    if "events" in changes:
        rows = _event_rows(changes["events"], camp.currency)
        by_key = {ev.key: ev for ev in camp.events}
        new_keys = [r["key"] for r in rows]
        for ev in list(camp.events):
            if ev.key not in new_keys:
                camp.events.remove(ev)
        db.session.flush()  # deletes first, so a re-added key never meets its old row
        for row in rows:
            ev = by_key.get(row["key"])
            if ev is not None and ev in camp.events:
                for col, value in row.items():
                    setattr(ev, col, value)
            else:
                camp.events.append(CampaignEvent(**row))
    keys = {ev.key for ev in camp.events}
    if "default_event" in changes:
        if changes["default_event"] not in keys:
            raise _bad(
                "unknown_default_event", "default_event must be the key of one of the events", "default_event"
            )
        camp.default_event = changes["default_event"]
    elif camp.default_event not in keys:
        raise _bad(
            "unknown_default_event",
            f"the default event {camp.default_event!r} is not in the new events: give default_event too",
            "default_event",
        )
    if audited:
        db.session.flush()
        audit_states.record_changes(actor_user_id, "campaign.update", "campaign", camp.id, before,
                                    audit_states.campaign_state(camp))
    bump_state_version()
    db.session.commit()
    return camp


# --------------------------------------------------------------------------- partners


def create_partner(data: Mapping[str, Any], *, actor_user_id: int | None = None) -> Partner:
    """Create a partner, status ``pending``, from ``{email, name, kind ("affiliate" | "influencer"),
    recruiter_id?, recruiter_percent?, payout_email?, payout_method?, iban?, bic?, account_holder?}``
    and commit (CONTRACT §5 ``POST /partners``; the payout fields: v2, checked by
    :func:`partnernet.payouts.details.check_partner_payout`).

    The email is stored lower-case and is unique (409 ``duplicate_email``). A recruiter
    (sub-affiliate tier, CONTRACT §4) needs both ``recruiter_id`` (an existing partner, 400
    ``unknown_recruiter``) and ``recruiter_percent`` (decimal string 0-100). Raises
    ValidationError, Duplicate. Audited as ``partner.create`` by ``actor_user_id`` in the same
    transaction.
    """
    check_unknown_fields(data, PARTNER_FIELDS)
    email = _string(_require(data, "email"), "email", max_len=254).lower()
    if not EMAIL_RE.fullmatch(email):
        raise _bad("bad_email", "email is not a valid address", "email")
    name = _string(_require(data, "name"), "name")
    kind = _require(data, "kind")
    if kind not in PARTNER_KINDS:
        raise _bad("bad_kind", f"kind must be one of {', '.join(PARTNER_KINDS)}", "kind")
    payout_email = data.get("payout_email")
    if payout_email is not None:
        payout_email = _string(payout_email, "payout_email", max_len=254).lower()
        if not EMAIL_RE.fullmatch(payout_email):
            raise _bad("bad_email", "payout_email is not a valid address", "payout_email")
    payout = check_partner_payout(data)  # 400 bad_iban, bad_bic, bad_payout_method, ...
    recruiter_id = data.get("recruiter_id")
    recruiter_percent = data.get("recruiter_percent")
    if (recruiter_id is None) != (recruiter_percent is None):
        raise _bad(
            "missing_field",
            "recruiter_id and recruiter_percent go together",
            "recruiter_percent" if recruiter_percent is None else "recruiter_id",
        )
    if recruiter_id is not None:
        recruiter_id = parse_id(recruiter_id, "recruiter_id", code="unknown_recruiter")
        if db.session.get(Partner, recruiter_id) is None:
            raise _bad("unknown_recruiter", f"no partner {recruiter_id}", "recruiter_id")
        recruiter_percent = parse_percent_text(recruiter_percent, "recruiter_percent")
    if db.session.scalar(select(Partner.id).where(Partner.email == email)) is not None:
        raise Duplicate(f"a partner with email {email} exists", code="duplicate_email", field="email")
    partner = Partner(
        email=email,
        name=name,
        kind=kind,
        status="pending",
        recruiter_id=recruiter_id,
        recruiter_percent=recruiter_percent,
        payout_email=payout_email,
        **payout,
    )
    db.session.add(partner)
    try:
        db.session.flush()
        audit_states.record_created(actor_user_id, "partner", partner)
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Duplicate(
            f"a partner with email {email} exists", code="duplicate_email", field="email"
        ) from None
    return partner


def get_partner(partner_id: int, *, only_id: int | None = None) -> Partner:
    """The partner ``partner_id``; with ``only_id`` it must be that partner. Raises NotFound."""
    partner = db.session.get(Partner, partner_id)
    if partner is None or (only_id is not None and partner.id != only_id):
        raise NotFound(f"no partner {partner_id}")
    return partner


def partners_query(
    *,
    email: str | None = None,
    status: str | None = None,
    kind: str | None = None,
    only_id: int | None = None,
) -> Select:
    """Partners ordered by id; filters: ``email`` (exact, lower-case), ``status``, ``kind``
    (400 ``bad_status`` / ``bad_kind`` for unknown values), ``only_id`` (a partner key's scope)."""
    stmt = select(Partner).order_by(Partner.id)
    if only_id is not None:
        stmt = stmt.where(Partner.id == only_id)
    if email:
        stmt = stmt.where(Partner.email == email.strip().lower())
    if status is not None:
        if status not in PARTNER_STATUSES:
            raise _bad("bad_status", f"status must be one of {', '.join(PARTNER_STATUSES)}", "status")
        stmt = stmt.where(Partner.status == status)
    if kind is not None:
        if kind not in PARTNER_KINDS:
            raise _bad("bad_kind", f"kind must be one of {', '.join(PARTNER_KINDS)}", "kind")
        stmt = stmt.where(Partner.kind == kind)
    return stmt


def set_partner_status(partner_id: int, action: str, user_id: int, reason: str | None = None) -> Partner:
    """Staff ``action`` on a partner and commit (CONTRACT §5): ``approve`` (pending or suspended
    → approved), ``reject`` (pending → rejected), ``suspend`` (approved → suspended). The partner
    is emailed the news after commit, with ``reason`` when given
    (:func:`partnernet.mail.notify.partner_status_changed`).

    ``user_id`` is the acting staff user. Bumps the redirect state version (a suspended
    partner's links go to the fallback on the next click). Raises NotFound, InvalidState (409)
    for any other change, ValueError for an unknown action.
    """
    if action not in PARTNER_ACTIONS:
        raise ValueError(f"unknown partner action {action!r}")
    sources, target = PARTNER_ACTIONS[action]
    stmt = select(Partner).where(Partner.id == partner_id)
    if db.session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    partner = db.session.scalar(stmt.execution_options(populate_existing=True))
    if partner is None:
        raise NotFound(f"no partner {partner_id}")
    if partner.status not in sources:
        raise InvalidState(f"cannot {action} a partner that is {partner.status}")
    from ..audit import record as audit_record
    from ..mail.notify import partner_status_changed

    audit_record(user_id, f"partner.{action}", "partner", partner.id, {"status": partner.status},
                 {"status": target})
    before, partner.status = partner.status, target
    partner_status_changed(partner, before, reason)  # the partner's email, sent after commit
    bump_state_version()
    db.session.commit()
    return partner


def percent_text(value: Decimal | None) -> str | None:
    """A stored percent as its shortest decimal string (``Decimal("8.0000")`` → ``"8"``), None stays None."""
    if value is None:
        return None
    try:
        d = Decimal(value).normalize()
    except InvalidOperation:  # pragma: no cover - stored values are finite
        return str(value)
    return format(d, "f")
