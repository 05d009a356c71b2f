"""The SEPA credit-transfer file of a payout batch (CONTRACT v2 §5 ``sepa.xml``): an ISO 20022
``pain.001.001.03`` Customer Credit Transfer Initiation, built with ``sepaxml`` and checked with
``xmlschema`` against the standard's XSD (which ``sepaxml`` ships) before it is handed out.

- **Which batches**: approved or paid (409 ``batch_not_approved`` otherwise), in EUR (409
  ``sepa_eur_only``: SEPA credit transfers are in euro).
- **Which items**: those whose partner is paid by bank transfer (``payout_method`` ``bank``) with
  a valid IBAN of a country in the SEPA scheme (``schwifty``'s ``in_sepa_zone``); the others stay
  in the bank CSV (:func:`sepa_plan` says which and why). No such item: 409 ``no_sepa_items``
  (a pain.001 file needs at least one transaction).
- **Debtor**: the agency's account from ``PARTNERNET_SEPA_NAME``, ``_IBAN`` and ``_BIC``; any of
  them missing or invalid: 409 ``sepa_not_configured``.
- **Amounts**: ``sepaxml`` takes integer cents, so each ``InstdAmt`` is the item's minor units
  exactly (EUR has 2 minor digits) and ``CtrlSum`` their exact sum; never a float.
- **Identifiers**: ``MsgId`` ``PN-PAYOUT-<batch id>`` (the same for every download of a batch, so a
  bank that checks duplicate message IDs refuses a second upload of the same batch);
  ``EndToEndId`` ``PN-B<batch id>-I<item id>`` per item (unique, at most 35 characters);
  remittance text ``PartnerNet payout batch <id>``; requested execution date: today (UTC).
- **Names**: the creditor is the account holder, else the partner's name, transliterated to the
  SEPA Latin character set (EPC's ``a-z A-Z 0-9 / - ? : ( ) . , ' +`` and space) and cut to 70.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import sepaxml
import xmlschema
from flask import current_app
from sepaxml import SepaTransfer
from sqlalchemy import select
from text_unidecode import unidecode  # installed with sepaxml, which transliterates with it too

from ..clock import utcnow
from ..errors import InvalidState, ValidationError
from ..extensions import db
from ..models import Partner, PayoutBatch, PayoutItem
from ..money import minor_digits
from .details import normalize_bic, parse_iban
from .exports import exportable_batch

log = logging.getLogger(__name__)

SCHEMA = "pain.001.001.03"
_NOT_SEPA_TEXT = re.compile(r"[^A-Za-z0-9/\-?:().,'+ ]")


@dataclass(frozen=True)
class SepaLine:
    """One item of a batch as the SEPA file sees it: ``reason`` is None when it is in the file,
    else why not (``"paypal"``, ``"no_iban"``, ``"bad_iban"``, ``"outside_sepa"``)."""

    item_id: int
    partner_id: int
    amount_minor: int
    name: str
    iban: str | None
    bic: str | None
    reason: str | None


def sepa_text(text: str, limit: int) -> str:
    """``text`` in the SEPA Latin character set: transliterated (``Müller`` → ``Muller``), other
    characters as spaces, spaces collapsed, cut to ``limit`` characters."""
    return " ".join(_NOT_SEPA_TEXT.sub(" ", unidecode(text or "")).split())[:limit].strip()


def sepa_plan(batch: PayoutBatch) -> list[SepaLine]:
    """Every item of ``batch`` in item order with whether it goes into the SEPA file (see
    :class:`SepaLine`). Reads only."""
    rows = db.session.execute(
        select(PayoutItem.id, PayoutItem.partner_id, PayoutItem.amount_minor, Partner.name,
               Partner.account_holder, Partner.payout_method, Partner.iban, Partner.bic)
        .join(Partner, Partner.id == PayoutItem.partner_id)
        .where(PayoutItem.batch_id == batch.id)
        .order_by(PayoutItem.id)
    ).all()
    out = []
    for item_id, pid, amount, name, holder, method, iban, bic in rows:
        reason = None
        if method != "bank":
            reason = "paypal"
        elif not iban:
            reason = "no_iban"
        else:
            try:
                parsed = parse_iban(iban)
            except ValidationError:  # a value stored before the check: kept out of the file
                reason = "bad_iban"
            else:
                iban = parsed.compact
                reason = None if parsed.in_sepa_zone else "outside_sepa"
        out.append(SepaLine(int(item_id), int(pid), int(amount), holder or name, iban, bic, reason))
    return out


def debtor_config() -> dict:
    """The agency's debtor account for ``sepaxml``: ``{name, IBAN, BIC, batch, currency}`` from
    ``PARTNERNET_SEPA_NAME``, ``_IBAN``, ``_BIC``. Raises InvalidState (409 ``sepa_not_configured``)
    when one is missing or not valid."""
    cfg = current_app.config
    name = sepa_text(cfg.get("PARTNERNET_SEPA_NAME") or "", 70)
    iban, bic = cfg.get("PARTNERNET_SEPA_IBAN"), cfg.get("PARTNERNET_SEPA_BIC")
    missing = [n for n, v in (("PARTNERNET_SEPA_NAME", name), ("PARTNERNET_SEPA_IBAN", iban),
                              ("PARTNERNET_SEPA_BIC", bic)) if not v]
    if missing:
        raise InvalidState(f"SEPA files need the agency's account: set {', '.join(missing)}",
                           code="sepa_not_configured")
    try:
        iban, bic = parse_iban(iban).compact, normalize_bic(bic)
    except ValidationError as exc:
        raise InvalidState(f"PARTNERNET_SEPA_IBAN or _BIC is not valid: {exc.message}",
                           code="sepa_not_configured") from None
    return {"name": name, "IBAN": iban, "BIC": bic, "batch": True, "currency": "EUR"}


@cache
def xsd() -> xmlschema.XMLSchema:
    """The ISO 20022 ``pain.001.001.03`` schema as ``sepaxml`` ships it, loaded once per process
    (loading takes about half a second; ``sepaxml``'s own ``validate=True`` reloads it every time)."""
    return xmlschema.XMLSchema(str(Path(sepaxml.__file__).parent / "schemas" / f"{SCHEMA}.xsd"))


class _BatchTransfer(SepaTransfer):
    """``sepaxml``'s credit transfer with a message ID of ours instead of a random one."""

    def __init__(self, config: dict, msg_id: str):
        self._fixed_msg_id = msg_id
        super().__init__(config, schema=SCHEMA, clean=True)

    def _create_header(self):
        self.msg_id = self._fixed_msg_id
        super()._create_header()


def export_sepa_xml(batch_id: int) -> bytes:
    """The ``pain.001.001.03`` credit-transfer file (UTF-8 XML bytes) of an approved or paid EUR
    batch, for its items paid by bank transfer (rules in the module docstring), validated against
    the XSD. Raises NotFound (404); InvalidState (409) ``batch_not_approved``, ``sepa_eur_only``,
    ``sepa_not_configured``, ``no_sepa_items``, ``sepa_invalid`` (the file failed its schema)."""
    batch = exportable_batch(batch_id)
    if batch.currency != "EUR" or minor_digits("EUR") != 2:
        raise InvalidState(f"payout batch {batch.id} is in {batch.currency}: SEPA credit transfers are in EUR",
                           code="sepa_eur_only")
    config = debtor_config()
    lines = [line for line in sepa_plan(batch) if line.reason is None]
    if not lines:
        raise InvalidState(f"no item of payout batch {batch.id} is paid by bank transfer to a valid SEPA IBAN",
                           code="no_sepa_items")
    transfer = _BatchTransfer(config, msg_id=f"PN-PAYOUT-{batch.id}")
    today = utcnow().date()
    description = f"PartnerNet payout batch {batch.id}"
    for line in lines:
        payment = {
            "name": sepa_text(line.name, 70) or f"Partner {line.partner_id}",
            "IBAN": line.iban,
            "amount": line.amount_minor,  # integer cents: sepaxml writes them as an exact decimal
            "execution_date": today,
            "description": description,
            "endtoend_id": f"PN-B{batch.id}-I{line.item_id}",
        }
        if line.bic:
            payment["BIC"] = line.bic
        transfer.add_payment(payment)
    xml = transfer.export(validate=False)
    try:
        xsd().validate(xml.decode("utf-8"))
    except xmlschema.XMLSchemaValidationError as exc:  # our inputs are checked: a bug, never a 500
        log.error("SEPA file of payout batch %s failed its schema: %s", batch.id, exc.reason)
        raise InvalidState(f"the SEPA file of payout batch {batch.id} failed its schema check",
                           code="sepa_invalid") from None
    return xml
