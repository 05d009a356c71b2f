"""Campaign marketplace and applications: which campaigns a partner may see, their terms in
plain words, applying, and the staff decisions the staff console calls. Whether a partner may
promote a campaign is decided by :func:`partnernet.catalog.access.promotion_refusal` alone
(CONTRACT §5 (v2) "What a partner may do and see")."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..catalog import access
from ..clock import utcnow
from ..errors import Duplicate, InvalidState, NotFound
from ..extensions import db
from ..filters import money
from ..mail import notify
from ..models import Campaign, CampaignApplication, CampaignEvent, Partner
from ..money import percent_of

VISIBILITIES = access.VISIBILITIES


def _pct(value: Decimal) -> str:
    text = f"{Decimal(value).normalize():f}"
    return text


def event_terms(event: CampaignEvent, currency: str) -> str:
    """What a partner earns for ``event``, in plain words (CONTRACT §4 pricing, before any
    recruiter override): ``"$2.10 per qualified call of 3+ minutes"``, ``"6% of each sale"``,
    ``"¥300 per install"``. A percent payout of a percent client fee is the product of both.
    The ``impression`` event is priced per 1,000 impressions (CPM, CONTRACT §2 and §5: one
    conversion per 1,000 counted impressions): ``"$1.50 per 1,000 impressions"``."""
    if event.key == "impression":
        what = "1,000 impressions"
    else:
        what = (event.label or event.key).strip() or event.key
    if event.min_duration_s:
        s = event.min_duration_s
        what = f"qualified {what} of {s // 60}+ minutes" if s % 60 == 0 else f"qualified {what} of {s}+ seconds"
    if event.min_amount_minor:
        what = f"{what} of {money(event.min_amount_minor, currency)} or more"
    if event.payout_minor is not None:
        return f"{money(event.payout_minor, currency)} per {what}"
    pct = Decimal(event.payout_percent or 0)
    if event.client_fee_percent is not None:
        share = Decimal(event.client_fee_percent) * pct / 100
        return f"{_pct(share)}% of each {what}"
    return f"{money(percent_of(int(event.client_fee_minor or 0), pct), currency)} per {what}"


@dataclass
class MarketCampaign:
    """A campaign as the marketplace shows it to one partner."""

    id: int
    name: str
    client_name: str
    currency: str
    terms: list[str]
    deep_link_hosts: list[str]
    attribution_window_days: int
    hold_days: int
    visibility: str
    auto_approve: bool
    application_status: str | None  # None: not applied
    application_reason: str | None
    can_promote: bool = False  # access.promotion_refusal allows it: the link builder offers it


def marketplace(partner_id: int) -> list[MarketCampaign]:
    """Active campaigns a partner may see, ordered by name: public and approval ones, and
    invite-only ones only when it may promote them (an invitation or grant: an approved
    application); ``can_promote`` from :func:`partnernet.catalog.access.promotion_refusal`.
    A partner that is not approved sees nothing."""
    partner = db.session.get(Partner, partner_id)
    if partner is None or partner.status != "approved":
        return []
    apps = access.applications_of(partner_id)
    stmt = select(Campaign).where(Campaign.status == "active").order_by(Campaign.name, Campaign.id)
    out = []
    for c in db.session.scalars(stmt):
        app = apps.get(c.id)
        visibility = access.visibility_of(c)
        can = access.promotion_refusal(partner.status, visibility, app.status if app else None) is None
        if visibility == "invite_only" and not can:
            continue  # hidden from partners without access
        out.append(MarketCampaign(
            id=c.id, name=c.name, client_name=c.client.name, currency=c.currency,
            terms=[event_terms(e, c.currency) for e in c.events], deep_link_hosts=list(c.deep_link_hosts or []),
            attribution_window_days=c.attribution_window_days, hold_days=c.hold_days,
            visibility=visibility, auto_approve=bool(c.auto_approve_partners),
            application_status=app.status if app else None, application_reason=app.reason if app else None,
            can_promote=can,
        ))
    return out


def approved_campaigns(partner_id: int) -> list[Campaign]:
    """Active campaigns the partner may promote (the link builder's and postback page's lists):
    :func:`partnernet.catalog.access.promotable_campaigns`."""
    return access.promotable_campaigns(partner_id)


def is_approved_for(partner_id: int, campaign_id: int) -> bool:
    """True when the partner may promote the campaign (:func:`partnernet.catalog.access.may_promote`)."""
    return access.may_promote(partner_id, campaign_id)


def apply_to_campaign(partner_id: int, campaign_id: int, message: str = "") -> CampaignApplication:
    """A partner applies to an ``approval`` campaign; commit. Approved at once when the campaign
    has ``auto_approve_partners``, else ``pending`` for staff (CONTRACT §5 (v2) ``visibility``).

    Raises NotFound (no such active campaign, or an invite-only one: those are by staff grant
    only), InvalidState (``partner_not_approved``: the partner account itself is not approved;
    ``no_application_needed``: a public campaign is open at once), Duplicate
    (``already_applied``)."""
    partner = db.session.get(Partner, partner_id)
    campaign = db.session.get(Campaign, campaign_id)
    if (partner is None or campaign is None or campaign.status != "active"
            or access.visibility_of(campaign) == "invite_only"):
        raise NotFound(f"no campaign {campaign_id}")
    if partner.status != "approved":
        raise InvalidState("your account is not approved yet", code="partner_not_approved")
    if access.visibility_of(campaign) == "public":
        raise InvalidState("this campaign is open to every approved partner: build your link",
                           code="no_application_needed")
    app = CampaignApplication(partner_id=partner_id, campaign_id=campaign_id, message=(message or "")[:2000],
                              status="pending")
    if campaign.auto_approve_partners:
        app.status = "approved"
        app.decided_at = utcnow()
    db.session.add(app)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Duplicate("you have already applied to this campaign", code="already_applied") from None
    return app


def _audit(user_id, action, app, before, after) -> None:
    try:
        from ..audit import record
    except ImportError:
        return
    record(user_id, action, "campaign_application", app.id, before, after)


def _decide(application_id: int, status: str, user_id: int, reason: str | None) -> CampaignApplication:
    stmt = select(CampaignApplication).where(CampaignApplication.id == application_id)
    if db.session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    app = db.session.scalar(stmt.execution_options(populate_existing=True))
    if app is None:
        raise NotFound(f"no application {application_id}")
    allowed = {"approved": ("pending", "rejected"), "rejected": ("pending", "approved")}[status]
    if app.status not in allowed:
        raise InvalidState(f"the application is already {app.status}")
    before = {"status": app.status}
    app.status = status
    app.reason = (reason or None) and reason[:2000]
    app.decided_at = utcnow()
    app.decided_by = user_id
    _audit(user_id, f"application.{'approve' if status == 'approved' else 'reject'}", app, before,
           {"status": status, "reason": app.reason})
    notify.application_decided(app)  # emails the partner after commit (partnernet.mail)
    db.session.commit()
    return app


def approve_application(application_id: int, user_id: int, reason: str | None = None) -> CampaignApplication:
    """Staff approves a pending (or earlier rejected) application; emails the partner; commit.
    Raises NotFound, InvalidState (already approved). Records an audit row when audit exists."""
    return _decide(application_id, "approved", user_id, reason)


def reject_application(application_id: int, user_id: int, reason: str | None = None) -> CampaignApplication:
    """Staff rejects a pending (or revokes an approved) application with an optional reason
    shown to the partner; emails the partner; commit. Raises NotFound, InvalidState."""
    return _decide(application_id, "rejected", user_id, reason)


def invite_partner(campaign_id: int, partner_id: int, user_id: int) -> CampaignApplication:
    """Staff grant a partner access to a campaign of any visibility (an invitation: an approved
    application) and commit: :func:`partnernet.catalog.access.grant_access`. Granting access a
    partner has already changes nothing. Raises NotFound (campaign), ValidationError
    (``unknown_partner``)."""
    return access.grant_access(campaign_id, partner_id, user_id)[0]


def applications_query(*, status: str | None = None, campaign_id: int | None = None):
    """Applications, newest first, optionally by ``status`` and ``campaign_id`` (staff lists)."""
    stmt = select(CampaignApplication).order_by(CampaignApplication.id.desc())
    if status:
        stmt = stmt.where(CampaignApplication.status == status)
    if campaign_id:
        stmt = stmt.where(CampaignApplication.campaign_id == campaign_id)
    return stmt
