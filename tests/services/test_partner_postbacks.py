"""Partner postbacks against a real local HTTP receiver: delivery, macros, a failing receiver
and the retries, the refused hosts, the page's forms and ownership."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from partnernet import queue
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
    monkeypatch.setitem(app.config, "PARTNERNET_ALLOW_LOOPBACK_POSTBACKS", True)
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
