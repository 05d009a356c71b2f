"""Who may promote which campaign (CONTRACT §5 (v2) "What a partner may do and see").

One rule, :func:`promotion_refusal`, decides whether a partner may promote a campaign; the
link use case (``POST /links`` with a partner key, the portal's link builder), the portal's
marketplace and the link builder's campaign list all ask it, directly or through
:func:`check_promotion`, :func:`may_promote` and :func:`promotable_campaigns`.

A campaign's ``visibility``:

- ``"public"`` (the default, and what every v1 campaign is): any approved partner may promote
  it at once. A partner whose application to it staff rejected (or whose access staff
  revoked) may not: a staff decision about one partner stands.
- ``"approval"``: partners apply in the portal; staff decide, or the campaign's
  ``auto_approve_partners`` approves at once. Only an approved application opens it.
- ``"invite_only"``: hidden from partners without access; only staff grant access
  (:func:`grant_access`, ``POST /campaigns/<id>/partners``).

Access is stored as a :class:`~partnernet.models.CampaignApplication` (one per partner and
campaign): an invitation or a grant is an application approved by staff.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..clock import utcnow
from ..errors import Forbidden, InvalidState, NotFound, ValidationError
from ..extensions import db
from ..models import Campaign, CampaignApplication, Partner

#: Campaign visibilities (CONTRACT §5 (v2) ``POST /campaigns`` ``visibility``).
VISIBILITIES = ("public", "approval", "invite_only")
DEFAULT_VISIBILITY = "public"

NOT_APPROVED = "partner_not_approved"
NOT_AVAILABLE = "campaign_not_available"


def visibility_of(campaign: Campaign) -> str:
    """The campaign's visibility; a row without one (older data) is ``"public"``."""
    return campaign.visibility if campaign.visibility in VISIBILITIES else DEFAULT_VISIBILITY


def promotion_refusal(partner_status: str | None, visibility: str | None,
                      application_status: str | None) -> str | None:
    """THE rule: why a partner may not promote a campaign, or None when it may.

    ``partner_status``: the partner's status (only ``"approved"`` partners promote anything);
    ``visibility``: the campaign's (None or unknown counts as ``"public"``);
    ``application_status``: the partner's application to the campaign (``"pending"``,
    ``"approved"``, ``"rejected"``, or None without one; a staff grant is ``"approved"``).
    Returns ``"partner_not_approved"``, ``"campaign_not_available"`` or None.
    CONTRACT §5 (v2): a public campaign, or one whose application or invitation was approved.
    """
    if partner_status != "approved":
        return NOT_APPROVED
    if application_status == "approved":
        return None
    if (visibility if visibility in VISIBILITIES else DEFAULT_VISIBILITY) == "public":
        return NOT_AVAILABLE if application_status == "rejected" else None
    return NOT_AVAILABLE


def application_status(partner_id: int, campaign_id: int) -> str | None:
    """The status of the partner's application to the campaign, None without one."""
    return db.session.scalar(select(CampaignApplication.status).where(
        CampaignApplication.partner_id == partner_id, CampaignApplication.campaign_id == campaign_id))


def not_available() -> Forbidden:
    """The 403 ``campaign_not_available`` a partner gets for a campaign it may not promote, worded
    the same whether the campaign is hidden or does not exist (an invite-only campaign's existence
    is not revealed)."""
    return Forbidden("this campaign is not available to this partner (it needs an approved application or "
                     "an invitation)", code=NOT_AVAILABLE, field="campaign_id")


def check_promotion(partner: Partner, campaign: Campaign | None) -> None:
    """Raise unless ``partner`` may promote ``campaign`` (:func:`promotion_refusal`):
    InvalidState 409 ``partner_not_approved`` (CONTRACT §5 ``POST /links``) or Forbidden 403
    ``campaign_not_available`` (CONTRACT §5 (v2)); a missing ``campaign`` (None) is refused as a
    hidden one is, so a partner cannot tell whether a campaign exists."""
    if campaign is None:  # answered as a hidden campaign is (after the partner's own status)
        refusal = NOT_APPROVED if partner.status != "approved" else NOT_AVAILABLE
    else:
        refusal = promotion_refusal(partner.status, visibility_of(campaign),
                                    application_status(partner.id, campaign.id))
    if refusal == NOT_APPROVED:
        raise InvalidState(f"partner {partner.id} is {partner.status}, not approved", code=NOT_APPROVED,
                           field="partner_id")
    if refusal == NOT_AVAILABLE:
        raise not_available()


def may_promote(partner_id: int, campaign_id: int) -> bool:
    """True when the partner and the campaign exist and :func:`promotion_refusal` allows it."""
    partner = db.session.get(Partner, partner_id)
    campaign = db.session.get(Campaign, campaign_id)
    if partner is None or campaign is None:
        return False
    return promotion_refusal(partner.status, visibility_of(campaign),
                             application_status(partner_id, campaign_id)) is None


def applications_of(partner_id: int) -> dict[int, CampaignApplication]:
    """The partner's applications by campaign id."""
    return {a.campaign_id: a for a in db.session.scalars(
        select(CampaignApplication).where(CampaignApplication.partner_id == partner_id))}


def promotable_campaigns(partner_id: int, *, active_only: bool = True) -> list[Campaign]:
    """The campaigns the partner may promote (:func:`promotion_refusal`), ordered by name then
    id; ``active_only`` leaves out paused ones (the link builder's and postback page's lists)."""
    partner = db.session.get(Partner, partner_id)
    if partner is None or partner.status != "approved":
        return []
    apps = applications_of(partner_id)
    stmt = select(Campaign).order_by(Campaign.name, Campaign.id)
    if active_only:
        stmt = stmt.where(Campaign.status == "active")
    return [c for c in db.session.scalars(stmt)
            if promotion_refusal(partner.status, visibility_of(c),
                                 apps[c.id].status if c.id in apps else None) is None]


def _lock_application(partner_id: int, campaign_id: int) -> CampaignApplication:
    """The (partner, campaign) application row, inserted as ``pending`` when there is none
    (``ON CONFLICT DO NOTHING``: concurrent grants meet one row), read under a row lock on
    PostgreSQL. Does not commit."""
    insert = pg_insert if db.session.get_bind().dialect.name == "postgresql" else sqlite_insert
    db.session.execute(insert(CampaignApplication).values(
        partner_id=partner_id, campaign_id=campaign_id, status="pending", message="", created_at=utcnow(),
    ).on_conflict_do_nothing(index_elements=["partner_id", "campaign_id"]))
    stmt = select(CampaignApplication).where(CampaignApplication.partner_id == partner_id,
                                             CampaignApplication.campaign_id == campaign_id)
    if db.session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return db.session.scalar(stmt.execution_options(populate_existing=True))


def grant_in_session(partner_id: int, campaign_id: int,
                     user_id: int | None) -> tuple[CampaignApplication, bool]:
    """Give the partner access to the campaign inside the caller's transaction (no commit): its
    application becomes ``approved`` (created when missing; a pending or rejected one is
    approved), audited as ``application.grant``. Returns (application, True when access is new;
    False when it was approved already). The caller checks that both rows exist."""
    app = _lock_application(partner_id, campaign_id)
    if app.status == "approved":
        return app, False
    before = {"status": app.status}
    app.status = "approved"
    app.decided_at = utcnow()
    app.decided_by = user_id
    app.reason = None
    from ..audit import record

    record(user_id, "application.grant", "campaign_application", app.id, before, {"status": "approved"})
    return app, True


def grant_access(campaign_id: int, partner_id: int, user_id: int | None) -> tuple[CampaignApplication, bool]:
    """Staff grant a partner access to a campaign and commit (CONTRACT §5 (v2)
    ``POST /campaigns/<id>/partners``): an approved application, for any visibility.

    Returns (application, created): ``created`` True when the partner had no access before
    (201), False when it had (200, nothing changes). Raises NotFound (campaign) and
    ValidationError 400 ``unknown_partner``. Access takes effect once the partner itself is
    approved (:func:`promotion_refusal`)."""
    if db.session.get(Campaign, campaign_id) is None:
        raise NotFound(f"no campaign {campaign_id}")
    if db.session.get(Partner, partner_id) is None:
        raise ValidationError(f"no partner {partner_id}", code="unknown_partner", field="partner_id")
    app, created = grant_in_session(partner_id, campaign_id, user_id)
    db.session.commit()
    return app, created
