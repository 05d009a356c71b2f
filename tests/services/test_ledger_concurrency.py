"""The ledger sync under concurrency, on PostgreSQL: many syncs of one conversion post once;
syncs of many conversions that share accounts (and create them) all succeed; a staff
approval racing the sync job posts each movement once; the batched split job comes back
for a row another transaction held, and two split jobs at once share the work."""

from __future__ import annotations

from partnernet import queue
from partnernet.conversions.review import approve_conversion
import threading

from sqlalchemy import text

from partnernet.extensions import db
from partnernet.ledger.services import sync_conversion, sync_lagging, verify_ledger
from tests.factories import make_campaign, make_client, make_link, make_partner
from tests.services.test_ledger_helpers import earnings, kinds, postback_status, record
from tests.services.test_payouts_concurrency import run_threads


def test_ten_simultaneous_syncs_post_the_split_once(pg_app):
    camp = make_campaign(make_client())
    partner = make_partner()
    cid = record(camp, make_link(partner, camp), run_jobs=False)
    postback_status(cid, "approved", run_jobs=False)
    queue.discard_pending()
    results = run_threads(pg_app, 10, lambda i: sync_conversion(cid))
    assert results == [("ok", "approved")] * 10
    assert kinds(cid) == ["split", "approve"]
    assert earnings(partner.id) == {"pending": 0, "approved": 500, "paid": 0, "balance": 500}
    assert verify_ledger() == []


def test_syncs_of_many_conversions_creating_shared_accounts_at_once(pg_app):
    client = make_client()
    camp = make_campaign(client)
    recruiter = make_partner()
    partners = [make_partner(recruiter=recruiter, recruiter_percent="10") for _ in range(8)]
    ids = [record(camp, make_link(p, camp), status="approved", run_jobs=False) for p in partners]
    queue.discard_pending()
    results = run_threads(pg_app, len(ids), lambda i: sync_conversion(ids[i]))
    assert results == [("ok", "approved")] * len(ids)
    for p in partners:
        assert earnings(p.id)["balance"] == 500
    assert earnings(recruiter.id)["balance"] == 8 * 50
    assert verify_ledger() == []


def test_staff_approval_racing_the_sync_job(pg_app):
    camp = make_campaign(make_client())
    partner = make_partner()
    ids = [record(camp, make_link(partner, camp), run_jobs=False) for _ in range(5)]
    queue.discard_pending()

    def work(i):
        cid = ids[i // 2]
        if i % 2:
            return approve_conversion(cid, user_id=1).status
        return sync_conversion(cid)

    results = run_threads(pg_app, 2 * len(ids), work)
    assert all(r[0] == "ok" for r in results), results
    for cid in ids:
        assert kinds(cid) == ["split", "approve"]
    assert earnings(partner.id)["approved"] == 5 * 500
    assert verify_ledger() == []


def test_new_approved_conversions_and_staff_approvals_at_once(pg_app):
    """Syncs that post split + approve in one transaction, racing staff approvals that post
    approve alone: all touch the agency's accounts, none may deadlock."""
    camp = make_campaign(make_client())
    pending = []
    for _ in range(6):
        p = make_partner()
        pending.append(record(camp, make_link(p, camp)))  # split posted
    fresh_ids = []
    for _ in range(6):
        p = make_partner()
        fresh_ids.append(record(camp, make_link(p, camp), status="approved", run_jobs=False))
    queue.discard_pending()

    def work(i):
        if i % 2:
            return approve_conversion(pending[i // 2], user_id=1).ledger_status
        return sync_conversion(fresh_ids[i // 2])

    results = run_threads(pg_app, 12, work)
    assert results == [("ok", "approved")] * 12, results
    for cid in pending + fresh_ids:
        assert kinds(cid) == ["split", "approve"]
    assert verify_ledger() == []


def test_the_split_job_comes_back_for_a_row_another_transaction_held(pg_app):
    camp = make_campaign(make_client())
    partner = make_partner()
    ids = [record(camp, make_link(partner, camp), run_jobs=False) for _ in range(3)]
    queue.discard_pending()
    conn = db.engine.connect()
    held = conn.begin()
    conn.execute(text("SELECT id FROM conversions WHERE id = :i FOR UPDATE"), {"i": ids[1]})
    release = threading.Timer(0.5, held.rollback)
    release.start()
    try:
        synced, finished = sync_lagging()  # skips ids[1] at first, then waits for its lock
    finally:
        release.join()
        conn.close()
    assert (synced, finished) == (3, True)
    assert [kinds(cid) for cid in ids] == [["split"]] * 3
    assert verify_ledger() == []


def test_two_split_jobs_at_once_post_every_conversion_once(pg_app):
    camp = make_campaign(make_client())
    partners = [make_partner() for _ in range(4)]
    ids = [record(camp, make_link(partners[i % 4], camp), run_jobs=False) for i in range(40)]
    queue.discard_pending()
    results = run_threads(pg_app, 2, lambda i: sync_lagging(batch_size=7)[0])
    assert [r[0] for r in results] == ["ok", "ok"]
    assert sum(r[1] for r in results) >= 40  # each conversion synced at least once (a re-sync posts nothing)
    assert all(kinds(cid) == ["split"] for cid in ids)
    assert sum(earnings(p.id)["pending"] for p in partners) == 40 * 500
    assert verify_ledger() == []
