"""API and staff web: partners' payout details (CONTRACT v2 §5 ``POST /partners`` fields), payout
files only for approved or paid batches, and the re-check on approve (409 ``balance_changed``)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest
from sqlalchemy import select

from partnernet.extensions import db
from partnernet.models import Conversion, Partner
from tests.factories import make_campaign, make_client, make_link, make_partner, make_user
from tests.services.test_ledger_helpers import postback_status
from tests.web.test_api_support import assert_error, make_conversion, partner_api, staff_api
from tests.web.test_staff_pages import login

NS = {"p": "urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"}
BODY = {"email": "ines@example.com", "name": "Ines", "kind": "affiliate"}


def test_create_partner_with_payout_details(client):
    api = staff_api(client)
    resp = api.post("/partners", {**BODY, "payout_method": "bank", "iban": "fr14 2004 1010 0505 0001 3m02 606",
                                  "bic": "psstfrpp", "account_holder": "Inès Dupont"})
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert (body["payout_method"], body["iban"], body["bic"], body["account_holder"]) == \
        ("bank", "FR1420041010050500013M02606", "PSSTFRPP", "Inès Dupont")
    assert api.get(f"/partners/{body['id']}").get_json()["iban"] == "FR1420041010050500013M02606"
    paypal = api.post("/partners", {**BODY, "email": "pp@example.com", "payout_email": "pp.pay@example.com"})
    assert paypal.get_json()["payout_method"] == "paypal" and paypal.get_json()["iban"] is None


@pytest.mark.parametrize("iban", ["DE89370400440532013001", "DE8937040044053201300", "NL91ABNA041716430",
                                  "GB82 WEST 1234 5698 7654 3X", 12345])
def test_bad_iban_answers_400_bad_iban_and_creates_nothing(client, iban):
    api = staff_api(client)
    assert_error(api.post("/partners", {**BODY, "iban": iban}), 400, "bad_iban", "iban")
    assert api.get("/partners").get_json()["items"] == []


def test_bad_bic_and_method(client):
    api = staff_api(client)
    ok = {**BODY, "iban": "DE89370400440532013000"}
    assert_error(api.post("/partners", {**ok, "bic": "DEUT"}), 400, "bad_bic", "bic")
    assert_error(api.post("/partners", {**ok, "payout_method": "wire"}), 400, "bad_payout_method", "payout_method")
    assert_error(api.post("/partners", {**BODY, "payout_method": "bank"}), 400, "missing_field", "iban")


def test_a_partner_sees_its_own_details_never_another_partners(client):
    staff = staff_api(client)
    mine = staff.post("/partners", {**BODY, "iban": "DE89370400440532013000"}).get_json()
    other = staff.post("/partners", {**BODY, "email": "o@example.com", "iban": "GB82WEST12345698765432"}).get_json()
    me = db.session.get(Partner, int(mine["id"]))
    api = partner_api(client, me)
    assert api.get(f"/partners/{mine['id']}").get_json()["iban"] == "DE89370400440532013000"
    assert_error(api.get(f"/partners/{other['id']}"), 404, "not_found")
    assert [p["id"] for p in api.get("/partners").get_json()["items"]] == [mine["id"]]


def _eur_batch(client):
    """A draft EUR batch: a bank partner owed 15.00 (7.21 + 7.79) and a PayPal partner owed 4.00."""
    camp = make_campaign(make_client(currency="EUR"), events=[
        {"key": "a", "client_fee_minor": 2000, "payout_minor": 721},
        {"key": "b", "client_fee_minor": 2000, "payout_minor": 779},
        {"key": "c", "client_fee_minor": 2000, "payout_minor": 400}])
    staff = staff_api(client)
    bank = staff.post("/partners", {**BODY, "iban": "DE89370400440532013000", "bic": "COBADEFFXXX"}).get_json()
    staff.post(f"/partners/{bank['id']}/approve")
    bank_partner = db.session.get(Partner, int(bank["id"]))
    pal = make_partner(name="Pal")
    lb, lp = make_link(bank_partner, camp), make_link(pal, camp)
    make_conversion(lb, event="a", status="approved")
    late = make_conversion(lb, event="b", status="approved")
    make_conversion(lp, event="c", status="approved")
    bid = staff.post("/payout-batches", {"currency": "EUR"}).get_json()["id"]
    return staff, bid, bank_partner, pal, late


def test_files_only_once_approved(client, app, monkeypatch):
    maker, bid, bank, pal, _ = _eur_batch(client)
    for name in ("export.csv", "paypal.csv", "sepa.xml"):
        assert_error(maker.get(f"/payout-batches/{bid}/{name}"), 409, "batch_not_approved")
    checker = staff_api(client)
    assert checker.post(f"/payout-batches/{bid}/approve").status_code == 200
    bank_csv = checker.get(f"/payout-batches/{bid}/export.csv")
    assert bank_csv.status_code == 200 and bank_csv.mimetype == "text/csv"
    assert f"{bank.id},Ines,ines@example.com,15.00,EUR,bank,DE89370400440532013000,COBADEFFXXX," in \
        bank_csv.get_data(as_text=True)
    paypal = checker.get(f"/payout-batches/{bid}/paypal.csv").get_data(as_text=True)
    assert paypal == f"{pal.email},4.00,EUR,partner-{pal.id},PartnerNet payout batch {bid},PAYPAL\r\n"
    assert_error(checker.get(f"/payout-batches/{bid}/sepa.xml"), 409, "sepa_not_configured")
    for key, value in {"PARTNERNET_SEPA_NAME": "Agency", "PARTNERNET_SEPA_IBAN": "GB82WEST12345698765432",
                       "PARTNERNET_SEPA_BIC": "WESTGB2L"}.items():
        monkeypatch.setitem(app.config, key, value)
    sepa = checker.get(f"/payout-batches/{bid}/sepa.xml")
    assert sepa.status_code == 200 and sepa.mimetype == "application/xml"
    root = ET.fromstring(sepa.data)
    assert Decimal(root.findtext(".//p:GrpHdr/p:CtrlSum", namespaces=NS)) == Decimal("15.00")
    assert [e.text for e in root.iter(f"{{{NS['p']}}}IBAN")] == ["GB82WEST12345698765432", "DE89370400440532013000"]
    assert_error(partner_api(client, pal).get(f"/payout-batches/{bid}/sepa.xml"), 403, "forbidden")
    assert_error(checker.get("/payout-batches/999999/sepa.xml"), 404, "not_found")


def test_reversal_since_the_draft_answers_409_balance_changed(client):
    maker, bid, bank, _pal, late = _eur_batch(client)
    postback_status(late.id, "reversed")  # 15.00 in the draft, 7.21 left
    assert db.session.get(Conversion, late.id).status == "reversed"
    body = assert_error(staff_api(client).post(f"/payout-batches/{bid}/approve"), 409, "balance_changed")
    assert f"partner {bank.id}:" in body["message"] and "7.21" in body["message"]
    batch = maker.get(f"/payout-batches/{bid}").get_json()
    assert batch["status"] == "draft" and batch["approved_by"] is None


def test_staff_page_warns_before_approve_and_hides_files_of_a_draft(app, client):
    _maker, bid, bank, _pal, late = _eur_batch(client)
    make_user("boss@example.com")
    login(client, "boss@example.com")
    page = client.get(f"/staff/payouts/{bid}").data.decode()
    assert 'id="balance-warning"' not in page and 'id="export-bank"' not in page and "once the batch is approved" in page
    postback_status(late.id, "reversed")
    page = client.get(f"/staff/payouts/{bid}").data.decode()
    assert 'id="balance-warning"' in page and "available €7.21" in page
    refused = client.post(f"/staff/payouts/{bid}/approve", data={})
    assert refused.status_code == 409 and "balances changed" in refused.data.decode()
    assert client.get(f"/staff/payouts/{bid}/sepa.xml").status_code == 409


def test_portal_profile_and_signup_use_the_same_checks(client):
    p = make_partner(name="Portal")
    make_user(p.email, role="partner", partner_id=p.id)
    login(client, p.email)
    change = {"action": "payout", "p-payout_method": "bank", "p-timezone": "UTC",
              "p-current_password": "correct horse battery"}
    for iban, bic, message in (("DE8937040044053201300", "", "length is wrong"),
                               ("DE89370400440532013001", "", "check digits are wrong"),
                               ("DE89370400440532013000", "COBAXXFF", "not a BIC")):
        r = client.post("/partner/profile", data={**change, "p-payout_iban": iban, "p-payout_bic": bic})
        assert r.status_code == 400 and message in r.data.decode(), message
        db.session.expire_all()
        assert db.session.get(Partner, p.id).iban is None  # nothing saved
    r = client.post("/partner/profile", data={**change, "p-payout_iban": "de89 3704 0044 0532 0130 00",
                                              "p-payout_bic": "cobadeff", "p-account_holder": "Portal GmbH"})
    assert r.status_code == 302
    db.session.expire_all()
    fresh = db.session.get(Partner, p.id)
    assert (fresh.payout_method, fresh.iban, fresh.bic, fresh.account_holder) == \
        ("bank", "DE89370400440532013000", "COBADEFF", "Portal GmbH")
    client.post("/logout")
    signup = {"email": "new@example.com", "password": "Sunny-Meadow-42", "name": "New", "kind": "affiliate",
              "website": "https://new.example/", "channels": ["content"], "payout_method": "bank",
              "payout_iban": "DE89370400440532013000", "payout_bic": "DEUT", "timezone": "UTC", "accept_terms": "y"}
    r = client.post("/signup", data=signup)
    assert r.status_code == 400 and "not a BIC" in r.data.decode()
    assert db.session.scalar(select(Partner.id).where(Partner.email == "new@example.com")) is None
