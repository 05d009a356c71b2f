"""Payout files a bank accepts (CONTRACT v2 §5): payout details checked with schwifty, files only
for approved or paid batches, the bank CSV with the bank details, PayPal rows for PayPal partners
only, a SEPA pain.001.001.03 file valid against the standard's XSD with exact amounts, and the
re-check on approve (a reversal since the draft). Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import threading
import time
import xml.etree.ElementTree as ET
from decimal import Decimal
from pathlib import Path

import pytest
import sepaxml
import xmlschema
from sqlalchemy import select, text

from partnernet.catalog.services import create_partner
from partnernet.conversions.review import approve_conversion
from partnernet.errors import DomainError, InvalidState, ValidationError
from partnernet.extensions import db
from partnernet.models import LedgerAccount, Partner, PayoutBatch
from partnernet.payouts.exports import export_csv, export_paypal_csv
from partnernet.payouts.sepa import export_sepa_xml, sepa_plan
from partnernet.payouts.services import approve_batch, cancel_batch, create_batch, get_batch, shortfalls
from tests.factories import make_campaign, make_client, make_link, make_partner, make_user
from tests.services.test_ledger_helpers import postback_status, record

NS = {"p": "urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"}
SEPA = {"PARTNERNET_SEPA_NAME": "Agentur & Co. KG", "PARTNERNET_SEPA_IBAN": "DE89370400440532013000",
        "PARTNERNET_SEPA_BIC": "COBADEFFXXX"}


@pytest.fixture(scope="module")
def pain001_xsd():
    """The ISO 20022 pain.001.001.03 XSD (as sepaxml ships it), loaded on its own for the tests."""
    return xmlschema.XMLSchema(str(Path(sepaxml.__file__).parent / "schemas" / "pain.001.001.03.xsd"))


@pytest.fixture
def sepa_settings(app, monkeypatch):
    for key, value in SEPA.items():
        monkeypatch.setitem(app.config, key, value)


def _earn(camp, link, minor, maker):
    """An approved conversion paying ``minor`` to the link's partner; returns its id."""
    cid = record(camp, link, event=f"e{minor}")
    approve_conversion(cid, user_id=maker.id)
    return cid


@pytest.fixture
def eur(app):
    """An EUR campaign; partners paid by PayPal (Pia), by bank in SEPA (Jürgen, 15.01 = 7.22 + 7.79),
    by bank outside SEPA (Bea, Brazil) and by bank with an IBAN stored before the check (Old); all
    approved earnings; staff maker and checker."""
    maker, checker = make_user("maker@example.com"), make_user("checker@example.com")
    amounts = (1000, 722, 779, 300, 250)
    camp = make_campaign(make_client(currency="EUR"), events=[
        {"key": f"e{a}", "client_fee_minor": 2000, "payout_minor": a} for a in amounts])
    pia = make_partner(name="Pia")
    pia.payout_email = "pia.pay@example.com"
    jurgen = create_partner({"email": "j@example.com", "name": "=J", "kind": "affiliate", "payout_method": "bank",
                             "iban": "de89 3704 0044 0532 0130 00", "bic": "cobadeffxxx",
                             "account_holder": "Jürgen Müller"})
    bea = create_partner({"email": "bea@example.com", "name": "Bea", "kind": "affiliate",
                          "iban": "BR1800360305000010009795493C1"})
    old = make_partner(name="Old")
    old.payout_method, old.iban = "bank", "DE00370400440532013000"  # stored before the check existed
    for p in (jurgen, bea):
        p.status = "approved"
    db.session.commit()
    links = {p.id: make_link(p, camp) for p in (pia, jurgen, bea, old)}
    _earn(camp, links[pia.id], 1000, maker)
    conv = {"j1": _earn(camp, links[jurgen.id], 722, maker), "j2": _earn(camp, links[jurgen.id], 779, maker)}
    _earn(camp, links[bea.id], 300, maker)
    _earn(camp, links[old.id], 250, maker)
    return {"maker": maker, "checker": checker, "camp": camp, "pia": pia, "jurgen": jurgen, "bea": bea,
            "old": old, "conv": conv}


def _approved_batch(w):
    batch = create_batch("EUR", 0, w["maker"].id)
    return approve_batch(batch.id, w["checker"].id)


# --------------------------------------------------------------------------- payout details


@pytest.mark.parametrize("iban, why", [
    ("DE89370400440532013001", "check digits"),   # one digit changed: mod 97 fails
    ("DE8937040044053201300", "length"),          # a German IBAN has 22 characters
    ("DE893704004405320130000", "length"),
    ("XX89370400440532013000", "not an IBAN"),    # no such country
    ("", "not an IBAN"),
])
def test_bad_ibans_are_refused_and_nothing_is_stored(app, iban, why):
    with pytest.raises(ValidationError) as err:
        create_partner({"email": "x@example.com", "name": "X", "kind": "affiliate", "iban": iban})
    assert (err.value.code, err.value.field) == ("bad_iban", "iban") and why in err.value.message
    assert db.session.scalar(select(Partner.id)) is None  # nothing half-written


def test_bic_holder_and_method_checks_and_normalised_storage(app):
    base = {"email": "y@example.com", "name": "Y", "kind": "affiliate", "iban": "GB82 WEST 1234 5698 7654 32"}
    for bic in ("COBADEF", "COBAXXFF", "1OBADEFF"):  # too short, no such country, not the ISO 20022 shape
        with pytest.raises(ValidationError) as err:
            create_partner({**base, "bic": bic})
        assert err.value.code == "bad_bic"
    for bad, code in (({"payout_method": "cash"}, "bad_payout_method"),
                      ({"account_holder": "x" * 71}, "bad_account_holder"),
                      ({"account_holder": "a\x07b"}, "bad_account_holder")):
        with pytest.raises(ValidationError) as err:
            create_partner({**base, **bad})
        assert err.value.code == code
    with pytest.raises(ValidationError) as err:
        create_partner({"email": "z@example.com", "name": "Z", "kind": "affiliate", "payout_method": "bank"})
    assert (err.value.code, err.value.field) == ("missing_field", "iban")
    p = create_partner({**base, "bic": "westgb2l", "account_holder": "  Yan   Yu "})
    assert (p.payout_method, p.iban, p.bic, p.account_holder) == ("bank", "GB82WEST12345698765432", "WESTGB2L",
                                                                   "Yan Yu")
    q = create_partner({"email": "q@example.com", "name": "Q", "kind": "affiliate", "payout_email": "Q@Pay.example"})
    assert (q.payout_method, q.iban) == ("paypal", None)


# --------------------------------------------------------------------------- which batches give files


def test_no_file_for_a_draft_or_cancelled_batch(eur, sepa_settings):
    w = eur
    draft = create_batch("EUR", 0, w["maker"].id)
    for make in (export_csv, export_paypal_csv, export_sepa_xml):
        with pytest.raises(InvalidState) as err:
            make(draft.id)
        assert err.value.code == "batch_not_approved"
    cancel_batch(draft.id, w["maker"].id)
    with pytest.raises(InvalidState) as err:
        export_csv(draft.id)
    assert err.value.code == "batch_not_approved"


def test_bank_csv_has_the_bank_details_of_every_item(eur):
    w = eur
    batch = _approved_batch(w)
    rows = list(csv.reader(io.StringIO(export_csv(batch.id), newline="")))
    assert rows[0] == ["partner_id", "name", "payout_email", "amount", "currency", "payout_method", "iban", "bic",
                       "account_holder"]
    by_id = {r[0]: r for r in rows[1:]}
    assert len(by_id) == 4
    assert by_id[str(w["pia"].id)][1:] == ["Pia", "pia.pay@example.com", "10.00", "EUR", "paypal", "", "", ""]
    assert by_id[str(w["jurgen"].id)][1:] == ["'=J", "j@example.com", "15.01", "EUR", "bank",
                                              "DE89370400440532013000", "COBADEFFXXX", "Jürgen Müller"]
    assert by_id[str(w["bea"].id)][5:7] == ["bank", "BR1800360305000010009795493C1"]


def test_paypal_csv_lists_paypal_partners_only(eur):
    w = eur
    batch = _approved_batch(w)
    rows = list(csv.reader(io.StringIO(export_paypal_csv(batch.id), newline="")))
    assert rows == [["pia.pay@example.com", "10.00", "EUR", f"partner-{w['pia'].id}",
                     f"PartnerNet payout batch {batch.id}", "PAYPAL"]]


# --------------------------------------------------------------------------- SEPA


def test_sepa_xml_is_valid_pain_001_with_exact_control_sum(eur, sepa_settings, pain001_xsd):
    w = eur
    batch = _approved_batch(w)
    xml = export_sepa_xml(batch.id)
    pain001_xsd.validate(xml.decode("utf-8"))  # raises when the file breaks the standard's schema
    root = ET.fromstring(xml)
    txs = root.findall(".//p:CdtTrfTxInf", NS)
    # only Jürgen: Pia is paid by PayPal, Bea's IBAN is outside SEPA, Old's IBAN fails its check digits
    assert [t.findtext("p:CdtrAcct/p:Id/p:IBAN", namespaces=NS) for t in txs] == ["DE89370400440532013000"]
    assert txs[0].findtext("p:Cdtr/p:Nm", namespaces=NS) == "Jurgen Muller"
    assert txs[0].findtext("p:CdtrAgt/p:FinInstnId/p:BIC", namespaces=NS) == "COBADEFFXXX"
    amounts = [Decimal(t.findtext("p:Amt/p:InstdAmt", namespaces=NS)) for t in txs]
    assert amounts == [Decimal("15.01")] and all(t.find("p:Amt/p:InstdAmt", NS).get("Ccy") == "EUR" for t in txs)
    items = {i.partner_id: i.amount_minor for i in get_batch(batch.id).items}
    cents = sum(items[line.partner_id] for line in sepa_plan(batch) if line.reason is None)
    for path in ("p:CstmrCdtTrfInitn/p:GrpHdr/p:CtrlSum", ".//p:PmtInf/p:CtrlSum"):
        assert Decimal(root.findtext(path, namespaces=NS)) * 100 == cents == 1501
    assert root.findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:NbOfTxs", namespaces=NS) == "1"
    assert root.findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:MsgId", namespaces=NS) == f"PN-PAYOUT-{batch.id}"
    assert root.findtext(".//p:DbtrAcct/p:Id/p:IBAN", namespaces=NS) == SEPA["PARTNERNET_SEPA_IBAN"]
    assert root.findtext(".//p:Dbtr/p:Nm", namespaces=NS) == "Agentur Co. KG"  # SEPA Latin character set
    e2e = txs[0].findtext("p:PmtId/p:EndToEndId", namespaces=NS)
    assert e2e.startswith(f"PN-B{batch.id}-I") and len(e2e) <= 35
    assert {line.partner_id: line.reason for line in sepa_plan(batch)} == {
        w["pia"].id: "paypal", w["jurgen"].id: None, w["bea"].id: "outside_sepa", w["old"].id: "bad_iban"}


def test_sepa_many_items_sum_exactly(app, sepa_settings, pain001_xsd):
    """Amounts that add up badly in binary floats (0.10 + 0.20 ...) still give an exact CtrlSum."""
    maker, checker = make_user("maker@example.com"), make_user("checker@example.com")
    cents = [10, 20, 30, 1, 99999, 333, 7]
    camp = make_campaign(make_client(currency="EUR"), events=[
        {"key": f"e{c}", "client_fee_minor": 200000, "payout_minor": c} for c in cents])
    for c in cents:
        p = create_partner({"email": f"p{c}@example.com", "name": f"P{c}", "kind": "affiliate",
                            "iban": "FR14 2004 1010 0505 0001 3M02 606"})
        p.status = "approved"
        db.session.commit()
        _earn(camp, make_link(p, camp), c, maker)
    batch = approve_batch(create_batch("EUR", 0, maker.id).id, checker.id)
    xml = export_sepa_xml(batch.id)
    pain001_xsd.validate(xml.decode("utf-8"))
    root = ET.fromstring(xml)
    assert root.findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:CtrlSum", namespaces=NS) == "1004.00"
    assert sum(cents) == 100400 and len(root.findall(".//p:CdtTrfTxInf", NS)) == len(cents)
    assert len({e.text for e in root.iter(f"{{{NS['p']}}}EndToEndId")}) == len(cents)


def test_sepa_refusals(eur, app, monkeypatch):
    w = eur
    batch = _approved_batch(w)
    with pytest.raises(InvalidState) as err:
        export_sepa_xml(batch.id)
    assert err.value.code == "sepa_not_configured" and "PARTNERNET_SEPA_NAME" in err.value.message
    for key, value in SEPA.items():
        monkeypatch.setitem(app.config, key, value)
    monkeypatch.setitem(app.config, "PARTNERNET_SEPA_IBAN", "DE89370400440532013001")
    with pytest.raises(InvalidState) as err:
        export_sepa_xml(batch.id)
    assert err.value.code == "sepa_not_configured"
    monkeypatch.setitem(app.config, "PARTNERNET_SEPA_IBAN", SEPA["PARTNERNET_SEPA_IBAN"])
    usd = make_campaign(make_client(name="Dollar", currency="USD"), events=[
        {"key": "sale", "client_fee_minor": 1000, "payout_minor": 400}])
    cid = record(usd, make_link(w["jurgen"], usd))
    approve_conversion(cid, user_id=w["maker"].id)
    usd_batch = approve_batch(create_batch("USD", 0, w["maker"].id).id, w["checker"].id)
    with pytest.raises(InvalidState) as err:
        export_sepa_xml(usd_batch.id)
    assert err.value.code == "sepa_eur_only"
    w["jurgen"].payout_method = "paypal"
    db.session.commit()
    with pytest.raises(InvalidState) as err:
        export_sepa_xml(batch.id)
    assert err.value.code == "no_sepa_items"


# --------------------------------------------------------------------------- re-check on approve


def test_reversal_after_the_draft_refuses_approve_and_the_batch_stays_draft(eur):
    w = eur
    draft = create_batch("EUR", 0, w["maker"].id)
    assert {i.partner_id: i.amount_minor for i in draft.items}[w["jurgen"].id] == 1501
    assert shortfalls(get_batch(draft.id)) == []
    postback_status(w["conv"]["j2"], "reversed")  # 7.79 clawed back: 7.22 left for a 15.01 item
    with pytest.raises(InvalidState) as err:
        approve_batch(draft.id, w["checker"].id)
    assert err.value.code == "balance_changed" and f"partner {w['jurgen'].id}:" in err.value.message
    assert "15.01" in err.value.message and "7.22" in err.value.message
    db.session.expire_all()
    batch = db.session.get(PayoutBatch, draft.id)
    assert (batch.status, batch.approved_by, batch.approved_at) == ("draft", None, None)
    assert [(s.partner_id, s.amount_minor, s.available_minor) for s in shortfalls(batch)] == \
        [(w["jurgen"].id, 1501, 722)]
    # cancel and draft again: the new batch pays what is there, and approves
    cancel_batch(draft.id, w["maker"].id)
    again = create_batch("EUR", 0, w["maker"].id)
    assert {i.partner_id: i.amount_minor for i in again.items}[w["jurgen"].id] == 722
    assert approve_batch(again.id, w["checker"].id).status == "approved"


def test_other_open_batches_count_against_the_balance(eur):
    """An item is checked against the balance less the partner's items in *other* open batches."""
    w = eur
    first = create_batch("EUR", 0, w["maker"].id)
    postback_status(w["conv"]["j2"], "reversed")
    cid = record(w["camp"], make_link(w["jurgen"], w["camp"]), event="e1000")
    approve_conversion(cid, user_id=w["maker"].id)  # +10.00: balance 17.22 against the 15.01 item
    second = create_batch("EUR", 0, w["maker"].id)
    assert {i.partner_id: i.amount_minor for i in second.items} == {w["jurgen"].id: 221}
    assert approve_batch(first.id, w["checker"].id).status == "approved"
    assert approve_batch(second.id, w["checker"].id).status == "approved"


def test_approve_waits_for_a_posting_in_flight_and_sees_it(pg_app):
    """Locking (PostgreSQL): a reversal's balance UPDATE not yet committed holds the partner's payable
    account; approve locks that row (FOR UPDATE), waits, then sees the new balance and refuses."""
    maker, checker = make_user("maker@example.com"), make_user("checker@example.com")
    camp = make_campaign(make_client(currency="EUR"), events=[{"key": "sale", "client_fee_minor": 2000,
                                                               "payout_minor": 1500}])
    p = make_partner(name="Jo")
    approve_conversion(record(camp, make_link(p, camp)), user_id=maker.id)
    batch_id, checker_id = create_batch("EUR", 0, maker.id).id, checker.id
    account_id = db.session.scalar(select(LedgerAccount.id).where(
        LedgerAccount.owner_type == "partner", LedgerAccount.owner_id == p.id, LedgerAccount.kind == "payable",
        LedgerAccount.currency == "EUR"))
    db.session.commit()
    outcome: dict = {}

    def approve():
        with pg_app.app_context():
            try:
                approve_batch(batch_id, checker_id)
                outcome["status"] = "approved"
            except DomainError as err:
                outcome["status"] = err.code
            finally:
                db.session.remove()

    with db.engine.connect() as other:  # a posting in flight: payable debited by 7.79, not committed
        other.execute(text("UPDATE ledger_accounts SET balance_minor = balance_minor + 779 WHERE id = :id"),
                      {"id": account_id})
        worker = threading.Thread(target=approve)
        worker.start()
        time.sleep(0.4)
        assert outcome == {} and worker.is_alive()  # waiting on the account's row lock
        other.commit()
    worker.join(10)
    assert outcome == {"status": "balance_changed"}
    db.session.expire_all()
    assert db.session.get(PayoutBatch, batch_id).status == "draft"
