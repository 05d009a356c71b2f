"""Recording conversions and changing their status (CONTRACT §3 steps 5-7, §5).

These are the building blocks that the postback, the tracker (CPC ``click`` and
CPM ``impression`` conversions) and staff actions share. They do **not**
commit: the calling use case commits once, at its end. Ledger postings follow
through :func:`partnernet.ledger.services.sync_conversion`, queued here with a
deterministic job id and run after commit.

Race safety (ARCHITECTURE): duplicates are stopped by the unique constraint on
(campaign, event, dedup_key); the budget is checked and ``spent_minor`` moved under
a row lock on the campaign (PostgreSQL row lock; SQLite serialises writers), taken
before the conversion row is written, in every path (the house lock order).

Every new conversion first reads the terms in force (one query: the partner's status, tier,
recruiters, overrides and bonuses; CONTRACT v2 §4 terms fixed at recording, v2 §3 rule 6
``partner_suspended``) and stores them on the row. Then two paths record it
(:func:`record_conversion`):

- the fast path, for a live conversion with no rejection reason yet on a campaign without
  spend caps: one ``UPDATE campaigns … WHERE <budget allows the fee> RETURNING`` takes the
  row lock, checks the budget against the locked row and moves the spend in one statement;
  then one ``INSERT … ON CONFLICT DO NOTHING RETURNING id`` writes the conversion (a
  concurrent twin that committed first makes it write nothing: the spend is given back and
  the twin's conversion returned);
- the locked path for everything else (a budget that the fee would pass, spend caps, a
  rejection, a test conversion): ``SELECT … FOR UPDATE`` of the campaign, every check, and
  the insert inside a SAVEPOINT.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from .. import queue
from ..clients.caps import cap_rejection, has_caps, refresh_cap_state
from ..clock import utcnow
from ..errors import InvalidState
from ..extensions import db
from ..ledger.payout_rules import recording_terms
from ..models import Campaign, CampaignEvent, Conversion
from ..money import percent_of

SYNC_JOB = "partnernet.ledger.tasks.sync_conversion_job"

#: The rejection reasons that come before ``partner_suspended`` (CONTRACT §3 step 6 order).
_BEFORE_PARTNER_SUSPENDED = ("bot_click", "fallback_click")

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
    (CONTRACT §4). A percent event without an amount has fee 0 (the postback refuses it earlier).
    ``event``: a :class:`~partnernet.models.CampaignEvent` or anything with its pricing
    attributes (:class:`partnernet.postbacks.lookups.EventTerms`)."""
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


# Statements of the hot paths, built once (Core, bound parameters): building and caching a
# statement per call costs more CPU than running it.
_CONV = Conversion.__table__
_CAMP = Campaign.__table__
_EXISTING = select(_CONV.c.id, _CONV.c.status).where(
    _CONV.c.campaign_id == bindparam("campaign_id"),
    _CONV.c.event_key == bindparam("event_key"),
    _CONV.c.dedup_key == bindparam("dedup_key"),
)
_ADD_SPENT = (
    update(_CAMP).where(_CAMP.c.id == bindparam("cid"))
    .values(spent_minor=_CAMP.c.spent_minor + bindparam("delta"))
    .returning(_CAMP.c.spent_minor, _CAMP.c.budget_minor)
)
# The fast path's budget check and spend move: no row when the fee would pass the budget or the
# campaign has caps (or does not exist).
_TAKE_FEE = (
    update(_CAMP)
    .where(_CAMP.c.id == bindparam("cid"),
           _CAMP.c.daily_cap_minor.is_(None), _CAMP.c.monthly_cap_minor.is_(None),
           or_(_CAMP.c.budget_minor.is_(None), _CAMP.c.spent_minor + bindparam("fee") <= _CAMP.c.budget_minor))
    .values(spent_minor=_CAMP.c.spent_minor + bindparam("fee"))
    .returning(_CAMP.c.spent_minor, _CAMP.c.budget_minor, _CAMP.c.currency, _CAMP.c.hold_days)
)
_DEDUP_COLUMNS = ("campaign_id", "event_key", "dedup_key")
_INSERT_NEW = {  # INSERT ... ON CONFLICT (campaign, event, dedup key) DO NOTHING RETURNING id
    name: dialect_insert(_CONV).on_conflict_do_nothing(index_elements=_DEDUP_COLUMNS).returning(_CONV.c.id)
    for name, dialect_insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}


def existing_status(campaign_id: int, event_key: str, key: str) -> tuple[int, str] | None:
    """``(id, status)`` of the conversion with this (campaign, event, dedup key), or None: one
    query on the unique index, no lock, no ORM object (CONTRACT §3 step 5 for a plain repeat)."""
    row = db.session.connection().execute(
        _EXISTING, {"campaign_id": campaign_id, "event_key": event_key, "dedup_key": key}).first()
    return (row[0], row[1]) if row is not None else None


def lock_campaign(campaign_id: int) -> Campaign:
    """Load the campaign with a row lock (PostgreSQL ``FOR NO KEY UPDATE``; no-op on SQLite) so
    that its ``spent_minor`` and budget are read and moved by one transaction at a time. ``NO KEY``:
    rows that merely reference the campaign (clicks, rollups; their foreign-key checks take ``FOR
    KEY SHARE``) are not held up by it, so a ledger job writing rollups never waits for a
    campaign lock while it holds account locks a staff action needs (no deadlock)."""
    stmt = select(Campaign).where(Campaign.id == campaign_id).execution_options(populate_existing=True)
    if db.session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(key_share=True)
    else:
        # SQLite: a no-op UPDATE takes the database write lock before anything is read, so two
        # writers never work from the same stale snapshot (and never fail upgrading a read lock).
        db.session.execute(
            update(Campaign).where(Campaign.id == campaign_id).values(spent_minor=Campaign.spent_minor)
            .execution_options(synchronize_session=False)
        )
    return db.session.scalar(stmt)


def _over(spent: int, budget: int | None) -> bool:
    return budget is not None and spent >= budget


def spent_moved(campaign_id: int, spent: int, budget: int | None, delta: int) -> None:
    """After ``spent_minor`` of campaign ``campaign_id`` moved by ``delta`` to ``spent``: keep a
    loaded Campaign object of this session in step (no re-read), and bump the state version when
    the campaign crossed its budget either way (the redirect's fallback, CONTRACT §1)."""
    campaign = db.session.identity_map.get(identity_key(Campaign, campaign_id))
    if campaign is not None:
        set_committed_value(campaign, "spent_minor", spent)
    if _over(spent - delta, budget) != _over(spent, budget):
        from ..tracking.state import bump_state_version

        bump_state_version()


def _add_spent(campaign_id: int, delta: int) -> None:
    """Move ``spent_minor`` by ``delta`` minor units in one statement (the caller holds the
    campaign's row lock), then :func:`spent_moved`."""
    spent, budget = db.session.connection().execute(_ADD_SPENT, {"cid": campaign_id, "delta": delta}).one()
    spent_moved(campaign_id, spent, budget, delta)


def _move_spent(campaign: Campaign, delta: int) -> None:
    if delta:
        _add_spent(campaign.id, delta)


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
    require_approved_partner: bool = False,
    customer_id: str | None = None,
) -> Recorded:
    """Record a new conversion, or return the existing one with the same dedup key.

    ``reason`` is the first business-rule rejection found by the caller (CONTRACT §3
    step 6, before ``over_budget``), or None. This function adds ``over_budget`` (its fee
    would take spend past the budget), then ``over_daily_cap`` / ``over_monthly_cap`` (its fee
    would take the local day's or month's spend past a cap, :mod:`partnernet.clients.caps`), and turns a first ``rejected``/``reversed`` status into
    a ``client_rejected`` rejection. ``status`` is the posted status (``pending`` or
    ``approved`` create; see above for the others).

    ``event``: the :class:`~partnernet.models.CampaignEvent`, or its
    :class:`~partnernet.postbacks.lookups.EventTerms` snapshot (same attributes).

    Terms fixed at recording (CONTRACT v2 §4): the payout rule in force now (event payout, the
    partner's tier, a per-partner override, a performance bonus reached by now) and the converter's
    recruiters are resolved here, in one query
    (:func:`partnernet.ledger.payout_rules.recording_terms`), and stored on the row; the split job
    uses them however late it runs. The same query reads the partner's status as committed now:
    with ``require_approved_partner`` (postbacks, CONTRACT v2 §3 rule 6) a partner that is not
    approved turns the conversion into a ``partner_suspended`` rejection unless ``reason`` is
    ``bot_click`` or ``fallback_click`` (which come first); a later reason given by the caller
    (``outside_window``, ``duplicate_click``, ``below_min_*``) gives way to it. The tracker's
    ``click`` and ``impression`` conversions leave it False: they were judged when the click or
    impression happened (a suspended partner's clicks go to the fallback and never become
    conversions), so a click made before a suspension and written after it still counts.

    Returns :class:`Recorded` with ``created=False`` when the dedup key already existed
    (the caller then applies :func:`apply_postback_status`). Does not commit. A live
    conversion with no reason on a campaign without caps takes the fast path (see the module
    docstring): two statements, no SAVEPOINT; everything else the locked path, with the same
    rules in the same order.
    """
    key = key or dedup_key(txn_id, click_id)
    fee = client_fee_for(event, amount_minor)
    now = utcnow()
    values = {
        "campaign_id": campaign_id, "event_key": event.key, "link_id": link_id, "partner_id": partner_id,
        "click_id": click_id, "txn_id": txn_id, "dedup_key": key, "amount_minor": amount_minor,
        "client_fee_minor": fee, "client_fee_percent": event.client_fee_percent,
        "payout_minor": event.payout_minor, "payout_percent": event.payout_percent,
        "duration_s": duration_s, "created_at": now, "click_at": click_at, "is_test": is_test,
        "customer_id": customer_id,  # the advertiser's customer ID, CONTRACT v2 §3
    }
    terms = recording_terms(campaign_id=campaign_id, partner_id=partner_id, event_key=event.key,
                            payout_minor=event.payout_minor, payout_percent=event.payout_percent,
                            fee_minor=fee, at=now)
    if terms is not None:
        values.update(terms.columns())
        if (require_approved_partner and terms.partner_status != "approved"
                and reason not in _BEFORE_PARTNER_SUSPENDED):
            reason = "partner_suspended"
    from .flags import flag_columns  # fraud flags, fixed with the row on both paths (CONTRACT v2 §5)

    values.update(flag_columns(values, event, status=status, reason=reason, is_test=is_test))
    if reason is None and status in ("pending", "approved") and not is_test:
        recorded = _record_fast(values, status, now)
        if recorded is not None:
            return recorded

    existing = find_existing(campaign_id, event.key, key)
    if existing is not None:
        return Recorded(existing, False)

    campaign = lock_campaign(campaign_id)
    if reason is None and campaign.budget_minor is not None and campaign.spent_minor + fee > campaign.budget_minor:
        reason = "over_budget"
    if reason is None:
        reason = cap_rejection(campaign, fee, now)  # over_daily_cap / over_monthly_cap, under the same lock
    if reason is None and status in ("rejected", "reversed"):
        reason = "client_rejected"
    final_status = "rejected" if reason else status
    conv = Conversion(**_row_values(values, final_status, reason, campaign.currency, campaign.hold_days, now))
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


def _row_values(values: dict, status: str, reason: str | None, currency: str, hold_days: int | None,
                now: datetime) -> dict:
    """Every column of a new conversion: ``values`` (what the caller gave) plus its status,
    reason, currency, hold period and the time stamps its status implies."""
    approved = status == "approved"
    return {
        **values, "status": status, "reason": reason, "currency": currency,
        "hold_until": now + timedelta(days=hold_days or 0),
        "approved_at": now if approved else None, "approved_by": "postback" if approved else None,
        "rejected_at": now if status == "rejected" else None, "reversed_at": None, "ledger_status": None,
    }


def _record_fast(values: dict, status: str, now: datetime) -> Recorded | None:
    """The fast path of :func:`record_conversion` (module docstring) for a live conversion
    (``status`` pending or approved, no reason, not a test). Returns None, having changed
    nothing, when the locked path must decide: the fee would take spend past the budget, the
    campaign has spend caps (or does not exist), or the database cannot do it in two statements."""
    conn = db.session.connection()
    dialect = conn.dialect
    insert_new = _INSERT_NEW.get(dialect.name)
    if insert_new is None or not (dialect.update_returning and dialect.insert_returning):
        return None
    campaign_id, fee = values["campaign_id"], values["client_fee_minor"]
    moved = conn.execute(_TAKE_FEE, {"cid": campaign_id, "fee": fee}).first()
    if moved is None:
        return None
    spent, budget, currency, hold_days = moved
    spent_moved(campaign_id, spent, budget, fee)
    row = _row_values(values, status, None, currency, hold_days, now)
    new_id = conn.execute(insert_new, row).scalar()
    if new_id is None:  # a twin committed first (we waited for its lock): give the fee back
        _add_spent(campaign_id, -fee)
        return Recorded(find_existing(campaign_id, values["event_key"], values["dedup_key"]), False)
    conv = Conversion(id=new_id, **row)
    make_transient_to_detached(conv)  # the row exists: attach it as persistent, no second INSERT
    db.session.add(conv)
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


def apply_adjustment(conv: Conversion, amount_minor: int | None, event_percent) -> bool:
    """Apply a postback's ``status=adjusted`` with the sale amount ``amount_minor`` (int minor
    units) to ``conv``, locked by the caller (:func:`lock_conversion_for_change`) (CONTRACT v2 §3
    Adjustments): the fee and split are recomputed and the ledger difference posted by
    :func:`partnernet.ledger.adjustments.adjust_conversion`; the campaign's spend (and spend-cap
    state) moves by the fee difference. Returns True when something changed; False for a repeat
    of the amount or a conversion neither pending nor approved. Raises
    :class:`partnernet.ledger.adjustments.BadAdjustment` (400 ``bad_adjustment``). Does not commit."""
    from ..ledger.adjustments import adjust_conversion

    delta = adjust_conversion(conv, amount_minor, event_percent)
    if delta is None:
        return False
    if delta and not conv.is_test:
        campaign = lock_campaign(conv.campaign_id)
        _move_spent(campaign, delta)
        if has_caps(campaign):
            db.session.flush()
            refresh_cap_state(campaign, utcnow())
    return True


def lock_conversion_for_change(conversion_id: int) -> Conversion | None:
    """Lock a conversion for a status change, in the house lock order: its campaign row
    first, then the conversion row (PostgreSQL ``FOR NO KEY UPDATE``; SQLite serialises writers).
    Every path that changes a conversion's status takes the locks in this order, so a
    postback and a staff action on the same conversion cannot deadlock. Returns the
    conversion re-read under the lock, or None."""
    campaign_id = db.session.scalar(select(Conversion.campaign_id).where(Conversion.id == conversion_id))
    if campaign_id is None:
        return None
    lock_campaign(campaign_id)
    stmt = select(Conversion).where(Conversion.id == conversion_id).execution_options(populate_existing=True)
    if db.session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(key_share=True)
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
