"""The split job on real Redis and a real ``flask worker`` process: a recorded conversion is
split by the worker, running the job again posts nothing more, status changes follow, and
a lost job is found again by the sweeper."""

from __future__ import annotations

import redis as redis_lib
from sqlalchemy import select

from partnernet import queue
from partnernet.conversions.services import SYNC_JOB
from partnernet.extensions import db
from partnernet.ledger.services import requeue_stuck, verify_ledger
from partnernet.ledger.tasks import SYNC_LAGGING_JOB
from partnernet.models import ConversionSplit
from tests.conftest import REDIS_URL, drain_jobs
from tests.factories import make_campaign, make_client, make_link, make_partner
from tests.services.test_ledger_helpers import earnings, fresh, kinds, postback_status, record


def test_the_worker_splits_conversions_and_runs_each_job_safely_twice(redis_app, worker):
    camp = make_campaign(make_client(),
                         events=[{"key": "sale", "client_fee_minor": 1000, "payout_percent": "50"}])
    partner = make_partner()
    cid = record(camp, make_link(partner, camp))  # committed: the job is in RQ now
    drain_jobs()
    db.session.expire_all()
    assert kinds(cid) == ["split"]
    assert fresh(cid).ledger_status == "pending"
    assert earnings(partner.id) == {"pending": 500, "approved": 0, "paid": 0, "balance": 0}

    # the same job again, twice (other job ids, so RQ keeps both): nothing more is posted
    q = queue.get_queue()
    q.enqueue(SYNC_JOB, cid, job_id=f"again-{cid}-1")
    q.enqueue(SYNC_JOB, cid, job_id=f"again-{cid}-2")
    drain_jobs()
    db.session.expire_all()
    assert kinds(cid) == ["split"]
    lines = db.session.scalars(select(ConversionSplit).where(ConversionSplit.conversion_id == cid)).all()
    assert sorted((s.role, s.amount_minor) for s in lines) == [("converter", 500), ("margin", 500)]

    postback_status(cid, "approved")
    drain_jobs()
    postback_status(cid, "reversed")
    drain_jobs()
    db.session.expire_all()
    assert kinds(cid) == ["split", "approve", "reverse"]
    assert fresh(cid).ledger_status == "reversed"
    assert earnings(partner.id) == {"pending": 0, "approved": 0, "paid": 0, "balance": 0}
    assert verify_ledger() == []


def test_a_lost_job_is_requeued_by_the_sweeper(redis_app, request):
    camp = make_campaign(make_client())
    cid = record(camp, make_link(make_partner(), camp))
    redis_lib.Redis.from_url(REDIS_URL).flushdb()  # the job is lost before any worker ran it
    assert fresh(cid).ledger_status is None
    assert requeue_stuck() == 1
    assert [j.func_name for j in queue.get_queue().jobs] == [SYNC_LAGGING_JOB]
    request.getfixturevalue("worker")  # now start the worker
    drain_jobs()
    db.session.expire_all()
    assert kinds(cid) == ["split"]
    assert requeue_stuck() == 0
    assert verify_ledger() == []


def test_many_changes_queue_one_split_job_that_posts_them_all(redis_app, request):
    camp = make_campaign(make_client(),
                         events=[{"key": "sale", "client_fee_minor": 1000, "payout_percent": "50"}])
    partner = make_partner()
    link = make_link(partner, camp)
    ids = [record(camp, link) for _ in range(6)]  # no worker yet: nothing runs
    postback_status(ids[0], "approved")
    postback_status(ids[1], "rejected")
    assert [j.func_name for j in queue.get_queue().jobs] == [SYNC_LAGGING_JOB]  # coalesced: one job
    request.getfixturevalue("worker")
    drain_jobs()
    db.session.expire_all()
    assert kinds(ids[0]) == ["split", "approve"]
    assert kinds(ids[1]) == []  # rejected before its split ran: nothing to post
    assert all(kinds(cid) == ["split"] for cid in ids[2:])
    assert earnings(partner.id) == {"pending": 2000, "approved": 500, "paid": 0, "balance": 500}
    assert requeue_stuck() == 0
    assert verify_ledger() == []
    # a change committed after the job started asks for a new job, which posts it
    postback_status(ids[2], "reversed")
    drain_jobs()
    db.session.expire_all()
    assert kinds(ids[2]) == ["split", "reverse"]
    assert earnings(partner.id) == {"pending": 1500, "approved": 500, "paid": 0, "balance": 500}


def test_drain_queues_the_split_job_again_when_it_was_lost(redis_app, worker):
    camp = make_campaign(make_client())
    partner = make_partner()
    link = make_link(partner, camp)
    drain_jobs()
    conn = redis_lib.Redis.from_url(REDIS_URL)
    conn.set("partnernet:ledger-sync:queued", "1", ex=30)  # a job looks queued: recording sends none
    cid = record(camp, link)
    assert queue.get_queue().count == 0
    db.session.expire_all()
    assert fresh(cid).ledger_status is None
    drain_jobs()  # idle queues but a lagging conversion: drain queues the split job and waits for it
    db.session.expire_all()
    assert kinds(cid) == ["split"]
    assert earnings(partner.id) == {"pending": 500, "approved": 0, "paid": 0, "balance": 0}
    assert verify_ledger() == []


def test_the_worker_splits_with_the_terms_of_the_recording(redis_app, request):
    """CONTRACT v2 §4: a postback recorded through HTTP, then a tier, an override and a bonus
    created before any worker runs; the real worker's split uses the terms of the recording."""
    from decimal import Decimal

    from partnernet.models import PartnerPayoutOverride, PartnerTier, PerformanceBonus

    adv = make_client()
    camp = make_campaign(adv, events=[{"key": "sale", "client_fee_minor": 1000, "payout_percent": "50"}])
    partner = make_partner()
    make_link(partner, camp, coupon_code="Worker10")
    resp = redis_app.test_client().get("/postback", query_string={"key": adv.postback_key, "coupon": "worker10",
                                                                  "txn_id": "W-1"})
    assert resp.status_code == 201
    cid = int(resp.get_json()["conversion_id"])
    gold = PartnerTier(name="Gold", payout_percent=Decimal(70))
    db.session.add(gold)
    db.session.flush()
    partner.tier_id = gold.id
    db.session.add(PartnerPayoutOverride(campaign_id=camp.id, partner_id=partner.id, payout_minor=900))
    db.session.add(PerformanceBonus(campaign_id=camp.id, threshold=1, bonus_points=Decimal(5)))
    db.session.commit()
    request.getfixturevalue("worker")  # the split job runs only now
    drain_jobs()
    db.session.expire_all()
    lines = db.session.scalars(select(ConversionSplit).where(ConversionSplit.conversion_id == cid)
                               .order_by(ConversionSplit.id)).all()
    assert [(s.role, s.amount_minor, s.rule) for s in lines] == [
        ("converter", 500, "event: 50%"), ("margin", 500, "fee minus partner amounts")]
    assert earnings(partner.id)["pending"] == 500
    assert verify_ledger() == []
