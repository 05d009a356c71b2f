"""API: payout batches (CONTRACT §5), staff only, maker-checker approval."""

from __future__ import annotations

from tests.factories import make_campaign, make_client, make_link, make_partner
from tests.web.test_api_support import assert_error, client_api, make_conversion, partner_api, staff_api


def _balances():
    """Partners A (approved 6.00 + 4.00 = 10.00 USD) and B (approved 2.00 USD, pending 3.00)."""
    acme = make_client(currency="USD")
    camp = make_campaign(
        acme,
        events=[
            {"key": "sale", "client_fee_minor": 1200, "payout_percent": "50"},
            {"key": "lead", "client_fee_minor": 800, "payout_percent": "50"},
            {"key": "small", "client_fee_minor": 400, "payout_percent": "50"},
            {"key": "open", "client_fee_minor": 600, "payout_percent": "50"},
        ],
    )
    a, b = make_partner(name="Alice"), make_partner(name="=Bob")
    la, lb = make_link(a, camp), make_link(b, camp)
    make_conversion(la, event="sale", status="approved")
    make_conversion(la, event="lead", status="approved")
    make_conversion(lb, event="small", status="approved")
    make_conversion(lb, event="open", status="pending")
    return a, b, acme


def test_create_and_read_batch(client):
    a, b, _ = _balances()
    api = staff_api(client)
    resp = api.post("/payout-batches", {"currency": "USD"})
    assert resp.status_code == 201, resp.get_json()
    batch = resp.get_json()
    assert batch["status"] == "draft" and batch["currency"] == "USD" and batch["created_by"].isdigit()
    assert sorted(batch["items"], key=lambda i: int(i["partner_id"])) == [
        {"partner_id": str(a.id), "amount": "10.00"},
        {"partner_id": str(b.id), "amount": "2.00"},
    ]
    assert batch["total"] == "12.00" and batch["created_at"].endswith("Z")
    assert api.get(f"/payout-batches/{batch['id']}").get_json() == batch
    assert [x["id"] for x in api.get("/payout-batches").get_json()["items"]] == [batch["id"]]
    assert api.get("/payout-batches", query_string={"status": "paid"}).get_json()["items"] == []
    assert_error(api.get("/payout-batches", query_string={"status": "lost"}), 400, "bad_status", "status")
    assert_error(api.get("/payout-batches/999999"), 404, "not_found")
    # items in a draft hold the money: a second batch has nothing left; min_amount filters
    again = api.post("/payout-batches", {"currency": "USD"}).get_json()
    assert again["items"] == [] and again["total"] == "0.00"


def test_min_amount_and_validation(client):
    a, _b, _ = _balances()
    api = staff_api(client)
    batch = api.post("/payout-batches", {"currency": "USD", "min_amount": "5.00"}).get_json()
    assert batch["items"] == [{"partner_id": str(a.id), "amount": "10.00"}] and batch["min_amount"] == "5.00"
    assert_error(api.post("/payout-batches", {"currency": "ZZZ"}), 400, "unknown_currency", "currency")
    assert_error(api.post("/payout-batches", {}), 400, "missing_field", "currency")
    assert_error(
        api.post("/payout-batches", {"currency": "USD", "min_amount": "5.001"}),
        400,
        "bad_amount",
        "min_amount",
    )
    assert_error(
        api.post("/payout-batches", {"currency": "USD", "min_amount": 5}), 400, "bad_amount", "min_amount"
    )
    assert_error(api.post("/payout-batches", {"currency": "USD", "max": "1"}), 400, "unknown_field", "max")


def test_maker_checker_approve_then_mark_paid(client):
    a, b, _ = _balances()
    maker, checker = staff_api(client), staff_api(client)
    bid = maker.post("/payout-batches", {"currency": "USD"}).get_json()["id"]
    assert_error(maker.post(f"/payout-batches/{bid}/mark-paid"), 409, "invalid_state")  # still a draft
    assert_error(maker.post(f"/payout-batches/{bid}/approve"), 403, "forbidden")  # its creator
    resp = checker.post(f"/payout-batches/{bid}/approve")
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["status"] == "approved" and resp.get_json()["approved_by"].isdigit()
    assert_error(checker.post(f"/payout-batches/{bid}/approve"), 409, "invalid_state")
    assert_error(maker.post(f"/payout-batches/{bid}/approve"), 403, "forbidden")  # 403 is checked first
    assert_error(checker.post(f"/payout-batches/{bid}/cancel"), 409, "invalid_state")
    paid = maker.post(f"/payout-batches/{bid}/mark-paid")
    assert paid.status_code == 200 and paid.get_json()["status"] == "paid"
    assert_error(maker.post(f"/payout-batches/{bid}/mark-paid"), 409, "invalid_state")
    earn = maker.get(f"/partners/{a.id}/earnings").get_json()["items"][0]
    assert earn == {
        "currency": "USD",
        "pending": "0.00",
        "approved": "10.00",
        "paid": "10.00",
        "balance": "0.00",
    }
    earn_b = maker.get(f"/partners/{b.id}/earnings").get_json()["items"][0]
    assert earn_b["pending"] == "3.00" and earn_b["paid"] == "2.00" and earn_b["balance"] == "0.00"
    assert_error(maker.post("/payout-batches/999999/approve"), 404, "not_found")


def test_cancel_releases_items(client):
    _balances()
    api = staff_api(client)
    bid = api.post("/payout-batches", {"currency": "USD"}).get_json()["id"]
    resp = api.post(f"/payout-batches/{bid}/cancel")
    assert resp.status_code == 200 and resp.get_json()["status"] == "cancelled"
    assert_error(api.post(f"/payout-batches/{bid}/cancel"), 409, "invalid_state")
    assert api.post("/payout-batches", {"currency": "USD"}).get_json()["total"] == "12.00"


def test_export_csv(client):
    a, b, _ = _balances()
    api = staff_api(client)
    bid = api.post("/payout-batches", {"currency": "USD"}).get_json()["id"]
    assert_error(api.get(f"/payout-batches/{bid}/export.csv"), 409, "batch_not_approved")  # v2: a draft
    assert staff_api(client).post(f"/payout-batches/{bid}/approve").status_code == 200
    resp = api.get(f"/payout-batches/{bid}/export.csv")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    lines = resp.get_data(as_text=True).splitlines()
    assert lines[0] == "partner_id,name,payout_email,amount,currency,payout_method,iban,bic,account_holder"
    assert sorted(lines[1:]) == sorted(
        [f"{a.id},Alice,{a.email},10.00,USD,paypal,,,", f"{b.id},'=Bob,{b.email},2.00,USD,paypal,,,"]
    )
    assert_error(api.get("/payout-batches/999999/export.csv"), 404, "not_found")


def test_payout_batches_are_staff_only(client):
    a, _b, acme = _balances()
    for api in (partner_api(client, a), client_api(client, acme)):
        assert_error(api.post("/payout-batches", {"currency": "USD"}), 403, "forbidden")
        assert_error(api.get("/payout-batches"), 403, "forbidden")
        assert_error(api.get("/payout-batches/1/export.csv"), 403, "forbidden")
