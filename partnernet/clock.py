"""The one source of "now" (UTC). Tests may freeze it with :func:`set_now`."""

from __future__ import annotations

from datetime import UTC, datetime

_frozen: datetime | None = None


def utcnow() -> datetime:
    """Current time as an aware ``datetime`` in UTC."""
    return _frozen if _frozen is not None else datetime.now(UTC)


def set_now(value: datetime | None) -> None:
    """Freeze ``utcnow()`` at ``value`` (aware, UTC); ``None`` unfreezes. For tests only."""
    global _frozen
    if value is not None and value.tzinfo is None:
        raise ValueError("set_now takes an aware datetime")
    _frozen = value
