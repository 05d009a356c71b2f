"""Partner postbacks (issue 3 §7): a partner's own tracker hears about its conversions.

A partner sets a URL, globally or per campaign (the campaign's wins), with macros
``{click_id} {sub1}..{sub5} {event} {txn_id} {status} {payout} {currency}``. When a
conversion of theirs is recorded, approved, rejected or reversed, a job writes one
:class:`~partnernet.models.PartnerPostbackDelivery` per (conversion, change) and sends a GET;
a failure is retried with exponential backoff (``PARTNERNET_PARTNER_POSTBACK_BACKOFF_S`` × 2^n,
``PARTNERNET_PARTNER_POSTBACK_ATTEMPTS`` tries in all), then marked ``failed``.

Only http(s) to public hosts: every address the host resolves to must be public (no private,
loopback, link-local, multicast, reserved or unspecified range), checked when the URL is saved
and again before each send; redirects are not followed. ``PARTNERNET_ALLOW_LOOPBACK_POSTBACKS``
lets tests post to 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import urllib.error
import urllib.request
from datetime import timedelta
from urllib.parse import quote, urlsplit

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .. import queue
from ..clock import utcnow
from ..errors import NotFound, ValidationError
from ..extensions import db
from ..models import Campaign, Click, Conversion, PartnerPostback, PartnerPostbackDelivery
from ..money import format_minor

log = logging.getLogger(__name__)

MACROS = ("click_id", "sub1", "sub2", "sub3", "sub4", "sub5", "event", "txn_id", "status", "payout", "currency")
CHANGE_JOB = "partnernet.partners.postbacks.conversion_changed_job"
DELIVER_JOB = "partnernet.partners.postbacks.deliver_job"
TRIGGERS = {"pending": "recorded", "approved": "approved", "rejected": "rejected", "reversed": "reversed"}
TIMEOUT_S = 5.0
_MACRO_RE = re.compile(r"\{([^{}]*)\}")


def _setting(name: str, default):
    return current_app.config.get(name, default)


def address_refusal(host: str, port: int | None = None) -> str | None:
    """Why ``host`` may not receive partner postbacks, or None when every address it resolves
    to is public (loopback allowed with ``PARTNERNET_ALLOW_LOOPBACK_POSTBACKS``)."""
    try:
        infos = socket.getaddrinfo(host, port or 80, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, ValueError):
        return "the host does not resolve"
    allow_loop = bool(_setting("PARTNERNET_ALLOW_LOOPBACK_POSTBACKS", False))
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if ip.is_loopback:
            if allow_loop:
                continue
            return "loopback addresses are not allowed"
        if ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified \
                or not ip.is_global:
            return f"{ip} is not a public address"
    return None


def check_url(url: str) -> str:
    """The stripped ``url`` when it may be a partner postback URL; raises ValidationError
    (field ``url``): not http(s), no host, an unknown macro, or a non-public host."""
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
    why = address_refusal(parts.hostname, port)
    if why:
        raise ValidationError(f"postbacks go to public hosts only: {why}", code="host_not_allowed", field="url")
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
    queue.enqueue(CHANGE_JOB, conv.id, conv.status, job_id=f"partner-postback-{conv.id}-{conv.status}")


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
    postback is not the partner's."""
    pb = db.session.get(PartnerPostback, postback_id)
    if pb is None or pb.partner_id != partner_id:
        raise NotFound(f"no postback {postback_id}")
    row = PartnerPostbackDelivery(partner_id=partner_id, conversion_id=None, trigger="test", url="")
    db.session.add(row)
    db.session.flush()
    row.url = _render(pb.url, {"click_id": "TESTCLICKID", "sub1": "test", "event": "test", "txn_id": f"test-{row.id}",
                               "status": "test", "payout": "1.00", "currency": "USD"})
    queue.enqueue(DELIVER_JOB, row.id, job_id=f"ppb-{row.id}-0")
    db.session.commit()
    return row


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **kw):
        return None


def _attempt(url: str) -> tuple[int | None, str | None]:
    """One GET; (HTTP status, error text)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None, "not an http(s) URL"
    why = address_refusal(parts.hostname, parts.port)
    if why:
        return None, f"refused: {why}"
    opener = urllib.request.build_opener(_NoRedirect)
    req = urllib.request.Request(url, headers={"User-Agent": "PartnerNet-postback/1"})
    try:
        with opener.open(req, timeout=TIMEOUT_S) as resp:
            return resp.status, None
    except urllib.error.HTTPError as err:
        return err.code, f"HTTP {err.code}"
    except (urllib.error.URLError, OSError, ValueError) as err:
        return None, str(getattr(err, "reason", err))[:300]


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
    code, error = _attempt(url)
    row = db.session.get(PartnerPostbackDelivery, delivery_id)
    row.last_status, row.last_error = code, error
    max_tries = int(_setting("PARTNERNET_PARTNER_POSTBACK_ATTEMPTS", 5))
    if code is not None and 200 <= code < 300:
        row.status, row.last_error, row.delivered_at = "delivered", None, utcnow()
    elif row.attempts >= max_tries or (error or "").startswith("refused"):
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
    if queue.redis_url() and delay_s > 0:
        queue.get_queue().enqueue_in(timedelta(seconds=delay_s), DELIVER_JOB, delivery_id, job_id=job_id,
                                     result_ttl=600, failure_ttl=7 * 86400)
    else:  # no Redis (in-process mode) or no delay: the next try runs right after this job
        queue.send_now(queue.JobSpec(DELIVER_JOB, (delivery_id,), job_id))
