"""The texts of every email PartnerNet sends: one function per kind, each returning
``(subject, body)`` (plain text). Pure: no database, no sending (see :mod:`partnernet.mail.notify`).

Money arrives as int minor units with a currency code and is shown with
:func:`partnernet.filters.money` (CONTRACT §4: never floats).
"""

from __future__ import annotations

from ..filters import money

CONFIRM_EMAIL = "confirm_email"
PASSWORD_RESET = "password_reset"
PARTNER_APPROVED = "partner_approved"
PARTNER_REJECTED = "partner_rejected"
PARTNER_SUSPENDED = "partner_suspended"
PARTNER_REINSTATED = "partner_reinstated"
APPLICATION_APPROVED = "application_approved"
APPLICATION_REJECTED = "application_rejected"
PAYOUT_SENT = "payout_sent"
BUDGET_80 = "budget_80"
BUDGET_100 = "budget_100"
CAP_REACHED = "cap_reached"

KINDS = (CONFIRM_EMAIL, PASSWORD_RESET, PARTNER_APPROVED, PARTNER_REJECTED, PARTNER_SUSPENDED,
         PARTNER_REINSTATED, APPLICATION_APPROVED, APPLICATION_REJECTED, PAYOUT_SENT, BUDGET_80, BUDGET_100,
         CAP_REACHED)

_SIGNATURE = "\n-- \nPartnerNet\n"


def _hello(name: str | None) -> str:
    return f"Hello {name},\n\n" if name else "Hello,\n\n"


def _reason(reason: str | None) -> str:
    return f"\nReason: {reason}\n" if reason else ""


def confirm_email(name: str | None, link: str, *, first: bool = True) -> tuple[str, str]:
    """Sign-up confirmation: ``link`` is the single-use confirmation URL (valid 3 days)."""
    after = "Our team then reviews your application.\n\n" if first else ""
    return ("Confirm your PartnerNet email",
            _hello(name) + "confirm your email address by opening this link (valid for 3 days, once):\n\n"
            f"{link}\n\n{after}If you did not sign up, ignore this email." + _SIGNATURE)


def password_reset(link: str) -> tuple[str, str]:
    """Password reset: ``link`` is the single-use reset URL (valid one hour, dead once used)."""
    return ("Reset your PartnerNet password",
            "Set a new password by opening this link (valid for one hour, once):\n\n"
            f"{link}\n\nIf you did not ask for it, ignore this email: your password stays as it is."
            + _SIGNATURE)


_PARTNER_TEXTS = {
    PARTNER_APPROVED: ("Your PartnerNet account is approved",
                       "Welcome aboard: your partner account is approved and your tracking links work "
                       "from now on."),
    PARTNER_REJECTED: ("Your PartnerNet application",
                       "We are sorry: your partner application was not approved."),
    PARTNER_SUSPENDED: ("Your PartnerNet account is suspended",
                        "Your partner account is suspended: your links send visitors to the advertiser's "
                        "fallback page until it is reinstated."),
    PARTNER_REINSTATED: ("Your PartnerNet account is active again",
                         "Your partner account is reinstated: your tracking links work again."),
}


def partner_decision(kind: str, name: str | None, reason: str | None = None) -> tuple[str, str]:
    """A staff decision on a partner account: ``kind`` one of ``partner_approved``,
    ``partner_rejected``, ``partner_suspended``, ``partner_reinstated``; ``reason`` optional.
    Raises KeyError for another kind."""
    subject, text = _PARTNER_TEXTS[kind]
    return subject, _hello(name) + text + "\n" + _reason(reason) + _SIGNATURE


def application_decision(approved: bool, name: str | None, campaign: str, reason: str | None = None,
                         ) -> tuple[str, str]:
    """A staff decision on a partner's application to campaign ``campaign``."""
    word = "approved" if approved else "not approved"
    then = "You can create tracking links for it now.\n" if approved else ""
    return (f"Your application to {campaign} was {word}",
            _hello(name) + f"your application to {campaign} was {word}.\n{then}" + _reason(reason)
            + _SIGNATURE)


def payout_sent(name: str | None, amount_minor: int, currency: str, batch_id: int, method: str | None,
                ) -> tuple[str, str]:
    """A payout batch was marked paid: ``amount_minor`` of ``currency`` is on its way to the
    partner (``method`` ``paypal`` / ``iban`` / ``bank`` or None)."""
    how = {"paypal": " to your PayPal account", "iban": " by bank transfer", "bank": " by bank transfer"}
    return (f"Your PartnerNet payout of {money(amount_minor, currency, code=True)} was sent",
            _hello(name) + f"we sent you {money(amount_minor, currency, code=True)}"
            f"{how.get(method or '', '')} (payout batch {batch_id}). It usually arrives within a few "
            "business days; your earnings page shows it as paid." + "\n" + _SIGNATURE)


def budget_reached(percent: int, campaign: str, spent_minor: int, budget_minor: int, currency: str,
                   ) -> tuple[str, str]:
    """A campaign's spend reached ``percent`` (80 or 100) of its budget."""
    spent, budget = money(spent_minor, currency, code=True), money(budget_minor, currency, code=True)
    if percent >= 100:
        return (f"{campaign}: budget used up",
                f"Hello,\n\nthe campaign {campaign} has used its whole budget ({spent} of {budget}). Its "
                "links now send visitors to the fallback page and new conversions are rejected. Raise the "
                "budget to start it again." + "\n" + _SIGNATURE)
    return (f"{campaign}: {percent}% of the budget used",
            f"Hello,\n\nthe campaign {campaign} has used {percent}% of its budget ({spent} of {budget}). "
            "When the budget is used up its links send visitors to the fallback page." + "\n" + _SIGNATURE)


def cap_reached(campaign: str, window: str, cap_minor: int | None, currency: str, until_text: str,
                ) -> tuple[str, str]:
    """A campaign reached its ``window`` (``daily`` / ``monthly``) spend cap until ``until_text``."""
    cap = f" ({money(cap_minor, currency, code=True)})" if cap_minor is not None else ""
    return (f"{campaign}: {window} cap reached",
            f"Hello,\n\nthe campaign {campaign} reached its {window} spend cap{cap}. Its links send visitors "
            f"to the fallback page until {until_text}." + "\n" + _SIGNATURE)
