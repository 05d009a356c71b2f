"""Both payout CSV formats, field by field: the generic bank file and PayPal Payouts Web, of an
approved batch (a draft gives no file: tests/services/test_payout_files.py)."""

from __future__ import annotations

import csv
import io

from partnernet.conversions.review import approve_conversion
from partnernet.extensions import db
from partnernet.payouts.exports import CSV_HEADER, export_csv, export_paypal_csv
from partnernet.payouts.services import approve_batch, create_batch
from tests.factories import make_campaign, make_client, make_link, make_partner, make_user
from tests.services.test_ledger_helpers import record


def _batch(currency="USD", fee=1000, payout=400, names=("Ann", "=cmd|' /C calc'!A0")):
    maker, checker = make_user("maker@example.com"), make_user("checker@example.com")
    camp = make_campaign(make_client(currency=currency),
                         events=[{"key": "sale", "client_fee_minor": fee, "payout_minor": payout}])
    partners = [make_partner(name=n) for n in names]
    partners[0].payout_email = "ann.pay@example.com"
    db.session.commit()
    for p in partners:
        approve_conversion(record(camp, make_link(p, camp)), user_id=maker.id)
    batch = create_batch(currency, 0, maker.id)
    return approve_batch(batch.id, checker.id), partners


def test_bank_csv_fields(app):
    batch, (ann, evil) = _batch()
    rows = list(csv.reader(io.StringIO(export_csv(batch.id), newline="")))
    assert rows[0] == list(CSV_HEADER) == ["partner_id", "name", "payout_email", "amount", "currency",
                                           "payout_method", "iban", "bic", "account_holder"]
    assert rows[1] == [str(ann.id), "Ann", "ann.pay@example.com", "4.00", "USD", "paypal", "", "", ""]
    assert rows[2] == [str(evil.id), "'=cmd|' /C calc'!A0", evil.email, "4.00", "USD", "paypal", "", "", ""]
    assert export_csv(batch.id).endswith("\r\n") and len(rows) == 3


def test_paypal_csv_fields_no_header_one_currency(app):
    batch, (ann, evil) = _batch()
    text = export_paypal_csv(batch.id)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows == [
        ["ann.pay@example.com", "4.00", "USD", f"partner-{ann.id}", f"PartnerNet payout batch {batch.id}", "PAYPAL"],
        [evil.email, "4.00", "USD", f"partner-{evil.id}", f"PartnerNet payout batch {batch.id}", "PAYPAL"],
    ]
    for row in rows:  # PayPal's limits: customer ID at most 30 characters without spaces, note at most 400
        assert len(row[3]) <= 30 and " " not in row[3] and len(row[4]) <= 400
    assert text.count("\r\n") == 2
    long_note = export_paypal_csv(batch.id, note="=x" + "n" * 500)
    assert list(csv.reader(io.StringIO(long_note)))[0][4] == "'=x" + "n" * 398


def test_paypal_csv_zero_decimal_currency(app):
    batch, (ann,) = _batch(currency="JPY", fee=1000, payout=300, names=("Ken",))
    assert export_paypal_csv(batch.id) == f"ann.pay@example.com,300,JPY,partner-{ann.id},PartnerNet payout batch " \
                                          f"{batch.id},PAYPAL\r\n"


def test_every_formula_lead_in_a_name_is_neutralised_and_amounts_stay_numbers(app):
    names = ("@SUM(1)", "-2+3", "+cmd", "\t=1+1", "\r=1+1", "Ann-Marie")
    batch, partners = _batch(names=names)
    rows = list(csv.reader(io.StringIO(export_csv(batch.id), newline="")))
    assert rows[0][:5] == ["partner_id", "name", "payout_email", "amount", "currency"]  # the v1 columns stay
    assert [r[1] for r in rows[1:]] == ["'@SUM(1)", "'-2+3", "'+cmd", "'\t=1+1", "'\r=1+1", "Ann-Marie"]
    assert {r[3] for r in rows[1:]} == {"4.00"} and len(rows) == len(names) + 1  # no row split by the "\r"
    paypal = list(csv.reader(io.StringIO(export_paypal_csv(batch.id, note="-note"), newline="")))
    assert {(r[1], r[4]) for r in paypal} == {("4.00", "'-note")}
