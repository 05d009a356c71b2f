"""Client use cases (issue 5): a client's own campaigns, their limits, pause/resume, postback setup.

Every state-changing function commits once at its end. ``as_client_id`` is the signed-in
client's id: the campaign must be its own, else :class:`~partnernet.errors.NotFound` (we never
reveal other tenants' objects). Money travels in as decimal strings in the campaign's
currency and is stored as int minor units (CONTRACT §4).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from .. import money
from ..catalog import audit_states
from ..catalog import services as catalog
from ..clock import utcnow
from ..conversions.services import lock_campaign
from ..errors import NotFound, ValidationError
from ..extensions import db
from ..models import Campaign, Client, Conversion
from ..tracking.state import bump_state_version
from .caps import cap_usage, refresh_cap_state

LIMIT_FIELDS = ("budget", "daily_cap", "monthly_cap")


def _parse_limit(value: str | None, currency: str, field: str) -> int | None:
    """A limit as minor units: ``None`` or ``""`` = no limit; else a decimal string (0 allowed)."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if not isinstance(value, str):
        raise ValidationError(f'{field} must be a decimal string such as "500.00"', code="bad_amount", field=field)
    try:
        return money.parse_amount(value.strip(), currency, allow_zero=True)
    except money.MoneyError as err:
        raise ValidationError(f"{field}: {err.message}", code=err.code, field=field) from None


def set_campaign_limits(
    campaign_id: int, changes: dict[str, str | None], *, as_client_id: int | None = None,
    actor_user_id: int | None = None, audited: bool = True,
) -> Campaign:
    """Set a campaign's ``budget``, ``daily_cap`` and/or ``monthly_cap`` and commit.

    ``changes`` maps any of :data:`LIMIT_FIELDS` to a decimal string in the campaign's currency
    (``"500.00"``) or None / ``""`` for no limit. Raising or lowering takes effect on the next
    conversion and the next click: the campaign row is locked (the lock of
    :func:`~partnernet.conversions.services.record_conversion`), the cap state is recomputed and
    the redirect state version bumped. A budget below the spend already made is allowed (the
    campaign then sends clicks to the fallback, ``over_budget``).

    Audited as ``campaign.limits`` by ``actor_user_id`` with the values that changed (minor
    units), in the same transaction; no row when nothing changed (``audited=False``: the caller
    records its own row).

    Raises NotFound (not this client's campaign), ValidationError (``unknown_field``,
    ``bad_amount``)."""
    for name in changes:
        if name not in LIMIT_FIELDS:
            raise ValidationError(f"unknown field {name!r}", code="unknown_field", field=name)
    camp = catalog.get_campaign(campaign_id, client_id=as_client_id)
    currency = camp.currency
    parsed = {name: _parse_limit(value, currency, name) for name, value in changes.items()}
    camp = lock_campaign(campaign_id)
    before = audit_states.limit_state(camp)
    if "budget" in parsed:
        camp.budget_minor = parsed["budget"]
    if "daily_cap" in parsed:
        camp.daily_cap_minor = parsed["daily_cap"]
    if "monthly_cap" in parsed:
        camp.monthly_cap_minor = parsed["monthly_cap"]
    db.session.flush()
    if audited:
        audit_states.record_changes(actor_user_id, "campaign.limits", "campaign", camp.id, before,
                                    audit_states.limit_state(camp))
    refresh_cap_state(camp, utcnow())
    bump_state_version()
    db.session.commit()
    return camp


def set_campaign_status(campaign_id: int, status: str, *, as_client_id: int | None,
                        actor_user_id: int | None = None) -> Campaign:
    """Pause (``"paused"``) or resume (``"active"``) a campaign and commit; effective on the next
    click (CONTRACT §5 ``PATCH /campaigns/<id>``). Audited as ``campaign.pause`` /
    ``campaign.resume`` by ``actor_user_id`` (nothing when the status was already that).
    Raises NotFound, ValidationError ``bad_status``."""
    return catalog.update_campaign(campaign_id, {"status": status}, as_client_id=as_client_id,
                                   actor_user_id=actor_user_id)


def get_client(client_id: int) -> Client:
    """The client ``client_id``; raises NotFound."""
    client = db.session.get(Client, client_id)
    if client is None:
        raise NotFound(f"no client {client_id}")
    return client


@dataclass
class CampaignSummary:
    """One campaign on a client's overview: spend against budget and caps (minor units) and KPIs."""

    campaign: Campaign
    spent_minor: int
    budget_minor: int | None
    day_spent_minor: int
    month_spent_minor: int
    conversions: dict[str, int]  # status -> count
    fallback_reason: str | None

    @property
    def budget_left_minor(self) -> int | None:
        """Budget minus spend (never below 0), or None without a budget."""
        return None if self.budget_minor is None else max(0, self.budget_minor - self.spent_minor)

    @property
    def budget_percent(self) -> int | None:
        """Spend as a whole percent of the budget (for a bar), capped at 100; None without one."""
        if not self.budget_minor:
            return None if self.budget_minor is None else 100
        return min(100, self.spent_minor * 100 // self.budget_minor)


def campaign_summaries(client_id: int, now: datetime | None = None) -> list[CampaignSummary]:
    """The client's campaigns (ordered by id) with spend, cap usage and conversion counts per status."""
    now = now or utcnow()
    camps = list(db.session.scalars(select(Campaign).where(Campaign.client_id == client_id).order_by(Campaign.id)))
    counts: dict[int, dict[str, int]] = {}
    if camps:
        stmt = (
            select(Conversion.campaign_id, Conversion.status, func.count())
            .where(Conversion.campaign_id.in_([c.id for c in camps]))
            .group_by(Conversion.campaign_id, Conversion.status)
        )
        for cid, status, n in db.session.execute(stmt):
            counts.setdefault(cid, {})[status] = int(n)
    out = []
    for c in camps:
        usage = cap_usage(c, now)
        reason = None
        if c.status != "active":
            reason = "paused"
        elif c.over_budget:
            reason = "over_budget"
        elif c.cap_reached_reason and c.cap_reached_until and now < c.cap_reached_until:
            reason = c.cap_reached_reason
        out.append(
            CampaignSummary(
                campaign=c,
                spent_minor=c.spent_minor,
                budget_minor=c.budget_minor,
                day_spent_minor=usage["day"][0],
                month_spent_minor=usage["month"][0],
                conversions=counts.get(c.id, {}),
                fallback_reason=reason,
            )
        )
    return out


def signature_example(client: Client, params: dict[str, str]) -> tuple[str, str]:
    """The CONTRACT §3 signature of ``params`` (``key`` and ``ts`` included, ``sig`` left out) with
    the client's postback secret: returns (the signed string ``name=value&...`` sorted by name,
    the hex HMAC-SHA256)."""
    from ..postbacks.params import sign, signature_base

    pairs = [(k, v) for k, v in params.items() if k != "sig"]
    return signature_base(pairs), sign(client.postback_secret, pairs)
