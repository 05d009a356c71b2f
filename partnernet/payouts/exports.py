"""Payout files in CSV (CONTRACT v2 §5): the bank CSV (``export.csv``) and the PayPal Payouts CSV
(``paypal.csv``). The SEPA credit-transfer XML is :mod:`partnernet.payouts.sepa`.

A file is given only for an approved or paid batch (:func:`exportable_batch`): a draft can still
change or be refused by the second approver, and a cancelled batch is never paid. Every CSV is
written through :mod:`partnernet.csvsafe` (formula neutralisation, OWASP "CSV Injection").
"""

from __future__ import annotations

import io

from sqlalchemy import select

from .. import csvsafe
from ..errors import InvalidState
from ..extensions import db
from ..models import Partner, PayoutBatch, PayoutItem
from ..money import format_minor
from .services import get_batch

#: Batch states a payout file is given for.
EXPORTABLE = ("approved", "paid")
#: The v1 columns (CONTRACT §5), then the v2 bank details.
CSV_HEADER = ("partner_id", "name", "payout_email", "amount", "currency",
              "payout_method", "iban", "bic", "account_holder")

#: PayPal Payouts Web upload, as PayPal documents it ("Payouts Web" / "Use Web UI",
#: https://developer.paypal.com/payouts/use-payouts/send-money/use-web-ui): **no header row** (the
#: first row is the first recipient), one row per payment, columns in this order: recipient
#: identifier (the PayPal email), payment amount (``5.45``: a ``.`` decimal point), currency (ISO
#: 4217, one currency per file), customer ID (unique, at most 30 characters, no spaces), note to
#: recipient (at most 400 characters), recipient wallet (``PAYPAL``). At most 5,000 rows a file.
PAYPAL_COLUMNS = ("recipient", "amount", "currency", "customer_id", "note", "wallet")
PAYPAL_NOTE_MAX = 400
PAYPAL_MAX_ROWS = 5000


def exportable_batch(batch_id: int) -> PayoutBatch:
    """The batch ``batch_id`` when a payout file may be made of it (approved or paid). Raises
    NotFound (404); InvalidState (409) code ``batch_not_approved`` for a draft or cancelled one."""
    batch = get_batch(batch_id)
    if batch.status not in EXPORTABLE:
        raise InvalidState(f"payout batch {batch.id} is {batch.status}: payout files are made only once it "
                           "is approved (or paid)", code="batch_not_approved")
    return batch


def _cell(value: str | None) -> str:
    """Text for a CSV cell, neutralised against spreadsheet formula injection
    (:func:`partnernet.csvsafe.neutralise`). The writers are :func:`partnernet.csvsafe.writer` too,
    so every text cell is safe even where this is not called."""
    return csvsafe.neutralise(value or "")


def export_csv(batch_id: int) -> str:
    """The bank CSV of an approved or paid batch (CONTRACT v2 §5 ``export.csv``): header
    :data:`CSV_HEADER`, one row per item in item order (every item, whatever its method);
    ``amount`` a decimal string with the currency's minor digits; ``payout_email`` falls back to
    the partner's email; ``iban``/``bic`` compact upper case, empty when unknown. Lines end in CRLF.
    Raises NotFound (404), InvalidState (409 ``batch_not_approved``)."""
    batch = exportable_batch(batch_id)
    rows = db.session.execute(
        select(PayoutItem.partner_id, Partner.name, Partner.payout_email, Partner.email, PayoutItem.amount_minor,
               Partner.payout_method, Partner.iban, Partner.bic, Partner.account_holder)
        .join(Partner, Partner.id == PayoutItem.partner_id)
        .where(PayoutItem.batch_id == batch.id)
        .order_by(PayoutItem.id)
    ).all()
    out = io.StringIO()
    writer = csvsafe.writer(out, numeric={CSV_HEADER.index("amount")}, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for pid, name, payout_email, email, amount, method, iban, bic, holder in rows:
        writer.writerow([str(pid), _cell(name), _cell(payout_email or email),
                         format_minor(int(amount), batch.currency), batch.currency,
                         method or "paypal", iban or "", bic or "", _cell(holder)])
    return out.getvalue()


def export_paypal_csv(batch_id: int, note: str | None = None) -> str:
    """The PayPal Payouts CSV of an approved or paid batch (see :data:`PAYPAL_COLUMNS`): no header,
    one row per item whose partner is paid by PayPal (``payout_method`` ``paypal``), in item order:
    the partner's payout email (else its email), the amount as a decimal string with a ``.`` and
    the currency's minor digits (``"12.50"``, ``"1000"`` for JPY), the currency code,
    ``partner-<id>`` as the customer ID, ``note`` (default ``"PartnerNet payout batch <id>"``,
    cut to 400 characters) and ``PAYPAL``. Lines end in CRLF; an empty text when no item is paid
    by PayPal. Raises NotFound (404), InvalidState (409 ``batch_not_approved``; ``too_many_rows``
    past PayPal's 5,000 rows a file)."""
    batch = exportable_batch(batch_id)
    note = (note or f"PartnerNet payout batch {batch.id}").replace("\r", " ").replace("\n", " ")
    note = _cell(note[:PAYPAL_NOTE_MAX])
    rows = db.session.execute(
        select(PayoutItem.partner_id, Partner.payout_email, Partner.email, PayoutItem.amount_minor)
        .join(Partner, Partner.id == PayoutItem.partner_id)
        .where(PayoutItem.batch_id == batch.id, Partner.payout_method == "paypal")
        .order_by(PayoutItem.id)
    ).all()
    if len(rows) > PAYPAL_MAX_ROWS:
        raise InvalidState(f"{len(rows)} PayPal payments: PayPal takes at most {PAYPAL_MAX_ROWS} a file",
                           code="too_many_rows")
    out = io.StringIO()
    writer = csvsafe.writer(out, numeric={PAYPAL_COLUMNS.index("amount")}, lineterminator="\r\n")
    for pid, payout_email, email, amount in rows:
        writer.writerow([_cell(payout_email or email), format_minor(int(amount), batch.currency),
                         batch.currency, f"partner-{pid}", note, "PAYPAL"])
    return out.getvalue()
