"""Users (staff, partner and client logins) and their hashed API keys."""

from __future__ import annotations

from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .base import UTCDateTime, now_utc

ROLES = ("staff", "partner", "client")


class User(UserMixin, db.Model):
    """A login. ``role`` is staff, partner or client; partner and client users are tied to
    their record by ``partner_id`` / ``client_id``. ``email`` is stored lower-case."""

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

    partner = relationship("Partner", foreign_keys=[partner_id])
    client = relationship("Client", foreign_keys=[client_id])

    @property
    def is_active(self) -> bool:  # Flask-Login
        return self.active


class ApiKey(db.Model):
    """An API key of a user. Only the SHA-256 of the key is stored; ``prefix`` is shown to
    tell keys apart. A key carries its user's role (CONTRACT §5)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user = relationship("User")


class LoginFailure(db.Model):
    """A failed login, kept for rate limiting per account and per IP (recent rows only matter)."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), index=True)
    ip: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc, index=True)
