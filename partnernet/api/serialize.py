"""JSON shapes of the API's objects (CONTRACT §5).

IDs travel as strings, timestamps as ISO 8601 UTC (``"2025-03-11T10:00:00Z"``),
money as decimal strings with exactly the currency's minor digits
(:func:`partnernet.money.format_minor`), percents as decimal strings.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import current_app

from ..catalog.services import percent_text
from ..models import Campaign, CampaignEvent, Client, Conversion, Link, Partner, PayoutBatch
from ..money import format_minor
from ..reporting import visibility
from ..reporting.services import ReportRow


def sid(value: int | None) -> str | None:
    """An id as a string (None stays None)."""
    return None if value is None else str(value)


def ts(value: datetime | None) -> str | None:
    """An aware datetime as ISO 8601 UTC with a ``Z`` (whole seconds), None stays None."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def amount(minor: int | None, currency: str) -> str | None:
    """Minor units as a money string of ``currency`` (None stays None)."""
    return None if minor is None else format_minor(int(minor), currency)


def client(c: Client) -> dict[str, Any]:
    """``{id, name, currency, website_url, postback_key, postback_secret, require_signature,
    ip_allowlist, timezone, created_at}``."""
    return {
        "id": sid(c.id),
        "name": c.name,
        "currency": c.currency,
        "website_url": c.website_url or "",
        "postback_key": c.postback_key,
        "postback_secret": c.postback_secret,
        "require_signature": bool(c.require_signature),
        "ip_allowlist": c.ip_allowlist or "",
        "timezone": c.timezone or "UTC",
        "created_at": ts(c.created_at),
    }


def event(e: CampaignEvent, currency: str) -> dict[str, Any]:
    """One campaign event with its pricing (money in the campaign's currency)."""
    return {
        "key": e.key,
        "label": e.label or e.key,
        "client_fee": amount(e.client_fee_minor, currency),
        "client_fee_percent": percent_text(e.client_fee_percent),
        "payout": amount(e.payout_minor, currency),
        "payout_percent": percent_text(e.payout_percent),
        "min_duration_s": e.min_duration_s,
        "min_amount": amount(e.min_amount_minor, currency),
        "one_per_click": bool(e.one_per_click),
        "recurring_months": e.recurring_months,  # CONTRACT v2 §3: 0 not recurring, null lifetime
    }


def campaign(c: Campaign) -> dict[str, Any]:
    """The campaign with every field of ``POST /campaigns``, plus ``status``, ``spent`` (client
    fees of its conversions that are neither rejected nor reversed), ``currency`` and times."""
    return {
        "id": sid(c.id),
        "client_id": sid(c.client_id),
        "name": c.name,
        "status": c.status,
        "currency": c.currency,
        "destination_url": c.destination_url,
        "fallback_url": c.fallback_url,
        "click_param": c.click_param,
        "deep_link_hosts": list(c.deep_link_hosts or []),
        "attribution_window_days": c.attribution_window_days,
        "hold_days": c.hold_days,
        "attribution_model": c.attribution_model,
        "budget": amount(c.budget_minor, c.currency),
        "spent": amount(c.spent_minor or 0, c.currency),
        "default_event": c.default_event,
        "events": [event(e, c.currency) for e in c.events],
        "visibility": c.visibility or "public",
        "auto_approve_partners": bool(c.auto_approve_partners),
        "created_at": ts(c.created_at),
        "updated_at": ts(c.updated_at),
    }


def partner(p: Partner) -> dict[str, Any]:
    """``{id, email, name, kind, status, recruiter_id, recruiter_percent, payout_email, payout_method,
    iban, bic, account_holder, created_at, updated_at}``. The payout details (CONTRACT v2 §5) are for
    staff and the partner itself: only those keys ever read a partner (``GET /partners`` is scoped
    to itself for a partner key, 403 for a client key)."""
    return {
        "id": sid(p.id),
        "email": p.email,
        "name": p.name,
        "kind": p.kind,
        "status": p.status,
        "recruiter_id": sid(p.recruiter_id),
        "recruiter_percent": percent_text(p.recruiter_percent),
        "payout_email": p.payout_email,
        "payout_method": p.payout_method or "paypal",
        "iban": p.iban,
        "bic": p.bic,
        "account_holder": p.account_holder,
        "created_at": ts(p.created_at),
        "updated_at": ts(p.updated_at),
    }


def link(lk: Link) -> dict[str, Any]:
    """``{id, token, url, impression_url, partner_id, campaign_id, channel, deep_link, coupon_code,
    tracking_number, created_at}``; ``url`` = ``PARTNERNET_BASE_URL`` + ``/c/`` + token."""
    token = current_app.extensions["partnernet_link_signer"].dumps(lk.id)
    base = (current_app.config.get("PARTNERNET_BASE_URL") or "").rstrip("/")
    return {
        "id": sid(lk.id),
        "token": token,
        "url": f"{base}/c/{token}",
        "impression_url": f"{base}/i/{token}",
        "partner_id": sid(lk.partner_id),
        "campaign_id": sid(lk.campaign_id),
        "channel": lk.channel,
        "deep_link": lk.deep_link,
        "coupon_code": lk.coupon_code,
        "tracking_number": lk.tracking_number,
        "created_at": ts(lk.created_at),
    }


def conversion(c: Conversion, *, only_partner_id: int | None = None) -> dict[str, Any]:
    """A conversion (CONTRACT §5 ``GET /conversions`` item). ``splits`` lists the split lines
    ``{party, role, amount, rule}`` (empty until the split job has run, and for rejected ones;
    ``rule`` names the payout rule that applied, issue 6);
    ``only_partner_id`` (a partner key, CONTRACT v2 §5) keeps only that partner's own lines, with
    their rule as :func:`partnernet.reporting.visibility.partner_rule_text` shows it, and leaves
    ``client_fee`` out: a partner never sees the client fee, the margin or another partner's
    amounts (the sale ``amount`` stays)."""
    lines = c.splits or []
    rule = _stored_rule
    if only_partner_id is not None:
        lines = visibility.own_lines(lines, only_partner_id)
        rule = _partner_rule
    out = {
        "id": sid(c.id),
        "campaign_id": sid(c.campaign_id),
        "partner_id": sid(c.partner_id),
        "link_id": sid(c.link_id),
        "event": c.event_key,
        "txn_id": c.txn_id,
        "click_id": c.click_id,
        "customer_id": c.customer_id,  # CONTRACT v2 §5: the postback's customer_id, null when none
        "status": c.status,
        "reason": c.reason,
        "amount": amount(c.amount_minor, c.currency),
        "client_fee": amount(c.client_fee_minor or 0, c.currency),
        "currency": c.currency,
        "duration_s": c.duration_s,
        "created_at": ts(c.created_at),
        "hold_until": ts(c.hold_until),
        "approved_at": ts(c.approved_at),
        "rejected_at": ts(c.rejected_at),
        "reversed_at": ts(c.reversed_at),
        "flags": list(c.flags or []),  # CONTRACT v2 §5: fraud flags fixed at recording (conversions.flags)
        "splits": [
            {"party": s.party, "role": s.role, "amount": amount(s.amount_minor, c.currency), "rule": rule(s)}
            for s in lines
        ],
    }
    if only_partner_id is not None:
        del out["client_fee"]
    return out


def _stored_rule(line) -> str | None:
    return line.rule


def _partner_rule(line) -> str | None:
    return visibility.partner_rule_text(line.rule, line.role)


def payout_batch(b: PayoutBatch) -> dict[str, Any]:
    """``{id, status, currency, created_by, approved_by, items: [{partner_id, amount}], total,
    min_amount, created_at, approved_at, paid_at, cancelled_at}``."""
    return {
        "id": sid(b.id),
        "status": b.status,
        "currency": b.currency,
        "created_by": sid(b.created_by),
        "approved_by": sid(b.approved_by),
        "items": [
            {"partner_id": sid(i.partner_id), "amount": amount(i.amount_minor, b.currency)} for i in b.items
        ],
        "total": amount(b.total_minor or 0, b.currency),
        "min_amount": amount(b.min_amount_minor or 0, b.currency),
        "created_at": ts(b.created_at),
        "approved_at": ts(b.approved_at),
        "paid_at": ts(b.paid_at),
        "cancelled_at": ts(b.cancelled_at),
    }


def earnings(item: dict[str, Any]) -> dict[str, Any]:
    """One currency of a partner's earnings: int minor units formatted as money strings."""
    cur = item["currency"]
    return {
        "currency": cur,
        **{k: format_minor(int(item[k]), cur) for k in ("pending", "approved", "paid", "balance")},
    }


def report_row(r: ReportRow) -> dict[str, Any]:
    """``{key, currency, clicks, unique_clicks, impressions, conversions, revenue, payout, margin,
    cr, epc}``."""
    return {
        "key": r.key,
        "currency": r.currency,
        "clicks": r.clicks,
        "unique_clicks": r.unique_clicks,
        "impressions": r.impressions,
        "conversions": r.conversions,
        "revenue": format_minor(r.revenue_minor, r.currency),
        "payout": format_minor(r.payout_minor, r.currency),
        "margin": format_minor(r.margin_minor, r.currency),
        "cr": r.cr,
        "epc": format_minor(r.epc_minor, r.currency),
    }
