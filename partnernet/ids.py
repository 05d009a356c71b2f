"""Bounds of object ids read from requests (URL paths, query strings, JSON bodies).

Pure module: standard library only.

Most primary keys are 32-bit ``INTEGER`` columns on PostgreSQL; conversions, their splits,
ledger lines, invoice lines and audit rows have 64-bit ``BIGINT`` keys (``models.base.BigId``).
PostgreSQL refuses to compare a column with a number outside its type ("integer out of
range"), so an id beyond the column's range must be refused (or found to match nothing)
before it reaches a query: :data:`MAX_ID` for the 32-bit keys, :data:`MAX_BIG_ID` for the
64-bit ones. The app's ``int`` URL converter stops at :data:`MAX_ID` and its ``bigint``
converter at :data:`MAX_BIG_ID` (404 beyond).
"""

from __future__ import annotations

MAX_ID = 2**31 - 1
MAX_BIG_ID = 2**63 - 1


def parse_id_text(text: str, *, max_id: int = MAX_ID) -> int | None:
    """``text`` as a positive id of at most ``max_id``: ASCII digits only (no sign, space or
    other script's digits), ``1 <= id <= max_id``; None otherwise. Never raises."""
    if not isinstance(text, str) or not text.isascii() or not text.isdigit() or len(text) > len(str(max_id)):
        return None
    value = int(text)
    return value if 1 <= value <= max_id else None
