"""CSV files a spreadsheet can open safely (CSV injection, OWASP "CSV Injection").

A spreadsheet runs a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a formula (and
some also after a leading tab, carriage return or line feed). Sub IDs, partner names,
emails, order IDs and coupon codes come from outside (any clicker can put
``=HYPERLINK(...)`` in a sub ID), so every CSV the product writes goes through
:func:`writer`, which puts a single quote ``'`` in front of such a text cell. The quote
shows in the cell and stops the formula; the rest of the value is kept as it is.

What is neutralised and what is not (the product's rule):

- **text cells** (``str``): always, when they start with one of :data:`FORMULA_LEADS`;
- **number cells** the product formats itself: ``int`` and :class:`~decimal.Decimal`
  values are written as they are, and a ``str`` in a column declared ``numeric`` (money
  such as ``"-5.00"``, percents such as ``"12.50"``) is kept as it is **only** when it is a
  plain decimal number (:data:`PLAIN_NUMBER`: an optional ``-``, digits, an optional
  ``.`` and digits), so a negative balance stays a number a bank or a spreadsheet reads
  as one. Anything else in a numeric column is treated as text. So a column declared
  numeric by mistake can never carry a formula.

``None`` is written as an empty cell. Booleans are text (``True``/``False``).

Line breaks: Python's writer quotes a cell only for the characters of its own line terminator,
so with ``lineterminator="\n"`` a bare carriage return inside a sub ID would end the row for a
spreadsheet and start a new one with what follows (``"x\r=cmd"``). A row with a carriage
return or a line feed in any text cell is therefore written with every cell quoted.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

#: First characters that make a spreadsheet read a cell as a formula (OWASP: ``= + - @``, tab and
#: carriage return; line feed too, which some spreadsheets skip like a carriage return).
FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r", "\n")
#: A number the product formats: money with the currency's minor digits, a count, a percent.
PLAIN_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def neutralise(text: str) -> str:
    """``text`` with a ``'`` in front when it starts with one of :data:`FORMULA_LEADS`, else unchanged.
    Idempotent (a neutralised value starts with ``'``)."""
    return "'" + text if text[:1] in FORMULA_LEADS else text


def cell(value: Any, *, numeric: bool = False) -> Any:
    """The safe form of one cell: ``None`` → ``""``; ``int`` (not bool) and ``Decimal`` unchanged;
    with ``numeric`` a ``str`` that is a plain decimal (:data:`PLAIN_NUMBER`) unchanged; everything
    else as text (``str(value)``), neutralised (:func:`neutralise`)."""
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, Decimal):
        return value
    text = value if isinstance(value, str) else str(value)
    if numeric and PLAIN_NUMBER.fullmatch(text):
        return text
    return neutralise(text)


def numeric_columns(header: Sequence[str], names: Iterable[str]) -> frozenset[int]:
    """The positions in ``header`` of the column ``names`` (for :func:`writer`'s ``numeric``).
    Raises ValueError when a name is not in the header (a programming error)."""
    return frozenset(list(header).index(n) for n in names)


class SafeWriter:
    """A :func:`csv.writer` whose rows are made safe cell by cell (:func:`cell`); ``numeric`` holds
    the positions of the columns of product-formatted numbers."""

    def __init__(self, f, *, numeric: Iterable[int] = (), **fmtparams):
        self._w = csv.writer(f, **fmtparams)
        self._quoted = csv.writer(f, **{**fmtparams, "quoting": csv.QUOTE_ALL})
        self.numeric = frozenset(numeric)

    def safe_row(self, row: Iterable[Any]) -> list[Any]:
        """The row as it will be written."""
        return [cell(v, numeric=i in self.numeric) for i, v in enumerate(row)]

    def writerow(self, row: Iterable[Any]):
        """Write one row (made safe; every cell quoted when a text cell holds a line break)."""
        cells = self.safe_row(row)
        breaks = any(isinstance(v, str) and ("\r" in v or "\n" in v) for v in cells)
        return (self._quoted if breaks else self._w).writerow(cells)

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        """Write every row (made safe)."""
        for row in rows:
            self.writerow(row)


def writer(f, *, numeric: Iterable[int] = (), **fmtparams) -> SafeWriter:
    """A :class:`SafeWriter` on the file-like ``f``; ``numeric`` = positions of number columns
    (see :func:`numeric_columns`); ``fmtparams`` as for :func:`csv.writer` (e.g. ``lineterminator``)."""
    return SafeWriter(f, numeric=numeric, **fmtparams)
