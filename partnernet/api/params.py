"""Request parsing for the API: JSON bodies, query filters and keyset pagination (CONTRACT §5).

Every refusal is a :class:`~partnernet.errors.ValidationError` (400) with a code
and, where there is one, the offending field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import date
from typing import Any

from flask import request
from sqlalchemy import BigInteger, Select

from ..catalog.services import parse_id
from ..errors import ValidationError
from ..extensions import db
from ..ids import MAX_BIG_ID, MAX_ID, parse_id_text
from ..text import find_unclean

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def json_body() -> dict[str, Any]:
    """The request body as a JSON object (an empty body is ``{}``).

    Raises ValidationError ``bad_json`` for a body that is not JSON, is not an object, or
    uses NaN/Infinity, and ``bad_text`` (with ``field``, the path of the string, e.g.
    ``events[0].key``) when any string or object key holds a NUL character or a lone UTF-16
    surrogate such as ``"\\ud800"`` (neither can be stored: :mod:`partnernet.text`).
    """
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ValidationError("the body is not valid JSON", code="bad_json") from None
    if not isinstance(data, dict):
        raise ValidationError("the body must be a JSON object", code="bad_json")
    where = find_unclean(data)
    if where is not None:
        raise ValidationError(
            "text must not hold NUL characters or unpaired UTF-16 surrogates", code="bad_text", field=where or None
        )
    return data


def arg(name: str) -> str | None:
    """The query parameter ``name``; absent or empty gives None."""
    value = request.args.get(name)
    return value if value not in (None, "") else None


def id_arg(name: str) -> int | None:
    """A query parameter holding an id (400 ``bad_id`` when it is not one); None when absent."""
    value = arg(name)
    return None if value is None else parse_id(value, name)


def date_arg(name: str) -> date:
    """A required ``YYYY-MM-DD`` query parameter (400 ``missing_field`` / ``bad_date``)."""
    value = arg(name)
    if value is None:
        raise ValidationError(f"{name} is required (YYYY-MM-DD)", code="missing_field", field=name)
    try:
        if not _DATE_RE.fullmatch(value):
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"{name} must be a date as YYYY-MM-DD", code="bad_date", field=name) from None


def path_id(value: str, *, max_id: int = MAX_ID) -> int | None:
    """An id from the URL path, or None when it cannot be one (the caller answers 404).

    ``max_id``: :data:`partnernet.ids.MAX_ID` for the 32-bit keys (the default),
    :data:`partnernet.ids.MAX_BIG_ID` for conversions."""
    return parse_id_text(value, max_id=max_id)


def page(stmt: Select, id_col, render: Callable[[Any], dict]) -> dict[str, Any]:
    """One page of ``stmt`` (ordered by ``id_col`` ascending) as ``{"items": [...], "next": cursor}``.

    Keyset pagination: ``?cursor=`` is the ``next`` of the previous page (the last id seen),
    ``?limit=`` 1-500 (default 50). ``next`` is null on the last page. Raises ValidationError
    ``bad_cursor`` / ``bad_limit``.
    """
    raw_limit = arg("limit")
    if raw_limit is None:
        limit = DEFAULT_LIMIT
    else:
        if not raw_limit.isascii() or not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise ValidationError(
                f"limit must be a whole number from 1 to {MAX_LIMIT}", code="bad_limit", field="limit"
            )
        limit = int(raw_limit)
    cursor = arg("cursor")
    if cursor is not None:
        if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 19:
            raise ValidationError(
                "cursor must be the next value of a previous page", code="bad_cursor", field="cursor"
            )
        after = int(cursor)
        if after >= (MAX_BIG_ID if isinstance(id_col.type, BigInteger) else MAX_ID):
            return {"items": [], "next": None}  # no id lies beyond: never compare out of the column's range
        stmt = stmt.where(id_col > after)
    rows = db.session.scalars(stmt.limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [render(r) for r in rows], "next": str(rows[-1].id) if more else None}
