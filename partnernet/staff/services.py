"""Staff console use cases and reads (issue 4) that the core services do not already offer.

State-changing functions take the acting staff user's id and plain values, write an audit
row (:func:`partnernet.audit.record`) in the same transaction and commit once at their end.
Money is int minor units with a currency code. Errors are :mod:`partnernet.errors` classes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import date, timedelta
from urllib.parse import urlencode

from flask import current_app
from sqlalchemy import func, select

from .. import audit
from ..catalog import audit_states
from ..catalog import services as catalog
from ..clock import utcnow
from ..errors import DomainError, InvalidState, NotFound, ValidationError
from ..extensions import db
from ..models import (
    Campaign,
    Client,
    Conversion,
    Link,
    Partner,
    PayoutBatch,
    PostbackLog,
    User,
)
from ..reporting.services import report

# --------------------------------------------------------------------------- email


def send_email(actor_user_id: int | None, to_addr: str, subject: str, body: str, kind: str) -> str:
    """Queue an email through the partner portal's outbox (:func:`partnernet.partners.emails.
    queue_email`) and audit it (``email.queued``). Does not commit. Returns ``"outbox"``, or
    ``"audit"`` when the outbox is not installed (then the audit row is the only record)."""
    try:
        from ..partners.emails import queue_email
    except ImportError:  # pragma: no cover - the outbox ships with the partner portal
        audit.record(actor_user_id, "email.recorded", "email", to_addr,
                     None, {"to": to_addr, "subject": subject, "body": body, "kind": kind})
        return "audit"
    row = queue_email(to_addr, subject, body, kind=kind)
    audit.record(actor_user_id, "email.queued", "email", row.id, None, {"to": to_addr, "subject": subject,
                                                                       "kind": kind})
    return "outbox"


# --------------------------------------------------------------------------- partners


#: Staff actions on a partner; each emails the partner (texts in partnernet.mail.messages).
PARTNER_STATUS_ACTIONS = ("approve", "reject", "suspend")


def change_partner_status(partner_id: int, action: str, user_id: int, reason: str | None = None) -> Partner:
    """Staff ``action`` on a partner (``approve`` | ``reject`` | ``suspend`` | ``reinstate``,
    CONTRACT §5 transitions through :func:`partnernet.catalog.services.set_partner_status`),
    with an optional ``reason`` (at most 500 characters) e-mailed to the partner with the news.
    ``reinstate`` is ``approve`` of a suspended partner. The email, the audit rows and the
    status change commit together. Raises NotFound, InvalidState (409), ValidationError
    (``reason`` too long, unknown action)."""
    if action == "reinstate":
        partner = db.session.get(Partner, partner_id)
        if partner is not None and partner.status != "suspended":
            raise InvalidState(f"cannot reinstate a partner that is {partner.status}")
        action = "approve"
    if action not in PARTNER_STATUS_ACTIONS:
        raise ValidationError(f"unknown action {action!r}", code="bad_action", field="action")
    reason = (reason or "").strip()
    if len(reason) > 500:
        raise ValidationError("reason is limited to 500 characters", code="invalid", field="reason")
    if action == "reject" and not reason:
        raise ValidationError("give a reason for the rejection (it is e-mailed)", code="missing_field",
                              field="reason")
    partner = db.session.get(Partner, partner_id)
    if partner is None:
        raise NotFound(f"no partner {partner_id}")
    try:
        if reason:
            audit.record(user_id, f"partner.{action}.reason", "partner", partner.id, None, {"reason": reason})
        return catalog.set_partner_status(partner_id, action, user_id, reason or None)  # emails; commits
    except DomainError:
        db.session.rollback()
        raise


def partner_applications(status: str = "pending", limit: int = 200) -> list[Partner]:
    """Partners with ``status`` (default the application queue, ``pending``), oldest first."""
    return list(db.session.scalars(
        select(Partner).where(Partner.status == status).order_by(Partner.created_at, Partner.id).limit(limit)))


def partner_detail(partner_id: int) -> dict:
    """A partner with what staff needs to decide: ``{"partner", "users" (logins), "links" (count),
    "earnings" (per currency, minor units), "recruiter"}``. Raises NotFound."""
    from ..ledger.services import partner_earnings

    partner = catalog.get_partner(partner_id)
    return {
        "partner": partner,
        "users": list(db.session.scalars(select(User).where(User.partner_id == partner_id))),
        "links": db.session.scalar(select(func.count()).select_from(Link).where(Link.partner_id == partner_id)),
        "earnings": partner_earnings(partner_id),
        "recruiter": partner.recruiter,
    }


# --------------------------------------------------------------------------- clients


def update_client(client_id: int, data: dict, user_id: int) -> Client:
    """Change a client's ``name``, ``website_url`` (URL or ``""``), ``require_signature``,
    ``ip_allowlist`` (comma-separated IPs / CIDR networks, ``""`` = any) and ``timezone``;
    audit ``client.update`` with the changed fields; commit. The currency never changes (its
    money is stored in it). Raises NotFound, ValidationError (as ``create_client``)."""
    catalog.check_unknown_fields(data, ("name", "website_url", "require_signature", "ip_allowlist", "timezone"))
    client = catalog.get_client(client_id)
    new = {}
    if "name" in data:
        new["name"] = catalog._string(data["name"], "name")
    if "website_url" in data:
        url = data["website_url"] or ""
        new["website_url"] = catalog.check_url(url, "website_url", allow_app_scheme=False) if url else ""
    if "require_signature" in data:
        new["require_signature"] = catalog._bool(data["require_signature"], "require_signature")
    if "ip_allowlist" in data:
        new["ip_allowlist"] = catalog._ip_allowlist(data["ip_allowlist"] or "", "ip_allowlist")
    if "timezone" in data:
        new["timezone"] = catalog._timezone(data["timezone"], "timezone")
    before = {k: getattr(client, k) for k in new if getattr(client, k) != new[k]}
    after = {k: new[k] for k in before}
    for k, v in new.items():
        setattr(client, k, v)
    if after:
        audit.record(user_id, "client.update", "client", client.id, before, after)
    db.session.commit()
    return client


def rotate_client_secret(client_id: int, user_id: int) -> Client:
    """Give the client a new postback secret (the key stays); the old secret stops verifying
    at once. Audited as ``client.rotate_secret`` (secrets themselves are never written to the
    audit log, only their first 4 characters). Commits. Raises NotFound."""
    client = catalog.get_client(client_id)
    old = client.postback_secret
    client.postback_secret = secrets.token_urlsafe(32)
    audit.record(user_id, "client.rotate_secret", "client", client.id, {"secret_prefix": old[:4]},
                 {"secret_prefix": client.postback_secret[:4]})
    db.session.commit()
    return client


def create_client(data: dict, user_id: int) -> Client:
    """:func:`partnernet.catalog.services.create_client` by staff ``user_id`` (audited there as
    ``client.create``, in its transaction)."""
    return catalog.create_client(data, actor_user_id=user_id)


#: Campaign visibility (CONTRACT §5 (v2); the rule is in partnernet.catalog.access).
CAMPAIGN_VISIBILITIES = catalog.VISIBILITIES
#: Campaign fields the staff console sets beside the CONTRACT §5 body of the catalog use cases.
STAFF_CAMPAIGN_FIELDS = ("visibility", "auto_approve_partners", "daily_cap", "monthly_cap")
CAP_FIELDS = ("daily_cap", "monthly_cap")


def _split_staff_fields(data: dict, currency: str | None) -> tuple[dict, dict, dict]:
    """Split ``data`` into (the catalog's fields, ``{visibility?, auto_approve_partners?}``
    checked, ``{daily_cap?, monthly_cap?}`` as given) and check the caps against ``currency``
    with the client area's own parser (:func:`partnernet.clients.services._parse_limit`) so a
    bad cap is refused before anything commits. Raises ValidationError (``bad_visibility``,
    ``invalid``, ``bad_amount``)."""
    from ..clients.services import _parse_limit

    rest = {k: v for k, v in data.items() if k not in STAFF_CAMPAIGN_FIELDS}
    flags = {}
    if "visibility" in data:
        if data["visibility"] not in CAMPAIGN_VISIBILITIES:
            raise ValidationError(f"visibility must be one of {', '.join(CAMPAIGN_VISIBILITIES)}",
                                  code="bad_visibility", field="visibility")
        flags["visibility"] = data["visibility"]
    if "auto_approve_partners" in data:
        flags["auto_approve_partners"] = catalog._bool(data["auto_approve_partners"], "auto_approve_partners")
    caps = {k: data[k] for k in CAP_FIELDS if k in data}
    if currency is not None:
        for name, value in caps.items():
            _parse_limit(value, currency, name)
    return rest, flags, caps


def _cap_minor(caps: dict, currency: str) -> dict:
    from ..clients.services import _parse_limit

    return {f"{k}_minor": _parse_limit(v, currency, k) for k, v in caps.items()}


def _finish_campaign(camp: Campaign, flags: dict, caps: dict) -> None:
    """Set the checked flags, then the caps through
    :func:`partnernet.clients.services.set_campaign_limits` (campaign lock, cap state, state
    version), whose commit also writes the pending audit row; without caps, commit here."""
    for k, v in flags.items():
        setattr(camp, k, v)
    if caps:
        from ..clients.services import set_campaign_limits

        set_campaign_limits(camp.id, caps, audited=False)  # the staff use case's own row covers them
    else:
        db.session.commit()


def create_campaign(data: dict, user_id: int) -> Campaign:
    """:func:`partnernet.catalog.services.create_campaign`, audited as ``campaign.create``.

    ``data`` may also hold ``visibility`` (``"public"`` | ``"approval"`` | ``"invite_only"``),
    ``auto_approve_partners`` (bool) and ``daily_cap`` / ``monthly_cap`` (decimal strings in the
    client's currency, None or ``""`` = no cap; set through
    :func:`partnernet.clients.services.set_campaign_limits`). These are checked before the
    campaign is created; the flags, caps and audit row commit together right after the catalog's
    own commit. Raises ValidationError (the catalog's codes, ``bad_visibility``, ``bad_amount``)."""
    client = None
    try:
        client = db.session.get(Client, catalog.parse_id(data.get("client_id"), "client_id"))
    except ValidationError:
        pass  # the catalog use case reports a bad client_id
    rest, flags, caps = _split_staff_fields(data, client.currency if client is not None else None)
    camp = catalog.create_campaign(rest, audited=False)  # one row below, with the flags and caps
    after = {**audit_states.campaign_state(camp), "client_id": camp.client_id, **flags,
             **_cap_minor(caps, camp.currency)}
    audit.record(user_id, "campaign.create", "campaign", camp.id, None, after)
    _finish_campaign(camp, flags, caps)
    return camp


def update_campaign(campaign_id: int, changes: dict, user_id: int) -> Campaign:
    """:func:`partnernet.catalog.services.update_campaign` (CONTRACT §5 ``PATCH``), audited as
    ``campaign.update`` with the fields that changed, caps included (``campaign.pause`` /
    ``campaign.resume`` when only the status changed; no row when nothing did). ``changes`` may also hold the staff fields
    of :func:`create_campaign` (``visibility``, ``auto_approve_partners``, ``daily_cap``,
    ``monthly_cap``), checked before anything commits. The catalog use case commits itself; the
    flags, caps and the one audit row then commit together in a second short transaction.
    Raises NotFound, ValidationError."""
    camp = catalog.get_campaign(campaign_id)
    rest, flags, caps = _split_staff_fields(changes, camp.currency)
    before = audit_states.campaign_state(camp)
    if rest:
        camp = catalog.update_campaign(campaign_id, rest, audited=False)  # one row below, caps included
    for k, v in flags.items():
        setattr(camp, k, v)
    after = {**audit_states.campaign_state(camp), **_cap_minor(caps, camp.currency)}
    audit_states.record_changes(user_id, "campaign.update", "campaign", camp.id, before, after)
    _finish_campaign(camp, {}, caps)
    return camp


# --------------------------------------------------------------------------- payout overrides


def campaign_overrides(campaign_id: int) -> list[tuple]:
    """The campaign's per-partner payout overrides (issue 6, :func:`partnernet.commission.
    services.payout_overrides_query`) as ``(override, partner name, percent text or None)``,
    by id (the percent as :func:`partnernet.catalog.services.percent_text`, e.g. ``"62.5"``)."""
    from ..commission.services import payout_overrides_query
    from ..models import PartnerPayoutOverride

    stmt = payout_overrides_query(campaign_id=campaign_id).add_columns(Partner.name).join(
        Partner, Partner.id == PartnerPayoutOverride.partner_id)
    return [(ov, name, catalog.percent_text(ov.payout_percent)) for ov, name in db.session.execute(stmt)]


def set_campaign_override(campaign_id: int, partner_id: int, event_key: str | None, payout: str,
                          user_id: int):
    """Set a partner's payout on the campaign through :func:`partnernet.commission.services.
    set_payout_override` (audited there as ``payout_override.set``; commits). ``event_key`` None
    = every event; ``payout`` is a fixed amount in the campaign's currency (``"2.50"``) or a
    percent of the client fee ending in ``%`` (``"60%"``). Raises NotFound, ValidationError
    (``unknown_event``, ``bad_amount``, ``bad_percent``, ``missing_field``)."""
    from ..commission.services import set_payout_override

    text = (payout or "").strip()
    if not text:
        raise ValidationError("give a fixed payout (2.50) or a percent (60%)", code="missing_field", field="payout")
    if text.endswith("%"):
        kw = {"payout_percent": text[:-1].strip()}
    else:
        kw = {"payout": text}
    try:
        return set_payout_override(campaign_id, partner_id, event_key=event_key or None, actor_user_id=user_id, **kw)
    except DomainError:
        db.session.rollback()
        raise


def delete_campaign_override(campaign_id: int, override_id: int, user_id: int) -> None:
    """Remove one of the campaign's payout overrides through :func:`partnernet.commission.
    services.delete_payout_override` (audited there as ``payout_override.delete``; commits).
    Raises NotFound when it does not exist or belongs to another campaign."""
    from ..commission.services import delete_payout_override
    from ..models import PartnerPayoutOverride

    ov = db.session.get(PartnerPayoutOverride, override_id)
    if ov is None or ov.campaign_id != campaign_id:
        raise NotFound(f"no payout override {override_id} on campaign {campaign_id}")
    delete_payout_override(override_id, actor_user_id=user_id)


# --------------------------------------------------------------------------- invoices


def _invoice_state(inv) -> dict:
    return {"status": inv.status, "number": inv.number, "total_minor": inv.total_minor, "currency": inv.currency}


def _audited_invoice_change(invoice_id: int, user_id: int, action: str, new_status: str, change):
    """Record the audit row ``action`` for the invoice, then apply ``change(invoice_id)`` (which
    commits, so the row commits with it); a refused change rolls the row back."""
    from ..clients import invoices

    inv = invoices.get_invoice(invoice_id)
    audit.record(user_id, action, "invoice", inv.id, _invoice_state(inv),
                 dict(_invoice_state(inv), status=new_status))
    try:
        return change(invoice_id)
    except DomainError:
        db.session.rollback()
        raise


def issue_invoice(invoice_id: int, user_id: int):
    """Issue a draft invoice (:func:`partnernet.clients.invoices.issue_invoice`, draft → issued);
    the audit row ``invoice.issue`` commits with it. Raises NotFound, InvalidState (409)."""
    from ..clients import invoices

    return _audited_invoice_change(invoice_id, user_id, "invoice.issue", "issued", invoices.issue_invoice)


def mark_invoice_paid(invoice_id: int, user_id: int):
    """Mark an issued invoice paid (:func:`partnernet.clients.invoices.mark_invoice_paid`, issued →
    paid); the audit row ``invoice.mark_paid`` commits with it. Raises NotFound, InvalidState (409)."""
    from ..clients import invoices

    return _audited_invoice_change(invoice_id, user_id, "invoice.mark_paid", "paid", invoices.mark_invoice_paid)


# --------------------------------------------------------------------------- postback setup


def postback_url_template(campaign: Campaign, base_url: str) -> str:
    """The URL the advertiser pastes into its platform (CONTRACT §3), with macros it fills in:
    ``{click_id}`` always, ``{txn_id}``, and ``{amount}``/``{currency}`` for percent-of-sale
    events. ``event`` is the campaign's default event."""
    params = [("key", campaign.client.postback_key), ("click_id", "{click_id}"),
              ("event", campaign.default_event), ("txn_id", "{txn_id}")]
    if any(e.client_fee_percent is not None for e in campaign.events):
        params += [("amount", "{amount}"), ("currency", campaign.currency)]
    query = "&".join(f"{k}={v}" for k, v in params)
    return f"{base_url.rstrip('/')}/postback?{query}"


def sign_params(secret: str, params: dict[str, str]) -> str:
    """CONTRACT §3 ``sig``: hex HMAC-SHA256 keyed with ``secret`` of every parameter but ``sig``,
    sorted by name, joined ``name=value&...`` with the values as sent (no re-encoding)."""
    text = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "sig")
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def signature_example(campaign: Campaign) -> dict:
    """A worked signing example for the setup page: ``{"params", "string", "sig"}`` with a
    sample click ID and a fixed ``ts``."""
    params = {"key": campaign.client.postback_key, "click_id": "CLICKID123", "event": campaign.default_event,
              "txn_id": "ORDER-1001", "ts": "1700000000"}
    text = "&".join(f"{k}={params[k]}" for k in sorted(params))
    return {"params": params, "string": text, "sig": sign_params(campaign.client.postback_secret, params)}


@dataclass
class TestPostback:
    """What the "send test postback" button did: the request as sent and our answer."""

    method: str
    url: str
    params: dict
    http_status: int
    answer: dict
    conversion_id: int | None = None


def send_test_postback(campaign_id: int, user_id: int, base_url: str) -> TestPostback:
    """Run a signed test postback for the campaign through the real postback checks and record
    a **test** conversion (``is_test``: never money: no ledger posting, no spend, not in reports,
    not reviewable). It uses a fresh click ID minted for the campaign's first link (400
    ``no_link`` when the campaign has none), the default event, a ``test-…`` txn_id and, for a
    percent-of-sale event, an amount of 100.00. Audited as ``campaign.test_postback``; commits.
    Returns :class:`TestPostback` with the raw request and the JSON answer. Raises NotFound."""
    from ..postbacks.params import RawParams
    from ..postbacks.services import process_postback

    camp = catalog.get_campaign(campaign_id)
    link = db.session.scalar(select(Link).where(Link.campaign_id == camp.id).order_by(Link.id).limit(1))
    if link is None:
        raise ValidationError("this campaign has no link yet: create a partner link first", code="no_link")
    signer = current_app.extensions["partnernet_click_signer"]
    now = int(utcnow().timestamp())
    params = {"key": camp.client.postback_key, "click_id": signer.make(link.id, now),
              "event": camp.default_event, "txn_id": "test-" + secrets.token_hex(6), "ts": str(now)}
    ev = camp.event(camp.default_event)
    if ev is not None and ev.client_fee_percent is not None:
        params["amount"] = "100.00" if camp.currency not in ("JPY", "KRW") else "100"
    params["sig"] = sign_params(camp.client.postback_secret, params)
    url = f"{base_url.rstrip('/')}/postback?{urlencode(params)}"
    status, body = process_postback(RawParams(pairs=list(params.items())), method="GET", remote_ip=None,
                                    test=True)
    conv_id = int(body["conversion_id"]) if body.get("conversion_id") else None
    audit.record(user_id, "campaign.test_postback", "campaign", camp.id, None,
                 {"http_status": status, "answer": body})
    db.session.commit()
    return TestPostback("GET", url, params, status, body, conv_id)


def postback_log_query(*, outcome: str | None = None, error: str | None = None, campaign_id: int | None = None,
                       client_id: int | None = None):
    """Postback log rows, newest first, by ``outcome`` (created, existing, rejected, or a refusal
    code), ``error`` (a refusal code, same column; kept apart for the filter form), campaign, client."""
    stmt = select(PostbackLog).order_by(PostbackLog.id.desc())
    if outcome:
        stmt = stmt.where(PostbackLog.outcome == outcome)
    if error:
        stmt = stmt.where(PostbackLog.outcome == error)
    if campaign_id:
        stmt = stmt.where(PostbackLog.campaign_id == campaign_id)
    if client_id:
        stmt = stmt.where(PostbackLog.client_id == client_id)
    return stmt


def postback_outcomes() -> list[str]:
    """The distinct outcomes in the postback log (for the filter's choices)."""
    return list(db.session.scalars(select(PostbackLog.outcome).distinct().order_by(PostbackLog.outcome)))


# --------------------------------------------------------------------------- conversion review

# The review queue and bulk review live in :mod:`.review` (fraud flags are stored on the conversion).
from .review import BulkResult, ReviewQueue, review_many, review_queue  # noqa: E402,F401


# --------------------------------------------------------------------------- dashboard


@dataclass
class Totals:
    """Figures of one period in one currency (minor units)."""

    currency: str
    clicks: int = 0
    conversions: int = 0
    revenue: int = 0
    payout: int = 0
    margin: int = 0
    paid_out: int = 0


def _period_totals(date_from: date, date_to: date) -> list[Totals]:
    by_cur: dict[str, Totals] = {}
    for row in report("campaign", date_from, date_to):
        t = by_cur.setdefault(row.currency, Totals(row.currency))
        t.clicks += row.clicks
        t.conversions += row.conversions
        t.revenue += row.revenue_minor
        t.payout += row.payout_minor
        t.margin += row.margin_minor
    start = utcnow().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=(date_to - date_from).days)
    for cur, total in db.session.execute(
            select(PayoutBatch.currency, func.sum(PayoutBatch.total_minor))
            .where(PayoutBatch.status == "paid", PayoutBatch.paid_at >= start).group_by(PayoutBatch.currency)):
        by_cur.setdefault(cur, Totals(cur)).paid_out += int(total or 0)
    return [by_cur[c] for c in sorted(by_cur)]


def dashboard(today: date | None = None) -> dict:
    """The staff dashboard's figures (UTC days): ``today`` and ``last30`` (lists of
    :class:`Totals`, one per currency, from :func:`partnernet.reporting.services.report`;
    ``paid_out`` from paid batches), ``top_partners`` / ``top_campaigns`` (last 30 days, by
    revenue, 5 each: ``(name, id, currency, revenue, conversions)``), ``waiting`` (counts:
    partner applications, campaign applications, conversions to review, batches to approve)."""
    today = today or utcnow().date()
    start30 = today - timedelta(days=29)
    top = {}
    for group in ("partner", "campaign"):
        rows = sorted(report(group, start30, today), key=lambda r: (-r.revenue_minor, r.key))[:5]
        model = Partner if group == "partner" else Campaign
        names = dict(db.session.execute(select(model.id, model.name).where(
            model.id.in_([int(r.key) for r in rows if r.key.isdigit()]))).all())
        top[group] = [(names.get(int(r.key), r.key), r.key, r.currency, r.revenue_minor, r.conversions)
                      for r in rows]
    waiting = {
        "partners": db.session.scalar(select(func.count()).select_from(Partner).where(Partner.status == "pending")),
        "conversions": db.session.scalar(select(func.count()).select_from(Conversion).where(
            Conversion.status == "pending", Conversion.is_test.is_(False))),
        "batches": db.session.scalar(select(func.count()).select_from(PayoutBatch).where(
            PayoutBatch.status == "draft")),
        "applications": None,
    }
    try:
        from ..models import CampaignApplication

        waiting["applications"] = db.session.scalar(select(func.count()).select_from(CampaignApplication).where(
            CampaignApplication.status == "pending"))
    except ImportError:  # pragma: no cover - campaign applications ship with the partner portal
        pass
    return {"today": _period_totals(today, today), "last30": _period_totals(start30, today),
            "top_partners": top["partner"], "top_campaigns": top["campaign"], "waiting": waiting}


# --------------------------------------------------------------------------- queue health


def queue_health(max_failed: int = 20) -> dict | None:
    """RQ health when ``REDIS_URL`` is set, else None: ``{"queues": [(name, queued, started,
    failed)], "failed": [{"id", "queue", "func", "ended_at", "error"}], "error": str | None}``
    (``error`` when Redis cannot be reached: the page shows it instead of failing)."""
    from .. import queue as q

    if not q.redis_url():
        return None
    try:
        from rq.job import Job
        from rq.registry import FailedJobRegistry, StartedJobRegistry

        out = {"queues": [], "failed": [], "error": None}
        for name in q.QUEUES:
            rq_queue = q.get_queue(name)
            failed = FailedJobRegistry(queue=rq_queue)
            out["queues"].append((name, rq_queue.count, StartedJobRegistry(queue=rq_queue).count, failed.count))
            for job_id in failed.get_job_ids()[:max_failed]:
                job = Job.fetch(job_id, connection=q.get_redis()) if job_id else None
                info = (job.exc_info or "").strip().splitlines() if job else []
                out["failed"].append({"id": job_id, "queue": name, "func": job.func_name if job else "?",
                                      "ended_at": job.ended_at if job else None,
                                      "error": info[-1][:300] if info else ""})
        return out
    except Exception as exc:  # noqa: BLE001 - the dashboard must render when Redis is down
        return {"queues": [], "failed": [], "error": f"Redis is unreachable: {exc}"}


def retry_failed_job(job_id: str, user_id: int) -> str:
    """Requeue the failed RQ job ``job_id`` (its queue is found from the failed registries).
    Jobs are idempotent (ARCHITECTURE), so a retry is safe. Audited as ``job.retry``; commits.
    Returns the queue name. Raises NotFound when no failed job has that id, ValidationError
    when Redis is not configured."""
    from rq.registry import FailedJobRegistry

    from .. import queue as q

    if not q.redis_url():
        raise ValidationError("jobs run in-process: there is no queue", code="no_redis")
    for name in q.QUEUES:
        registry = FailedJobRegistry(queue=q.get_queue(name))
        if job_id in registry.get_job_ids():
            registry.requeue(job_id)
            audit.record(user_id, "job.retry", "job", job_id, {"status": "failed"}, {"status": "queued",
                                                                                    "queue": name})
            db.session.commit()
            return name
    raise NotFound(f"no failed job {job_id}")
