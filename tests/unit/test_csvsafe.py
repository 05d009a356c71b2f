"""partnernet.csvsafe: text cells that a spreadsheet would run as a formula get a leading quote
(OWASP "CSV Injection"); numbers the product formats stay numbers."""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal

import pytest

from partnernet import csvsafe

ATTACKS = [
    '=HYPERLINK("http://x")',
    "@SUM(1)",
    "+cmd|' /C calc'!A0",
    "-2+3",
    "-5.00",  # a sub ID that looks like money is still text in a text column
    "\t=1+1",
    "\r=1+1",
    "\n=1+1",
]


def _write(rows, numeric=()):
    buf = io.StringIO()
    w = csvsafe.writer(buf, numeric=numeric, lineterminator="\n")
    w.writerows(rows)
    return list(csv.reader(io.StringIO(buf.getvalue(), newline="")))


@pytest.mark.parametrize("attack", ATTACKS)
def test_text_cells_starting_like_a_formula_get_a_quote(attack):
    assert csvsafe.neutralise(attack) == "'" + attack
    assert _write([[attack]]) == [["'" + attack]]


@pytest.mark.parametrize("attack", [a for a in ATTACKS if a != "-5.00"])
def test_a_numeric_column_keeps_only_plain_numbers(attack):
    # a formula in a column declared numeric is still neutralised: declaring a column can never let one through
    assert _write([[attack, "-5.00"]], numeric={0, 1}) == [["'" + attack, "-5.00"]]


def test_numbers_the_product_formats_stay_numbers():
    rows = _write([[-5, Decimal("-12.50"), "-5.00", "1000", "12.50", "0", "-0.01"]], numeric={2, 3, 4, 5, 6})
    assert rows == [["-5", "-12.50", "-5.00", "1000", "12.50", "0", "-0.01"]]


def test_plain_text_none_and_other_types():
    assert _write([["Ann", "", None, "a=b", "x-1", "ann@example.com", date(2025, 3, 1), True]]) == [
        ["Ann", "", "", "a=b", "x-1", "ann@example.com", "2025-03-01", "True"]]


def test_neutralise_is_idempotent_and_keeps_the_value():
    once = csvsafe.neutralise('=HYPERLINK("http://x")')
    assert csvsafe.neutralise(once) == once == '\'=HYPERLINK("http://x")'


def test_quotes_and_separators_survive_the_round_trip():
    evil = '=HYPERLINK("http://x","a,b")'
    assert _write([[evil, 'He said "hi"']]) == [["'" + evil, 'He said "hi"']]


def test_numeric_columns_by_header_name():
    assert csvsafe.numeric_columns(["name", "amount", "currency"], ["amount"]) == frozenset({1})
    with pytest.raises(ValueError):
        csvsafe.numeric_columns(["name"], ["amount"])


@pytest.mark.parametrize("terminator", ["\n", "\r\n"])
def test_a_line_break_inside_a_cell_never_starts_a_new_row(terminator):
    buf = io.StringIO()
    w = csvsafe.writer(buf, numeric={1}, lineterminator=terminator)
    w.writerow(["x\r=1+1", "-5.00"])
    w.writerow(["y\n@SUM(1)", "3.00"])
    w.writerow(["plain", "-1.00"])
    text = buf.getvalue()
    assert list(csv.reader(io.StringIO(text, newline=""))) == [
        ["x\r=1+1", "-5.00"], ["y\n@SUM(1)", "3.00"], ["plain", "-1.00"]]
    assert text.endswith("plain,-1.00" + terminator)  # rows without a break keep their usual form
