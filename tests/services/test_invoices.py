"""Client invoices (issue 5): per client per calendar month in its time zone, one line per billable
action, CPC as a count, totals equal to the ledger's receivable, draft -> issued -> paid, and an
issued invoice never changes (a later reversal is a credit on the next invoice). SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select

from partnernet import clock
from partnernet.clients import invoices
from partnernet.errors import InvalidState, NotFound
from partnernet.extensions import db
from partnernet.ledger.services import account_balance, client_account
from partnernet.models import Invoice
from tests.factories import make_campaign, make_client, make_link, make_partner

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"


@pytest.fixture
def shop(app):
    adv = make_client()
    adv.timezone = "America/Chicago"
    db.session.commit()
    camp = make_campaign(adv, events=[{"key": "sale", "client_fee_minor": 1000, "payout_percent": "50"},
                                      {"key": "click", "client_fee_minor": 12, "payout_minor": 8}])
    link = make_link(make_partner(), camp)
    return adv, camp, link


def _sale(app, http, adv, link, txn, status=None):
    cid = app.extensions["partnernet_click_signer"].make(link.id, int(clock.utcnow().timestamp()))
    q = {"key": adv.postback_key, "click_id": cid, "txn_id": txn}
    if status:
        q["status"] = status
    return http.get("/postback", query_string=q).get_json()


def _click(app, http, link, ip):
    tok = app.extensions["partnernet_link_signer"].dumps(link.id)
    http.environ_base.pop("HTTP_USER_AGENT", None)
    http.get(f"/c/{tok}", headers={"User-Agent": CHROME}, environ_base={"REMOTE_ADDR": ip})


def _at(*args):
    clock.set_now(datetime(*args, tzinfo=UTC))


def _feb_and_march(app, http, adv, link):
    _at(2024, 2, 10, 15)
    _sale(app, http, adv, link, "A")
    _sale(app, http, adv, link, "B")
    _click(app, app.test_client(), link, "198.51.100.1")  # two visitors: two unique clicks
    _click(app, app.test_client(), link, "198.51.100.2")
    _at(2024, 3, 1, 5, 0)  # Feb 29th, 23:00 in Chicago: February for this client
    _sale(app, http, adv, link, "C")
    _at(2024, 3, 1, 7, 0)  # March 1st, 01:00 in Chicago
    _sale(app, http, adv, link, "D")


def test_month_invoice_lines_and_totals_match_the_ledger(app, client, shop):
    adv, camp, link = shop
    _feb_and_march(app, client, adv, link)
    (feb,) = invoices.build_invoice(adv.id, 2024, 2)
    assert (feb.number, feb.status, feb.currency) == (f"INV-{adv.id}-202402-USD", "draft", "USD")
    assert (feb.period_start, feb.period_end) == (date(2024, 2, 1), date(2024, 3, 1))
    rows = [(ln.kind, ln.occurred_on, ln.event_key, ln.txn_id, ln.quantity, ln.amount_minor) for ln in feb.lines]
    assert rows == [
        ("conversion", date(2024, 2, 10), "sale", "A", 1, 1000),
        ("conversion", date(2024, 2, 10), "sale", "B", 1, 1000),
        ("clicks", None, "click", None, 2, 24),
        ("conversion", date(2024, 2, 29), "sale", "C", 1, 1000),
    ]
    assert feb.total_minor == 3024
    (mar,) = invoices.build_invoice(adv.id, 2024, 3)
    assert [(ln.txn_id, ln.amount_minor) for ln in mar.lines] == [("D", 1000)]
    receivable = account_balance(client_account(adv.id, "receivable", "USD"))
    assert receivable == feb.total_minor + mar.total_minor == 4024
    text = invoices.invoice_csv(feb)
    assert text.splitlines()[0] == ",".join(invoices.CSV_HEADER)
    assert text.splitlines()[-1].endswith(",total,,,,,,,,,30.24,USD")
    assert f"INV-{adv.id}-202402-USD,2024-02,3,clicks,,{camp.id}," in text


def test_issued_invoice_never_changes_and_a_reversal_is_credited_next_month(app, client, shop):
    adv, _camp, link = shop
    _feb_and_march(app, client, adv, link)
    (feb,) = invoices.build_invoice(adv.id, 2024, 2)
    feb_id = feb.id
    invoices.issue_invoice(feb_id)
    with pytest.raises(InvalidState):
        invoices.issue_invoice(feb_id)
    before = invoices.invoice_csv(db.session.get(Invoice, feb_id))
    _at(2024, 3, 5, 15)
    _sale(app, client, adv, link, "A", status="reversed")  # after issue
    (again,) = invoices.build_invoice(adv.id, 2024, 2)
    assert again.id == feb_id and again.status == "issued" and again.total_minor == 3024
    assert invoices.invoice_csv(again) == before
    (mar,) = invoices.build_invoice(adv.id, 2024, 3)
    assert [(ln.kind, ln.txn_id, ln.amount_minor, ln.credited_invoice_id) for ln in mar.lines] == [
        ("conversion", "D", 1000, None), ("credit", "A", -1000, feb_id)]
    assert mar.total_minor == 0
    # a rebuilt draft bills new work once and credits once
    _sale(app, client, adv, link, "E")
    (mar,) = invoices.build_invoice(adv.id, 2024, 3)
    assert [(ln.kind, ln.txn_id, ln.amount_minor) for ln in mar.lines] == [
        ("conversion", "D", 1000), ("conversion", "E", 1000), ("credit", "A", -1000)]
    receivable = account_balance(client_account(adv.id, "receivable", "USD"))
    assert receivable == 3024 + mar.total_minor
    invoices.issue_invoice(mar.id)
    paid = invoices.mark_invoice_paid(mar.id)
    assert paid.status == "paid" and paid.paid_at is not None
    with pytest.raises(InvalidState):
        invoices.mark_invoice_paid(mar.id)


def test_pending_rejection_before_issue_is_simply_not_billed(app, client, shop):
    adv, _camp, link = shop
    _at(2024, 2, 10, 15)
    _sale(app, client, adv, link, "A")
    _sale(app, client, adv, link, "B")
    (feb,) = invoices.build_invoice(adv.id, 2024, 2)
    assert feb.total_minor == 2000
    _sale(app, client, adv, link, "B", status="rejected")
    (feb,) = invoices.build_invoice(adv.id, 2024, 2)  # still a draft: rebuilt
    assert [ln.txn_id for ln in feb.lines] == ["A"] and feb.total_minor == 1000


def test_build_job_and_tenant_scope(app, client, shop):
    adv, _camp, link = shop
    _at(2024, 2, 10, 15)
    _sale(app, client, adv, link, "A")
    from partnernet.queue import run_pending

    other = make_client()
    assert invoices.enqueue_builds("2024-02") == [adv.id, other.id]
    run_pending()
    run_pending()
    (inv,) = db.session.scalars(select(Invoice)).all()
    assert inv.client_id == adv.id and inv.total_minor == 1000
    assert invoices.build_invoice_job(adv.id, "2024-02") == 1  # twice: same invoice
    with pytest.raises(NotFound):
        invoices.get_invoice(inv.id, client_id=other.id)
    from partnernet.errors import ValidationError

    with pytest.raises(ValidationError):
        invoices.enqueue_builds("2024-13")
