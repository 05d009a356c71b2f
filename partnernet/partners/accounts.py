"""Partner accounts: sign-up, email confirmation, password reset and the profile (issue 3).

Tokens are itsdangerous timed tokens, each purpose with its own salt, signed with
``SECRET_KEY`` (``SECRET_KEY_FALLBACKS`` still verify). They are single use without any
token table: the confirmation token is refused once the email is confirmed, the reset
token carries a fingerprint of the password hash, which changes when the password does.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from ..auth.passwords import MIN_PASSWORD, change_password, password_problem  # noqa: F401  (used by the views)
from ..auth.services import normalize_email
from ..auth.sessions import end_sessions
from ..catalog import audit_states
from ..clock import utcnow
from ..errors import NotFound, ValidationError
from ..extensions import db
from ..mail import notify
from ..models import CHANNELS, PARTNER_KINDS, Partner, PartnerProfile, User
from ..payouts import details as payout_details
from .emails import queue_email

log = logging.getLogger(__name__)

CONFIRM_SALT = "partnernet.partner-confirm-email"
RESET_SALT = "partnernet.password-reset"
CONFIRM_MAX_AGE_S = 3 * 86400
RESET_MAX_AGE_S = 3600
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


# --------------------------------------------------------------------------- checks


def normalize_iban(text: str) -> str:
    """An IBAN compact and upper case, checked by :func:`partnernet.payouts.details.normalize_iban`
    (country, the country's length, ISO 13616 mod-97). Raises ValidationError(``bad_iban``) on
    ``payout_iban`` (the forms' field)."""
    return payout_details.normalize_iban(text or "", field="payout_iban")


def check_timezone(tz: str) -> str:
    """``tz`` when it is an IANA zone name; raises ValidationError(``unknown_timezone``)."""
    try:
        if not tz or len(tz) > 64:
            raise ValueError
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"unknown time zone {tz!r}", code="unknown_timezone", field="timezone") from None
    return tz


@dataclass(frozen=True)
class PayoutDetails:
    """Checked payout details, as stored on ``Partner`` (CONTRACT v2 §5)."""

    method: str
    payout_email: str | None = None
    iban: str | None = None
    bic: str | None = None
    account_holder: str | None = None


def _payout(method: str, paypal_email: str | None, iban: str | None, bic: str | None = None,
            account_holder: str | None = None) -> PayoutDetails:
    """The checked details for ``method`` (``paypal``: the PayPal email; ``bank``: the IBAN, and the
    BIC and account holder when given; the form's former value ``iban`` means ``bank``). Raises
    ValidationError on the form's field (``paypal_email``, ``payout_iban``, ``payout_bic``,
    ``account_holder``, ``payout_method``), rules of :mod:`partnernet.payouts.details`."""
    if method == "paypal":
        addr = normalize_email(paypal_email or "")
        if not EMAIL_RE.fullmatch(addr):
            raise ValidationError("enter the email address of your PayPal account", code="bad_email",
                                  field="paypal_email")
        return PayoutDetails("paypal", payout_email=addr)
    if method in ("bank", "iban"):
        return PayoutDetails(
            "bank", iban=normalize_iban(iban or ""),
            bic=payout_details.normalize_bic(bic, field="payout_bic") if (bic or "").strip() else None,
            account_holder=payout_details.clean_account_holder(account_holder or "", field="account_holder"))
    raise ValidationError("choose PayPal or bank transfer (IBAN)", code="bad_payout_method", field="payout_method")


def _store_payout(partner: Partner, details: PayoutDetails) -> None:
    partner.payout_method = details.method
    partner.payout_email = details.payout_email
    partner.iban, partner.bic, partner.account_holder = details.iban, details.bic, details.account_holder


# --------------------------------------------------------------------------- tokens


def _serializer(salt: str) -> URLSafeTimedSerializer:
    cfg = current_app.config
    keys = [*reversed(cfg.get("SECRET_KEY_FALLBACKS") or []), cfg["SECRET_KEY"]]  # itsdangerous: newest last
    return URLSafeTimedSerializer(keys, salt=salt)


def _pw_fingerprint(user: User) -> str:
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def confirm_token(user: User) -> str:
    """The email-confirmation token of ``user`` (valid :data:`CONFIRM_MAX_AGE_S` seconds)."""
    return _serializer(CONFIRM_SALT).dumps({"u": user.id, "e": user.email})


def reset_token(user: User) -> str:
    """The password-reset token of ``user`` (valid :data:`RESET_MAX_AGE_S` seconds, single use)."""
    return _serializer(RESET_SALT).dumps({"u": user.id, "p": _pw_fingerprint(user)})


def _load(salt: str, token: str, max_age: int) -> dict:
    from ..signing import is_canonical_token

    if not is_canonical_token(token or ""):  # another spelling of a valid token is not that token
        raise ValidationError("this link is not valid", code="bad_token")
    try:
        data = _serializer(salt).loads(token or "", max_age=max_age)
    except SignatureExpired:
        raise ValidationError("this link has expired; ask for a new one", code="token_expired") from None
    except BadSignature:
        raise ValidationError("this link is not valid", code="bad_token") from None
    if not isinstance(data, dict):
        raise ValidationError("this link is not valid", code="bad_token")
    return data


def _base_url() -> str:
    return current_app.config.get("PARTNERNET_BASE_URL", "").rstrip("/")


# --------------------------------------------------------------------------- sign-up


@dataclass
class SignupData:
    """What the sign-up form gives (shape-checked by the form)."""

    email: str
    password: str
    name: str
    kind: str
    website: str = ""
    social_handles: str = ""
    audience_size: int | None = None
    channels: list[str] = field(default_factory=list)
    payout_method: str = "paypal"
    paypal_email: str | None = None
    payout_iban: str | None = None
    payout_bic: str | None = None
    account_holder: str | None = None
    timezone: str = "UTC"
    accept_terms: bool = False
    recruiter_token: str | None = None


def _record_recruiter(partner: Partner, token: str | None) -> None:
    """Record the recruiting partner of an invite token on a new ``partner`` (flushed, so it has
    an id) through ``partnernet.partners.recruiting.apply_recruiter`` (recruiter and its default
    override percent). Nothing for no token, a bad token, or when recruiting is not installed:
    a bad invite never stops a sign-up."""
    if not token:
        return
    try:
        from .recruiting import apply_recruiter
    except ImportError:
        log.warning("recruiter invite token given but partner recruiting is not available")
        return
    try:
        if not apply_recruiter(partner, token):
            log.info("recruiter invite token refused")
    except Exception:
        log.info("recruiter invite token refused", exc_info=True)


def _tell_owner_of_signup(email: str) -> None:
    """A sign-up named an email that has an account (as a user or a partner): tell its owner,
    who may have forgotten it, instead of telling the visitor (CONTRACT §5 v2: sign-up answers
    the same for known and unknown emails). Hashes a throw-away password so the answer takes
    as long as a real sign-up; commits."""
    generate_password_hash(secrets.token_urlsafe(16))
    queue_email(email, "Someone tried to sign up with your email",
                "Someone (perhaps you) tried to open a PartnerNet partner account with this email "
                f"address, which already has one.\n\nSign in at {_base_url()}/login, or set a new password "
                f"at {_base_url()}/password-reset.\n\nIf it was not you, nothing has changed and you can "
                "ignore this email.\n", kind="signup_existing")
    db.session.commit()


def signup_partner(data: SignupData) -> User | None:
    """Create a pending partner, its profile and its login; queue the confirmation email; commit.
    Returns the new user, or None when the email already has an account: then the owner is
    emailed instead (:func:`_tell_owner_of_signup`) and the caller shows the same "check your
    email" answer, so sign-up reveals no account (CONTRACT §5 v2).

    Raises ValidationError (field named: weak ``password``, ``kind``, ``channels``, ``timezone``,
    ``paypal_email``/``payout_iban``/``payout_bic``/``account_holder``, ``accept_terms``), checked
    before the email is looked up.
    """
    email = normalize_email(data.email)
    if not EMAIL_RE.fullmatch(email) or len(email) > 254:
        raise ValidationError("enter a valid email address", code="bad_email", field="email")
    problem = password_problem(data.password, email)
    if problem:
        raise ValidationError(problem, code="weak_password", field="password")
    if data.kind not in PARTNER_KINDS:
        raise ValidationError("choose affiliate or influencer", code="bad_kind", field="kind")
    bad = [c for c in data.channels if c not in CHANNELS]
    if bad or not data.channels:
        raise ValidationError("choose at least one of the listed channels", code="bad_channel", field="channels")
    if data.audience_size is not None and not 0 <= data.audience_size <= 2_000_000_000:
        raise ValidationError("audience size is a number of people", code="bad_audience", field="audience_size")
    tz = check_timezone(data.timezone)
    payout = _payout(data.payout_method, data.paypal_email, data.payout_iban, data.payout_bic, data.account_holder)
    if not data.accept_terms:
        raise ValidationError("you need to accept the terms", code="terms_required", field="accept_terms")
    if not data.website.strip() and not data.social_handles.strip():
        raise ValidationError("give your website or your social handles", code="missing_field", field="website")
    taken = db.session.scalar(select(User.id).where(User.email == email)) or \
        db.session.scalar(select(Partner.id).where(Partner.email == email))
    if taken:
        _tell_owner_of_signup(email)
        return None
    now = utcnow()
    partner = Partner(email=email, name=data.name.strip()[:200], kind=data.kind, status="pending")
    _store_payout(partner, payout)
    db.session.add(partner)
    try:
        db.session.flush()
        _record_recruiter(partner, data.recruiter_token)
        db.session.add(PartnerProfile(
            partner_id=partner.id, website=data.website.strip(), social_handles=data.social_handles.strip(),
            audience_size=data.audience_size, channels=list(data.channels), timezone=tz, terms_accepted_at=now,
        ))
        user = User(email=email, password_hash=generate_password_hash(data.password), role="partner",
                    name=partner.name, partner_id=partner.id)
        db.session.add(user)
        db.session.flush()
        audit_states.record_created(user.id, "partner", partner)  # the sign-up is its own actor
    except IntegrityError:  # the same email signed up at the same moment
        db.session.rollback()
        _tell_owner_of_signup(email)
        return None
    link = f"{_base_url()}/signup/confirm/{confirm_token(user)}"
    notify.signup_confirmation(email, partner.name, link)
    db.session.commit()
    return user


def confirm_email(token: str) -> User:
    """Confirm the email of the token's user and commit. Single use. Raises ValidationError
    (``token_expired``, ``bad_token``, ``already_confirmed``)."""
    data = _load(CONFIRM_SALT, token, CONFIRM_MAX_AGE_S)
    user = db.session.get(User, data.get("u")) if isinstance(data.get("u"), int) else None
    if user is None or user.email != data.get("e") or user.partner_id is None:
        raise ValidationError("this link is not valid", code="bad_token")
    profile = db.session.get(PartnerProfile, user.partner_id)
    if profile is None:
        raise ValidationError("this link is not valid", code="bad_token")
    if profile.email_confirmed_at is not None:
        raise ValidationError("this email is already confirmed", code="already_confirmed")
    profile.email_confirmed_at = utcnow()
    db.session.commit()
    return user


def resend_confirmation(user_id: int) -> None:
    """Queue a new confirmation email for the user (nothing when already confirmed); commit."""
    user = db.session.get(User, user_id)
    profile = db.session.get(PartnerProfile, user.partner_id) if user and user.partner_id else None
    if profile is None or profile.email_confirmed_at is not None:
        return
    link = f"{_base_url()}/signup/confirm/{confirm_token(user)}"
    notify.signup_confirmation(user.email, user.name, link, first=False)
    db.session.commit()


def request_password_reset(email: str) -> None:
    """Queue a reset email when an active user has ``email`` (nothing otherwise: the page says the
    same either way, so it reveals no account); commit."""
    user = db.session.scalar(select(User).where(User.email == normalize_email(email)))
    if user is None or not user.active:
        log.info("password reset asked for an unknown email")
        return
    link = f"{_base_url()}/password-reset/{reset_token(user)}"
    notify.password_reset(user.email, link)
    db.session.commit()


def reset_password(token: str, new_password: str) -> User:
    """Set a new password from a reset token and commit; the token then stops working.
    Raises ValidationError (``token_expired``, ``bad_token``, ``weak_password``)."""
    data = _load(RESET_SALT, token, RESET_MAX_AGE_S)
    user = db.session.get(User, data.get("u")) if isinstance(data.get("u"), int) else None
    if user is None or not user.active or _pw_fingerprint(user) != data.get("p"):
        raise ValidationError("this link is not valid any more; ask for a new one", code="bad_token")
    problem = password_problem(new_password, user.email)
    if problem:
        raise ValidationError(problem, code="weak_password", field="password")
    user.password_hash = generate_password_hash(new_password)
    end_sessions(user)  # every session and remember-me cookie of the old password ends
    db.session.commit()
    return user


def check_reset_token(token: str) -> None:
    """Raise ValidationError when the reset token would be refused (for the GET of the form)."""
    data = _load(RESET_SALT, token, RESET_MAX_AGE_S)
    user = db.session.get(User, data.get("u")) if isinstance(data.get("u"), int) else None
    if user is None or _pw_fingerprint(user) != data.get("p"):
        raise ValidationError("this link is not valid any more; ask for a new one", code="bad_token")


# --------------------------------------------------------------------------- profile


def get_profile(partner_id: int) -> PartnerProfile:
    """The partner's profile. For a partner made without the sign-up form (API, CLI) it is a
    new, empty (UTC) profile that is not yet in the session: reading it writes nothing, and
    the use case that changes it adds it. Raises NotFound for an unknown partner."""
    profile = db.session.get(PartnerProfile, partner_id)
    if profile is None:
        if db.session.get(Partner, partner_id) is None:
            raise NotFound(f"no partner {partner_id}")
        profile = PartnerProfile(partner_id=partner_id, timezone="UTC", channels=[],
                                 email_confirmed_at=None)
    return profile


def partner_timezone(partner_id: int) -> str:
    """The partner's IANA time zone (UTC when it has no profile)."""
    tz = db.session.scalar(select(PartnerProfile.timezone).where(PartnerProfile.partner_id == partner_id))
    return tz or "UTC"


def update_payout_and_timezone(partner_id: int, *, payout_method: str, paypal_email: str | None,
                               payout_iban: str | None, timezone: str, user_id: int | None = None,
                               current_password: str | None = None, payout_bic: str | None = None,
                               account_holder: str | None = None) -> PartnerProfile:
    """Change the payout details (PayPal email, or IBAN, BIC and account holder, checked by
    :mod:`partnernet.payouts.details`) and time zone, stored on the partner; commit.

    A change of the payout details (method, PayPal email, IBAN, BIC or account holder) needs the
    current password of the signed-in partner user ``user_id`` and emails the partner (to its
    account email) that they changed; a time-zone change alone needs neither. Raises
    ValidationError on the offending field (``wrong_password`` on ``current_password``: nothing is
    saved), NotFound."""
    tz = check_timezone(timezone)
    payout = _payout(payout_method, paypal_email, payout_iban, payout_bic, account_holder)
    partner = db.session.get(Partner, partner_id)
    if partner is None:
        raise NotFound(f"no partner {partner_id}")
    profile = get_profile(partner_id)
    stored = PayoutDetails(partner.payout_method, partner.payout_email, partner.iban, partner.bic,
                           partner.account_holder)
    if stored != payout:
        user = db.session.get(User, user_id) if user_id is not None else None
        if user is None or user.partner_id != partner_id or \
                not check_password_hash(user.password_hash, current_password or ""):
            raise ValidationError("enter your current password to change your payout details",
                                  code="wrong_password", field="current_password")
        queue_email(user.email, "Your PartnerNet payout details changed",
                    f"Hello {partner.name},\n\nthe payout details of your PartnerNet account were just "
                    f"changed (payout method: {'bank transfer' if payout.method == 'bank' else 'PayPal'}).\n\n"
                    "If you did not make this change, change your password now and contact us.\n",
                    kind="payout_details_changed")
    db.session.add(profile)  # new for a partner made without the sign-up form
    _store_payout(partner, payout)
    profile.timezone = tz
    db.session.commit()
    return profile


def account_state(partner_id: int) -> dict:
    """Where a partner's account stands, for its home page: ``{"status": partner status,
    "email_confirmed": bool, "step": "confirm_email" | "await_approval" | "approved" | "rejected" |
    "suspended"}``. Raises NotFound."""
    partner = db.session.get(Partner, partner_id)
    if partner is None:
        raise NotFound(f"no partner {partner_id}")
    profile = db.session.get(PartnerProfile, partner_id)
    # Partners made by staff or the API have no sign-up profile: their email counts as confirmed.
    confirmed = profile is None or profile.email_confirmed_at is not None or profile.terms_accepted_at is None
    if partner.status in ("rejected", "suspended", "approved"):
        step = partner.status
    else:
        step = "await_approval" if confirmed else "confirm_email"
    return {"status": partner.status, "email_confirmed": confirmed, "step": step}
