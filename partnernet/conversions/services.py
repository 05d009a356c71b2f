"""Recording conversions and changing their status (CONTRACT §3 steps 5-7, §5).

These are the building blocks that the postback, the tracker (CPC ``click`` and
CPM ``impression`` conversions) and staff actions share. They do **not**
commit: the calling use case commits once, at its end. Ledger postings follow
through :func:`partnernet.ledger.services.sync_conversion`, queued here with a
deterministic job id and run after commit.

Race safety (ARCHITECTURE): duplicates are stopped by the unique constraint on
(campaign, event, dedup_key), inserted inside a SAVEPOINT; the budget is checked
and ``spent_minor`` moved under a row lock on the campaign (``SELECT … FOR
UPDATE`` on PostgreSQL; SQLite serialises writers).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from .. import queue
from ..clients.caps import cap_rejection, has_caps, refresh_cap_state
from ..clock import utcnow
from ..errors import InvalidState
from ..extensions import db
from ..models import Campaign, CampaignEvent, Conversion
from ..money import percent_of

SYNC_JOB = "partnernet.ledger.tasks.sync_conversion_job"

# Status changes a postback may make on an existing conversion (CONTRACT §3 step 5).
POSTBACK_TRANSITIONS = {
    ("pending", "approved"),
    ("pending", "rejected"),
    ("pending", "reversed"),
    ("approved", "reversed"),
}


@dataclass
class Recorded:
    """Result of :func:`record_conversion`: the row, and whether this call created it."""

    conversion: Conversion
    created: bool


def dedup_key(txn_id: str | None, click_id: str | None) -> str:
    """The dedup key of CONTRACT §3 step 5: ``t:<txn_id>``, else ``c:<click_id>``."""
    if txn_id:
        return "t:" + txn_id
    if click_id:
        return "c:" + click_id
    raise ValueError("a conversion needs a txn_id or a click_id")


def client_fee_for(event: CampaignEvent, amount_minor: int | None) -> int:
    """The client fee in minor units: the fixed fee, or ``amount × percent / 100`` rounded half up
    (CONTRACT §4). A percent event without an amount has fee 0 (the postback refuses it earlier)."""
    if event.client_fee_percent is not None:
        return percent_of(amount_minor or 0, event.client_fee_percent)
    return int(event.client_fee_minor or 0)


def find_existing(campaign_id: int, event_key: str, key: str) -> Conversion | None:
    """The conversion with this (campaign, event, dedup key), or None."""
    return db.session.scalar(
        select(Conversion).where(
            Conversion.campaign_id == campaign_id,
            Conversion.event_key == event_key,
            Conversion.dedup_key == key,
        )
    )


def lock_campaign(campaign_id: int) -> Campaign:
    """Load the campaign with a row lock (PostgreSQL ``FOR UPDATE``; no-op on SQLite) so that
    its ``spent_minor`` and budget are read and moved by one transaction at a time."""
    stmt = select(Campaign).where(Campaign.id == campaign_id).execution_options(populate_existing=True)
    if db.session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    else:
        # SQLite: a no-op UPDATE takes the database write lock before anything is read, so two
        # writers never work from the same stale snapshot (and never fail upgrading a read lock).
        db.session.execute(
            update(Campaign).where(Campaign.id == campaign_id).values(spent_minor=Campaign.spent_minor)
            .execution_options(synchronize_session=False)
        )
    return db.session.scalar(stmt)


def _move_spent(campaign: Campaign, delta: int) -> None:
    if not delta:
        return
    was_over = campaign.over_budget
    db.session.execute(
        update(Campaign).where(Campaign.id == campaign.id).values(spent_minor=Campaign.spent_minor + delta)
    )
    db.session.refresh(campaign, ["spent_minor"])
    if campaign.over_budget != was_over:
        from ..tracking.state import bump_state_version

        bump_state_version()


def queue_ledger_sync(conversion: Conversion) -> None:
    """Ask for the ledger sync of ``conversion`` after commit: the coalesced split job, which finds
    every conversion whose ledger lags its status (:func:`partnernet.ledger.tasks.sync_lagging_job`).
    A test conversion (``is_test``, from the staff "send test postback" button) never reaches
    the ledger: nothing is queued for it."""
    if conversion.is_test:
        return
    from ..ledger.tasks import schedule_ledger_sync

    schedule_ledger_sync()
    from ..partners.postbacks import queue_for_conversion  # the partner's own postback, if it set one

    queue_for_conversion(conversion)


def record_conversion(
    *,
    campaign_id: int,
    event: CampaignEvent,
    link_id: int,
    partner_id: int,
    click_id: str | None,
    click_at: datetime | None,
    txn_id: str | None,
    amount_minor: int | None,
    duration_s: int | None,
    status: str,
    reason: str | None,
    key: str | None = None,
    is_test: bool = False,
) -> Recorded:
    """Record a new conversion, or return the existing one with the same dedup key.

    ``reason`` is the first business-rule rejection found by the caller (CONTRACT §3
    step 6, before ``over_budget``), or None. This function adds ``over_budget`` (its fee
    would take spend past the budget), then ``over_daily_cap`` / ``over_monthly_cap`` (its fee
    would take the local day's or month's spend past a cap, :mod:`partnernet.clients.caps`), and turns a first ``rejected``/``reversed`` status into
    a ``client_rejected`` rejection. ``status`` is the posted status (``pending`` or
    ``approved`` create; see above for the others).

    Returns :class:`Recorded` with ``created=False`` when the dedup key already existed
    (the caller then applies :func:`apply_postback_status`). Does not commit.
    """
    key = key or dedup_key(txn_id, click_id)
    existing = find_existing(campaign_id, event.key, key)
    if existing is not None:
        return Recorded(existing, False)

    campaign = lock_campaign(campaign_id)
    fee = client_fee_for(event, amount_minor)
    now = utcnow()
    if reason is None and campaign.budget_minor is not None and campaign.spent_minor + fee > campaign.budget_minor:
        reason = "over_budget"
    if reason is None:
        reason = cap_rejection(campaign, fee, now)  # over_daily_cap / over_monthly_cap, under the same lock
    if reason is None and status in ("rejected", "reversed"):
        reason = "client_rejected"
    final_status = "rejected" if reason else status
    conv = Conversion(
        campaign_id=campaign_id,
        event_key=event.key,
        link_id=link_id,
        partner_id=partner_id,
        click_id=click_id,
        txn_id=txn_id,
        dedup_key=key,
        status=final_status,
        reason=reason,
        currency=campaign.currency,
        amount_minor=amount_minor,
        client_fee_minor=fee,
        payout_minor=event.payout_minor,
        payout_percent=event.payout_percent,
        duration_s=duration_s,
        created_at=now,
        click_at=click_at,
        hold_until=now + timedelta(days=campaign.hold_days or 0),
        is_test=is_test,
    )
    if final_status == "approved":
        conv.approved_at = now
        conv.approved_by = "postback"
    if final_status == "rejected":
        conv.rejected_at = now
    try:
        with db.session.begin_nested():
            db.session.add(conv)
    except IntegrityError:
        existing = find_existing(campaign_id, event.key, key)
        if existing is None:  # pragma: no cover - a different constraint failed
            raise
        return Recorded(existing, False)
    if final_status != "rejected" and not is_test:  # a test conversion is never money
        _move_spent(campaign, fee)
        if has_caps(campaign):
            db.session.flush()
            refresh_cap_state(campaign, now)
        queue_ledger_sync(conv)
    return Recorded(conv, True)


def apply_postback_status(conv: Conversion, status: str) -> bool:
    """Apply a postback's ``status`` to an existing conversion (CONTRACT §3 step 5).

    pending → approved, pending → rejected (reason ``client_rejected``), pending →
    reversed, approved → reversed; anything else changes nothing. Returns True when the
    status changed. Does not commit.
    """
    if (conv.status, status) not in POSTBACK_TRANSITIONS:
        return False
    _transition(conv, status, by="postback", reason="client_rejected" if status == "rejected" else None)
    return True


def lock_conversion_for_change(conversion_id: int) -> Conversion | None:
    """Lock a conversion for a status change, in the house lock order: its campaign row
    first, then the conversion row (PostgreSQL ``FOR UPDATE``; SQLite serialises writers).
    Every path that changes a conversion's status takes the locks in this order, so a
    postback and a staff action on the same conversion cannot deadlock. Returns the
    conversion re-read under the lock, or None."""
    campaign_id = db.session.scalar(select(Conversion.campaign_id).where(Conversion.id == conversion_id))
    if campaign_id is None:
        return None
    lock_campaign(campaign_id)
    stmt = select(Conversion).where(Conversion.id == conversion_id).execution_options(populate_existing=True)
    if db.session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return db.session.scalar(stmt)


def staff_set_status(conversion_id: int, status: str, *, user_id: int, reason: str | None = None) -> Conversion:
    """Staff approves or rejects a pending conversion (CONTRACT §5; may approve before the
    hold period ends). Raises NotFound, or InvalidState (409) when the conversion is not
    pending. Does not commit; ledger postings are made by the caller through ``sync_conversion``."""
    conv = lock_conversion_for_change(conversion_id)
    if conv is None:
        from ..errors import NotFound

        raise NotFound(f"no conversion {conversion_id}")
    if conv.status != "pending":
        raise InvalidState(f"conversion {conversion_id} is {conv.status}, not pending")
    _transition(conv, status, by=f"user:{user_id}", reason=reason)
    return conv


def auto_approve(conv: Conversion) -> bool:
    """Approve ``conv`` (locked by the caller) because its hold period is over: pending →
    approved with ``approved_by`` ``"auto"``. Returns False, changing nothing, when it is not
    pending. Does not commit; the caller posts the ledger (see ``conversions.review``)."""
    if conv.status != "pending":
        return False
    _transition(conv, "approved", by="auto", reason=None)
    return True


def _transition(conv: Conversion, status: str, *, by: str, reason: str | None) -> None:
    """Move ``conv`` to ``status``, keep the campaign's spend in step, queue the ledger sync."""
    old = conv.status
    now = utcnow()
    campaign = lock_campaign(conv.campaign_id)
    conv.status = status
    if status == "approved":
        conv.approved_at = now
        conv.approved_by = by
    elif status == "rejected":
        conv.rejected_at = now
        conv.reason = reason or "rejected_by_staff"
    elif status == "reversed":
        conv.reversed_at = now
    if old in ("pending", "approved") and status in ("rejected", "reversed") and not conv.is_test:
        _move_spent(campaign, -conv.client_fee_minor)
        if has_caps(campaign):
            db.session.flush()
            refresh_cap_state(campaign, now)
    queue_ledger_sync(conv)
