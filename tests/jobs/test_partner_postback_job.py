"""Partner postbacks through a real RQ worker: the conversion's change queues the job on the
partner postback queue, a failing receiver is retried by the worker's scheduler (enqueue_in)
until it answers 200, and a partner that answers slowly never delays a split (the worker
serves the money queues first)."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from partnernet.conversions.services import record_conversion
from partnernet.extensions import db
from partnernet.models import Conversion, PartnerPostbackDelivery
from partnernet.models.conversions import LAGGING
from partnernet.partners import postbacks as pb
from tests.conftest import PG_URL, REDIS_URL
from tests.factories import make_campaign, make_client, make_link, make_partner
from tests.services.test_partner_postbacks import Receiver

ROOT = Path(__file__).resolve().parent.parent.parent
# The worker's app is built in code: the loopback switch is honoured only in a TESTING app and is
# never read from the environment.
_WORKER = """
from partnernet import create_app
from partnernet.worker import run_worker
app = create_app({"TESTING": True, "PARTNERNET_OUTBOUND_ALLOW_LOOPBACK": True,
                  "PARTNERNET_PARTNER_POSTBACK_BACKOFF_S": 0.2, "PARTNERNET_PARTNER_POSTBACK_TIMEOUT_S": 3.0})
run_worker(app)
"""


@pytest.fixture
def loop_app(redis_app, monkeypatch):
    """``redis_app`` with the loopback switch on (URLs to 127.0.0.1 may be saved)."""
    monkeypatch.setitem(redis_app.config, "PARTNERNET_OUTBOUND_ALLOW_LOOPBACK", True)
    return redis_app


@pytest.fixture
def loop_worker(loop_app):
    """A real RQ worker process (``partnernet.worker.run_worker``) whose app allows loopback."""
    env = dict(os.environ, DATABASE_URL=PG_URL, REDIS_URL=REDIS_URL, SECRET_KEY=loop_app.config["SECRET_KEY"],
               PARTNERNET_BASE_URL=loop_app.config["PARTNERNET_BASE_URL"])
    proc = subprocess.Popen([sys.executable, "-c", _WORKER], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    yield proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_for(fn, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        db.session.rollback()
        value = fn()
        if value:
            return value
        time.sleep(0.05)
    return fn()


def _record(camp, link, txn):
    record_conversion(campaign_id=camp.id, event=camp.events[0], link_id=link.id, partner_id=link.partner_id,
                      click_id=None, click_at=None, txn_id=txn, amount_minor=None, duration_s=None,
                      status="pending", reason=None)
    db.session.commit()


def test_worker_delivers_and_retries(loop_app, loop_worker):
    rx = Receiver(codes=(500, 200))
    try:
        camp = make_campaign(make_client())
        partner = make_partner()
        link = make_link(partner, camp)
        pb.set_postback(partner.id, rx.url + "/pb?s={status}&t={txn_id}&p={payout}")
        _record(camp, link, "w-1")
        row = _wait_for(lambda: db.session.scalar(select(PartnerPostbackDelivery).where(
            PartnerPostbackDelivery.status != "pending")))
        assert row is not None and (row.status, row.attempts, row.last_status) == ("delivered", 2, 200)
        assert rx.paths == ["/pb?s=pending&t=w-1&p=5.00"] * 2
    finally:
        rx.close()


def test_a_slow_partner_never_delays_a_split(loop_app):
    """A test delivery to a receiver that drips is queued first, a conversion (its split on the
    money queue) after it; the worker then starts and posts the split while the slow delivery
    has not even begun or is still waiting."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    stop = threading.Event()

    def drip():
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                for b in b"HTTP/1.1 200 OK\r\nX: " + b"a" * 100:
                    if stop.wait(0.5):
                        break
                    try:
                        conn.sendall(bytes([b]))
                    except OSError:
                        break

    threading.Thread(target=drip, daemon=True).start()
    camp = make_campaign(make_client())
    partner = make_partner()
    link = make_link(partner, camp)
    slow = pb.set_postback(partner.id, f"http://127.0.0.1:{lsock.getsockname()[1]}/slow")
    test_row = pb.send_test(partner.id, slow.id)  # queued first, on the partner postback queue
    _record(camp, link, "m-1")  # its split goes to the money queue
    env = dict(os.environ, DATABASE_URL=PG_URL, REDIS_URL=REDIS_URL, SECRET_KEY=loop_app.config["SECRET_KEY"],
               PARTNERNET_BASE_URL=loop_app.config["PARTNERNET_BASE_URL"])
    proc = subprocess.Popen([sys.executable, "-c", _WORKER], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        assert _wait_for(lambda: db.session.scalar(select(func.count(Conversion.id)).where(LAGGING)) == 0,
                         timeout=30)
        slow_row = db.session.get(PartnerPostbackDelivery, test_row.id)
        assert slow_row.last_error is None and slow_row.status == "pending"  # its try has not ended (3 s)
        done = _wait_for(lambda: db.session.get(PartnerPostbackDelivery, test_row.id).last_error, timeout=30)
        assert done.startswith("timeout")
    finally:
        stop.set()
        lsock.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
