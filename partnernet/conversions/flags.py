"""Fraud flags of a conversion (CONTRACT v2 §5 ``GET /conversions`` ``flags``; §6 "flagged
ones excepted" from the scheduled approval).

Flags are decided once, when the conversion is recorded
(:func:`partnernet.conversions.services.record_conversion` calls :func:`flag_columns`), and
stored on the row: ``Conversion.flags`` (a list of codes, in :data:`FLAG_CODES` order) and
``Conversion.flag_evidence`` (``{code: short text}`` for staff). Conversions recorded before
the columns existed have no flags. A flagged conversion is never approved automatically
(:func:`partnernet.conversions.review.approve_matured` skips it): it waits for staff, who may
approve or reject it. A client's own ``status=approved`` postback is honoured (CONTRACT §3
lists pending → approved by postback; the client is the one paying), flags or not.

The codes:

- ``self_referral``: the converting click came from the IP of the partner's own last sign-in
  (a partner user's ``last_login_ip``, kept at sign-in by :func:`partnernet.auth.services.attempt_login`), or the postback's
  customer ID equals the partner's email, payout email or a partner user's email;
- ``ip_flood``: the converting click's IP made at least ``PARTNERNET_FLAG_IP_FLOOD_CLICKS``
  clicks on the campaign, or its clicks carry at least ``PARTNERNET_FLAG_IP_FLOOD_CONVERSIONS``
  conversions (this one included, rejected ones left out), in the
  ``PARTNERNET_FLAG_IP_FLOOD_WINDOW_S`` seconds before the conversion;
- ``fast_conversion``: the conversion came less than the event's threshold after its click
  (:func:`fast_threshold_s`: a sale is judged on ``PARTNERNET_FLAG_FAST_SALE_S``, a lead or
  sign-up on the shorter ``PARTNERNET_FLAG_FAST_LEAD_S``, and ``PARTNERNET_FLAG_FAST_EVENT_S``
  sets seconds per event key);
- ``non_navigation`` (listed by the contract): recorded on the click by the tracker; a
  conversion on such a click is rejected ``bot_click``, so it is never computed here.

What is not judged: rejected and test conversions, and the tracker's own ``click`` and
``impression`` conversions (no flags). A click still in the click buffer (written within about a
second) has no row yet: its IP facts are unknown, and only ``fast_conversion`` can apply.

Cost on the postback path: :func:`evaluate` is pure; :func:`gather_facts` is one statement of
indexed lookups (the click by its unique ID, the campaign's clicks by IP in the window through
``ix_clicks_campaign_ip_created``, each count stopped at its threshold, the partner's users by
``partner_id``), and none for a conversion without click and customer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, exists, func, or_, select

from ..extensions import db
from ..models import Click, Conversion, Partner, User

FLAG_CODES = ("self_referral", "ip_flood", "fast_conversion", "non_navigation")
FLAG_LABELS = {
    "self_referral": "self-referral",
    "ip_flood": "many clicks or conversions from one IP",
    "fast_conversion": "converted too soon after the click",
    "non_navigation": "non-navigation click",
}
TRACKER_EVENTS = ("click", "impression")
#: Event keys judged as leads (a form filled in seconds after a click is normal).
DEFAULT_LEAD_EVENTS = frozenset({
    "lead", "signup", "sign_up", "registration", "register", "subscribe", "subscription", "optin",
    "opt_in", "newsletter", "form", "quote", "contact", "trial", "download",
})


@dataclass(frozen=True)
class FlagSettings:
    """Thresholds of the flags (seconds and counts; ``0`` turns a rule off), from the settings
    ``PARTNERNET_FLAG_*`` (:func:`partnernet.config.from_environment`)."""

    ip_flood_clicks: int = 20
    ip_flood_conversions: int = 5
    ip_flood_window_s: int = 24 * 3600
    fast_sale_s: int = 30
    fast_lead_s: int = 3
    lead_events: frozenset[str] = DEFAULT_LEAD_EVENTS
    fast_event_s: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FlagSettings:
        """The settings in ``config`` (a Flask config), defaults for those not set."""
        d = cls()
        return cls(
            ip_flood_clicks=int(config.get("PARTNERNET_FLAG_IP_FLOOD_CLICKS", d.ip_flood_clicks)),
            ip_flood_conversions=int(config.get("PARTNERNET_FLAG_IP_FLOOD_CONVERSIONS", d.ip_flood_conversions)),
            ip_flood_window_s=int(config.get("PARTNERNET_FLAG_IP_FLOOD_WINDOW_S", d.ip_flood_window_s)),
            fast_sale_s=int(config.get("PARTNERNET_FLAG_FAST_SALE_S", d.fast_sale_s)),
            fast_lead_s=int(config.get("PARTNERNET_FLAG_FAST_LEAD_S", d.fast_lead_s)),
            lead_events=frozenset(config.get("PARTNERNET_FLAG_LEAD_EVENTS", d.lead_events)),
            fast_event_s=dict(config.get("PARTNERNET_FLAG_FAST_EVENT_S") or {}),
        )


@dataclass(frozen=True)
class Facts:
    """What the flags are decided on (no database object): the event, the seconds from click to
    conversion (None without a click), the converting click's IP (None when unknown), the
    campaign's clicks from that IP in the window and the conversions on them before this one
    (None when unknown), whether that IP is a partner user's last sign-in IP, and whether the
    customer ID is one of the partner's emails."""

    event_key: str
    percent_of_sale: bool = False
    click_age_s: float | None = None
    click_ip: str | None = None
    ip_clicks: int | None = None
    ip_conversions: int | None = None
    ip_is_partner_login: bool = False
    customer_is_partner: bool = False


def fast_threshold_s(event_key: str, percent_of_sale: bool, settings: FlagSettings) -> int:
    """Seconds under which a conversion after its click is ``fast_conversion``: the event's own
    setting (``PARTNERNET_FLAG_FAST_EVENT_S``), else the lead threshold for a fixed-fee event
    whose key is a lead kind (:data:`DEFAULT_LEAD_EVENTS` or ``PARTNERNET_FLAG_LEAD_EVENTS``),
    else the sale threshold (sales, percent-of-sale events, installs, calls, anything else)."""
    if event_key in settings.fast_event_s:
        return int(settings.fast_event_s[event_key])
    if not percent_of_sale and event_key in settings.lead_events:
        return settings.fast_lead_s
    return settings.fast_sale_s


def evaluate(facts: Facts, settings: FlagSettings) -> dict[str, str]:
    """The flags that ``facts`` raise: ``{code: evidence}`` in :data:`FLAG_CODES` order, the
    evidence a short text with the figures (pure; the rules are in the module docstring)."""
    out: dict[str, str] = {}
    if facts.ip_is_partner_login and facts.click_ip:
        out["self_referral"] = f"click from {facts.click_ip}, the partner's own last sign-in IP"
    elif facts.customer_is_partner:
        out["self_referral"] = "the customer ID is the partner's own email"
    hours = settings.ip_flood_window_s / 3600
    window = f"{hours:g} h" if hours >= 1 else f"{settings.ip_flood_window_s} s"
    if facts.click_ip and facts.ip_clicks is not None and 0 < settings.ip_flood_clicks <= facts.ip_clicks:
        out["ip_flood"] = (f"{facts.ip_clicks} clicks from {facts.click_ip} on this campaign in {window} "
                           f"(limit {settings.ip_flood_clicks})")
    elif (facts.click_ip and facts.ip_conversions is not None
          and 0 < settings.ip_flood_conversions <= facts.ip_conversions + 1):
        out["ip_flood"] = (f"{facts.ip_conversions + 1} conversions on clicks from {facts.click_ip} in {window} "
                           f"(limit {settings.ip_flood_conversions})")
    limit = fast_threshold_s(facts.event_key, facts.percent_of_sale, settings)
    if facts.click_age_s is not None and limit > 0 and facts.click_age_s < limit:
        out["fast_conversion"] = f"{facts.event_key} {int(facts.click_age_s)} s after the click (under {limit} s)"
    return out


# --------------------------------------------------------------------------- the facts (queries)

_K = Click.__table__
_KC = _K.alias("flood_click")
_V = Conversion.__table__
_CLICK_IP = select(_K.c.ip).where(_K.c.click_id == bindparam("click_id")).scalar_subquery()


def _capped_count(stmt, cap_name: str):
    """``count(*)`` of ``stmt`` stopped at the threshold bound as ``cap_name`` (reads at most that many rows)."""
    return select(func.count()).select_from(stmt.limit(bindparam(cap_name)).subquery()).scalar_subquery()


def _partner_emails(customer):
    """True when ``customer`` (lower-cased) is the partner's email or payout email or one of its users' emails."""
    return or_(
        exists().where(Partner.id == bindparam("partner_id"),
                       or_(func.lower(Partner.email) == customer, func.lower(Partner.payout_email) == customer)),
        exists().where(User.partner_id == bindparam("partner_id"), User.email == customer),
    )


_IN_WINDOW = (_KC.c.campaign_id == bindparam("campaign_id"), _KC.c.ip == _CLICK_IP,
              _KC.c.created_at > bindparam("since"), _KC.c.created_at <= bindparam("now"))
_CLICK_FACTS = (
    _CLICK_IP.label("ip"),
    _capped_count(select(_KC.c.id).where(*_IN_WINDOW), "click_cap").label("ip_clicks"),
    _capped_count(select(_V.c.id).select_from(_KC.join(_V, _V.c.click_id == _KC.c.click_id))
                  .where(*_IN_WINDOW, _V.c.campaign_id == bindparam("campaign_id"),
                         _V.c.status != "rejected"),
                  "conversion_cap").label("ip_conversions"),
    exists().where(User.partner_id == bindparam("partner_id"), User.last_login_ip == _CLICK_IP).label("login_ip"),
)
#: One statement: the click's IP, the capped counts, the sign-in IP match (and the customer match).
_FACTS = {False: select(*_CLICK_FACTS),
          True: select(*_CLICK_FACTS, _partner_emails(bindparam("customer")).label("customer_is_partner"))}
_CUSTOMER_ONLY = select(_partner_emails(bindparam("customer")))


def facts_statement(values: Mapping[str, Any]):
    """The statement :func:`gather_facts` runs for ``values`` (None when it runs none: no click ID
    and no customer ID), with its bound parameters named as in :func:`facts_params`. The postback's
    fast path (:mod:`partnernet.postbacks.fastpath`) embeds the same statement in its own."""
    customer = (values.get("customer_id") or "").strip().lower() or None
    if not values.get("click_id"):
        return _CUSTOMER_ONLY if customer is not None else None
    return _FACTS[customer is not None]


def facts_params(values: Mapping[str, Any], settings: FlagSettings) -> dict[str, Any]:
    """The bound parameters of :func:`facts_statement` for ``values`` (see :func:`gather_facts`):
    ids, the click ID, the lower-cased customer ID, the window (aware UTC datetimes) and the caps."""
    now: datetime = values["created_at"]
    return {
        "click_id": values.get("click_id"), "campaign_id": values["campaign_id"], "partner_id": values["partner_id"],
        "since": now - timedelta(seconds=settings.ip_flood_window_s), "now": now,
        "click_cap": max(settings.ip_flood_clicks, 1), "conversion_cap": max(settings.ip_flood_conversions, 1),
        "customer": (values.get("customer_id") or "").strip().lower() or None,
    }


def facts_from_row(values: Mapping[str, Any], event: Any, row) -> Facts:
    """The :class:`Facts` of a conversion about to be recorded, from ``row``: the one row of
    :func:`facts_statement` (positional: ``ip, ip_clicks, ip_conversions, login_ip`` and, with a
    customer ID, ``customer_is_partner``; for the customer-only statement, its one column), or
    None when no statement ran. Pure."""
    now: datetime = values["created_at"]
    click_at = values.get("click_at")
    base = Facts(event_key=event.key, percent_of_sale=event.client_fee_percent is not None,
                 click_age_s=max(0.0, (now - click_at).total_seconds()) if click_at is not None else None)
    if row is None:
        return base
    customer = (values.get("customer_id") or "").strip().lower() or None
    if not values.get("click_id"):
        return replace(base, customer_is_partner=bool(row[0]))
    own_customer = customer is not None and bool(row[4])
    ip, ip_clicks, ip_conversions, login_ip = row[0], row[1], row[2], row[3]
    if ip is None:
        return replace(base, customer_is_partner=own_customer)
    return replace(base, click_ip=ip, ip_clicks=int(ip_clicks), ip_conversions=int(ip_conversions),
                   ip_is_partner_login=bool(login_ip), customer_is_partner=own_customer)


def gather_facts(values: Mapping[str, Any], event: Any, settings: FlagSettings) -> Facts:
    """The :class:`Facts` of a conversion about to be recorded. ``values``: the new row's columns
    as :func:`~partnernet.conversions.services.record_conversion` builds them (``campaign_id``,
    ``partner_id``, ``click_id``, ``click_at``, ``created_at``, ``event_key``; ``customer_id``
    when the postback carried one); ``event``: the event terms (``key``, ``client_fee_percent``).
    At most one statement; none without a click ID and a customer ID."""
    stmt = facts_statement(values)
    row = None
    if stmt is not None:
        row = db.session.connection().execute(stmt, facts_params(values, settings)).one()
    return facts_from_row(values, event, row)


def flag_columns(values: Mapping[str, Any], event: Any, *, status: str, reason: str | None,
                 is_test: bool = False) -> dict[str, Any]:
    """The ``flags`` and ``flag_evidence`` columns of a conversion about to be recorded
    (``values`` and ``event`` as for :func:`gather_facts`; ``status`` the posted status,
    ``reason`` the business-rule rejection found so far). Empty for a test conversion, one
    already rejected or posted ``rejected``/``reversed``, and the tracker's ``click`` and
    ``impression`` events. Settings from the current app's config. Raises nothing of its own."""
    from flask import current_app

    if is_test or reason is not None or status not in ("pending", "approved") or event.key in TRACKER_EVENTS:
        return {"flags": [], "flag_evidence": {}}
    settings = FlagSettings.from_config(current_app.config)
    found = evaluate(gather_facts(values, event, settings), settings)
    return {"flags": list(found), "flag_evidence": found}


def is_flagged(conv: Conversion) -> bool:
    """True when ``conv`` carries a fraud flag (it then waits for staff: CONTRACT v2 §6)."""
    return bool(conv.flags)
