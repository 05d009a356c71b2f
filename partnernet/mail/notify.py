"""The moments that send email: each function is called (one line) by the use case where the
event happens, inside its transaction, and queues the email through
:func:`partnernet.mail.outbox.queue_email` (sent after commit; nothing when it rolls back).
None of them commits.

- ``confirm_email``: ``partners.accounts.signup_partner`` / ``resend_confirmation``;
- ``password_reset``: ``partners.accounts.request_password_reset``;
- ``partner_approved`` / ``_rejected`` / ``_suspended`` / ``_reinstated``:
  ``catalog.services.set_partner_status`` (staff pages and API alike);
- ``application_approved`` / ``_rejected``: ``partners.applications`` (staff decisions);
- ``payout_sent``: ``payouts.services.mark_batch_paid`` (one per partner in the batch);
- ``budget_80`` / ``budget_100`` / ``cap_reached``: :mod:`partnernet.mail.alerts`, run by the split job.
"""

from __future__ import annotations

from sqlalchemy import select

from ..extensions import db
from ..models import OutboxEmail, Partner, PayoutItem
from . import messages
from .outbox import queue_email

#: (status before, status after) of a partner → the email kind (CONTRACT §5 transitions).
PARTNER_KINDS = {
    ("pending", "approved"): messages.PARTNER_APPROVED,
    ("pending", "rejected"): messages.PARTNER_REJECTED,
    ("approved", "suspended"): messages.PARTNER_SUSPENDED,
    ("suspended", "approved"): messages.PARTNER_REINSTATED,
}


def signup_confirmation(to_addr: str, name: str | None, link: str, *, first: bool = True) -> OutboxEmail:
    """Queue the sign-up confirmation with its single-use ``link`` (``first``: at sign-up, else a
    resend). Returns the outbox row."""
    subject, body = messages.confirm_email(name, link, first=first)
    return queue_email(to_addr, subject, body, kind=messages.CONFIRM_EMAIL)


def password_reset(to_addr: str, link: str) -> OutboxEmail:
    """Queue a password-reset email with its single-use, one-hour ``link``. Returns the row."""
    subject, body = messages.password_reset(link)
    return queue_email(to_addr, subject, body, kind=messages.PASSWORD_RESET)


def partner_status_changed(partner: Partner, before: str, reason: str | None = None) -> OutboxEmail | None:
    """Queue the news of a staff decision on ``partner`` (its ``status`` already the new one;
    ``before`` the old one) with an optional ``reason``. None for a change with no email."""
    kind = PARTNER_KINDS.get((before, partner.status))
    if kind is None:
        return None
    subject, body = messages.partner_decision(kind, partner.name, reason)
    return queue_email(partner.email, subject, body, kind=kind)


def application_decided(app) -> OutboxEmail:
    """Queue the news of a staff decision on a campaign application (``app``: a
    :class:`~partnernet.models.CampaignApplication` with its new ``status`` and ``reason``)."""
    approved = app.status == "approved"
    subject, body = messages.application_decision(approved, app.partner.name, app.campaign.name, app.reason)
    kind = messages.APPLICATION_APPROVED if approved else messages.APPLICATION_REJECTED
    return queue_email(app.partner.email, subject, body, kind=kind)


def payout_sent(batch_id: int, currency: str) -> int:
    """Queue one ``payout_sent`` email per partner item of payout batch ``batch_id`` (amounts in
    minor units of ``currency``), to the partner's login email. Returns how many were queued."""
    rows = db.session.execute(
        select(Partner.email, Partner.name, PayoutItem.amount_minor, Partner.payout_method)
        .join(Partner, Partner.id == PayoutItem.partner_id)
        .where(PayoutItem.batch_id == batch_id)
        .order_by(PayoutItem.id)
    ).all()
    n = 0
    for email, name, amount, method in rows:
        if int(amount) <= 0:
            continue
        subject, body = messages.payout_sent(name, int(amount), currency, batch_id, method)
        queue_email(email, subject, body, kind=messages.PAYOUT_SENT)
        n += 1
    return n
