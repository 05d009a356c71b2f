"""Partner postbacks against a real local HTTP receiver: delivery, macros, a failing receiver
and the retries, the refused hosts, a host rebound to loopback after it was saved, a receiver
that drips (cut at the deadline), the own queue, the "Send test" limit, the page's forms and
ownership."""

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from partnernet import outbound, queue
from partnernet.conversions.services import record_conversion, staff_set_status
from partnernet.errors import ValidationError
from partnernet.extensions import db
from partnernet.models import PartnerPostbackDelivery
from partnernet.partners import postbacks as pb
from tests.factories import make_campaign, make_client, make_link, make_partner, make_user


class Receiver:
    """An http.server in a thread that records request paths and answers ``codes`` in turn
    (the last one repeats)."""

    def __init__(self, codes=(200,)):
        self.codes = list(codes)
        self.paths: list[str] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.paths.append(self.path)
                code = outer.codes.pop(0) if len(outer.codes) > 1 else outer.codes[0]
                self.send_response(code)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def loopback(app, monkeypatch):
    monkeypatch.setitem(app.config, "PARTNERNET_OUTBOUND_ALLOW_LOOPBACK", True)
    monkeypatch.setitem(app.config, "PARTNERNET_PARTNER_POSTBACK_BACKOFF_S", 0)
    monkeypatch.setitem(app.config, "PARTNERNET_PARTNER_POSTBACK_ATTEMPTS", 3)
    return app


def _setup():
    camp = make_campaign(make_client(), events=[{"key": "sale", "client_fee_minor": 1000, "payout_percent": "50"}])
    partner = make_partner()
    return camp, partner, make_link(partner, camp)


def _convert(camp, link, txn="o-1"):
    rec = record_conversion(campaign_id=camp.id, event=camp.events[0], link_id=link.id, partner_id=link.partner_id,
                            click_id=None, click_at=None, txn_id=txn, amount_minor=None, duration_s=None,
                            status="pending", reason=None)
    db.session.commit()
    queue.run_pending()
    return rec.conversion


def test_recorded_and_approved_are_delivered_with_macros(loopback):
    rx = Receiver()
    try:
        camp, partner, link = _setup()
        pb.set_postback(partner.id, rx.url + "/pb?t={txn_id}&s={status}&p={payout}&c={currency}&e={event}&x={sub1}")
        conv = _convert(camp, link)
        staff = make_user("staff@example.com")
        staff_set_status(conv.id, "approved", user_id=staff.id)
        db.session.commit()
        queue.run_pending()
        assert rx.paths == ["/pb?t=o-1&s=pending&p=5.00&c=USD&e=sale&x=",
                            "/pb?t=o-1&s=approved&p=5.00&c=USD&e=sale&x="]
        rows = db.session.scalars(select(PartnerPostbackDelivery).order_by(PartnerPostbackDelivery.id)).all()
        assert [(r.trigger, r.status, r.attempts, r.last_status) for r in rows] == [
            ("recorded", "delivered", 1, 200), ("approved", "delivered", 1, 200)]
        # the job run again sends nothing twice
        pb.conversion_changed_job(conv.id, "approved")
        assert len(rx.paths) == 2
    finally:
        rx.close()


def test_campaign_url_wins_over_global(loopback):
    rx = Receiver()
    try:
        camp, partner, link = _setup()
        pb.set_postback(partner.id, rx.url + "/global")
        pb.set_postback(partner.id, rx.url + "/camp", camp.id)
        _convert(camp, link)
        assert rx.paths == ["/camp"]
    finally:
        rx.close()


def test_failing_receiver_is_retried_then_succeeds(loopback):
    rx = Receiver(codes=(500, 503, 200))
    try:
        camp, partner, link = _setup()
        pb.set_postback(partner.id, rx.url + "/pb?s={status}")
        _convert(camp, link)
        row = db.session.scalar(select(PartnerPostbackDelivery))
        assert len(rx.paths) == 3 and (row.status, row.attempts, row.last_status) == ("delivered", 3, 200)
    finally:
        rx.close()


def test_always_failing_receiver_gives_up_after_the_last_try(loopback):
    rx = Receiver(codes=(500,))
    try:
        camp, partner, link = _setup()
        pb.set_postback(partner.id, rx.url + "/pb")
        _convert(camp, link)
        row = db.session.scalar(select(PartnerPostbackDelivery))
        assert len(rx.paths) == 3 and (row.status, row.attempts, row.last_error) == ("failed", 3, "HTTP 500")
    finally:
        rx.close()


def test_retry_backoff_schedules_with_doubling_delay(loopback, monkeypatch):
    monkeypatch.setitem(loopback.config, "PARTNERNET_PARTNER_POSTBACK_BACKOFF_S", 10)
    seen = []
    monkeypatch.setattr(pb, "_schedule", lambda did, attempt, delay: seen.append((attempt, delay)))
    rx = Receiver(codes=(500,))
    try:
        camp, partner, link = _setup()
        pb.set_postback(partner.id, rx.url + "/pb")
        _convert(camp, link)
        did = db.session.scalar(select(PartnerPostbackDelivery.id))
        pb.deliver_job(did)
        pb.deliver_job(did)
        assert seen == [(1, 10.0), (2, 20.0)]
        assert db.session.get(PartnerPostbackDelivery, did).status == "failed"
    finally:
        rx.close()


@pytest.mark.parametrize("url,code", [
    ("http://127.0.0.1/pb", "host_not_allowed"), ("http://10.1.2.3/pb", "host_not_allowed"),
    ("http://169.254.169.254/latest", "host_not_allowed"), ("http://[::1]/pb", "host_not_allowed"),
    ("http://192.168.0.10/pb", "host_not_allowed"), ("http://0.0.0.0/", "host_not_allowed"),
    ("ftp://tracker.example/x", "bad_url"), ("https://tracker.example/?x={nope}", "bad_macro"),
    ("not a url", "bad_url"),
])
def test_private_and_bad_urls_are_refused(app, url, code):
    p = make_partner()
    with pytest.raises(ValidationError) as exc:
        pb.set_postback(p.id, url)
    assert exc.value.code == code


def test_public_ip_is_accepted(app):
    p = make_partner()
    assert pb.set_postback(p.id, "https://93.184.215.14/pb?c={click_id}").url.endswith("{click_id}")


def test_postback_page_forms_test_button_and_ownership(loopback, client):
    rx = Receiver()
    try:
        a, b = make_partner(), make_partner()
        make_user(a.email, role="partner", password="Sunny-Meadow-42", partner_id=a.id)
        client.post("/login", data={"email": a.email, "password": "Sunny-Meadow-42"})
        assert client.get("/partner/postbacks").status_code == 200
        r = client.post("/partner/postbacks", data={"campaign_id": 0, "url": "http://10.0.0.5/x"})
        assert r.status_code == 400 and b"public hosts only" in r.data
        r = client.post("/partner/postbacks", data={"campaign_id": 0, "url": rx.url + "/t?s={status}&t={txn_id}"})
        assert r.status_code == 302
        mine = pb.postbacks_of(a.id)[0]
        other = pb.set_postback(b.id, rx.url + "/b")
        assert client.post(f"/partner/postbacks/{mine.id}/test").status_code == 302
        assert rx.paths and rx.paths[0].startswith("/t?s=test&t=test-")
        page = client.get("/partner/postbacks").data.decode()
        assert "delivered" in page and "test" in page
        assert client.post(f"/partner/postbacks/{other.id}/test").status_code == 404
        assert client.post(f"/partner/postbacks/{other.id}/delete").status_code == 404
        assert client.post(f"/partner/postbacks/{mine.id}/delete").status_code == 302
        assert pb.postbacks_of(a.id) == []
    finally:
        rx.close()


def test_a_host_rebound_to_loopback_after_it_was_saved_is_refused_at_send(app, monkeypatch):
    """The name was public when the URL was saved and answers 127.0.0.1 at send time: the send
    checks the address it connects to, so the delivery fails as refused and nothing is reached."""
    rx = Receiver()
    answers = iter([["93.184.215.14"], ["127.0.0.1"]])
    monkeypatch.setattr(outbound.client, "system_resolver", lambda host, port: next(answers))
    try:
        camp, partner, link = _setup()
        port = rx.url.rsplit(":", 1)[1]
        pb.set_postback(partner.id, f"http://rebind.example:{port}/pb?s={{status}}")
        _convert(camp, link)
        row = db.session.scalar(select(PartnerPostbackDelivery))
        assert (row.status, row.attempts, row.last_status) == ("failed", 1, None)
        assert row.last_error == "refused: 127.0.0.1 is a loopback address" and rx.paths == []
    finally:
        rx.close()


def test_a_receiver_that_drips_is_cut_at_the_deadline_and_logged_as_a_timeout(loopback, monkeypatch):
    monkeypatch.setitem(loopback.config, "PARTNERNET_PARTNER_POSTBACK_TIMEOUT_S", 1.0)
    monkeypatch.setitem(loopback.config, "PARTNERNET_PARTNER_POSTBACK_ATTEMPTS", 1)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    stop = threading.Event()

    def drip():
        conn, _ = lsock.accept()
        with conn:
            conn.recv(65536)
            for b in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 50:
                if stop.wait(0.2):
                    return
                try:
                    conn.sendall(bytes([b]))
                except OSError:
                    return

    threading.Thread(target=drip, daemon=True).start()
    try:
        camp, partner, link = _setup()
        pb.set_postback(partner.id, f"http://127.0.0.1:{lsock.getsockname()[1]}/pb")
        start = time.monotonic()
        _convert(camp, link)
        assert time.monotonic() - start < 3.0
        row = db.session.scalar(select(PartnerPostbackDelivery))
        assert row.status == "failed" and row.last_error.startswith("timeout") and row.last_status is None
    finally:
        stop.set()
        lsock.close()


def test_partner_postback_jobs_use_their_own_queue(app):
    camp, partner, link = _setup()
    pb.set_postback(partner.id, "https://93.184.215.14/pb")
    rec = record_conversion(campaign_id=camp.id, event=camp.events[0], link_id=link.id, partner_id=partner.id,
                            click_id=None, click_at=None, txn_id="q-1", amount_minor=None, duration_s=None,
                            status="pending", reason=None)
    pending = list(db.session.info.get(queue._KEY, []))
    db.session.rollback()
    assert rec.conversion is not None
    by_func = {spec.func: spec.queue for spec in pending}
    assert by_func[pb.CHANGE_JOB] == queue.QUEUE_PARTNER_POSTBACKS
    assert queue.QUEUES.index(queue.QUEUE_PARTNER_POSTBACKS) > queue.QUEUES.index(queue.QUEUE_DEFAULT)


def test_send_test_is_limited_per_partner(loopback, client):
    rx = Receiver()
    try:
        a, b = make_partner(), make_partner()
        make_user(a.email, role="partner", password="Sunny-Meadow-42", partner_id=a.id)
        mine = pb.set_postback(a.id, rx.url + "/t")
        other = pb.set_postback(b.id, rx.url + "/b")
        client.post("/login", data={"email": a.email, "password": "Sunny-Meadow-42"})
        for _ in range(pb.TEST_LIMIT):
            assert client.post(f"/partner/postbacks/{mine.id}/test").status_code == 302
        r = client.post(f"/partner/postbacks/{mine.id}/test")
        assert r.status_code == 429 and r.headers["Retry-After"] == str(pb.TEST_WINDOW_S)
        assert b"at most 5 test postbacks every 10 minutes" in r.data
        assert len(rx.paths) == pb.TEST_LIMIT
        tests = db.session.scalars(select(PartnerPostbackDelivery).where(
            PartnerPostbackDelivery.partner_id == a.id)).all()
        assert len(tests) == pb.TEST_LIMIT
        pb.send_test(b.id, other.id)  # another partner has its own allowance
        queue.run_pending()
        assert rx.paths[-1] == "/b"
    finally:
        rx.close()
