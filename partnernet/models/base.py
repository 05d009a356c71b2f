"""Shared column types for the models."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, DateTime, Integer
from sqlalchemy.types import TypeDecorator

from ..clock import utcnow

# BIGINT on PostgreSQL, INTEGER (rowid alias, autoincrement) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

# Money in integer minor units: 64-bit everywhere (a 32-bit column ends at 21,474,836.47 USD).
MinorUnits = BigInteger()


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always read back as an aware UTC ``datetime``.

    PostgreSQL stores ``timestamptz``; SQLite stores text without a zone, which
    this type reads back as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are refused: use clock.utcnow()")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def now_utc() -> datetime:
    """Column default: :func:`partnernet.clock.utcnow`."""
    return utcnow()
