"""User and API-key use cases (CONTRACT §6 ``users create``, ``api-keys create``; §5 bearer keys)
and the sign-in check (throttled: :mod:`.throttle`; sessions: :mod:`.sessions`).

Listing, creating and revoking keys from the API and the pages: :mod:`.keys`; listing,
deactivating and activating users: :mod:`.users`."""

from __future__ import annotations

import hashlib
import secrets
from functools import lru_cache

from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from ..errors import Duplicate, NotFound, TooManyAttempts, Unauthorized, ValidationError
from ..extensions import db
from ..models import ROLES, ApiKey, Client, Partner, User

API_KEY_PREFIX = "pn_"


def normalize_email(email: str) -> str:
    """Emails compare case-insensitively: stored and looked up stripped and lower-case."""
    return (email or "").strip().lower()


def create_user(email: str, password: str, role: str, *, partner_id: int | None = None,
                client_id: int | None = None, name: str = "") -> User:
    """Create a user with a hashed password and commit.

    A partner or client user is tied to ``partner_id`` / ``client_id``, or to a new record
    (a new partner starts ``pending``; a new client takes the email as name and USD).
    Raises ValidationError (bad role, email or password), Duplicate (email taken),
    NotFound (unknown partner or client id). A new partner or client record is audited
    (``partner.create`` / ``client.create``, actor: the system, e.g. the CLI) in the same transaction.
    """
    from ..catalog import audit_states
    from ..catalog.services import new_postback_credentials

    email = normalize_email(email)
    if role not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}", field="role")
    if "@" not in email or len(email) > 254:
        raise ValidationError("a valid email is required", field="email")
    if not password or len(password) < 8:
        raise ValidationError("the password needs at least 8 characters", field="password")
    if db.session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Duplicate(f"a user with email {email} exists", field="email")
    user = User(email=email, password_hash=generate_password_hash(password), role=role, name=name or email)
    if role == "partner":
        if partner_id is not None:
            if db.session.get(Partner, partner_id) is None:
                raise NotFound(f"no partner {partner_id}")
            user.partner_id = partner_id
        else:
            partner = db.session.scalar(select(Partner).where(Partner.email == email))
            if partner is None:
                partner = Partner(email=email, name=name or email, kind="affiliate", status="pending")
                db.session.add(partner)
                db.session.flush()
                audit_states.record_created(None, "partner", partner)
            user.partner_id = partner.id
    elif role == "client":
        if client_id is not None:
            if db.session.get(Client, client_id) is None:
                raise NotFound(f"no client {client_id}")
            user.client_id = client_id
        else:
            key, secret = new_postback_credentials()
            client = Client(name=email, currency="USD", website_url="", postback_key=key, postback_secret=secret)
            db.session.add(client)
            db.session.flush()
            audit_states.record_created(None, "client", client)
            user.client_id = client.id
    db.session.add(user)
    db.session.commit()
    return user


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A password hash made with the current default method, checked when no account matches so
    that an unknown email costs the same time as a wrong password (CONTRACT §5 v2)."""
    return generate_password_hash(secrets.token_urlsafe(16))


def check_password(email: str, password: str) -> User | None:
    """The active user with ``email`` whose password is ``password``, else None.

    One password hash is checked whatever the case (an unknown email checks a dummy hash, a
    deactivated user its own), so the answer time does not tell which emails have accounts."""
    user = db.session.scalar(select(User).where(User.email == normalize_email(email)))
    ok = check_password_hash(user.password_hash if user is not None else _dummy_hash(), password or "")
    if user is None or not ok or not user.active:
        return None
    return user


def hash_api_key(key: str) -> str:
    """SHA-256 hex of an API key (keys are 256-bit random, so a fast hash is safe)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_api_key() -> tuple[str, str, str]:
    """A new random API key: (key, its SHA-256 hex, the prefix shown to tell keys apart)."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_api_key(key), key[:10]


def create_api_key(email: str) -> str:
    """Create an API key for the user with ``email``, commit, and return the key (shown once).

    Raises NotFound when there is no such user (CONTRACT §6 ``api-keys create``).
    """
    from .keys import create_key

    user = db.session.scalar(select(User).where(User.email == normalize_email(email)))
    if user is None:
        raise NotFound(f"no user with email {normalize_email(email)}")
    return create_key(user.id)[1]


def user_for_api_key(key: str) -> User | None:
    """The active user owning the unrevoked API key ``key``, else None.

    Read from the database on every call (nothing is cached per process), so a revoked key or a
    deactivated user is refused by the very next request in every process (CONTRACT §5 v2)."""
    if not key or not key.startswith(API_KEY_PREFIX) or len(key) > 200:
        return None
    row = db.session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_api_key(key), ApiKey.revoked_at.is_(None)))
    if row is None or not row.user.active:
        return None
    return row.user


def attempt_login(email: str, password: str, ip: str) -> User:
    """Check a sign-in and return the user; commits the throttle counters.

    Throttled by :func:`partnernet.auth.throttle.reserve` before the password is checked:
    raises TooManyAttempts (429) past the per-IP or per-(account, IP) limit (the same answer
    for known and unknown emails; ``retry_after_s`` on the error: seconds until it lifts), Unauthorized (401, ``wrong email or password``) for an
    unknown email, a wrong password or a deactivated user alike. Emails compare
    case-insensitively. A partner user's sign-in IP is kept as ``last_login_ip`` (the fact behind
    the ``self_referral`` fraud flag).
    """
    from . import throttle

    email_n = normalize_email(email)[:254]
    verdict = throttle.reserve(email_n, ip or "")
    if not verdict.allowed:
        minutes = max(1, (verdict.retry_after_s + 59) // 60)
        err = TooManyAttempts(f"too many failed sign-ins; try again in {minutes} minutes")
        err.retry_after_s = verdict.retry_after_s
        raise err
    user = check_password(email_n, password)
    if user is None:
        raise Unauthorized("wrong email or password")
    throttle.succeeded(email_n, ip or "")
    if user.partner_id is not None and ip and user.last_login_ip != ip[:64]:
        user.last_login_ip = ip[:64]  # the self_referral fact (partnernet.conversions.flags)
    db.session.commit()
    return user
