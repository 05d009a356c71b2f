"""Partner postbacks through a real RQ worker: the conversion's change queues the job, a
failing receiver is retried by the worker's scheduler (enqueue_in) until it answers 200."""

import time

import pytest
from sqlalchemy import select

from partnernet.conversions.services import record_conversion
from partnernet.extensions import db
from partnernet.models import PartnerPostbackDelivery
from partnernet.partners import postbacks as pb
from tests.factories import make_campaign, make_client, make_link, make_partner
from tests.services.test_partner_postbacks import Receiver


@pytest.fixture
def loop_env(monkeypatch):
    monkeypatch.setenv("PARTNERNET_ALLOW_LOOPBACK_POSTBACKS", "1")
    monkeypatch.setenv("PARTNERNET_PARTNER_POSTBACK_BACKOFF_S", "0.2")


def _wait_for(fn, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        db.session.rollback()
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    return fn()


def test_worker_delivers_and_retries(loop_env, redis_app, worker, monkeypatch):
    monkeypatch.setitem(redis_app.config, "PARTNERNET_ALLOW_LOOPBACK_POSTBACKS", True)
    rx = Receiver(codes=(500, 200))
    try:
        camp = make_campaign(make_client())
        partner = make_partner()
        link = make_link(partner, camp)
        pb.set_postback(partner.id, rx.url + "/pb?s={status}&t={txn_id}&p={payout}")
        record_conversion(campaign_id=camp.id, event=camp.events[0], link_id=link.id, partner_id=partner.id,
                          click_id=None, click_at=None, txn_id="w-1", amount_minor=None, duration_s=None,
                          status="pending", reason=None)
        db.session.commit()
        row = _wait_for(lambda: db.session.scalar(select(PartnerPostbackDelivery).where(
            PartnerPostbackDelivery.status != "pending")))
        assert row is not None and (row.status, row.attempts, row.last_status) == ("delivered", 2, 200)
        assert rx.paths == ["/pb?s=pending&t=w-1&p=5.00"] * 2
    finally:
        rx.close()
