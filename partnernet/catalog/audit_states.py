"""What the audit log keeps of catalog objects, and the audit rows of the catalog use cases.

Each catalog use case (client, campaign, partner and link creation; campaign changes, pause and
resume; budget and caps) records its row through one function here, inside its own transaction
and before its commit (:func:`partnernet.audit.record` never commits), so the API, the staff
console, the client and partner portals and the CLI all leave the same row. ``actor_user_id`` is
the acting user (staff, client or partner user; None: the system, e.g. the CLI or a sign-up).

Rows hold the fields a reviewer needs, never a secret (postback secrets, passwords, API keys)
nor payout account numbers; money stays int minor units (``budget_minor``, ...).
"""

from __future__ import annotations

from ..audit import record
from ..models import AuditLog, Campaign, Client, Link, Partner

#: Campaign fields that are budget and caps (:func:`partnernet.clients.services.set_campaign_limits`).
LIMIT_STATE = ("budget_minor", "daily_cap_minor", "monthly_cap_minor")


def client_state(client: Client) -> dict:
    """A client as the audit log keeps it (no postback key or secret)."""
    return {"name": client.name, "currency": client.currency, "website_url": client.website_url,
            "require_signature": bool(client.require_signature), "ip_allowlist": client.ip_allowlist or "",
            "timezone": client.timezone}


def partner_state(partner: Partner) -> dict:
    """A partner as the audit log keeps it (no payout account details)."""
    return {"email": partner.email, "name": partner.name, "kind": partner.kind, "status": partner.status,
            "recruiter_id": partner.recruiter_id, "recruiter_percent": partner.recruiter_percent}


def link_state(link: Link) -> dict:
    """A tracking link as the audit log keeps it."""
    return {"partner_id": link.partner_id, "campaign_id": link.campaign_id, "channel": link.channel,
            "deep_link": link.deep_link, "coupon_code": link.coupon_code, "tracking_number": link.tracking_number}


def campaign_state(camp: Campaign) -> dict:
    """A campaign's settings as the audit log compares them: status, budget and caps (minor units),
    access, timing, URLs and its events' pricing (percents as short decimal strings)."""
    from .services import percent_text  # services imports this module

    return {
        "name": camp.name, "status": camp.status, "budget_minor": camp.budget_minor,
        "daily_cap_minor": camp.daily_cap_minor, "monthly_cap_minor": camp.monthly_cap_minor,
        "visibility": camp.visibility, "auto_approve_partners": bool(camp.auto_approve_partners),
        "hold_days": camp.hold_days, "attribution_window_days": camp.attribution_window_days,
        "attribution_model": camp.attribution_model, "fallback_url": camp.fallback_url,
        "destination_url": camp.destination_url, "deep_link_hosts": list(camp.deep_link_hosts or []),
        "default_event": camp.default_event, "click_param": camp.click_param,
        "events": [{"key": e.key, "client_fee_minor": e.client_fee_minor,
                    "client_fee_percent": percent_text(e.client_fee_percent),
                    "payout_minor": e.payout_minor, "payout_percent": percent_text(e.payout_percent),
                    "min_duration_s": e.min_duration_s, "min_amount_minor": e.min_amount_minor,
                    "one_per_click": bool(e.one_per_click)}
                   for e in camp.events],
    }


def limit_state(camp: Campaign) -> dict:
    """The campaign's budget and caps (minor units or None)."""
    return {name: getattr(camp, name) for name in LIMIT_STATE}


def record_created(actor_user_id: int | None, target_type: str, obj) -> AuditLog:
    """The ``<target_type>.create`` row of a new client, partner, link or campaign (flushed, so it
    has its id), with its state as ``after``."""
    states = {"client": client_state, "partner": partner_state, "link": link_state, "campaign": campaign_state}
    return record(actor_user_id, f"{target_type}.create", target_type, obj.id, None, states[target_type](obj))


def change_action(before: dict, after: dict, default: str = "campaign.update") -> str:
    """``campaign.pause`` / ``campaign.resume`` when the status is the only field that changed,
    else ``default``."""
    if set(before) == {"status"}:
        return "campaign.pause" if after["status"] == "paused" else "campaign.resume"
    return default


def record_changes(actor_user_id: int | None, action: str, target_type: str, target_id: int,
                   before: dict, after: dict) -> AuditLog | None:
    """One row holding only the fields whose value differs between ``before`` and ``after``
    (``action`` as given, or pause/resume: :func:`change_action`); None, and no row, when
    nothing changed."""
    diff = [k for k in after if after[k] != before.get(k)]
    if not diff:
        return None
    old, new = {k: before.get(k) for k in diff}, {k: after[k] for k in diff}
    return record(actor_user_id, change_action(old, new, action), target_type, target_id, old, new)
