"""User and API-key use cases (CONTRACT §6 ``users create``, ``api-keys create``; §5 bearer keys)."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from ..clock import utcnow
from ..errors import Duplicate, NotFound, ValidationError
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
    NotFound (unknown partner or client id).
    """
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
            user.client_id = client.id
    db.session.add(user)
    db.session.commit()
    return user


def check_password(email: str, password: str) -> User | None:
    """The active user with ``email`` whose password is ``password``, else None."""
    user = db.session.scalar(select(User).where(User.email == normalize_email(email)))
    if user is None or not user.active or not check_password_hash(user.password_hash, password or ""):
        return None
    return user


def hash_api_key(key: str) -> str:
    """SHA-256 hex of an API key (keys are 256-bit random, so a fast hash is safe)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_api_key(email: str) -> str:
    """Create an API key for the user with ``email``, commit, and return the key (shown once).

    Raises NotFound when there is no such user.
    """
    user = db.session.scalar(select(User).where(User.email == normalize_email(email)))
    if user is None:
        raise NotFound(f"no user with email {normalize_email(email)}")
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    db.session.add(ApiKey(user_id=user.id, key_hash=hash_api_key(key), prefix=key[:10]))
    db.session.commit()
    return key


def user_for_api_key(key: str) -> User | None:
    """The active user owning the unrevoked API key ``key``, else None."""
    if not key or not key.startswith(API_KEY_PREFIX):
        return None
    row = db.session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_api_key(key), ApiKey.revoked_at.is_(None)))
    if row is None or not row.user.active:
        return None
    return row.user


def revoke_api_key(key_id: int, user_id: int) -> None:
    """Revoke the key ``key_id`` of user ``user_id``; raises NotFound."""
    row = db.session.get(ApiKey, key_id)
    if row is None or row.user_id != user_id:
        raise NotFound("no such key")
    row.revoked_at = utcnow()
    db.session.commit()


# Login rate limits: failures counted over a sliding window, per account and per IP.
LOGIN_WINDOW_S = 15 * 60
LOGIN_MAX_PER_ACCOUNT = 5
LOGIN_MAX_PER_IP = 20


def attempt_login(email: str, password: str, ip: str) -> User:
    """Check a login and return the user; records failures and commits.

    Raises TooManyAttempts (429) when the account had ``LOGIN_MAX_PER_ACCOUNT`` or the IP
    ``LOGIN_MAX_PER_IP`` failures in the last ``LOGIN_WINDOW_S`` seconds (checked before the
    password, so a locked account cannot be probed), Unauthorized (401) for a wrong email or
    password. Emails compare case-insensitively.
    """
    from datetime import timedelta

    from sqlalchemy import func

    from ..errors import TooManyAttempts, Unauthorized
    from ..models import LoginFailure

    email_n = normalize_email(email)
    since = utcnow() - timedelta(seconds=LOGIN_WINDOW_S)
    by_account = db.session.scalar(
        select(func.count()).select_from(LoginFailure).where(LoginFailure.email == email_n, LoginFailure.at >= since))
    by_ip = db.session.scalar(
        select(func.count()).select_from(LoginFailure).where(LoginFailure.ip == ip, LoginFailure.at >= since))
    if by_account >= LOGIN_MAX_PER_ACCOUNT or by_ip >= LOGIN_MAX_PER_IP:
        raise TooManyAttempts("too many failed sign-ins; try again in 15 minutes")
    user = check_password(email_n, password)
    if user is None:
        db.session.add(LoginFailure(email=email_n[:254], ip=(ip or "")[:64]))
        db.session.commit()
        raise Unauthorized("wrong email or password")
    return user
