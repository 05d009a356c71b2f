"""Users (staff, partner and client logins) and their hashed API keys."""

from __future__ import annotations

import secrets
from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .base import UTCDateTime, now_utc

ROLES = ("staff", "partner", "client")


def new_session_token() -> str:
    """A fresh random session token (32 URL-safe characters)."""
    return secrets.token_urlsafe(24)


class User(UserMixin, db.Model):
    """A login. ``role`` is staff, partner or client; partner and client users are tied to
    their record by ``partner_id`` / ``client_id``. ``email`` is stored lower-case.

    ``session_token`` is part of the Flask-Login id (:meth:`get_id`, ``"<id>:<token>"``) that
    the session and the remember-me cookie carry; replacing it (logout, password change,
    deactivation: :func:`partnernet.auth.sessions.end_sessions`) ends every session and
    remember-me cookie of the user at once (CONTRACT §5 v2)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200), default="")
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"), index=True)
    client_id: Mapped[int | None] = mapped_column(ForeignKey("clients.id"), index=True)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    last_login_ip: Mapped[str | None] = mapped_column(String(64))  # fraud flag self_referral
    session_token: Mapped[str] = mapped_column(String(64), default=new_session_token)

    partner = relationship("Partner", foreign_keys=[partner_id])
    client = relationship("Client", foreign_keys=[client_id])

    @property
    def is_active(self) -> bool:  # Flask-Login
        return self.active

    def get_id(self) -> str:  # Flask-Login: what the session and the remember-me cookie hold
        return f"{self.id}:{self.session_token}"


class ApiKey(db.Model):
    """An API key of a user. Only the SHA-256 of the key is stored; ``prefix`` is shown to
    tell keys apart. A key carries its user's role (CONTRACT §5)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user = relationship("User")


class LoginThrottle(db.Model):
    """A sign-in counter of one fixed window (:mod:`partnernet.auth.throttle`): ``key`` names
    what is counted (an IP, or an account seen from one IP), ``count`` the tries in the window
    that began at ``window_start`` (failures and tries still running; a success gives its try
    back). Rows of past windows are pruned."""

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    count: Mapped[int] = mapped_column(default=0)
