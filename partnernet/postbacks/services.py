"""The postback use case (CONTRACT §3): check, record the conversion, log, commit once.

:func:`process_postback` runs the checks of CONTRACT §3 in their order:

1. 401 ``unauthorized`` (key, IP allow-list, ``ts``, ``sig``);
2. 400 without lookup (:func:`partnernet.postbacks.params.check_shape`);
3. 404 ``unknown_click`` / ``unknown_coupon`` / ``unknown_number`` / (v2) ``unknown_customer``;
4. 400 with the campaign (``unknown_event``, ``bad_amount``, ``currency_mismatch``,
   ``missing_amount``, ``missing_txn_id``);
5. 200 an existing conversion (status change by postback, an adjustment (v2), or a duplicate;
   400 ``bad_adjustment``);
6. 200 rejected by a business rule;
7. 201 created.

Every postback, answered or refused, is written to :class:`partnernet.models.PostbackLog`:
with the conversion in the same commit, or alone after a rollback when the conversion's
transaction failed. Unexpected errors never escape: they answer 503
``temporarily_unavailable`` (the advertiser should retry; nothing was recorded).

Cost. The reads of steps 1-4 (the client of the key, the link, the campaign and its events)
come from :mod:`partnernet.postbacks.lookups`: snapshots cached per process and invalidated
through the state version (with Redis), or one lean query each (without). A repeat (step 5)
is then one indexed query, answered without a lock unless its status changes; a new
conversion is one read of the terms in force (the partner's status, tier, recruiters, overrides
and bonuses, never cached: a suspension or a new override is seen by the very next postback) and
two statements on the fast path of :func:`partnernet.conversions.services.record_conversion`;
the log row is one INSERT; one commit. On PostgreSQL, :mod:`partnernet.postbacks.fastpath` first
tries steps 5-7 with the log in one statement for a repeat and two for a new live conversion
(autocommit, no ORM); whatever it does not take (changes, rejections, budget and caps, customers,
tests) it leaves untouched to the code below, which applies the same rules.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import current_app
from sqlalchemy import insert, select

from ..clock import utcnow
from ..conversions.services import (
    POSTBACK_TRANSITIONS,
    apply_adjustment,
    apply_postback_status,
    dedup_key,
    existing_status,
    lock_campaign,
    lock_conversion_for_change,
    record_conversion,
)
from ..extensions import db
from ..ledger.adjustments import BadAdjustment
from ..models import Conversion, PostbackLog
from ..money import MoneyError, is_currency, is_plain_positive_decimal, parse_amount
from ..signing import ClickRef
from ..text import is_clean
from . import customers, fastpath, lookups
from .lookups import CampaignTerms, ClientAuth, EventTerms, LinkInfo, Lookups
from .params import (
    Fields,
    RawParams,
    Refusal,
    check_shape,
    ip_allowed,
    loggable,
    signature_ok,
    single,
    ts_fresh,
)

log = logging.getLogger(__name__)

TRACKER_EVENTS = ("click", "impression")


@dataclass
class _Log:
    """What the postback log row will say; filled in as the checks learn more."""

    method: str
    remote_ip: str | None
    params: dict
    client_id: int | None = None
    campaign_id: int | None = None
    conversion_id: int | None = None
    is_test: bool = False
    began_clean: bool = False  # the session held no transaction when the postback began
    logged: bool = False  # the fast path wrote the row with its answer (postbacks.fastpath)

    def write(self, http_status: int, outcome: str, message: str | None) -> None:
        """Add the log row to the current transaction (one prebuilt INSERT, no ORM object)."""
        db.session.connection().execute(_INSERT_LOG, {
            "received_at": utcnow(),
            "method": (self.method or "")[:8],
            "remote_ip": (self.remote_ip or None) and self.remote_ip[:64],
            "client_id": self.client_id,
            "campaign_id": self.campaign_id,
            "params": self.params,
            "http_status": http_status,
            "outcome": outcome[:32],
            "conversion_id": self.conversion_id,
            "message": message,
            "is_test": self.is_test,
        })


_INSERT_LOG = insert(PostbackLog.__table__)


class _Refused(Exception):
    def __init__(self, refusal: Refusal):
        super().__init__(refusal.code)
        self.refusal = refusal


def _refuse(status: int, code: str, message: str) -> _Refused:
    return _Refused(Refusal(status, code, message))


@dataclass
class _Target:
    """What step 3 found: the link, and the click reference when the postback named a click."""

    link: LinkInfo
    ref: ClickRef | None
    bound_at: datetime | None = None  # credited through a customer's binding (CONTRACT v2 §3)


def process_postback(raw: RawParams, *, method: str, remote_ip: str | None,
                     test: bool = False, throttle=None) -> tuple[int, dict]:
    """Handle one postback (CONTRACT §3) and commit once; never raises.

    ``raw``: every parameter as sent (:class:`partnernet.postbacks.params.RawParams`; on a POST
    the query string and the body together). ``method``: ``"GET"`` or ``"POST"``.
    ``remote_ip``: the client IP as the app sees it (after the trusted proxy hops), checked
    against the client's ``ip_allowlist``.

    Returns ``(http_status, body)``, ``body`` being the JSON answer of CONTRACT §3:
    201 created ``{"ok": true, "conversion_id", "status", "duplicate": false}``, 200 existing
    (``"duplicate": true``, the status now), 200 rejected (``"status": "rejected", "reason"``),
    400/401/404 ``{"ok": false, "error", "message"}`` (413 ``too_large`` for a body that was
    too large to read), and 503 ``temporarily_unavailable`` when
    the database failed (logged; the advertiser may retry). Ids are strings.

    ``test=True`` is the staff console's "send test postback" (never the public endpoint): the
    same checks except the IP allow-list, and the conversion is recorded with ``is_test`` (never
    money: see ``conversions.services``); its log row is marked ``is_test``.

    ``throttle``: called with ``(status, outcome)`` for a refusal (4xx) before it is logged;
    it returns None to answer and log the refusal as usual, or ``(status, body)`` to answer
    instead with nothing written (the view's flood limit, :mod:`partnernet.postbacks.flood`).
    """
    ctx = _Log(method=method, remote_ip=remote_ip, params=loggable(raw), is_test=test,
               began_clean=not db.session().in_transaction())
    try:
        try:
            look = lookups.begin(read=fastpath.reader(is_test=test, session_was_clean=ctx.began_clean))
            status, body, outcome, message = _handle(raw, ctx, remote_ip, look)
        except _Refused as exc:
            r = exc.refusal
            db.session.rollback()
            ctx.conversion_id = None
            ctx.logged = False
            status, body, outcome, message = r.status, _error_body(r.code, r.message), r.code, r.message
        finally:
            lookups.end()
        if throttle is not None and 400 <= status < 500:
            instead = throttle(status, outcome)
            if instead is not None:
                db.session.rollback()
                return instead
        if not ctx.logged:
            ctx.write(status, outcome, message)
        session = db.session()
        if session.in_transaction() or session.info:  # nothing to commit or send after a fast duplicate
            session.commit()  # also sends what the fast path queued (ledger sync, partner postback)
        return status, body
    except Exception:  # noqa: BLE001 - a postback never answers 500
        log.exception("postback failed; params=%s", ctx.params)
        try:
            db.session.rollback()
        except Exception:  # noqa: BLE001
            log.exception("rollback failed")
        if ctx.logged:  # the fast path recorded and logged it: only the session's own commit failed
            return status, body
        message = "the postback could not be recorded now; retry later"
        ctx.conversion_id = None
        try:
            ctx.write(503, "temporarily_unavailable", message)
            db.session.commit()
        except Exception:  # noqa: BLE001
            log.exception("could not write the postback log either")
            try:
                db.session.rollback()
            except Exception:  # noqa: BLE001
                pass
        return 503, _error_body("temporarily_unavailable", message)


def _error_body(code: str, message: str) -> dict:
    return {"ok": False, "error": code, "message": message}


def _handle(raw: RawParams, ctx: _Log, remote_ip: str | None,
            look: Lookups) -> tuple[int, dict, str, str | None]:
    if raw.too_large:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        raise _refuse(413, "too_large", f"the body is too large (at most {limit} bytes)")
    if raw.unreadable:
        raise _refuse(400, "bad_json", raw.unreadable)
    client = _authenticate(raw, ctx, remote_ip, look, skip_ip_check=ctx.is_test)
    shape = check_shape(raw, is_plain_positive_decimal=is_plain_positive_decimal, is_currency=is_currency)
    if isinstance(shape, Refusal):
        raise _Refused(shape)
    fields: Fields = shape
    target = _lookup(client, fields, look)
    link = target.link
    ctx.campaign_id = link.campaign_id
    campaign = look.campaign(link.campaign_id)
    if campaign is None:  # pragma: no cover - a link's campaign always exists (foreign key)
        raise RuntimeError(f"campaign {link.campaign_id} of link {link.id} not found")
    event, amount_minor = _campaign_checks(campaign, fields, by_customer=target.bound_at is not None)

    # Step 5: an existing conversion answers first, whatever the business rules say.
    key = dedup_key(fields.txn_id, fields.click_id)
    if fastpath.usable(is_test=ctx.is_test, status=fields.status, customer_id=fields.customer_id,
                       session_was_clean=ctx.began_clean or fastpath.session_is_clean()):
        # Steps 5-7 and the log in one or two statements (postbacks.fastpath), or None: the plain
        # way below decides (nothing was written).
        answer = fastpath.handle(ctx, target=target, campaign=campaign, event=event, fields=fields,
                                 amount_minor=amount_minor, key=key,
                                 reason_of=lambda: _business_reason(target, campaign, event, fields, amount_minor))
        if answer is not None:
            return answer
    existing = existing_status(campaign.id, event.key, key)
    if fields.status == "adjusted":  # (v2 §3 Adjustments) only ever changes an existing conversion
        if existing is None:
            raise _refuse(400, "bad_adjustment", "status adjusted needs an existing conversion to adjust")
        return _answer_adjusted(existing[0], event, amount_minor, ctx)
    if existing is not None:
        return _answer_existing(existing[0], existing[1], fields.status, ctx)

    # Step 6: the first business-rule rejection; record_conversion adds partner_suspended (read with the
    # terms, in this transaction: never from a cache), over_budget and client_rejected.
    reason = _business_reason(target, campaign, event, fields, amount_minor)
    ref = target.ref
    recorded = record_conversion(
        campaign_id=campaign.id,
        event=event,
        link_id=link.id,
        partner_id=link.partner_id,
        click_id=fields.click_id,
        click_at=datetime.fromtimestamp(ref.ts, UTC) if ref is not None else None,
        txn_id=fields.txn_id,
        amount_minor=amount_minor,
        duration_s=fields.duration_s,
        status=fields.status,
        reason=reason,
        key=key,
        is_test=ctx.is_test,
        require_approved_partner=True,  # partner_suspended, from the partner's status now (v2 §3 rule 6)
        customer_id=fields.customer_id,
    )
    conv = recorded.conversion
    if not recorded.created:  # a concurrent twin won the insert
        return _answer_existing(conv.id, conv.status, fields.status, ctx)
    db.session.flush()  # the locked path's row gets its id (the fast path's has it)
    ctx.conversion_id = conv.id
    if (fields.customer_id is not None and target.bound_at is None and conv.status != "rejected"
            and not ctx.is_test):  # the first conversion binds the customer (v2 §3); never rebinds
        customers.bind(campaign_id=campaign.id, customer_id=fields.customer_id, link_id=link.id,
                       partner_id=link.partner_id, conversion_id=conv.id, at=utcnow())
    if conv.status == "rejected":
        body = {"ok": True, "conversion_id": str(conv.id), "status": "rejected", "reason": conv.reason,
                "duplicate": False}
        return 200, body, "rejected", f"rejected: {conv.reason}"
    body = {"ok": True, "conversion_id": str(conv.id), "status": conv.status, "duplicate": False}
    return 201, body, "created", f"created {conv.status}"


def _authenticate(raw: RawParams, ctx: _Log, remote_ip: str | None, look: Lookups, *,
                  skip_ip_check: bool = False) -> ClientAuth:
    """CONTRACT §3 step 1. Raises _Refused(401 ``unauthorized``)."""
    ok, key = single(raw.pairs, "key")
    if not ok:
        raise _refuse(401, "unauthorized", "key is given more than once with different values")
    if not key:
        raise _refuse(401, "unauthorized", "key is required")
    if len(key) > 64 or not is_clean(key):  # no key holds a NUL or a surrogate: no query
        raise _refuse(401, "unauthorized", "unknown key")
    client = look.client_by_key(key)
    if client is None:
        raise _refuse(401, "unauthorized", "unknown key")
    ctx.client_id = client.id
    if not skip_ip_check and not ip_allowed(remote_ip, client.ip_allowlist):
        raise _refuse(401, "unauthorized", f"IP {remote_ip} is not allowed to post for this key")
    ok_sig, sig = single(raw.pairs, "sig")
    ok_ts, ts = single(raw.pairs, "ts")
    if not ok_sig or not ok_ts:
        raise _refuse(401, "unauthorized", "sig or ts is given more than once with different values")
    if ts:
        now_unix = int(utcnow().timestamp())
        max_skew = int(current_app.config.get("PARTNERNET_POSTBACK_MAX_SKEW_S", 300))
        if not ts_fresh(ts, now_unix, max_skew):
            raise _refuse(401, "unauthorized", f"ts must be unix seconds within {max_skew} s of server time")
    if sig:
        if not ts:
            raise _refuse(401, "unauthorized", "ts is required with sig")
        if not signature_ok(client.postback_secret, raw.pairs, sig):
            raise _refuse(401, "unauthorized", "bad signature")
    elif client.require_signature:
        raise _refuse(401, "unauthorized", "this client requires signed postbacks (sig and ts)")
    return client


def _lookup(client: ClientAuth, fields: Fields, look: Lookups) -> _Target:
    """CONTRACT §3 step 3: the click, coupon or number of this client. Raises _Refused(404).

    A click ID is verified by its signature and need not have a row yet (clicks are buffered);
    its link must exist and belong to one of this client's campaigns. A number that arrives as
    ``" 1415…"`` (an unencoded ``+`` read as a space in a query string) is read as ``"+1415…"``.
    (v2) Without any of them, the ``customer_id``'s binding names the link: 404
    ``unknown_customer`` when the customer is bound on none of this client's campaigns, 400
    ``ambiguous_customer`` when several could take it (:mod:`partnernet.postbacks.customers`).
    """
    if fields.click_id is None and fields.coupon is None and fields.number is None:
        return _customer_target(client, fields, look)
    if fields.click_id is not None:
        ref = current_app.extensions["partnernet_click_signer"].verify(fields.click_id)
        link = look.link(ref.link_id) if ref is not None else None
        if link is None or link.client_id != client.id:
            raise _refuse(404, "unknown_click", "unknown click_id")
        return _Target(link, ref)
    if fields.coupon is not None:
        link = None
        if "\x00" not in fields.coupon and len(fields.coupon) <= 64:
            link = look.link_by_coupon(client.id, fields.coupon.lower())
        if link is None:
            raise _refuse(404, "unknown_coupon", "unknown coupon")
        return _Target(link, None)
    number = fields.number or ""
    if number.startswith(" ") and number[1:].isdigit():
        number = "+" + number[1:]
    link = None
    if "\x00" not in number and len(number) <= 20:
        link = look.link_by_number(client.id, number)
    if link is None:
        raise _refuse(404, "unknown_number", "unknown tracking number")
    return _Target(link, None)


def _customer_target(client: ClientAuth, fields: Fields, look: Lookups) -> _Target:
    """Step 3 for a postback that names only a customer (CONTRACT v2 §3). Raises _Refused."""
    found = customers.resolve(client.id, fields.customer_id, fields.event, look)
    if isinstance(found, Refusal):
        raise _Refused(found)
    link = look.link(found.link_id)
    if link is None:  # pragma: no cover - a binding's link always exists (foreign key)
        raise RuntimeError(f"link {found.link_id} of a customer binding not found")
    return _Target(link, None, found.bound_at)


def _campaign_checks(campaign: CampaignTerms, fields: Fields, *,
                     by_customer: bool = False) -> tuple[EventTerms, int | None]:
    """CONTRACT §3 step 4. Returns ``(event, amount_minor)``; raises _Refused(400).

    ``by_customer``: the link came from a customer's binding (no click ID, coupon or number);
    an event that is not recurring (``recurring_months`` 0) then answers 400
    ``missing_click_id``, the v1 answer for a postback without an identifier (a project choice:
    right after ``unknown_event``, as it needs the event)."""
    event_key = fields.event or campaign.default_event
    event = None if event_key in TRACKER_EVENTS else campaign.event(event_key)
    if event is None:
        raise _refuse(400, "unknown_event", f"{event_key[:64]!r} is not an event of this campaign")
    if by_customer and event.recurring_months == 0:
        raise _refuse(400, "missing_click_id",
                      f"event {event.key!r} is not recurring: one of click_id, coupon or number is required")
    amount_minor = None
    if fields.amount is not None:
        try:
            amount_minor = parse_amount(fields.amount, campaign.currency)
        except MoneyError as exc:  # also above money.MAX_MINOR, the shared limit
            raise _refuse(400, "bad_amount", exc.message) from None
    if fields.currency is not None and fields.currency != campaign.currency:
        raise _refuse(400, "currency_mismatch", f"this campaign is in {campaign.currency}")
    if event.client_fee_percent is not None and amount_minor is None:
        raise _refuse(400, "missing_amount", f"event {event.key!r} is a percent of the sale: amount is required")
    if fields.click_id is None and not fields.txn_id:
        raise _refuse(400, "missing_txn_id", "txn_id is required with a coupon, a number or a customer_id")
    return event, amount_minor


def _business_reason(target: _Target, campaign: CampaignTerms, event: EventTerms, fields: Fields,
                     amount_minor: int | None) -> str | None:
    """The first business-rule rejection of CONTRACT §3 step 6 that applies, or None, but for
    ``partner_suspended``, ``over_budget`` and ``client_rejected``: ``record_conversion`` decides
    those (``partner_suspended`` from the partner's status read in the recording transaction,
    whatever identified the conversion, click ID included (v2); it takes the place of any reason
    found here but ``bot_click`` and ``fallback_click``, which come before it)."""
    ref = target.ref
    if ref is not None and ref.bot:
        return "bot_click"
    if ref is not None and ref.fallback:
        return "fallback_click"
    if ref is not None:
        age_s = utcnow().timestamp() - ref.ts
        if age_s > (campaign.attribution_window_days or 0) * 86400:
            return "outside_window"
    if target.bound_at is not None and not customers.within_window(target.bound_at, event.recurring_months, utcnow()):
        return "outside_window"  # the customer's binding is older than recurring_months (v2 §3)
    if event.one_per_click and fields.click_id is not None:
        # Under the campaign's row lock (which record_conversion takes anyway), so that two
        # concurrent postbacks for one click cannot both pass this check.
        lock_campaign(campaign.id)
        taken = db.session.scalar(select(Conversion.id).where(
            Conversion.campaign_id == campaign.id,
            Conversion.click_id == fields.click_id,
            Conversion.event_key == event.key,
            Conversion.status != "rejected",
        ).limit(1))
        if taken is not None:
            return "duplicate_click"
    if event.min_duration_s is not None and (fields.duration_s is None or fields.duration_s < event.min_duration_s):
        return "below_min_duration"
    if event.min_amount_minor is not None and (amount_minor is None or amount_minor < event.min_amount_minor):
        return "below_min_amount"
    return None


def _answer_existing(conversion_id: int, current: str, status: str,
                     ctx: _Log) -> tuple[int, dict, str, str | None]:
    """CONTRACT §3 step 5: apply an allowed status change, answer 200 duplicate with the status now.

    ``current`` is the conversion's status as just read. A plain repeat takes no lock and loads
    nothing more. A possible change re-reads the conversion under the house lock order (campaign
    row, then conversion row: conversions.services.lock_conversion_for_change), so concurrent
    changes of one conversion apply one after the other and never deadlock."""
    old = now = current
    changed = False
    if (current, status) in POSTBACK_TRANSITIONS:
        conv: Conversion = lock_conversion_for_change(conversion_id)
        old = conv.status
        changed = apply_postback_status(conv, status)
        now = conv.status
    ctx.conversion_id = conversion_id
    body = {"ok": True, "conversion_id": str(conversion_id), "status": now, "duplicate": True}
    message = f"existing: {old} -> {now}" if changed else f"existing: {now}, unchanged"
    return 200, body, "existing", message


def _answer_adjusted(conversion_id: int, event: EventTerms, amount_minor: int | None,
                     ctx: _Log) -> tuple[int, dict, str, str | None]:
    """CONTRACT v2 §3 Adjustments: re-read the conversion under the house lock order, apply the
    new amount (:func:`partnernet.conversions.services.apply_adjustment`), answer as an existing
    conversion (§3 "existing": 200, ``duplicate`` true, the status it keeps). A repeat of the
    amount, or a rejected or reversed conversion, changes nothing and answers the same. Raises
    _Refused(400 ``bad_adjustment``) for a fixed-fee conversion or an amount above the first one."""
    conv: Conversion = lock_conversion_for_change(conversion_id)
    before = conv.amount_minor
    try:
        changed = apply_adjustment(conv, amount_minor, event.client_fee_percent)
    except BadAdjustment as exc:
        raise _refuse(400, "bad_adjustment", exc.message) from None
    ctx.conversion_id = conversion_id
    body = {"ok": True, "conversion_id": str(conversion_id), "status": conv.status, "duplicate": True}
    message = (f"existing: adjusted amount {before} -> {conv.amount_minor} (minor units), {conv.status}"
               if changed else f"existing: {conv.status}, unchanged")
    return 200, body, "existing", message
