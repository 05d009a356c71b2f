"""Staff console pages: every action, happy and unhappy paths, and the access rules."""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import func, select

from partnernet.extensions import db
from partnernet.ledger.services import partner_earnings
from partnernet.models import AuditLog, Campaign, Client, Conversion, LedgerTransaction, Partner, PayoutBatch, PostbackLog
from tests.factories import make_campaign, make_client, make_link, make_partner, make_user
from tests.services.test_ledger_helpers import record

PW = "correct horse battery"


def login(client, email):
    r = client.post("/login", data={"email": email, "password": PW})
    assert r.status_code == 302, r.data[:300]


@pytest.fixture
def staff(app, client):
    user = make_user("boss@example.com")
    login(client, "boss@example.com")
    return user


def test_anonymous_goes_to_login_and_other_roles_get_404(app, client):
    assert client.get("/staff/").status_code == 302
    p = make_partner()
    make_user("p@example.com", role="partner", partner_id=p.id)
    login(client, "p@example.com")
    assert client.get("/staff/").status_code == 404
    assert client.get("/staff/payouts").status_code == 404


def test_every_page_renders(app, client, staff):
    camp = make_campaign(make_client())
    p = make_partner(status="pending")
    for url in ["/staff/", "/staff/partners", f"/staff/partners/{p.id}", "/staff/conversions", "/staff/payouts",
                "/staff/clients", "/staff/clients/new", f"/staff/clients/{camp.client_id}", "/staff/campaigns",
                "/staff/campaigns/new", f"/staff/campaigns/{camp.id}", f"/staff/campaigns/{camp.id}/postback",
                "/staff/postback-log", "/staff/audit", "/staff/audit?actor=system&from=2024-01-01&to=2030-01-01"]:
        r = client.get(url)
        assert r.status_code == 200, (url, r.data[:500])
    assert b"Jobs run in-process" in client.get("/staff/").data
    assert client.get("/staff/partners/999999").status_code == 404
    assert client.get("/staff/payouts/999999").status_code == 404
    assert client.get("/staff/audit?from=notadate").status_code == 400
    assert client.get("/staff/conversions?flag=nope").status_code == 400


def test_partner_approve_reject_suspend_reinstate(app, client, staff):
    p = make_partner(status="pending")
    r = client.post(f"/staff/partners/{p.id}/reject", data={"reason": ""})
    assert r.status_code == 400 and b"reason" in r.data
    assert client.post(f"/staff/partners/{p.id}/approve", data={}).status_code == 303
    assert client.post(f"/staff/partners/{p.id}/approve", data={}).status_code == 409
    assert client.post(f"/staff/partners/{p.id}/reinstate", data={}).status_code == 409
    assert client.post(f"/staff/partners/{p.id}/suspend", data={"reason": "spam traffic"}).status_code == 303
    assert client.post(f"/staff/partners/{p.id}/reinstate", data={}).status_code == 303
    q = make_partner(status="pending")
    assert client.post(f"/staff/partners/{q.id}/reject", data={"reason": "No website"}).status_code == 303
    assert client.post(f"/staff/partners/{q.id}/delete", data={}).status_code == 404
    assert client.post("/staff/partners/999999/approve", data={}).status_code == 404
    db.session.expire_all()
    assert db.session.get(Partner, p.id).status == "approved"
    assert db.session.get(Partner, q.id).status == "rejected"
    actions = db.session.scalars(select(AuditLog.action).order_by(AuditLog.id)).all()
    assert actions.count("partner.approve") == 2 and "partner.reject" in actions and "partner.suspend" in actions
    assert "partner.reject.reason" in actions
    try:
        from partnernet.models import OutboxEmail
    except ImportError:  # the outbox is not installed: the audit log holds the email
        assert "email.recorded" in actions
    else:
        mail = db.session.scalars(select(OutboxEmail).where(OutboxEmail.to_addr == q.email)).one()
        assert "No website" in mail.body


def _setup_conversions(n=3):
    camp = make_campaign(make_client(), events=[{"key": "sale", "client_fee_minor": 1000, "payout_minor": 400}])
    p = make_partner()
    link = make_link(p, camp)
    ids = [record(camp, link) for _ in range(n)]
    return camp, p, ids


def test_bulk_review_approves_and_rejects_and_reports_refusals(app, client, staff):
    camp, p, ids = _setup_conversions(3)
    r = client.post("/staff/conversions/review", data={"action": "approve", "ids": [str(ids[0]), str(ids[1])]})
    assert r.status_code == 303
    r = client.post("/staff/conversions/review", data={"action": "reject", "reason": "fraud", "ids": [str(ids[1]), str(ids[2])]},
                    follow_redirects=True)
    assert b"1 conversion(s) rejected" in r.data and b"not pending" in r.data
    assert client.post("/staff/conversions/review", data={"action": "approve"}).status_code == 400
    assert client.post("/staff/conversions/review", data={"action": "reject", "reason": "x" * 40,
                                                         "ids": [str(ids[0])]}).status_code == 400
    db.session.expire_all()
    assert [db.session.get(Conversion, i).status for i in ids] == ["approved", "approved", "rejected"]
    page = client.get(f"/staff/conversions?status=&campaign_id={camp.id}&partner_id={p.id}").data
    assert page.count(b"data-conversion=") == 3
    assert client.get("/staff/conversions?status=rejected&reason=fraud").data.count(b"data-conversion=") == 1


def test_payout_cycle_maker_checker_double_click_exports_and_paid(app, client, staff):
    _, p, ids = _setup_conversions(2)
    client.post("/staff/conversions/review", data={"action": "approve", "ids": [str(i) for i in ids]})
    assert client.post("/staff/payouts", data={"currency": "USD", "min_amount": "abc"}).status_code == 400
    assert client.post("/staff/payouts", data={"currency": "XXQ", "min_amount": "1"}).status_code == 400
    assert client.post("/staff/payouts", data={"currency": "USD", "min_amount": "1.234"}).status_code == 400
    r = client.post("/staff/payouts", data={"currency": "USD", "min_amount": "5.00"})
    assert r.status_code == 303
    batch = db.session.scalars(select(PayoutBatch)).one()
    assert batch.total_minor == 800
    assert client.post(f"/staff/payouts/{batch.id}/approve", data={}).status_code == 403  # the maker
    assert client.post(f"/staff/payouts/{batch.id}/mark-paid", data={}).status_code == 409
    assert client.get(f"/staff/payouts/{batch.id}/export.csv").status_code == 409  # a draft: no file yet
    assert b'id="export-bank"' not in client.get(f"/staff/payouts/{batch.id}").data
    client.post("/logout")
    make_user("checker@example.com")
    login(client, "checker@example.com")
    assert client.post(f"/staff/payouts/{batch.id}/approve", data={}).status_code == 303
    assert client.post(f"/staff/payouts/{batch.id}/approve", data={}).status_code == 409  # double click
    assert client.post(f"/staff/payouts/{batch.id}/cancel", data={}).status_code == 409
    bank = client.get(f"/staff/payouts/{batch.id}/export.csv")
    assert bank.headers["Content-Type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(bank.data.decode()))) == [
        ["partner_id", "name", "payout_email", "amount", "currency", "payout_method", "iban", "bic", "account_holder"],
        [str(p.id), p.name, p.email, "8.00", "USD", "paypal", "", "", ""]]
    paypal = client.get(f"/staff/payouts/{batch.id}/paypal.csv").data.decode()
    assert paypal == f"{p.email},8.00,USD,partner-{p.id},PartnerNet payout batch {batch.id},PAYPAL\r\n"
    assert client.post(f"/staff/payouts/{batch.id}/mark-paid", data={}).status_code == 303
    assert client.post(f"/staff/payouts/{batch.id}/mark-paid", data={}).status_code == 409
    assert partner_earnings(p.id)[0]["balance"] == 0
    assert db.session.scalar(select(func.count()).select_from(LedgerTransaction).where(
        LedgerTransaction.kind == "paid")) == 1
    assert client.post(f"/staff/payouts/{batch.id}/explode", data={}).status_code == 404
    assert b"$0.00" in client.get(f"/staff/partners/{p.id}").data


def test_clients_create_edit_rotate(app, client, staff):
    r = client.post("/staff/clients/new", data={"name": "Shop", "currency": "EUR", "website_url": "https://shop.example",
                                                "ip_allowlist": "10.0.0.0/8", "timezone": "Europe/Paris"})
    assert r.status_code == 303
    c = db.session.scalars(select(Client).where(Client.name == "Shop")).one()
    assert (c.currency, c.ip_allowlist, c.timezone) == ("EUR", "10.0.0.0/8", "Europe/Paris")
    bad = client.post("/staff/clients/new", data={"name": "X", "currency": "EUR", "ip_allowlist": "not-an-ip",
                                                  "timezone": "UTC"})
    assert bad.status_code == 400 and b"not an IP" in bad.data
    assert client.post("/staff/clients/new", data={"name": "X", "currency": "ZZZ", "timezone": "UTC"}).status_code == 400
    r = client.post(f"/staff/clients/{c.id}", data={"name": "Shop 2", "website_url": "", "require_signature": "y",
                                                   "ip_allowlist": "", "timezone": "UTC"})
    assert r.status_code == 303
    assert client.post(f"/staff/clients/{c.id}", data={"name": "Shop 2", "timezone": "Mars/Base"}).status_code == 400
    old = c.postback_secret
    assert client.post(f"/staff/clients/{c.id}/rotate-secret", data={}).status_code == 303
    db.session.expire_all()
    c = db.session.get(Client, c.id)
    assert c.name == "Shop 2" and c.require_signature and c.postback_secret != old and c.ip_allowlist == ""
    assert client.post("/staff/clients/99999/rotate-secret", data={}).status_code == 404
    acts = db.session.scalars(select(AuditLog.action).where(AuditLog.target_type == "client")).all()
    assert sorted(acts) == ["client.create", "client.rotate_secret", "client.update"]
    assert old not in str(db.session.scalars(select(AuditLog.after)).all())


def test_campaigns_create_edit(app, client, staff):
    c = make_client()
    data = {"client_id": str(c.id), "name": "Spring", "status": "active", "destination_url": "https://acme.example/p",
            "fallback_url": "", "deep_link_hosts": "acme.example, shop.acme.example",
            "events": "sale | Sale | 8% | 50%\nlead | Lead | 2.00 | 1.20", "default_event": "sale",
            "budget": "500.00", "hold_days": "14", "attribution_window_days": "7", "attribution_model": "linear"}
    assert client.post("/staff/campaigns/new", data=data).status_code == 303
    camp = db.session.scalars(select(Campaign).where(Campaign.name == "Spring")).one()
    assert (camp.budget_minor, camp.hold_days, camp.attribution_model) == (50000, 14, "linear")
    assert camp.deep_link_hosts == ["acme.example", "shop.acme.example"]
    assert [(e.key, e.client_fee_minor, e.payout_minor) for e in camp.events][1] == ("lead", 200, 120)
    form = client.get(f"/staff/campaigns/{camp.id}").data.decode()
    assert "sale | Sale | 8% | 50%" in form and "lead | Lead | 2.00 | 1.20" in form
    bad = client.post("/staff/campaigns/new", data=dict(data, events="sale | Sale | 8%"))
    assert bad.status_code == 400 and "expected key | label | client fee | payout" in bad.data.decode()
    bad = client.post(f"/staff/campaigns/{camp.id}", data=dict(data, default_event="nope"))
    assert bad.status_code == 400
    bad = client.post(f"/staff/campaigns/{camp.id}", data=dict(data, destination_url="javascript:alert(1)"))
    assert bad.status_code == 400
    r = client.post(f"/staff/campaigns/{camp.id}", data=dict(data, status="paused", budget="", hold_days="0"))
    assert r.status_code == 303
    db.session.expire_all()
    camp = db.session.get(Campaign, camp.id)
    assert (camp.status, camp.budget_minor, camp.hold_days) == ("paused", None, 0)
    upd = db.session.scalars(select(AuditLog).where(AuditLog.action == "campaign.update")).one()
    assert upd.before["status"] == "active" and upd.after["status"] == "paused"
    assert client.get("/staff/campaigns/99999").status_code == 404


def test_saving_a_campaign_unchanged_keeps_every_event_rule(app, client, staff):
    c = make_client()
    camp = make_campaign(c, events=[
        {"key": "call", "client_fee_minor": 300, "payout_percent": "70", "min_duration_s": 180},
        {"key": "sale", "client_fee_percent": "8", "payout_percent": "75", "min_amount_minor": 500},
        {"key": "lead", "client_fee_minor": 1250, "payout_minor": 900, "one_per_click": True},
    ])
    text = client.get(f"/staff/campaigns/{camp.id}").data.decode()
    assert "call | call | 3.00 | 70% | min_duration_s=180" in text
    assert "sale | sale | 8% | 75% | min_amount=5.00" in text and "lead | lead | 12.50 | 9.00 | one_per_click" in text
    lines = "\n".join(["call | call | 3.00 | 70% | min_duration_s=180", "sale | sale | 8% | 75% | min_amount=5.00",
                       "lead | lead | 12.50 | 9.00 | one_per_click"])
    data = {"client_id": str(c.id), "name": camp.name, "status": "active", "destination_url": camp.destination_url,
            "fallback_url": camp.fallback_url, "deep_link_hosts": "", "events": lines, "default_event": "call",
            "budget": "", "hold_days": "30", "attribution_window_days": "30", "attribution_model": "last_click"}
    assert client.post(f"/staff/campaigns/{camp.id}", data=data).status_code == 303
    db.session.expire_all()
    rules = {e.key: (e.min_duration_s, e.min_amount_minor, e.one_per_click) for e in db.session.get(Campaign, camp.id).events}
    assert rules == {"call": (180, None, False), "sale": (None, 500, False), "lead": (None, None, True)}
    bad = client.post(f"/staff/campaigns/{camp.id}", data=dict(data, events="call | call | 3.00 | 70% | min_time=3"))
    assert bad.status_code == 400 and "unknown option" in bad.data.decode()


def test_postback_setup_and_test_postback_is_never_money(app, client, staff):
    camp = make_campaign(make_client(), events=[{"key": "sale", "client_fee_percent": "10", "payout_percent": "50"}])
    page = client.get(f"/staff/campaigns/{camp.id}/postback").data.decode()
    assert f"key={camp.client.postback_key}&amp;click_id={{click_id}}" in page and "{amount}" in page
    assert client.post(f"/staff/campaigns/{camp.id}/test-postback", data={}).status_code == 400  # no link yet
    make_link(make_partner(), camp)
    r = client.post(f"/staff/campaigns/{camp.id}/test-postback", data={})
    assert r.status_code == 200
    text = r.data.decode()
    assert "GET http://testserver/postback?key=" in text and "\"status\": \"pending\"" in text
    conv = db.session.scalars(select(Conversion)).one()
    assert conv.is_test and conv.client_fee_minor == 1000
    db.session.expire_all()
    assert db.session.get(Campaign, camp.id).spent_minor == 0
    assert db.session.scalar(select(func.count()).select_from(LedgerTransaction)) == 0
    log = db.session.scalars(select(PostbackLog)).one()
    assert log.is_test and log.outcome == "created"
    assert client.get("/staff/conversions?status=").data.count(b"data-conversion=") == 0
    r = client.post("/staff/conversions/review", data={"action": "approve", "ids": [str(conv.id)]},
                    follow_redirects=True)
    assert b"test conversion" in r.data
    from partnernet.conversions.review import approve_matured
    from partnernet.reporting.services import report
    from datetime import date, timedelta

    assert approve_matured(conv.hold_until + timedelta(days=1)) == 0
    today = conv.created_at.date()
    assert all(row.conversions == 0 and row.revenue_minor == 0 for row in report("campaign", today, today))
    assert client.get(f"/staff/postback-log?outcome=created&campaign_id={camp.id}").data.count(b">test<") == 1
    assert b"No postbacks" in client.get("/staff/postback-log?error=unauthorized").data
    assert client.get("/staff/postback-log?campaign_id=abc").status_code == 400
    assert client.post("/staff/campaigns/99999/test-postback", data={}).status_code == 404
    del date


def test_fraud_flags_shown_and_filtered(app, client, staff):
    from partnernet import clock
    from partnernet.postbacks.params import RawParams
    from partnernet.postbacks.services import process_postback
    from datetime import UTC, datetime, timedelta

    camp = make_campaign(make_client(), events=[{"key": "sale", "client_fee_minor": 1000, "payout_minor": 400}])
    p = make_partner()
    p.payout_email = "Cash@Example.com"
    db.session.commit()
    link = make_link(p, camp)
    signer = app.extensions["partnernet_click_signer"]
    t0 = datetime(2025, 1, 1, 12, tzinfo=UTC)
    from partnernet.models import Click

    cid = signer.make(link.id, int(t0.timestamp()))
    for i in range(20):
        db.session.add(Click(click_id=cid if i == 19 else f"x{i}", link_id=link.id, campaign_id=camp.id,
                             partner_id=p.id, created_at=t0 - timedelta(minutes=20 - i), ip="203.0.113.9",
                             visitor="v", is_bot=False))
    db.session.commit()
    clock.set_now(t0 + timedelta(seconds=3))
    status, body = process_postback(RawParams(pairs=[("key", camp.client.postback_key), ("click_id", cid),
                                                     ("txn_id", "o1"), ("customer_email", "cash@example.COM")]),
                                    method="GET", remote_ip="1.2.3.4")
    assert status == 201, body
    clock.set_now(None)
    # Flags are stored when the conversion is recorded (partnernet.conversions.flags), shown with
    # their evidence; a customer email parameter is not a contract parameter and is not compared.
    assert db.session.get(Conversion, int(body["conversion_id"])).flags == ["ip_flood", "fast_conversion"]
    page = client.get("/staff/conversions").data.decode()
    for label in ("many clicks or conversions from one IP", "20 clicks from 203.0.113.9",
                  "converted too soon after the click", "sale 3 s after the click"):
        assert label in page
    assert client.get("/staff/conversions?flag=ip_flood").data.count(b"data-conversion=") == 1
    assert client.get("/staff/conversions?flag=self_referral").data.count(b"data-conversion=") == 0
    assert client.get("/staff/conversions?flag=bot_click").status_code == 400  # a rejection reason, not a flag


def test_queue_health_lists_failed_jobs_and_retries(redis_app):
    """With REDIS_URL set, the dashboard shows queue lengths and a failed job with a retry button."""
    from rq import Queue
    from rq.job import Job
    from rq.registry import FailedJobRegistry

    from partnernet import queue as q

    make_user("boss@example.com")
    client = redis_app.test_client()
    login(client, "boss@example.com")
    conn = q.get_redis()
    rq_queue = Queue(q.QUEUE_DEFAULT, connection=conn)
    job = Job.create("partnernet.ledger.tasks.sync_conversion_job", args=(424242,), connection=conn, id="broken-1",
                     origin=q.QUEUE_DEFAULT)
    job.save()
    FailedJobRegistry(queue=rq_queue).add(job, exc_string="Traceback\nValueError: boom")
    page = client.get("/staff/").data.decode()
    assert "broken-1" in page and "Retry" in page and q.QUEUE_DEFAULT in page
    r = client.post("/staff/jobs/broken-1/retry", data={})
    assert r.status_code == 303
    assert "broken-1" in rq_queue.job_ids
    assert client.post("/staff/jobs/nope/retry", data={}).status_code == 404
    assert db.session.scalars(select(AuditLog.action)).all() == ["job.retry"]


def test_approve_matured_command_is_idempotent(app):
    from datetime import timedelta

    from partnernet import clock

    _, p, ids = _setup_conversions(2)
    clock.set_now(db.session.get(Conversion, ids[-1]).hold_until + timedelta(seconds=1))
    runner = app.test_cli_runner()
    first = runner.invoke(args=["conversions", "approve-matured"])
    second = runner.invoke(args=["conversions", "approve-matured"])
    assert first.exit_code == 0 and "approved 2 matured" in first.output
    assert second.exit_code == 0 and "approved 0 matured" in second.output
    assert partner_earnings(p.id)[0]["approved"] == 800


# --------------------------------------------------------------------------- campaign: visibility, caps, overrides


def _campaign_data(c, **extra):
    data = {"client_id": str(c.id), "name": "Capped", "status": "active", "destination_url": "https://acme.example/p",
            "fallback_url": "", "deep_link_hosts": "", "events": "sale | Sale | 10.00 | 4.00", "default_event": "sale",
            "budget": "", "hold_days": "30", "attribution_window_days": "30", "attribution_model": "last_click"}
    data.update(extra)
    return data


def test_campaign_visibility_auto_approve_and_caps(app, client, staff):
    c = make_client()
    data = _campaign_data(c, visibility="invite_only", auto_approve_partners="y", daily_cap="50.00",
                          monthly_cap="900")
    assert client.post("/staff/campaigns/new", data=data).status_code == 303
    camp = db.session.scalars(select(Campaign).where(Campaign.name == "Capped")).one()
    assert (camp.visibility, camp.auto_approve_partners) == ("invite_only", True)
    assert (camp.daily_cap_minor, camp.monthly_cap_minor) == (5000, 90000)
    created = db.session.scalars(select(AuditLog).where(AuditLog.action == "campaign.create")).one()
    assert created.after["visibility"] == "invite_only" and created.after["daily_cap_minor"] == 5000
    page = client.get(f"/staff/campaigns/{camp.id}").get_data(as_text=True)
    assert 'value="50.00"' in page and 'value="900.00"' in page and '<option selected value="invite_only">' in page
    # invalid input: nothing changes, the error shows on the field
    for bad_data, field_text in [(dict(data, daily_cap="-5"), "daily_cap"), (dict(data, monthly_cap="1.234"), "monthly_cap"),
                                 (dict(data, visibility="secret"), "Not a valid choice")]:
        r = client.post(f"/staff/campaigns/{camp.id}", data=bad_data)
        assert r.status_code == 400, bad_data
        assert field_text in r.get_data(as_text=True)
    r = client.post("/staff/campaigns/new", data=dict(data, name="Other", daily_cap="ten"))
    assert r.status_code == 400 and db.session.scalar(select(func.count()).select_from(Campaign).where(
        Campaign.name == "Other")) == 0
    db.session.expire_all()
    camp = db.session.get(Campaign, camp.id)
    assert (camp.visibility, camp.daily_cap_minor, camp.monthly_cap_minor) == ("invite_only", 5000, 90000)
    # edit: back to public, no auto-approve (unchecked box), caps removed / lowered: one audit row
    edit = dict(data)
    del edit["auto_approve_partners"]
    edit.update(visibility="public", daily_cap="", monthly_cap="100.50")
    assert client.post(f"/staff/campaigns/{camp.id}", data=edit).status_code == 303
    db.session.expire_all()
    camp = db.session.get(Campaign, camp.id)
    assert (camp.visibility, camp.auto_approve_partners) == ("public", False)
    assert (camp.daily_cap_minor, camp.monthly_cap_minor) == (None, 10050)
    upd = db.session.scalars(select(AuditLog).where(AuditLog.action == "campaign.update")).one()
    assert upd.before == {"daily_cap_minor": 5000, "monthly_cap_minor": 90000, "visibility": "invite_only",
                          "auto_approve_partners": True}
    assert upd.after == {"daily_cap_minor": None, "monthly_cap_minor": 10050, "visibility": "public",
                         "auto_approve_partners": False}
    # saving unchanged writes no audit row
    assert client.post(f"/staff/campaigns/{camp.id}", data=edit).status_code == 303
    assert db.session.scalar(select(func.count()).select_from(AuditLog).where(
        AuditLog.action == "campaign.update")) == 1


def test_campaign_payout_overrides_list_add_delete(app, client, staff):
    from partnernet.models import PartnerPayoutOverride

    camp = make_campaign(make_client(), events=[{"key": "sale", "client_fee_minor": 1000, "payout_minor": 400},
                                                {"key": "lead", "client_fee_minor": 300, "payout_minor": 100}])
    p, q = make_partner(name="Alpha Deals"), make_partner(name="Beta Blog")
    assert "No overrides" in client.get(f"/staff/campaigns/{camp.id}").get_data(as_text=True)
    url = f"/staff/campaigns/{camp.id}/overrides"
    assert client.post(url, data={"partner_id": str(p.id), "event": "sale", "payout": "5.50"}).status_code == 303
    assert client.post(url, data={"partner_id": str(q.id), "event": "", "payout": "62.5%"}).status_code == 303
    rows = db.session.scalars(select(PartnerPayoutOverride).order_by(PartnerPayoutOverride.id)).all()
    assert [(r.partner_id, r.event_key, r.payout_minor, r.payout_percent is not None) for r in rows] == \
        [(p.id, "sale", 550, False), (q.id, None, None, True)]
    page = client.get(f"/staff/campaigns/{camp.id}").get_data(as_text=True)
    assert "Alpha Deals" in page and "$5.50" in page
    assert "62.5%" in page and "every event" in page
    # replacing the same partner/event keeps one row
    assert client.post(url, data={"partner_id": str(p.id), "event": "sale", "payout": "6.00"}).status_code == 303
    assert db.session.scalar(select(func.count()).select_from(PartnerPayoutOverride)) == 2
    # invalid input
    for bad in [{"partner_id": str(p.id), "event": "", "payout": "abc"},
                {"partner_id": str(p.id), "event": "", "payout": "150%"},
                {"partner_id": str(p.id), "event": "", "payout": ""},
                {"partner_id": str(p.id), "event": "nope", "payout": "1.00"},
                {"partner_id": "999999", "event": "", "payout": "1.00"}]:
        r = client.post(url, data=bad)
        assert r.status_code == 400, (bad, r.data[:300])
        assert 'class="error"' in r.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(PartnerPayoutOverride)) == 2
    assert client.post("/staff/campaigns/99999/overrides", data={"payout": "1"}).status_code == 404
    # delete: only from its own campaign
    other = make_campaign(make_client())
    first = rows[0].id
    assert client.post(f"/staff/campaigns/{other.id}/overrides/{first}/delete", data={}).status_code == 404
    assert client.post(f"/staff/campaigns/{camp.id}/overrides/{first}/delete", data={}).status_code == 303
    assert client.post(f"/staff/campaigns/{camp.id}/overrides/{first}/delete", data={}).status_code == 404
    db.session.expire_all()
    assert db.session.scalar(select(func.count()).select_from(PartnerPayoutOverride)) == 1
    actions = db.session.scalars(select(AuditLog.action).where(AuditLog.target_type == "payout_override")).all()
    assert actions.count("payout_override.set") == 3 and actions.count("payout_override.delete") == 1
    assert all(a.actor_user_id == staff.id for a in db.session.scalars(
        select(AuditLog).where(AuditLog.target_type == "payout_override")))


# --------------------------------------------------------------------------- invoices


def test_invoices_list_issue_mark_paid_and_csv(app, client, staff):
    from partnernet.clients import invoices
    from partnernet.clock import utcnow
    from partnernet.models import Invoice

    assert "No invoices yet" in client.get("/staff/invoices").get_data(as_text=True)
    assert b'href="/staff/invoices"' in client.get("/staff/").data  # nav link
    camp, _p, _ids = _setup_conversions(2)
    today = utcnow()
    (inv,) = invoices.build_invoice(camp.client_id, today.year, today.month)
    page = client.get("/staff/invoices").get_data(as_text=True)
    assert inv.number in page and "20.00" in page and ">Issue</button>" in page
    detail = client.get(f"/staff/invoices/{inv.id}").get_data(as_text=True)
    assert f"Invoice {inv.number}" in detail and 'data-field="total">$20.00<' in detail
    assert detail.count('class="line-conversion"') == 2 and ">Issue</button>" in detail
    csv_text = client.get(f"/staff/invoices/{inv.id}.csv").get_data(as_text=True)
    assert csv_text.splitlines()[-1].split(",")[-2:] == ["20.00", "USD"]
    # mark paid before issue: 409, nothing changes
    assert client.post(f"/staff/invoices/{inv.id}/mark-paid", data={}).status_code == 409
    r = client.post(f"/staff/invoices/{inv.id}/issue", data={"back": f"/staff/invoices/{inv.id}"})
    assert r.status_code == 303 and r.headers["Location"].endswith(f"/staff/invoices/{inv.id}")
    assert client.post(f"/staff/invoices/{inv.id}/issue", data={}).status_code == 409  # double click
    assert ">Mark paid</button>" in client.get("/staff/invoices?status=issued").get_data(as_text=True)
    r = client.post(f"/staff/invoices/{inv.id}/mark-paid", data={"back": "https://evil.example/"})
    assert r.status_code == 303 and r.headers["Location"].endswith("/staff/invoices")
    assert client.post(f"/staff/invoices/{inv.id}/mark-paid", data={}).status_code == 409
    assert client.post("/staff/invoices/999999/issue", data={}).status_code == 404
    assert client.post(f"/staff/invoices/{inv.id}/void", data={}).status_code == 404
    assert client.get("/staff/invoices/999999").status_code == 404
    assert client.get("/staff/invoices?status=nope").status_code == 400
    assert client.get("/staff/invoices?client_id=abc").status_code == 400
    assert inv.number not in client.get("/staff/invoices?status=draft").get_data(as_text=True)
    db.session.expire_all()
    inv = db.session.get(Invoice, inv.id)
    assert inv.status == "paid" and inv.issued_at is not None and inv.paid_at is not None
    rows = db.session.scalars(select(AuditLog).where(AuditLog.target_type == "invoice").order_by(AuditLog.id)).all()
    assert [(r.action, r.before["status"], r.after["status"], r.actor_user_id) for r in rows] == [
        ("invoice.issue", "draft", "issued", staff.id), ("invoice.mark_paid", "issued", "paid", staff.id)]
    assert rows[0].after["total_minor"] == 2000
