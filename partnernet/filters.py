"""Jinja filters for the server-rendered pages (ARCHITECTURE: templates only display).

``money(minor, currency)``: int minor units shown with the currency's symbol or code,
through :func:`partnernet.money.format_minor` (no float is ever involved).
``dt(value, tz)``: an aware UTC datetime shown in the IANA zone ``tz``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Flask

from .money import MoneyError, format_minor

#: Symbols shown before the amount; other currencies show their code after it.
SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CNY": "CN¥", "INR": "₹", "KRW": "₩"}


def money(minor: int | None, currency: str, *, code: bool = False) -> str:
    """``money(210, "USD") == "$2.10"``, ``money(-164, "EUR") == "-€1.64"``,
    ``money(300, "JPY") == "¥300"``, ``money(1250, "CHF") == "12.50 CHF"``; ``None`` gives ``"–"``.
    ``code=True`` adds the ISO code after a symbol (``"$2.10 USD"``). Unknown currency: raw minor units."""
    if minor is None:
        return "–"
    try:
        text = format_minor(int(minor), currency)
    except MoneyError:
        return f"{minor} {currency}"
    sign = ""
    if text.startswith("-"):
        sign, text = "-", text[1:]
    whole, dot, frac = text.partition(".")
    whole = f"{int(whole):,}"
    text = whole + dot + frac
    sym = SYMBOLS.get(currency)
    if sym:
        return f"{sign}{sym}{text}" + (f" {currency}" if code else "")
    return f"{sign}{text} {currency}"


def _zone(tz: str | None):
    try:
        return ZoneInfo(tz or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def dt(value: datetime | date | None, tz: str | None = "UTC", fmt: str = "%Y-%m-%d %H:%M") -> str:
    """An aware datetime shown in zone ``tz`` (unknown zone: UTC) as ``fmt``; a naive one is
    taken as UTC; a date is shown as ``YYYY-MM-DD``; ``None`` gives ``"–"``."""
    if value is None:
        return "–"
    if not isinstance(value, datetime):
        return value.isoformat()
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(_zone(tz)).strftime(fmt)


def register_filters(app: Flask) -> None:
    """Register ``money`` and ``dt`` on ``app``'s Jinja environment."""
    app.jinja_env.filters["money"] = money
    app.jinja_env.filters["dt"] = dt
