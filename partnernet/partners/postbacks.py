"""Partner postbacks (issue 3 §7): a partner's own tracker hears about its conversions.

A partner sets a URL, globally or per campaign (the campaign's wins), with macros
``{click_id} {sub1}..{sub5} {event} {txn_id} {status} {payout} {currency}``. When a
conversion of theirs is recorded, approved, rejected or reversed, a job writes one
:class:`~partnernet.models.PartnerPostbackDelivery` per (conversion, change) and sends a GET;
a failure is retried with exponential backoff (``PARTNERNET_PARTNER_POSTBACK_BACKOFF_S`` × 2^n,
``PARTNERNET_PARTNER_POSTBACK_ATTEMPTS`` tries in all), then marked ``failed``.

Every send goes through :mod:`partnernet.outbound` (the one outbound HTTP client): http(s) to
public addresses only, the host resolved once and the checked address connected to (no DNS
rebinding), no redirects, one 5 s deadline for the whole delivery and at most 64 KiB of answer
read. The URL's host is checked when it is saved too (a friendly form error), but only the
check at send time protects. The jobs run on their own RQ queue
(:data:`partnernet.queue.QUEUE_PARTNER_POSTBACKS`), served after the money queues, so a slow
partner never delays a split. "Send test" is limited to :data:`TEST_LIMIT` per partner per
:data:`TEST_WINDOW_S` seconds (429 ``too_many_tests``).
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from urllib.parse import quote, urlsplit

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from .. import outbound, queue
from ..clock import utcnow
from ..errors import NotFound, TooManyAttempts, ValidationError
from ..extensions import db
from ..models import Campaign, Click, Conversion, Partner, PartnerPostback, PartnerPostbackDelivery
from ..money import format_minor

log = logging.getLogger(__name__)

MACROS = ("click_id", "sub1", "sub2", "sub3", "sub4", "sub5", "event", "txn_id", "status", "payout", "currency")
CHANGE_JOB = "partnernet.partners.postbacks.conversion_changed_job"
DELIVER_JOB = "partnernet.partners.postbacks.deliver_job"
TRIGGERS = {"pending": "recorded", "approved": "approved", "rejected": "rejected", "reversed": "reversed"}
TIMEOUT_S = outbound.DEADLINE_S  # the whole delivery: resolve, connect, send, headers and body
# (config PARTNERNET_PARTNER_POSTBACK_TIMEOUT_S overrides it)
MAX_ANSWER_BYTES = outbound.MAX_BYTES
QUEUE = queue.QUEUE_PARTNER_POSTBACKS
TEST_LIMIT = 5  # "Send test" presses per partner ...
TEST_WINDOW_S = 600  # ... in this many seconds
_MACRO_RE = re.compile(r"\{([^{}]*)\}")


def _setting(name: str, default):
    return current_app.config.get(name, default)


def check_url(url: str) -> str:
    """The stripped ``url`` when it may be a partner postback URL; raises ValidationError
    (field ``url``): not http(s), no host, an unknown macro (``bad_url``, ``bad_macro``), or a
    host that does not resolve or resolves to an address that is not public (``host_not_allowed``,
    the rule of :mod:`partnernet.outbound.addresses`)."""
    url = (url or "").strip()
    if len(url) > 2000:
        raise ValidationError("the URL is too long", code="bad_url", field="url")
    unknown = [m for m in _MACRO_RE.findall(url) if m not in MACROS]
    if unknown:
        raise ValidationError(f"unknown macro {{{unknown[0]}}}; use " + " ".join(f"{{{m}}}" for m in MACROS),
                              code="bad_macro", field="url")
    try:
        parts = urlsplit(_MACRO_RE.sub("x", url))
        port = parts.port
    except ValueError:
        raise ValidationError("this is not a URL", code="bad_url", field="url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("use an http:// or https:// URL", code="bad_url", field="url")
    try:
        outbound.checked_addresses(parts.hostname, port or (443 if parts.scheme == "https" else 80))
    except outbound.Refused as exc:
        raise ValidationError(f"postbacks go to public hosts only: {exc}", code="host_not_allowed",
                              field="url") from None
    except TimeoutError:
        raise ValidationError("the host did not resolve in time", code="host_not_allowed",
                              field="url") from None
    return url


def set_postback(partner_id: int, url: str, campaign_id: int | None = None) -> PartnerPostback:
    """Set (or replace) the partner's postback URL, global or for ``campaign_id``; commit.
    Raises ValidationError (see :func:`check_url`), NotFound (the campaign does not exist)."""
    url = check_url(url)
    if campaign_id is not None and db.session.get(Campaign, campaign_id) is None:
        raise NotFound(f"no campaign {campaign_id}")
    cond = PartnerPostback.campaign_id.is_(None) if campaign_id is None else PartnerPostback.campaign_id == campaign_id
    row = db.session.scalar(select(PartnerPostback).where(PartnerPostback.partner_id == partner_id, cond))
    if row is None:
        row = PartnerPostback(partner_id=partner_id, campaign_id=campaign_id, url=url)
        db.session.add(row)
    row.url = url
    db.session.commit()
    return row


def delete_postback(partner_id: int, postback_id: int) -> None:
    """Remove one of the partner's postback URLs; commit. NotFound when it is not the partner's."""
    row = db.session.get(PartnerPostback, postback_id)
    if row is None or row.partner_id != partner_id:
        raise NotFound(f"no postback {postback_id}")
    db.session.delete(row)
    db.session.commit()


def postbacks_of(partner_id: int) -> list[PartnerPostback]:
    """The partner's postback URLs, the global one first."""
    return sorted(db.session.scalars(select(PartnerPostback).where(PartnerPostback.partner_id == partner_id)),
                  key=lambda r: (r.campaign_id is not None, r.campaign_id or 0))


def deliveries_of(partner_id: int, limit: int = 50) -> list[PartnerPostbackDelivery]:
    """The partner's latest deliveries, newest first."""
    return list(db.session.scalars(select(PartnerPostbackDelivery)
                                   .where(PartnerPostbackDelivery.partner_id == partner_id)
                                   .order_by(PartnerPostbackDelivery.id.desc()).limit(limit)))


def url_for_conversion(partner_id: int, campaign_id: int) -> str | None:
    """The partner's URL for the campaign (the campaign's own, else the global one), or None."""
    rows = db.session.execute(select(PartnerPostback.campaign_id, PartnerPostback.url).where(
        PartnerPostback.partner_id == partner_id,
        (PartnerPostback.campaign_id == campaign_id) | PartnerPostback.campaign_id.is_(None))).all()
    by = {cid: url for cid, url in rows}
    return by.get(campaign_id) or by.get(None)


def has_url(partner_id: int, campaign_id: int) -> bool:
    """True when the partner has a postback URL for the campaign (its own or the global one).
    Inside a postback it answers from the postback's per-process cache
    (:mod:`partnernet.postbacks.lookups`, invalidated when a URL is added or removed);
    elsewhere it reads the database."""
    from ..postbacks.lookups import active

    look = active()
    if look is None:
        return url_for_conversion(partner_id, campaign_id) is not None
    ids = look.partner_postback_campaigns(partner_id)
    return campaign_id in ids or None in ids


def queue_for_conversion(conv: Conversion) -> None:
    """Hook for status changes (called where the ledger sync is queued): queue the partner
    postback job after commit when the converting partner has a postback URL. No commit."""
    if conv.is_test or conv.status not in TRIGGERS:
        return
    if not has_url(conv.partner_id, conv.campaign_id):
        return
    queue.enqueue(CHANGE_JOB, conv.id, conv.status, job_id=f"partner-postback-{conv.id}-{conv.status}",
                  queue=QUEUE)


def _render(template: str, values: dict) -> str:
    return _MACRO_RE.sub(lambda m: quote(str(values.get(m.group(1), "") or ""), safe=""), template)


def _payout_minor(conv: Conversion) -> int:
    lines = [s for s in conv.splits if s.partner_id == conv.partner_id and s.role in ("converter", "touch")]
    if lines:
        return sum(s.amount_minor for s in lines)
    from ..ledger.services import compute_split

    return sum(x.amount for x in compute_split(conv) if x.partner_id == conv.partner_id
               and x.role in ("converter", "touch"))


def conversion_changed_job(conversion_id: int, status: str) -> int | None:
    """Job: write the delivery of conversion ``conversion_id``'s change to ``status`` (once:
    unique per conversion and trigger) and send it. Returns the delivery id, or None."""
    conv = db.session.get(Conversion, conversion_id)
    trigger = TRIGGERS.get(status)
    if conv is None or trigger is None:
        return None
    existing = db.session.scalar(select(PartnerPostbackDelivery).where(
        PartnerPostbackDelivery.conversion_id == conversion_id, PartnerPostbackDelivery.trigger == trigger))
    if existing is not None:
        return existing.id
    template = url_for_conversion(conv.partner_id, conv.campaign_id)
    if template is None:
        return None
    click = db.session.scalar(select(Click).where(Click.click_id == conv.click_id)) if conv.click_id else None
    values = {"click_id": conv.click_id, "event": conv.event_key, "txn_id": conv.txn_id, "status": status,
              "payout": format_minor(_payout_minor(conv) if status in ("pending", "approved") else 0, conv.currency),
              "currency": conv.currency}
    for k in ("sub1", "sub2", "sub3", "sub4", "sub5"):
        values[k] = getattr(click, k, None) if click else None
    row = PartnerPostbackDelivery(partner_id=conv.partner_id, conversion_id=conv.id, trigger=trigger,
                                  url=_render(template, values))
    db.session.add(row)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return None
    deliver_job(row.id)
    return row.id


def send_test(partner_id: int, postback_id: int) -> PartnerPostbackDelivery:
    """The "send test" button: a delivery of the partner's URL with sample values
    (``status=test``, ``txn_id=test-<n>``), sent by a job after commit. NotFound when the
    postback is not the partner's; TooManyAttempts (429 ``too_many_tests``) after
    :data:`TEST_LIMIT` tests in :data:`TEST_WINDOW_S` seconds (counted from the delivery log,
    so every process sees the same count; the partner's row is locked on PostgreSQL so
    concurrent presses are counted one after the other)."""
    pb = db.session.get(PartnerPostback, postback_id)
    if pb is None or pb.partner_id != partner_id:
        raise NotFound(f"no postback {postback_id}")
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(select(Partner.id).where(Partner.id == partner_id).with_for_update())
    since = utcnow() - timedelta(seconds=TEST_WINDOW_S)
    recent = db.session.scalar(select(func.count(PartnerPostbackDelivery.id)).where(
        PartnerPostbackDelivery.partner_id == partner_id, PartnerPostbackDelivery.trigger == "test",
        PartnerPostbackDelivery.created_at >= since))
    if recent >= TEST_LIMIT:
        db.session.rollback()
        raise TooManyAttempts(f"at most {TEST_LIMIT} test postbacks every {TEST_WINDOW_S // 60} minutes; "
                              "try again later", code="too_many_tests")
    row = PartnerPostbackDelivery(partner_id=partner_id, conversion_id=None, trigger="test", url="")
    db.session.add(row)
    db.session.flush()
    row.url = _render(pb.url, {"click_id": "TESTCLICKID", "sub1": "test", "event": "test", "txn_id": f"test-{row.id}",
                               "status": "test", "payout": "1.00", "currency": "USD"})
    queue.enqueue(DELIVER_JOB, row.id, job_id=f"ppb-{row.id}-0", queue=QUEUE)
    db.session.commit()
    return row


def _attempt(url: str) -> tuple[int | None, str | None, bool]:
    """One GET through :func:`partnernet.outbound.get`: (HTTP status, error text, final), final
    when the URL or its address is refused (no retry helps)."""
    deadline_s = float(_setting("PARTNERNET_PARTNER_POSTBACK_TIMEOUT_S", TIMEOUT_S))
    out = outbound.get(url, deadline_s=deadline_s, max_bytes=MAX_ANSWER_BYTES)
    if out.kind == "answered":
        return out.status, None if out.ok else f"HTTP {out.status}", False
    if out.kind == "refused":
        return None, f"refused: {out.error}", True
    return None, out.error, False


def deliver_job(delivery_id: int) -> str | None:
    """Job: one try at delivery ``delivery_id`` (pending only; safe to run twice). 2xx is
    ``delivered``; otherwise the next try is scheduled after ``backoff × 2^(tries-1)`` seconds
    until the last try, which marks it ``failed``. Returns the new status."""
    stmt = select(PartnerPostbackDelivery).where(PartnerPostbackDelivery.id == delivery_id)
    if db.session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    row = db.session.scalar(stmt.execution_options(populate_existing=True))
    if row is None or row.status != "pending":
        db.session.rollback()
        return row.status if row else None
    url = row.url
    row.attempts += 1
    db.session.commit()  # the try counts even if the process dies while sending
    code, error, final = _attempt(url)
    row = db.session.get(PartnerPostbackDelivery, delivery_id)
    row.last_status, row.last_error = code, error
    max_tries = int(_setting("PARTNERNET_PARTNER_POSTBACK_ATTEMPTS", 5))
    if code is not None and 200 <= code < 300:
        row.status, row.last_error, row.delivered_at = "delivered", None, utcnow()
    elif row.attempts >= max_tries or final:
        row.status = "failed"
    status, attempts = row.status, row.attempts
    db.session.commit()
    if status == "pending":
        delay = float(_setting("PARTNERNET_PARTNER_POSTBACK_BACKOFF_S", 30)) * 2 ** (attempts - 1)
        _schedule(delivery_id, attempts, delay)
    log.info("partner postback %s try %s: %s %s", delivery_id, attempts, code, error or "")
    return status


def _schedule(delivery_id: int, attempt: int, delay_s: float) -> None:
    job_id = f"ppb-{delivery_id}-{attempt}"
    if not queue.redis_url() and delay_s > 0:
        return  # in-process mode: the schedule's partner_postback_retries task sends it when due
    if queue.redis_url() and delay_s > 0:
        queue.get_queue(QUEUE).enqueue_in(timedelta(seconds=delay_s), DELIVER_JOB, delivery_id, job_id=job_id,
                                          result_ttl=600, failure_ttl=7 * 86400)
    else:  # no Redis (in-process mode) or no delay: the next try runs right after this job
        queue.send_now(queue.JobSpec(DELIVER_JOB, (delivery_id,), job_id, queue=QUEUE))
