"""A partner's payout details (CONTRACT v2 §5 ``POST /partners`` fields): the method and what
each method needs, checked and normalised in one place for the API, the sign-up form and the
partner profile.

- ``payout_method``: ``"paypal"`` (to ``payout_email``, else the partner's email) or ``"bank"``
  (a credit transfer to ``iban``, with ``bic`` and ``account_holder`` when given).
- ``iban``: ISO 13616, checked with ``schwifty`` (country code known, the country's IBAN length,
  mod-97 check digits); stored compact and upper case (``DE89370400440532013000``).
- ``bic``: ISO 9362 business identifier code, 8 or 11 characters, checked with ``schwifty``
  (known country) and against the ``BICIdentifier`` pattern of the ISO 20022 ``pain.001.001.03``
  schema (the first six characters letters), so every stored BIC can go into a SEPA file;
  stored compact and upper case.
- ``account_holder``: the name of the account's holder, at most 70 characters (the ``Max70Text``
  of the creditor name in ``pain.001.001.03``), no control characters.

Pure module: no database access; every error is a :class:`~partnernet.errors.ValidationError`
(400) with its code (``bad_iban``, ``bad_bic``, ``bad_account_holder``, ``bad_payout_method``).
"""

from __future__ import annotations

import re
import unicodedata

from schwifty import BIC, IBAN
from schwifty.exceptions import SchwiftyException

from ..errors import ValidationError
from ..models.partners import PAYOUT_METHODS

ACCOUNT_HOLDER_MAX = 70
_NOT_AN_IBAN = "this is not an IBAN (e.g. DE89 3704 0044 0532 0130 00)"
#: ``BICIdentifier`` of ISO 20022 pain.001.001.03 (the schema a SEPA file is checked against).
_BIC_PATTERN = re.compile(r"[A-Z]{6}[A-Z2-9][A-NP-Z0-9]([A-Z0-9]{3})?")


def parse_iban(text: str, *, field: str = "iban") -> IBAN:
    """The :class:`schwifty.IBAN` of ``text`` (spaces and case ignored). Raises ValidationError
    ``bad_iban`` (on ``field``) for an unknown country, a length that is not the country's, a
    bad structure or failing check digits (ISO 13616 mod 97)."""
    if not isinstance(text, str) or not text.strip() or len(text) > 64:
        raise ValidationError(_NOT_AN_IBAN, code="bad_iban", field=field)
    try:
        return IBAN(text)
    except SchwiftyException as exc:
        message = {"InvalidChecksumDigits": "this IBAN's check digits are wrong; please check it",
                   "InvalidLength": "this IBAN's length is wrong for its country; please check it",
                   }.get(type(exc).__name__, _NOT_AN_IBAN)
        raise ValidationError(message, code="bad_iban", field=field) from None


def normalize_iban(text: str, *, field: str = "iban") -> str:
    """``text`` as a checked IBAN, compact upper case (see :func:`parse_iban`). Raises ValidationError
    ``bad_iban``."""
    return parse_iban(text, field=field).compact


def is_valid_iban(text: str | None) -> bool:
    """True when ``text`` is a valid IBAN (for rows stored before the check existed)."""
    try:
        parse_iban(text or "")
    except ValidationError:
        return False
    return True


def normalize_bic(text: str, *, field: str = "bic") -> str:
    """``text`` as a checked BIC, compact upper case (8 or 11 characters). Raises ValidationError
    ``bad_bic`` for a wrong length, an unknown country or a shape the ISO 20022 schema refuses."""
    if not isinstance(text, str) or not text.strip() or len(text) > 32:
        raise ValidationError("bic must be a BIC (SWIFT code) such as COBADEFFXXX", code="bad_bic", field=field)
    try:
        bic = BIC(text).compact
    except SchwiftyException:
        raise ValidationError("this is not a BIC (8 or 11 characters, e.g. COBADEFFXXX)", code="bad_bic",
                              field=field) from None
    if not _BIC_PATTERN.fullmatch(bic):
        raise ValidationError("not a valid BIC: the first six characters must be letters", code="bad_bic",
                              field=field)
    return bic


def clean_account_holder(text: str, *, field: str = "account_holder") -> str | None:
    """The account holder's name, spaces collapsed; None for a blank one. Raises ValidationError
    ``bad_account_holder`` for more than 70 characters or a control character."""
    if not isinstance(text, str):
        raise ValidationError("account_holder must be a string", code="bad_account_holder", field=field)
    name = " ".join(text.split())
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise ValidationError("account_holder has a control character", code="bad_account_holder", field=field)
    if len(name) > ACCOUNT_HOLDER_MAX:
        raise ValidationError(f"account_holder is longer than {ACCOUNT_HOLDER_MAX} characters",
                              code="bad_account_holder", field=field)
    return name or None


def check_method(method: str, *, field: str = "payout_method") -> str:
    """``method`` when it is one of :data:`PAYOUT_METHODS`; raises ValidationError ``bad_payout_method``."""
    if method not in PAYOUT_METHODS:
        raise ValidationError(f"payout_method must be one of {', '.join(PAYOUT_METHODS)}",
                              code="bad_payout_method", field=field)
    return method


def check_partner_payout(data) -> dict:
    """The checked payout fields of a ``POST /partners`` body (CONTRACT v2 §5) as ``Partner``
    column values ``{payout_method, iban, bic, account_holder}`` (each may be null or absent in
    ``data``). Without ``payout_method`` the method is ``bank`` when an IBAN is given, else
    ``paypal``; ``bank`` needs an IBAN (400 ``missing_field`` on ``iban``). Raises ValidationError
    ``bad_iban``, ``bad_bic``, ``bad_account_holder``, ``bad_payout_method``."""
    iban = data.get("iban")
    iban = normalize_iban(iban) if iban is not None else None
    bic = data.get("bic")
    bic = normalize_bic(bic) if bic is not None else None
    holder = data.get("account_holder")
    holder = clean_account_holder(holder) if holder is not None else None
    method = data.get("payout_method")
    method = check_method(method) if method is not None else ("bank" if iban else "paypal")
    if method == "bank" and iban is None:
        raise ValidationError("payout_method bank needs an iban", code="missing_field", field="iban")
    return {"payout_method": method, "iban": iban, "bic": bic, "account_holder": holder}
